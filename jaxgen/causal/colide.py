r"""CoLiDE: concomitant linear DAG estimation (equal- and non-equal-variance), as pure jittable JAX.

Paper: S. S. Saboksayr, G. Mateos, M. Tepper, "CoLiDE: Concomitant Linear DAG Estimation", ICLR 2024,
arXiv 2310.02895 (https://arxiv.org/abs/2310.02895). Reference code: github.com/SAMiatto/colide (NumPy), built on
DAGMA (Bello, Aragam, Ravikumar, NeurIPS 2022, arXiv 2209.08037).

Conventions: ``X`` is ``[n, d]`` (rows = samples); ``W[i, j] != 0`` is the edge ``i -> j``; the SEM is
``X = X W + Z``. ``C = X_c^T X_c / n`` with column-centred ``X_c`` (divided by ``n``), and
``R(W) = (I - W)^T C (I - W)`` (``tr R(W) = ||X_c - X_c W||_F^2 / n``).

Scores (smooth parts; the L1 term ``lambda ||W||_1`` is added by the objective):

* equal variance, CoLiDE-EV, paper Eq. (6) (one noise scale ``sigma > 0``):
  :math:`S_{ev}(W, \sigma) = \frac{\mathrm{tr} R(W)}{2\sigma} + \frac{d\sigma}{2}`,
  :math:`\nabla_W S_{ev} = -C (I - W) / \sigma`;
* non-equal variance, CoLiDE-NV, paper Eq. (8) (scales ``sigma_j``, ``Sigma = diag(sigma)``):
  :math:`S_{nv}(W, \Sigma) = \frac12 \mathrm{tr}(\Sigma^{-1} R(W)) + \frac12 \mathrm{tr}\,\Sigma`,
  :math:`\nabla_W S_{nv} = -C (I - W) \Sigma^{-1}`;
* least squares (the DAGMA baseline): :math:`S_{ls}(W) = \frac12 \mathrm{tr} R(W)`.

Closed-form scale updates (exact minimisers over ``sigma`` for fixed ``W``, paper Eqs. (7) and (9)):
:math:`\hat\sigma = \sqrt{\mathrm{tr} R(W) / d}` (EV) and :math:`\hat\sigma_j = \sqrt{R_{jj}(W)}` (NV); there
``S_ev = d sigma_hat`` and ``S_nv = sum_j sigma_hat_j``.

Acyclicity (DAGMA's log-det, paper Eq. (3)): :math:`h(W, s) = -\log\det(sI - W\circ W) + d\log s`, defined on
``{W : rho(W o W) < s}`` where ``sI - W o W`` is an M-matrix; ``h >= 0`` and ``h = 0`` exactly on DAGs;
:math:`\nabla h = 2 W \circ (sI - W\circ W)^{-T}`.

Path-following (paper Algorithm 1): for ``k = 0..T-1`` approximately minimise
:math:`F_k(W, \sigma) = \mu_k (S(W, \sigma) + \lambda \|W\|_1) + h(W, s_k)` from the previous solution, with
``mu_0 = mu_init`` and ``mu_{k+1} = mu_factor mu_k``. Inner solver (block coordinate descent): one Adam step on
``W`` with ``g = mu_k (grad_W S + lambda sign(W)) + grad h`` (``sign(0) = 0``), then ``sigma`` <- closed form; every
``check_every`` steps (and after the last) stop if ``|F_prev - F| / |F_prev| <= rel_tol`` (``F_prev`` starts at
1e16). Adam's moments and step counter restart for every ``k``.

Domain guard (as in the reference code): before each step the iterate is admissible iff every entry of
``(sI - W o W)^{-1} + 1e-16`` is ``>= -1e-6``. If it is not, on the first step of a subproblem or when
``s_k <= 0.9`` the subproblem is abandoned and restarted from its start point with ``lr <- lr / 2`` and
``s_k <- s_k + 0.1``; otherwise the last update is undone, ``lr`` halved (for the rest of the subproblem), the
update redone with the smaller ``lr`` and ``sigma`` recomputed, until admissible (below ``lr = 1e-16`` the
subproblem returns the current iterate).

Everything from the covariance to the last subproblem is one jittable, ``vmap``-able function
(:func:`colide_solve`): each subproblem is a ``lax.while_loop`` over chunks of ``check_every`` Adam steps (a
``lax.scan``), with the convergence test between chunks; the outer path is a ``lax.scan`` over ``k`` and the
rare restart is a ``lax.while_loop``. The numeric hyper-parameters are traced arrays, so a new ``lambda``, ``lr``,
``s`` schedule of the same length or iteration budget does not recompile. :func:`colide_fit` validates the input,
runs it and thresholds the result.

Implementation notes (speed, same arithmetic up to rounding): ``C (I - W)`` is computed once per step and shared by
the ``sigma`` update and the next gradient; ``diag R(W)`` is a column sum of ``(I - W) o C (I - W)``; the inverse of
the M-matrix ``sI - W o W`` is an unrolled Gauss-Jordan elimination without pivoting (see
``_m_matrix_inverse``). Agreement with the reference NumPy code: ~1e-15 on 800-step runs, <= 2e-7 on the full
90 000-step schedule (tests).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.causal._sem import threshold_to_dag

VARIANTS = ("ev", "nv")
_ENGINE_VARIANTS = ("ev", "nv", "ls")

# Subproblem status codes.
RUNNING, CONVERGED, MAX_ITERS, LR_UNDERFLOW, OUT_OF_DOMAIN = 0, 1, 2, 3, 4
STATUS_NAMES = ("running", "converged", "max_iters", "lr_underflow", "out_of_domain")

_DOMAIN_TOL = 1e-6        # reference: np.any(M < -1e-6)
_INV_SHIFT = 1e-16        # reference: M = inv(sI - W*W) + 1e-16 (enters the gradient too)
_LR_MIN = 1e-16           # reference: give up shrinking when lr <= 1e-16
_OBJ_PREV_INIT = 1e16     # reference: obj_prev = 1e16
_S_FAIL_LIMIT = 0.9       # reference: restart (not backtrack) when s <= 0.9
_UNROLL = 1               # Adam steps per scan iteration (compile time vs loop overhead)


class CoLiDEConfig(NamedTuple):
  """Hyper-parameters of CoLiDE (and of the DAGMA baseline, which shares the engine).

  Defaults are the reference demo's (spec §1.4).

  Attributes:
    lambda1: ``lambda``, L1 weight (0.05).
    s_schedule: ``s_k`` of the log-det constraint, one per outer step; ``T = len(s_schedule)`` (1, .9, .8, .7).
    mu_init: ``mu_0`` (1.0).
    mu_factor: ``mu_{k+1} / mu_k`` (0.1).
    warm_iters: Adam steps of the subproblems ``k < T - 1`` (20 000).
    final_iters: Adam steps of the last subproblem (70 000).
    lr: Adam learning rate (3e-4).
    beta1: Adam ``beta_1`` (0.99, not the usual 0.9).
    beta2: Adam ``beta_2`` (0.999).
    adam_eps: Adam ``epsilon``, added to ``sqrt(v_hat)`` (1e-8).
    check_every: convergence-test period in steps (1000); also the compiled chunk length.
    rel_tol: relative objective change that stops a subproblem (1e-6).
    sigma_floor: lower bound on the closed-form ``sigma`` (0: no floor, as in the reference code).
    w_threshold: final threshold on ``|W|`` (0.3).
    max_restarts: cap on the out-of-domain restarts of one subproblem (the reference loops without a cap).
  """

  lambda1: float = 0.05
  s_schedule: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7)
  mu_init: float = 1.0
  mu_factor: float = 0.1
  warm_iters: int = 20_000
  final_iters: int = 70_000
  lr: float = 3e-4
  beta1: float = 0.99
  beta2: float = 0.999
  adam_eps: float = 1e-8
  check_every: int = 1000
  rel_tol: float = 1e-6
  sigma_floor: float = 0.0
  w_threshold: float = 0.3
  max_restarts: int = 50


class SubproblemInfo(NamedTuple):
  """Per-outer-step diagnostics (arrays with a leading ``[T]`` axis, plus any ``vmap`` axes).

  Attributes:
    s: ``s_k`` actually used (after restarts).
    lr: learning rate at the end of the subproblem (after restarts and backtracking).
    mu: ``mu_k``.
    iters: Adam steps taken in the accepted attempt.
    status: :data:`STATUS_NAMES` index of the accepted attempt.
    restarts: number of out-of-domain restarts.
    objective: ``F_k`` at the returned iterate.
  """

  s: jax.Array
  lr: jax.Array
  mu: jax.Array
  iters: jax.Array
  status: jax.Array
  restarts: jax.Array
  objective: jax.Array


class SolveResult(NamedTuple):
  """Raw output of :func:`colide_solve`: unthresholded ``W`` ``[d, d]``, ``sigma`` (scalar EV, ``[d]`` NV, 1 for
  least squares) and :class:`SubproblemInfo`."""

  W: jax.Array
  sigma: jax.Array
  info: SubproblemInfo


class FitResult(NamedTuple):
  """Output of :func:`colide_fit` / :func:`jaxgen.causal.dagma_linear_fit`.

  Attributes:
    W: raw (unthresholded) weighted adjacency ``[d, d]``.
    sigma: estimated noise scale(s): scalar (EV), ``[d]`` (NV) or ``nan`` (DAGMA, no scale).
    W_dag: ``threshold_to_dag(W, w_threshold)`` as float64 NumPy (an acyclic weighted graph).
    info: :class:`SubproblemInfo` of the path.
  """

  W: jax.Array
  sigma: jax.Array
  W_dag: np.ndarray
  info: SubproblemInfo


# ----------------------------------------------------------------------------------------------------------------
# Scores, scales and the acyclicity function (pure, differentiable).


def _check_square(name: str, A: Any) -> None:
  if jnp.ndim(A) != 2 or jnp.shape(A)[0] != jnp.shape(A)[1]:
    raise ValueError(f"{name} must be a square [d, d] matrix, got shape {jnp.shape(A)}")


def _check_positive_scalar(name: str, value: Any) -> None:
  """Finite and > 0 when concrete (traced values, e.g. inside the engine, are not checked)."""
  if isinstance(value, jax.core.Tracer):
    return
  arr = np.asarray(value)
  if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
    raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def _check_score_args(W: Any, C: Any, sigma: Any = None, sigma_shape: tuple[int, ...] | None = None) -> None:
  """``W`` and ``C`` square ``[d, d]`` of one shape; ``sigma`` of shape ``sigma_shape`` (``()`` EV, ``(d,)`` NV)."""
  _check_square("W", W)
  if jnp.shape(C) != jnp.shape(W):
    raise ValueError(f"C must be the [d, d] covariance with the shape of W {jnp.shape(W)}, got {jnp.shape(C)}")
  if sigma_shape is not None:
    if jnp.shape(sigma) != sigma_shape:
      raise ValueError(f"sigma must have shape {sigma_shape}, got {jnp.shape(sigma)}")
    _check_positive_scalar("sigma", sigma)


def covariance(X: jax.Array) -> jax.Array:
  """``C = X_c^T X_c / n`` with column-centred ``X_c`` (biased, divides by ``n``); ``[d, d]``."""
  X = jnp.asarray(X)
  if X.ndim != 2 or X.shape[0] < 1:
    raise ValueError(f"X must be a 2-D [n, d] data matrix with n >= 1, got shape {X.shape}")
  Xc = X - jnp.mean(X, axis=0, keepdims=True)
  return Xc.T @ Xc / X.shape[0]


def _residual_cov(W: jax.Array, C: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(C (I - W), R(W) = (I - W)^T C (I - W))``."""
  dif = jnp.eye(W.shape[0], dtype=W.dtype) - W
  rhs = C @ dif
  return rhs, dif.T @ rhs


