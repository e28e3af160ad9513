r"""Sharpness diagnostics (Hessian trace, Frobenius norm, top eigenvalue) and GD / SGD linear stability.

Wu & Su, "The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent", ICML 2023,
arXiv 2305.17490 (https://arxiv.org/abs/2305.17490); classical linear stability of GD (Wu, Ma, E, NeurIPS 2018).

Setting (square loss, the paper's Sec. 2): :math:`L(\theta) = \frac{1}{2n}\sum_i (f(x_i;\theta) - y_i)^2`. At an
interpolating minimum the Hessian equals the Gauss–Newton matrix
:math:`H = G := \frac1n \sum_i \nabla f_i \nabla f_i^\top` (the residual term vanishes). Linearised around
:math:`\theta^*`, GD iterates :math:`\theta \mapsto (I - \eta H)\theta` and SGD with batch :math:`B` iterates
:math:`\theta \mapsto (I - \eta H_B)\theta` with :math:`H_B` the mini-batch average.

* **GD**: linearly stable iff :math:`\lambda_{max}(H) \le 2/\eta` (:func:`gd_linear_stable`).
* **SGD** (mean-square linear stability): Wu & Su show that if :math:`\theta^*` is linearly stable for SGD then
  :math:`\operatorname{tr}(H) \le 2/\eta` (the paper's abstract and Sec. 3; :func:`sgd_linear_stable`).
  Since :math:`\operatorname{tr}(H) \ge \lambda_{max}(H)` and :math:`\|H\|_F \le \operatorname{tr}(H)` for PSD
  :math:`H`, SGD's constraint is much stronger in high dimension. Batch size: the check implements the condition
  as stated for single-sample SGD (the setting of the paper's diagonal-net experiments and of
  :mod:`jaxgen.experiments.sgd_stability`); larger batches reduce the gradient noise and weaken the constraint
  towards GD's (the companion Frobenius-norm result of Wu, Wang & Su, NeurIPS 2022, reads
  :math:`\|H\|_F \le O(\sqrt{B}/\eta)`). The exact batch-size factor of the trace bound was not re-derived here:
  do not apply :func:`sgd_linear_stable` to large-batch runs without checking the paper's theorem.

Tools (all pure and jittable; parameters are any pytree, flattened with ``jax.flatten_util.ravel_pytree``):

* :func:`hvp` — forward-over-reverse Hessian-vector product :math:`Hv` (``jax.jvp`` of ``jax.grad``).
* :func:`hutchinson_trace` / :func:`hessian_trace` — :math:`\operatorname{tr}(H) = \mathbb E[z^\top H z]` for
  Rademacher or Gaussian probes :math:`z` (Hutchinson 1989), with the standard error. For Rademacher probes the
  per-probe variance is :math:`2(\|H\|_F^2 - \sum_i H_{ii}^2)`.
* :func:`hutchinson_frobenius_sq` — :math:`\|H\|_F^2 = \mathbb E\|Hz\|^2`.
* :func:`exact_hessian_trace` — :math:`\sum_i e_i^\top H e_i` over all basis vectors (small models, oracles).
* :func:`top_eigenvalue` / :func:`top_hessian_eigenvalue` — power iteration in ``lax.while_loop``; it converges to
  the eigenvalue of largest **magnitude** (use :func:`lanczos` when negative curvature may dominate).
* :func:`lanczos` — Lanczos tridiagonalisation with full re-orthogonalisation; Ritz values approximate the extreme
  eigenvalues of both signs.
* :func:`gauss_newton_trace` — exact :math:`\operatorname{tr}(G) = \frac1n\sum_i\|\nabla_\theta f(x_i)\|^2`.
* :func:`stability_report` — the numbers of the paper's stability plots for one ``(params, lr)``.

Norm links (paper Sec. 4–5): for the diagonal linear net :math:`f(x) = \langle u \odot v, x\rangle`,
:math:`\operatorname{tr}(G) = \frac1n\sum_i\sum_j x_{ij}^2(u_j^2 + v_j^2) \ge \frac2n\sum_i\sum_j x_{ij}^2|u_j v_j|`,
a data-weighted :math:`\ell_1` norm of :math:`\beta = u\odot v`; for a two-layer ReLU net
:math:`f(x) = \sum_k a_k\sigma(w_k^\top x)`,
:math:`\operatorname{tr}(G) = \frac1n\sum_i\sum_k[\sigma(w_k^\top x_i)^2 + a_k^2 1\{w_k^\top x_i > 0\}\|x_i\|^2]`,
which is tied to the path norm :math:`\sum_k |a_k|\,\|w_k\|`.

Conventions: ``loss_fn(params, batch) -> scalar`` for the spec-style functions (``hvp``, ``hutchinson_trace``,
``top_eigenvalue``, ``lanczos``, ``stability_report``); the short forms :func:`hessian_trace` and
:func:`top_hessian_eigenvalue` take a closure ``loss_fn(params) -> scalar``. All probe randomness comes from an
explicit ``key``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any
Batch = Any
LossFn = Callable[[PyTree, Batch], jax.Array]  # (params, batch) -> scalar loss
ClosureLossFn = Callable[[PyTree], jax.Array]  # params -> scalar loss
ModelFn = Callable[[PyTree, jax.Array], jax.Array]  # (params, x) -> scalar output f(x; params)

__all__ = [
    "LanczosResult",
    "exact_hessian_trace",
    "gauss_newton_trace",
    "gd_linear_stable",
    "hessian_trace",
    "hutchinson_frobenius_sq",
    "hutchinson_trace",
    "hvp",
    "lanczos",
    "sgd_linear_stable",
    "stability_report",
    "top_eigenvalue",
    "top_hessian_eigenvalue",
]

_DISTS = ("rademacher", "gaussian")


class LanczosResult(NamedTuple):
  """Output of :func:`lanczos`.

  Attributes:
    alphas: ``[num_steps]`` diagonal of the tridiagonal matrix :math:`T`.
    betas: ``[num_steps - 1]`` off-diagonal of :math:`T`.
    ritz_values: ``[num_steps]`` eigenvalues of :math:`T`, ascending (approximate eigenvalues of :math:`H`).
  """

  alphas: jax.Array
  betas: jax.Array
  ritz_values: jax.Array


# ---------------------------------------------------------------------------------------------------------------
# Flat-space helpers.


def _flat_matvec(closure: ClosureLossFn, params: PyTree) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
  """Flattened parameters and the flat Hessian-vector product ``v -> H v`` of ``closure``."""
  flat, unravel = ravel_pytree(params)
  if flat.size == 0:
    raise ValueError("params must contain at least one array entry")
  if not jnp.issubdtype(flat.dtype, jnp.floating):
    raise TypeError(f"params must be floating point, got dtype {flat.dtype}")
  _check_scalar_loss(closure, params)

  def flat_loss(w):
    return closure(unravel(w))

  grad_fn = jax.grad(flat_loss)

  def matvec(v):
    return jax.jvp(grad_fn, (flat,), (v.astype(flat.dtype),))[1]

  return flat, matvec


def _check_scalar_loss(closure: ClosureLossFn, params: PyTree) -> None:
  out = jax.eval_shape(closure, params)
  if jnp.shape(out) != () or not jnp.issubdtype(out.dtype, jnp.floating):
    raise ValueError(f"loss_fn must return a real scalar, got {out.dtype} of shape {jnp.shape(out)}")


def _check_positive_int(name: str, value: Any) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")
  return int(value)


def _probes(key: jax.Array, num_samples: int, dim: int, dtype: Any, dist: str) -> jax.Array:
  if dist not in _DISTS:
    raise ValueError(f"dist must be one of {_DISTS}, got {dist!r}")
  if dist == "rademacher":
    return jax.random.rademacher(key, (num_samples, dim), dtype=dtype)
  return jax.random.normal(key, (num_samples, dim), dtype=dtype)


def _mean_and_stderr(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
  num = samples.shape[0]
  mean = jnp.mean(samples)
  if num < 2:
    return mean, jnp.full_like(mean, jnp.inf)
  return mean, jnp.std(samples, ddof=1) / jnp.sqrt(jnp.asarray(num, samples.dtype))


def _closure(loss_fn: LossFn, batch: Batch) -> ClosureLossFn:
  return lambda p: loss_fn(p, batch)


# ---------------------------------------------------------------------------------------------------------------
# Public API.


def hvp(loss_fn: LossFn, params: PyTree, batch: Batch, v: PyTree) -> PyTree:
  r"""Hessian-vector product :math:`\nabla^2_\theta L(\theta; \text{batch})\, v` (forward-over-reverse).

  Args:
    loss_fn: ``(params, batch) -> scalar``.
    params: the point :math:`\theta` (pytree).
    batch: passed through to ``loss_fn``.
    v: tangent with the structure of ``params``.

  Returns:
    :math:`Hv`, same structure as ``params``.

  Examples:
    >>> import jax.numpy as jnp
    >>> hvp(lambda p, a: 0.5 * p @ (a @ p), jnp.ones(2), jnp.diag(jnp.array([2.0, 3.0])), jnp.ones(2)).tolist()
    [2.0, 3.0]
  """
  if jax.tree.structure(v) != jax.tree.structure(params):
    raise ValueError("v must have the same pytree structure as params")
  if any(jnp.shape(a) != jnp.shape(b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(params))):
    raise ValueError("v must have the shapes of params, leaf by leaf")
  _check_scalar_loss(lambda p: loss_fn(p, batch), params)
  return jax.jvp(jax.grad(lambda p: loss_fn(p, batch)), (params,), (v,))[1]


def _hutchinson(closure, params, key, num_samples, dist, frobenius):
  num_samples = _check_positive_int("num_samples", num_samples)
  flat, matvec = _flat_matvec(closure, params)
  zs = _probes(key, num_samples, flat.size, flat.dtype, dist)   # [S, P]

  def one(z):
    hz = matvec(z)
    return jnp.vdot(hz, hz) if frobenius else jnp.vdot(z, hz)

  return _mean_and_stderr(jax.lax.map(one, zs))


def hutchinson_trace(loss_fn: LossFn, params: PyTree, batch: Batch, key: jax.Array, num_samples: int = 64,
                     dist: str = "rademacher") -> tuple[jax.Array, jax.Array]:
  r"""Hutchinson estimate of :math:`\operatorname{tr}(H)`: mean of :math:`z^\top H z` over ``num_samples`` probes.

  Args:
    loss_fn: ``(params, batch) -> scalar``.
    params: the point :math:`\theta`.
    batch: passed to ``loss_fn``.
    key: PRNG key for the probes.
    num_samples: number of probes (one HVP each, run sequentially with ``lax.map``).
    dist: ``"rademacher"`` (lower variance) or ``"gaussian"``.

  Returns:
    ``(estimate, standard_error)``; the standard error is the sample standard deviation over
    :math:`\sqrt{\text{num\_samples}}` (``inf`` for one probe).
  """
  return _hutchinson(_closure(loss_fn, batch), params, key, num_samples, dist, frobenius=False)


def hutchinson_frobenius_sq(loss_fn: LossFn, params: PyTree, batch: Batch, key: jax.Array, num_samples: int = 64,
                            dist: str = "rademacher") -> tuple[jax.Array, jax.Array]:
  r"""Estimate of :math:`\|H\|_F^2 = \mathbb E\,\|Hz\|^2` (Rademacher or Gaussian :math:`z`); ``(estimate, stderr)``."""
  return _hutchinson(_closure(loss_fn, batch), params, key, num_samples, dist, frobenius=True)


def hessian_trace(loss_fn: ClosureLossFn, params: PyTree, key: jax.Array, num_samples: int = 64, *,
                  dist: str = "rademacher") -> jax.Array:
  r"""Hutchinson estimate of :math:`\operatorname{tr}\nabla^2 L(\theta)` for a closure ``loss_fn(params)``.

  Same estimator as :func:`hutchinson_trace` (which also returns the standard error).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> a = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
    >>> float(hessian_trace(lambda p: 0.5 * p @ (a @ p), jnp.ones(3), jax.random.key(0), 4))  # exact for diagonal H
    6.0
  """
  return _hutchinson(loss_fn, params, key, num_samples, dist, frobenius=False)[0]


def exact_hessian_trace(loss_fn: ClosureLossFn, params: PyTree) -> jax.Array:
  r""":math:`\operatorname{tr} H = \sum_i e_i^\top H e_i` from one HVP per parameter (``lax.map`` over the basis).

  Exact up to round-off; costs ``num_params`` HVPs, so it is meant for small models and as an oracle.
  """
  flat, matvec = _flat_matvec(loss_fn, params)
  eye_rows = jnp.arange(flat.size)

  def diag_entry(i):
    e = jax.nn.one_hot(i, flat.size, dtype=flat.dtype)
    return matvec(e)[i]

  return jnp.sum(jax.lax.map(diag_entry, eye_rows))


def _power_iteration(closure, params, key, num_iters, tol):
  num_iters = _check_positive_int("num_iters", num_iters)
  if not tol >= 0:                                           # NaN fails too; inf = stop after two iterations
    raise ValueError(f"tol must be >= 0, got {tol!r}")
  flat, matvec = _flat_matvec(closure, params)
  v0 = jax.random.normal(key, flat.shape, flat.dtype)
  v0 = v0 / jnp.linalg.norm(v0)
  tiny = jnp.finfo(flat.dtype).tiny

  def cond(carry):
    i, _, lam, lam_prev = carry
    return (i < num_iters) & ((i < 2) | (jnp.abs(lam - lam_prev) > tol * jnp.abs(lam)))

  def body(carry):
    i, v, lam, _ = carry
    hv = matvec(v)
    new_lam = jnp.vdot(v, hv)                                # Rayleigh quotient (||v|| = 1)
    norm = jnp.linalg.norm(hv)
    new_v = jnp.where(norm > tiny, hv / jnp.maximum(norm, tiny), v)
    return i + 1, new_v, new_lam, lam

  zero = jnp.zeros([], flat.dtype)
  _, v, lam, _ = jax.lax.while_loop(cond, body, (jnp.zeros([], jnp.int32), v0, zero, zero))
  return lam, v


def top_eigenvalue(loss_fn: LossFn, params: PyTree, batch: Batch, key: jax.Array, num_iters: int = 100,
                   tol: float = 1e-6) -> tuple[jax.Array, PyTree]:
  r"""Power iteration for the Hessian eigenvalue of largest magnitude (``lax.while_loop``).

  Iterates :math:`v \leftarrow Hv/\|Hv\|` and returns the Rayleigh quotient :math:`\lambda = v^\top H v`; stops after
  ``num_iters`` HVPs or once :math:`|\lambda_k - \lambda_{k-1}| \le \text{tol}\,|\lambda_k|`. Converges to the
  eigenvalue of largest :math:`|\lambda|` at rate :math:`|\lambda_2/\lambda_1|` per step; at a minimum (PSD
  :math:`H`) that is :math:`\lambda_{max}`. Use :func:`lanczos` when negative curvature may dominate.

  Returns:
    ``(lambda, v)`` with ``v`` the unit eigenvector estimate as a pytree like ``params``.
  """
  lam, v = _power_iteration(_closure(loss_fn, batch), params, key, num_iters, tol)
  return lam, ravel_pytree(params)[1](v)


def top_hessian_eigenvalue(loss_fn: ClosureLossFn, params: PyTree, key: jax.Array, num_iters: int = 100,
                           tol: float = 1e-6) -> jax.Array:
  """Largest-magnitude Hessian eigenvalue of a closure ``loss_fn(params)`` by power iteration (see
  :func:`top_eigenvalue`)."""
  return _power_iteration(loss_fn, params, key, num_iters, tol)[0]


def lanczos(loss_fn: LossFn, params: PyTree, batch: Batch, key: jax.Array, num_steps: int = 30) -> LanczosResult:
  r"""Lanczos tridiagonalisation of the Hessian with full re-orthogonalisation.

  Builds an orthonormal Krylov basis :math:`q_1, \dots, q_k` (``k = num_steps``) with
  :math:`Hq_j = \beta_{j-1}q_{j-1} + \alpha_j q_j + \beta_j q_{j+1}`; every new vector is re-orthogonalised against
  all previous ones (affordable at the sizes this library tests). The eigenvalues of the tridiagonal
  :math:`T = \mathrm{tridiag}(\beta, \alpha, \beta)` (Ritz values) approximate the extreme eigenvalues of :math:`H`;
  with ``num_steps`` equal to the number of parameters they are the exact spectrum up to round-off. If the Krylov
  space is exhausted early (:math:`\beta_j = 0`) the remaining :math:`\alpha` are 0 and contribute Ritz values 0.

  Args:
    loss_fn: ``(params, batch) -> scalar``.
    params: the point :math:`\theta`.
    batch: passed to ``loss_fn``.
    key: PRNG key for the starting vector.
    num_steps: Krylov dimension :math:`k` (at most the number of parameters).

  Returns:
    :class:`LanczosResult` ``(alphas, betas, ritz_values)``.
  """
  num_steps = _check_positive_int("num_steps", num_steps)
  flat, matvec = _flat_matvec(_closure(loss_fn, batch), params)
  if num_steps > flat.size:
    raise ValueError(f"num_steps ({num_steps}) must not exceed the number of parameters ({flat.size})")
  dtype = flat.dtype
  q0 = jax.random.normal(key, flat.shape, dtype)
  q0 = q0 / jnp.linalg.norm(q0)
  basis = jnp.zeros((num_steps, flat.size), dtype).at[0].set(q0)   # [k, P]
  tiny = jnp.finfo(dtype).eps * 1e-3

  def body(j, carry):
    basis, alphas, betas = carry
    q = basis[j]
    w = matvec(q)
    alpha = jnp.vdot(q, w)
    w = w - basis.T @ (basis @ w)           # full re-orthogonalisation (unfilled rows are zero)
    w = w - basis.T @ (basis @ w)           # twice is enough ("twice is enough", Kahan/Parlett)
    beta = jnp.linalg.norm(w)
    ok = beta > tiny * jnp.maximum(jnp.abs(alpha), 1.0)
    nxt = jnp.where(ok, w / jnp.where(ok, beta, 1.0), jnp.zeros_like(w))
    basis = jnp.where(j + 1 < num_steps, basis.at[jnp.minimum(j + 1, num_steps - 1)].set(nxt), basis)
    alphas = alphas.at[j].set(alpha)
    betas = betas.at[j].set(jnp.where(ok, beta, 0.0))
    return basis, alphas, betas

  _, alphas, betas = jax.lax.fori_loop(
      0, num_steps, body, (basis, jnp.zeros(num_steps, dtype), jnp.zeros(num_steps, dtype)))
  betas = betas[:-1]
  tridiag = jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)
  return LanczosResult(alphas, betas, jnp.linalg.eigvalsh(tridiag))


def gauss_newton_trace(model_fn: ModelFn, params: PyTree, xs: jax.Array) -> jax.Array:
  r"""Exact :math:`\operatorname{tr}(G) = \frac1n\sum_i \|\nabla_\theta f(x_i;\theta)\|^2` for a scalar-output model.

  At an interpolating minimum of the square loss :math:`\frac1{2n}\sum_i(f(x_i) - y_i)^2` this is
  :math:`\operatorname{tr}(H)`.

  Args:
    model_fn: ``(params, x) -> scalar`` for one example ``x``.
    params: the parameters :math:`\theta`.
    xs: ``[n, ...]`` inputs (leading axis = examples).

  Returns:
    Scalar :math:`\operatorname{tr}(G)`.
  """
  xs = jnp.asarray(xs)
  if xs.ndim < 1 or xs.shape[0] == 0:
    raise ValueError(f"xs must have a non-empty leading example axis, got shape {xs.shape}")

  def sq_norm(x):
    out = model_fn(params, x)
    if jnp.shape(out) != ():
      raise ValueError(f"model_fn must return a scalar per example, got shape {jnp.shape(out)}")
    g = jax.grad(model_fn)(params, x)
    return sum(jnp.vdot(leaf, leaf) for leaf in jax.tree.leaves(g))

  return jnp.mean(jax.vmap(sq_norm)(xs))


def _check_lr(lr: Any) -> None:
  if not isinstance(lr, jax.core.Tracer):
    arr = np.asarray(lr)
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
      raise ValueError(f"lr must be finite and > 0, got {lr!r}")


def _check_not_nan(name: str, value: Any) -> None:
  if not isinstance(value, jax.core.Tracer) and np.any(np.isnan(np.asarray(value))):
    raise ValueError(f"{name} is NaN: the stability verdict of a NaN sharpness is undefined")


def gd_linear_stable(lambda_max: jax.Array, lr: float | jax.Array) -> jax.Array:
  r"""GD linear stability at a minimum: :math:`\lambda_{max}(H) \le 2/\eta` (boolean array).

  Raises:
    ValueError: ``lr`` not finite and > 0, or a NaN ``lambda_max`` (when concrete; +inf is simply unstable).
  """
  _check_lr(lr)
  _check_not_nan("lambda_max", lambda_max)
  return jnp.asarray(lambda_max) <= 2.0 / jnp.asarray(lr)


def sgd_linear_stable(trace: jax.Array, lr: float | jax.Array) -> jax.Array:
  r"""Wu & Su's necessary condition for SGD (batch size 1) linear stability: :math:`\operatorname{tr}(H) \le 2/\eta`."""
  _check_lr(lr)
  _check_not_nan("trace", trace)
  return jnp.asarray(trace) <= 2.0 / jnp.asarray(lr)


