r"""Grokking on modular addition: AdamW vs ⊥AdamW vs StableMax vs float64 softmax (spec E2).

Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability", ICLR 2025, arXiv 2501.04697.

Task: all pairs :math:`(a, b) \in \mathbb Z_{p}^2` with :math:`p = 113`, label :math:`(a + b) \bmod p`, input
``one_hot(a) ⊕ one_hot(b)`` (226-dim); a random 40 % of the 12,769 pairs is the training set, the rest the test
set; full-batch training (one optimizer step per epoch). Model: MLP 226→200→200→113, ReLU, no biases, float32,
PyTorch-default-like init (uniform :math:`\pm 1/\sqrt{\text{fan\_in}}`).

Arms (``Config.arms``):

* ``adamw`` — softmax cross-entropy in float32, AdamW lr 0.01, β (0.9, 0.99), ε 1e-25, λ 0 (the reference CLI).
* ``perp_adamw`` — ⊥Grad (:func:`jaxgen.optim.perp_grad`) chained with AdamW lr 0.01, β (0.9, 0.999), ε 1e-8,
  λ 0: the hyper-parameters the reference ⊥AdamW runs really used (its wrapper drops the CLI's β2/ε).
* ``stablemax`` — StableMax cross-entropy (:func:`jaxgen.stability.stablemax_cross_entropy`, computed in float64
  like the reference), AdamW β2 0.999, ε 1e-25.
* ``float64`` — softmax cross-entropy computed in float64 (logits upcast), AdamW as in ``adamw``.

Every ``log_every`` epochs: train/test accuracy, train loss, Softmax-Collapse fraction of the training logits in
float32 (:func:`jaxgen.stability.softmax_collapse_fraction`), the fraction of exactly-zero per-example float32
cross-entropy terms, the fraction of exactly-zero terms of the arm's own loss, and the global weight norm.

Claim decision (``held``), the spec's CI-sized pass criteria: ⊥AdamW reaches test accuracy ≥ 99 % within
``criterion_epoch`` (300) epochs, and plain AdamW has test accuracy < 5 % at epoch ``criterion_epoch``. The
StableMax / float64 arms are reported (first epoch at ≥ 99 % test accuracy, if any) but not part of ``held``: in
the paper they grok only after thousands of epochs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxgen.core import metrics as metrics_lib
from jaxgen.experiments import _report

NAME = "grokking"
PAPER = ("Prieto, Barsbey, Mediano, Birdal, 'Grokking at the Edge of Numerical Stability', ICLR 2025, "
         "arXiv 2501.04697")
CLAIM = ("Without regularisation, training past 100% train accuracy pushes the logits towards Softmax Collapse "
         "(naive loss minimisation scales the weights) and delays or prevents grokking; ⊥Grad, which removes the "
         "gradient component along the weights, groks modular addition almost at once. Spec E2 pass criteria: "
         "⊥AdamW test accuracy >= 99% within 300 epochs, plain AdamW < 5% at 300 epochs (reference PyTorch run, "
         "seed 42: ⊥AdamW 99.7% at epoch 110; AdamW <= 0.07% through epoch 300).")

ARMS = ("adamw", "perp_adamw", "stablemax", "float64")


@dataclasses.dataclass(frozen=True)
class Config:
  """Modular-addition grokking run.

  Attributes:
    modulus: :math:`p` (113).
    train_fraction: share of all :math:`p^2` pairs used for training (0.4).
    hidden: MLP width (200); the MLP has two hidden ReLU layers and no biases.
    arms: subset of ``("adamw", "perp_adamw", "stablemax", "float64")``.
    num_epochs: full-batch epochs (= optimizer steps) per arm.
    log_every: evaluation period in epochs (also the length of one compiled ``lax.scan`` chunk).
    learning_rate: AdamW learning rate of every arm (0.01).
    adamw_b2, adamw_eps: β2 and ε of the ``adamw`` and ``float64`` arms (0.99, 1e-25).
    perp_b2, perp_eps: β2 and ε of ``perp_adamw`` (0.999, 1e-8).
    stablemax_b2, stablemax_eps: β2 and ε of ``stablemax`` (0.999, 1e-25).
    weight_decay: AdamW λ of every arm (0).
    criterion_epoch: epoch at which the pass criteria are evaluated (300).
    grok_accuracy: test accuracy that counts as grokked (0.99).
    no_grok_accuracy: plain AdamW must stay below this test accuracy at ``criterion_epoch`` (0.05).
    seed: data split and initialisation seed (42, as the reference measurement).
  """

  modulus: int = 113
  train_fraction: float = 0.4
  hidden: int = 200
  arms: tuple[str, ...] = ARMS
  num_epochs: int = 300
  log_every: int = 10
  learning_rate: float = 0.01
  adamw_b2: float = 0.99
  adamw_eps: float = 1e-25
  perp_b2: float = 0.999
  perp_eps: float = 1e-8
  stablemax_b2: float = 0.999
  stablemax_eps: float = 1e-25
  weight_decay: float = 0.0
  criterion_epoch: int = 300
  grok_accuracy: float = 0.99
  no_grok_accuracy: float = 0.05
  seed: int = 42

  @classmethod
  def quick(cls) -> Config:
    """The two arms of the pass criteria, 300 epochs."""
    return cls(arms=("adamw", "perp_adamw"), num_epochs=300)

  @classmethod
  def full(cls) -> Config:
    """All four arms; StableMax and float64 need many more epochs than the criteria's 300."""
    return cls(num_epochs=4000, log_every=20)


