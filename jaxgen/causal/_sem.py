r"""Linear structural equation models: random DAGs, samplers, thresholding to a DAG and SHD-style metrics.

Conventions (shared with :mod:`jaxgen.causal.colide`): ``W[i, j] != 0`` means the edge ``i -> j``; data are
``[n, d]`` with rows = samples; the linear SEM is ``X = X W + Z`` (Saboksayr et al. 2024, Eq. (1)), i.e.
``X = Z (I - W)^{-1}`` for a DAG ``W``.

The generators follow the CoLiDE reference code (``utils.simulate_sem``, github.com/SAMiatto/colide):

* Erdos-Renyi (``"er"``): each of the ``d (d - 1) / 2`` node pairs is an edge with probability
  ``2 e / (d^2 - d)`` (``e`` = expected edges), oriented by a uniformly random topological order.
* Scale-free (``"sf"``): Barabasi-Albert preferential attachment with ``m = round(e / d)`` edges per new node
  (seed graph: a star on nodes ``0..m``), each edge oriented from the later node to the earlier one.
* Edge weights ``+-U(w_min, w_max)`` with a uniformly random sign (paper default ``U([-2, -0.5] u [0.5, 2])``).
* Noise: ``"gaussian"`` (std ``sqrt(var)``), ``"exponential"`` (scale ``sqrt(var)``, not centred, as upstream),
  ``"laplace"`` (scale ``sqrt(var / 2)``), ``"gumbel"`` (scale ``sqrt(6 var) / pi``); one variance for all nodes
  (equal variance, EV) or one per node (non-equal variance, NV; the paper draws ``var_j ~ U(0.5, 10)``).

:func:`threshold_to_dag` and :func:`graph_metrics` are host-side NumPy (they are called once per fit) and
reproduce upstream ``to_dag`` and ``count_accuracy`` exactly (checked against the fixtures).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.core.validate import check_count

GRAPH_KINDS = ("er", "sf")
NOISE_KINDS = ("gaussian", "exponential", "laplace", "gumbel")


def _check_choice(argument: str, value: str, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f"{argument} must be one of {allowed}, got {value!r}")



def _check_real(argument: str, value, *, lo: float = -math.inf, lo_open: bool = False) -> float:
  """A finite real number ``>= lo`` (``> lo`` if ``lo_open``)."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise TypeError(f"{argument} must be a real number, got {value!r}") from None
  if isinstance(value, (bool, np.bool_)) or not math.isfinite(v) or v < lo or (lo_open and v == lo):
    raise ValueError(f"{argument} must be finite and {'>' if lo_open else '>='} {lo}, got {value!r}")
  return v


def _check_square(argument: str, A: np.ndarray) -> None:
  if A.ndim != 2 or A.shape[0] != A.shape[1]:
    raise ValueError(f"{argument} must be a square [d, d] matrix, got shape {A.shape}")


def random_dag(key: jax.Array, d: int, expected_edges: float, kind: str = "er", *,
               w_range: tuple[float, float] = (0.5, 2.0)) -> jax.Array:
  """A random weighted DAG ``W`` (``[d, d]``, ``W[i, j] != 0`` iff edge ``i -> j``).

  Args:
    key: PRNG key.
    d: number of nodes (>= 2).
    expected_edges: ``e``; ER keeps each pair with probability ``2 e / (d^2 - d)``, SF attaches each new node
      with ``m = round(e / d)`` edges (so "ER4" / "SF4" means ``e = 4 d``).
    kind: ``"er"`` or ``"sf"``.
    w_range: ``(w_min, w_max)``; weights are ``+-U(w_min, w_max)`` with a random sign (paper: ``(0.5, 2)``; the
      paper's heteroscedastic benchmark reportedly uses ``(0.25, 1)``).

  Returns:
    float ``[d, d]`` weighted adjacency of a DAG (default float dtype).
  """
  _check_choice("kind", kind, GRAPH_KINDS)
  d = check_count("d", d, 2)
  expected_edges = _check_real("expected_edges", expected_edges, lo=0.0, lo_open=True)
  if np.shape(w_range) != (2,):
    raise ValueError(f"w_range must be a pair (w_min, w_max), got {w_range!r}")
  w_min, w_max = (_check_real("w_range", w, lo=0.0) for w in w_range)
  if not w_min <= w_max:
    raise ValueError(f"w_range must satisfy 0 <= w_min <= w_max, got {w_range!r}")
  k_graph, k_perm, k_sign, k_mag = jax.random.split(key, 4)
  if kind == "er":
    prob = min(1.0, 2.0 * float(expected_edges) / (d * d - d))
    upper = jnp.triu(jax.random.bernoulli(k_graph, prob, (d, d)), k=1)
    perm = jax.random.permutation(k_perm, d)
    pmat = jnp.eye(d)[:, perm]
    binary = (pmat @ upper.astype(pmat.dtype) @ pmat.T) > 0.5
  else:
    m = int(round(float(expected_edges) / d))
    if not 1 <= m < d:
      raise ValueError(f"SF graphs need 1 <= round(expected_edges / d) < d, got m = {m} (d = {d})")
    binary = _barabasi_albert(k_graph, d, m)
  sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (d, d)), 1.0, -1.0)
  magnitude = jax.random.uniform(k_mag, (d, d), minval=w_min, maxval=w_max)
  return jnp.where(binary, sign * magnitude, 0.0)


