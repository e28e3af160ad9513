r"""SPAM: Spike-Aware Adam with momentum reset (the dense optimizer of the official code).

Huang, Zhu, Jin, Liu, Wang, Liu, "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training",
ICLR 2025, arXiv 2501.06842 (https://arxiv.org/abs/2501.06842); official code
github.com/TianjinYellow/SPAM-Optimizer @ e8185fb, ``galore_torch/SPAM.py::AdamW.step`` (exported as ``SPAM``).

Per leaf (pytree leaf = "tensor"), at update :math:`t = 1, 2, \dots` with gradient :math:`g`, moments
:math:`m, v` (stored), reset interval :math:`\Delta T`, spike threshold :math:`\theta`, clip delay :math:`A`,
post-reset warm-up length :math:`N`:

1. Momentum reset: if :math:`t \bmod \Delta T = 0`, set :math:`m = v = 0` *before* using them.
2. Spike-aware clipping, only when :math:`t \ge A` and :math:`(t \bmod \Delta T) \ge A` and :math:`\theta > 0`
   (with the previous, *not* bias-corrected :math:`v`):

   .. math:: g_i \leftarrow \operatorname{sign}(g_i)\sqrt{\theta v_i} \quad\text{where } g_i^2 > \theta v_i.

3. :math:`m \leftarrow \beta_1 m + (1-\beta_1) g,\; v \leftarrow \beta_2 v + (1-\beta_2) g^2`.
4. Cosine warm-up after each reset: with :math:`c = t \bmod \Delta T` once :math:`t \ge \Delta T`
   (:math:`c = \infty` before the first reset),

   .. math:: w_t = 1 \text{ if } c \ge N, \text{ else } 1 - 0.99\cdot\tfrac12\bigl(1 + \cos(\pi c / (N + 1))\bigr)

   (0.01 on the reset step, back to 1 after :math:`N` steps).
5. :math:`u_t = w_t\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{m}{\sqrt{v} + \epsilon}` — :math:`\epsilon` is
   added to the *uncorrected* :math:`\sqrt v` and the bias-correction counter :math:`t` is never reset
   (reference behaviour).

:func:`scale_by_spam` returns :math:`u_t`. :func:`spam` applies the learning rate :math:`\eta_t` and the
reference's decoupled weight decay :math:`\lambda`, which multiplies the *already updated* parameter:
:math:`\theta_{new} = (1 - \eta_t\lambda)(\theta - \eta_t u_t)`, i.e. the optax update

.. math:: \Delta\theta = -\eta_t (1 - \eta_t\lambda)\, u_t - \eta_t \lambda\, \theta .

This differs from ``optax.add_decayed_weights`` by :math:`O(\eta^2\lambda)`; the exact form is what reproduces the
reference.

Official argument names → ours: ``lr`` → ``learning_rate`` (float or optax schedule, called with the 0-based update
count), ``betas[0]``/``betas[1]`` → ``b1``/``b2``, ``eps`` → ``eps``, ``weight_decay`` → ``weight_decay``,
``threshold`` → ``threshold``, ``DeltaT`` → ``reset_interval`` (``None`` or 0 = never reset; the reference cannot
express this), ``warmup_steps`` → ``warmup_steps``, ``grad_accu_steps`` → ``clip_delay``. State:
``exp_avg`` → ``mu``, ``exp_avg_sq`` → ``nu``, ``step`` → ``count``. Sparse-momentum masks (the paper's
memory-saving variant) are not implemented.

Non-finite gradients: if any entry of any gradient leaf is NaN or ±inf, the whole step is skipped — the updates
are exactly zero and the returned state equals the input state (``count`` does not advance, moments untouched).
:func:`spam` skips the learning-rate schedule step and the weight decay too, so a poisoned batch leaves the
parameters and the optimizer state bit-identical, as if the batch had not been seen.

Precision: moments are stored in the parameter dtype (``mu_dtype`` overrides the first moment, as in
``optax.adam``); all arithmetic runs in at least float32; updates come back in the gradient dtype.

Pitfall: the official training script passes its LR warm-up (e.g. 1000 steps) as ``warmup_steps``; with
``DeltaT = 500`` the factor :math:`w_t` then never returns to 1 (upstream issue #6). ``warmup_steps`` here is the
post-reset warm-up only (paper default 150), independent of any learning-rate schedule.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["SpamState", "scale_by_spam", "spam"]

PyTree = Any


class SpamState(NamedTuple):
  """State of :func:`scale_by_spam`.

  Attributes:
    count: int32 scalar, number of (finite) updates so far; the reference's never-reset ``step``.
    mu: first moment :math:`m` (reference ``exp_avg``), same tree as the params.
    nu: second moment :math:`v` (reference ``exp_avg_sq``), same tree as the params.
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