def modular_addition_data(modulus: int, train_fraction: float, seed: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """All pairs ``(a, b)`` of ``Z_p``, label ``(a + b) mod p``, randomly split.

  Returns:
    ``(train_pairs [N_train, 2] int32, train_labels [N_train], test_pairs, test_labels)``; the split is a
    permutation drawn from ``numpy.random.default_rng(seed)``.
  """
  if not isinstance(modulus, int) or modulus < 2:
    raise ValueError(f"modulus must be an int >= 2, got {modulus!r}")
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
  a, b = np.meshgrid(np.arange(modulus), np.arange(modulus), indexing="ij")
  pairs = np.stack([a.ravel(), b.ravel()], axis=1).astype(np.int32)      # [p^2, 2]
  labels = ((pairs[:, 0] + pairs[:, 1]) % modulus).astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(pairs))
  num_train = int(round(train_fraction * len(pairs)))
  tr, te = order[:num_train], order[num_train:]
  return pairs[tr], labels[tr], pairs[te], labels[te]


def _validate(config: Config) -> None:
  bad = [a for a in config.arms if a not in ARMS]
  if not config.arms or bad:
    raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {config.arms!r}")
  for name in ("num_epochs", "log_every", "hidden", "criterion_epoch"):
    if int(getattr(config, name)) < 1:
      raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
  if config.num_epochs % config.log_every:
    raise ValueError(f"log_every ({config.log_every}) must divide num_epochs ({config.num_epochs})")


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[jax.Array]:
  """Bias-free MLP weights ``[fan_in, fan_out]`` with PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
  keys = jax.random.split(key, len(sizes) - 1)
  return [jax.random.uniform(k, (m, n), jnp.float32, -1.0, 1.0) / np.sqrt(m)
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def mlp_logits(params: list[jax.Array], pairs: jax.Array, modulus: int) -> jax.Array:
  """Logits of the bias-free ReLU MLP on ``one_hot(a) ⊕ one_hot(b)`` (the first layer is a row lookup)."""
  first = params[0]
  h = first[pairs[:, 0]] + first[modulus + pairs[:, 1]]        # == concat(one_hot(a), one_hot(b)) @ W1, [B, H]
  for w in params[1:]:
    h = jax.nn.relu(h) @ w
  return h


def _softmax_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example ``-log_softmax(z)_y`` in the logits' dtype (as torch's ``cross_entropy``)."""
  return -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=-1)[:, 0]


