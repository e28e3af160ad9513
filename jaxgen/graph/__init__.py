"""Graph learning as energy minimisation on ``jraph.GraphsTuple`` (BloomGML-style layers; spec graph.md §A, B, E).

"BloomGML-style": a reconstruction of the layer family of Zheng et al., "BloomGML: Graph Machine Learning through
the Lens of Bilevel Optimization" (AISTATS 2024), whose repository publishes no code. The exact steps follow TWIRLS
(Yang et al., ICML 2021) and HALO (Ahn et al., NeurIPS 2022) and are checked against their reference code and
PyTorch Geometric. It does not reproduce BloomGML's tables.

Modules: :mod:`~jaxgen.graph.ops` (segment_sum message passing), :mod:`~jaxgen.graph.energy` (energies, descent
steps, TWIRLS / HALO layers, the bilevel :class:`BloomModel`), :mod:`~jaxgen.graph.label_propagation` (APPNP, label
propagation, Correct-and-Smooth, graph-regularised MLP), :mod:`~jaxgen.graph.kg` (KGE descent as message passing).
Data loaders (spec §E) are re-exported from :mod:`jaxgen.data`.
"""

from jaxgen.data.graphs import NodeClassificationData, load_heterophily, load_planetoid, load_prognn
from jaxgen.graph import energy, kg, label_propagation, ops
from jaxgen.graph.energy import (
    BloomModel,
    energy_grad,
    energy_induced_messages,
    gradient_step,
    heavy_ball_step,
    irls_edge_weights,
    jacobi_step,
    linear_message_energy,
    lipschitz_bound,
    nesterov_step,
    prox_gradient_step,
    quad_energy,
    relation_energy,
    relation_step,
    residual_to_message_fn,
    robust_energy,
    soft_threshold,
    twirls_propagate,
    unroll,
)
from jaxgen.graph.kg import filtered_mrr, kge_energy, kge_message_passing_step, make_synthetic_transe_kg, train_kge
from jaxgen.graph.label_propagation import (
    appnp_propagate,
    correct_and_smooth,
    laplacian_regularizer,
)
from jaxgen.graph.ops import (
    SparseFeatures,
    add_self_loops,
    degree,
    dense_adjacency,
    edge_mask,
    pad_graph,
    remove_self_loops,
    spmm,
    sym_norm_weights,
    to_undirected,
)


def load_geom_gcn(name: str, split: int = 0, data_dir=None) -> NodeClassificationData:
  """Spec §E name for :func:`jaxgen.data.load_heterophily` (texas / cornell / wisconsin / film), symmetrised."""
  return load_heterophily(name, split, data_dir, symmetrize=True)


__all__ = [
    "BloomModel", "NodeClassificationData", "SparseFeatures", "add_self_loops", "appnp_propagate",
    "correct_and_smooth", "degree", "dense_adjacency", "edge_mask", "energy", "energy_grad",
    "energy_induced_messages", "filtered_mrr", "gradient_step", "heavy_ball_step", "irls_edge_weights",
    "jacobi_step", "kg", "kge_energy", "kge_message_passing_step", "label_propagation", "laplacian_regularizer",
    "linear_message_energy", "lipschitz_bound", "load_geom_gcn", "load_heterophily", "load_planetoid",
    "load_prognn", "make_synthetic_transe_kg", "nesterov_step", "ops", "pad_graph",
    "prox_gradient_step", "quad_energy", "relation_energy", "relation_step",
    "remove_self_loops", "residual_to_message_fn", "robust_energy", "soft_threshold", "spmm", "sym_norm_weights",
    "to_undirected", "train_kge", "twirls_propagate", "unroll",
]
