r"""CFG-Zero*: optimized scale and zero-init for classifier-free guidance of flow-matching models.

Fan, Zheng, Yeh, Liu, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models",
arXiv 2503.18886 (2025), https://arxiv.org/abs/2503.18886; reference code
https://github.com/WeichenFan/CFG-Zero-star (``optimized_scale`` and the "perform guidance" block of its
``StableDiffusion3Pipeline.__call__`` / ``WanPipeline.__call__``).

Given the conditional and unconditional velocities :math:`v_c` = ``v_cond`` and :math:`v_u` = ``v_uncond``
predicted at the same :math:`(x_t, t)`:

* **Optimized scale** (one scalar per sample, inner product and norm over the non-batch axes):

  .. math::  s^* = \frac{\langle v_c, v_u\rangle}{\lVert v_u\rVert^2 + \varepsilon}
             \;\approx\; \operatorname*{argmin}_s \lVert v_c - s\,v_u\rVert^2 ,\qquad \varepsilon = 10^{-8}.

  :math:`\varepsilon` is *added* to the squared norm; it does not bound :math:`s^*` (for
  :math:`\lVert v_u\rVert^2 \ll \varepsilon` the result is :math:`\langle v_c, v_u\rangle / \varepsilon`).

* **Guided velocity** with guidance scale :math:`w` (``w = 1``: conditional only):

  .. math::  \hat v = s^*\,v_u + w\,(v_c - s^*\,v_u) = (1 - w)\,s^*\,v_u + w\,v_c .

  Plain CFG is the special case :math:`s^* \equiv 1`: :math:`\hat v = v_u + w\,(v_c - v_u)`.

* **Zero-init**: the guided velocity of the first :math:`K` = ``num_zero_steps`` solver steps
  (0-based step indices ``0 .. K-1``) is replaced by zeros, so the state stays at the initial noise while
  time advances to :math:`t_K`. From step :math:`K` on the formula above is used.

  *Step-count mapping.* The reference code's argument ``zero_steps = z`` zeroes step ``i`` iff ``i <= z``,
  i.e. ``z + 1`` steps: **num_zero_steps = z + 1** (the reference default ``zero_steps=0`` zeroes one step,
  ``num_zero_steps=1`` here). The Hugging Face diffusers guider counts like this module.

Why the projection (the paper's bound, for :math:`w \ge 1`): :math:`\hat v(s) - v_{true} = (v_c - v_{true})
+ (w - 1)(v_c - s\,v_u)`, so :math:`\lVert \hat v(s) - v_{true}\rVert \le \lVert v_c - v_{true}\rVert
+ (w - 1)\lVert v_c - s\,v_u\rVert`, minimised over :math:`s` by the least-squares coefficient :math:`s^*`.

Conventions. Velocities are arrays of shape ``(B, ...)``; per-sample statistics reduce over
``reduce_axes`` (default: every non-batch axis, as the reference code does on its ``(B, -1)`` views).
Every function here is *odd* in the velocities (negating both inputs negates the output and leaves
:math:`s^*` unchanged), so it works in the library's t-convention (``t = 0`` noise, ``v = x_data - noise``)
and in the diffusers/SD3 sigma-convention (``v_sigma = noise - x_data = -v``) alike. Dot products and norms
are computed in float32 for bfloat16/float16 inputs (float64 stays float64); the guided velocity is cast
back to the velocities' dtype.

All functions are pure and jittable; ``step`` may be a traced integer (e.g. a ``lax.scan`` counter).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_EPS",
    "cfg_zero_star_combine",
    "num_zero_steps_from_reference",
    "optimized_scale",
    "zero_init_mask",
]

DEFAULT_EPS = 1e-8
"""The :math:`\\varepsilon` added to :math:`\\lVert v_u\\rVert^2` in :func:`optimized_scale` (reference value)."""


# ----------------------------------------------------------------------------------------------------
# Validation helpers (shared with :mod:`jaxgen.guidance.cfg`).


def _is_concrete(value: Any) -> bool:
  return not isinstance(value, jax.core.Tracer)


def _check_velocities(v_cond: Any, v_uncond: Any) -> tuple[jax.Array, jax.Array]:
  """Both velocities as floating arrays of one shape with at least one (batch) axis."""
  v_cond, v_uncond = jnp.asarray(v_cond), jnp.asarray(v_uncond)
  if v_cond.shape != v_uncond.shape:
    raise ValueError(f"`v_cond` and `v_uncond` must have the same shape, got {v_cond.shape} and "
                     f"{v_uncond.shape}")
  if v_cond.ndim < 1:
    raise ValueError(f"`v_cond` and `v_uncond` must have a batch axis (ndim >= 1), got shape {v_cond.shape}")
  for name, v in (("v_cond", v_cond), ("v_uncond", v_uncond)):
    if not jnp.issubdtype(v.dtype, jnp.floating):
      raise ValueError(f"`{name}` must have a floating dtype, got {v.dtype}")
  return v_cond, v_uncond


def _compute_dtype(*arrays: jax.Array) -> Any:
  """float32 for low-precision floats, otherwise the promoted dtype (float64 stays float64)."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _check_w(w: Any, like: jax.Array, name: str = "w") -> jax.Array:
  """The guidance scale as an array broadcastable against ``like`` without rank promotion.

  Accepts a scalar, a per-sample ``[B]`` vector (reshaped to ``(B, 1, ..., 1)``) or an array of the same
  rank as ``like``. Concrete values must be finite.
  """
  if _is_concrete(w) and not bool(np.all(np.isfinite(np.asarray(w, np.float64)))):
    raise ValueError(f"`{name}` (the guidance scale) must be finite, got {w}")
  w_arr = jnp.asarray(w)
  if not jnp.issubdtype(w_arr.dtype, jnp.floating) and not jnp.issubdtype(w_arr.dtype, jnp.integer):
    raise ValueError(f"`{name}` must be a real number or array, got dtype {w_arr.dtype}")
  if w_arr.ndim == 0:
    return w_arr
  if w_arr.ndim == 1 and like.ndim > 1 and w_arr.shape[0] == like.shape[0]:
    return w_arr.reshape(w_arr.shape + (1,) * (like.ndim - 1))
  if w_arr.ndim == like.ndim:
    try:
      jnp.broadcast_shapes(w_arr.shape, like.shape)
    except ValueError:
      pass
    else:
      return w_arr
  raise ValueError(f"`{name}` must be a scalar, a per-sample vector of shape [B] = [{like.shape[0]}] or an "
                   f"array broadcastable to {like.shape} with the same rank, got shape {w_arr.shape}")


