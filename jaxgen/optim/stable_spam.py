r"""Stable-SPAM: AdaClip + AdaGN + Adam with momentum reset (reference semantics of the official code).

Huang, Zhu, Jin, Liu, Wang, Liu, "Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam",
arXiv 2502.17055 (https://arxiv.org/abs/2502.17055); official code github.com/TianjinYellow/StableSPAM @ 6a66da1,
``galore_torch/stablespam.py::StableSPAM.step``.

Everything is per pytree leaf ("tensor"); statistics (max, norm) run over the whole leaf. At global update
:math:`t = 1, 2, \dots` with gradient :math:`g` and state :math:`(m, v, T, \mu, \nu)`:

Decay (only with ``total_steps`` :math:`= T_m`, else :math:`s_t = 1`; not clamped, periodic beyond :math:`T_m+1`):

.. math:: s_t = \eta_{min} + (1 - \eta_{min})\,\tfrac12\bigl(1 + \cos(\pi t / (T_m + 1))\bigr).

Counters (the reference's per-tensor ``step``, restarted at resets :math:`t \bmod \Delta T = 0`):
:math:`k_{pre} = t` for :math:`t \le \Delta T`, else :math:`((t-1) \bmod \Delta T) + 2`;
:math:`k_{adam} = 1` on reset steps, else :math:`k_{pre}`. Without resets :math:`k_{pre} = k_{adam} = t`.

1. AdaClip (:math:`\gamma_3`): :math:`g_{max} = \max_i |g_i|`, :math:`T \leftarrow \gamma_3 T + (1-\gamma_3) g_{max}`,
   :math:`\tau = T / (1 - \gamma_3^{k_{pre}})`; entries with :math:`|g_i| > \tau` become :math:`g_i\,\tau / g_{max}`.
2. AdaGN (:math:`\gamma_1, \gamma_2`): :math:`n = \|g\|_2`, :math:`a = \gamma_1 s_t`,
   :math:`\mu \leftarrow a\mu + (1-a) n`, :math:`\nu \leftarrow \gamma_2\nu + (1-\gamma_2) n^2`,
   :math:`\hat\mu = \mu / (1 - a^{k_{pre}})`, :math:`\hat\nu = \nu / (1 - \gamma_2^{k_{pre}})`,
   :math:`g \leftarrow g\,\hat\mu / (n(\sqrt{\hat\nu} + \epsilon))` (:math:`g` stays 0 if :math:`n = 0`).
3. Adam with :math:`b = \beta_1 s_t`: :math:`m' = b m + (1-b) g`, :math:`v' = \beta_2 v + (1-\beta_2) g^2`,

   .. math:: u = \frac{m' / (1 - b^{k_{adam}})}{\sqrt{v'} / \sqrt{1 - \beta_2^{k_{adam}}} + \epsilon}.

4. Momentum reset (reference quirk): on a reset step the update still uses :math:`m', v'` (including the
   current gradient) with :math:`k_{adam} = 1`, and the moments are zeroed afterwards. Here the zeroing is
   applied lazily, when the next update reads the moments (same updates; each step then writes every moment
   once, in place, with no copy of the donated buffers): right after a reset step ``state.mu`` / ``state.nu``
   still hold :math:`m', v'`; :func:`stable_spam_moments` gives the reference's (zeroed) values. :math:`T, \mu, \nu` are
   never reset. There is no post-reset learning-rate warm-up (unlike SPAM).

:func:`scale_by_stable_spam` returns :math:`u`. :func:`stable_spam` applies the learning rate and decoupled weight
decay exactly as ``optax.add_decayed_weights(λ)`` followed by ``optax.scale_by_learning_rate(η)`` would (one stage
with an int32 ``count`` for the schedule): :math:`\Delta\theta = -\eta_t u - \eta_t\lambda\theta`, which equals the
reference's "multiply by :math:`1 - \eta_t\lambda`, then subtract :math:`\eta_t u`".

Pitfalls of the reference semantics (reproduced, ``reference_quirks=True``):

* :math:`T, \mu, \nu` keep accumulating across resets, but their bias corrections use the restarted counter, so
  right after each reset the clip threshold is inflated by :math:`1/(1-\gamma_3^k)` (×1000 at :math:`k = 1`,
  ≈×2.5 at :math:`k = 500` for :math:`\gamma_3 = 0.999`): AdaClip is effectively off for a long time after every
  reset.
* The reset step itself is a damped (~0.3 η) step with the pre-reset moments.

``reference_quirks=False`` is an opt-in "clean" variant (not what produced the published numbers): on reset steps
the moments are zeroed *before* use, the Adam bias-correction counter restarts (:math:`k_{adam} = 1` on the reset
step, 2 on the next, …) and AdaClip/AdaGN use the never-reset :math:`t`.

Official argument names → ours: ``lr`` → ``learning_rate`` (float or optax schedule, called with the 0-based update
count), ``betas`` → ``b1``, ``b2``; ``eps``; ``weight_decay``; ``gamma1``/``gamma2``/``gamma3`` (same);
``total_T`` → ``total_steps``; ``eta_min``; ``update_proj_gap`` → ``reset_interval`` (``None`` or 0 = never).
State: ``exp_avg`` → ``mu``, ``exp_avg_sq`` → ``nu``, ``m_max_t`` → ``clip_ema``, ``m_norm_t`` → ``norm_m``,
``v_norm_t`` → ``norm_v``; the per-tensor ``step`` is a closed-form function of ``count``.

Non-finite gradients: if any entry of any gradient leaf is NaN or ±inf, the whole step is skipped — zero updates,
the returned state equals the input state (``count`` does not advance, no statistic is touched). :func:`stable_spam`
also skips the schedule step and the weight decay, so the parameters are unchanged.

Precision: :math:`m, v` are stored in the parameter dtype (``mu_dtype`` overrides :math:`m`); the scalar statistics
:math:`T, \mu, \nu` are stored in at least float32 (bf16 cannot represent :math:`0.99999\nu \ne \nu`); all
arithmetic, including max and norm, runs in at least float32; updates come back in the gradient dtype.

Parallelism: under ``jit`` with ``NamedSharding`` the whole-leaf reductions are automatic whatever the sharding.
With leaves *split* across devices inside ``shard_map`` (FSDP style), pass ``axis_name``: maxima are ``pmax``-ed
and squared norms ``psum``-ed over it (so is the finiteness check).

Published settings (paper Tables 6–7; the training scripts set ``total_T`` = number of training steps, 20,000,
with ``eta_min = 0.5``, weight decay 0, no global clipping, LR warm-up 2000 steps then cosine to 10%): 4-bit runs
γ1 0.7, γ2 0.9, γ3 0.999, ΔT 1000 (500 in the shipped INT4/FP4 350M scripts), η 1e-3 / 4e-4 / 2e-4 for
130M / 350M / 1B; BF16 runs γ1 0.85, γ2 0.99999, γ3 0.999, ΔT 1000, η 1e-3 / 8e-4 / 4e-4 / 2e-4 for
60M / 130M / 350M / 1B. ``total_steps`` defaults to ``None`` here (no β1/γ1 decay), like the reference class.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxgen.optim.spam import (
    _agree,
    _max_abs,
    _sum_sq_and_abs,
    _bias_correction,
    _check_count,
    _check_in_unit_interval,
    _check_learning_rate,
    _check_nonnegative,
    _compute_dtype,
    _concrete,
    _log,
    _one_minus,
    _reset_schedule,
    _scale_by_learning_rate_with_decay,
    _skipping_transform,
)

__all__ = ["StableSpamState", "scale_by_stable_spam", "stable_spam", "stable_spam_diagnostics", "stable_spam_moments"]

PyTree = Any


class StableSpamState(NamedTuple):
  """State of :func:`scale_by_stable_spam`.

  Attributes:
    count: int32 scalar, number of (finite) updates so far (the global :math:`t` of the last update).
    mu: Adam first moment :math:`m` (reference ``exp_avg``), same tree as the params.
    nu: Adam second moment :math:`v` (reference ``exp_avg_sq``), same tree as the params.
    clip_ema: per leaf, scalar EMA :math:`T` of :math:`\\max|g|` (reference ``m_max_t``), float32 or wider.
    norm_m: per leaf, scalar EMA :math:`\\mu` of :math:`\\|g\\|` (reference ``m_norm_t``).
    norm_v: per leaf, scalar EMA :math:`\\nu` of :math:`\\|g\\|^2` (reference ``v_norm_t``).
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  clip_ema: optax.Updates
  norm_m: optax.Updates
  norm_v: optax.Updates


