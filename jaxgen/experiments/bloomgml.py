r"""BloomGML-style energy-descent GNNs on real graphs (spec graph.md §F1, F2, F5).

Paper: Zheng, He, Qiu, Wang, Wipf, "BloomGML: Graph Machine Learning through the Lens of Bilevel Optimization",
AISTATS 2024, arXiv 2403.04763. Its repository publishes no code or settings, so this is a *BloomGML-style*
reconstruction (layers pinned down by TWIRLS, Yang et al. ICML 2021, and PyTorch Geometric; see
:mod:`jaxgen.graph`). It does **not** reproduce BloomGML's tables; the reference numbers below are the ones the spec
quotes (Kipf & Welling 2017 for GCN and label propagation, TWIRLS, H2GCN for the heterophily baselines).

Parts:

* **F1** Planetoid public split (Cora, CiteSeer): GCN (2 layers, 16 hidden, dropout 0.5, Adam lr 0.01, wd 5e-4,
  200 epochs); the BloomGML-style quadratic model = TWIRLS base configuration (one linear layer, K descent steps
  with preconditioning, α = 1, λ = 1; Cora K = 8, input dropout 0.8, lr 0.3, wd 5e-5; CiteSeer K = 16, input
  dropout 0.5, lr 0.1, wd 1e-3); label propagation (α 0.9, 50 steps; also PubMed, whose features are not shipped);
  Correct-and-Smooth on a linear base model; MLP and graph-regularised MLP (B.5.5). Features row-normalised;
  model selection: test accuracy at the epoch of best validation accuracy (ties: later epoch). Mean ± std over
  ``seeds`` seeds (all seeds trained at once with ``vmap``).
* **F2** heterophily (Texas, Wisconsin, Cornell, Actor; the 10 Geom-GCN splits, ``vmap`` over splits and λ): MLP vs
  GCN vs BloomGML-style (2-layer MLP with 64 hidden before, K = 4 descent steps, α = 1) for every λ in ``lambdas``.
  Claim: small λ (weak graph term) recovers MLP-level accuracy and beats GCN by > 15 points on the WebKB sets; large
  λ collapses toward GCN.
* **F5** synthetic knowledge graph from a ground-truth TransE model (200 entities, 5 relations, 2000 triples, 10 %
  held out): full-batch descent with :func:`jaxgen.graph.kg.kge_message_passing_step` (checked against
  ``Y - lr * jax.grad(E)`` on the first step) reaches filtered MRR > 0.5 within 300 steps.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxgen.core import metrics as metrics_lib
from jaxgen.experiments import _report

NAME = "bloomgml"
PAPER = ("Zheng, He, Qiu, Wang, Wipf, 'BloomGML: Graph Machine Learning through the Lens of Bilevel Optimization', "
         "AISTATS 2024, arXiv 2403.04763 (BloomGML-style reconstruction via TWIRLS/HALO/PyG; not its tables)")
CLAIM = ("GNN layers as descent steps on a graph energy (BloomGML-style): the quadratic-energy model matches or beats "
         "GCN on Cora/CiteSeer (GCN reference 81.5/70.3, TWIRLS ~84/74), label propagation and C&S are its special "
         "cases (LP reference 68.0/45.3/63.0), the energy weight lambda controls the homophily assumption (small "
         "lambda beats GCN by > 15 points on Texas/Wisconsin/Cornell), and KGE descent is message passing "
         "(filtered MRR > 0.5 on a synthetic TransE graph).")

REFERENCE = {
    "gcn": {"cora": 81.5, "citeseer": 70.3, "pubmed": 79.0},
    "label_propagation": {"cora": 68.0, "citeseer": 45.3, "pubmed": 63.0},
    "twirls_paper_from_memory": {"cora": 84.0, "citeseer": 74.0},
    "h2gcn_mlp": {"texas": 81.9, "wisconsin": 85.3, "cornell": 81.1, "film": 36.5},
    "h2gcn_gcn": {"texas": 59.5, "wisconsin": 59.8, "cornell": 57.0, "film": 30.3},
}
# TWIRLS README base configurations (spec B.2).
TWIRLS_PLANETOID = {
    "cora": dict(num_steps=8, input_dropout=0.8, lr=0.3, weight_decay=5e-5),
    "citeseer": dict(num_steps=16, input_dropout=0.5, lr=0.1, weight_decay=1e-3),
}
WEBKB = ("texas", "wisconsin", "cornell")


@dataclasses.dataclass(frozen=True)
class Config:
  """BloomGML-style reproduction (spec F1, F2, F5).

  Attributes:
    planetoid: datasets for the trained models (F1).
    lp_datasets: datasets for label propagation (PubMed works without features).
    seeds: seeds per F1 model (vmapped).
    gcn_epochs, twirls_epochs, mlp_epochs: training epochs (F1).
    lp_alpha, lp_steps: label propagation α and iterations.
    cs_steps, cs_alpha: Correct-and-Smooth layers and α (both stages; autoscale).
    regmlp_mu: weight μ of the graph-regularised MLP's Laplacian term (per node).
    hetero_datasets, hetero_splits: F2 datasets and number of splits.
    lambdas: λ values of the BloomGML-style model in F2 (the plot's x axis).
    hetero_steps: K in F2; hetero_epochs: epochs of the F2 models (MLP and BloomGML-style; GCN uses gcn_epochs x2).
    hetero_lr, hetero_weight_decay, hetero_hidden, hetero_dropout: F2 training settings (TWIRLS heterophily).
    kg_seeds, kg_steps, kg_lr, kg_dim, kg_negatives, kg_margin: F5.
    twirls_cora_threshold: accuracy the spec accepts for the Cora TWIRLS model (83.0 at 500 epochs, 82.0 at 150).
    seed: base seed.
  """

  planetoid: tuple[str, ...] = ("cora", "citeseer")
  lp_datasets: tuple[str, ...] = ("cora", "citeseer", "pubmed")
  seeds: int = 5
  gcn_epochs: int = 200
  twirls_epochs: int = 500
  mlp_epochs: int = 200
  lp_alpha: float = 0.9
  lp_steps: int = 50
  cs_steps: int = 50
  cs_alpha: float = 0.8
  regmlp_mu: float = 1.0
  hetero_datasets: tuple[str, ...] = ("texas", "wisconsin", "cornell", "film")
  hetero_splits: int = 10
  lambdas: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
  hetero_steps: int = 4
  hetero_epochs: int = 300
  hetero_lr: float = 0.1
  hetero_weight_decay: float = 5e-4
  hetero_hidden: int = 64
  hetero_dropout: float = 0.5
  kg_seeds: int = 3
  kg_steps: int = 300
  kg_lr: float = 1e-3
  kg_dim: int = 32
  kg_negatives: int = 16
  kg_margin: float = 1.0
  twirls_cora_threshold: float = 83.0
  seed: int = 0

  @classmethod
  def quick(cls) -> Config:
    return cls(planetoid=("cora",), seeds=2, twirls_epochs=150, twirls_cora_threshold=82.0,
               hetero_datasets=("texas", "wisconsin"), lambdas=(0.001, 1.0), hetero_epochs=200, kg_seeds=1)

  @classmethod
  def full(cls) -> Config:
    return cls()


# ---------------------------------------------------------------------------------------------------------------
# Models.


class GCN(nn.Module):
  """Kipf & Welling GCN: ``Â relu(Â X W0 + b0) W1 + b1`` with dropout on input and hidden, Glorot init."""

  hidden: int
  num_classes: int
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, graph, w_norm, *, deterministic=True):
    from jaxgen.graph import energy, ops

    key = None if deterministic else self.make_rng("dropout")
    h = energy.sparse_dropout(x, self.dropout, key, deterministic)
    h = energy.InputDense(self.hidden, kernel_init=nn.initializers.glorot_uniform(), name="dense_0")(h)
    h = nn.relu(ops.spmm(graph, w_norm, h))
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    h = nn.Dense(self.num_classes, kernel_init=nn.initializers.glorot_uniform(), use_bias=False, name="dense_1")(h)
    bias = self.param("bias_1", nn.initializers.zeros, (self.num_classes,))
    return ops.spmm(graph, w_norm, h) + bias[None, :]


def _adam_l2(lr: float, weight_decay: float) -> optax.GradientTransformation:
  """PyTorch ``Adam(weight_decay=...)``: L2 added to the gradient before Adam."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))


def _fit(init_fn, apply_fn, optimizer, labels, train_mask, val_mask, test_mask, epochs, key, *, extra=None,
         keep_best=False):
  """Full-batch training in one ``lax.scan``; selection = test accuracy at the best validation epoch (ties later).

  ``apply_fn(params, key_or_None) -> logits``. Returns a dict of scalars (and ``best_params`` if ``keep_best``).
  Pure and vmappable over ``key`` and the masks.
  """
  init_key, loop_key = jax.random.split(key)
  params = init_fn(init_key)
  opt_state = optimizer.init(params)

  def acc(logits, mask):
    return jnp.sum((jnp.argmax(logits, -1) == labels) * mask) / jnp.maximum(jnp.sum(mask), 1)

  def loss_fn(p, k):
    logits = apply_fn(p, k)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    loss = jnp.sum(ce * train_mask) / jnp.maximum(jnp.sum(train_mask), 1)
    if extra is not None:
      loss = loss + extra(logits)
    return loss

  def body(carry, k):
    params, opt_state, best_val, best_test, best_params = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, k)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    logits = apply_fn(params, None)
    val, test = acc(logits, val_mask), acc(logits, test_mask)
    better = val >= best_val
    best_val = jnp.where(better, val, best_val)
    best_test = jnp.where(better, test, best_test)
    if keep_best:
      best_params = jax.tree.map(lambda a, b: jnp.where(better, a, b), params, best_params)
    return (params, opt_state, best_val, best_test, best_params), (loss, val)

  carry0 = (params, opt_state, jnp.asarray(-1.0), jnp.asarray(0.0), params if keep_best else None)
  (params, _, best_val, best_test, best_params), (losses, vals) = jax.lax.scan(
      body, carry0, jax.random.split(loop_key, epochs))
  final = apply_fn(params, None)
  out = {"val": best_val, "test": best_test, "final_test": acc(final, test_mask), "final_loss": losses[-1],
         "val_curve": vals}
  if keep_best:
    out["best_params"] = best_params
  return out