# ----------------------------------------------------------------------------------------------------------------
# Helpers shared with stable_spam.py (Stable-SPAM builds on SPAM).


def _concrete(value: Any) -> float | None:
  """``value`` as a Python number if it is concrete, ``None`` if it is traced (jit / inject_hyperparams)."""
  if value is None:
    return None
  try:
    arr = np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None
  if arr.shape != ():
    raise ValueError(f"expected a scalar hyper-parameter, got an array of shape {arr.shape}")
  return arr.item()


def _check_in_unit_interval(name: str, value: Any) -> None:
  """``value`` in ``[0, 1)`` (checked only when concrete)."""
  v = _concrete(value)
  if v is not None and not 0.0 <= v < 1.0:
    raise ValueError(f"{name} must be in [0, 1), got {value}")


def _check_nonnegative(name: str, value: Any) -> None:
  v = _concrete(value)
  if v is not None and not v >= 0.0:  # also rejects NaN
    raise ValueError(f"{name} must be >= 0, got {value}")


def _check_count(name: str, value: Any, *, allow_none: bool = False, minimum: int = 0) -> None:
  """A non-negative integer (``None`` allowed if ``allow_none``), checked only when concrete."""
  if value is None:
    if allow_none:
      return
    raise ValueError(f"{name} must be an integer >= {minimum}, got None")
  if isinstance(value, bool):
    raise TypeError(f"{name} must be an integer, got {value!r}")
  v = _concrete(value)
  if v is None:
    return
  if isinstance(v, float) and not v.is_integer():
    raise TypeError(f"{name} must be an integer, got {value!r}")
  if v < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''}, got {value}")


def _check_learning_rate(learning_rate: Any) -> None:
  if not callable(learning_rate):
    _check_nonnegative("learning_rate", learning_rate)


