"""Small Flax (Linen) modules shared by the experiments. Models enter library code as ``apply_fn(params, x)``.

* :class:`MLP` — plain multi-layer perceptron.
* :class:`FlowMLP` — residual MLP velocity network (time + class, null class), fast on CPU.
* :class:`UNet` — tiny conditional UNet velocity network (time, class with a null class, cross-attention).
* :class:`DiT` — tiny adaLN-Zero Diffusion Transformer with the same conditioning interface.
* :class:`Conv4` — the conv4 few-shot backbone (MAML-style transductive batch norm by default).
* :class:`SmallCNN` — small image classifier whose penultimate features feed Fréchet distances.
* building blocks: :func:`timestep_embedding`, :func:`dot_product_attention`, :class:`Attention`,
  :class:`LabelEmbedding`.
"""

from jaxgen.nn.cnn import Conv4, SmallCNN, TransductiveBatchNorm
from jaxgen.nn.dit import DiT
from jaxgen.nn.layers import Attention, LabelEmbedding, dot_product_attention, timestep_embedding
from jaxgen.nn.llama import TinyLlama
from jaxgen.nn.mlp import MLP, FlowMLP
from jaxgen.nn.unet import UNet

__all__ = [
    "Attention",
    "Conv4",
    "DiT",
    "FlowMLP",
    "LabelEmbedding",
    "MLP",
    "SmallCNN",
    "TinyLlama",
    "TransductiveBatchNorm",
    "UNet",
    "dot_product_attention",
    "timestep_embedding",
]
