r"""Classifier-free guidance as velocity combinators, and a guided sampler for every ``core.ode`` solver.

Classifier-free guidance (Ho & Salimans 2022) combines a conditional velocity :math:`v_c` and an
unconditional one :math:`v_u` predicted at the same :math:`(x_t, t)`:

.. math::  v_{cfg} = v_u + w\,(v_c - v_u),

with the guidance scale :math:`w` in the convention of the CFG-Zero* paper and of diffusers: **w = 1 means
conditional only** (no guidance), ``w = 0`` unconditional. Ho & Salimans write
:math:`(1 + \omega)\,v_c - \omega\,v_u`, i.e. :math:`\omega = w - 1`; convert explicitly with
:func:`ho_salimans_to_w` / :func:`w_to_ho_salimans` (nothing here converts silently).

Guidance rules (``rule=``), all special cases of :func:`jaxgen.guidance.cfg_zero_star_combine`
(:math:`\hat v = s\,v_u + w\,(v_c - s\,v_u)`, zeroed for the first :math:`K` = ``num_zero_steps`` steps):

=====================  ===========================================  ==========================
rule                   scale :math:`s`                              zero-init
=====================  ===========================================  ==========================
``"cfg"``              1                                            no
``"optimized-scale"``  :math:`s^*` (``guidance.optimized_scale``)   no
``"zero-init"``        1                                            first ``num_zero_steps``
``"cfg-zero-star"``    :math:`s^*`                                  first ``num_zero_steps``
=====================  ===========================================  ==========================

Zero-init depends on the solver *step index*, so a guided velocity is a function ``(step, t, x) -> v``
(:func:`guided_velocity`) and :func:`guided_sample` runs a ``lax.scan`` whose inputs carry the step
counter next to the time interval; inside a step every stage of a multi-stage method (Heun, midpoint,
RK4) sees the same step index, so a zeroed step leaves the state exactly unchanged. The one-step maps are
those of :mod:`jaxgen.core.ode` (``ode.METHODS``), so every solver works with every rule.

Time convention: the library's t-convention (``t = 0`` noise, ``t = 1`` data, ``v = x_data - noise``,
increasing grid such as ``ode.uniform_grid`` or ``ode.sigma_to_t(ode.flow_euler_sigmas(...))``).
Because every rule is odd in the velocities (negating both branches negates the output, :math:`s^*` is
unchanged) and the solvers accept decreasing grids, a diffusers/SD3 sigma-convention model (``sigma = 1 - t``,
output ``noise - x_data``) can be sampled either on its own decreasing sigma grid (exactly diffusers'
FlowMatchEuler loop for ``method="euler"``) or converted at the edge with ``ode.velocity_sigma_to_t`` and
``ode.sigma_to_t``; both are tested against the reference trajectories.

References:
  Ho, Salimans, "Classifier-Free Diffusion Guidance", arXiv 2207.12598 (2022).
  Fan, Zheng, Yeh, Liu, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models",
  arXiv 2503.18886 (2025).
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.core import ode
from jaxgen.guidance.cfg_zero_star import (
    DEFAULT_EPS,
    _check_eps,
    _check_num_zero_steps,
    _check_velocities,
    _check_w,
    _compute_dtype,
    _is_concrete,
    cfg_zero_star_combine,
)

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]                 # (t, x) -> v
StepVelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (step, t, x) -> v
LoopFn = Callable[..., tuple[Any, Any]]

RULES: dict[str, tuple[bool, bool]] = {
    "cfg": (False, False),
    "optimized-scale": (True, False),
    "zero-init": (False, True),
    "cfg-zero-star": (True, True),
}
"""Guidance rule -> ``(use_optimized_scale, use_zero_init)``."""

__all__ = [
    "RULES",
    "StepVelocityFn",
    "VelocityFn",
    "cfg_combine",
    "class_conditional_velocities",
    "guided_sample",
    "guided_velocity",
    "ho_salimans_to_w",
    "w_to_ho_salimans",
]


def ho_salimans_to_w(omega: Any) -> Any:
  r"""Ho & Salimans' guidance weight :math:`\omega` (:math:`(1+\omega) v_c - \omega v_u`) to :math:`w = \omega + 1`."""
  return omega + 1


def w_to_ho_salimans(w: Any) -> Any:
  r"""Guidance scale :math:`w` (``w = 1``: conditional only) to Ho & Salimans' :math:`\omega = w - 1`."""
  return w - 1