def _arm_setup(arm: str, config: Config):
  from jaxgen.optim import perp_grad
  from jaxgen.stability import stablemax_cross_entropy

  lr, wd = config.learning_rate, config.weight_decay
  if arm == "perp_adamw":
    opt = optax.chain(perp_grad(), optax.adamw(lr, b1=0.9, b2=config.perp_b2, eps=config.perp_eps, weight_decay=wd))
  elif arm == "stablemax":
    opt = optax.adamw(lr, b1=0.9, b2=config.stablemax_b2, eps=config.stablemax_eps, weight_decay=wd)
  else:
    opt = optax.adamw(lr, b1=0.9, b2=config.adamw_b2, eps=config.adamw_eps, weight_decay=wd)

  def per_example_loss(logits, labels):
    if arm == "stablemax":
      return stablemax_cross_entropy(logits, labels)             # float64 under x64, like the reference
    if arm == "float64":
      return _softmax_ce(logits.astype(jnp.float64), labels)
    return _softmax_ce(logits, labels)

  precision = jax.enable_x64(True) if arm in ("stablemax", "float64") else contextlib.nullcontext()
  return opt, per_example_loss, precision


def run(config: Config, out_dir: str | Path, progress: bool = True) -> dict:
  """Train every arm full-batch, log the curves, decide the claim, and write the run folder."""
  from jaxgen.stability import softmax_collapse_fraction, zero_loss_fraction

  _validate(config)
  start_time = time.perf_counter()
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  _report.write_config(out, NAME, config)

  p = config.modulus
  train_x, train_y, test_x, test_y = modular_addition_data(p, config.train_fraction, config.seed)
  params0 = init_mlp(jax.random.key(config.seed), (2 * p, config.hidden, config.hidden, p))
  chunks = config.num_epochs // config.log_every
  writer = metrics_lib.JsonlWriter(out / "metrics.jsonl")
  bar = tqdm(total=len(config.arms) * chunks, desc=NAME, disable=not progress, dynamic_ncols=True, leave=False)
  curves: dict[str, dict[str, list]] = {}
  seconds = {}
  for arm in config.arms:
    opt, per_example_loss, precision = _arm_setup(arm, config)
    run_start = time.perf_counter()
    with precision:
      xtr, ytr, xte, yte = (jnp.asarray(a) for a in (train_x, train_y, test_x, test_y))

      def loss_fn(params):
        return jnp.mean(per_example_loss(mlp_logits(params, xtr, p), ytr))

      def evaluate(params):
        logits_tr = mlp_logits(params, xtr, p)
        logits_te = mlp_logits(params, xte, p)
        ce32 = _softmax_ce(logits_tr.astype(jnp.float32), ytr)
        own = per_example_loss(logits_tr, ytr)
        sq = sum(jnp.sum(w.astype(jnp.float32) ** 2) for w in params)
        return {
            "train_acc": jnp.mean(jnp.argmax(logits_tr, -1) == ytr),
            "test_acc": jnp.mean(jnp.argmax(logits_te, -1) == yte),
            "train_loss": jnp.mean(own).astype(jnp.float32),
            "sc_fraction": softmax_collapse_fraction(logits_tr, jnp.float32),
            "zero_loss_fraction": zero_loss_fraction(ce32),
            "own_zero_loss_fraction": zero_loss_fraction(own),
            "weight_norm": jnp.sqrt(sq),
        }

      @jax.jit
      def chunk(params, opt_state):
        def step(carry, _):
          params, opt_state = carry
          grads = jax.grad(loss_fn)(params)
          updates, opt_state = opt.update(grads, opt_state, params)
          return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), None, length=config.log_every)
        return params, opt_state, evaluate(params)

      params, opt_state = params0, opt.init(params0)
      history = {"epoch": [0], **{k: [float(v)] for k, v in jax.device_get(jax.jit(evaluate)(params)).items()}}
      for i in range(chunks):
        params, opt_state, metrics = chunk(params, opt_state)
        host = jax.device_get(metrics)
        history["epoch"].append((i + 1) * config.log_every)
        for k, v in host.items():
          history[k].append(float(v))
        bar.update(1)
        bar.set_postfix({"arm": arm, "test": f"{history['test_acc'][-1]:.3f}"}, refresh=False)
    seconds[arm] = time.perf_counter() - run_start
    curves[arm] = history
    for j, epoch in enumerate(history["epoch"]):
      writer.write({"epoch": epoch, "arm": arm, **{k: history[k][j] for k in history if k != "epoch"}})
  bar.close()

  summary = {arm: _summarize(h, config) for arm, h in curves.items()}
  held, measured = _decide(config, summary)
  plots = _plot(out, curves)
  metrics = {
      **{f"{arm}/{k}": v for arm, s in summary.items() for k, v in s.items()},
      "num_train": int(len(train_y)), "num_test": int(len(test_y)),
      "curves": {arm: {k: h[k] for k in ("epoch", "train_acc", "test_acc", "sc_fraction", "weight_norm")}
                 for arm, h in curves.items()},
  }
  notes = (
      "**Setup.** Full-batch training (one step per epoch) on a random 40% of all (a, b) pairs mod 113; MLP "
      "226-200-200-113 without biases, PyTorch-like uniform init; float32 parameters in every arm (the `float64` "
      "arm upcasts only the logits inside the loss; `stablemax` computes its loss in float64 like the reference).\n\n"
      "**Hyper-parameters.** `adamw`/`float64`: AdamW lr 0.01, beta (0.9, 0.99), eps 1e-25, no weight decay (the "
      "reference CLI). `perp_adamw`: perp_grad + AdamW lr 0.01, beta (0.9, 0.999), eps 1e-8 — the values the "
      "reference runs really used (its wrapper drops the CLI's beta2/eps, see the ⊥Grad fixture). `stablemax`: "
      "beta2 0.999, eps 1e-25.\n\n"
      "**Metrics.** `sc_fraction`: fraction of training rows whose float32 softmax sum is exactly 1 (Softmax "
      "Collapse); `zero_loss_fraction`: fraction of exactly-zero float32 cross-entropy terms. Both are computed "
      "from the float32 logits in every arm, i.e. they say whether *float32 softmax* would have collapsed; the "
      "`stablemax` and `float64` arms do not train on that quantity, and `own_zero_loss_fraction` is the fraction "
      "of exactly-zero terms of the loss each arm actually minimises. `weight_norm`: global L2 norm of all "
      "weights. `first_grok_epoch`: first logged epoch with test accuracy >= "
      f"{config.grok_accuracy:.0%} (null if never).\n\n"
      "**Expected at longer horizons (paper).** Plain AdamW's SC fraction rises towards 1 and it never groks; "
      "StableMax and float64 softmax grok without weight decay after thousands to tens of thousands of epochs. "
      "The same seed drives the data split and the initialisation; no seed was tuned.")
  wall = time.perf_counter() - start_time
  return _report.finish(out, name=NAME, config=config, metrics=metrics, claim=CLAIM, held=held, measured=measured,
                        plots=plots, notes=notes, wall_time_s=wall, timing={"seconds_per_arm": seconds})


