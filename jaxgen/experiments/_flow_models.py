r"""Class-conditional flow-matching models on MNIST / Fashion-MNIST, trained once and cached.

The shared generative model of the guidance, immunization and diffusion experiments. Training follows
:mod:`jaxgen.core.flow`: rectified-flow path :math:`x_t = (1 - t) x_0 + t x_1` from noise :math:`x_0 \sim N(0, I)`
(t = 0) to data :math:`x_1` (t = 1, images scaled to ``[-1, 1]``), velocity target :math:`x_1 - x_0`, labels replaced
by the null class with probability ``label_dropout`` (classifier-free training). The sampled parameters are an EMA
of the trained ones (:func:`jaxgen.core.train.track_params_ema`).

Every checkpoint is kept (``checkpoint_every``), so experiments can also load an *early* model
(:func:`load_flow_model` with ``step``) — CFG-Zero* compares early and converged models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.core import checkpoint as checkpoint_lib
from jaxgen.core import flow, ode, train
from jaxgen.experiments import _cache
from jaxgen.experiments._classifier import load_images

DATASETS = ("mnist", "fashion_mnist")  # the 28x28 sets these models are built for

ARCHS = ("mlp", "unet")


@dataclasses.dataclass(frozen=True)
class FlowModelConfig:
  """A class-conditional flow model and how it is trained.

  Attributes:
    dataset: ``"mnist"`` or ``"fashion_mnist"``.
    arch: ``"mlp"`` (:class:`jaxgen.nn.FlowMLP`, fast on CPU) or ``"unet"`` (:class:`jaxgen.nn.unet.UNet`).
    width, depth: FlowMLP size.
    channels: UNet widths per resolution.
    batch_size, num_steps, learning_rate: Adam training (linear warm-up over 2 % of the steps, cosine decay).
    label_dropout: probability of training on the null class (classifier-free guidance needs it).
    ema_decay: decay of the sampled parameter average.
    checkpoint_every: checkpoint period (all checkpoints are kept).
    time_distribution: ``"uniform"`` or ``"logit_normal"`` training times.
    seed: initialisation, label dropout, noise and data order.
  """

  dataset: str = "mnist"
  arch: str = "mlp"
  width: int = 256
  depth: int = 4
  channels: tuple[int, ...] = (32, 64, 64)
  batch_size: int = 128
  num_steps: int = 4000
  learning_rate: float = 1e-3
  label_dropout: float = 0.1
  ema_decay: float = 0.999
  checkpoint_every: int = 1000
  time_distribution: str = "uniform"
  seed: int = 0

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
    if self.arch not in ARCHS:
      raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
    if not 0.0 <= self.label_dropout < 1.0:
      raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")


NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES


def build_module(config: FlowModelConfig):
  """The Flax module of ``config``; its ``apply(params, x, t, y)`` returns the velocity (t-convention)."""
  if config.arch == "mlp":
    from jaxgen.nn.mlp import FlowMLP

    return FlowMLP(num_classes=NUM_CLASSES, width=config.width, depth=config.depth)
  from jaxgen.nn.unet import UNet

  return UNet(channels=tuple(config.channels), num_classes=NUM_CLASSES)


class FlowModel(NamedTuple):
  config: FlowModelConfig
  module: Any
  params: Any  # EMA parameters
  step: int
  history: list[dict[str, Any]]
  raw_params: Any = None  # the trained parameters themselves (no averaging)

  def velocity_fn(self) -> Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]:
    """``v(params, t, x, y)`` (t scalar or ``[B]``, labels ``[B]``; ``y = NULL_CLASS`` is unconditional)."""
    module = self.module
    return lambda params, t, x, y: module.apply(params, x, jnp.broadcast_to(t, (x.shape[0],)), y)


def _optimizer(config: FlowModelConfig) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, max(1, config.num_steps // 50),
                                                config.num_steps, end_value=config.learning_rate * 0.05)
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule), train.track_params_ema(config.ema_decay))


def _initial_state(config: FlowModelConfig):
  module = build_module(config)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  x = jnp.zeros((1, 28, 28, 1), jnp.float32)
  params = module.init(init_key, x, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))
  optimizer = _optimizer(config)
  return module, optimizer, train.init_train_state(params, optimizer, train_key)


def train_flow_model(config: FlowModelConfig, *, progress: bool = True) -> FlowModel:
  """Train (or load / resume from the cache) the flow model of ``config``; returns its EMA parameters."""
  module, optimizer, state = _initial_state(config)
  train_x, train_y, _, _ = load_images(config.dataset)

  def loss_fn(params, batch, key):
    drop_key, loss_key = jax.random.split(key)
    labels = flow.drop_labels(drop_key, batch["y"], rate=config.label_dropout, null_label=NULL_CLASS)
    return flow.flow_matching_loss(lambda p, x, t, y: module.apply(p, x, t, y), params, batch["x"], loss_key,
                                   cond=labels, time_distribution=config.time_distribution)

  fitted = train.fit(state, train.make_train_step(loss_fn, optimizer),
                     train.epoch_batches({"x": train_x, "y": train_y}, config.batch_size, seed=config.seed),
                     config.num_steps, out_dir=_cache.entry_dir("flow", config), log_every=50,
                     checkpoint_every=config.checkpoint_every, max_to_keep=None, progress=progress,
                     desc=f"flow[{config.dataset},{config.arch}]")
  return FlowModel(config, module, train.params_ema(fitted.state.opt_state), int(fitted.state.step),
                   fitted.history, fitted.state.params)


def load_flow_model(config: FlowModelConfig, step: int, *, progress: bool = True) -> FlowModel:
  """The EMA parameters at an intermediate checkpoint ``step`` (trains the model first if needed)."""
  if step % config.checkpoint_every != 0 and step != config.num_steps:
    raise ValueError(f"step must be a multiple of checkpoint_every={config.checkpoint_every} or num_steps, got {step}")
  final = train_flow_model(config, progress=progress)
  if step == final.step:
    return final
  module, _, state = _initial_state(config)
  restored = checkpoint_lib.restore(_cache.entry_dir("flow", config) / "checkpoints", state, step=step)
  return FlowModel(config, module, train.params_ema(restored.opt_state), step,
                   [r for r in final.history if r["step"] <= step], restored.params)


def sample(
    velocity_fn: Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array],
    params: Any,
    labels: jax.Array,
    key: jax.Array,
    *,
    num_steps: int,
    method: str = "euler",
    batch_size: int = 500,
) -> np.ndarray:
  """Sample one image per label by integrating ``velocity_fn(params, t, x, y)`` from noise (t=0) to data (t=1).

  The sampler of each chunk of ``batch_size`` labels is one jitted ``lax.scan`` over a uniform grid
  (:func:`jaxgen.core.ode.odeint`). Returns float32 ``[N, 28, 28, 1]`` images in (roughly) ``[-1, 1]``.
  """
  labels = np.asarray(labels, np.int32)
  if labels.ndim != 1:
    raise ValueError(f"labels must be a 1-D array of class ids, got shape {labels.shape}")
  ts = ode.uniform_grid(num_steps)

  @jax.jit
  def run(params, key, y):
    x0 = jax.random.normal(key, (y.shape[0], 28, 28, 1), jnp.float32)
    return ode.odeint(lambda t, x: velocity_fn(params, t, x, y), x0, ts, method)

  out = []
  for i, start in enumerate(range(0, labels.shape[0], batch_size)):
    out.append(np.asarray(run(params, jax.random.fold_in(key, i), jnp.asarray(labels[start:start + batch_size]))))
  return np.concatenate(out)


def save_image_grid(path, images: np.ndarray, *, nrow: int, title: str | None = None) -> None:
  """Save ``images [N, 28, 28, 1]`` in ``[-1, 1]`` as a grid PNG with ``nrow`` rows."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  n = images.shape[0]
  ncol = int(np.ceil(n / nrow))
  canvas = np.ones((nrow * 29 + 1, ncol * 29 + 1))
  for i in range(n):
    r, c = divmod(i, ncol)
    canvas[1 + r * 29:1 + r * 29 + 28, 1 + c * 29:1 + c * 29 + 28] = (np.clip(images[i, ..., 0], -1, 1) + 1) / 2
  fig, ax = plt.subplots(figsize=(ncol * 0.4 + 0.2, nrow * 0.4 + (0.5 if title else 0.2)))
  ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.axis("off")
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
