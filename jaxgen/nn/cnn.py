r"""Convolutional backbones: the conv4 few-shot backbone and a small CNN classifier / feature extractor.

:class:`Conv4` — the standard few-shot backbone of Matching Networks, ProtoNets and MAML (Vinyals et al. 2016,
arXiv 1606.04080; Snell et al. 2017, arXiv 1703.05175; Finn et al. 2017, arXiv 1703.03400): four blocks of
``conv3x3(64, SAME) -> norm -> ReLU -> maxpool 2x2 (stride 2, VALID)``, then flatten. Feature sizes:
28x28 -> 1x1x64 = 64; 84x84 (miniImageNet) -> 5x5x64 = 1600.

Normalisation (``norm``) and how batch statistics are handled:

* ``"transductive_batch"`` (default): batch normalisation that *always* uses the statistics of the batch it
  is given, with a learnable per-channel scale and bias and **no running averages** (no ``batch_stats``
  collection). This is what MAML's reference code does, in its inner loop and at meta-test time alike, and it
  keeps the model a pure ``apply_fn(params, x)`` for bilevel loops (:mod:`jaxgen.core.bilevel`). It is
  transductive: a sample's features depend on the other samples of the batch (call it on the support set and
  on the query set separately, or on their concatenation, consistently at training and test time).
* ``"batch"``: ordinary ``flax.linen.BatchNorm`` with running averages (momentum 0.9) in the ``batch_stats``
  collection. ``train=True`` normalises with batch statistics and needs ``mutable=["batch_stats"]`` to update
  the averages; ``train=False`` (default) uses the averages. For supervised pre-training.
* ``"group"``: ``GroupNorm(num_groups)``; per-sample, no batch dependence, no state.
* ``"none"``: conv bias only.

:class:`SmallCNN` — a small MNIST-style classifier for ``[B, H, W, C]`` images (``H, W`` multiples of 4):
``conv3x3(32)-ReLU-conv3x3(32)-ReLU-maxpool -> conv3x3(64)-ReLU-conv3x3(64)-ReLU-maxpool -> flatten ->
Dense(feature_dim)-ReLU`` (the penultimate *features*) ``-> Dense(num_classes)``. Its penultimate features
feed Fréchet-distance metrics (:mod:`jaxgen.core.metrics`): ``model.apply(params, x, method="features")`` or
``model.apply(params, x, return_features=True) -> (logits, features)``. No normalisation and no dropout, so it
is deterministic and batch-independent.

Both networks validate ``x`` (floating ``[B, H, W, C]``, large enough) with a ``ValueError`` naming it.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn.layers import _check_images

_NORMS = ("transductive_batch", "batch", "group", "none")


class TransductiveBatchNorm(nn.Module):
  """Batch normalisation with the current batch's statistics and no running averages (MAML style).

  ``y = scale * (x - mean_B) / sqrt(var_B + epsilon) + bias`` with mean and (biased) variance over every axis
  but the last. Stateless: the only variables are ``scale`` and ``bias`` in ``params``.
  """

  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones_init(), (features,))
    bias = self.param("bias", nn.initializers.zeros_init(), (features,))
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    expand = (1,) * (x.ndim - 1) + (features,)
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale.reshape(expand) + bias.reshape(expand)


class Conv4(nn.Module):
  """The conv4 few-shot backbone; returns flattened features ``[B, (H/16)(W/16) * features]``.

  Attributes:
    features: channels of every conv (64 in the few-shot literature).
    num_blocks: conv blocks (4).
    norm: ``"transductive_batch"`` (default), ``"batch"``, ``"group"`` or ``"none"``; see the module docstring.
    num_groups: groups for ``norm="group"``.
    momentum: running-average momentum for ``norm="batch"``.
  """

  features: int = 64
  num_blocks: int = 4
  norm: str = "transductive_batch"
  num_groups: int = 8
  momentum: float = 0.9

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Features of ``x [B, H, W, C]``; ``train`` only matters for ``norm="batch"``."""
    if self.norm not in _NORMS:
      raise ValueError(f"Conv4.norm must be one of {_NORMS}, got {self.norm!r}")
    _check_images("x", x, min_size=2 ** self.num_blocks)
    h = x
    for i in range(self.num_blocks):
      h = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=self.norm == "none", name=f"conv_{i}")(h)
      if self.norm == "transductive_batch":
        h = TransductiveBatchNorm(name=f"norm_{i}")(h)
      elif self.norm == "batch":
        h = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, name=f"norm_{i}")(h)
      elif self.norm == "group":
        h = nn.GroupNorm(num_groups=self.num_groups, name=f"norm_{i}")(h)
      h = nn.max_pool(nn.relu(h), (2, 2), strides=(2, 2), padding="VALID")
    return h.reshape(h.shape[0], -1)


class SmallCNN(nn.Module):
  """Small CNN classifier whose penultimate features serve as a Fréchet-distance feature space.

  Attributes:
    num_classes: number of output logits.
    channels: widths of the two conv stages (two convs each, then a 2x2 max-pool).
    feature_dim: width of the penultimate (feature) layer.
  """

  num_classes: int = 10
  channels: Sequence[int] = (32, 64)
  feature_dim: int = 128

  def setup(self):
    self.convs = [[nn.Conv(ch, (3, 3)) for _ in range(2)] for ch in self.channels]
    self.dense_features = nn.Dense(self.feature_dim)
    self.head = nn.Dense(self.num_classes)

  def features(self, x: jax.Array) -> jax.Array:
    """Penultimate features ``[B, feature_dim]`` (after the ReLU) of images ``x [B, H, W, C]``."""
    _check_images("x", x, min_size=2 ** len(self.channels))
    h = x
    for stage in self.convs:
      for conv in stage:
        h = nn.relu(conv(h))
      h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")
    return nn.relu(self.dense_features(h.reshape(h.shape[0], -1)))

  def __call__(self, x: jax.Array, *, return_features: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Logits ``[B, num_classes]``, or ``(logits, features)`` when ``return_features``."""
    feats = self.features(x)
    logits = self.head(feats)
    return (logits, feats) if return_features else logits