def _prepare(data, dense_below: int = 1_000_000):
  """Row-normalised sparse features, graph with self loops + GCN weights, raw graph."""
  from jaxgen.graph import ops

  graph = data.graph._replace(nodes=None)
  n = int(data.labels.shape[0])
  x = None
  if data.graph.nodes is not None:
    x = ops.SparseFeatures.from_dense(data.graph.nodes, row_normalize=True)
    if x.shape[0] * x.shape[1] <= dense_below:  # small graphs (WebKB): a dense matmul beats gather/scatter
      x = np.asarray(x.todense())
  loops = ops.add_self_loops(graph, n)
  w_gcn = ops.sym_norm_weights(loops, ops.degree(loops, num_nodes=n))
  return x, graph, loops, w_gcn


def _ms(values) -> dict[str, float]:
  values = 100.0 * np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "std": float(values.std()), "n": int(values.size)}


# ---------------------------------------------------------------------------------------------------------------
# F1.


def _planetoid_models(config: Config, name: str, data, key) -> dict[str, Any]:
  from jaxgen.graph import energy, label_propagation

  x, graph, loops, w_gcn = _prepare(data)
  c = data.num_classes
  labels = jnp.asarray(data.labels)
  masks = [jnp.asarray(m, jnp.float32) for m in (data.train_mask, data.val_mask, data.test_mask)]
  keys = jax.random.split(key, config.seeds)
  out: dict[str, Any] = {}

  def run(model_apply, model_init, optimizer, epochs, extra=None, keep_best=False):
    fit = lambda k: _fit(model_init, model_apply, optimizer, labels, *masks, epochs, k, extra=extra,
                         keep_best=keep_best)
    return jax.jit(jax.vmap(fit))(keys)

  # GCN.
  gcn = GCN(16, c, 0.5)
  res = run(lambda p, k: gcn.apply(p, x, loops, w_gcn, deterministic=k is None, rngs=None if k is None else
                                   {"dropout": k}),
            lambda k: gcn.init(k, x, loops, w_gcn), _adam_l2(0.01, 5e-4), config.gcn_epochs)
  out["gcn"] = _ms(res["test"])

  # BloomGML-style quadratic model = TWIRLS base configuration.
  tw = TWIRLS_PLANETOID[name]
  model = energy.BloomModel(before=(c,), num_steps=tw["num_steps"], alpha=1.0, lam=1.0, precondition=True,
                            input_dropout=tw["input_dropout"])
  res = run(lambda p, k: model.apply(p, x, loops, deterministic=k is None,
                                     rngs=None if k is None else {"dropout": k}),
            lambda k: model.init(k, x, loops), _adam_l2(tw["lr"], tw["weight_decay"]), config.twirls_epochs)
  out["bloom_quadratic"] = _ms(res["test"])

  # MLP (2 layers, 64 hidden) and the graph-regularised MLP.
  mlp = energy.BloomModel(before=(64, c), num_steps=0, input_dropout=0.5, dropout=0.5)
  mlp_apply = lambda p, k: mlp.apply(p, x, loops, deterministic=k is None, rngs=None if k is None else
                                     {"dropout": k})
  mlp_init = lambda k: mlp.init(k, x, loops)
  res = run(mlp_apply, mlp_init, _adam_l2(0.01, 5e-4), config.mlp_epochs)
  out["mlp"] = _ms(res["test"])
  n = labels.shape[0]
  reg = lambda logits: config.regmlp_mu * label_propagation.laplacian_regularizer(graph, logits) / n * 2.0
  res = run(mlp_apply, mlp_init, _adam_l2(0.01, 5e-4), config.mlp_epochs, extra=reg)
  out["graph_reg_mlp"] = _ms(res["test"])

  # Correct-and-Smooth on a linear base model (predictions of the best-validation epoch).
  lin = energy.BloomModel(before=(c,), num_steps=0, input_dropout=0.5)
  lin_apply = lambda p, k: lin.apply(p, x, loops, deterministic=k is None, rngs=None if k is None else
                                     {"dropout": k})
  res = run(lin_apply, lambda k: lin.init(k, x, loops), _adam_l2(0.01, 5e-4), config.mlp_epochs, keep_best=True)
  out["cs_base_linear"] = _ms(res["test"])

  @jax.jit
  @jax.vmap
  def cs(params):
    y_soft = jax.nn.softmax(lin_apply(params, None), -1)
    _, smoothed = label_propagation.correct_and_smooth(
        graph, y_soft, labels, masks[0] > 0, num_correction_steps=config.cs_steps, correction_alpha=config.cs_alpha,
        num_smoothing_steps=config.cs_steps, smoothing_alpha=config.cs_alpha, autoscale=True)
    return jnp.sum((jnp.argmax(smoothed, -1) == labels) * masks[2]) / jnp.sum(masks[2])

  out["correct_and_smooth"] = _ms(cs(res["best_params"]))
  return out