def _barabasi_albert(key: jax.Array, d: int, m: int) -> jax.Array:
  """Boolean ``[d, d]`` with ``B[i, j]`` for the BA edge between later node ``i`` and earlier node ``j``."""
  adj = jnp.zeros((d, d), bool).at[1:m + 1, 0].set(True)          # star seed: nodes 1..m -> 0

  def add_node(t, adj):
    sym = adj | adj.T
    degree = jnp.sum(sym, axis=1).astype(jnp.float32)
    weights = jnp.where(jnp.arange(d) < t, degree, 0.0)
    targets = jax.random.choice(jax.random.fold_in(key, t), d, (m,), replace=False, p=weights / weights.sum())
    return adj.at[t, targets].set(True)

  return jax.lax.fori_loop(m + 1, d, add_node, adj)


def nv_noise_variances(key: jax.Array, d: int, low: float = 0.5, high: float = 10.0) -> jax.Array:
  """Per-node noise variances ``U(low, high)`` of the non-equal-variance setting (paper: ``U(0.5, 10)``)."""
  d = check_count("d", d, 1)
  low, high = _check_real("low", low, lo=0.0), _check_real("high", high, lo=0.0)
  if low > high:
    raise ValueError(f"low must be <= high, got low={low!r}, high={high!r}")
  return jax.random.uniform(key, (d,), minval=low, maxval=high)


def sample_linear_sem(key: jax.Array, W: jax.Array, n: int, noise: str = "gaussian",
                      noise_var: float | jax.Array = 1.0) -> jax.Array:
  r"""``n`` samples of the linear SEM ``X = X W + Z`` for a DAG ``W``.

  Solved by the fixed-point iteration ``X <- Z + X W`` run ``d`` times, which is exact for a DAG (``W`` is
  nilpotent, ``W^d = 0``) and touches each node after its parents like the reference's topological loop.

  Args:
    key: PRNG key.
    W: ``[d, d]`` weighted DAG.
    n: number of samples.
    noise: ``"gaussian"``, ``"exponential"``, ``"laplace"`` or ``"gumbel"`` (see the module docstring).
    noise_var: noise variance: a scalar (equal variance) or ``[d]`` (non-equal variances), finite and ``>= 0``.

  Returns:
    ``[n, d]`` samples (not centred).

  Raises:
    ValueError: bad ``noise`` / ``n``; ``W`` not square, or (when concrete) not finite or not a DAG (the
      fixed-point iteration solves the SEM only for a DAG); ``noise_var`` of another shape than ``()`` / ``[d]`` or
      (when concrete) negative or not finite.
  """
  _check_choice("noise", noise, NOISE_KINDS)
  W = jnp.asarray(W)
  if W.ndim != 2 or W.shape[0] != W.shape[1]:
    raise ValueError(f"W must be a square [d, d] matrix, got shape {W.shape}")
  n = check_count("n", n, 1)
  d = W.shape[0]
  if jnp.shape(noise_var) not in ((), (d,)):
    raise ValueError(f"noise_var must be a scalar or have shape ({d},), got shape {jnp.shape(noise_var)}")
  if not isinstance(noise_var, jax.core.Tracer):
    nv = np.asarray(noise_var)
    if not np.all(np.isfinite(nv)) or np.any(nv < 0):
      raise ValueError(f"noise_var must be finite and >= 0, got {noise_var!r}")
  if not isinstance(W, jax.core.Tracer):
    W_np = np.asarray(W)
    if not np.all(np.isfinite(W_np)):
      raise ValueError("W must be finite (it contains NaN or inf)")
    if not is_dag(W_np):
      raise ValueError("W must be a DAG (its support has a directed cycle); the linear SEM X = X W + Z is solved "
                       "by d fixed-point steps only for a nilpotent W")
  var = jnp.broadcast_to(jnp.asarray(noise_var, W.dtype), (d,))
  if noise == "gaussian":
    Z = jnp.sqrt(var)[None, :] * jax.random.normal(key, (n, d), W.dtype)
  elif noise == "exponential":
    Z = jnp.sqrt(var)[None, :] * jax.random.exponential(key, (n, d), W.dtype)
  elif noise == "laplace":
    Z = jnp.sqrt(var / 2.0)[None, :] * jax.random.laplace(key, (n, d), W.dtype)
  else:
    Z = (jnp.sqrt(6.0 * var) / math.pi)[None, :] * jax.random.gumbel(key, (n, d), W.dtype)
  return jax.lax.fori_loop(0, d, lambda _, X: Z + X @ W, Z)


