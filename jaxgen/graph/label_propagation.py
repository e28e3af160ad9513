r"""Special cases of the quadratic graph energy as thin wrappers (spec graph.md §B.5.1–B.5.3, B.5.5).

All of them are descent steps of :mod:`jaxgen.graph.energy` on
:math:`E(Y) = \tfrac{c}{2}\|Y - F\|^2 + \tfrac12\mathrm{tr}(Y^\top(I - \hat A)Y)`, :math:`\hat A = D^{-1/2}AD^{-1/2}`,
unrolled with ``lax.scan``; fixtures come from PyTorch Geometric 2.8.1.

* :func:`appnp_propagate` — APPNP / personalised PageRank (Gasteiger et al., ICLR 2019, arXiv 1810.05997, eq. (3)):
  :math:`H_{k+1} = (1-a)\hat A H_k + a H_0` with :math:`\hat A` from :math:`A + I`. It is
  :func:`~jaxgen.graph.energy.gradient_step` with :math:`\lambda = (1-a)/a` and step :math:`1/(1+\lambda) = a`.
* :func:`label_propagation` — Zhou et al., "Learning with Local and Global Consistency", NeurIPS 2004 (eq. (1)):
  :math:`Y_{k+1} = \mathrm{clip}(a\hat A Y_k + (1-a)Y_0, 0, 1)`, :math:`\hat A` without self loops. Energy view:
  F = Y_0, Γ = c I with c = (1−a)/a, a gradient step of size a; the clip is the prox of the box [0, 1].
* :func:`correct_and_smooth` — Huang et al., "Combining Label Propagation and Simple Models Out-performs Graph Neural
  Networks", ICLR 2021 (arXiv 2010.13993), §3.1 (correct, autoscale or fixed scale) and §3.2 (smooth).
* :func:`laplacian_regularizer` — graph-regularised MLP (B.5.5): zero descent steps, the energy's pairwise term on
  softmax outputs (or logits, P-reg style) added to the training loss.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jaxgen.core.validate import check_count
from jaxgen.graph import energy, ops

__all__ = [
    "appnp_propagate",
    "correct_and_smooth",
    "correct_step",
    "label_propagation",
    "laplacian_regularizer",
    "propagate_labels",
    "smooth_step",
]


def _check_alpha(alpha, name="alpha"):
  ops._check_hyper(name, alpha, upper=1.0)  # noqa: SLF001  (finite, in [0, 1]; traced values unchecked)


def _check_labels(graph, labels, train_mask, num_classes, n=None):
  """``labels`` / ``train_mask`` ``[N]`` (N = the node count) and integer labels in ``[0, num_classes)``."""
  num_classes = check_count("num_classes", num_classes, 1)
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
  if labels.ndim != 1:
    raise ValueError(f"labels must be [N], got shape {labels.shape}")
  if n is None:
    n = ops.num_nodes_of(graph, labels, name="labels")
  elif labels.shape[0] != n:
    raise ValueError(f"labels must be [N] with N = {n} nodes, got shape {labels.shape}")
  if jnp.shape(train_mask) != labels.shape:
    raise ValueError(f"train_mask must have the shape of labels {labels.shape}, got {jnp.shape(train_mask)}")
  if ops._concrete(labels) and labels.size:  # noqa: SLF001
    lab = np.asarray(labels)
    if lab.min() < 0 or lab.max() >= num_classes:
      raise ValueError(f"labels must lie in [0, num_classes={num_classes}), got [{lab.min()}, {lab.max()}]")
  return labels, num_classes


def appnp_propagate(graph: jraph.GraphsTuple, x: jax.Array, *, num_steps: int, alpha: float,
                    add_self_loops: bool = True, edge_weight: jax.Array | None = None) -> jax.Array:
  r"""APPNP propagation :math:`H_{k+1} = (1-a)\hat A H_k + a H_0`, :math:`H_0 = X` (PyG ``APPNP(K, alpha)``).

  Args:
    graph: edge list without self loops (they are appended when ``add_self_loops``).
    x: ``[N, d]`` features :math:`H_0`.
    num_steps: K.
    alpha: teleport probability a (PyG's ``alpha``), in (0, 1].
    edge_weight: optional weights of the edges of ``graph`` (self loops get weight 1).
  """
  _check_alpha(alpha)
  if isinstance(alpha, (int, float)) and alpha == 0:
    raise ValueError("alpha must be > 0 for APPNP (lambda = (1 - alpha) / alpha)")
  ops._check_features("x", x)  # noqa: SLF001
  n = ops.num_nodes_of(graph, x, name="x")
  ops.validate_graph(graph, n)
  ops.validate_weights(graph, edge_weight, "edge_weight")
  num_steps = check_count("num_steps", num_steps)
  if add_self_loops:
    graph = ops.add_self_loops(graph, n)
    if edge_weight is not None:
      edge_weight = jnp.concatenate([jnp.asarray(edge_weight, x.dtype), jnp.ones((n,), x.dtype)])
  lam = (1.0 - alpha) / alpha

  def step(y):
    return energy.gradient_step(graph, edge_weight, y, x, alpha=alpha, lam=lam, normalized=True)

  return energy.unroll(step, x, num_steps)[0]


def propagate_labels(graph: jraph.GraphsTuple, y0: jax.Array, *, num_steps: int, alpha: float,
                     post_step: Callable[[jax.Array], jax.Array] | None = None,
                     edge_weight: jax.Array | None = None) -> jax.Array:
  r"""PyG ``LabelPropagation`` core: :math:`Y_{k+1} = \mathrm{post}(a\hat A Y_k + (1-a)Y_0)`, no self loops added.

  One iteration is a gradient step of size a on :math:`\tfrac c2\|Y - Y_0\|^2 + \tfrac12\mathrm{tr}(Y^\top
  (I - \hat A) Y)`, c = (1−a)/a, followed by ``post_step`` (default: the prox of the box [0, 1], a clip).
  """
  _check_alpha(alpha)
  ops._check_features("y0", y0)  # noqa: SLF001
  ops.validate_graph(graph, ops.num_nodes_of(graph, y0, name="y0"))
  ops.validate_weights(graph, edge_weight, "edge_weight")
  post_step = (lambda y: jnp.clip(y, 0.0, 1.0)) if post_step is None else post_step

  def step(y):
    # a * A_hat y + (1 - a) y0: equal to energy.gradient_step(..., alpha=a, lam=1, gamma=(1-a)/a, normalized=True).
    ay = ops.spmm(graph, ops.sym_norm_weights(graph, ops.degree(graph, edge_weight, num_nodes=y.shape[0]),
                                              edge_weight), y)
    return post_step(alpha * ay + (1.0 - alpha) * y0)

  return energy.unroll(step, y0, num_steps)[0]


def _one_hot_train(graph, labels, train_mask, num_classes, dtype=jnp.float32):
  labels, num_classes = _check_labels(graph, labels, train_mask, num_classes)
  return jax.nn.one_hot(labels, num_classes, dtype=dtype) * jnp.asarray(train_mask, dtype)[:, None]


def label_propagation(graph: jraph.GraphsTuple, labels: jax.Array, train_mask: jax.Array, num_classes: int, *,
                      num_steps: int = 50, alpha: float = 0.9, edge_weight: jax.Array | None = None) -> jax.Array:
  r"""Label propagation (Zhou et al. 2004) from one-hot training labels; returns soft labels ``[N, C]``.

  :math:`Y_0` = one-hot rows on training nodes, zero elsewhere; :math:`Y_{k+1} = \mathrm{clip}(a\hat A Y_k +
  (1-a) Y_0, 0, 1)`, :math:`\hat A = D^{-1/2}AD^{-1/2}` of the graph as given (no self loops added). PyG's
  ``LabelPropagation(num_layers, alpha)`` with ``mask=train_mask``.
  """
  y0 = _one_hot_train(graph, labels, train_mask, num_classes)
  return propagate_labels(graph, y0, num_steps=num_steps, alpha=alpha, edge_weight=edge_weight)


def correct_step(graph: jraph.GraphsTuple, y_soft: jax.Array, labels: jax.Array, train_mask: jax.Array, *,
                 num_steps: int = 50, alpha: float = 0.8, autoscale: bool = True, scale: float = 1.0,
                 edge_weight: jax.Array | None = None) -> jax.Array:
  r"""C&S "correct": propagate the training residual :math:`E = Y - \hat Y` (zero off the training set).

  ``autoscale``: propagate with a clip to [−1, 1] after every step, then scale row i by
  :math:`\sigma / \|\hat E_i\|_1` with :math:`\sigma` the mean L1 norm of the training residual rows (scale 1
  where infinite or > 1000). Otherwise re-clamp the training rows to the true residual after every step and
  add ``scale`` times the result. Returns the corrected predictions :math:`\hat Y + \mathrm{scale}\cdot\hat E`.
  """
  ops._check_features("y_soft", y_soft)  # noqa: SLF001
  ops.validate_graph(graph, ops.num_nodes_of(graph, y_soft, name="y_soft"))
  num_classes = y_soft.shape[1]
  _check_labels(graph, labels, train_mask, num_classes, n=y_soft.shape[0])
  _check_alpha(alpha)
  if not autoscale:
    if not isinstance(scale, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(scale))):
      raise ValueError(f"scale must be finite, got {scale!r}")
  train_mask = jnp.asarray(train_mask, bool)
  tm = train_mask[:, None]
  error = jnp.where(tm, jax.nn.one_hot(labels, num_classes, dtype=y_soft.dtype) - y_soft, 0.0)
  if autoscale:
    smoothed = propagate_labels(graph, error, num_steps=num_steps, alpha=alpha,
                                post_step=lambda e: jnp.clip(e, -1.0, 1.0), edge_weight=edge_weight)
    sigma = jnp.sum(jnp.abs(error)) / jnp.maximum(jnp.sum(train_mask), 1)
    row_l1 = jnp.sum(jnp.abs(smoothed), axis=1, keepdims=True)
    s = sigma / row_l1
    s = jnp.where(jnp.isinf(s) | (s > 1000), 1.0, s)
    return y_soft + s * smoothed
  smoothed = propagate_labels(graph, error, num_steps=num_steps, alpha=alpha,
                              post_step=lambda e: jnp.where(tm, error, e), edge_weight=edge_weight)
  return y_soft + scale * smoothed


def smooth_step(graph: jraph.GraphsTuple, y_soft: jax.Array, labels: jax.Array, train_mask: jax.Array, *,
                num_steps: int = 50, alpha: float = 0.8, edge_weight: jax.Array | None = None) -> jax.Array:
  """C&S "smooth": set training rows to their one-hot labels, then label propagation (clip to [0, 1])."""
  ops._check_features("y_soft", y_soft)  # noqa: SLF001
  ops.validate_graph(graph, ops.num_nodes_of(graph, y_soft, name="y_soft"))
  _check_labels(graph, labels, train_mask, y_soft.shape[1], n=y_soft.shape[0])
  tm = jnp.asarray(train_mask, bool)[:, None]
  y0 = jnp.where(tm, jax.nn.one_hot(labels, y_soft.shape[1], dtype=y_soft.dtype), y_soft)
  return propagate_labels(graph, y0, num_steps=num_steps, alpha=alpha, edge_weight=edge_weight)


def correct_and_smooth(graph: jraph.GraphsTuple, y_soft: jax.Array, labels: jax.Array, train_mask: jax.Array, *,
                       num_correction_steps: int = 50, correction_alpha: float = 0.8,
                       num_smoothing_steps: int = 50, smoothing_alpha: float = 0.8, autoscale: bool = True,
                       scale: float = 1.0, edge_weight: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Correct-and-Smooth on base soft predictions ``y_soft`` ``[N, C]``; returns ``(corrected, smoothed)``."""
  _check_alpha(correction_alpha, "correction_alpha")
  _check_alpha(smoothing_alpha, "smoothing_alpha")
  check_count("num_correction_steps", num_correction_steps)
  check_count("num_smoothing_steps", num_smoothing_steps)
  corrected = correct_step(graph, y_soft, labels, train_mask, num_steps=num_correction_steps,
                           alpha=correction_alpha, autoscale=autoscale, scale=scale, edge_weight=edge_weight)
  smoothed = smooth_step(graph, corrected, labels, train_mask, num_steps=num_smoothing_steps,
                         alpha=smoothing_alpha, edge_weight=edge_weight)
  return corrected, smoothed


def laplacian_regularizer(graph: jraph.GraphsTuple, z: jax.Array, edge_weight: jax.Array | None = None, *,
                          on: str = "softmax") -> jax.Array:
  r"""Graph-regularised-MLP penalty :math:`\tfrac12\sum_{\{i,j\}} w_{ij}\|s(z_i) - s(z_j)\|^2` (B.5.5).

  The pairwise term of the quadratic energy evaluated at the MLP output (zero descent steps). ``on="softmax"``
  uses :math:`s = \mathrm{softmax}`; ``on="logits"`` the raw outputs (P-reg-style). The edge list holds both
  directions, so the sum over unordered pairs is ¼ of the sum over directed edges.
  """
  if on not in ("softmax", "logits"):
    raise ValueError(f"on must be 'softmax' or 'logits', got {on!r}")
  ops._check_features("z", z)  # noqa: SLF001
  ops.validate_graph(graph, ops.num_nodes_of(graph, z, name="z"))
  ops.validate_weights(graph, edge_weight, "edge_weight")
  s = jax.nn.softmax(z, axis=-1) if on == "softmax" else z
  diff = s[graph.senders] - s[graph.receivers]
  w = jnp.ones(jnp.shape(graph.senders), z.dtype) if edge_weight is None else jnp.asarray(edge_weight, z.dtype)
  return 0.25 * jnp.sum(w * jnp.sum(diff * diff, axis=-1))