def _label_propagation_accuracy(config: Config, data) -> float:
  from jaxgen.graph import label_propagation

  graph = data.graph._replace(nodes=None)
  soft = label_propagation.label_propagation(graph, jnp.asarray(data.labels), jnp.asarray(data.train_mask),
                                             data.num_classes, num_steps=config.lp_steps, alpha=config.lp_alpha)
  pred = np.asarray(jnp.argmax(soft, -1))
  return float(100.0 * np.mean(pred[data.test_mask] == data.labels[data.test_mask]))


# ---------------------------------------------------------------------------------------------------------------
# F2.


def _heterophily(config: Config, name: str, key) -> dict[str, Any]:
  from jaxgen.data import load_heterophily
  from jaxgen.graph import energy

  splits = [load_heterophily(name, s) for s in range(config.hetero_splits)]
  data = splits[0]
  x, graph, loops, w_gcn = _prepare(data)
  c = data.num_classes
  labels = jnp.asarray(data.labels)
  stack = lambda attr: jnp.stack([jnp.asarray(getattr(s, attr), jnp.float32) for s in splits])
  train_m, val_m, test_m = stack("train_mask"), stack("val_mask"), stack("test_mask")
  keys = jax.random.split(key, config.hetero_splits)
  out: dict[str, Any] = {}

  def run_splits(model_apply, model_init, optimizer, epochs):
    fit = lambda k, tr, va, te: _fit(model_init, model_apply, optimizer, labels, tr, va, te, epochs, k)
    return jax.vmap(fit)(keys, train_m, val_m, test_m)

  gcn = GCN(config.hetero_hidden, c, 0.5)
  gcn_apply = lambda p, k: gcn.apply(p, x, loops, w_gcn, deterministic=k is None,
                                     rngs=None if k is None else {"dropout": k})
  res = jax.jit(lambda: run_splits(gcn_apply, lambda k: gcn.init(k, x, loops, w_gcn), _adam_l2(0.01, 5e-4),
                                   2 * config.gcn_epochs))()
  out["gcn"] = _ms(res["test"])

  model = energy.BloomModel(before=(config.hetero_hidden, c), num_steps=config.hetero_steps, alpha=1.0,
                            precondition=True, input_dropout=config.hetero_dropout, dropout=config.hetero_dropout)
  opt = _adam_l2(config.hetero_lr, config.hetero_weight_decay)

  def for_lam(lam):
    apply = lambda p, k: model.apply(p, x, loops, lam=lam, deterministic=k is None,
                                     rngs=None if k is None else {"dropout": k})
    return run_splits(apply, lambda k: model.init(k, x, loops), opt, config.hetero_epochs)

  lams = jnp.asarray(config.lambdas, jnp.float32)
  res = jax.jit(jax.vmap(for_lam))(lams)
  out["bloom_by_lambda"] = {f"{lam:g}": _ms(res["test"][i]) for i, lam in enumerate(config.lambdas)}

  mlp = energy.BloomModel(before=(config.hetero_hidden, c), num_steps=0, input_dropout=config.hetero_dropout,
                          dropout=config.hetero_dropout)
  res = jax.jit(lambda: run_splits(
      lambda p, k: mlp.apply(p, x, loops, deterministic=k is None, rngs=None if k is None else {"dropout": k}),
      lambda k: mlp.init(k, x, loops), opt, config.hetero_epochs))()
  out["mlp"] = _ms(res["test"])
  return out