def _compute_dtype(dtype: Any) -> jnp.dtype:
  """The dtype arithmetic runs in: the leaf dtype promoted to at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def _one_minus(value: Any, dtype: Any) -> jax.Array:
  """``1 - value`` in ``dtype``, computed in double precision when ``value`` is a concrete number."""
  v = _concrete(value)
  if v is not None:
    return jnp.asarray(1.0 - v, dtype)
  return 1 - jnp.asarray(value, dtype)


def _log(decay: Any, dtype: Any) -> jax.Array:
  """``log(decay)`` in ``dtype``; computed in double precision when ``decay`` is a concrete number."""
  d = _concrete(decay)
  if d is not None:
    return jnp.asarray(math.log(d) if d > 0 else -math.inf, dtype)
  return jnp.log(jnp.asarray(decay, dtype))


def _bias_correction(decay: jax.Array, log_decay: jax.Array, k: jax.Array, dtype: Any) -> jax.Array:
  r""":math:`1 - d^k` for an int32 counter :math:`k \ge 1`.

  The reference computes it with Python floats (double precision). In float64 we do the same arithmetic
  (``1 - d**k``, bit-compatible with the reference); in narrower dtypes ``-expm1(k log d)`` with ``log d`` taken in
  double precision gives the double-precision value rounded to ``dtype``, where ``1 - d**k`` would lose most
  digits for ``d`` near 1 (e.g. ``1 - 0.99999`` in float32 is off by 0.1%).
  """
  kf = k.astype(dtype)
  if jnp.dtype(dtype) == jnp.float64:
    return 1 - jnp.power(decay.astype(dtype), kf)
  return -jnp.expm1(kf * log_decay.astype(dtype))


def _full_reduce(operands: tuple[jax.Array, ...], inits: tuple[Any, ...], combine) -> tuple[jax.Array, ...]:
  """One pass over same-shaped ``operands`` reducing all of them to scalars at once (a variadic ``lax.reduce``).

  Performance note (measured on XLA:CPU, see ``benchmarks/optimizer_step.py``): a single-operand ``jnp.max`` /
  ``jnp.sum`` whose input is an elementwise expression is compiled to a library reduction that first
  materialises the expression and costs several times the whole Adam step on a 10M-parameter tree; a *variadic*
  reduce is fused with its producer and reads the leaf once. Float sums are further split into rows of 16
  (independent accumulators, level by level) because a single sequential accumulation chain is latency-bound.
  """
  dtypes = tuple(x.dtype for x in operands)
  inits = tuple(jnp.asarray(i, d) for i, d in zip(inits, dtypes))
  return tuple(jax.lax.reduce(operands, inits, combine, tuple(range(operands[0].ndim))))


def _max_abs(x: jax.Array) -> jax.Array:
  """``max |x|`` in one pass; NaN if any entry is NaN, inf if any is ±inf (so finiteness comes for free).

  Computed on the bit patterns: with the sign bit cleared, IEEE floats order like their integer bit patterns
  (and every NaN lies above inf), so an *integer* max — cheap and exactly associative — gives the float max.
  (The min is carried along and folded back as ``max(mx, min(mn, mx)) == mx`` to keep the reduction variadic,
  i.e. fused with the masking; see :func:`_full_reduce`.)
  """
  if x.size == 0:
    return jnp.zeros([], x.dtype)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"_max_abs expects a float array, got {x.dtype}")
  int_dtype = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[jnp.dtype(x.dtype).itemsize]
  info = jnp.iinfo(int_dtype)
  bits = jax.lax.bitcast_convert_type(x, int_dtype) & jnp.asarray(info.max, int_dtype)   # |x| as bits
  mx, mn = _full_reduce((bits, bits), (0, info.max), lambda a, b: (jnp.maximum(a[0], b[0]), jnp.minimum(a[1], b[1])))
  return jax.lax.bitcast_convert_type(jnp.maximum(mx, jnp.minimum(mn, mx)), x.dtype)


def _sum_sq_and_abs(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(sum x^2, sum |x|)`` in one pass over ``x`` (rows of 16 partial sums, repeated on the partial sums)."""
  if x.size == 0:
    return jnp.zeros([], x.dtype), jnp.zeros([], x.dtype)
  add = lambda a, b: (a[0] + b[0], a[1] + b[1])  # noqa: E731
  zero = jnp.zeros([], x.dtype)
  operands = (x * x, jnp.abs(x))
  while operands[0].size % 16 == 0 and operands[0].size >= 256:   # at most log_16(size) levels
    rows = tuple(o.reshape(-1, 16) for o in operands)
    operands = tuple(jax.lax.reduce(rows, (zero, zero), add, (1,)))
  return _full_reduce(operands, (0, 0), add)


def _all_finite(tree: PyTree) -> jax.Array:
  """True iff every entry of every inexact leaf is finite (one fused max/min pass per leaf)."""
  ok = jnp.asarray(True)
  for leaf in jax.tree.leaves(tree):
    if jnp.issubdtype(leaf.dtype, jnp.inexact) and leaf.size:
      x = leaf.astype(_compute_dtype(leaf.dtype)) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf
      if jnp.issubdtype(x.dtype, jnp.complexfloating):
        x = jnp.stack([x.real, x.imag])
      ok = ok & jnp.isfinite(_max_abs(x))
  return ok