def ev_score(W: jax.Array, sigma: jax.Array, C: jax.Array) -> jax.Array:
  r"""Equal-variance concomitant score :math:`\mathrm{tr}R(W)/(2\sigma) + d\sigma/2` (paper Eq. (6), no L1)."""
  _check_score_args(W, C, sigma, ())
  _, R = _residual_cov(W, C)
  return 0.5 * jnp.trace(R) / sigma + 0.5 * sigma * W.shape[0]


def nv_score(W: jax.Array, sigma: jax.Array, C: jax.Array) -> jax.Array:
  r"""Non-equal-variance score :math:`\frac12[\mathrm{tr}(\Sigma^{-1}R(W)) + \sum_j\sigma_j]` (paper Eq. (8))."""
  _check_score_args(W, C, sigma, (jnp.shape(W)[0],) if jnp.ndim(W) else None)
  _, R = _residual_cov(W, C)
  return 0.5 * (jnp.sum(jnp.diagonal(R) / sigma) + jnp.sum(sigma))


def ls_score(W: jax.Array, C: jax.Array) -> jax.Array:
  r"""Least-squares score of DAGMA: :math:`\frac12\mathrm{tr}R(W) = \|X_c - X_cW\|_F^2 / (2n)`."""
  _check_score_args(W, C)
  _, R = _residual_cov(W, C)
  return 0.5 * jnp.trace(R)