# ---------------------------------------------------------------------------------------------------------------
# F5.


def _knowledge_graph(config: Config) -> dict[str, Any]:
  from jaxgen.graph import kg

  data = kg.make_synthetic_transe_kg(config.seed)
  known = np.concatenate([data.train, data.test])
  mrrs, finals = [], []
  for s in range(config.kg_seeds):
    y, r, trace = jax.jit(lambda k: kg.train_kge(
        k, "transe", data.train, data.num_entities, data.num_relations, dim=config.kg_dim, num_steps=config.kg_steps,
        lr=config.kg_lr, num_negatives=config.kg_negatives, margin=config.kg_margin))(jax.random.key(config.seed + s))
    mrrs.append(kg.filtered_mrr("transe", y, r, data.test, known))
    finals.append(float(trace[-1]))
  # Message passing == autodiff gradient descent (one step from a random point, float64 so that summation order
  # does not hide a mismatch).
  key = jax.random.key(config.seed)
  with jax.enable_x64(True):
    y0 = jax.random.normal(key, (data.num_entities, config.kg_dim), jnp.float64) * 0.3
    r0 = jax.random.normal(jax.random.fold_in(key, 1), (data.num_relations, config.kg_dim), jnp.float64) * 0.3
    tr = jnp.asarray(data.train)
    neg = kg.sample_negative_tails(jax.random.fold_in(key, 2), tr, data.num_entities, config.kg_negatives)
    y1, r1 = kg.kge_message_passing_step("transe", y0, r0, tr, neg, config.kg_lr, margin=config.kg_margin)
    gy, gr = jax.grad(lambda a, b: kg.kge_energy("transe", a, b, tr, neg, margin=config.kg_margin), (0, 1))(y0, r0)
    diff = max(float(jnp.max(jnp.abs(y1 - (y0 - config.kg_lr * gy)))),
               float(jnp.max(jnp.abs(r1 - (r0 - config.kg_lr * gr)))))
  mrr = np.asarray(mrrs)
  return {"filtered_mrr": {"mean": float(mrr.mean()), "std": float(mrr.std()), "n": int(mrr.size)},
          "final_energy": float(np.mean(finals)), "step_vs_autodiff_max_abs_diff": diff,
          "num_train_triples": int(len(data.train)), "num_test_triples": int(len(data.test))}