def _agree(ok: jax.Array, axis_name: str | None) -> jax.Array:
  """``ok`` on every device of ``axis_name`` (a no-op without one)."""
  if axis_name is None:
    return ok
  return jax.lax.pmin(ok.astype(jnp.int32), axis_name) > 0


def _select_tree(ok: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def _zeros_where_not(ok: jax.Array, updates: PyTree) -> PyTree:
  return jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), updates)


FlaggedUpdate = Any   # (updates, state) -> (updates, new_state, all_finite); new_state already skip-selected


def _skipping_transform(init_fn, flagged_update: FlaggedUpdate,
                        tail: tuple[optax.GradientTransformation, ...] = ()) -> optax.GradientTransformationExtraArgs:
  """``flagged_update`` followed by the ``tail`` transforms; a step whose gradients are not all finite returns zero
  updates and the unchanged state (of the core and of every tail transform).

  ``flagged_update`` must itself return its *input* state when the flag is False (it selects per element, inside
  the same fused kernel that writes the new moments, so donated moment buffers are updated in place without
  copies); this wrapper selects the tail states and zeroes the updates.

  Without a tail the state is the core's; with one it is the tuple ``(core_state, *tail_states)`` that
  ``optax.chain`` would build (so ``state[0].count`` works). Unlike ``optax.apply_if_finite`` nothing is added to
  the state, and the finiteness flag is computed once, by the core.
  """
  tail = tuple(optax.with_extra_args_support(t) for t in tail)

  def init(params):
    core = init_fn(params)
    return core if not tail else (core, *(t.init(params) for t in tail))

  def update_fn(updates, state, params=None, **extra_args):
    core_state = state if not tail else state[0]
    new_updates, new_core, ok = flagged_update(updates, core_state)
    new_tail = []
    for t, t_state in zip(tail, state[1:] if tail else ()):
      new_updates, t_state = t.update(new_updates, t_state, params, **extra_args)
      new_tail.append(t_state)
    new_state = new_core if not tail else (new_core, *_select_tree(ok, tuple(new_tail), tuple(state[1:])))
    return _zeros_where_not(ok, new_updates), new_state

  return optax.GradientTransformationExtraArgs(init, update_fn)


def _is_zero(value: Any) -> bool:
  v = _concrete(value)
  return v is not None and not callable(value) and v == 0


def _mask_tree(mask: Any, params: PyTree) -> PyTree:
  """The boolean mask tree (``mask`` may be a tree or a callable of the params; ``None`` = all True)."""
  if mask is None:
    return jax.tree.map(lambda _: True, params)
  return mask(params) if callable(mask) else mask


# ----------------------------------------------------------------------------------------------------------------
# SPAM.


def _reset_schedule(t: jax.Array, reset_interval: Any):
  """(resets enabled, interval with 0 replaced by 1) for a possibly traced interval; t is int32."""
  interval = jnp.asarray(reset_interval, jnp.int32)
  enabled = interval > 0
  return enabled, jnp.where(enabled, interval, 1)


def _validate_spam(b1, b2, eps, threshold, reset_interval, warmup_steps, clip_delay):
  _check_in_unit_interval("b1", b1)
  _check_in_unit_interval("b2", b2)
  _check_nonnegative("eps", eps)
  _check_nonnegative("threshold", threshold)
  _check_count("reset_interval", reset_interval, allow_none=True)
  _check_count("warmup_steps", warmup_steps)
  _check_count("clip_delay", clip_delay)