def ev_score_grad(W: jax.Array, sigma: jax.Array, C: jax.Array) -> jax.Array:
  """Closed-form ``d S_ev / d W = -C (I - W) / sigma``."""
  _check_score_args(W, C, sigma, ())
  rhs, _ = _residual_cov(W, C)
  return -rhs / sigma


def nv_score_grad(W: jax.Array, sigma: jax.Array, C: jax.Array) -> jax.Array:
  """Closed-form ``d S_nv / d W = -C (I - W) diag(1 / sigma)``."""
  _check_score_args(W, C, sigma, (jnp.shape(W)[0],) if jnp.ndim(W) else None)
  rhs, _ = _residual_cov(W, C)
  return -rhs / sigma[None, :]


def ls_score_grad(W: jax.Array, C: jax.Array) -> jax.Array:
  """Closed-form ``d S_ls / d W = -C (I - W)``."""
  _check_score_args(W, C)
  rhs, _ = _residual_cov(W, C)
  return -rhs


def ev_sigma(W: jax.Array, C: jax.Array, floor: float = 0.0) -> jax.Array:
  r"""Closed-form EV scale :math:`\hat\sigma = \sqrt{\mathrm{tr}R(W)/d}` (paper Eq. (7)), floored at ``floor``."""
  _check_score_args(W, C)
  _, R = _residual_cov(W, C)
  sigma = jnp.sqrt(jnp.trace(R) / W.shape[0])
  return jnp.maximum(sigma, floor) if floor > 0 else sigma


def nv_sigma(W: jax.Array, C: jax.Array, floor: float = 0.0) -> jax.Array:
  r"""Closed-form NV scales :math:`\hat\sigma_j = \sqrt{R_{jj}(W)}` (paper Eq. (9)), floored at ``floor``; ``[d]``."""
  _check_score_args(W, C)
  _, R = _residual_cov(W, C)
  sigma = jnp.sqrt(jnp.diagonal(R))
  return jnp.maximum(sigma, floor) if floor > 0 else sigma


def logdet_acyclicity(W: jax.Array, s: float | jax.Array = 1.0) -> jax.Array:
  r"""DAGMA's log-det acyclicity :math:`h(W, s) = -\log\det(sI - W\circ W) + d\log s` (CoLiDE Eq. (3)).

  Computed with ``slogdet`` (log of the absolute determinant, like the reference); meaningful only where
  :func:`admissible` holds, which the caller checks. Its gradient is ``2 W o (sI - W o W)^{-T}``.

  Raises:
    ValueError: ``W`` not square, or a concrete ``s`` that is not finite and > 0 (``log s`` is undefined).
  """
  _check_square("W", W)
  _check_positive_scalar("s", s)
  d = W.shape[0]
  M = s * jnp.eye(d, dtype=W.dtype) - W * W
  return -jnp.linalg.slogdet(M)[1] + d * jnp.log(jnp.asarray(s, W.dtype))