# ---------------------------------------------------------------------------------------------------------------


def _validate(config: Config) -> None:
  for name in config.planetoid:
    if name not in TWIRLS_PLANETOID:
      raise ValueError(f"planetoid must be a subset of {tuple(TWIRLS_PLANETOID)}, got {name!r}")
  for field in ("seeds", "hetero_splits", "kg_seeds"):
    if getattr(config, field) < 1:
      raise ValueError(f"{field} must be >= 1, got {getattr(config, field)}")
  if not 1 <= config.hetero_splits <= 10:
    raise ValueError(f"hetero_splits must lie in 1..10, got {config.hetero_splits}")
  if not config.lambdas or min(config.lambdas) <= 0:
    raise ValueError(f"lambdas must be positive, got {config.lambdas}")


def run(config: Config, out_dir: str | Path, progress: bool = True) -> dict:
  """Runs F1, F2 and F5 and writes the run folder; returns the result dict (also ``result.json``)."""
  from jaxgen.data import load_planetoid

  _validate(config)
  start = time.perf_counter()
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  _report.write_config(out, NAME, config)
  key = jax.random.key(config.seed)
  tasks = ([("f1", n) for n in config.planetoid] + [("lp", n) for n in config.lp_datasets]
           + [("f2", n) for n in config.hetero_datasets] + [("f5", "synthetic")])
  f1: dict[str, Any] = {}
  lp: dict[str, float] = {}
  f2: dict[str, Any] = {}
  f5: dict[str, Any] = {}
  writer = metrics_lib.JsonlWriter(out / "metrics.jsonl")
  for i, (part, name) in enumerate(tqdm(tasks, desc=NAME, disable=not progress)):
    k = jax.random.fold_in(key, i)
    if part == "f1":
      f1[name] = _planetoid_models(config, name, load_planetoid(name), k)
      writer.write({"part": "F1", "dataset": name, **f1[name]})
    elif part == "lp":
      lp[name] = _label_propagation_accuracy(config, load_planetoid(name))
      writer.write({"part": "F1-LP", "dataset": name, "test_accuracy": lp[name]})
    elif part == "f2":
      f2[name] = _heterophily(config, name, k)
      writer.write({"part": "F2", "dataset": name, **f2[name]})
    else:
      f5 = _knowledge_graph(config)
      writer.write({"part": "F5", **f5})

  checks = _checks(config, f1, lp, f2, f5)
  held = all(checks.values())
  plots = [_plot_lambda(out, config, f2)] if f2 else []
  tables = _tables(config, f1, lp, f2, f5)
  (out / "tables.md").write_text(tables)
  metrics = {"f1": f1, "label_propagation": lp, "f2": f2, "f5": f5, "checks": checks, "reference": REFERENCE}
  measured = _measured(f1, lp, f2, f5)
  notes = (tables + "\n\n" + _NOTES)
  return _report.finish(out, name=NAME, config=config, metrics=metrics, claim=CLAIM, held=held, measured=measured,
                        plots=plots, notes=notes, wall_time_s=time.perf_counter() - start)


