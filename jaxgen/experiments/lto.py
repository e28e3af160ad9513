r"""Learning to Obstruct (LTO) on a conv4 backbone: obstruct four few-shot learners on restricted classes.

Paper: Zheng, Yang, Yeh, "Learning to Obstruct Few-Shot Image Classification over Restricted Classes", ECCV 2024,
arXiv 2409.19210. Library: :mod:`jaxgen.immunization.lto` and :mod:`jaxgen.immunization.fsc`.

Per dataset (``datasets``; Omniglot and MNIST, CPU-sized):

1. **Pre-train** a :class:`jaxgen.nn.Conv4` backbone (``norm="none"``, ``features`` channels), Adam
   ``pretrain_lr``, ``pretrain_steps`` steps.

   * ``omniglot``: Lake et al.'s 964 *background* characters (20 drawings each, resized to ``image_size``), trained
     episodically with the ProtoNet loss (``pretrain_way``-way, ``pretrain_shots``-shot episodes; a 964-way
     classification head learns far too slowly for a CPU budget).
     Few-shot classes: the first ``chars_per_alphabet`` characters of each alphabet in ``alphabets`` from the
     (disjoint) *evaluation* set; the restricted set :math:`R` is all characters of ``restricted_alphabet``; an
     alphabet is a group (superclass). Drawers 0-9 form the few-shot pool (support and obstruct samples), drawers
     10-19 the test set.
   * ``mnist`` (the spec's digits experiment, §4.6, on the shipped MNIST): pre-train on the first
     ``mnist_pretrain_size`` training images (all ten digits); pool = the first ``mnist_pool_per_class`` test images
     of each digit from the first half of the test split (pre-training: a linear classification head, batch
     ``pretrain_batch``), test = ``mnist_test_per_class`` per digit from the second
     half; :math:`R` = ``mnist_restricted`` (digits 0, 1, 2); one group per digit.
2. **Evaluate before**: each attacker (protonet, linear_probe, finetune, maml_like with the spec's attack steps,
   ``attack_steps``) gets ``k_shot = 5`` samples per class from the pool, ``eval_reps`` draws (one key shared by
   every model), and is scored on the test set: :math:`acc_R`, :math:`acc_O`, per group.
3. **Obstruct** with LTO: def learner ``def_method`` (finetune, ``def_steps`` inner SGD steps, ``def_shots`` per
   class), obstruct set ``obstruct_shots`` per class disjoint from the support, ``outer_steps`` Adam steps
   (``outer_lr``, clip 1.0, :math:`\lambda_r = \lambda_o = 1`, cap :math:`\min(CE_R, 5)`), exact meta-gradient
   through the inner ``lax.scan``. Variants: ``"first_order"`` (same, first-order meta-gradient) and ``"naive"``
   (no inner loop: the same loss through a frozen head = normalized class prototypes of the pre-trained backbone on
   the pool, the analogue of the paper's frozen-classifier baseline).
4. **Evaluate after** every variant with the same attackers and keys; DropRatio against "before".

Claim decision (``held``), the spec's pass criteria on every dataset and attacker: :math:`acc_R` falls by at
least ``min_restricted_drop`` points, :math:`acc_O` by at most ``max_other_drop`` points, DropRatio
:math:`\ge` ``min_drop_ratio`` (or flagged: no other-class drop), and :math:`acc_R` after LTO is at least
``naive_margin`` points below the naive baseline's.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxgen.core import metrics as metrics_lib
from jaxgen.experiments import _report

NAME = "lto"
PAPER = ("Zheng, Yang, Yeh, 'Learning to Obstruct Few-Shot Image Classification over Restricted Classes', "
         "ECCV 2024, arXiv 2409.19210")
CLAIM = ("Learning to Obstruct makes few-shot learners fail on restricted classes while other classes keep their "
         "accuracy: restricted-class accuracy drops far more than other-class accuracy (DropRatio well above 1) for "
         "every few-shot method, and obstructing without the inner few-shot loop obstructs much less.")

DATASETS = ("omniglot", "mnist")
METHODS = ("protonet", "linear_probe", "finetune", "maml_like")
VARIANTS = ("lto", "first_order", "naive")


@dataclasses.dataclass(frozen=True)
class Config:
  """LTO reproduction on conv4 backbones.

  Attributes:
    datasets: subset of ``("omniglot", "mnist")``.
    image_size: side length of every image (Omniglot from 105, MNIST from 28, exact area averaging).
    features: conv4 channels (64 in the few-shot literature; fewer on CPU).
    pretrain_steps, pretrain_lr: backbone pre-training (Adam).
    pretrain_way, pretrain_shots: Omniglot episodes (ProtoNet loss, ``pretrain_shots`` support and query drawings
      of ``pretrain_way`` background characters).
    pretrain_batch: MNIST pre-training batch (linear classification head).
    alphabets: Omniglot evaluation alphabets that provide the few-shot classes.
    restricted_alphabet: the restricted one (must be in ``alphabets``).
    chars_per_alphabet: characters taken from each alphabet.
    mnist_pretrain_size, mnist_pool_per_class, mnist_test_per_class, mnist_restricted: MNIST split (see module doc).
    def_method, def_steps, def_shots, def_lr: the obstructor's learner ("def" copy).
    obstruct_shots: obstruct (query) samples per class in each task.
    outer_steps, outer_lr: LTO outer loop (Adam, clip 1.0).
    restricted_cap: cap on CE_R.
    variants: subset of ``("lto", "first_order", "naive")``.
    k_shot: attacker shots per class; eval_reps: support draws per evaluation.
    backbone_lr_scale: the backbone's inner step is ``lr * backbone_lr_scale`` in finetune / maml_like (def learner
      and attackers; the head keeps ``lr``): the normalization-free conv4 needs a much smaller step than the head.
    attack_steps, attack_lr: inner steps and learning rates of (linear_probe, finetune, maml_like) as attackers.
    min_restricted_drop, max_other_drop, min_drop_ratio, naive_margin: pass criteria (points).
    seed: every key derives from it.
  """

  datasets: tuple[str, ...] = DATASETS
  image_size: int = 16
  features: int = 32
  pretrain_steps: int = 200
  pretrain_batch: int = 64
  pretrain_lr: float = 1e-3
  pretrain_way: int = 20
  pretrain_shots: int = 2
  alphabets: tuple[str, ...] = ("Atlantean", "Ge_ez", "Keble", "Tengwar")
  restricted_alphabet: str = "Atlantean"
  chars_per_alphabet: int = 3
  mnist_pretrain_size: int = 10000
  mnist_pool_per_class: int = 20
  mnist_test_per_class: int = 50
  mnist_restricted: tuple[int, ...] = (0, 1, 2)
  def_method: str = "finetune"
  def_steps: int = 2
  def_shots: int = 4
  def_lr: float = 0.05
  backbone_lr_scale: float = 0.04
  obstruct_shots: int = 3
  outer_steps: int = 60
  outer_lr: float = 1e-3
  restricted_cap: float = 5.0
  variants: tuple[str, ...] = ("lto", "naive")
  k_shot: int = 5
  eval_reps: int = 2
  attack_steps: tuple[int, int, int] = (100, 30, 5)
  attack_lr: tuple[float, float, float] = (0.1, 0.05, 0.2)
  min_restricted_drop: float = 30.0
  max_other_drop: float = 10.0
  min_drop_ratio: float = 3.0
  naive_margin: float = 25.0
  seed: int = 0

  @classmethod
  def quick(cls) -> Config:
    # About a minute on 2 CPU cores, half of it XLA compilation (one program per attacker, per obstruction
    # variant and for pre-training). A one-step def learner compiles in half the time of a two-step one.
    return cls(datasets=("omniglot",), image_size=16, features=32, pretrain_steps=150, alphabets=(
        "Atlantean", "Ge_ez", "Keble"), chars_per_alphabet=3, def_steps=1, outer_steps=20, variants=("lto", "naive"),
               eval_reps=1, attack_steps=(50, 10, 5))

  @classmethod
  def full(cls) -> Config:
    return cls()


def _validate(config: Config) -> None:
  for name, values, allowed in (("datasets", config.datasets, DATASETS), ("variants", config.variants, VARIANTS)):
    bad = [v for v in values if v not in allowed]
    if not values or bad:
      raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {values!r}")
  if "lto" not in config.variants:
    raise ValueError(f"variants must contain 'lto', got {config.variants!r}")
  if config.restricted_alphabet not in config.alphabets:
    raise ValueError(f"restricted_alphabet {config.restricted_alphabet!r} is not one of alphabets {config.alphabets}")
  if len(config.alphabets) < 2:
    raise ValueError(f"alphabets needs the restricted alphabet and at least one other, got {config.alphabets!r}")
  bad_digits = [d for d in config.mnist_restricted if not 0 <= int(d) <= 9]
  if not config.mnist_restricted or bad_digits or len(set(config.mnist_restricted)) >= 10:
    raise ValueError(f"mnist_restricted must name some (not all) of the digits 0..9, got {config.mnist_restricted!r}")
  if config.def_shots + config.obstruct_shots > 10 and "omniglot" in config.datasets:
    raise ValueError("def_shots + obstruct_shots must be <= 10 (the Omniglot pool has 10 drawings per class)")
  if config.k_shot > 10:
    raise ValueError(f"k_shot must be <= 10 (pool size), got {config.k_shot}")
  if len(config.attack_steps) != 3 or len(config.attack_lr) != 3:
    raise ValueError("attack_steps and attack_lr must give (linear_probe, finetune, maml_like) values, got "
                     f"{config.attack_steps!r} and {config.attack_lr!r}")


# ------------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------------


def _omniglot_data(config: Config) -> dict[str, Any]:
  from jaxgen.data import load_omniglot

  evaluation = load_omniglot(split="evaluation", image_size=config.image_size)
  alphabet_of = [name.split("/")[0] for name in evaluation.class_names]
  missing = [a for a in config.alphabets if a not in alphabet_of]
  if missing:
    raise ValueError(f"alphabets {missing} are not in the Omniglot evaluation set "
                     f"({sorted(set(alphabet_of))})")
  rows, groups, names = [], [], []
  for g, alphabet in enumerate(config.alphabets):
    idx = [i for i, a in enumerate(alphabet_of) if a == alphabet][:config.chars_per_alphabet]
    if len(idx) < config.chars_per_alphabet:
      raise ValueError(f"alphabet {alphabet!r} has only {len(idx)} characters (< chars_per_alphabet)")
    rows += idx
    groups += [g] * len(idx)
    names += [evaluation.class_names[i] for i in idx]
  background = load_omniglot(split="background", image_size=config.image_size)
  n_bg = background.images.shape[0]
  pre_x = background.images[..., None]                                                      # [964, 20, S, S, 1]
  pre_y = np.arange(n_bg, dtype=np.int32)
  images = evaluation.images[np.asarray(rows)][..., None]                                  # [N, 20, S, S, 1]
  groups = np.asarray(groups, np.int32)
  restricted = np.nonzero(groups == config.alphabets.index(config.restricted_alphabet))[0]
  test_x = images[:, 10:].reshape(-1, *images.shape[2:])
  test_y = np.repeat(np.arange(len(rows), dtype=np.int32), 10)
  return {"pretrain": (pre_x, pre_y, n_bg), "pretrain_mode": "protonet", "pool": images[:, :10],
          "test": (test_x, test_y), "restricted": restricted, "groups": groups, "group_names": list(config.alphabets),
          "class_names": names}


def _mnist_data(config: Config) -> dict[str, Any]:
  from jaxgen.data import area_resize_matrix, load_mnist

  mnist = load_mnist()
  resize = area_resize_matrix(28, config.image_size).astype(np.float32)

  def scale(a):   # uint8 [n, 28, 28] -> float32 [n, S, S, 1] in [0, 1], area-averaged to image_size
    return (resize @ (a.astype(np.float32) / 255.0) @ resize.T)[..., None]

  pre_x = scale(mnist.train_images[:config.mnist_pretrain_size])
  pre_y = mnist.train_labels[:config.mnist_pretrain_size].astype(np.int32)
  half = mnist.test_images.shape[0] // 2
  pool_idx, test_idx = [], []
  for d in range(10):
    first = np.nonzero(mnist.test_labels[:half] == d)[0][:config.mnist_pool_per_class]
    second = half + np.nonzero(mnist.test_labels[half:] == d)[0][:config.mnist_test_per_class]
    pool_idx.append(first)
    test_idx.append(second)
  pool = scale(mnist.test_images[np.stack(pool_idx)])                                      # [10, P, 28, 28, 1]
  test_idx = np.concatenate(test_idx)
  restricted = np.asarray(sorted(set(int(d) for d in config.mnist_restricted)), np.int32)
  return {"pretrain": (pre_x, pre_y, 10), "pretrain_mode": "classifier", "pool": pool,
          "test": (scale(mnist.test_images[test_idx]), mnist.test_labels[test_idx].astype(np.int32)),
          "restricted": restricted, "groups": np.arange(10, dtype=np.int32),
          "group_names": [str(d) for d in range(10)], "class_names": [str(d) for d in range(10)]}


# ------------------------------------------------------------------------------------------------------------------
# Pre-training
# ------------------------------------------------------------------------------------------------------------------


def _pretrain(config: Config, module, data, key, progress: bool, desc: str):
  """Adam pre-training of the backbone: episodic ProtoNet loss (Omniglot) or a linear classification head (MNIST)."""
  import flax.linen as nn

  from jaxgen.immunization import FSCConfig, fsc_protonet

  pre_x, pre_y, n_classes = data["pretrain"]
  k_init, k_head, k_data = jax.random.split(key, 3)
  sample_shape = pre_x.shape[-3:]
  theta = module.init(k_init, jnp.zeros((1,) + sample_shape, jnp.float32))
  # The training images are an argument of the jitted step, not a closed-over constant: a constant of this size
  # would be embedded in (and slow down the compilation of) the program.
  arrays = {"x": jnp.asarray(pre_x)}
  if data["pretrain_mode"] == "protonet":           # pre_x is class-major [C, 20, S, S, 1]
    way, shots = config.pretrain_way, config.pretrain_shots
    proto_cfg = FSCConfig(module.apply, way)
    params = {"theta": theta}

    def loss_fn(p, k, arrays):
      x_all = arrays["x"]
      k_cls, k_img = jax.random.split(k)
      classes = jax.random.choice(k_cls, x_all.shape[0], (way,), replace=False)
      perms = jax.vmap(lambda kk: jax.random.permutation(kk, x_all.shape[1])[:2 * shots])(
          jax.random.split(k_img, way))                                                   # [way, 2 * shots]
      x = x_all[classes[:, None], perms]                                                  # [way, 2 * shots, ...]
      y = jnp.repeat(jnp.arange(way), shots)
      xs = x[:, :shots].reshape((-1,) + sample_shape)
      xq = x[:, shots:].reshape((-1,) + sample_shape)
      logits = fsc_protonet(p["theta"], xs, y, xq, proto_cfg)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), jnp.mean(jnp.argmax(logits, -1) == y)
  else:
    head = nn.Dense(n_classes)
    dim = int(jax.eval_shape(module.apply, theta, jnp.zeros((1,) + sample_shape)).shape[-1])
    params = {"theta": theta, "head": head.init(k_head, jnp.zeros((1, dim)))}
    arrays["y"] = jnp.asarray(pre_y)

    def loss_fn(p, k, arrays):
      x_all, y_all = arrays["x"], arrays["y"]
      idx = jax.random.randint(k, (config.pretrain_batch,), 0, x_all.shape[0])
      logits = head.apply(p["head"], module.apply(p["theta"], x_all[idx]))
      return optax.softmax_cross_entropy_with_integer_labels(logits, y_all[idx]).mean(), jnp.mean(
          jnp.argmax(logits, -1) == y_all[idx])

  opt = optax.adam(config.pretrain_lr)

  # One jitted step driven by a Python loop, not a ``lax.scan`` over steps: on XLA:CPU convolutions inside a loop
  # body run many times slower than at top level (jax-ml/jax#12868; measured ~8x for this conv4 step), and the
  # per-step dispatch costs well under a millisecond.
  @jax.jit
  def step(params, opt_state, k, arrays):
    (loss, acc), g = jax.value_and_grad(loss_fn, has_aux=True)(params, k, arrays)
    u, opt_state = opt.update(g, opt_state, params)
    return optax.apply_updates(params, u), opt_state, loss, acc

  keys = jax.random.split(k_data, config.pretrain_steps)
  opt_state, losses, accs = opt.init(params), [], []
  for i in tqdm(range(config.pretrain_steps), desc=desc, disable=not progress, leave=False, mininterval=1.0):
    params, opt_state, loss, acc = step(params, opt_state, keys[i], arrays)
    losses.append(loss)
    accs.append(acc)
  losses, accs = np.asarray(jnp.stack(losses)), np.asarray(jnp.stack(accs))
  return params["theta"], losses, accs


# ------------------------------------------------------------------------------------------------------------------
# One dataset
# ------------------------------------------------------------------------------------------------------------------


def _attack_configs(config: Config, apply_fn, n_way: int):
  from jaxgen.immunization import FSCConfig

  steps = dict(zip(("linear_probe", "finetune", "maml_like"), config.attack_steps))
  lrs = dict(zip(("linear_probe", "finetune", "maml_like"), config.attack_lr))
  return {m: FSCConfig(apply_fn, n_way, steps=steps.get(m), lr=lrs.get(m), backbone_lr_scale=config.backbone_lr_scale)
          for m in METHODS}


def _evaluate_all(theta, data, attack_cfgs, key, config: Config) -> dict[str, dict]:
  from jaxgen.immunization import evaluate_fsc

  out = {}
  for method in METHODS:
    out[method] = evaluate_fsc(theta, method, data["pool"], data["test"], key, config.k_shot, config.eval_reps,
                               cfg=attack_cfgs[method], restricted_labels=data["restricted"],
                               group_of_label=data["groups"])
  return out


def _run_dataset(name: str, config: Config, key: jax.Array, writer, progress: bool) -> dict[str, Any]:
  from jaxgen import immunization as imm
  from jaxgen.nn import Conv4

  data = _omniglot_data(config) if name == "omniglot" else _mnist_data(config)
  module = Conv4(features=config.features, norm="none")
  apply_fn = module.apply
  n_way = data["pool"].shape[0]
  k_pre, k_eval, k_outer = jax.random.split(key, 3)

  theta0, pre_losses, pre_accs = _pretrain(config, module, data, k_pre, progress, f"{name}: pretrain")
  for t in range(0, len(pre_losses), 10):
    writer.write({"dataset": name, "phase": "pretrain", "step": t + 1, "loss": pre_losses[t], "acc": pre_accs[t]})

  attack_cfgs = _attack_configs(config, apply_fn, n_way)
  evals = {"before": _evaluate_all(theta0, data, attack_cfgs, k_eval, config)}

  pool = jnp.asarray(data["pool"])
  mask = jnp.asarray(imm.restricted_mask_from_labels(data["restricted"], n_way))
  def_cfg = imm.FSCConfig(apply_fn, n_way, steps=config.def_steps, lr=config.def_lr,
                          backbone_lr_scale=config.backbone_lr_scale)

  def sample(k):
    return imm.sample_task(k, pool, mask, config.def_shots, config.obstruct_shots)

  histories = {}
  for variant in config.variants:
    if variant == "naive":
      feats = apply_fn(theta0, pool.reshape((-1,) + pool.shape[2:]))
      labels = jnp.repeat(jnp.arange(n_way), pool.shape[1])
      head = imm.fsc.normalize(imm.fsc.prototypes(feats, labels, n_way)).T
      lto_cfg = imm.LTOConfig(fsc=def_cfg, learner=imm.frozen_head_learner(head), learning_rate=config.outer_lr,
                              restricted_cap=config.restricted_cap, num_steps=config.outer_steps)
    else:
      fcfg = dataclasses.replace(def_cfg, grad_mode="first_order" if variant == "first_order" else "full")
      lto_cfg = imm.LTOConfig(fsc=fcfg, method=config.def_method, learning_rate=config.outer_lr,
                              restricted_cap=config.restricted_cap, num_steps=config.outer_steps)
    theta, hist = imm.lto_train(theta0, sample, k_outer, lto_cfg, log_every=10, progress=progress,
                                desc=f"{name}: {variant}", return_history=True)
    histories[variant] = hist
    for t in range(len(hist["loss"])):
      writer.write({"dataset": name, "phase": variant, "step": t + 1,
                    **{k: float(v[t]) for k, v in hist.items()}})
    evals[variant] = _evaluate_all(theta, data, attack_cfgs, k_eval, config)

  table = {}
  for method in METHODS:
    b = evals["before"][method]
    row = {"before": {k: b[k] for k in ("acc_all", "acc_r", "acc_o")}}
    for variant in config.variants:
      a = evals[variant][method]
      ratio, flagged = imm.drop_ratio(b["acc_r"], b["acc_o"], a["acc_r"], a["acc_o"])
      row[variant] = {"acc_all": a["acc_all"], "acc_r": a["acc_r"], "acc_o": a["acc_o"],
                      "drop_r": 100 * (b["acc_r"] - a["acc_r"]), "drop_o": 100 * (b["acc_o"] - a["acc_o"]),
                      "drop_ratio": ratio, "drop_ratio_flagged": flagged,
                      "drop_ratio_str": imm.format_drop_ratio(b["acc_r"], b["acc_o"], a["acc_r"], a["acc_o"])}
    table[method] = row
    writer.write({"dataset": name, "phase": "eval", "method": method, **{
        f"{v}/{k}": val for v, r in row.items() for k, val in r.items()}})
  per_group = {v: {m: evals[v][m]["acc_per_group"] for m in METHODS} for v in evals}
  return {
      "n_way": n_way, "restricted": data["restricted"].tolist(), "group_names": data["group_names"],
      "class_names": data["class_names"], "pretrain_final_loss": float(np.mean(pre_losses[-20:])),
      "pretrain_final_batch_acc": float(np.mean(pre_accs[-20:])), "table": table, "acc_per_group": per_group,
      "outer_final": {v: {k: float(np.mean(h[k][-10:])) for k in ("ce_r", "ce_o", "acc_r", "acc_o")}
                      for v, h in histories.items()},
      "_histories": histories,
  }


# ------------------------------------------------------------------------------------------------------------------
# Decision, plots, run
# ------------------------------------------------------------------------------------------------------------------


def _decide(config: Config, results: dict[str, dict]) -> tuple[bool, str, list[str]]:
  held, parts, failures = True, [], []
  for ds, res in results.items():
    for method, row in res["table"].items():
      lto_row = row["lto"]
      ok_r = lto_row["drop_r"] >= config.min_restricted_drop
      ok_o = lto_row["drop_o"] <= config.max_other_drop
      ok_ratio = lto_row["drop_ratio_flagged"] or lto_row["drop_ratio"] >= config.min_drop_ratio
      ok_naive = True
      if "naive" in row:
        ok_naive = 100 * (row["naive"]["acc_r"] - lto_row["acc_r"]) >= config.naive_margin
      for ok, what in ((ok_r, f"R drop {lto_row['drop_r']:.1f} < {config.min_restricted_drop}"),
                       (ok_o, f"O drop {lto_row['drop_o']:.1f} > {config.max_other_drop}"),
                       (ok_ratio, f"DropRatio {lto_row['drop_ratio_str']} < {config.min_drop_ratio}"),
                       (ok_naive, f"naive R {100 * row['naive']['acc_r']:.1f} not {config.naive_margin} above LTO"
                        if "naive" in row else "")):
        if not ok:
          failures.append(f"{ds}/{method}: {what}")
      held = held and ok_r and ok_o and ok_ratio and ok_naive
      naive = f", naive R {100 * row['naive']['acc_r']:.0f}" if "naive" in row else ""
      parts.append(f"{ds}/{method}: R {100 * row['before']['acc_r']:.0f}->{100 * lto_row['acc_r']:.0f}, "
                   f"O {100 * row['before']['acc_o']:.0f}->{100 * lto_row['acc_o']:.0f} "
                   f"(DropRatio {lto_row['drop_ratio_str']}){naive}")
  return held, "Accuracy (%) before->after LTO: " + "; ".join(parts) + ".", failures


def _plot(out: Path, config: Config, results: dict[str, dict]) -> list[str]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  models = ["before", *config.variants]
  fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.4 * len(results)), squeeze=False)
  width = 0.8 / len(models)
  for r, (ds, res) in enumerate(results.items()):
    for c, (key, title) in enumerate((("acc_r", "restricted classes"), ("acc_o", "other classes"))):
      ax = axes[r, c]
      for j, model in enumerate(models):
        vals = [100 * res["table"][m][model][key] for m in METHODS]
        ax.bar(np.arange(len(METHODS)) + (j - (len(models) - 1) / 2) * width, vals, width, label=model)
      ax.set_xticks(np.arange(len(METHODS)), METHODS)
      ax.set_ylim(0, 100)
      ax.set_ylabel("test accuracy (%)")
      ax.set_title(f"{ds}: {title}")
      ax.grid(axis="y", alpha=0.3)
      if r == 0 and c == 0:
        ax.legend(fontsize=8)
  fig.suptitle("Few-shot attackers before and after obstruction")
  fig.tight_layout()
  fig.savefig(out / "accuracy_bars.png", dpi=110)
  plt.close(fig)
  panels = []
  for ds, res in results.items():
    series = {}
    for v, h in res["_histories"].items():
      steps = np.arange(1, len(h["ce_r"]) + 1)
      series[f"{v} CE_R"] = (steps, h["ce_r"])
      series[f"{v} CE_O"] = (steps, h["ce_o"])
    panels.append({"series": series, "xlabel": "outer step", "ylabel": "obstruct-set cross-entropy",
                   "title": f"{ds}: def learner ({config.def_method})"})
  _report.plot_curves(out / "outer_loss.png", panels)
  return ["accuracy_bars.png", "outer_loss.png"]


def _table_md(results: dict[str, dict], variants) -> str:
  lines = []
  for ds, res in results.items():
    lines += [f"**{ds}** ({res['n_way']}-way, restricted classes {res['restricted']}):", "",
              "| attacker | acc_R before | " + " | ".join(f"acc_R {v}" for v in variants) + " | acc_O before | "
              + " | ".join(f"acc_O {v}" for v in variants) + " | " + " | ".join(f"DropRatio {v}" for v in variants)
              + " |", "| --- " * (2 + 3 * len(variants) + 1) + "|"]
    for m, row in res["table"].items():
      lines.append(f"| {m} | {100 * row['before']['acc_r']:.1f} | "
                   + " | ".join(f"{100 * row[v]['acc_r']:.1f}" for v in variants)
                   + f" | {100 * row['before']['acc_o']:.1f} | "
                   + " | ".join(f"{100 * row[v]['acc_o']:.1f}" for v in variants) + " | "
                   + " | ".join(row[v]["drop_ratio_str"] for v in variants) + " |")
    lines.append("")
  return "\n".join(lines)


def run(config: Config, out_dir: str | Path, progress: bool = True) -> dict:
  """Pre-train, evaluate, obstruct, evaluate again; writes the run folder and returns the result dict."""
  _validate(config)
  start_time = time.perf_counter()
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  _report.write_config(out, NAME, config)
  writer = metrics_lib.JsonlWriter(out / "metrics.jsonl")
  keys = jax.random.split(jax.random.key(config.seed), len(config.datasets))
  results = {ds: _run_dataset(ds, config, k, writer, progress) for ds, k in zip(config.datasets, keys)}

  plots = _plot(out, config, results)
  held, measured, failures = _decide(config, results)
  details = {ds: {k: v for k, v in res.items() if not k.startswith("_")} for ds, res in results.items()}
  metrics_lib.write_json(out / "details.json", details)            # per-group accuracies, class names, ...
  metrics: dict[str, Any] = {}
  for ds, res in results.items():
    metrics[f"{ds}/pretrain_final_batch_acc"] = res["pretrain_final_batch_acc"]
    for method, row in res["table"].items():
      for model, vals in row.items():
        for k in ("acc_r", "acc_o"):
          metrics[f"{ds}/{method}/{model}/{k}"] = vals[k]
        if model != "before":
          metrics[f"{ds}/{method}/{model}/drop_ratio"] = vals["drop_ratio_str"]
  notes = "\n".join([
      "### Accuracy table (%)", "", _table_md(results, config.variants),
      "DropRatio = (acc_R before - acc_R after) / (acc_O before - acc_O after); a trailing `*` means acc_O did "
      "not drop and the number is the raw restricted drop in points (the reference's rule).", "",
      "**Failed criteria:** " + ("; ".join(failures) if failures else "none") + ".", "",
      "**Scale.** The paper obstructs CLIP-RN50 on ImageNet/CIFAR100/SUN397/CelebA with CE fine-tuning, CoOp and "
      f"Tip-Adapter; here a {config.features}-channel conv4 backbone is pre-trained for {config.pretrain_steps} steps "
      f"and obstructed for {config.outer_steps} outer steps with a {config.def_steps}-step fine-tuning def learner, "
      "on one seed, with the four learners of the spec as attackers (attack steps "
      f"{dict(zip(('linear_probe', 'finetune', 'maml_like'), config.attack_steps))}). The support/obstruct pool and "
      "the test images are disjoint; the attackers' support sets are drawn from the pool the obstructor used "
      "(as in the paper). Naive baseline: the same loss through a frozen head (normalized class prototypes of the "
      "pre-trained backbone), no inner loop.",
  ])
  wall = time.perf_counter() - start_time
  return _report.finish(out, name=NAME, config=config, metrics=metrics, claim=CLAIM, held=held, measured=measured,
                        plots=plots, notes=notes, wall_time_s=wall)