class _Step(NamedTuple):
  """Per-step scalars shared by all leaves."""

  t: jax.Array            # int32 global update index (1-based)
  k_stat: jax.Array       # counter for the AdaClip / AdaGN bias corrections
  k_adam: jax.Array       # counter for the Adam bias corrections
  is_reset: jax.Array     # bool: this is a reset step
  decay: bool            # beta1 / gamma1 follow the cosine decay s_t
  zero_prev: jax.Array    # bool: read the stored moments as zero (reset before use, or a lazily applied reset)


def _validate(b1, b2, eps, gamma1, gamma2, gamma3, reset_interval, total_steps, eta_min):
  _check_in_unit_interval("b1", b1)
  _check_in_unit_interval("b2", b2)
  _check_nonnegative("eps", eps)
  _check_in_unit_interval("gamma1", gamma1)
  _check_in_unit_interval("gamma2", gamma2)
  _check_in_unit_interval("gamma3", gamma3)
  _check_count("reset_interval", reset_interval, allow_none=True)
  _check_count("total_steps", total_steps, allow_none=True, minimum=1)
  e = _concrete(eta_min)
  if e is not None and not 0.0 <= e <= 1.0:
    raise ValueError(f"eta_min must be in [0, 1], got {eta_min}")


def _step_scalars(count, reset_interval, total_steps, eta_min, reference_quirks) -> _Step:
  t = optax.safe_increment(count)
  if reset_interval is None:
    is_reset = zero_prev = jnp.asarray(False)
    k_stat = k_adam = t
  else:
    enabled, interval = _reset_schedule(t, reset_interval)
    is_reset = enabled & (jnp.mod(t, interval) == 0)
    if reference_quirks:
      k_stat = jnp.where(enabled & (t > interval), jnp.mod(t - 1, interval) + 2, t)
      k_adam = jnp.where(is_reset, 1, k_stat)
      zero_prev = _was_reset(count, reset_interval)       # the previous step was a reset: zero lazily now
    else:
      k_stat = t
      k_adam = jnp.where(enabled & (t >= interval), jnp.mod(t, interval) + 1, t)
      zero_prev = is_reset
  return _Step(t, k_stat, k_adam, is_reset, total_steps is not None, zero_prev)