def logdet_acyclicity_grad(W: jax.Array, s: float | jax.Array = 1.0) -> jax.Array:
  """Closed-form ``grad h = 2 W o (sI - W o W)^{-T}``."""
  _check_square("W", W)
  _check_positive_scalar("s", s)
  M = s * jnp.eye(W.shape[0], dtype=W.dtype) - W * W
  return 2.0 * W * jnp.linalg.inv(M).T


def admissible(W: jax.Array, s: float | jax.Array = 1.0, tol: float = _DOMAIN_TOL) -> jax.Array:
  """Whether ``sI - W o W`` is (numerically) an M-matrix: every entry of its inverse is ``>= -tol``."""
  _check_square("W", W)
  _check_positive_scalar("s", s)
  M = jnp.linalg.inv(s * jnp.eye(W.shape[0], dtype=W.dtype) - W * W) + _INV_SHIFT
  return jnp.all(M >= -tol)


# ----------------------------------------------------------------------------------------------------------------
# The engine: one subproblem (jittable), the path (jittable, vmappable).


def _score(variant: str, W, sigma, C):
  if variant == "ev":
    return ev_score(W, sigma, C)
  if variant == "nv":
    return nv_score(W, sigma, C)
  return ls_score(W, C)


def _refresh(variant: str, W, sigma, C, floor: float):
  """``(C (I - W), sigma_hat(W))`` at a new iterate; ``diag R(W) = sum_i (I - W)_ij [C (I - W)]_ij``."""
  dif = jnp.eye(W.shape[0], dtype=W.dtype) - W
  rhs = C @ dif
  if variant == "ls":
    return rhs, sigma                                            # least squares: no scale block
  diag_r = jnp.sum(dif * rhs, axis=0)                            # diag((I - W)^T C (I - W))
  new = jnp.sqrt(jnp.sum(diag_r) / W.shape[0]) if variant == "ev" else jnp.sqrt(diag_r)
  return rhs, jnp.maximum(new, floor)                            # floor 0 is exact: sqrt(.) >= 0


def _engine_score_grad(variant: str, rhs, sigma, mu):
  """``mu * grad_W S`` from the cached ``rhs = C (I - W)``."""
  if variant == "ev":
    return (-mu * rhs) / sigma
  if variant == "nv":
    return -mu * (rhs * (1.0 / sigma)[None, :])
  return -mu * rhs


def _objective(variant: str, W, sigma, C, mu, s, lambda1: float):
  """``F = mu (S(W, sigma) + lambda ||W||_1) + h(W, s)``."""
  return mu * (_score(variant, W, sigma, C) + lambda1 * jnp.sum(jnp.abs(W))) + logdet_acyclicity(W, s)


def _m_matrix_inverse(A):
  """``A^{-1}`` by Gauss-Jordan elimination without pivoting (``d`` unrolled rank-one updates).

  Exact up to rounding for a nonsingular M-matrix (every pivot of an M-matrix is positive, so no pivoting is
  needed) and several times cheaper than a pivoted LU for the small ``d`` used here. For a Z-matrix that is not a
  nonsingular M-matrix some pivot is <= 0, which yields negative, infinite or NaN entries: every one of them fails
  the admissibility test ``all(M >= -tol)``, as the exact inverse would (a Z-matrix is a nonsingular M-matrix iff
  its inverse is entrywise non-negative).
  """
  d = A.shape[0]
  aug = jnp.concatenate([A, jnp.eye(d, dtype=A.dtype)], axis=1)  # [d, 2d]
  for k in range(d):
    row = aug[k] / aug[k, k]
    aug = (aug - aug[:, k:k + 1] * row[None, :]).at[k].set(row)
  return aug[:, d:]


def _shifted_inverse(W, s):
  """The reference code's ``M = (sI - W o W)^{-1} + 1e-16`` (the shift enters the gradient too)."""
  return _m_matrix_inverse(s * jnp.eye(W.shape[0], dtype=W.dtype) - W * W) + _INV_SHIFT


def _outside(M):
  return ~jnp.all(M >= -_DOMAIN_TOL)                             # NaN counts as outside


class _Hyper(NamedTuple):
  """The numeric hyper-parameters as arrays (traced, so changing them does not recompile)."""

  lambda1: jax.Array
  s_schedule: jax.Array    # [T]
  iters: jax.Array         # int32 [T]: warm_iters ... warm_iters, final_iters
  mu_init: jax.Array
  mu_factor: jax.Array
  lr: jax.Array
  beta1: jax.Array
  beta2: jax.Array
  adam_eps: jax.Array
  rel_tol: jax.Array
  sigma_floor: jax.Array
  max_restarts: jax.Array  # int32