def _at_epoch(history: dict, key: str, epoch: int) -> float:
  epochs = np.asarray(history["epoch"])
  idx = int(np.searchsorted(epochs, epoch, side="right")) - 1
  return float(history[key][max(idx, 0)])


def _summarize(history: dict, config: Config) -> dict:
  test = np.asarray(history["test_acc"])
  train = np.asarray(history["train_acc"])
  epochs = np.asarray(history["epoch"])
  grok = np.flatnonzero(test >= config.grok_accuracy)
  fit = np.flatnonzero(train >= 1.0)
  crit = min(config.criterion_epoch, int(epochs[-1]))
  return {
      "final_test_acc": float(test[-1]),
      "final_train_acc": float(train[-1]),
      "final_train_loss": float(history["train_loss"][-1]),
      "final_sc_fraction": float(history["sc_fraction"][-1]),
      "final_zero_loss_fraction": float(history["zero_loss_fraction"][-1]),
      "final_own_zero_loss_fraction": float(history["own_zero_loss_fraction"][-1]),
      "final_weight_norm": float(history["weight_norm"][-1]),
      "initial_weight_norm": float(history["weight_norm"][0]),
      "test_acc_at_criterion": _at_epoch(history, "test_acc", crit),
      "max_test_acc_by_criterion": float(test[epochs <= crit].max()),
      "first_grok_epoch": int(epochs[grok[0]]) if grok.size else None,
      "first_full_train_epoch": int(epochs[fit[0]]) if fit.size else None,
      "final_epoch": int(epochs[-1]),
  }