def _check_eps(eps: Any) -> None:
  if _is_concrete(eps) and not (np.isfinite(float(eps)) and float(eps) >= 0.0):
    raise ValueError(f"`eps` must be a finite number >= 0, got {eps}")


def _check_num_zero_steps(num_zero_steps: Any) -> Any:
  """A Python int >= 0 (returned as int), or a traced integer scalar (returned unchanged)."""
  if isinstance(num_zero_steps, bool):
    raise ValueError(f"`num_zero_steps` must be an int >= 0, got {num_zero_steps!r}")
  if isinstance(num_zero_steps, (int, np.integer)):
    if num_zero_steps < 0:
      raise ValueError(f"`num_zero_steps` must be >= 0, got {num_zero_steps}")
    return int(num_zero_steps)
  if _is_concrete(num_zero_steps):
    arr = np.asarray(num_zero_steps)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(f"`num_zero_steps` must be an integer scalar, got {num_zero_steps!r}")
    return _check_num_zero_steps(int(arr))
  if num_zero_steps.ndim != 0 or not jnp.issubdtype(num_zero_steps.dtype, jnp.integer):
    raise ValueError(f"`num_zero_steps` must be an integer scalar, got shape {num_zero_steps.shape} dtype "
                     f"{num_zero_steps.dtype}")
  return num_zero_steps