def _hyper(cfg: CoLiDEConfig, dtype) -> _Hyper:
  T = len(cfg.s_schedule)
  f = lambda x: jnp.asarray(x, dtype)  # noqa: E731
  return _Hyper(
      lambda1=f(cfg.lambda1), s_schedule=f(tuple(cfg.s_schedule)),
      iters=jnp.asarray([int(cfg.warm_iters)] * (T - 1) + [int(cfg.final_iters)], jnp.int32),
      mu_init=f(cfg.mu_init), mu_factor=f(cfg.mu_factor), lr=f(cfg.lr), beta1=f(cfg.beta1), beta2=f(cfg.beta2),
      adam_eps=f(cfg.adam_eps), rel_tol=f(cfg.rel_tol), sigma_floor=f(cfg.sigma_floor),
      max_restarts=jnp.asarray(int(cfg.max_restarts), jnp.int32))


class _InnerState(NamedTuple):
  W: jax.Array          # [d, d]
  sigma: jax.Array      # [] (EV, LS) or [d] (NV)
  rhs: jax.Array        # C (I - W) at the current W [d, d] (shared by sigma and the next gradient)
  m: jax.Array          # Adam first moment [d, d]
  v: jax.Array          # Adam second moment [d, d]
  direction: jax.Array  # last Adam direction m_hat / (sqrt(v_hat) + eps) [d, d] (for undoing a step)
  lr: jax.Array         # [] current learning rate
  t: jax.Array          # int32 [] Adam steps taken
  obj_prev: jax.Array   # [] objective at the last check
  status: jax.Array     # int32 [] RUNNING / CONVERGED / MAX_ITERS / LR_UNDERFLOW / OUT_OF_DOMAIN


def _adam_step(state: _InnerState, C, mu, s, num_iters, variant: str, hp: _Hyper) -> _InnerState:
  """One guarded block-coordinate step: domain check (and backtracking), Adam on W, closed-form sigma.

  A no-op (state returned unchanged) once the subproblem has stopped or ``num_iters`` steps are done; masking
  with ``where`` is cheaper here than a ``lax.cond`` per step.
  """
  W, sigma, rhs, lr = state.W, state.sigma, state.rhs, state.lr
  active = (state.status == RUNNING) & (state.t < num_iters)
  t = state.t + 1
  M = _shifted_inverse(W, s)
  outside = _outside(M) & active
  abandon = outside & ((t == 1) | (s <= _S_FAIL_LIMIT))

  def backtrack(args):
    def cond(c):
      return _outside(c[4]) & ~c[5]

    def body(c):
      W, sigma, rhs, lr, M, _ = c
      W = W + lr * state.direction                               # undo the last update
      lr = lr * 0.5
      underflow = lr <= _LR_MIN
      W_new = W - lr * state.direction                           # redo it with half the step
      rhs_new, sigma_new = _refresh(variant, W_new, sigma, C, hp.sigma_floor)
      pick = lambda before, after: jnp.where(underflow, before, after)  # noqa: E731
      return (pick(W, W_new), pick(sigma, sigma_new), pick(rhs, rhs_new), lr, pick(M, _shifted_inverse(W_new, s)),
              underflow)

    return jax.lax.while_loop(cond, body, (*args, jnp.zeros((), bool)))

  W, sigma, rhs, lr, M, underflow = jax.lax.cond(
      outside & ~abandon, backtrack, lambda a: (*a, jnp.zeros((), bool)), (W, sigma, rhs, lr, M))

  grad = _engine_score_grad(variant, rhs, sigma, mu) + mu * hp.lambda1 * jnp.sign(W) + 2.0 * W * M.T
  m = hp.beta1 * state.m + (1.0 - hp.beta1) * grad
  v = hp.beta2 * state.v + (1.0 - hp.beta2) * grad * grad
  tf = t.astype(W.dtype)
  m_hat = m / (1.0 - hp.beta1 ** tf)
  v_hat = v / (1.0 - hp.beta2 ** tf)
  direction = m_hat / (jnp.sqrt(v_hat) + hp.adam_eps)
  W_next = W - lr * direction
  rhs_next, sigma_next = _refresh(variant, W_next, sigma, C, hp.sigma_floor)

  stop = abandon | underflow | ~active
  status = jnp.where(abandon, OUT_OF_DOMAIN, jnp.where(underflow, LR_UNDERFLOW, state.status)).astype(jnp.int32)
  keep = lambda before, after: jnp.where(stop, before, after)  # noqa: E731
  return _InnerState(
      W=keep(W, W_next), sigma=keep(sigma, sigma_next), rhs=keep(rhs, rhs_next), m=keep(state.m, m),
      v=keep(state.v, v), direction=keep(state.direction, direction), lr=lr, t=jnp.where(stop, state.t, t),
      obj_prev=state.obj_prev, status=status)