def _was_reset(count: jax.Array, reset_interval: Any) -> jax.Array:
  """Whether update number ``count`` (1-based; 0 = none yet) was a reset step."""
  if reset_interval is None:
    return jnp.asarray(False)
  enabled, interval = _reset_schedule(count, reset_interval)
  return enabled & (count > 0) & (jnp.mod(count, interval) == 0)


def stable_spam_moments(state: StableSpamState, reset_interval: int | None = 1000,
                        reference_quirks: bool = True) -> tuple[PyTree, PyTree]:
  r"""The Adam moments :math:`(m, v)` the reference would hold after the updates summarised by ``state``.

  With ``reference_quirks=True`` the reference zeroes :math:`m, v` *after* the update of a reset step; here the
  zeroing is applied when the next update reads them (identical updates, and the step writes each moment once,
  in place). So right after a reset step ``state.mu`` / ``state.nu`` still hold the moments that step used; this
  returns zeros for them, i.e. exactly the reference's ``exp_avg`` / ``exp_avg_sq``. Otherwise it returns
  ``(state.mu, state.nu)``. Pass the optimizer's ``reset_interval``.
  """
  if not reference_quirks:
    return state.mu, state.nu
  zero = _was_reset(jnp.asarray(state.count), reset_interval)
  moments = [jax.tree.map(lambda x: jnp.where(zero, jnp.zeros_like(x), x), tree) for tree in (state.mu, state.nu)]
  return moments[0], moments[1]


def _decay_factor(t: jax.Array, hp: dict, dtype: Any) -> jax.Array:
  """s_t = eta_min + (1 - eta_min) (1 + cos(pi t / (T_m + 1))) / 2."""
  eta = jnp.asarray(hp["eta_min"], dtype)
  horizon = jnp.asarray(hp["total_steps"], dtype) + 1
  return eta + (1 - eta) * 0.5 * (1 + jnp.cos(jnp.pi * t.astype(dtype) / horizon))


