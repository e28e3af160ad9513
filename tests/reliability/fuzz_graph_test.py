"""Fuzzing the public API of jaxgen.graph (ops, energy, label_propagation, kg) with malformed inputs (hypothesis).

Same contract as ``fuzz_core_test.py``: every generated case either raises ``ValueError`` / ``TypeError`` whose
message names the offending argument, or returns the documented result. Bad *settings* (endpoints out of range,
node counts that disagree, non-finite edge weights, bad K / alpha / lambda) must raise; non-finite node *features*
are data and propagate (NaN in, NaN out — never masked). Case counts per function are printed in the pytest
terminal summary.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxgen.graph import energy, kg, label_propagation, ops
from tests.reliability._fuzz import FUZZ, finite, raises_clean

SMALL = settings(FUZZ, max_examples=8)
HYPER_VALUES = [math.nan, math.inf, -math.inf, -1.0, -1e-3, 0.0, 0.5, 1.0, 1.5, 1e30]

N, D = 4, 2
SENDERS = (0, 1, 2, 3, 1, 2, 3, 0)      # a ring, both directions
RECEIVERS = (1, 2, 3, 0, 0, 1, 2, 3)
E = len(SENDERS)


def _graph(senders=SENDERS, receivers=RECEIVERS, n=N, nodes=None) -> jraph.GraphsTuple:
  s, r = np.asarray(senders, np.int32), np.asarray(receivers, np.int32)
  return jraph.GraphsTuple(nodes=nodes, edges=None, senders=s, receivers=r, globals=None,
                           n_node=np.array([n], np.int32), n_edge=np.array([len(s)], np.int32))


Y = jnp.arange(N * D, dtype=jnp.float32).reshape(N, D) / 8.0
F = jnp.ones((N, D)) * 0.25
LOOPS = ops.add_self_loops(_graph())


# Calls that take a graph (g), edge weights (w, None = default) and node features (y); the name of each argument
# as the function spells it.
GRAPH_CALLS = {
    "ops.degree": (lambda g, w, y: ops.degree(g, w), "w", None),
    "ops.spmm": (lambda g, w, y: ops.spmm(g, w, y), "w", "y"),
    "ops.dense_adjacency": (lambda g, w, y: ops.dense_adjacency(g, w), "w", None),
    "ops.sym_norm_weights": (lambda g, w, y: ops.sym_norm_weights(g, jnp.ones(N), w), "w", None),
    "energy.quad_energy": (lambda g, w, y: energy.quad_energy(g, w, y, F if y.shape == F.shape else y, lam=1.0),
                           "w", "y"),
    "energy.energy_grad": (lambda g, w, y: energy.energy_grad(g, w, y, F if y.shape == F.shape else y, lam=1.0),
                           "w", "y"),
    "energy.gradient_step": (lambda g, w, y: energy.gradient_step(g, w, y, F if y.shape == F.shape else y,
                                                                  alpha=0.5, lam=1.0), "w", "y"),
    "energy.jacobi_step": (lambda g, w, y: energy.jacobi_step(g, w, y, F if y.shape == F.shape else y, alpha=1.0,
                                                              lam=1.0), "w", "y"),
    "energy.irls_edge_weights": (lambda g, w, y: energy.irls_edge_weights(g, y, w, p=1.0, tau=0.1), "w0", "y"),
    "energy.robust_energy": (lambda g, w, y: energy.robust_energy(g, w, y, F if y.shape == F.shape else y, lam=1.0,
                                                                  p=1.0, tau=0.1), "w0", "y"),
    "energy.twirls_propagate": (lambda g, w, y: energy.twirls_propagate(g, y, num_steps=2, alpha=1.0, lam=1.0,
                                                                        edge_weight=w), "edge_weight", "x"),
    "label_propagation.appnp_propagate": (lambda g, w, y: label_propagation.appnp_propagate(
        g, y, num_steps=2, alpha=0.2, edge_weight=w), "edge_weight", "x"),
    "label_propagation.laplacian_regularizer": (lambda g, w, y: label_propagation.laplacian_regularizer(g, y, w),
                                                "edge_weight", "z"),
    "label_propagation.label_propagation": (lambda g, w, y: label_propagation.label_propagation(
        g, jnp.zeros(y.shape[0], jnp.int32), jnp.ones(y.shape[0], bool), 2, num_steps=2, edge_weight=w),
                                            "edge_weight", "labels"),
}
FEATURE_CALLS = sorted(k for k, v in GRAPH_CALLS.items() if v[2] is not None)
HOST_CALLS = {"ops.add_self_loops": ops.add_self_loops, "ops.remove_self_loops": ops.remove_self_loops,
              "ops.to_undirected": ops.to_undirected,
              "energy.energy_induced_messages": lambda g: energy.energy_induced_messages(
                  lambda a, b: -a @ b, Y, g),
              "energy.residual_to_message_fn": lambda g: energy.residual_to_message_fn(
                  lambda a, b: b, Y, g, energy.linear_message_energy(jnp.eye(D)))}


# ----------------------------------------------------------------------------------------------------------------
# ops: edge lists, node counts, edge weights


@pytest.mark.parametrize("name", sorted(GRAPH_CALLS) + sorted(HOST_CALLS))
@settings(FUZZ, max_examples=3)
@given(st.sampled_from(["senders", "receivers"]), st.integers(0, E - 1), st.sampled_from([-1, N, N + 3]))
def test_endpoints_out_of_range(fuzz_record, name, which, index, bad):
  fuzz_record(f"graph.{name}")
  ends = {"senders": list(SENDERS), "receivers": list(RECEIVERS)}
  ends[which][index] = bad
  g = _graph(ends["senders"], ends["receivers"])
  call = (lambda: HOST_CALLS[name](g)) if name in HOST_CALLS else (lambda: GRAPH_CALLS[name][0](g, None, Y))
  raises_clean(call, f"graph.{which}")


@FUZZ
@given(st.sampled_from(FEATURE_CALLS), st.sampled_from(["features", "n_node", "nodes"]), st.sampled_from([1, 3, 5]))
def test_mismatched_node_counts(fuzz_record, name, where, rows):
  fuzz_record(f"graph.{name}")
  fn, _, arg = GRAPH_CALLS[name]
  if where == "features":                  # features with the wrong number of rows
    g, y = _graph(), jnp.ones((rows, D))
  elif where == "n_node":                  # graph.n_node disagrees with the features
    g, y = _graph(n=rows), Y
  else:                                    # graph.nodes disagrees with the features
    g, y = _graph(nodes=jnp.ones((rows, 3))), Y
  names = {"features": (arg,), "n_node": ("graph.n_node",), "nodes": ("graph.nodes",)}[where]
  raises_clean(lambda: fn(g, None, y), *names)


@FUZZ
@given(st.sampled_from(sorted(GRAPH_CALLS)), st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, E - 1))
def test_nonfinite_edge_weights(fuzz_record, name, bad, index):
  fuzz_record(f"graph.{name}")
  fn, w_name, _ = GRAPH_CALLS[name]
  w = jnp.ones(E).at[index].set(bad)
  raises_clean(lambda: fn(_graph(), w, Y), w_name)


@FUZZ
@given(st.sampled_from(sorted(GRAPH_CALLS)), st.sampled_from([(E + 1,), (E - 1,), (E, 1), (1,), ()]))
def test_edge_weight_shape(fuzz_record, name, shape):
  fuzz_record(f"graph.{name}")
  fn, w_name, _ = GRAPH_CALLS[name]
  raises_clean(lambda: fn(_graph(), jnp.ones(shape), Y), w_name)


@FUZZ
@given(st.sampled_from(FEATURE_CALLS), st.sampled_from([(N,), (N, D, 1), ()]))
def test_feature_rank(fuzz_record, name, shape):
  fuzz_record(f"graph.{name}")
  fn, _, arg = GRAPH_CALLS[name]
  y = jnp.ones(shape)
  if name == "label_propagation.label_propagation":
    labels = jnp.zeros(shape, jnp.int32)     # here the node "features" are the labels: [N] is right
    call = lambda: label_propagation.label_propagation(_graph(), labels, jnp.ones(shape, bool), 2)  # noqa: E731
    if shape == (N,):
      assert call().shape == (N, 2)
    else:
      raises_clean(call, arg)
    return
  raises_clean(lambda: fn(_graph(), None, y), arg)


@FUZZ
@given(st.sampled_from(["ops.spmm", "energy.energy_grad", "energy.gradient_step", "energy.jacobi_step",
                        "energy.twirls_propagate", "label_propagation.appnp_propagate"]),
       st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, N - 1), st.integers(0, D - 1))
def test_nonfinite_features_propagate(fuzz_record, name, bad, row, col):
  """Documented: non-finite node features are data; they propagate to the output (never silently masked)."""
  fuzz_record(f"graph.{name}")
  y = Y.at[row, col].set(bad)
  out = GRAPH_CALLS[name][0](_graph(), None, y)
  assert not finite(out)
  assert finite(GRAPH_CALLS[name][0](_graph(), None, Y))


@FUZZ
@given(st.sampled_from(["graph.senders", "graph.receivers"]), st.sampled_from([np.float32, np.float64]))
def test_float_endpoints(fuzz_record, which, dtype):
  fuzz_record("graph.ops.validate_graph")
  ends = {"graph.senders": np.asarray(SENDERS), "graph.receivers": np.asarray(RECEIVERS)}
  ends[which] = ends[which].astype(dtype)
  g = _graph()._replace(senders=ends["graph.senders"], receivers=ends["graph.receivers"])
  raises_clean(lambda: ops.degree(g), which)


@FUZZ
@given(st.sampled_from([(N + 1,), (N - 1,), (N, 1), ()]))
def test_sym_norm_degree_shape(fuzz_record, shape):
  fuzz_record("graph.ops.sym_norm_weights")
  raises_clean(lambda: ops.sym_norm_weights(_graph(), jnp.ones(shape)), "d")


@FUZZ
@given(st.sampled_from(["n_node", "n_edge", "n_graph"]), st.integers(-1, 12))
def test_pad_graph_budgets(fuzz_record, which, value):
  fuzz_record("graph.ops.pad_graph")
  budgets = {"n_node": N + 2, "n_edge": E + 3, "n_graph": 2}
  budgets[which] = value
  low = {"n_node": N + 1, "n_edge": E, "n_graph": 2}[which]
  call = lambda: ops.pad_graph(_graph(), **budgets)  # noqa: E731
  if value >= low:
    padded = call()
    mask = np.asarray(ops.edge_mask(padded))
    assert mask.shape == (budgets["n_edge"],) and mask.sum() == E
  else:
    raises_clean(call, which)


@FUZZ
@given(st.sampled_from([(4,), (2, 3, 1)]), st.sampled_from([None, math.nan, math.inf]))
def test_sparse_features_from_dense(fuzz_record, shape, bad):
  fuzz_record("graph.ops.SparseFeatures")
  x = np.ones((3, 4), np.float32)
  if bad is None:
    raises_clean(lambda: ops.SparseFeatures.from_dense(np.ones(shape)), "x")
  else:
    x[1, 2] = bad
    raises_clean(lambda: ops.SparseFeatures.from_dense(x), "x")


# ----------------------------------------------------------------------------------------------------------------
# energy / label_propagation: hyper-parameters


def _hyper_calls():
  g, h = _graph(), jnp.stack([jnp.eye(D), jnp.eye(D)])
  relation = jnp.asarray([0, 0, 0, 0, 1, 1, 1, 1])
  return {
      # name: (call(arg, value), {arg: validity}, iterative)
      "energy.gradient_step": (lambda a, v: energy.gradient_step(g, None, Y, F, **{"alpha": 0.5, "lam": 1.0, a: v}),
                               {"alpha": "nonneg", "lam": "nonneg", "gamma": "nonneg"}, False),
      "energy.jacobi_step": (lambda a, v: energy.jacobi_step(g, None, Y, F, **{"alpha": 1.0, "lam": 1.0, a: v}),
                             {"alpha": "nonneg", "lam": "nonneg", "gamma": "nonneg"}, False),
      "energy.prox_gradient_step": (lambda a, v: energy.prox_gradient_step(
          g, None, Y, F, **({"alpha": 1.0, "lam": 1.0, a: v} if a != "prox" else
                            {"alpha": 1.0, "lam": 1.0, "prox": ("l1", v)})),
                                    {"alpha": "nonneg", "lam": "nonneg", "prox": "nonneg"}, False),
      "energy.heavy_ball_step": (lambda a, v: energy.heavy_ball_step(
          g, None, (Y, F), F, **{"alpha": 0.5, "beta": 0.5, "lam": 1.0, a: v}), {"alpha": "nonneg", "beta": "nonneg"},
                                 False),
      "energy.nesterov_step": (lambda a, v: energy.nesterov_step(
          g, None, (Y, F), F, **{"alpha": 0.5, "beta": 0.5, "lam": 1.0, a: v}), {"alpha": "nonneg", "beta": "nonneg"},
                               False),
      "energy.quad_energy": (lambda a, v: energy.quad_energy(g, None, Y, F, **{"lam": 1.0, a: v}),
                             {"lam": "nonneg", "gamma": "nonneg"}, False),
      "energy.lipschitz_bound": (lambda a, v: energy.lipschitz_bound(g, None, **{"gamma": 1.0, "lam": 1.0, a: v}),
                                 {"lam": "nonneg", "gamma": "nonneg"}, False),
      "energy.soft_threshold": (lambda a, v: energy.soft_threshold(Y, v), {"threshold": "nonneg"}, False),
      "energy.irls_edge_weights": (lambda a, v: energy.irls_edge_weights(g, Y, **{"p": 1.0, "tau": 1.0, a: v}),
                                   {"p": "finite", "tau": "nonneg", "T": "nonneg_or_inf"}, False),
      "energy.robust_energy": (lambda a, v: energy.robust_energy(g, None, Y, F, **{"lam": 1.0, "p": 1.0, "tau": 0.5,
                                                                                    a: v}),
                               {"p": "at_most_2", "tau": "nonneg", "lam": "nonneg"}, False),
      "energy.relation_step": (lambda a, v: energy.relation_step(g, relation, h, Y, F, inverse=(1, 0),
                                                                 **{"alpha": 0.5, "lam": 1.0, a: v}),
                               {"alpha": "nonneg", "lam": "nonneg"}, False),
      "energy.twirls_propagate": (lambda a, v: energy.twirls_propagate(LOOPS, Y, **{"num_steps": 3, "alpha": 1.0,
                                                                                    "lam": 1.0, a: v}),
                                  {"alpha": "nonneg", "lam": "nonneg"}, True),
      "label_propagation.appnp_propagate": (lambda a, v: label_propagation.appnp_propagate(
          g, Y, num_steps=3, alpha=v), {"alpha": "open_unit"}, True),
      "label_propagation.label_propagation": (lambda a, v: label_propagation.label_propagation(
          g, jnp.asarray([0, 1, 0, 1]), jnp.asarray([True, True, False, False]), 2, num_steps=3, alpha=v),
                                              {"alpha": "unit"}, True),
      "label_propagation.correct_and_smooth": (lambda a, v: label_propagation.correct_and_smooth(
          g, jax.nn.softmax(Y), jnp.asarray([0, 1, 0, 1]), jnp.asarray([True, True, False, False]),
          num_correction_steps=2, num_smoothing_steps=2, autoscale=False,
          **{"correction_alpha": 0.5, "scale": 1.0, a: v}), {"correction_alpha": "unit", "scale": "finite"}, True),
  }


HYPER_CALLS = _hyper_calls()


def _valid(kind: str, v: float) -> bool:
  if math.isnan(v):
    return False
  return {"nonneg": math.isfinite(v) and v >= 0, "finite": math.isfinite(v), "nonneg_or_inf": v >= 0,
          "at_most_2": math.isfinite(v) and v <= 2, "unit": 0 <= v <= 1, "open_unit": 0 < v <= 1}[kind]


@pytest.mark.parametrize("name", sorted(HYPER_CALLS))
@settings(FUZZ, max_examples=6)
@given(st.data())
def test_hyperparameters(fuzz_record, name, data):
  fuzz_record(f"graph.{name}")
  call, args, iterative = HYPER_CALLS[name]
  arg = data.draw(st.sampled_from(sorted(args)))
  value = data.draw(st.sampled_from([v for v in HYPER_VALUES if not (iterative and v == 1e30)]))
  if _valid(args[arg], value):
    assert finite(call(arg, value)), (name, arg, value)
  else:
    raises_clean(lambda: call(arg, value), arg)


@FUZZ
@given(st.sampled_from(["unroll", "twirls_propagate", "appnp_propagate", "label_propagation"]),
       st.sampled_from([-3, -1, 0, 2, 2.5, math.nan, math.inf]))
def test_num_steps(fuzz_record, name, k):
  fuzz_record(f"graph.{'energy' if name in ('unroll', 'twirls_propagate') else 'label_propagation'}.{name}")
  calls = {
      "unroll": lambda: energy.unroll(lambda y: 0.5 * y, Y, k)[0],
      "twirls_propagate": lambda: energy.twirls_propagate(LOOPS, Y, num_steps=k, alpha=1.0, lam=1.0),
      "appnp_propagate": lambda: label_propagation.appnp_propagate(_graph(), Y, num_steps=k, alpha=0.2),
      "label_propagation": lambda: label_propagation.label_propagation(
          _graph(), jnp.asarray([0, 1, 0, 1]), jnp.ones(N, bool), 2, num_steps=k),
  }
  if isinstance(k, int) and k >= 0:
    out = calls[name]()
    assert finite(out) and out.shape[0] == N
  else:
    raises_clean(calls[name], "num_steps")


@SMALL
@given(st.sampled_from(["lam", "num_steps", "alpha"]), st.sampled_from([-1.0, math.nan, math.inf]))
def test_bloom_model_settings(fuzz_record, field, bad):
  fuzz_record("graph.energy.BloomModel")
  kwargs = {"before": (3,), "num_steps": 2, field: (int(bad) if field == "num_steps" and math.isfinite(bad) else bad)}
  model = energy.BloomModel(**kwargs)
  raises_clean(lambda: model.init(jax.random.key(0), jnp.ones((N, 5)), LOOPS), field)


# ----------------------------------------------------------------------------------------------------------------
# label_propagation: labels and masks


@FUZZ
@given(st.sampled_from(["label_propagation", "correct_and_smooth"]),
       st.sampled_from(["label_range", "label_dtype", "label_shape", "mask_shape", "num_classes"]),
       st.integers(0, N - 1))
def test_labels_and_masks(fuzz_record, name, fault, index):
  fuzz_record(f"graph.label_propagation.{name}")
  labels, mask, num_classes = jnp.asarray([0, 1, 0, 1]), jnp.asarray([True, True, False, True]), 2
  if fault == "label_range":
    labels, arg = labels.at[index].set([-1, 2, 7, 2][index]), "labels"
  elif fault == "label_dtype":
    labels, arg = labels.astype(jnp.float32), "labels"
  elif fault == "label_shape":
    labels, mask, arg = labels[: index + 1] if index < N - 1 else labels[:, None], mask, "labels"
  elif fault == "mask_shape":
    mask, arg = (mask[:1], mask[:, None], mask[:2], jnp.ones(N + 1, bool))[index], "train_mask"
  else:
    num_classes, arg = [0, -1, 1.5, math.nan][index], "num_classes"
  if name == "label_propagation":
    call = lambda: label_propagation.label_propagation(_graph(), labels, mask, num_classes, num_steps=2)  # noqa
  else:
    if fault == "num_classes":               # C&S takes the classes from y_soft: a [N, 1] y_soft for label 1
      y_soft, arg = jnp.full((N, 1), 1.0), "labels"
    else:
      y_soft = jnp.full((N, num_classes), 0.5)
    call = lambda: label_propagation.correct_and_smooth(_graph(), y_soft, labels, mask,  # noqa: E731
                                                        num_correction_steps=2, num_smoothing_steps=2)
  raises_clean(call, arg)


@FUZZ
@given(st.sampled_from(["relation_range", "relation_shape", "inverse", "h_shape"]), st.integers(0, E - 1))
def test_relation_step_inputs(fuzz_record, fault, index):
  fuzz_record("graph.energy.relation_step")
  relation, h, inverse = jnp.asarray([0, 0, 0, 0, 1, 1, 1, 1]), jnp.stack([jnp.eye(D), jnp.eye(D)]), (1, 0)
  if fault == "relation_range":
    relation, arg = relation.at[index].set([-1, 2, 5][index % 3]), "relation"
  elif fault == "relation_shape":
    relation, arg = relation[:index], "relation"
  elif fault == "inverse":
    inverse, arg = [(0, 0), (1,), (2, 0), (1, 0, 2)][index % 4], "inverse"
  else:
    h, arg = [jnp.eye(D), jnp.ones((2, D, D + 1)), jnp.ones((2, D + 1, D + 1))][index % 3], "h"
  for fn in (energy.relation_step, energy.relation_energy):
    kwargs = {"alpha": 0.5} if fn is energy.relation_step else {}
    raises_clean(lambda fn=fn, kwargs=kwargs: fn(_graph(), relation, h, Y, F, lam=1.0, inverse=inverse, **kwargs),
                  arg)


# ----------------------------------------------------------------------------------------------------------------
# kg


def _kg(num_entities=5, num_relations=2, dim=3, num_pos=4, num_neg=2):
  key = jax.random.key(0)
  y = jax.random.normal(key, (num_entities, dim))
  r = jax.random.normal(jax.random.fold_in(key, 1), (num_relations, dim))
  triples = jnp.asarray([[0, 0, 1], [1, 1, 2], [2, 0, 3], [3, 1, 4]][:num_pos], jnp.int32)
  neg = kg.sample_negative_tails(jax.random.fold_in(key, 2), triples, num_entities, num_neg)
  return y, r, triples, neg


KG_CALLS = {
    "kg.kge_energy": lambda kind, y, r, t, n, **kw: kg.kge_energy(kind, y, r, t, n, **kw),
    "kg.kge_message_passing_step": lambda kind, y, r, t, n, **kw: kg.kge_message_passing_step(
        kind, y, r, t, n, kw.pop("lr", 0.1), **kw),
}


@FUZZ
@given(st.sampled_from(sorted(KG_CALLS)), st.sampled_from(kg.KGE_KINDS), st.sampled_from(["triples", "neg_triples"]),
       st.integers(0, 2), st.sampled_from([-1, 5, 9]))
def test_kge_ids_out_of_range(fuzz_record, name, kind, which, col, bad):
  fuzz_record(f"graph.{name}")
  y, r, t, n = _kg()
  if col == 1 and bad == 5:
    bad = 2                                   # 2 relations: id 2 is already out of range
  if which == "triples":
    t = t.at[1, col].set(bad)
  else:
    n = n.at[1, 0, col].set(bad)
  raises_clean(lambda: KG_CALLS[name](kind, y, r, t, n), which)


@FUZZ
@given(st.sampled_from(sorted(KG_CALLS)),
       st.sampled_from(["kind", "triples_dtype", "triples_shape", "neg_shape", "dim", "margin", "lr"]),
       st.sampled_from([math.nan, math.inf, -math.inf]))
def test_kge_inputs(fuzz_record, name, fault, bad):
  fuzz_record(f"graph.{name}")
  y, r, t, n = _kg()
  kind, kw, arg = "transe", {}, fault
  if fault == "kind":
    kind = "TransE"
  elif fault == "triples_dtype":
    t, arg = t.astype(jnp.float32), "triples"
  elif fault == "triples_shape":
    t, arg = t[:, :2], "triples"
  elif fault == "neg_shape":
    n, arg = n[:2], "neg_triples"
  elif fault == "dim":
    r, arg = jnp.ones((2, 4)), "d"
  elif fault == "margin":
    kw = {"margin": bad}
  else:
    if name == "kg.kge_energy":
      kw, arg = {"margin": bad}, "margin"
    else:
      kw = {"lr": bad}
  raises_clean(lambda: KG_CALLS[name](kind, y, r, t, n, **kw), arg)


@SMALL
@given(st.sampled_from(["num_entities", "num_relations", "dim", "num_steps", "num_negatives", "lr", "kind",
                        "triples"]), st.sampled_from([-1, 0, 1.5, math.nan, math.inf]))
def test_train_kge_settings(fuzz_record, arg, bad):
  fuzz_record("graph.kg.train_kge")
  kwargs = {"kind": "transe", "triples": np.asarray([[0, 0, 1], [1, 1, 2]]), "num_entities": 3, "num_relations": 2,
            "dim": 2, "num_steps": 2, "lr": 0.1, "num_negatives": 2}
  if arg == "kind":
    kwargs["kind"] = "rotate"
  elif arg == "triples":
    kwargs["triples"] = np.asarray([[0, 0, 3]])          # tail id 3 >= num_entities
  else:
    kwargs[arg] = bad
  valid = (arg == "num_steps" and bad == 0) or (arg == "lr" and bad in (-1, 0, 1.5))
  call = lambda: kg.train_kge(jax.random.key(0), **kwargs)  # noqa: E731
  if valid:
    y, r, trace = call()
    assert y.shape == (3, 2) and trace.shape == (kwargs["num_steps"],) and finite(trace)
  else:
    raises_clean(call, arg)


@FUZZ
@given(st.sampled_from(["num_entities", "num_relations", "num_triples", "dim", "test_fraction"]),
       st.sampled_from([-1, 0, 1, 1.5, math.nan, math.inf]))
def test_make_synthetic_kg(fuzz_record, arg, value):
  fuzz_record("graph.kg.make_synthetic_transe_kg")
  kwargs = {"num_entities": 6, "num_relations": 2, "num_triples": 10, "dim": 2, "test_fraction": 0.2}
  kwargs[arg] = value
  minimum = {"num_entities": 2, "num_relations": 1, "num_triples": 1, "dim": 1}.get(arg)
  if arg == "test_fraction":
    valid = 0 <= value <= 1
  else:
    valid = isinstance(value, int) and value >= minimum
  call = lambda: kg.make_synthetic_transe_kg(0, **kwargs)  # noqa: E731
  if valid:
    data = call()
    assert data.train.shape[1] == 3 and len(data.train) + len(data.test) <= kwargs["num_triples"]
    assert data.train.size == 0 or data.train[:, [0, 2]].max() < kwargs["num_entities"]
  else:
    raises_clean(call, arg)


@FUZZ
@given(st.sampled_from(["test_triples", "known_triples"]), st.sampled_from(["range", "shape", "empty"]),
       st.integers(0, 2))
def test_filtered_mrr(fuzz_record, which, fault, col):
  fuzz_record("graph.kg.filtered_mrr")
  y, r, t, _ = _kg()
  test, known = np.asarray(t[:2]), np.asarray(t)
  bad = {"range": lambda a: np.where(np.arange(3)[None, :] == col, 9, a), "shape": lambda a: a[:, :2],
         "empty": lambda a: a[:0]}[fault]
  if which == "test_triples":
    test = bad(test)
  else:
    known = bad(known)
  call = lambda: kg.filtered_mrr("transe", y, r, test, known)  # noqa: E731
  if fault == "empty" and which == "known_triples":
    assert 0 < call() <= 1                  # nothing to filter: plain MRR
  else:
    raises_clean(call, which)
