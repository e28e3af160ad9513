r"""Message passing on ``jax.ops.segment_sum`` over a ``jraph.GraphsTuple`` (spec graph.md §A).

Conventions: messages flow ``senders[e] -> receivers[e]``; an undirected edge appears twice (once per direction).
Edge weights are a separate array ``w`` of shape ``[E]`` (``None`` means all ones), never read from
``graph.edges``. Aggregation sums over ``receivers`` with ``num_segments = N`` given statically, so every function
here is jittable as long as the node count is static: it is taken from ``graph.nodes`` (or from the ``y`` argument
of the function), or from ``graph.n_node`` when that is a concrete (host) array.

  * :func:`degree`: :math:`d_i = \sum_{e:\,\mathrm{recv}(e)=i} w_e`.
  * :func:`spmm`: :math:`\mathrm{out}_i = \sum_{e:\,\mathrm{recv}(e)=i} w_e\, Y_{\mathrm{send}(e)}`, i.e.
    :math:`A Y` with :math:`A[\mathrm{recv}, \mathrm{send}] = w` (:func:`dense_adjacency`).
  * :func:`sym_norm_weights`: :math:`w_e / \sqrt{d_{\mathrm{send}(e)} d_{\mathrm{recv}(e)}}` (0 where a degree is 0),
    the edge weights of :math:`D^{-1/2} A D^{-1/2}`.

Batched graphs (``jraph.batch``) need nothing special: node ids are global, so a batch is one big disconnected
graph and every function gives per-graph results. For ``jit`` with varying graphs pad to static budgets with
:func:`pad_graph` and give padding edges weight 0 (:func:`edge_mask`).

Host-side helpers (NumPy, not jittable, change the edge count): :func:`remove_self_loops`, :func:`to_undirected`,
:func:`validate_graph`. Bad input (endpoints out of range, node counts that disagree, non-finite weights, bad
hyper-parameters) raises ``ValueError`` naming the argument whenever the arrays are concrete. Non-finite node
*features* are data, not settings: they propagate (NaN in, NaN out) and are never masked.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jaxgen.core.validate import check_count

__all__ = [
    "SparseFeatures",
    "add_self_loops",
    "degree",
    "dense_adjacency",
    "edge_mask",
    "num_nodes_of",
    "pad_graph",
    "remove_self_loops",
    "spmm",
    "sym_norm_weights",
    "to_undirected",
    "validate_graph",
    "validate_weights",
]


def _concrete(x: Any) -> bool:
  return x is not None and not isinstance(x, jax.core.Tracer)


def _check_hyper(name: str, value: Any, *, positive: bool = False, allow_inf: bool = False,
                 upper: float | None = None) -> None:
  """A real hyper-parameter (scalar or array) that is finite and ``>= 0`` (``> 0`` if ``positive``; ``<= upper``).

  Checked only when concrete (a traced value, e.g. a learned ``lam``, is the caller's responsibility).

  Raises:
    TypeError: not a real number. ValueError: NaN, infinite (unless ``allow_inf``) or out of range.
  """
  if value is None or isinstance(value, jax.core.Tracer):
    return
  arr = np.asarray(value)
  if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
    raise TypeError(f"{name} must be a real number, got {value!r}")
  if np.any(np.isnan(arr)) or (not allow_inf and not np.all(np.isfinite(arr))):
    raise ValueError(f"{name} must be finite, got {value!r}")
  if np.any(arr < 0) or (positive and np.any(arr == 0)):
    raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
  if upper is not None and np.any(arr > upper):
    raise ValueError(f"{name} must be <= {upper}, got {value!r}")



def _check_features(name: str, y: Any) -> None:
  if jnp.ndim(y) != 2:
    raise ValueError(f"{name} must be [N, d] node features, got shape {jnp.shape(y)}")


def num_nodes_of(graph: jraph.GraphsTuple, y: jax.Array | None = None, *, name: str = "y") -> int:
  """The static node count N: rows of ``y`` if given, else rows of ``graph.nodes``, else ``sum(graph.n_node)``.

  ``name`` is the caller's name for ``y`` (used in error messages).

  Raises:
    ValueError: ``y`` / ``graph.nodes`` / ``graph.n_node`` disagree (when concrete), or N cannot be known
      statically (no ``y``, no ``nodes`` and a traced ``n_node``).
  """
  candidates = []
  if y is not None:
    if jnp.ndim(y) < 1:
      raise ValueError(f"{name} must have a leading node axis, got shape {jnp.shape(y)}")
    candidates.append((name, int(jnp.shape(y)[0])))
  nodes = jax.tree.leaves(graph.nodes)
  if nodes:
    candidates.append(("graph.nodes", int(jnp.shape(nodes[0])[0])))
  if _concrete(graph.n_node):
    candidates.append(("graph.n_node", int(np.sum(np.asarray(graph.n_node)))))
  if not candidates:
    raise ValueError("cannot infer the number of nodes: pass node features (y or graph.nodes) or a concrete "
                     "graph.n_node")
  name0, n0 = candidates[0]
  for name, n in candidates[1:]:
    if n != n0:
      raise ValueError(f"mismatched node counts: {name0} has {n0} nodes but {name} has {n}")
  return n0


def validate_graph(graph: jraph.GraphsTuple, num_nodes: int | None = None) -> None:
  """Checks the edge list (host-side; skipped for traced arrays).

  Raises:
    ValueError: ``senders``/``receivers`` of different shapes or not 1-D, endpoints outside ``[0, N)``,
      ``sum(n_edge)`` different from the number of edges, or node counts that disagree.
  """
  n = num_nodes_of(graph) if num_nodes is None else int(num_nodes)
  if _concrete(graph.n_node) and int(np.sum(np.asarray(graph.n_node))) != n:
    raise ValueError(f"mismatched node counts: graph.n_node sums to {int(np.sum(np.asarray(graph.n_node)))} "
                     f"but the features have {n} rows")
  s, r = graph.senders, graph.receivers
  if jnp.ndim(s) != 1 or jnp.shape(s) != jnp.shape(r):
    raise ValueError(f"graph.senders and graph.receivers must be 1-D of equal length, got shapes {jnp.shape(s)} "
                     f"and {jnp.shape(r)}")
  if _concrete(graph.n_edge) and int(np.sum(np.asarray(graph.n_edge))) != jnp.shape(s)[0]:
    raise ValueError(f"graph.n_edge sums to {int(np.sum(np.asarray(graph.n_edge)))} but there are "
                     f"{jnp.shape(s)[0]} edges")
  for name, idx in (("graph.senders", s), ("graph.receivers", r)):
    if _concrete(idx) and np.size(idx):
      idx = np.asarray(idx)
      if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got {idx.dtype}")
      lo, hi = int(idx.min()), int(idx.max())
      if lo < 0 or hi >= n:
        raise ValueError(f"{name} out of range: endpoints must lie in [0, {n}), got [{lo}, {hi}]")


def validate_weights(graph: jraph.GraphsTuple, w: jax.Array | None, name: str = "w") -> None:
  """Checks an edge-weight vector: shape ``[E]`` and finite values (when concrete).

  Raises:
    ValueError: wrong shape or a non-finite weight.
  """
  if w is None:
    return
  num_edges = jnp.shape(graph.senders)[0]
  if jnp.shape(w) != (num_edges,):
    raise ValueError(f"{name} must have shape ({num_edges},) (one weight per edge), got {jnp.shape(w)}")
  if _concrete(w) and not np.all(np.isfinite(np.asarray(w))):
    raise ValueError(f"{name} has non-finite edge weights")


def _weights(graph: jraph.GraphsTuple, w: jax.Array | None, dtype: Any = jnp.float32) -> jax.Array:
  validate_weights(graph, w)
  if w is None:
    return jnp.ones(jnp.shape(graph.senders), dtype)
  return jnp.asarray(w)


def add_self_loops(graph: jraph.GraphsTuple, num_nodes: int | None = None) -> jraph.GraphsTuple:
  """Appends one edge ``i -> i`` per node at the end of the edge list (jittable; ``n_edge += n_node``).

  With batched graphs the loops of all graphs come after all original edges, so ``jraph.unbatch`` no longer
  applies to the result (message passing does not care).
  """
  n = num_nodes_of(graph) if num_nodes is None else int(num_nodes)
  validate_graph(graph, n)
  xp = np if _concrete(graph.senders) else jnp
  loops = xp.arange(n, dtype=graph.senders.dtype)
  return graph._replace(
      senders=xp.concatenate([graph.senders, loops]),
      receivers=xp.concatenate([graph.receivers, loops.astype(graph.receivers.dtype)]),
      n_edge=graph.n_edge + graph.n_node,
      edges=None,
  )


def _per_graph_edge_counts(graph: jraph.GraphsTuple, keep: np.ndarray) -> np.ndarray:
  graph_of_edge = np.repeat(np.arange(len(np.atleast_1d(graph.n_edge))), np.atleast_1d(graph.n_edge))
  return np.bincount(graph_of_edge[keep], minlength=len(np.atleast_1d(graph.n_edge))).astype(np.int32)


def remove_self_loops(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
  """Drops every edge ``i -> i`` (host-side NumPy; the edge count changes)."""
  validate_graph(graph)
  s, r = np.asarray(graph.senders), np.asarray(graph.receivers)
  keep = s != r
  return graph._replace(senders=s[keep], receivers=r[keep], edges=None,
                        n_edge=_per_graph_edge_counts(graph, keep))


def to_undirected(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
  """Adds the reverse of every edge and removes duplicates, sorted by (sender, receiver) (host-side NumPy).

  Only for a single graph (``len(n_node) == 1``); self loops are kept (once).
  """
  n = num_nodes_of(graph)
  validate_graph(graph, n)
  if np.size(graph.n_node) != 1:
    raise ValueError(f"to_undirected expects one graph, got n_node={np.asarray(graph.n_node)}")
  s, r = np.asarray(graph.senders, np.int64), np.asarray(graph.receivers, np.int64)
  keys = np.unique(np.concatenate([s * n + r, r * n + s]))
  s_new, r_new = (keys // n).astype(np.int32), (keys % n).astype(np.int32)
  return graph._replace(senders=s_new, receivers=r_new, edges=None,
                        n_edge=np.array([len(s_new)], np.int32))


def degree(graph: jraph.GraphsTuple, w: jax.Array | None = None, *, num_nodes: int | None = None) -> jax.Array:
  r"""Weighted in-degree :math:`d_i = \sum_{e: \mathrm{recv}(e) = i} w_e`, shape ``[N]``."""
  n = num_nodes_of(graph) if num_nodes is None else int(num_nodes)
  validate_graph(graph, n)
  w = _weights(graph, w)
  return jax.ops.segment_sum(w, graph.receivers, num_segments=n)


def spmm(graph: jraph.GraphsTuple, w: jax.Array | None, y: jax.Array) -> jax.Array:
  r"""Sparse product :math:`(A Y)_i = \sum_{e: \mathrm{recv}(e)=i} w_e Y_{\mathrm{send}(e)}`; ``y`` is ``[N, d]``.

  Example (the path 0-1-2; ``A @ I`` is the adjacency matrix)::

    >>> import jax.numpy as jnp, jraph
    >>> g = jraph.GraphsTuple(nodes=None, edges=None, senders=jnp.array([0, 1, 1, 2]),
    ...                       receivers=jnp.array([1, 0, 2, 1]), n_node=jnp.array([3]), n_edge=jnp.array([4]),
    ...                       globals=None)
    >>> spmm(g, None, jnp.eye(3)).tolist()
    [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
  """
  _check_features("y", y)
  n = num_nodes_of(graph, y)
  validate_graph(graph, n)
  w = _weights(graph, w, y.dtype)
  msg = w.astype(y.dtype)[:, None] * y[graph.senders]  # [E, d]
  return jax.ops.segment_sum(msg, graph.receivers, num_segments=n)


def _rsqrt_or_zero(d: jax.Array) -> jax.Array:
  safe = jnp.where(d > 0, d, 1.0)
  return jnp.where(d > 0, jax.lax.rsqrt(safe), 0.0)


def sym_norm_weights(graph: jraph.GraphsTuple, d: jax.Array, w: jax.Array | None = None) -> jax.Array:
  r"""Edge weights of :math:`D^{-1/2} A D^{-1/2}`: :math:`w_e / \sqrt{d_{\mathrm{send}} d_{\mathrm{recv}}}`.

  Entries whose sender or receiver has degree 0 are 0. ``d`` is ``[N]`` (e.g. :func:`degree`).

  Raises:
    ValueError: ``d`` is not ``[N]`` (N = the graph's node count) or has non-finite entries (when concrete).
  """
  d = jnp.asarray(d)
  if d.ndim != 1:
    raise ValueError(f"d must be the [N] degree vector, got shape {d.shape}")
  validate_graph(graph, num_nodes_of(graph, d, name="d"))
  if _concrete(d) and not np.all(np.isfinite(np.asarray(d))):
    raise ValueError("d has non-finite degrees")
  w = _weights(graph, w, d.dtype)
  inv = _rsqrt_or_zero(d)
  return w * inv[graph.senders] * inv[graph.receivers]


def dense_adjacency(graph: jraph.GraphsTuple, w: jax.Array | None = None, *, num_nodes: int | None = None
                    ) -> jax.Array:
  """Dense ``[N, N]`` matrix with ``A[recv, send] += w`` (tests and small graphs only)."""
  n = num_nodes_of(graph) if num_nodes is None else int(num_nodes)
  validate_graph(graph, n)
  w = _weights(graph, w)
  return jnp.zeros((n, n), w.dtype).at[graph.receivers, graph.senders].add(w)


def pad_graph(graph: jraph.GraphsTuple, n_node: int, n_edge: int, n_graph: int = 2) -> jraph.GraphsTuple:
  """Pads to static budgets with ``jraph.pad_with_graphs`` (padding edges join padding nodes).

  Give the padding edges weight 0 with :func:`edge_mask` so they do not change degrees.

  Raises:
    ValueError: a budget too small for ``graph`` (``n_node`` > real nodes, ``n_edge`` >= real edges,
      ``n_graph`` > real graphs, and ``n_graph >= 2``).
  """
  real_nodes, real_edges = int(np.sum(np.asarray(graph.n_node))), int(np.sum(np.asarray(graph.n_edge)))
  real_graphs = int(np.size(graph.n_node))
  for name, value, low in (("n_node", n_node, real_nodes + 1), ("n_edge", n_edge, real_edges),
                           ("n_graph", n_graph, max(real_graphs + 1, 2))):
    check_count(name, value, low)
  return jraph.pad_with_graphs(graph, n_node=n_node, n_edge=n_edge, n_graph=n_graph)


def edge_mask(graph: jraph.GraphsTuple) -> jax.Array:
  """Float ``[E]`` mask: 1 for real edges, 0 for padding edges of a graph padded by :func:`pad_graph`."""
  return jraph.get_edge_padding_mask(graph).astype(jnp.float32)


class SparseFeatures(NamedTuple):
  """A sparse ``[N, F]`` node-feature matrix in COO form (bag-of-words features are ~1 % dense).

  ``rows``/``cols`` int32 ``[nnz]``, ``values`` float ``[nnz]``, ``shape`` the static ``(N, F)``. Jittable as a
  pytree (``shape`` is static aux data).
  """

  rows: jax.Array
  cols: jax.Array
  values: jax.Array
  shape: tuple[int, int]

  @classmethod
  def from_dense(cls, x: np.ndarray, *, row_normalize: bool = False) -> SparseFeatures:
    """Host-side conversion; ``row_normalize`` divides every row by its sum (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
      raise ValueError(f"x must be 2-D [N, F], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
      raise ValueError("x has non-finite entries")
    if row_normalize:
      sums = x.sum(1, keepdims=True)
      x = x / np.where(sums == 0, 1.0, sums)
    rows, cols = np.nonzero(x)
    return cls(rows.astype(np.int32), cols.astype(np.int32), x[rows, cols].astype(np.float32),
               (int(x.shape[0]), int(x.shape[1])))

  def matmul(self, weight: jax.Array) -> jax.Array:
    """``X @ weight`` via a gather and one ``segment_sum`` over rows; ``weight`` is ``[F, H]``."""
    return jax.ops.segment_sum(self.values[:, None] * weight[self.cols], self.rows, num_segments=self.shape[0])

  def todense(self) -> jax.Array:
    return jnp.zeros(self.shape, self.values.dtype).at[self.rows, self.cols].add(self.values)


jax.tree_util.register_pytree_node(
    SparseFeatures,
    lambda s: ((s.rows, s.cols, s.values), s.shape),
    lambda shape, children: SparseFeatures(*children, shape),
)
