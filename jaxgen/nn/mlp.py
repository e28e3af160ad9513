"""Multi-layer perceptron."""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
  """A plain MLP: ``Dense -> activation`` for every hidden width, then a final ``Dense``.

  Attributes:
    features: widths of every layer, the last one being the output width (e.g. ``(256, 256, 10)``).
    activation: nonlinearity between layers (default GELU).
    dropout_rate: dropout after each hidden activation; active only when ``deterministic=False``.
  """

  features: Sequence[int]
  activation: Callable[[jax.Array], jax.Array] = nn.gelu
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    if len(self.features) == 0:
      raise ValueError("MLP.features must name at least one layer width, got an empty sequence")
    for i, width in enumerate(self.features[:-1]):
      x = nn.Dense(width, name=f"dense_{i}")(x)
      x = self.activation(x)
      if self.dropout_rate > 0.0:
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    return nn.Dense(self.features[-1], name=f"dense_{len(self.features) - 1}")(x)