def cfg_combine(v_cond: jax.Array, v_uncond: jax.Array, w: Any) -> jax.Array:
  r"""Plain classifier-free guidance :math:`v_u + w\,(v_c - v_u)` (``w = 1``: exactly ``v_cond`` up to rounding).

  Args:
    v_cond: conditional velocity :math:`v_c`, shape ``(B, ...)``.
    v_uncond: unconditional velocity :math:`v_u`, same shape.
    w: guidance scale :math:`w`; a scalar or a per-sample ``[B]`` vector, may be traced (concrete values
      must be finite).

  Returns:
    The guided velocity in the velocities' dtype (computed in float32 for bfloat16/float16 inputs).

  Examples:
    >>> import jax.numpy as jnp
    >>> cfg_combine(jnp.array([[1.0, 3.0]]), jnp.array([[1.0, 1.0]]), 2.0).tolist()
    [[1.0, 5.0]]
  """
  v_cond, v_uncond = _check_velocities(v_cond, v_uncond)
  w = _check_w(w, v_cond)
  dtype = _compute_dtype(v_cond, v_uncond)
  vc, vu = v_cond.astype(dtype), v_uncond.astype(dtype)
  w = w.astype(dtype) if jnp.issubdtype(w.dtype, jnp.integer) else w
  return (vu + w * (vc - vu)).astype(jnp.result_type(v_cond, v_uncond))


def _check_rule(rule: Any) -> str:
  name = rule.replace("_", "-") if isinstance(rule, str) else rule
  if name not in RULES:
    raise ValueError(f"`rule` must be one of {sorted(RULES)}, got {rule!r}")
  return name


def _check_single_branch_w(w: Any) -> None:
  if _is_concrete(w) and not bool(np.all(np.asarray(w, np.float64) == 1.0)):
    raise ValueError(f"`w` must be 1 when `v_uncond_fn` is None (a model without an unconditional branch has "
                     f"no guidance to scale; only zero-init applies), got {w}")


def guided_velocity(
    v_cond_fn: VelocityFn,
    v_uncond_fn: VelocityFn | None,
    *,
    rule: str,
    w: Any,
    num_zero_steps: Any = 1,
    eps: float = DEFAULT_EPS,
    reduce_axes: Sequence[int] | int | None = None,
    skip_zeroed_evaluations: bool = True,
) -> StepVelocityFn:
  r"""Builds the guided velocity ``(step, t, x) -> v`` of a guidance rule from the two branches.

  Args:
    v_cond_fn: conditional velocity ``(t, x) -> v_c`` (conditions closed over, see
      :func:`class_conditional_velocities`).
    v_uncond_fn: unconditional velocity ``(t, x) -> v_u``, or ``None`` for a model without an
      unconditional branch (guidance-distilled models): then only ``rule="zero-init"`` applies, ``w`` must
      be 1 and the result is ``v_c`` with the first ``num_zero_steps`` steps zeroed.
    rule: one of :data:`RULES` (``"cfg"``, ``"optimized-scale"``, ``"zero-init"``, ``"cfg-zero-star"``;
      underscores are accepted for hyphens).
    w: guidance scale :math:`w` (``w = 1``: conditional only), scalar or per-sample ``[B]``, may be traced.
    num_zero_steps: :math:`K`, zeroed leading steps for the zero-init rules (paper default 1; reference
      ``zero_steps = z`` is ``K = z + 1``). Ignored by ``"cfg"`` and ``"optimized-scale"``
      (the reference code also ignores ``zero_steps`` without ``use_zero_init``). May be traced.
    eps: :math:`\varepsilon` of the optimized scale.
    reduce_axes: reduction axes of the optimized scale (default all non-batch axes).
    skip_zeroed_evaluations: on zeroed steps skip both network calls with ``lax.cond`` (under ``vmap``
      this becomes a select, which is still correct). False evaluates and masks with ``jnp.where``.

  Returns:
    ``velocity(step, t, x)``: ``step`` is the 0-based solver step (int or traced integer scalar).
  """
  rule = _check_rule(rule)
  use_scale, use_zero_init = RULES[rule]
  _check_eps(eps)
  num_zero_steps = _check_num_zero_steps(num_zero_steps) if use_zero_init else 0
  if v_uncond_fn is None:
    if rule != "zero-init":
      raise ValueError(f"`v_uncond_fn` is None (no unconditional branch): only rule 'zero-init' applies, got "
                       f"rule {rule!r}")
    _check_single_branch_w(w)
  elif _is_concrete(w):
    w_arr = np.asarray(w, np.float64)
    if not np.all(np.isfinite(w_arr)):
      raise ValueError(f"`w` (the guidance scale) must be finite, got {w}")
  static_no_zero = isinstance(num_zero_steps, int) and num_zero_steps == 0

  def combine(step, t, x):
    v_cond = v_cond_fn(t, x)
    if v_uncond_fn is None:
      v_cond, _ = _check_velocities(v_cond, v_cond)
      return jnp.where(jnp.asarray(step) < num_zero_steps, jnp.zeros_like(v_cond), v_cond)
    return cfg_zero_star_combine(v_cond, v_uncond_fn(t, x), w, step=step, num_zero_steps=num_zero_steps,
                                 use_optimized_scale=use_scale, eps=eps, reduce_axes=reduce_axes)

  if static_no_zero or not skip_zeroed_evaluations:
    return combine

  def velocity(step, t, x):
    out = jax.eval_shape(combine, step, t, x)
    return jax.lax.cond(jnp.asarray(step) < num_zero_steps,
                        lambda: jnp.zeros(out.shape, out.dtype),
                        lambda: combine(step, t, x))

  return velocity