class _Coefficients(NamedTuple):
  """Scalars of one step in one compute dtype (shared by all leaves of that dtype)."""

  gamma3: jax.Array
  one_minus_gamma3: jax.Array
  bc_clip: jax.Array      # 1 - gamma3^k_stat
  a: jax.Array            # gamma1 s_t
  one_minus_a: jax.Array
  bc_norm_m: jax.Array    # 1 - a^k_stat
  gamma2: jax.Array
  one_minus_gamma2: jax.Array
  bc_norm_v: jax.Array    # 1 - gamma2^k_stat
  b: jax.Array            # b1 s_t
  one_minus_b: jax.Array
  bc1: jax.Array          # 1 - b^k_adam
  b2: jax.Array
  one_minus_b2: jax.Array
  sqrt_bc2: jax.Array     # sqrt(1 - b2^k_adam)
  eps: jax.Array


def _coefficients(step: _Step, hp: dict, dtype: Any) -> _Coefficients:
  s = _decay_factor(step.t, hp, dtype) if step.decay else None

  def decayed(name):
    """(x, 1 - x, log x) for x = hp[name] * s_t (s_t = 1 without decay)."""
    x, one_minus_x, log_x = jnp.asarray(hp[name], dtype), _one_minus(hp[name], dtype), _log(hp[name], dtype)
    if s is not None:
      x = x * s
      one_minus_x = 1 - x
      log_x = log_x + jnp.log(s)
    return x, one_minus_x, log_x

  def plain(name, k):
    x = jnp.asarray(hp[name], dtype)
    return x, _one_minus(hp[name], dtype), _bias_correction(x, _log(hp[name], dtype), k, dtype)

  gamma3, one_minus_gamma3, bc_clip = plain("gamma3", step.k_stat)
  a, one_minus_a, log_a = decayed("gamma1")
  gamma2, one_minus_gamma2, bc_norm_v = plain("gamma2", step.k_stat)
  b, one_minus_b, log_b = decayed("b1")
  b2, one_minus_b2, bc2 = plain("b2", step.k_adam)
  return _Coefficients(
      gamma3=gamma3, one_minus_gamma3=one_minus_gamma3, bc_clip=bc_clip,
      a=a, one_minus_a=one_minus_a, bc_norm_m=_bias_correction(a, log_a, step.k_stat, dtype),
      gamma2=gamma2, one_minus_gamma2=one_minus_gamma2, bc_norm_v=bc_norm_v,
      b=b, one_minus_b=one_minus_b, bc1=_bias_correction(b, log_b, step.k_adam, dtype),
      b2=b2, one_minus_b2=one_minus_b2, sqrt_bc2=jnp.sqrt(bc2), eps=jnp.asarray(hp["eps"], dtype))


def _coefficient_cache(step: _Step, hp: dict):
  cache = {}

  def get(dtype):
    dtype = jnp.dtype(dtype)
    if dtype not in cache:
      cache[dtype] = _coefficients(step, hp, dtype)
    return cache[dtype]

  return get