_NOTES = """\
**Honesty.** BloomGML publishes no code or settings; this is a BloomGML-style reconstruction whose layers are
checked against TWIRLS, HALO and PyTorch Geometric (see `tests/graph/`). It does not reproduce BloomGML's tables;
the reference columns are the numbers the spec quotes (Kipf & Welling 2017 for GCN and LP; TWIRLS from memory, not
verified; H2GCN's MLP/GCN heterophily numbers from memory, ±5). Deviations: no early stopping (best-validation
selection over all epochs), heterophily runs use one seed per split and 300 epochs (TWIRLS: 2000 with patience
200; CPU budget) and dropout 0.5 on input and hidden (TWIRLS: 0); the GCN in F2 uses 64 hidden units and 2x the
F1 epochs. Label propagation on PubMed runs without features (not shipped). Weights start from TWIRLS's
`xavier_normal_` (biases zero).

**Label propagation vs its reference.** Our LP (the spec's B.5.2 form, α 0.9, 50 steps) lands above the spec's
reference (Kipf & Welling 2017, Table 2, quoting Planetoid's baseline) by more than ±3. PyTorch Geometric's
`LabelPropagation` with the same settings on the same split gives the same test accuracy to the node
(`benchmarks/label_propagation_pyg.py`, `benchmarks/results/label_propagation_pyg.json`), so the gap is between
this variant/setup and the one behind the reference numbers, not in the implementation.

**The Cora threshold.** The spec accepts ≥ 83.0 at 500 epochs, while its own run of the official TWIRLS code (CPU,
150 epochs, 2 seeds) gave 82.95 ± 0.15. Our model follows the official code (one linear layer with
`xavier_normal_`, input dropout 0.8, Adam lr 0.3 with L2 5e-5, best-validation selection with ties to the later
epoch, fixture-checked propagation); its mean over 5 seeds sits within a few tenths of 83.0 on either side
depending on the seeds, so the check reads the measured mean as it is.
"""


