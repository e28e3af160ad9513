r"""BloomGML-style graph layers: descent steps on a graph energy, unrolled with ``lax.scan`` (spec graph.md §B).

"BloomGML-style": Zheng, He, Qiu, Wang, Wipf, "BloomGML: Graph Machine Learning through the Lens of Bilevel
Optimization", AISTATS 2024 (arXiv 2403.04763) view GNN layers as descent steps on a lower-level energy. Its
repository publishes no code, so this module is a *reconstruction*; the concrete steps are pinned down by the
same group's predecessors TWIRLS (Yang et al., "Graph Neural Networks Inspired by Classical Iterative
Algorithms", ICML 2021, arXiv 2103.06064) and HALO (Ahn et al., "Descent Steps of a Relation-Aware Energy Produce
Heterogeneous Graph Neural Networks", NeurIPS 2022, arXiv 2206.11081), whose reference code produced the fixtures.
Nothing here reproduces BloomGML's tables.

Energy (N nodes, rows :math:`y_i \in \mathbb{R}^d`, BloomGML eq. (3)/(4), TWIRLS eq. (2)):

.. math::
  E(Y) = \tfrac12 \sum_i \gamma_i \|y_i - f_i\|^2
       + \tfrac{\lambda}{2} \sum_{\{i,j\}\in\mathcal{E}} w_{ij}\, \rho(\|y_i - y_j\|^2) + \sum_i \eta(y_i)

with ``f`` the anchor :math:`F = f_W(X)`, ``gamma`` :math:`\gamma`, ``lam`` :math:`\lambda`. The pairwise sum runs
over *unordered* pairs; the edge lists here hold both directions, so sums over edges carry a factor ½. For
:math:`\rho(z)=z` the pairwise term is :math:`\tfrac{\lambda}{2}\mathrm{tr}(Y^\top L_w Y)`, :math:`L_w = D_w - A_w`;
``normalized=True`` uses :math:`I - D^{-1/2} A D^{-1/2}` instead (A as given, self loops included if present).
Gradient of the smooth part: :math:`G(Y) = \Gamma (Y - F) + \lambda L_w Y` (one :func:`~jaxgen.graph.ops.spmm`).

Steps (all pure, all return the next iterate): :func:`gradient_step` :math:`Y - \alpha G(Y)`; :func:`jacobi_step`
:math:`Y - \alpha P^{-1} G(Y)`, :math:`P = \Gamma + \lambda D_w`; :func:`prox_gradient_step`
:math:`\mathrm{prox}_{\alpha\eta}(Y - \alpha P^{-1} G(Y))`; :func:`heavy_ball_step` / :func:`nesterov_step`;
:func:`irls_edge_weights` (robust :math:`\rho`, majorise-minimise); :func:`twirls_propagate` (the TWIRLS layer,
exact); :func:`relation_step` (HALO form); :func:`unroll` (``lax.scan`` over K steps, optional energy trace).
:class:`BloomModel` is the bilevel model: MLP before, K descent steps, MLP after, trained end to end (B.7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jaxgen.core.validate import check_count
from jaxgen.graph import ops

__all__ = [
    "BloomModel",
    "InputDense",
    "energy_grad",
    "energy_induced_messages",
    "linear_message_energy",
    "residual_to_message_fn",
    "sparse_dropout",
    "gradient_step",
    "heavy_ball_step",
    "irls_edge_weights",
    "jacobi_step",
    "lipschitz_bound",
    "nesterov_step",
    "prox_gradient_step",
    "quad_energy",
    "relation_energy",
    "relation_step",
    "robust_energy",
    "soft_threshold",
    "twirls_propagate",
    "unroll",
]

Prox = str | tuple[str, float]


# ---------------------------------------------------------------------------------------------------------------
# Small helpers.


_hyper = ops._check_hyper  # noqa: SLF001


def _check_yf(graph: jraph.GraphsTuple, w: jax.Array | None, y: jax.Array, f: jax.Array | None,
              name: str = "y", w_name: str = "w") -> int:
  if jnp.ndim(y) != 2:
    raise ValueError(f"{name} must be [N, d], got shape {jnp.shape(y)}")
  if f is not None and jnp.shape(f) != jnp.shape(y):
    raise ValueError(f"f must have the shape of {name} {jnp.shape(y)}, got {jnp.shape(f)}")
  n = ops.num_nodes_of(graph, y, name=name)
  ops.validate_graph(graph, n)
  ops.validate_weights(graph, w, w_name)
  return n


def _check_energy(lam: Any, gamma: Any) -> None:
  _hyper("lam", lam)
  _hyper("gamma", gamma)


def _col(v: Any, n: int) -> jax.Array:
  """A scalar, or an ``[N]`` vector as an ``[N, 1]`` column (explicit, for rank-promotion='raise')."""
  v = jnp.asarray(v)
  if v.ndim == 0:
    return v
  if v.shape != (n,):
    raise ValueError(f"gamma must be a scalar or have shape ({n},), got {v.shape}")
  return v[:, None]


def _degree_and_ay(graph, w, y, n, normalized):
  """Returns (diag, A_hat Y): diag = d (unnormalised) or 1 (normalised), A_hat = A or D^-1/2 A D^-1/2."""
  w = jnp.ones(jnp.shape(graph.senders), y.dtype) if w is None else jnp.asarray(w, y.dtype)
  d = jax.ops.segment_sum(w, graph.receivers, num_segments=n)
  if normalized:
    return jnp.ones_like(d), ops.spmm(graph, ops.sym_norm_weights(graph, d, w), y)
  return d, ops.spmm(graph, w, y)


def quad_energy(graph: jraph.GraphsTuple, w: jax.Array | None, y: jax.Array, f: jax.Array, *, lam: float,
                gamma: Any = 1.0, normalized: bool = False) -> jax.Array:
  r"""Quadratic energy :math:`\tfrac12\sum_i\gamma_i\|y_i-f_i\|^2 + \tfrac{\lambda}{2}\mathrm{tr}(Y^\top L Y)`.

  Unnormalised: :math:`\mathrm{tr}(Y^\top L_w Y) = \tfrac12 \sum_{e} w_e \|y_{s(e)} - y_{r(e)}\|^2` over the
  directed edge list (both directions, hence the ½). Normalised: :math:`\mathrm{tr}(Y^\top(I - \hat A)Y)` with
  :math:`\hat A = D^{-1/2} A_w D^{-1/2}`. The undirected form assumes ``w`` is symmetric.
  """
  n = _check_yf(graph, w, y, f)
  _check_energy(lam, gamma)
  g = _col(gamma, n)
  anchor = 0.5 * jnp.sum(g * (y - f) ** 2)
  if normalized:
    _, ay = _degree_and_ay(graph, w, y, n, True)
    pair = jnp.sum(y * y) - jnp.sum(y * ay)
  else:
    w_ = jnp.ones(jnp.shape(graph.senders), y.dtype) if w is None else jnp.asarray(w, y.dtype)
    diff = y[graph.senders] - y[graph.receivers]
    pair = 0.5 * jnp.sum(w_ * jnp.sum(diff * diff, axis=-1))
  return anchor + 0.5 * lam * pair


def energy_grad(graph: jraph.GraphsTuple, w: jax.Array | None, y: jax.Array, f: jax.Array, *, lam: float,
                gamma: Any = 1.0, normalized: bool = False) -> jax.Array:
  r""":math:`G(Y) = \Gamma(Y - F) + \lambda (D_w Y - A_w Y)` (or :math:`\lambda(Y - \hat A Y)` normalised)."""
  n = _check_yf(graph, w, y, f)
  _check_energy(lam, gamma)
  diag, ay = _degree_and_ay(graph, w, y, n, normalized)
  return _col(gamma, n) * (y - f) + lam * (diag[:, None] * y - ay)


def lipschitz_bound(graph: jraph.GraphsTuple, w: jax.Array | None, gamma: Any, lam: float, *,
                    normalized: bool = False, num_nodes: int | None = None) -> jax.Array:
  r"""Upper bound on the Lipschitz constant of :math:`G`: :math:`\max_i\gamma_i + 2\lambda\max_i d_i`.

  (:math:`\max\gamma + 2\lambda` for the normalised Laplacian.) A gradient step with :math:`\alpha \le 2/L`
  decreases the quadratic energy monotonically.
  """
  _check_energy(lam, gamma)
  gmax = jnp.max(jnp.asarray(gamma))
  if normalized:
    return gmax + 2.0 * lam
  return gmax + 2.0 * lam * jnp.max(ops.degree(graph, w, num_nodes=num_nodes))


def gradient_step(graph: jraph.GraphsTuple, w: jax.Array | None, y: jax.Array, f: jax.Array, *, alpha: float,
                  lam: float, gamma: Any = 1.0, normalized: bool = False) -> jax.Array:
  r"""Plain gradient step :math:`Y - \alpha G(Y)` (spec B.3.1). APPNP is the normalised case with
  :math:`\alpha = 1/(1+\lambda)`."""
  _hyper("alpha", alpha)
  return y - alpha * energy_grad(graph, w, y, f, lam=lam, gamma=gamma, normalized=normalized)


def _preconditioner(graph, w, y, gamma, lam, normalized, n):
  diag, _ = _degree_and_ay(graph, w, y[:, :1], n, normalized)
  p = jnp.asarray(gamma) + lam * diag
  return jnp.where(p > 0, p, 1.0)


def jacobi_step(graph: jraph.GraphsTuple, w: jax.Array | None, y: jax.Array, f: jax.Array, *, alpha: float,
                lam: float, gamma: Any = 1.0, normalized: bool = False) -> jax.Array:
  r"""Preconditioned (Jacobi) step :math:`Y - \alpha P^{-1} G(Y)`, :math:`P = \Gamma + \lambda D_w` (B.3.2).

  With :math:`\alpha = 1`, :math:`\Gamma = I`: :math:`Y \leftarrow (I + \lambda D)^{-1}(F + \lambda A Y)`.
  Normalised energy: :math:`P = \Gamma + \lambda I`. Rows with :math:`P_i = 0` use :math:`P_i = 1`.
  """
  n = _check_yf(graph, w, y, f)
  _hyper("alpha", alpha)
  p = _preconditioner(graph, w, y, gamma, lam, normalized, n)
  g = energy_grad(graph, w, y, f, lam=lam, gamma=gamma, normalized=normalized)
  return y - alpha * g / p[:, None]


def soft_threshold(y: jax.Array, threshold: Any) -> jax.Array:
  r"""Proximal map of :math:`t\|\cdot\|_1`: :math:`\mathrm{sign}(y)\max(|y| - t, 0)`; ``threshold`` :math:`t \ge 0`."""
  _hyper("threshold", threshold)
  return jnp.sign(y) * jnp.maximum(jnp.abs(y) - threshold, 0.0)


def _apply_prox(y: jax.Array, prox: Prox, step: Any) -> jax.Array:
  if prox == "none":
    return y
  if prox == "relu":
    return jax.nn.relu(y)
  if prox == "box":
    return jnp.clip(y, 0.0, 1.0)
  if isinstance(prox, tuple) and len(prox) == 2 and prox[0] == "l1":
    return soft_threshold(y, prox[1] * step)
  raise ValueError(f"prox must be 'none', 'relu', 'box' or ('l1', mu), got {prox!r}")


def prox_gradient_step(graph: jraph.GraphsTuple, w: jax.Array | None, y: jax.Array, f: jax.Array, *,
                       alpha: float, lam: float, prox: Prox = "relu", gamma: Any = 1.0, normalized: bool = False,
                       precondition: bool = True) -> jax.Array:
  r"""Proximal gradient step :math:`\mathrm{prox}_{\alpha\eta}(Y - \alpha P^{-1} G(Y))` (B.3.3).

  Args:
    prox: the node penalty :math:`\eta`: ``"none"`` (η = 0, identity), ``"relu"`` (indicator of y ≥ 0),
      ``"box"`` (indicator of [0, 1], used by label propagation) or ``("l1", mu)`` (:math:`\mu\|y\|_1`,
      soft-threshold).
    precondition: use :math:`P = \Gamma + \lambda D_w` (default, spec) or :math:`P = I`. With the diagonal metric
      P the exact proximal map of :math:`\mu\|\cdot\|_1` thresholds row i at :math:`\mu\alpha/P_i`; with
      ``precondition=False`` every entry shrinks by exactly :math:`\mu\alpha`.
  """
  n = _check_yf(graph, w, y, f)
  _hyper("alpha", alpha)
  if isinstance(prox, tuple) and len(prox) == 2 and prox[0] == "l1":
    _hyper("prox[1] (the L1 weight mu)", prox[1])
  elif not isinstance(prox, str) or prox not in ("none", "relu", "box"):
    raise ValueError(f"prox must be 'none', 'relu', 'box' or ('l1', mu), got {prox!r}")
  g = energy_grad(graph, w, y, f, lam=lam, gamma=gamma, normalized=normalized)
  if precondition:
    p = _preconditioner(graph, w, y, gamma, lam, normalized, n)[:, None]
    return _apply_prox(y - alpha * g / p, prox, alpha / p)
  return _apply_prox(y - alpha * g, prox, alpha)


def _check_momentum(carry, alpha, beta):
  y, y_prev = carry
  if jnp.shape(y_prev) != jnp.shape(y):
    raise ValueError(f"carry must be (Y_k, Y_k-1) of one shape, got {jnp.shape(y)} and {jnp.shape(y_prev)}")
  _hyper("alpha", alpha)
  _hyper("beta", beta)
  return y, y_prev


def heavy_ball_step(graph: jraph.GraphsTuple, w: jax.Array | None, carry: tuple[jax.Array, jax.Array],
                    f: jax.Array, *, alpha: float, beta: float, lam: float, gamma: Any = 1.0,
                    normalized: bool = False) -> tuple[jax.Array, jax.Array]:
  r"""Polyak momentum :math:`Y_{k+1} = Y_k - \alpha G(Y_k) + \beta(Y_k - Y_{k-1})`; carry ``(Y_k, Y_{k-1})``."""
  y, y_prev = _check_momentum(carry, alpha, beta)
  y_next = y - alpha * energy_grad(graph, w, y, f, lam=lam, gamma=gamma, normalized=normalized) + beta * (y - y_prev)
  return y_next, y


def nesterov_step(graph: jraph.GraphsTuple, w: jax.Array | None, carry: tuple[jax.Array, jax.Array],
                  f: jax.Array, *, alpha: float, beta: float, lam: float, gamma: Any = 1.0,
                  normalized: bool = False) -> tuple[jax.Array, jax.Array]:
  r"""Nesterov: :math:`V = Y_k + \beta(Y_k - Y_{k-1})`, :math:`Y_{k+1} = V - \alpha G(V)`."""
  y, y_prev = _check_momentum(carry, alpha, beta)
  v = y + beta * (y - y_prev)
  return v - alpha * energy_grad(graph, w, v, f, lam=lam, gamma=gamma, normalized=normalized), y


def _check_irls(p, tau, T):
  if not isinstance(p, jax.core.Tracer) and not np.isfinite(p):
    raise ValueError(f"p must be finite, got {p!r}")
  _hyper("tau", tau)
  _hyper("T", T, allow_inf=True)


def irls_edge_weights(graph: jraph.GraphsTuple, y: jax.Array, w0: jax.Array | None = None, *, p: float,
                      tau: float, T: float = 0.0) -> tuple[jax.Array, jax.Array]:
  r"""IRLS re-weighting for the robust penalty :math:`\rho(z) = \tfrac2p z^{p/2}` (TWIRLS "attention", B.2/B.3.5).

  .. math::
    z_e = \max(\|y_s\|^2 + \|y_r\|^2 - 2\langle y_s, y_r\rangle, 0) + 10^{-7},\quad
    u_e = \max(\tau, z_e^{1-p/2}) \;(u_e = \infty \text{ if } T > 0,\ u_e > T),\quad
    w_e = w^0_e\,(1/u_e + 10^{-9})

  i.e. :math:`w_e = w^0_e\,\min(1/\tau, \rho'(z_e))`, the weight of the quadratic majoriser of
  :math:`\rho` at the current Y (majorise-minimise). ``p = 2`` gives constant weights ``w0 * (1/max(τ, 1))``.

  Returns:
    ``(w, d)``: new edge weights ``[E]`` and weighted in-degrees ``[N]``.
  """
  n = _check_yf(graph, w0, y, None, w_name="w0")
  _check_irls(p, tau, T)
  sq = jnp.sum(y * y, axis=-1)
  ys, yr = y[graph.senders], y[graph.receivers]
  z = jnp.maximum(sq[graph.senders] + sq[graph.receivers] - 2.0 * jnp.sum(ys * yr, axis=-1), 0.0) + 1e-7
  u = jnp.maximum(tau, z ** (1.0 - p / 2.0))
  if T > 0:
    u = jnp.where(u > T, jnp.inf, u)
  w = 1.0 / u + 1e-9
  if w0 is not None:
    w = w * jnp.asarray(w0, w.dtype)
  return w, jax.ops.segment_sum(w, graph.receivers, num_segments=n)


def robust_energy(graph: jraph.GraphsTuple, w0: jax.Array | None, y: jax.Array, f: jax.Array, *, lam: float,
                  p: float, tau: float = 0.0, gamma: Any = 1.0) -> jax.Array:
  r"""Unnormalised energy with the truncated robust penalty whose IRLS weight :func:`irls_edge_weights` computes.

  :math:`\rho'(z) = \min(1/\tau, z^{p/2-1})`: :math:`\rho(z) = z/\tau` for :math:`z \le z_0 = \tau^{2/(2-p)}`, then
  :math:`z_0/\tau + \tfrac2p(z^{p/2} - z_0^{p/2})` (:math:`\log(z/z_0)` for p = 0). ``tau=0`` gives the plain
  :math:`\tfrac2p z^{p/2}`. Concave and non-decreasing for p < 2, so an IRLS step is a majorise-minimise step;
  p = 2 is the quadratic :math:`\rho(z) = z\,\min(1/\tau, 1)` (``tau=0``: :math:`z`).

  Raises:
    ValueError: ``p`` not finite or above 2, ``tau`` negative or not finite, bad ``lam`` / ``gamma``.
  """
  n = _check_yf(graph, w0, y, f, w_name="w0")
  _check_irls(p, tau, 0.0)
  if p > 2:
    raise ValueError(f"p must be <= 2 (a concave robust penalty), got {p!r}")
  _check_energy(lam, gamma)
  w0 = jnp.ones(jnp.shape(graph.senders), y.dtype) if w0 is None else jnp.asarray(w0, y.dtype)
  diff = y[graph.senders] - y[graph.receivers]
  z = jnp.sum(diff * diff, axis=-1) + 1e-7

  def rho_plain(z):
    return jnp.log(z) if p == 0 else (2.0 / p) * z ** (p / 2.0)

  if p == 2:
    rho = z * (min(1.0 / tau, 1.0) if tau > 0 else 1.0)
  elif tau > 0:
    z0 = tau ** (2.0 / (2.0 - p))
    rho = jnp.where(z <= z0, z / tau, z0 / tau + rho_plain(jnp.maximum(z, z0)) - rho_plain(z0))
  else:
    rho = rho_plain(z)
  anchor = 0.5 * jnp.sum(_col(gamma, n) * (y - f) ** 2)
  return anchor + 0.5 * lam * 0.5 * jnp.sum(w0 * rho)


def unroll(step_fn: Callable[[Any], Any], carry0: Any, num_steps: int, *,
           record_energy: Callable[[Any], jax.Array] | None = None) -> tuple[Any, jax.Array | None]:
  """Applies ``step_fn`` ``num_steps`` times with ``lax.scan`` (a K-layer GNN with shared weights, B.3.6).

  Returns:
    ``(carry_K, trace)`` where ``trace[k] = record_energy(carry_{k+1})`` (``[num_steps]``) or ``None``.
  """
  num_steps = check_count("num_steps", num_steps)

  def body(carry, _):
    carry = step_fn(carry)
    return carry, (record_energy(carry) if record_energy is not None else None)

  carry, trace = jax.lax.scan(body, carry0, None, length=num_steps)
  return carry, trace


# ---------------------------------------------------------------------------------------------------------------
# TWIRLS-exact propagation (B.2).


def _twirls_step(graph, x, y, w, d, *, alpha, lam, precondition):
  if precondition:
    dt = lam * d + (1.0 - lam)  # D~ = lam diag(d) + (1 - lam) I
    inv_sqrt = jax.lax.rsqrt(dt)
    ay = ops.spmm(graph, w * inv_sqrt[graph.senders] * inv_sqrt[graph.receivers], y)
    return (1.0 - alpha) * y + alpha * lam * ay + alpha * x / dt[:, None]
  ay = ops.spmm(graph, ops.sym_norm_weights(graph, d, w), y)
  return (1.0 - alpha - alpha * lam) * y + alpha * lam * ay + alpha * x


def twirls_propagate(graph: jraph.GraphsTuple, x: jax.Array, *, num_steps: int, alpha: float, lam: float,
                     precondition: bool = True, attention: bool = False, p: float = 1.0, tau: float = 1.0,
                     T: float = 0.0, attn_before: bool = False, edge_weight: jax.Array | None = None
                     ) -> jax.Array:
  r"""TWIRLS propagation: ``num_steps`` descent steps on the normalised quadratic energy, Y_0 = X (spec B.2).

  With preconditioning (TWIRLS eq. (8)), :math:`\tilde D = \lambda D + (1-\lambda) I`:

  .. math:: Y_{k+1} = (1-\alpha) Y_k + \alpha\lambda \tilde D^{-1/2} A \tilde D^{-1/2} Y_k + \alpha \tilde D^{-1} X

  without (a gradient step of size α on :math:`\tfrac12\|Y-X\|^2 + \tfrac\lambda2\mathrm{tr}(Y^\top(I-\hat A)Y)`):

  .. math:: Y_{k+1} = (1-\alpha-\alpha\lambda) Y_k + \alpha\lambda D^{-1/2} A D^{-1/2} Y_k + \alpha X

  With ``attention`` (TWIRLS eq. (11), one IRLS re-weighting) the edge weights and degrees are recomputed by
  :func:`irls_edge_weights` from the current Y after step ``K // 2`` (1-based) and, if ``attn_before``, also from
  Y_0 before the first step; later steps use them.

  Args:
    graph: undirected edge list **including one self loop per node** (:func:`jaxgen.graph.ops.add_self_loops`);
      A and d = A·1 count the self loops.
    x: anchor / initial value ``[N, d]`` (the output of the MLP before propagation).
    num_steps: K (static).
    alpha: step size α; 0 means :math:`1/(1+\lambda)` (TWIRLS default ``alp=0``).
    lam: λ, weight of the graph term.
    precondition, attention, attn_before: static switches (see above).
    p, tau, T: IRLS exponent p, lower clip τ and truncation T (T = 0: off).
    edge_weight: optional base weights ``[E]`` (e.g. 0 on padding edges); default ones.

  Returns:
    :math:`Y_K` ``[N, d]``.

  Example (K steps approach the fixed point; a path 0-1-2 with a signal on node 0)::

    >>> import jax.numpy as jnp, jraph
    >>> from jaxgen.graph import ops
    >>> g = jraph.GraphsTuple(nodes=None, edges=None, senders=jnp.array([0, 1, 1, 2]),
    ...                       receivers=jnp.array([1, 0, 2, 1]), n_node=jnp.array([3]), n_edge=jnp.array([4]),
    ...                       globals=None)
    >>> x = jnp.array([[1.0], [0.0], [0.0]])
    >>> y = twirls_propagate(ops.add_self_loops(g), x, num_steps=64, alpha=0.0, lam=0.5)
    >>> bool(y[0, 0] > y[1, 0] > y[2, 0] > 0)   # smoothed along the path, decaying away from the source
    True
  """
  n = _check_yf(graph, None, x, None, name="x")
  ops.validate_weights(graph, edge_weight, "edge_weight")
  num_steps = check_count("num_steps", num_steps)
  _hyper("alpha", alpha)
  _hyper("lam", lam)
  _check_irls(p, tau, T)
  if isinstance(alpha, (int, float)) and alpha == 0:
    alpha = 1.0 / (1.0 + lam)
  w0 = jnp.ones(jnp.shape(graph.senders), x.dtype) if edge_weight is None else jnp.asarray(edge_weight, x.dtype)
  d0 = jax.ops.segment_sum(w0, graph.receivers, num_segments=n)

  def run(y, w, d, k):
    def body(y, _):
      return _twirls_step(graph, x, y, w, d, alpha=alpha, lam=lam, precondition=precondition), None
    return jax.lax.scan(body, y, None, length=k)[0]

  y, w, d = x, w0, d0
  if attention and attn_before:
    w, d = irls_edge_weights(graph, x, w0, p=p, tau=tau, T=T)
  if attention:
    first = num_steps // 2
    y = run(y, w, d, first)
    w, d = irls_edge_weights(graph, y, w0, p=p, tau=tau, T=T)
    return run(y, w, d, num_steps - first)
  return run(y, w, d, num_steps)


# ---------------------------------------------------------------------------------------------------------------
# Relation-aware (HALO-form) step (B.4).


def _check_relations(graph, relation, h, inverse, y):
  ops._check_features("y", y)  # noqa: SLF001
  n = ops.num_nodes_of(graph, y)
  ops.validate_graph(graph, n)
  if jnp.ndim(h) != 3 or jnp.shape(h)[1:] != (y.shape[1], y.shape[1]):
    raise ValueError(f"h must be [R, d, d] with d = {y.shape[1]}, got {jnp.shape(h)}")
  num_rel = jnp.shape(h)[0]
  if jnp.shape(relation) != jnp.shape(graph.senders):
    raise ValueError(f"relation must have one id per edge, shape {jnp.shape(graph.senders)}, got "
                     f"{jnp.shape(relation)}")
  if len(inverse) != num_rel or sorted(inverse) != list(range(num_rel)) or any(
      inverse[inverse[t]] != t for t in range(num_rel)):
    raise ValueError(f"inverse must be an involution of 0..{num_rel - 1}, got {tuple(inverse)}")
  if ops._concrete(relation) and jnp.size(relation):  # noqa: SLF001
    rel = np.asarray(relation)
    if not np.issubdtype(rel.dtype, np.integer):
      raise TypeError(f"relation must hold integer ids, got dtype {rel.dtype}")
    if rel.min() < 0 or rel.max() >= num_rel:
      raise ValueError(f"relation ids must lie in [0, {num_rel}), got [{rel.min()}, {rel.max()}]")
  return n, num_rel


def relation_energy(graph: jraph.GraphsTuple, relation: jax.Array, h: jax.Array, y: jax.Array, x: jax.Array, *,
                    lam: float, inverse: Sequence[int]) -> jax.Array:
  r"""HALO energy :math:`\sum_i\|y_i - x_i\|^2 + \lambda\sum_t\sum_{(i,j)\in E_t}\|y_i H_t - y_j\|^2`.

  The sum runs over every edge of the list (each relation and its inverse), as in the reference derivation.
  """
  _check_relations(graph, relation, h, inverse, y)
  if jnp.shape(x) != jnp.shape(y):
    raise ValueError(f"x must have the shape of y {jnp.shape(y)}, got {jnp.shape(x)}")
  _hyper("lam", lam)
  hs = jnp.einsum("ed,edf->ef", y[graph.senders], h[relation])  # fine for tests (E x d x d gather)
  diff = hs - y[graph.receivers]
  return jnp.sum((y - x) ** 2) + lam * jnp.sum(diff * diff)


def relation_step(graph: jraph.GraphsTuple, relation: jax.Array, h: jax.Array, y: jax.Array, x: jax.Array, *,
                  alpha: float, lam: float, inverse: Sequence[int], halo_compat: bool = True,
                  nonnegative: bool = True) -> jax.Array:
  r"""One relation-aware descent step (HALO's ``Propagate``, spec B.4).

  Nodes of all types share one index space; edge e goes ``senders[e] -> receivers[e]`` with relation id
  ``relation[e]``; ``h[t]`` is :math:`H_t` (``[R, d, d]``); ``inverse[t]`` is :math:`t^{-1}` (the edge list must
  contain every relation together with its reversed copy). With :math:`D_t` the relation-t out-degree,
  :math:`\mathrm{deg} = \sum_t D_t` and

  .. math:: M = X + \sum_t \mathrm{msg}_t - \sum_t D_t Y H_t H_t^\top,\qquad
            \mathrm{msg}_t: \; y_i (H_t + H_{t^{-1}}^\top) \text{ delivered to } j \text{ for every } i \to j,

  the step is :math:`Y \leftarrow \mathrm{relu}((1-\alpha)Y + \alpha\lambda(1+\lambda\,\mathrm{deg})^{-1} M)`
  (``halo_compat=True``, the reference code: λ also multiplies the anchor X) or the energy-consistent
  :math:`(1-\alpha)Y + \alpha(1+\lambda\,\mathrm{deg})^{-1}(X + \lambda(M - X))`, i.e.
  :math:`Y - \alpha P^{-1}\tfrac12\nabla E(Y)` with :math:`P = 1 + \lambda\,\mathrm{deg}`
  (:func:`relation_energy`). Implementation: one ``[R, N, d]`` product ``Y (H_t + H_{t^{-1}}^\top)`` for all t,
  gathered per edge by (relation, sender), then one ``segment_sum``.

  Args:
    nonnegative: apply the relu (prox of the indicator of y ≥ 0), as HALO.
  """
  n, num_rel = _check_relations(graph, relation, h, inverse, y)
  if jnp.shape(x) != jnp.shape(y):
    raise ValueError(f"x must have the shape of y {jnp.shape(y)}, got {jnp.shape(x)}")
  _hyper("alpha", alpha)
  _hyper("lam", lam)
  inv = jnp.asarray(tuple(inverse))
  h_msg = h + jnp.swapaxes(h[inv], -1, -2)  # [R, d, d]
  yh = jnp.einsum("nd,rdf->rnf", y, h_msg)  # [R, N, d]
  msg = jax.ops.segment_sum(yh[relation, graph.senders], graph.receivers, num_segments=n)
  outdeg = jax.ops.segment_sum(jnp.ones(jnp.shape(relation), y.dtype), relation * n + graph.senders,
                               num_segments=num_rel * n).reshape(num_rel, n)  # [R, N]
  hht = jnp.einsum("rde,rfe->rdf", h, h)
  self_term = jnp.einsum("rn,nd,rdf->nf", outdeg, y, hht)
  deg = jnp.sum(outdeg, axis=0)
  m = x + msg - self_term
  inv_p = (1.0 / (1.0 + lam * deg))[:, None]
  if halo_compat:
    y_new = (1.0 - alpha) * y + alpha * lam * inv_p * m
  else:
    y_new = (1.0 - alpha) * y + alpha * inv_p * (x + lam * (m - x))
  return jax.nn.relu(y_new) if nonnegative else y_new


# ---------------------------------------------------------------------------------------------------------------
# The bilevel model (B.7).


# PyTorch's ``nn.init.xavier_normal_`` (TWIRLS initialises every linear layer with it): untruncated normal.
XAVIER_NORMAL = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")


class InputDense(nn.Module):
  """Dense layer that also accepts :class:`jaxgen.graph.ops.SparseFeatures` (gather + segment_sum)."""

  features: int
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[1]
    kernel = self.param("kernel", self.kernel_init, (fan_in, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    out = x.matmul(kernel) if isinstance(x, ops.SparseFeatures) else x @ kernel
    return out + bias[None, :]


def sparse_dropout(x: Any, rate: float, key: jax.Array | None, deterministic: bool) -> Any:
  """Dropout on a dense array or on the stored values of :class:`~jaxgen.graph.ops.SparseFeatures`.

  Dropping zeros is a no-op, so this has the distribution of dense dropout on the dense matrix.
  """
  if deterministic or rate == 0.0:
    return x
  if rate >= 1.0:
    raise ValueError(f"dropout rate must be < 1, got {rate}")
  values = x.values if isinstance(x, ops.SparseFeatures) else x
  keep = jax.random.bernoulli(key, 1.0 - rate, values.shape)
  values = jnp.where(keep, values / (1.0 - rate), 0.0)
  return x._replace(values=values) if isinstance(x, ops.SparseFeatures) else values


class BloomModel(nn.Module):
  r"""Bilevel BloomGML-style model: ``MLP_before -> K TWIRLS descent steps -> MLP_after`` (spec B.1, B.7).

  The lower level is :func:`twirls_propagate` started at :math:`Y_0 = F = f_W(X)` (the MLP before);
  gradients flow through the ``lax.scan`` unroll. ``learn_lam`` makes λ a parameter (through softplus,
  initialised at ``lam``).

  Attributes:
    before: widths of the MLP before propagation (last = width of Y); ``(C,)`` is TWIRLS's single linear layer.
    after: widths of the MLP after propagation (``()`` = none).
    num_steps, alpha, lam, precondition, attention, p, tau, T, attn_before: see :func:`twirls_propagate`.
    input_dropout: dropout on the input features (TWIRLS's separate input dropout).
    dropout: dropout after every hidden activation.
    learn_lam: learn λ (softplus-parametrised).
    kernel_init: initialiser of every weight matrix; the default is TWIRLS's ``xavier_normal_`` (untruncated
      normal, variance ``2 / (fan_in + fan_out)``), biases start at zero as there.
  """

  before: Sequence[int]
  after: Sequence[int] = ()
  num_steps: int = 8
  alpha: float = 1.0
  lam: float = 1.0
  precondition: bool = True
  attention: bool = False
  p: float = 1.0
  tau: float = 1.0
  T: float = 0.0
  attn_before: bool = False
  input_dropout: float = 0.0
  dropout: float = 0.0
  learn_lam: bool = False
  kernel_init: Callable = XAVIER_NORMAL

  @nn.compact
  def __call__(self, x: Any, graph: jraph.GraphsTuple, *, deterministic: bool = True,
               edge_weight: jax.Array | None = None, lam: jax.Array | None = None) -> jax.Array:
    """``x``: dense ``[N, F]`` or :class:`SparseFeatures`; ``graph`` with self loops; ``lam`` overrides λ."""
    key = None if deterministic or self.input_dropout == 0 else self.make_rng("dropout")
    h = sparse_dropout(x, self.input_dropout, key, deterministic)
    widths = list(self.before)
    for i, width in enumerate(widths):
      h = (InputDense(width, kernel_init=self.kernel_init, name=f"before_{i}")(h) if i == 0 else
           nn.Dense(width, kernel_init=self.kernel_init, name=f"before_{i}")(h))
      if i < len(widths) - 1:
        h = nn.relu(h)
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic or self.dropout == 0)
    if lam is None:
      lam = self.lam
      if self.learn_lam:
        raw = self.param("lam_raw", lambda _: jnp.log(jnp.expm1(jnp.asarray(self.lam, jnp.float32))))
        lam = jax.nn.softplus(raw)
    h = twirls_propagate(graph, h, num_steps=self.num_steps, alpha=self.alpha, lam=lam,
                         precondition=self.precondition, attention=self.attention, p=self.p, tau=self.tau,
                         T=self.T, attn_before=self.attn_before, edge_weight=edge_weight)
    for i, width in enumerate(self.after):
      h = nn.Dense(width, kernel_init=self.kernel_init, name=f"after_{i}")(h)
      if i < len(self.after) - 1:
        h = nn.relu(h)
    return h


# ---------------------------------------------------------------------------------------------------------------
# Approximation-error oracle: message functions vs energies (B.6).


def energy_induced_messages(pi: Callable[[jax.Array, jax.Array], jax.Array], y: jax.Array,
                            graph: jraph.GraphsTuple) -> jax.Array:
  r"""Per-node descent direction of the edge energy :math:`E(Y) = \sum_e \pi(y_{r(e)}, y_{s(e)})` (spec B.6).

  Returns :math:`-\partial E/\partial y_i` ``[N, d]`` by autodiff: node i collects
  :math:`-\partial\pi/\partial(\text{first argument})` from edges it receives and
  :math:`-\partial\pi/\partial(\text{second argument})` from edges it sends, i.e. the sum over its incident edges.
  These are the only "messages" a descent step on an energy can produce; a message function whose aggregate is not
  of this form has a nonzero :func:`residual_to_message_fn` (where BloomGML locates the approximation error).
  Example: :math:`\pi(a, b) = -a^\top S b` on a symmetric edge list gives :math:`(S + S^\top)\sum_{j\in N(i)} y_j`.
  """
  ops._check_features("y", y)  # noqa: SLF001
  n = ops.num_nodes_of(graph, y)
  ops.validate_graph(graph, n)

  def total(yy):
    return jnp.sum(jax.vmap(pi)(yy[graph.receivers], yy[graph.senders]))

  return -jax.grad(total)(y)


def residual_to_message_fn(m: Callable[[jax.Array, jax.Array], jax.Array], y: jax.Array,
                           graph: jraph.GraphsTuple, pi: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  r"""(aggregated messages :math:`\sum_{e: r(e)=i} m(y_{r(e)}, y_{s(e)})`) − (energy-induced messages of ``pi``).

  For a linear message :math:`m(y_i, y_j) = W y_j` the best bilinear energy is :func:`linear_message_energy`
  (:math:`S = W/2`) and the residual is :math:`\tfrac{W - W^\top}{2}\sum_{j\in N(i)} y_j`: zero iff W is symmetric.
  """
  ops._check_features("y", y)  # noqa: SLF001
  n = ops.num_nodes_of(graph, y)
  ops.validate_graph(graph, n)
  msgs = jax.vmap(m)(y[graph.receivers], y[graph.senders])
  return jax.ops.segment_sum(msgs, graph.receivers, num_segments=n) - energy_induced_messages(pi, y, graph)


def linear_message_energy(w: jax.Array) -> Callable[[jax.Array, jax.Array], jax.Array]:
  r"""The bilinear edge energy :math:`\pi(a, b) = -a^\top S b`, :math:`S = W/2`, closest to the message
  :math:`m = W y_j` (its induced messages use the symmetric part :math:`(W + W^\top)/2`)."""
  s = 0.5 * jnp.asarray(w)
  return lambda a, b: -a @ s @ b