def _spam_core(b1, b2, eps, threshold, reset_interval, warmup_steps, clip_delay, mu_dtype, axis_name):
  """``(init_fn, flagged_update)`` of SPAM (no validation; see :func:`scale_by_spam`)."""
  mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

  def init_fn(params):
    mu = optax.tree.zeros_like(params, dtype=mu_dtype)
    nu = optax.tree.zeros_like(params)
    return SpamState(jnp.zeros([], jnp.int32), mu, nu)

  def flagged_update(updates, state):
    ok = _all_finite(updates)
    t = optax.safe_increment(state.count)                    # int32, 1-based update index
    if reset_interval is None:
      is_reset = jnp.asarray(False)
      after_reset = jnp.asarray(False)
      clip_window = t >= clip_delay
      phase = t
    else:
      enabled, interval = _reset_schedule(t, reset_interval)
      phase = jnp.mod(t, interval)                            # t mod ΔT
      is_reset = enabled & (phase == 0)
      after_reset = enabled & (t >= interval)
      clip_window = (t >= clip_delay) & (jnp.logical_not(enabled) | (phase >= clip_delay))
    clip_on = clip_window & (jnp.asarray(threshold) > 0)
    coefficients = {}

    def scalars(dtype):
      """Per-dtype scalars shared by all leaves: beta terms, w_t sqrt(1 - b2^t) / (1 - b1^t), eps, theta."""
      if dtype not in coefficients:
        c = phase.astype(dtype)
        n = jnp.asarray(warmup_steps, dtype)
        ramp = 1 - 0.99 * 0.5 * (1 + jnp.cos(jnp.pi * c / (n + 1)))
        w = jnp.where(after_reset & (c < n), ramp, jnp.ones_like(ramp))
        bc1 = _bias_correction(jnp.asarray(b1, dtype), _log(b1, dtype), t, dtype)
        bc2 = _bias_correction(jnp.asarray(b2, dtype), _log(b2, dtype), t, dtype)
        coefficients[dtype] = dict(
            b1=jnp.asarray(b1, dtype), one_minus_b1=_one_minus(b1, dtype), b2=jnp.asarray(b2, dtype),
            one_minus_b2=_one_minus(b2, dtype), step_size=w * jnp.sqrt(bc2) / bc1, eps=jnp.asarray(eps, dtype),
            threshold=jnp.asarray(threshold, dtype))
        factor = coefficients[dtype]["b2"] + coefficients[dtype]["one_minus_b2"] * coefficients[dtype]["threshold"]
        coefficients[dtype]["clip_factor"] = jnp.where(factor > 0, factor, jnp.ones_like(factor))
      return coefficients[dtype]

    ok = _agree(ok, axis_name)

    def leaf(g, m, v):
      # Written so that XLA emits one fused kernel per output with no copy of the donated moments: v is
      # updated first, m reads the *new* v (the clip decision and bound are recovered from it exactly, see
      # below), and u reads the stored m and v; the NaN-skip is a per-element select inside those kernels.
      dtype = _compute_dtype(g.dtype)
      c = scalars(jnp.dtype(dtype))
      g = g.astype(dtype)
      m_prev = jnp.where(is_reset, jnp.zeros_like(m), m).astype(dtype)
      v_prev = jnp.where(is_reset, jnp.zeros_like(v), v).astype(dtype)
      g_sq = g * g
      clip_v = clip_on & (g_sq > c["threshold"] * v_prev)
      v_new = c["b2"] * v_prev + c["one_minus_b2"] * jnp.where(clip_v, c["threshold"] * v_prev, g_sq)
      v_out = jnp.where(ok, v_new.astype(v.dtype), v)
      exact_v = jnp.dtype(v.dtype) == jnp.dtype(dtype)
      if exact_v:
        # With clipping v_new = (b2 + (1 - b2) theta) v_prev, otherwise theta v_new / that factor >= g^2, so
        # "g^2 > theta v_prev" <=> "g^2 > theta v_new / (b2 + (1 - b2) theta)" and the bound is the same
        # number (up to one rounding): m depends on the new v only.
        bound_sq = c["threshold"] * v_out.astype(dtype) / c["clip_factor"]
      else:   # a rounded low-precision v would move the bound: read the previous v (may cost a copy)
        bound_sq = c["threshold"] * v_prev
      clip_m = clip_on & (g_sq > bound_sq)
      g_m = jnp.where(clip_m, jnp.sign(g) * jnp.sqrt(bound_sq), g)
      m_new = c["b1"] * m_prev + c["one_minus_b1"] * g_m
      m_out = jnp.where(ok, m_new.astype(m.dtype), m)
      if exact_v and jnp.dtype(m.dtype) == jnp.dtype(dtype):
        m_u, v_u = m_out.astype(dtype), v_out.astype(dtype)       # == m_new, v_new whenever ok
      else:
        m_u, v_u = m_new, v_new
      u = c["step_size"] * m_u / (jnp.sqrt(v_u) + c["eps"])
      return u, m_out, v_out

    out = jax.tree.map(leaf, updates, state.mu, state.nu)
    treedef = jax.tree.structure(updates)
    flat = treedef.flatten_up_to(out)
    u = treedef.unflatten([jnp.asarray(o[0]).astype(g.dtype) for o, g in zip(flat, treedef.flatten_up_to(updates))])
    mu = treedef.unflatten([o[1] for o in flat])
    nu = treedef.unflatten([o[2] for o in flat])
    return u, SpamState(jnp.where(ok, t, state.count), mu, nu), ok

  return init_fn, flagged_update