def _check_step(step: Any) -> jax.Array:
  step_arr = jnp.asarray(step)
  if isinstance(step, bool) or step_arr.ndim != 0 or not jnp.issubdtype(step_arr.dtype, jnp.integer):
    raise ValueError(f"`step` must be an integer scalar (the 0-based solver step), got {step!r}")
  return step_arr


def _reduce_axes(ndim: int, reduce_axes: Sequence[int] | int | None) -> tuple[int, ...]:
  if reduce_axes is None:
    return tuple(range(1, ndim))
  axes = (reduce_axes,) if isinstance(reduce_axes, (int, np.integer)) else tuple(reduce_axes)
  out = []
  for a in axes:
    if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
      raise ValueError(f"`reduce_axes` must hold axes of a rank-{ndim} velocity, got {reduce_axes!r}")
    out.append(int(a) % ndim)
  if len(set(out)) != len(out):
    raise ValueError(f"`reduce_axes` must not repeat an axis, got {reduce_axes!r}")
  return tuple(sorted(out))


# ----------------------------------------------------------------------------------------------------
# Public functions.


def optimized_scale(
    v_cond: jax.Array,
    v_uncond: jax.Array,
    *,
    eps: float = DEFAULT_EPS,
    reduce_axes: Sequence[int] | int | None = None,
) -> jax.Array:
  r"""The per-sample optimized scale :math:`s^* = \langle v_c, v_u\rangle / (\lVert v_u\rVert^2 + \varepsilon)`.

  The least-squares coefficient of :math:`v_c` on :math:`v_u` (:math:`\operatorname{argmin}_s
  \lVert v_c - s\,v_u\rVert^2`, up to :math:`\varepsilon`): the residual :math:`v_c - s^* v_u` is
  orthogonal to :math:`v_u`. Equal to the reference ``optimized_scale(positive_flat, negative_flat)``.

  Args:
    v_cond: conditional velocity :math:`v_c`, shape ``(B, ...)``.
    v_uncond: unconditional velocity :math:`v_u`, same shape.
    eps: :math:`\varepsilon` added to the squared norm (paper: 1e-8). It does not bound :math:`s^*`:
      an all-zero :math:`v_u` gives exactly 0, a tiny one gives :math:`\langle v_c, v_u\rangle/\varepsilon`.
    reduce_axes: axes of the inner product and norm (kept as size-1 axes). Default: all non-batch axes.
      Layouts without a batch axis need an explicit choice.

  Returns:
    :math:`s^*` of shape ``v_cond.shape`` with ``reduce_axes`` set to 1 (default ``(B, 1, ..., 1)``), in
    float32 for bfloat16/float16 inputs (the math is done in float32), otherwise in the inputs' dtype.

  Examples:
    >>> import jax.numpy as jnp
    >>> optimized_scale(jnp.array([[2.0, 0.0]]), jnp.array([[1.0, 1.0]])).tolist()
    [[1.0]]
  """
  v_cond, v_uncond = _check_velocities(v_cond, v_uncond)
  _check_eps(eps)
  axes = _reduce_axes(v_cond.ndim, reduce_axes)
  dtype = _compute_dtype(v_cond, v_uncond)
  vc, vu = v_cond.astype(dtype), v_uncond.astype(dtype)
  dot = jnp.sum(vc * vu, axis=axes, keepdims=True)
  squared_norm = jnp.sum(vu * vu, axis=axes, keepdims=True) + jnp.asarray(eps, dtype)
  return dot / squared_norm


def zero_init_mask(num_steps: int, num_zero_steps: int) -> jax.Array:
  """Boolean ``[num_steps]`` mask, True at the steps zero-init zeroes (0-based ``i < num_zero_steps``).

  The reference code's ``zero_steps = z`` corresponds to ``num_zero_steps = z + 1``
  (see :func:`num_zero_steps_from_reference`).
  """
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
    raise ValueError(f"`num_steps` must be a Python int >= 0, got {num_steps!r}")
  num_zero_steps = _check_num_zero_steps(num_zero_steps)
  return jnp.arange(num_steps) < num_zero_steps


