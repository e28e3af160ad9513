"""Small Flax (Linen) modules shared by the experiments. Models enter library code as ``apply_fn(params, x)``."""

from jaxgen.nn.mlp import MLP

__all__ = ["MLP"]