def _decide(config: Config, summary: dict) -> tuple[bool, str]:
  parts = []
  for arm, s in summary.items():
    grok = f"first >= {config.grok_accuracy:.0%} test at epoch {s['first_grok_epoch']}" if s["first_grok_epoch"] \
        else f"never >= {config.grok_accuracy:.0%} test"
    parts.append(f"{arm}: test acc {s['test_acc_at_criterion']:.2%} at epoch "
                 f"{min(config.criterion_epoch, s['final_epoch'])} ({grok}; final test {s['final_test_acc']:.2%}, "
                 f"SC {s['final_sc_fraction']:.2f}, |w| {s['initial_weight_norm']:.1f} -> "
                 f"{s['final_weight_norm']:.1f} at epoch {s['final_epoch']})")
  measured = "; ".join(parts) + "."
  if "adamw" not in summary or "perp_adamw" not in summary:
    return False, measured + " The pass criteria need the adamw and perp_adamw arms."
  if config.num_epochs < config.criterion_epoch:
    return False, measured + f" Runs shorter than the criterion epoch {config.criterion_epoch}: not decided."
  perp_ok = summary["perp_adamw"]["max_test_acc_by_criterion"] >= config.grok_accuracy
  adamw_ok = summary["adamw"]["test_acc_at_criterion"] < config.no_grok_accuracy
  verdict = (f" Criteria: perp_adamw >= {config.grok_accuracy:.0%} within {config.criterion_epoch} epochs: "
             f"{'yes' if perp_ok else 'no'}; adamw < {config.no_grok_accuracy:.0%} at epoch "
             f"{config.criterion_epoch}: {'yes' if adamw_ok else 'no'}.")
  return bool(perp_ok and adamw_ok), measured + verdict


def _plot(out: Path, curves: dict) -> list[str]:
  def series(key):
    return {arm: (h["epoch"], h[key]) for arm, h in curves.items()}

  loss = {arm: (h["epoch"], np.maximum(np.asarray(h["train_loss"]), 1e-30)) for arm, h in curves.items()}
  p1 = _report.plot_curves(out / "accuracy.png", [
      {"series": series("train_acc"), "xlabel": "epoch", "ylabel": "train accuracy", "title": "train accuracy"},
      {"series": series("test_acc"), "xlabel": "epoch", "ylabel": "test accuracy", "title": "test accuracy"},
      {"series": loss, "xlabel": "epoch", "ylabel": "train loss", "logy": True, "title": "train loss"},
  ], title="Modular addition mod 113: grokking")
  p2 = _report.plot_curves(out / "collapse.png", [
      {"series": series("sc_fraction"), "xlabel": "epoch", "ylabel": "SC fraction (fp32)",
       "title": "Softmax Collapse"},
      {"series": series("own_zero_loss_fraction"), "xlabel": "epoch", "ylabel": "fraction of zero loss terms",
       "title": "exactly-zero terms of each arm's own loss"},
      {"series": series("weight_norm"), "xlabel": "epoch", "ylabel": "||w||_2", "title": "weight norm"},
  ])
  return [p1.name, p2.name]