def _stable_spam_step(grads: PyTree, state: StableSpamState, step: _Step, hp: dict, axis_name: str | None,
                      reference_quirks: bool, diagnostics: bool = False):
  """The update on all leaves; returns (updates, new_state, all_finite[, diagnostics]).

  The per-leaf scalar statistics (max, norm, the EMAs T, mu, nu and everything derived from them) are stacked
  into vectors over the leaves, so the scalar algebra is one small vector computation instead of a chain of
  scalar kernels per leaf (fewer kernels; one collective per statistic under ``axis_name``, not one per leaf).
  """
  treedef = jax.tree.structure(grads)
  gs = treedef.flatten_up_to(grads)
  ms, vs = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
  ts, nms, nvs = (treedef.flatten_up_to(x) for x in (state.clip_ema, state.norm_m, state.norm_v))
  if not gs:
    out = (grads, state._replace(count=step.t), jnp.asarray(True))
    empty = jnp.zeros([0], jnp.float32)
    return out + ({"num_clipped": empty, "tau": grads, "normalized_sq": empty},) if diagnostics else out
  coefficients = _coefficient_cache(step, hp)
  raw = gs
  gs = [g.astype(_compute_dtype(g.dtype)) for g in gs]
  # Per leaf: two read-only passes over the gradient (max |g|, then the squared norm of the clipped gradient),
  # then one fused kernel per stored moment, and the update reads the stored moments (no copy of donated
  # buffers). The scalar algebra stays per leaf (scalar kernels the compiler folds into the elementwise ones;
  # stacking the statistics into vectors measured slower on CPU).
  # 1. AdaClip.
  g_max = [_max_abs(g) for g in gs]
  if axis_name is not None:
    g_max = list(jax.lax.pmax(g_max, axis_name))
  finite = jnp.all(jnp.isfinite(jnp.stack(g_max))) if len(gs) > 1 else jnp.isfinite(g_max[0])
  ok = _agree(finite, axis_name)                           # max propagates NaN and inf: no extra pass over g
  clip_ema, tau, ratio, big, sums = [], [], [], [], []
  for g, gm, t_prev in zip(gs, g_max, ts):
    c = coefficients(g.dtype)
    clip_ema.append(c.gamma3 * t_prev.astype(g.dtype) + c.one_minus_gamma3 * gm)
    tau.append(clip_ema[-1] / c.bc_clip)
    ratio.append(tau[-1] / jnp.where(gm > 0, gm, jnp.ones_like(gm)))
    big.append(jnp.abs(g) > tau[-1])
    # 2. AdaGN (a = gamma1 s_t) on the clipped gradient.
    sums.append(_sum_sq_and_abs(jnp.where(big[-1], g * ratio[-1], g)))
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  us, new_ms, new_vs, normalized, norm_ms, norm_vs = [], [], [], [], [], []
  for g, k, r, (sq, l1), nm, nv, m, v in zip(gs, big, ratio, sums, nms, nvs, ms, vs):
    c = coefficients(g.dtype)
    positive = (sq > 0) & (l1 > 0)                         # (the same thing; l1 keeps the reduction fused)
    n = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)    # no inf derivative at 0
    norm_ms.append(c.a * nm.astype(g.dtype) + c.one_minus_a * n)
    norm_vs.append(c.gamma2 * nv.astype(g.dtype) + c.one_minus_gamma2 * sq)
    factor = (norm_ms[-1] / c.bc_norm_m) / (jnp.sqrt(norm_vs[-1] / c.bc_norm_v) + c.eps)
    scale = jnp.where(positive, factor / jnp.where(positive, n, jnp.ones_like(n)), jnp.zeros_like(factor))
    # 3. Adam with b = b1 s_t on g_n = g * (ratio if clipped else 1) * scale; 4. reset.
    rs = r * scale
    g_n = g * jnp.where(k, rs, scale)
    g_n_sq = (g * g) * jnp.where(k, rs * rs, scale * scale)
    normalized.append(g_n)
    m_prev = jnp.where(step.zero_prev, jnp.zeros_like(m), m).astype(g.dtype)
    v_prev = jnp.where(step.zero_prev, jnp.zeros_like(v), v).astype(g.dtype)
    m_new = c.b * m_prev + c.one_minus_b * g_n
    v_new = c.b2 * v_prev + c.one_minus_b2 * g_n_sq
    m_out = jnp.where(ok, m_new.astype(m.dtype), m)
    v_out = jnp.where(ok, v_new.astype(v.dtype), v)
    if jnp.dtype(m.dtype) == g.dtype and jnp.dtype(v.dtype) == g.dtype:
      m_new, v_new = m_out, v_out                          # equal whenever ok; read the stored buffers
    us.append((m_new / c.bc1) / (jnp.sqrt(v_new) / c.sqrt_bc2 + c.eps))
    new_ms.append(m_out)
    new_vs.append(v_out)
  unflatten = treedef.unflatten
  keep = lambda new, old: unflatten([jnp.where(ok, a.astype(b.dtype), b) for a, b in zip(new, old)])  # noqa: E731
  updates = unflatten([u.astype(g.dtype) for u, g in zip(us, raw)])
  new_state = StableSpamState(jnp.where(ok, step.t, state.count), unflatten(new_ms), unflatten(new_vs),
                              keep(clip_ema, ts), keep(norm_ms, nms), keep(norm_vs, nvs))
  if not diagnostics:
    return updates, new_state, ok
  stat_dtype = jnp.result_type(*[g.dtype for g in gs])
  num_clipped = jnp.stack([jnp.sum(k.astype(jnp.int32)) for k in big])
  if axis_name is not None:
    num_clipped = jax.lax.psum(num_clipped, axis_name)
  return updates, new_state, ok, {
      "num_clipped": num_clipped, "tau": unflatten([x.astype(t.dtype) for x, t in zip(tau, ts)]),
      "normalized_sq": jnp.stack([jnp.sum(g * g).astype(stat_dtype) for g in normalized])}