def _checks(config, f1, lp, f2, f5) -> dict[str, bool]:
  checks: dict[str, bool] = {}
  for name, res in f1.items():
    checks[f"f1_gcn_within_1.5_{name}"] = abs(res["gcn"]["mean"] - REFERENCE["gcn"][name]) <= 1.5
    checks[f"f1_bloom_ge_gcn_{name}"] = res["bloom_quadratic"]["mean"] >= res["gcn"]["mean"]
    checks[f"f1_cs_beats_base_{name}"] = res["correct_and_smooth"]["mean"] > res["cs_base_linear"]["mean"]
  if "cora" in f1:
    checks["f1_bloom_cora_threshold"] = f1["cora"]["bloom_quadratic"]["mean"] >= config.twirls_cora_threshold
  for name, acc in lp.items():
    checks[f"f1_lp_within_3_{name}"] = abs(acc - REFERENCE["label_propagation"][name]) <= 3.0
  small = f"{min(config.lambdas):g}"
  for name, res in f2.items():
    if name in WEBKB:
      checks[f"f2_small_lambda_beats_gcn_by_15_{name}"] = (res["bloom_by_lambda"][small]["mean"]
                                                            - res["gcn"]["mean"]) > 15.0
  if f5:
    checks["f5_mrr_gt_0.5"] = f5["filtered_mrr"]["mean"] > 0.5
    checks["f5_step_equals_gd"] = f5["step_vs_autodiff_max_abs_diff"] <= 1e-6
  return checks


def _fmt(ms) -> str:
  return f"{ms['mean']:.1f} ± {ms['std']:.1f}"