def _subproblem(W0, sigma0, C, mu, s, lr, num_iters, variant: str, hp: _Hyper, check_every: int) -> _InnerState:
  """Approximately minimise ``F(W, sigma) = mu (S + lambda ||W||_1) + h(W, s)`` from ``(W0, sigma0)``.

  A ``lax.while_loop`` over chunks of ``check_every`` guarded Adam steps (each chunk one ``lax.scan``); the
  convergence test runs between chunks, i.e. at every multiple of ``check_every`` and after step ``num_iters``.
  ``num_iters`` may be traced. Returns the final inner state (``status`` != RUNNING).
  """
  dtype = W0.dtype
  rhs0 = C @ (jnp.eye(W0.shape[0], dtype=dtype) - W0)
  init = _InnerState(
      W=W0, sigma=sigma0, rhs=rhs0, m=jnp.zeros_like(W0), v=jnp.zeros_like(W0), direction=jnp.zeros_like(W0),
      lr=jnp.asarray(lr, dtype), t=jnp.zeros((), jnp.int32), obj_prev=jnp.asarray(_OBJ_PREV_INIT, dtype),
      status=jnp.asarray(RUNNING, jnp.int32))

  def guarded_step(state, _):
    return _adam_step(state, C, mu, s, num_iters, variant, hp), None

  def chunk(state):
    state, _ = jax.lax.scan(guarded_step, state, None, length=check_every, unroll=_UNROLL)
    obj = _objective(variant, state.W, state.sigma, C, mu, s, hp.lambda1)
    converged = jnp.abs((state.obj_prev - obj) / state.obj_prev) <= hp.rel_tol
    running = state.status == RUNNING
    status = jnp.where(running & converged, CONVERGED,
                       jnp.where(running & (state.t >= num_iters), MAX_ITERS, state.status)).astype(jnp.int32)
    return state._replace(obj_prev=jnp.where(running, obj, state.obj_prev), status=status)

  return jax.lax.while_loop(lambda st: st.status == RUNNING, chunk, init)


def _path(C, W0, sigma0, variant: str, hp: _Hyper, check_every: int) -> SolveResult:
  """The ``T`` warm-started subproblems with out-of-domain restarts (pure, jittable, vmappable)."""
  dtype = C.dtype

  def outer(carry, xs):
    W, sigma, mu = carry
    s_k, num_iters = xs

    def attempt(c):
      first, s, lr, restarts, _ = c
      s = jnp.where(first, s, s + 0.1)                             # reference: s[i] += 0.1 ...
      lr = jnp.where(first, lr, lr * 0.5)                          # ... and lr_adam *= 0.5 before retrying
      inner = _subproblem(W, sigma, C, mu, s, lr, num_iters, variant, hp, check_every)
      return (jnp.zeros((), bool), s, lr, restarts + jnp.where(first, 0, 1), inner)

    def retry(c):
      first, _, _, restarts, inner = c
      return first | ((inner.status == OUT_OF_DOMAIN) & (restarts < hp.max_restarts))

    dummy = _InnerState(W=W, sigma=sigma, rhs=W, m=W, v=W, direction=W, lr=jnp.zeros((), dtype),
                        t=jnp.zeros((), jnp.int32), obj_prev=jnp.zeros((), dtype),
                        status=jnp.asarray(OUT_OF_DOMAIN, jnp.int32))
    _, s_used, _, restarts, inner = jax.lax.while_loop(
        retry, attempt, (jnp.ones((), bool), s_k, hp.lr, jnp.zeros((), jnp.int32), dummy))
    failed = inner.status == OUT_OF_DOMAIN
    W_new = jnp.where(failed, W, inner.W)
    sigma_new = jnp.where(failed, sigma, inner.sigma)
    objective = _objective(variant, W_new, sigma_new, C, mu, s_used, hp.lambda1)
    info = SubproblemInfo(s=s_used, lr=inner.lr, mu=mu, iters=inner.t, status=inner.status, restarts=restarts,
                          objective=objective)
    return (W_new, sigma_new, mu * hp.mu_factor), info

  (W, sigma, _), info = jax.lax.scan(outer, (W0, sigma0, hp.mu_init), (hp.s_schedule, hp.iters))
  return SolveResult(W, sigma, info)


def _initial_point(X, W_init, variant: str):
  """Centred data, covariance, start point: W = 0 (or ``W_init``); sigma from the centred data (or residuals)."""
  n, d = X.shape
  if W_init is not None and jnp.shape(W_init) != (d, d):
    raise ValueError(f"W_init must be [d, d] = [{d}, {d}], got shape {jnp.shape(W_init)}")
  Xc = X - jnp.mean(X, axis=0, keepdims=True)
  C = Xc.T @ Xc / n
  if W_init is None:
    W0 = jnp.zeros((d, d), X.dtype)
    col_std = jnp.linalg.norm(Xc, axis=0) / jnp.sqrt(jnp.asarray(n, X.dtype))
  else:
    W0 = jnp.asarray(W_init, X.dtype)
    col_std = jnp.linalg.norm(Xc @ (jnp.eye(d, dtype=X.dtype) - W0), axis=0) / jnp.sqrt(jnp.asarray(n, X.dtype))
  if variant == "ev":
    sigma0 = jnp.min(col_std)
  elif variant == "nv":
    sigma0 = col_std
  else:
    sigma0 = jnp.ones((), X.dtype)
  return C, W0, sigma0


