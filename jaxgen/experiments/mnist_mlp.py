"""Template experiment: an MLP classifier on MNIST trained through :func:`jaxgen.core.train.fit`.

Not a paper reproduction: it is the pattern every paper experiment copies (frozen ``Config`` with ``quick`` and
``full`` presets; ``run`` writes ``config.json``, ``metrics.jsonl``, checkpoints, ``result.json``, a PNG plot and
``report.md``).

Run it with ``jaxgen reproduce mnist-mlp --quick`` or::

  from jaxgen.experiments import reproduce
  result = reproduce("mnist-mlp", quick=True, out_dir="runs")
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.core import metrics as metrics_lib
from jaxgen.core import parallel, train
from jaxgen.experiments import _report

NAME = "mnist-mlp"
PAPER = "template (no paper): standard MLP baseline on MNIST (LeCun et al., 1998)"
CLAIM = ("A 2-hidden-layer MLP trained with Adam reaches at least the target test accuracy on MNIST "
         "(0.95 quick / 0.98 full).")


@dataclasses.dataclass(frozen=True)
class Config:
  """MLP on MNIST.

  Attributes:
    hidden: hidden-layer widths.
    batch_size: examples per step (global; split over devices when ``num_devices > 1``).
    num_steps: optimizer steps.
    learning_rate: peak Adam learning rate (warm-up 5 % of steps, then cosine decay to 0).
    weight_decay: decoupled weight decay (AdamW).
    dropout_rate: dropout after each hidden layer.
    checkpoint_every: checkpoint period in steps.
    eval_every: test-accuracy period in steps.
    target_accuracy: the test accuracy the claim asks for.
    num_devices: data-parallel devices (1 = single device).
    seed: seed of initialisation, dropout and data order.
  """

  hidden: tuple[int, ...] = (512, 256)
  batch_size: int = 128
  num_steps: int = 12000
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  dropout_rate: float = 0.1
  checkpoint_every: int = 2000
  eval_every: int = 1000
  target_accuracy: float = 0.98
  num_devices: int = 1
  seed: int = 0

  @classmethod
  def quick(cls) -> Config:
    return cls(num_steps=1500, checkpoint_every=500, eval_every=250, dropout_rate=0.0, target_accuracy=0.95)

  @classmethod
  def full(cls) -> Config:
    return cls()


def _prepare(images: np.ndarray) -> np.ndarray:
  return (images.reshape(images.shape[0], -1).astype(np.float32) / 255.0 - 0.1307) / 0.3081


def run(config: Config, out_dir: str | Path, progress: bool = True) -> dict:
  """Train, evaluate, and write the run folder. Returns the result dict (also in ``result.json``)."""
  from jaxgen.data import load_mnist
  from jaxgen.nn import MLP

  start_time = time.perf_counter()
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  _report.write_config(out, NAME, config)

  mnist = load_mnist()
  train_data = {"x": _prepare(mnist.train_images), "y": mnist.train_labels.astype(np.int32)}
  test_x = jnp.asarray(_prepare(mnist.test_images))
  test_y = jnp.asarray(mnist.test_labels.astype(np.int32))

  model = MLP((*config.hidden, 10), dropout_rate=config.dropout_rate)
  key = jax.random.key(config.seed)
  init_key, train_key = jax.random.split(key)
  params = model.init(init_key, jnp.zeros((1, 784), jnp.float32))
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, max(1, config.num_steps // 20),
                                                config.num_steps)
  optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)

  def loss_fn(params, batch, key):
    logits = model.apply(params, batch["x"], deterministic=config.dropout_rate == 0.0, rngs={"dropout": key})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"train_acc": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

  @jax.jit
  def test_accuracy(params):
    return metrics_lib.accuracy(model.apply(params, test_x), test_y)

  mesh = parallel.make_data_mesh(config.num_devices) if config.num_devices > 1 else None
  state = train.init_train_state(params, optimizer, train_key)
  step = train.make_train_step(loss_fn, optimizer, has_aux=True, mesh=mesh)
  batches = train.epoch_batches(train_data, config.batch_size, seed=config.seed)
  fitted = train.fit(
      state, step, batches, config.num_steps, out_dir=out, log_every=50,
      checkpoint_every=config.checkpoint_every, eval_fn=lambda s: {"test_acc": test_accuracy(s.params)},
      eval_every=config.eval_every, mesh=mesh, progress=progress, desc=NAME)

  history = fitted.history
  train_recs = [r for r in history if "loss" in r]
  eval_recs = [r for r in history if "eval/test_acc" in r]
  test_acc = float(eval_recs[-1]["eval/test_acc"])
  plot = _report.plot_curves(out / "loss_curve.png", [
      {"series": {"train loss": ([r["step"] for r in train_recs], [r["loss"] for r in train_recs])},
       "xlabel": "step", "ylabel": "cross-entropy", "logy": True, "title": "training loss"},
      {"series": {"test": ([r["step"] for r in eval_recs], [r["eval/test_acc"] for r in eval_recs]),
                  "train (batch)": ([r["step"] for r in train_recs], [r["train_acc"] for r in train_recs])},
       "xlabel": "step", "ylabel": "accuracy", "title": "accuracy"},
  ], title=f"MLP {config.hidden} on MNIST")
  wall = time.perf_counter() - start_time
  metrics = {
      "test_accuracy": test_acc,
      "final_train_loss": float(train_recs[-1]["loss"]),
      "steps": int(fitted.state.step),
      "epochs": config.num_steps / batches.steps_per_epoch,
  }
  held = test_acc >= config.target_accuracy
  return _report.finish(
      out, name=NAME, config=config, metrics=metrics, claim=CLAIM, held=held,
      measured=(f"test accuracy {test_acc:.4f} after {config.num_steps} steps "
                f"(target {config.target_accuracy}), final train loss {metrics['final_train_loss']:.4f}."),
      plots=[plot.name], wall_time_s=wall,
      timing={"steps_per_second": (config.num_steps - (fitted.resumed_from or 0)) / wall,
              "resumed_from_step": fitted.resumed_from},
      notes="Checkpoints are in `checkpoints/`; `jaxgen reproduce mnist-mlp --resume` continues an interrupted run.")