def scale_by_spam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    threshold: float = 5000.0,
    reset_interval: int | None = 500,
    warmup_steps: int = 150,
    clip_delay: int = 20,
    *,
    mu_dtype: Any | None = None,
    axis_name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescale gradients with SPAM (spike clipping, periodic momentum reset, post-reset warm-up).

  Returns :math:`u_t` of the module docstring (no learning rate, no weight decay). See :func:`spam`.

  Args:
    b1: :math:`\beta_1` (paper default 0.9).
    b2: :math:`\beta_2` (0.999).
    eps: :math:`\epsilon` (1e-6), added to the uncorrected :math:`\sqrt v`.
    threshold: spike threshold :math:`\theta` (5000); entries with :math:`g^2 > \theta v` are clipped.
      0 disables clipping (then SPAM is HF-style Adam with resets and warm-up).
    reset_interval: :math:`\Delta T` (500, official ``DeltaT``); ``None`` or 0 never resets.
    warmup_steps: :math:`N` (150), length of the cosine warm-up of the update after each reset; 0 disables it.
    clip_delay: :math:`A` (20, official ``grad_accu_steps``); no clipping in the first :math:`A` steps and in the
      first :math:`A` steps after each reset (when :math:`v \approx 0`).
    mu_dtype: dtype of the first moment (default: the parameter dtype).
    axis_name: mesh axis over which leaves are split inside ``shard_map``; SPAM is elementwise, so only the
      skip-on-non-finite decision is reduced over it (every device skips the same steps).

  Returns:
    An optax ``GradientTransformationExtraArgs`` with state :class:`SpamState`.
  """
  _validate_spam(b1, b2, eps, threshold, reset_interval, warmup_steps, clip_delay)
  return _skipping_transform(*_spam_core(b1, b2, eps, threshold, reset_interval, warmup_steps, clip_delay, mu_dtype,
                                         axis_name))


class ScaleByLearningRateState(NamedTuple):
  """State of the learning-rate / weight-decay stage of :func:`spam` and :func:`stable_spam`.

  Attributes:
    count: int32 scalar, number of updates so far; the schedule is called with it (0-based).
  """

  count: jax.Array


def _scale_by_learning_rate_with_decay(learning_rate: optax.ScalarOrSchedule, weight_decay: Any, mask: Any,
                                       style: str) -> optax.GradientTransformationExtraArgs:
  r"""Learning rate and decoupled weight decay in one stage (one state layout whatever the hyper-parameters).

  ``style="adamw"``: :math:`\Delta\theta = -\eta_t (u + \lambda\theta)` (``add_decayed_weights`` followed by
  ``scale_by_learning_rate``). ``style="spam"``: :math:`\Delta\theta = -\eta_t(1 - \eta_t\lambda) u -
  \eta_t\lambda\theta` (the reference SPAM decays the already updated parameter). ``mask`` selects the decayed
  leaves. With a concrete ``weight_decay == 0`` this is ``-lr * u`` and ``params`` are not needed.
  """
  no_decay = _is_zero(weight_decay)

  def init_fn(params):
    del params
    return ScaleByLearningRateState(jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    new_state = ScaleByLearningRateState(optax.safe_increment(state.count))
    if no_decay:
      return jax.tree.map(lambda u: (-jnp.asarray(lr, _compute_dtype(u.dtype)) * u).astype(u.dtype), updates), \
          new_state
    if params is None:
      raise ValueError("weight_decay needs params: call optimizer.update(grads, state, params)")

    def leaf(u, p, decayed):
      dtype = _compute_dtype(u.dtype)
      lr_ = jnp.asarray(lr, dtype)
      wd = jnp.where(decayed, jnp.asarray(weight_decay, dtype), jnp.zeros([], dtype))
      u, p = u.astype(dtype), p.astype(dtype)
      out = -lr_ * (u + wd * p) if style == "adamw" else -lr_ * ((1 - lr_ * wd) * u + wd * p)
      return out

    masks = _mask_tree(mask, params)
    out = jax.tree.map(leaf, updates, params, masks)
    return jax.tree.map(lambda o, u: o.astype(u.dtype), out, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def spam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    threshold: float = 5000.0,
    reset_interval: int | None = 500,
    warmup_steps: int = 150,
    clip_delay: int = 20,
    *,
    mask: Any | None = None,
    mu_dtype: Any | None = None,
    axis_name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""SPAM with learning rate and the reference's decoupled weight decay.

  .. math:: \Delta\theta_t = -\eta_t (1 - \eta_t\lambda)\, u_t - \eta_t\lambda\,\theta_{t-1},

  with :math:`u_t` from :func:`scale_by_spam` (equations in the module docstring). The state is a tuple whose
  first element is the :class:`SpamState` (``state[0].count``).

  Args:
    learning_rate: :math:`\eta` (official ``lr``): a float or an optax schedule, called with the 0-based update
      count (so ``schedule(t - 1)`` is used at update :math:`t`).
    b1: :math:`\beta_1` (0.9).
    b2: :math:`\beta_2` (0.999).
    eps: :math:`\epsilon` (1e-6).
    weight_decay: :math:`\lambda` (0), decoupled; multiplies the parameter *after* the Adam step, as the reference.
    threshold: spike threshold :math:`\theta` (5000); 0 disables clipping.
    reset_interval: :math:`\Delta T` (500, official ``DeltaT``); ``None`` or 0 never resets.
    warmup_steps: :math:`N` (150), post-reset warm-up length.
    clip_delay: :math:`A` (20, official ``grad_accu_steps``).
    mask: optional tree of booleans (or a callable of the params returning one) selecting the leaves that get
      weight decay, as in ``optax.adamw``.
    mu_dtype: dtype of the first moment (default: the parameter dtype).
    axis_name: see :func:`scale_by_spam`.

  Returns:
    An optax ``GradientTransformationExtraArgs``. If any gradient entry is NaN/inf the step is skipped entirely
    (zero update, state unchanged, schedule and weight decay not applied).

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from jaxgen.optim import spam
    >>> tx = spam(1e-3, reset_interval=100, warmup_steps=10, clip_delay=5)
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0, 0.5])}, tx.init(params), params)
    >>> [round(float(x), 6) for x in updates["w"]]
    [-0.001, 0.001, -0.001]

  References:
    Huang, Zhu, Jin, Liu, Wang, Liu, "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training",
    ICLR 2025, arXiv 2501.06842.
  """
  _check_learning_rate(learning_rate)
  _check_nonnegative("weight_decay", weight_decay)
  _validate_spam(b1, b2, eps, threshold, reset_interval, warmup_steps, clip_delay)
  tail = _scale_by_learning_rate_with_decay(learning_rate, weight_decay, mask, style="spam")
  return _skipping_transform(*_spam_core(b1, b2, eps, threshold, reset_interval, warmup_steps, clip_delay, mu_dtype,
                                         axis_name), tail=(tail,))