def _check_config(cfg: CoLiDEConfig) -> None:
  if not isinstance(cfg, CoLiDEConfig):
    raise TypeError(f"config must be a CoLiDEConfig, got {type(cfg).__name__}")
  try:
    s = tuple(cfg.s_schedule)
  except TypeError:
    raise TypeError(f"config.s_schedule must be a sequence of floats s_k, got {cfg.s_schedule!r}") from None
  if not s:
    raise ValueError("config.s_schedule must be a non-empty sequence of log-det parameters s_k")
  for k, s_k in enumerate(s):
    if not (isinstance(s_k, (int, float, np.integer, np.floating)) and not isinstance(s_k, (bool, np.bool_))
            and math.isfinite(s_k) and s_k > 0):
      raise ValueError(
          f"config.s_schedule[{k}] = {s_k!r} leaves the admissible domain: h(W, s) = -log det(sI - W o W) + d log s "
          "needs s > 0 (the domain {W : rho(W o W) < s} is empty for s <= 0)")
  for name in ("warm_iters", "final_iters", "check_every", "max_restarts"):
    value = getattr(cfg, name)
    minimum = 0 if name == "max_restarts" else 1
    if not _is_integer(value) or value < minimum:
      raise ValueError(f"config.{name} must be an integer >= {minimum}, got {value!r}")
  for name in ("lambda1", "mu_init", "mu_factor", "lr", "beta1", "beta2", "adam_eps", "rel_tol", "sigma_floor",
               "w_threshold"):
    value = getattr(cfg, name)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
      raise TypeError(f"config.{name} must be a real number, got {value!r}")
  for name in ("lr", "mu_init", "mu_factor", "rel_tol", "adam_eps"):
    value = getattr(cfg, name)
    if not (math.isfinite(value) and value > 0):
      raise ValueError(f"config.{name} must be finite and > 0, got {value!r}")
  for name in ("lambda1", "sigma_floor", "w_threshold"):
    value = getattr(cfg, name)
    if not (math.isfinite(value) and value >= 0):
      raise ValueError(f"config.{name} must be finite and >= 0, got {value!r}")
  for name in ("beta1", "beta2"):
    value = getattr(cfg, name)
    if not 0 <= value < 1:
      raise ValueError(f"config.{name} must be in [0, 1), got {value!r}")


