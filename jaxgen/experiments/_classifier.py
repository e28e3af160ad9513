"""Evaluation classifier for generated images: class accuracy and Fréchet distance on its penultimate features.

One small CNN (:class:`jaxgen.nn.cnn.SmallCNN`) per dataset, trained once on the training split with
:func:`jaxgen.core.train.fit` and cached (see :mod:`jaxgen.experiments._cache`). Generated samples are scored by

* **class accuracy**: the fraction classified as the class they were generated for;
* **FD**: Fréchet distance between Gaussian fits of the classifier's penultimate features on the samples and on
  the test split (an FID computed in this small network's feature space, so only comparable within this library).

Images enter in the flow models' range ``[-1, 1]``, shape ``[N, 28, 28, 1]`` (MNIST, Fashion-MNIST) or
``[N, 8, 8, 1]`` (the 8x8 digits, pixel ``v`` in 0..16 scaled as ``v / 8 - 1`` as in the immunization spec §1.2).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.core import metrics as metrics_lib
from jaxgen.core import train
from jaxgen.experiments import _cache

DATASETS = ("mnist", "fashion_mnist", "digits8")
IMAGE_SIZES = {"mnist": 28, "fashion_mnist": 28, "digits8": 8}


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  dataset: str = "mnist"
  channels: tuple[int, ...] = (16, 32)
  feature_dim: int = 128
  batch_size: int = 128
  num_steps: int = 800
  learning_rate: float = 2e-3
  seed: int = 0


def load_images(dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """``(train_x, train_y, test_x, test_y)`` with images as float32 ``[N, S, S, 1]`` in ``[-1, 1]``
  (``S = IMAGE_SIZES[dataset]``)."""
  from jaxgen import data

  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
  if dataset == "digits8":
    ds, top = data.load_digits8(), 16.0
  else:
    ds, top = (data.load_mnist() if dataset == "mnist" else data.load_fashion_mnist()), 255.0

  def scale(images):
    return (images.astype(np.float32) / (top / 2) - 1.0)[..., None]

  return (scale(ds.train_images), ds.train_labels.astype(np.int32), scale(ds.test_images),
          ds.test_labels.astype(np.int32))


class Evaluator(NamedTuple):
  config: ClassifierConfig
  module: Any
  params: Any
  test_accuracy: float
  test_mu: np.ndarray  # float64 [F] mean of the test split's features
  test_sigma: np.ndarray  # float64 [F, F] covariance of the test split's features

  def features_and_logits(self, images: jax.Array, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    return _features_and_logits(self.module, self.params, images, batch_size)

  def score(self, images: jax.Array, labels: jax.Array) -> dict[str, float]:
    """Class accuracy and FD (to the test split) of generated ``images`` meant to show ``labels``."""
    images = jnp.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[0] != labels.shape[0]:
      raise ValueError(f"images must be [N, H, W, C] with N == len(labels), got {images.shape} and {labels.shape}")
    feats, logits = self.features_and_logits(images)
    with jax.enable_x64(True):  # the matrix square roots need float64 for 128-d features
      mu, sigma = metrics_lib.gaussian_stats(jnp.asarray(feats, jnp.float64))
      fd = metrics_lib.frechet_distance_from_stats(mu, sigma, jnp.asarray(self.test_mu, jnp.float64),
                                                   jnp.asarray(self.test_sigma, jnp.float64))
    return {"class_accuracy": float(np.mean(np.argmax(logits, -1) == labels)), "fd": float(fd)}


def _features_and_logits(module, params, images, batch_size):
  apply = _apply_fn(module)
  feats, logits = [], []
  for start in range(0, images.shape[0], batch_size):
    f, l = apply(params, jnp.asarray(images[start:start + batch_size]))
    feats.append(np.asarray(f))
    logits.append(np.asarray(l))
  return np.concatenate(feats), np.concatenate(logits)


_APPLY_CACHE: dict[int, Any] = {}


def _apply_fn(module):
  key = hash(module)
  if key not in _APPLY_CACHE:
    _APPLY_CACHE[key] = jax.jit(lambda p, x: module.apply(p, x, return_features=True)[::-1])
  return _APPLY_CACHE[key]


def get_evaluator(config: ClassifierConfig, *, progress: bool = True) -> Evaluator:
  """Train (or load from the cache) the evaluation classifier for ``config.dataset``."""
  from jaxgen.nn.cnn import SmallCNN

  train_x, train_y, test_x, test_y = load_images(config.dataset)
  module = SmallCNN(num_classes=10, channels=tuple(config.channels), feature_dim=config.feature_dim)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  size = IMAGE_SIZES[config.dataset]
  params = module.init(init_key, jnp.zeros((1, size, size, 1), jnp.float32))
  optimizer = optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.num_steps))

  def loss_fn(params, batch, key):
    del key
    logits = module.apply(params, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

  state = train.init_train_state(params, optimizer, train_key)
  fitted = train.fit(state, train.make_train_step(loss_fn, optimizer),
                     train.epoch_batches({"x": train_x, "y": train_y}, config.batch_size, seed=config.seed),
                     config.num_steps, out_dir=_cache.entry_dir("classifier", config), log_every=100,
                     max_to_keep=1, progress=progress, desc=f"classifier[{config.dataset}]")
  feats, logits = _features_and_logits(module, fitted.state.params, test_x, 1000)
  with jax.enable_x64(True):
    mu, sigma = (np.asarray(a) for a in metrics_lib.gaussian_stats(jnp.asarray(feats, jnp.float64)))
  accuracy = float(np.mean(np.argmax(logits, -1) == test_y))
  return Evaluator(config, module, fitted.state.params, accuracy, mu, sigma)