def is_dag(W: np.ndarray) -> bool:
  """Whether the support of ``W`` (``W[i, j] != 0`` = edge ``i -> j``) has no directed cycle (Kahn's algorithm)."""
  W = np.asarray(W)
  _check_square("W", W)
  adj = W != 0
  indegree = adj.sum(axis=0)
  stack = [int(i) for i in np.flatnonzero(indegree == 0)]
  seen = 0
  while stack:
    i = stack.pop()
    seen += 1
    for j in np.flatnonzero(adj[i]):
      indegree[j] -= 1
      if indegree[j] == 0:
        stack.append(int(j))
  return seen == adj.shape[0]


def threshold_to_dag(W: np.ndarray, thr: float = 0.3) -> np.ndarray:
  """Zero every ``|w| <= thr``; then delete the weakest remaining edges one by one until the graph is a DAG.

  Host-side NumPy, identical to the reference ``to_dag``: edges are removed in order of increasing ``|w|``
  (ties in row-major order) and the acyclicity test runs before every removal.

  Args:
    W: ``[d, d]`` weighted adjacency.
    thr: threshold (paper: 0.3).

  Returns:
    float64 ``[d, d]`` acyclic matrix whose support is a subset of ``{|W| > thr}`` (kept entries unchanged).
  """
  A = np.array(W, dtype=np.float64, copy=True)
  if A.ndim != 2 or A.shape[0] != A.shape[1]:
    raise ValueError(f"W must be a square [d, d] matrix, got shape {A.shape}")
  if not np.all(np.isfinite(A)):
    raise ValueError("W must be finite (it contains NaN or inf)")
  thr = _check_real("thr", thr, lo=0.0)
  A[np.abs(A) <= thr] = 0.0
  if is_dag(A):
    return A
  rows, cols = np.nonzero(A)                                       # row-major, like np.where
  order = np.argsort(np.abs(A[rows, cols]), kind="stable")
  for k in order:
    if is_dag(A):
      break
    A[rows[k], cols[k]] = 0.0
  return A


def graph_metrics(B_true: np.ndarray, B_est: np.ndarray) -> dict[str, float]:
  """Structure-recovery metrics of an estimated DAG (reference ``count_accuracy``, from NOTEARS).

  Edges are the nonzero entries (``B[i, j] != 0`` = ``i -> j``).

  * TPR = correctly oriented true edges / true edges;
  * FDR = (reversed + spurious) / predicted edges;
  * FPR = (reversed + spurious) / (d (d - 1) / 2 - true edges);
  * SHD = extra + missing edges of the skeleton + reversed edges (a reversed edge counts once);
  * nnz = number of predicted edges.

  Returns:
    ``{"fdr", "tpr", "fpr", "shd", "nnz"}`` (``shd`` and ``nnz`` are ints).
  """
  for name, B in (("B_true", B_true), ("B_est", B_est)):
    B = np.asarray(B)
    if not (np.issubdtype(B.dtype, np.number) or B.dtype == bool) or not np.all(np.isfinite(B)):
      raise ValueError(f"{name} must be a finite numeric matrix (edges = nonzero entries)")
  true = np.asarray(B_true) != 0
  est = np.asarray(B_est) != 0
  if true.ndim != 2 or true.shape != est.shape or true.shape[0] != true.shape[1]:
    raise ValueError(f"B_true and B_est must be square matrices of one shape, got {true.shape} and {est.shape}")
  d = true.shape[0]
  true_skeleton = true | true.T
  true_pos = est & true
  false_pos = est & ~true_skeleton
  reverse = est & ~true & true.T
  pred_size = int(est.sum())
  cond_size = int(true.sum())
  cond_neg_size = 0.5 * d * (d - 1) - cond_size
  fdr = float(reverse.sum() + false_pos.sum()) / max(pred_size, 1)
  tpr = float(true_pos.sum()) / max(cond_size, 1)
  fpr = float(reverse.sum() + false_pos.sum()) / max(cond_neg_size, 1)
  lower = np.tril(np.ones((d, d), bool))
  pred_lower = (est | est.T) & lower
  cond_lower = true_skeleton & lower
  extra = pred_lower & ~cond_lower
  missing = cond_lower & ~pred_lower
  shd = int(extra.sum() + missing.sum() + reverse.sum())
  return {"fdr": fdr, "tpr": tpr, "fpr": fpr, "shd": shd, "nnz": pred_size}
