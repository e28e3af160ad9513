r"""StableMax: a softmax replacement that cannot collapse numerically.

Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability", ICLR 2025, arXiv 2501.04697
(https://arxiv.org/abs/2501.04697); official code github.com/LucasPrietoAl/grokking-at-the-edge-of-numerical-stability
@ 0cc9e8d, ``utils.py::s``, ``log_stablemax``, ``stablemax_cross_entropy``.

The exponential of softmax is replaced by (paper Eq. 7)

.. math:: s(x) = \begin{cases} x + 1 & x \ge 0 \\ \dfrac{1}{1 - x} & x < 0 \end{cases}

(positive, continuous, :math:`C^1` at 0 with :math:`s(0) = s'(0) = 1`; it grows only linearly and decays only like
:math:`1/|x|`), and (Eq. 8)

.. math:: \mathrm{StableMax}(z)_i = \frac{s(z_i)}{\sum_j s(z_j)}, \qquad
          \ell(z, y) = -\log \mathrm{StableMax}(z)_y .

Log-space form used here: :math:`\log s(x) = \operatorname{log1p}(x)` for :math:`x \ge 0` and
:math:`-\operatorname{log1p}(-x)` for :math:`x < 0` (a signed ``log1p``), so
:math:`\log\mathrm{StableMax}(z) = \operatorname{log\_softmax}(\log s(z))`: StableMax is softmax applied to the
signed-log1p of the logits. Gradient:
:math:`\partial\ell/\partial z_i = s'(z_i)/\sum_j s(z_j) - 1[i = y]\, s'(z_y)/s(z_y)`, with :math:`s'(x) = 1`
for :math:`x \ge 0` and :math:`1/(1-x)^2` for :math:`x < 0`.

Unlike softmax, StableMax is **not** shift-invariant (adding a constant to every logit changes it). Because
:math:`s` is linear for large inputs, logits of :math:`10^6` do not overflow in float32. Both branches are
evaluated on inputs masked to their own domain — the "double where" pattern — so the branch that is not
taken never produces inf/NaN under autodiff; at :math:`x = 0` the derivative is the right one, 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["log_stablemax", "stablemax", "stablemax_cross_entropy", "stablemax_log_s", "stablemax_s"]


def _check_float(name: str, x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
  return x


def _split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(x if x < 0 else 0, x if x >= 0 else 0)``: each branch sees only its own domain (safe under autodiff).

  ``jnp.where`` rather than ``minimum``/``maximum``: at ``x = 0`` the gradient then flows fully through the
  ``x >= 0`` branch (as in the reference's ``torch.where(x < 0, ...)``), not half through each.
  """
  zero = jnp.zeros_like(x)
  return jnp.where(x < 0, x, zero), jnp.where(x < 0, zero, x)


def stablemax_s(x: jax.Array) -> jax.Array:
  r"""The elementwise map :math:`s(x)` of StableMax (paper Eq. 7): :math:`x+1` for :math:`x\ge0`, else :math:`1/(1-x)`.

  Examples:
    >>> import jax.numpy as jnp
    >>> stablemax_s(jnp.array([-1.0, 0.0, 2.0])).tolist()
    [0.5, 1.0, 3.0]
  """
  x = _check_float("x", x)
  neg_x, pos_x = _split(x)
  return jnp.where(x < 0, 1.0 / (1.0 - neg_x), pos_x + 1.0)


def stablemax_log_s(x: jax.Array) -> jax.Array:
  r""":math:`\log s(x)`: ``log1p(x)`` for :math:`x \ge 0`, ``-log1p(-x)`` for :math:`x < 0` (a signed log1p)."""
  x = _check_float("x", x)
  neg_x, pos_x = _split(x)
  return jnp.where(x < 0, -jnp.log1p(-neg_x), jnp.log1p(pos_x))


def _check_axis(x: jax.Array, axis: int) -> int:
  if not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
    raise ValueError(f"axis must be an int in [{-x.ndim}, {x.ndim}), got {axis!r}")
  return axis