def _stable_spam_core(b1, b2, eps, gamma1, gamma2, gamma3, reset_interval, total_steps, eta_min, mu_dtype,
                      axis_name, reference_quirks):
  """``(init_fn, flagged_update)`` of Stable-SPAM (no validation; see :func:`scale_by_stable_spam`)."""
  mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)
  hp = dict(b1=b1, b2=b2, eps=eps, gamma1=gamma1, gamma2=gamma2, gamma3=gamma3, total_steps=total_steps,
            eta_min=eta_min)

  def init_fn(params):
    def scalar(p):
      return jnp.zeros([], _compute_dtype(jnp.asarray(p).dtype))
    return StableSpamState(
        count=jnp.zeros([], jnp.int32),
        mu=optax.tree.zeros_like(params, dtype=mu_dtype),
        nu=optax.tree.zeros_like(params),
        clip_ema=jax.tree.map(scalar, params),
        norm_m=jax.tree.map(scalar, params),
        norm_v=jax.tree.map(scalar, params),
    )

  def flagged_update(updates, state):
    step = _step_scalars(state.count, reset_interval, total_steps, eta_min, reference_quirks)
    return _stable_spam_step(updates, state, step, hp, axis_name, reference_quirks)

  return init_fn, flagged_update


def scale_by_stable_spam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    gamma1: float = 0.7,
    gamma2: float = 0.9,
    gamma3: float = 0.999,
    reset_interval: int | None = 1000,
    total_steps: int | None = None,
    eta_min: float = 0.5,
    *,
    mu_dtype: Any | None = None,
    axis_name: str | None = None,
    reference_quirks: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescale gradients with Stable-SPAM (AdaClip → AdaGN → Adam with momentum reset).

  Returns :math:`u` of the module docstring (no learning rate, no weight decay). See :func:`stable_spam`.

  Args:
    b1: :math:`\beta_1` (paper default 0.9); decayed by :math:`s_t` when ``total_steps`` is given.
    b2: :math:`\beta_2` (0.999).
    eps: :math:`\epsilon` (1e-8), used by AdaGN and Adam (added after bias-correcting :math:`\sqrt v`).
    gamma1: :math:`\gamma_1` (0.7), AdaGN EMA of the norm; decayed by :math:`s_t` like ``b1``.
    gamma2: :math:`\gamma_2` (0.9), AdaGN EMA of the squared norm.
    gamma3: :math:`\gamma_3` (0.999), AdaClip EMA of the max; 0 disables AdaClip.
    reset_interval: :math:`\Delta T` (1000, official ``update_proj_gap``); ``None`` or 0 never resets.
    total_steps: :math:`T_m` (official ``total_T``, default ``None`` = no decay): horizon of the cosine decay of
      :math:`\beta_1` and :math:`\gamma_1`. The published runs set it to the number of training steps.
    eta_min: floor of that decay (0.5).
    mu_dtype: dtype of :math:`m` (default: the parameter dtype).
    axis_name: mesh axis over which leaves are *split* inside ``shard_map`` (maxima and squared norms are reduced
      across it). Leave ``None`` under plain ``jit`` (any sharding) and with replicated params.
    reference_quirks: ``True`` (default) reproduces the official code; ``False`` is the clean reset variant
      described in the module docstring.

  Returns:
    An optax ``GradientTransformationExtraArgs`` with state :class:`StableSpamState`.
  """
  _validate(b1, b2, eps, gamma1, gamma2, gamma3, reset_interval, total_steps, eta_min)
  return _skipping_transform(*_stable_spam_core(b1, b2, eps, gamma1, gamma2, gamma3, reset_interval, total_steps,
                                                eta_min, mu_dtype, axis_name, reference_quirks))


def stable_spam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    gamma1: float = 0.7,
    gamma2: float = 0.9,
    gamma3: float = 0.999,
    reset_interval: int | None = 1000,
    total_steps: int | None = None,
    eta_min: float = 0.5,
    weight_decay: float = 0.0,
    *,
    mask: Any | None = None,
    mu_dtype: Any | None = None,
    axis_name: str | None = None,
    reference_quirks: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Stable-SPAM with learning rate and decoupled weight decay.

  .. math:: \Delta\theta_t = -\eta_t\, u_t - \eta_t \lambda\, \theta_{t-1}

  (``scale_by_stable_spam`` → ``add_decayed_weights(λ)`` → ``scale_by_learning_rate(η)``, the last two fused in
  one stage whose state holds the schedule's ``count``; the reference multiplies the
  parameter by :math:`1 - \eta_t\lambda` and then subtracts :math:`\eta_t u_t`, which is the same). The state is a
  tuple whose first element is the :class:`StableSpamState` (``state[0].count``).

  Args:
    learning_rate: :math:`\eta` (official ``lr``, class default 1e-3): a float or an optax schedule, called with
      the 0-based update count.
    b1, b2, eps, gamma1, gamma2, gamma3, reset_interval, total_steps, eta_min: see :func:`scale_by_stable_spam`.
    weight_decay: :math:`\lambda` (0), decoupled, multiplied by the learning rate.
    mask: optional tree of booleans (or a callable of the params) selecting the leaves that get weight decay.
    mu_dtype, axis_name, reference_quirks: see :func:`scale_by_stable_spam`.

  Returns:
    An optax ``GradientTransformationExtraArgs``. If any gradient entry is NaN/inf the step is skipped entirely
    (zero update, state unchanged, schedule and weight decay not applied).

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxgen.optim import stable_spam
    >>> tx = stable_spam(1e-3)
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.array([3.0, -4.0, 0.5])}, tx.init(params), params)
    >>> [round(float(x), 6) for x in updates["w"]]   # the first step is a sign step of size lr
    [-0.001, 0.001, -0.001]

  References:
    Huang, Zhu, Jin, Liu, Wang, Liu, "Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam",
    arXiv 2502.17055, 2025.
  """
  _check_learning_rate(learning_rate)
  _check_nonnegative("weight_decay", weight_decay)
  _validate(b1, b2, eps, gamma1, gamma2, gamma3, reset_interval, total_steps, eta_min)
  core = _stable_spam_core(b1, b2, eps, gamma1, gamma2, gamma3, reset_interval, total_steps, eta_min, mu_dtype,
                           axis_name, reference_quirks)
  tail = _scale_by_learning_rate_with_decay(learning_rate, weight_decay, mask, style="adamw")
  return _skipping_transform(*core, tail=(tail,))