def _check_grid(ts: Any) -> jax.Array:
  ts = jnp.asarray(ts)
  if ts.ndim != 1 or ts.shape[0] < 2:
    raise ValueError(f"`ts` must be a 1-D time grid with at least 2 points, got shape {ts.shape}")
  if not jnp.issubdtype(ts.dtype, jnp.floating):
    raise ValueError(f"`ts` must have a floating dtype, got {ts.dtype}")
  if _is_concrete(ts):
    d = np.diff(np.asarray(ts, np.float64))
    if not (np.all(d > 0) or np.all(d < 0)):
      raise ValueError(f"`ts` must be strictly monotone (all increasing or all decreasing), got {ts}")
  return ts


def guided_sample(
    v_cond_fn: VelocityFn,
    v_uncond_fn: VelocityFn | None,
    x0: jax.Array,
    ts: jax.Array,
    *,
    rule: str,
    w: Any,
    method: str = "euler",
    num_zero_steps: Any = 1,
    eps: float = DEFAULT_EPS,
    reduce_axes: Sequence[int] | int | None = None,
    return_trajectory: bool = False,
    skip_zeroed_evaluations: bool = True,
    loop: LoopFn = jax.lax.scan,
    checkpoint: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  r"""Samples with a guidance rule on any :mod:`jaxgen.core.ode` solver and grid (one ``lax.scan``).

  Step ``n`` (``n = 0 .. N-1``) integrates :math:`dx/dt = \hat v(n, t, x)` over ``[ts[n], ts[n+1]]`` with
  the one-step map ``ode.METHODS[method]``, where :math:`\hat v` is :func:`guided_velocity` of the rule.
  With zero-init the first ``num_zero_steps`` steps leave the state bit-for-bit at ``x0`` while time
  advances to ``ts[num_zero_steps]``; the rest equals the same sampler without zero-init run from ``x0``
  on ``ts[num_zero_steps:]``.

  Jit at the edge and pass conditions as arguments of the jitted function (close over them in
  ``v_cond_fn``), so new label batches of the same shape reuse the compiled sampler::

    @jax.jit
    def sample(params, x0, labels, w):
      v_c, v_u = class_conditional_velocities(apply_fn, params, labels, null_label=10)
      return guided_sample(v_c, v_u, x0, ts, rule="cfg-zero-star", w=w)

  Args:
    v_cond_fn: conditional velocity ``(t, x) -> v_c``; ``t`` is a scalar of ``ts.dtype``, ``x`` of
      ``x0.shape`` (a batch of samples, each with its own condition closed over).
    v_uncond_fn: unconditional velocity ``(t, x) -> v_u`` (same convention), or ``None`` for a model
      without an unconditional branch (then ``rule="zero-init"`` and ``w=1``).
    x0: initial noise ``(B, ...)`` at ``ts[0]``.
    ts: ``[N + 1]`` strictly monotone grid, traced values allowed (``N`` is static). t-convention:
      increasing 0 -> 1 (``ode.uniform_grid``, ``ode.sigma_to_t(ode.flow_euler_sigmas(N, shift))``); a
      sigma-convention model may instead be run on its decreasing sigma grid (see the module docstring).
    rule: ``"cfg"``, ``"optimized-scale"``, ``"zero-init"`` or ``"cfg-zero-star"`` (:data:`RULES`).
    w: guidance scale :math:`w` (``w = 1``: conditional only), scalar or per-sample ``[B]``, may be traced.
    method: ``"euler"``, ``"heun"``, ``"midpoint"`` or ``"rk4"`` (``ode.METHODS``).
    num_zero_steps: :math:`K` zeroed leading steps for the zero-init rules, ``0 <= K <= N`` (paper default
      1; about 4% of the steps is the authors' advice). Reference ``zero_steps = z`` is ``K = z + 1``.
      Ignored (but still validated) by ``"cfg"`` and ``"optimized-scale"``.
    eps: :math:`\varepsilon` of the optimized scale (1e-8).
    reduce_axes: reduction axes of the optimized scale (default all non-batch axes).
    return_trajectory: also return the states at every grid point.
    skip_zeroed_evaluations: skip the network calls of zeroed steps (``lax.cond``).
    loop: a ``lax.scan``-compatible loop (``ode.python_scan`` to debug eagerly).
    checkpoint: rematerialise each step in the backward pass (``jax.checkpoint``).

  Returns:
    ``x(ts[-1])`` of ``x0``'s shape and dtype, or ``(x(ts[-1]), trajectory)`` with ``trajectory`` of shape
    ``[N + 1, *x0.shape]``, ``trajectory[0] = x0``.
  """
  if method not in ode.METHODS:
    raise ValueError(f"`method` must be one of {sorted(ode.METHODS)}, got {method!r}")
  ts = _check_grid(ts)
  num_steps = ts.shape[0] - 1
  checked_zero_steps = _check_num_zero_steps(num_zero_steps)
  if isinstance(checked_zero_steps, int) and checked_zero_steps > num_steps:
    raise ValueError(f"`num_zero_steps` must be at most the number of steps {num_steps} (len(ts) - 1), got "
                     f"{checked_zero_steps}")
  x0 = jnp.asarray(x0)
  if x0.ndim < 1 or not jnp.issubdtype(x0.dtype, jnp.floating):
    raise ValueError(f"`x0` must be a floating array of shape (B, ...), got shape {x0.shape} dtype {x0.dtype}")
  velocity = guided_velocity(v_cond_fn, v_uncond_fn, rule=rule, w=w, num_zero_steps=checked_zero_steps,
                             eps=eps, reduce_axes=reduce_axes, skip_zeroed_evaluations=skip_zeroed_evaluations)
  step_map = ode.METHODS[method]

  def body(x, inputs):
    step, t0, t1 = inputs
    x_next = step_map(lambda t, y: velocity(step, t, y), t0, t1, x)
    return x_next, (x_next if return_trajectory else None)

  if checkpoint:
    body = jax.checkpoint(body)
  steps = jnp.arange(num_steps, dtype=jnp.int32)
  x_final, path = loop(body, x0, (steps, ts[:-1], ts[1:]))
  if not return_trajectory:
    return x_final
  return x_final, jnp.concatenate([x0[None], path], axis=0)


def class_conditional_velocities(
    apply_fn: Callable[..., jax.Array],
    params: Any,
    labels: jax.Array,
    null_label: Any,
) -> tuple[VelocityFn, VelocityFn]:
  """The two guidance branches of a class-conditional model ``apply_fn(params, x, t, y)`` with a null class.

  ``apply_fn`` follows :mod:`jaxgen.core.flow` (``t`` of shape ``[B]``, labels ``[B]``); the scalar solver
  time is broadcast to ``[B]``. ``labels`` and ``null_label`` may be traced (arguments of the jitted
  sampler), so a new label batch of the same shape does not recompile.

  Args:
    apply_fn: ``apply_fn(params, x, t, y) -> v`` in the t-convention.
    params: model parameters.
    labels: integer class labels ``[B]``, one per sample of the sampled batch.
    null_label: the null (unconditional) class id used in classifier-free training.

  Returns:
    ``(v_cond_fn, v_uncond_fn)``, both ``(t, x) -> v``.
  """
  labels = jnp.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"`labels` must be a 1-D array of class ids [B], got shape {labels.shape}")
  null_labels = jnp.full(labels.shape, null_label, labels.dtype)

  def _check_batch(x):
    if x.shape[0] != labels.shape[0]:
      raise ValueError(f"`labels` has {labels.shape[0]} entries but the sampled batch has {x.shape[0]} samples")

  def v_cond_fn(t, x):
    _check_batch(x)
    return apply_fn(params, x, jnp.broadcast_to(t, (x.shape[0],)), labels)

  def v_uncond_fn(t, x):
    _check_batch(x)
    return apply_fn(params, x, jnp.broadcast_to(t, (x.shape[0],)), null_labels)

  return v_cond_fn, v_uncond_fn