def log_stablemax(logits: jax.Array, axis: int = -1) -> jax.Array:
  r""":math:`\log \mathrm{StableMax}(z) = \log s(z) - \log\sum_j s(z_j)` along ``axis`` (paper Eq. 8).

  Computed as ``jax.nn.log_softmax(stablemax_log_s(logits))``, which is exact and keeps the normaliser in log space.

  Args:
    logits: floating-point array :math:`z`.
    axis: the class axis.

  Returns:
    Log-probabilities, same shape and dtype as ``logits``.
  """
  logits = _check_float("logits", logits)
  axis = _check_axis(logits, axis)
  return jax.nn.log_softmax(stablemax_log_s(logits), axis=axis)


def stablemax(logits: jax.Array, axis: int = -1) -> jax.Array:
  r""":math:`\mathrm{StableMax}(z)_i = s(z_i) / \sum_j s(z_j)` along ``axis`` (paper Eq. 8).

  Evaluated as ``softmax(stablemax_log_s(logits))`` (the normaliser in log space), so any finite logits give
  finite probabilities that sum to 1: no overflow of :math:`\sum_j s(z_j)` for logits near the dtype's maximum and
  no 0/0 when every :math:`s(z_j)` underflows (all logits near the dtype's minimum). NaN or +inf logits give NaN
  in their row (data, propagated); -inf is the limit :math:`s(-\infty) = 0`, i.e. probability 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> [round(p, 4) for p in stablemax(jnp.array([0.0, 1.0, -1.0])).tolist()]  # s = (1, 2, 1/2)
    [0.2857, 0.5714, 0.1429]
  """
  logits = _check_float("logits", logits)
  axis = _check_axis(logits, axis)
  return jax.nn.softmax(stablemax_log_s(logits), axis=axis)


def stablemax_cross_entropy(logits: jax.Array, labels: jax.Array, *, compute_dtype=None) -> jax.Array:
  r"""Per-example StableMax cross-entropy :math:`-\log \mathrm{StableMax}(z)_y` (reduce outside).

  The official code upcasts the logits to float64 before the loss; ``compute_dtype=None`` does the same when
  ``jax_enable_x64`` is on and uses float32 otherwise. The result is returned in ``compute_dtype``.

  Args:
    logits: ``[..., C]`` floating-point logits :math:`z`.
    labels: ``[...]`` integer class indices :math:`y` in ``[0, C)``.
    compute_dtype: dtype of the computation (``None``: float64 if x64 is enabled, else float32).

  Returns:
    ``[...]`` per-example losses (:math:`\ge 0`).

  Raises:
    TypeError: non-float ``logits``, non-integer ``labels`` or a non-float ``compute_dtype``.
    ValueError: ``labels`` not of shape ``logits.shape[:-1]``, or (when concrete) outside ``[0, C)`` — an
      out-of-range label would otherwise gather a NaN. Under ``jit`` the range is the caller's responsibility.

  Examples:
    >>> import jax.numpy as jnp
    >>> round(float(stablemax_cross_entropy(jnp.zeros((1, 4)), jnp.array([2]))[0]), 4)  # uniform: log 4
    1.3863
  """
  logits = _check_float("logits", logits)
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
  if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
    raise ValueError(f"labels must have shape logits.shape[:-1] = {logits.shape[:-1]}, got {labels.shape}")
  if logits.shape[-1] < 1:
    raise ValueError(f"logits must have at least one class, got shape {logits.shape}")
  if not isinstance(labels, jax.core.Tracer) and labels.size:
    lo, hi = int(jnp.min(labels)), int(jnp.max(labels))
    if lo < 0 or hi >= logits.shape[-1]:
      raise ValueError(f"labels must lie in [0, C={logits.shape[-1]}), got values in [{lo}, {hi}]")
  if compute_dtype is None:
    compute_dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  try:
    ok = jnp.issubdtype(jnp.dtype(compute_dtype), jnp.floating)
  except TypeError:
    ok = False
  if not ok:
    raise TypeError(f"compute_dtype must be a floating-point dtype, got {compute_dtype!r}")
  logprobs = log_stablemax(logits.astype(compute_dtype), axis=-1)
  return -jnp.take_along_axis(logprobs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