def _is_integer(value: Any) -> bool:
  """An int, or an integral finite float (``1000.0``); never a bool, NaN or inf."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
    return False
  return math.isfinite(value) and int(value) == value


def _normalise_config(cfg: CoLiDEConfig) -> CoLiDEConfig:
  """Hashable, Python-typed copy (it is a static argument of the jitted solver)."""
  return cfg._replace(s_schedule=tuple(float(s) for s in cfg.s_schedule), warm_iters=int(cfg.warm_iters),
                      final_iters=int(cfg.final_iters), check_every=int(cfg.check_every),
                      max_restarts=int(cfg.max_restarts))


def solve_path(X: jax.Array, config: CoLiDEConfig = CoLiDEConfig(), variant: str = "ev",
               W_init: jax.Array | None = None) -> SolveResult:
  """The raw engine for ``variant`` in ``("ev", "nv", "ls")`` (``"ls"`` = DAGMA's least squares, no sigma block).

  Pure and jittable (``config`` and ``variant`` are Python values); no input validation beyond shapes — use
  :func:`colide_fit` / :func:`jaxgen.causal.dagma_linear_fit` for checked, thresholded fits.
  """
  if variant not in _ENGINE_VARIANTS:
    raise ValueError(f"variant must be one of {_ENGINE_VARIANTS}, got {variant!r}")
  X = jnp.asarray(X)
  if X.ndim != 2:
    raise ValueError(f"X must be 2-D [n, d], got shape {X.shape}")
  if not jnp.issubdtype(X.dtype, jnp.floating):
    X = X.astype(jnp.result_type(float))
  C, W0, sigma0 = _initial_point(X, W_init, variant)
  return _path(C, W0, sigma0, variant, _hyper(config, C.dtype), int(config.check_every))


def colide_solve(X: jax.Array, config: CoLiDEConfig = CoLiDEConfig(), variant: str = "ev",
                 W_init: jax.Array | None = None) -> SolveResult:
  """CoLiDE's unthresholded estimate ``(W, sigma, info)``: the pure, jittable, ``vmap``-able core of
  :func:`colide_fit` (``config`` and ``variant`` must be Python values, e.g. closed over or static).

  Example: ``jax.vmap(lambda X: colide_solve(X, cfg, "ev"))(Xs)`` fits a batch ``Xs`` ``[B, n, d]`` at once.
  """
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  return solve_path(X, _normalise_config(config), variant, W_init)


@functools.partial(jax.jit, static_argnames=("check_every", "variant"))
def _solve_jit(X, W_init, hp: _Hyper, check_every: int, variant: str) -> SolveResult:
  C, W0, sigma0 = _initial_point(X, W_init, variant)
  return _path(C, W0, sigma0, variant, hp, check_every)


def check_data(X: Any, argument: str = "X") -> np.ndarray:
  """Validate a data matrix on the host: 2-D ``[n, d]`` with ``n >= 2``, ``d >= 1``, real and finite."""
  arr = np.asarray(X)
  if arr.ndim != 2:
    raise ValueError(f"{argument} must be a 2-D [n, d] data matrix, got {arr.ndim}-D with shape {arr.shape}")
  n, d = arr.shape
  if n < 2:
    raise ValueError(f"{argument} needs n >= 2 samples (rows) to centre and estimate a covariance, got n = {n}")
  if d < 1:
    raise ValueError(f"{argument} needs at least one variable (column), got shape {arr.shape}")
  if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
    raise ValueError(f"{argument} must hold real numbers, got dtype {arr.dtype}")
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{argument} contains NaN or inf ({int(np.sum(~np.isfinite(arr)))} entries); "
                     "impute or drop those rows first")
  return arr


def _check_w_init(W_init: Any, d: int, s0: float) -> np.ndarray:
  W0 = np.asarray(W_init, dtype=np.float64)
  if W0.shape != (d, d):
    raise ValueError(f"W_init must be [d, d] = [{d}, {d}], got shape {W0.shape}")
  if not np.all(np.isfinite(W0)):
    raise ValueError("W_init contains NaN or inf")
  M = np.linalg.inv(s0 * np.eye(d) - W0 * W0) + _INV_SHIFT
  if np.any(M < -_DOMAIN_TOL):
    raise ValueError(
        f"W_init is outside the admissible domain of the first log-det step: s_schedule[0] = {s0} must exceed the "
        f"spectral radius of W_init o W_init ({np.max(np.abs(np.linalg.eigvals(W0 * W0))):.4g})")
  return W0


def _fit(X, config: CoLiDEConfig, variant: str, W_init) -> FitResult:
  _check_config(config)
  config = _normalise_config(config)
  arr = check_data(X)
  # A fresh device array: the caller's X is never touched (the reference centres it in place).
  X_dev = jnp.array(arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64))
  W0 = None if W_init is None else jnp.asarray(_check_w_init(W_init, arr.shape[1], config.s_schedule[0]),
                                               X_dev.dtype)
  result = _solve_jit(X_dev, W0, _hyper(config, X_dev.dtype), config.check_every, variant)
  info = jax.device_get(result.info)
  if np.any(info.status == OUT_OF_DOMAIN):
    k = int(np.flatnonzero(info.status == OUT_OF_DOMAIN)[0])
    raise ValueError(
        f"the s schedule left the admissible domain: subproblem {k} (s = {config.s_schedule[k]}) could not stay "
        f"inside {{W : rho(W o W) < s}} after {config.max_restarts} restarts (s raised to {float(info.s[k]):.3g}); "
        "use a larger s_schedule or a smaller lr")
  W_np = np.asarray(result.W, dtype=np.float64)
  if not np.all(np.isfinite(W_np)):
    raise ValueError("the fit produced a non-finite W (degenerate data, e.g. a constant column?)")
  return FitResult(result.W, result.sigma, threshold_to_dag(W_np, config.w_threshold), result.info)


def colide_fit(X: Any, config: CoLiDEConfig = CoLiDEConfig(), variant: str = "ev",
               W_init: Any | None = None) -> FitResult:
  r"""Fit CoLiDE-EV or CoLiDE-NV to data ``X`` and threshold the result to a DAG.

  Minimises, along the path ``k = 0..T-1`` (module docstring, paper Algorithm 1),
  :math:`\mu_k (S(W, \sigma) + \lambda\|W\|_1) + h(W, s_k)` with :math:`S = S_{ev}` (Eq. (6)) or :math:`S_{nv}`
  (Eq. (8)) by Adam on ``W`` alternated with the closed-form ``sigma`` (Eqs. (7), (9)); the whole optimisation is
  one jitted call (float64 when ``jax_enable_x64`` is on and ``X`` is float64). ``X`` is copied, never mutated.

  Args:
    X: ``[n, d]`` samples (rows), raw (centred internally); ``n >= 2``, finite.
    config: :class:`CoLiDEConfig` (paper defaults: ``lambda = 0.05``, ``s = (1, .9, .8, .7)``, 2e4/7e4 Adam steps,
      lr 3e-4, ``beta = (0.99, 0.999)``, threshold 0.3).
    variant: ``"ev"`` (one noise scale) or ``"nv"`` (one per node).
    W_init: optional ``[d, d]`` warm start (admissible at ``s_schedule[0]``); ``sigma`` then starts from the
      residuals ``X_c (I - W_init)``. Default: ``W = 0`` and ``sigma`` = smallest column std (EV) / column stds (NV).

  Returns:
    :class:`FitResult` ``(W, sigma, W_dag, info)``.

  Raises:
    ValueError: ``X`` is not 2-D, has fewer than 2 rows or non-finite entries; bad ``variant``; a bad config (e.g.
      an ``s_k <= 0``, outside the log-det domain); ``W_init`` outside the domain; or the path cannot stay
      inside the admissible domain.

  Examples:
    >>> import jax, numpy as np
    >>> from jaxgen.causal import CoLiDEConfig, colide_fit
    >>> X = np.random.default_rng(0).normal(size=(200, 3)) @ np.array([[1., .9, 0], [0, 1, .8], [0, 0, 1]])
    >>> fit = colide_fit(X, CoLiDEConfig(s_schedule=(1.0, 0.9), warm_iters=300, final_iters=300, check_every=100))
    >>> fit.W_dag.shape
    (3, 3)

  References:
    Saboksayr, Mateos, Tepper, "CoLiDE: Concomitant Linear DAG Estimation", ICLR 2024, arXiv 2310.02895.
  """
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  return _fit(X, config, variant, W_init)


__all__ = [
    "CoLiDEConfig", "FitResult", "SolveResult", "SubproblemInfo", "admissible", "check_data", "colide_fit",
    "colide_solve", "covariance", "ev_score", "ev_score_grad", "ev_sigma", "logdet_acyclicity",
    "logdet_acyclicity_grad", "ls_score", "ls_score_grad", "nv_score", "nv_score_grad", "nv_sigma", "solve_path",
]