def _tables(config, f1, lp, f2, f5) -> str:
  lines = ["## F1: Planetoid public split (test accuracy %, mean ± std over "
           f"{config.seeds} seeds)", "",
           "| dataset | GCN | ref GCN | BloomGML-style quadratic (TWIRLS cfg) | TWIRLS paper | MLP | graph-reg MLP "
           "| linear base | C&S | LP | ref LP |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for name in sorted(set(f1) | set(lp)):
    r = f1.get(name)
    cells = ([_fmt(r["gcn"]), f"{REFERENCE['gcn'][name]}", _fmt(r["bloom_quadratic"]),
              f"~{REFERENCE['twirls_paper_from_memory'].get(name, '-')}", _fmt(r["mlp"]), _fmt(r["graph_reg_mlp"]),
              _fmt(r["cs_base_linear"]), _fmt(r["correct_and_smooth"])] if r else ["-"] * 8)
    lp_cell = f"{lp[name]:.1f}" if name in lp else "-"
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {lp_cell} | {REFERENCE['label_propagation'][name]} |")
  if f2:
    lams = [f"{lam:g}" for lam in config.lambdas]
    lines += ["", f"## F2: heterophily (test accuracy %, mean ± std over {config.hetero_splits} splits)", "",
              "| dataset | MLP | ref MLP | GCN | ref GCN | " + " | ".join(f"BloomGML-style λ={l}" for l in lams) + " |",
              "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in lams) + " |"]
    for name, r in f2.items():
      lines.append(f"| {name} | {_fmt(r['mlp'])} | {REFERENCE['h2gcn_mlp'][name]} | {_fmt(r['gcn'])} | "
                   f"{REFERENCE['h2gcn_gcn'][name]} | " + " | ".join(_fmt(r["bloom_by_lambda"][l]) for l in lams)
                   + " |")
  if f5:
    lines += ["", "## F5: synthetic TransE knowledge graph", "",
              f"filtered MRR {f5['filtered_mrr']['mean']:.3f} ± {f5['filtered_mrr']['std']:.3f} "
              f"({f5['filtered_mrr']['n']} seeds, {config.kg_steps} full-batch message-passing steps; target > 0.5); "
              f"message-passing step vs autodiff gradient step: max |diff| {f5['step_vs_autodiff_max_abs_diff']:.2e}."]
  return "\n".join(lines)


def _measured(f1, lp, f2, f5) -> str:
  parts = []
  for name, r in f1.items():
    parts.append(f"{name}: GCN {_fmt(r['gcn'])}, BloomGML-style {_fmt(r['bloom_quadratic'])}, "
                 f"C&S {_fmt(r['correct_and_smooth'])}")
  if lp:
    parts.append("LP " + ", ".join(f"{k} {v:.1f}" for k, v in lp.items()))
  for name, r in f2.items():
    best = max(r["bloom_by_lambda"].items(), key=lambda kv: kv[1]["mean"])
    parts.append(f"{name}: GCN {r['gcn']['mean']:.1f}, MLP {r['mlp']['mean']:.1f}, BloomGML-style "
                 + "/".join(f"{v['mean']:.1f}" for v in r["bloom_by_lambda"].values())
                 + f" over lambda (best {best[0]})")
  if f5:
    parts.append(f"KG filtered MRR {f5['filtered_mrr']['mean']:.3f}")
  return "; ".join(parts) + "."


def _plot_lambda(out: Path, config: Config, f2) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(f2), figsize=(3.6 * len(f2), 3.2), squeeze=False)
  lams = np.asarray(config.lambdas)
  for ax, (name, r) in zip(axes[0], f2.items()):
    m = np.array([r["bloom_by_lambda"][f"{l:g}"]["mean"] for l in lams])
    s = np.array([r["bloom_by_lambda"][f"{l:g}"]["std"] for l in lams])
    ax.errorbar(lams, m, yerr=s, marker="o", label="BloomGML-style")
    ax.axhline(r["mlp"]["mean"], color="tab:green", ls="--", label="MLP")
    ax.axhline(r["gcn"]["mean"], color="tab:red", ls=":", label="GCN")
    ax.set_xscale("log")
    ax.set_xlabel("λ (graph-term weight)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(name)
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.suptitle("Heterophily: accuracy vs λ (small λ = weak homophily assumption)")
  fig.tight_layout()
  fig.savefig(out / "accuracy_vs_lambda.png", dpi=110)
  plt.close(fig)
  return "accuracy_vs_lambda.png"