def stability_report(loss_fn: LossFn, params: PyTree, batch: Batch, lr: float | jax.Array, *,
                     key: jax.Array | None = None, num_samples: int = 64, num_iters: int = 100, tol: float = 1e-6,
                     exact_trace: bool = False) -> dict[str, jax.Array]:
  r"""Sharpness numbers and the GD / SGD stability verdicts at ``params`` for learning rate ``lr``.

  Args:
    loss_fn: ``(params, batch) -> scalar``.
    params, batch: the point and data.
    lr: learning rate :math:`\eta`.
    key: PRNG key for the probes and the power-iteration start (default ``jax.random.key(0)``).
    num_samples: Hutchinson probes (trace and Frobenius norm).
    num_iters, tol: power-iteration budget and relative tolerance.
    exact_trace: use :func:`exact_hessian_trace` (one HVP per parameter) instead of Hutchinson.

  Returns:
    dict with ``lambda_max``, ``trace``, ``frobenius`` (:math:`\|H\|_F`, Hutchinson), ``gd_stable``
    (:math:`\lambda_{max} \le 2/\eta`), ``sgd_trace_stable`` (:math:`\operatorname{tr} \le 2/\eta`),
    ``lr_x_lambda_max`` and ``lr_x_trace``.
  """
  _check_lr(lr)
  key = jax.random.key(0) if key is None else key
  k_trace, k_frob, k_power = jax.random.split(key, 3)
  closure = _closure(loss_fn, batch)
  lam = _power_iteration(closure, params, k_power, num_iters, tol)[0]
  if exact_trace:
    trace = exact_hessian_trace(closure, params)
  else:
    trace = _hutchinson(closure, params, k_trace, num_samples, "rademacher", frobenius=False)[0]
  frob_sq = _hutchinson(closure, params, k_frob, num_samples, "rademacher", frobenius=True)[0]
  lr = jnp.asarray(lr, lam.dtype)
  return {
      "lambda_max": lam,
      "trace": trace,
      "frobenius": jnp.sqrt(jnp.maximum(frob_sq, 0.0)),
      "gd_stable": lam <= 2.0 / lr,
      "sgd_trace_stable": trace <= 2.0 / lr,
      "lr_x_lambda_max": lr * lam,
      "lr_x_trace": lr * trace,
  }