def stable_spam_diagnostics(
    grads: PyTree,
    state: StableSpamState,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    gamma1: float = 0.7,
    gamma2: float = 0.9,
    gamma3: float = 0.999,
    reset_interval: int | None = 1000,
    total_steps: int | None = None,
    eta_min: float = 0.5,
    *,
    axis_name: str | None = None,
    reference_quirks: bool = True,
) -> dict[str, Any]:
  """What the next :func:`scale_by_stable_spam` step would do to ``grads`` (pure; for logging and plots).

  Pass the same hyper-parameters as the optimizer and its :class:`StableSpamState` *before* the update (for
  :func:`stable_spam`, ``opt_state[0]``).

  Returns:
    ``clip_fraction`` (fraction of all gradient entries AdaClip rescales), ``clip_threshold`` (per-leaf tree of
    :math:`\\tau`), ``raw_norm`` (global norm of ``grads``) and ``normalized_norm`` (global norm after AdaClip and
    AdaGN, the input of Adam).
  """
  _validate(b1, b2, eps, gamma1, gamma2, gamma3, reset_interval, total_steps, eta_min)
  hp = dict(b1=b1, b2=b2, eps=eps, gamma1=gamma1, gamma2=gamma2, gamma3=gamma3, total_steps=total_steps,
            eta_min=eta_min)
  step = _step_scalars(state.count, reset_interval, total_steps, eta_min, reference_quirks)
  _, _, _, diag = _stable_spam_step(grads, state, step, hp, axis_name, reference_quirks, diagnostics=True)
  grad_leaves = jax.tree.leaves(grads)
  size = sum(int(g.size) for g in grad_leaves)
  raw_sq = sum(jnp.sum(jnp.square(g.astype(_compute_dtype(g.dtype)))) for g in grad_leaves)
  norm_sq = jnp.sum(diag["normalized_sq"])
  if axis_name is not None:
    raw_sq = jax.lax.psum(raw_sq, axis_name)
    norm_sq = jax.lax.psum(norm_sq, axis_name)
    size = jax.lax.psum(size, axis_name)
  return {
      "clip_fraction": jnp.sum(diag["num_clipped"]) / jnp.maximum(size, 1),
      "clip_threshold": diag["tau"],
      "raw_norm": jnp.sqrt(raw_sq),
      "normalized_norm": jnp.sqrt(norm_sq),
  }