def num_zero_steps_from_reference(zero_steps: int) -> int:
  """Converts the reference code's ``zero_steps = z`` (zeroes steps ``i <= z``) to ``num_zero_steps = z + 1``.

  The reference only zeroes anything when ``use_zero_init=True``; without it use ``num_zero_steps=0``.
  """
  if isinstance(zero_steps, bool) or not isinstance(zero_steps, (int, np.integer)) or zero_steps < -1:
    raise ValueError(f"`zero_steps` must be a Python int >= -1, got {zero_steps!r}")
  return int(zero_steps) + 1


def cfg_zero_star_combine(
    v_cond: jax.Array,
    v_uncond: jax.Array,
    w: Any,
    *,
    step: Any,
    num_zero_steps: Any = 1,
    use_optimized_scale: bool = True,
    eps: float = DEFAULT_EPS,
    reduce_axes: Sequence[int] | int | None = None,
) -> jax.Array:
  r"""The CFG-Zero* guided velocity of one solver step.

  .. math::  \hat v = \begin{cases} 0 & \text{step} < K \\
             s^*\,v_u + w\,(v_c - s^*\,v_u) & \text{otherwise} \end{cases}

  with :math:`K` = ``num_zero_steps`` and :math:`s^*` from :func:`optimized_scale` (or :math:`s = 1`,
  i.e. plain CFG, when ``use_optimized_scale=False``). The branch order follows the reference code
  (``noise_pred_uncond * alpha + w * (noise_pred_text - noise_pred_uncond * alpha)``).

  Args:
    v_cond: conditional velocity :math:`v_c`, shape ``(B, ...)``.
    v_uncond: unconditional velocity :math:`v_u`, same shape.
    w: guidance scale :math:`w` (``w = 1``: conditional only; paper's SD3.5 setting 3.5); a scalar or a
      per-sample ``[B]`` vector, may be traced. Concrete values must be finite.
    step: 0-based index of the current solver step (Python int or traced integer scalar).
    num_zero_steps: :math:`K`, number of leading steps whose velocity is zeroed (paper default 1; 0
      disables zero-init). The reference ``zero_steps = z`` is ``num_zero_steps = z + 1``. May be traced.
    use_optimized_scale: use :math:`s^*` (True) or :math:`s = 1` (False: CFG with zero-init only).
    eps: :math:`\varepsilon` of :func:`optimized_scale`.
    reduce_axes: reduction axes of :func:`optimized_scale`.

  Returns:
    The guided velocity, shape and dtype of the velocities (computed in float32 for low-precision inputs).

  Examples:
    >>> import jax.numpy as jnp
    >>> vc, vu = jnp.array([[1.0, 2.0]]), jnp.array([[2.0, 4.0]])      # v_c = 0.5 v_u: s* = 0.5
    >>> cfg_zero_star_combine(vc, vu, 4.0, step=3).tolist()             # output = v_c for every w
    [[1.0, 2.0]]
    >>> cfg_zero_star_combine(vc, vu, 4.0, step=0).tolist()             # zero-init: first step zeroed
    [[0.0, 0.0]]
  """
  v_cond, v_uncond = _check_velocities(v_cond, v_uncond)
  w = _check_w(w, v_cond)
  num_zero_steps = _check_num_zero_steps(num_zero_steps)
  step = _check_step(step)
  out_dtype = jnp.result_type(v_cond, v_uncond)
  dtype = _compute_dtype(v_cond, v_uncond)
  vc, vu = v_cond.astype(dtype), v_uncond.astype(dtype)
  w = w.astype(dtype) if jnp.issubdtype(w.dtype, jnp.integer) else w
  if use_optimized_scale:
    scaled_uncond = optimized_scale(vc, vu, eps=eps, reduce_axes=reduce_axes) * vu
  else:
    _check_eps(eps)
    scaled_uncond = vu
  guided = (scaled_uncond + w * (vc - scaled_uncond)).astype(dtype)
  if isinstance(num_zero_steps, int) and num_zero_steps == 0:
    return guided.astype(out_dtype)
  return jnp.where(step < num_zero_steps, jnp.zeros_like(guided), guided).astype(out_dtype)
