r"""A tiny Diffusion Transformer (DiT) with adaLN-Zero blocks, for flow-matching velocity prediction.

Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023, arXiv 2212.09748 (DiT, adaLN-Zero);
the optional cross-attention sub-layer follows PixArt-alpha (Chen et al., arXiv 2310.00426).

``DiT()(x_t, t, y, context, context_mask) -> v`` predicts the velocity of the library's rectified flow
(:mod:`jaxgen.core.ode`: ``t`` in ``[0, 1]``, ``t = 0`` noise, ``t = 1`` data, target :math:`x_1 - x_0`).

Architecture (NHWC input ``[B, H, W, C]``, patch size ``p``, width ``D``, ``N = HW / p^2`` tokens)::

  patchify: conv p x p / stride p -> [B, N, D] + fixed 2-D sin-cos position embedding
  c = MLP(sinusoids(t)) + LabelEmbedding(y)                                   # [B, D], null class = num_classes
  depth x block:
    (shift1, scale1, gate1, shift2, scale2, gate2) = Dense_zero(SiLU(c))      # adaLN-Zero
    x += gate1 * SelfAttn(LN(x) * (1 + scale1) + shift1)
    x += CrossAttn(LN(x), context, context_mask)                              # only when context_dim is set
    x += gate2 * MLP(LN(x) * (1 + scale2) + shift2)
  final: (shift, scale) = Dense_zero(SiLU(c)); Dense(p*p*C)(LN(x) * (1 + scale) + shift) -> unpatchify

adaLN-Zero: the modulation Dense layers are zero-initialised, so every block starts as the identity and the
conditioning (time, class) has no effect until trained. The final projection is zero-initialised too when
``zero_init_output=True`` (the default, as in DiT), so the initial velocity is exactly 0. The cross-attention
sub-layer is not gated by ``c``; a sample whose context tokens are all masked gets exactly the
``context=None`` output (the cross-attention adds an exact zero).

Feature taps: each block sows its self-attention, cross-attention and MLP outputs (``[B, N, D]``, before the
gate and residual add) as ``"sa"``, ``"ca"``, ``"ff"`` in the ``intermediates`` collection
(``model.apply(params, ..., mutable=["intermediates"])``).

Input validation as in :mod:`jaxgen.nn.unet` (``ValueError`` naming the argument); ``H`` and ``W`` must be
multiples of ``patch_size``. Output: ``x``'s shape and dtype.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.nn.layers import (Attention, LabelEmbedding, _check_context, _check_images, _check_labels,
                              _check_time, timestep_embedding)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding ``[grid_h * grid_w, dim]`` (DiT/MAE); ``dim`` divisible by 4.

  The first ``dim/2`` features encode the row, the last ``dim/2`` the column, each as
  ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^{-k / (dim/4)}``.
  """
  if dim % 4 != 0:
    raise ValueError(f"sincos_pos_embed_2d: dim must be divisible by 4, got {dim}")
  omega = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))          # [D/4]

  def one_d(pos):                                                                       # [M] -> [M, D/2]
    args = pos[:, None] * omega[None, :]
    return np.concatenate([np.sin(args), np.cos(args)], axis=1)

  rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64),
                           indexing="ij")
  emb = np.concatenate([one_d(rows.reshape(-1)), one_d(cols.reshape(-1))], axis=1)
  return emb.astype(np.float32)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  return x * (1.0 + scale[:, None, :]) + shift[:, None, :]                               # [B, N, D]


class DiTBlock(nn.Module):
  """adaLN-Zero transformer block with an optional (ungated) cross-attention sub-layer."""

  num_heads: int
  mlp_ratio: float = 4.0
  context_dim: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array, context: jax.Array | None,
               mask: jax.Array | None) -> jax.Array:
    d = x.shape[-1]
    mod = nn.Dense(6 * d, kernel_init=nn.initializers.zeros_init(), name="adaln")(nn.silu(c))   # [B, 6D]
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
    ln = lambda name: nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6, name=name)
    sa = Attention(self.num_heads, name="self_attn")(_modulate(ln("norm_1")(x), shift1, scale1))
    self.sow("intermediates", "sa", sa)
    x = x + gate1[:, None, :] * sa
    if self.context_dim is not None:
      if context is None and self.is_initializing():
        # Create the cross-attention parameters even when init is called without a context.
        context = jnp.zeros((x.shape[0], 1, self.context_dim), x.dtype)
        mask = jnp.zeros((x.shape[0], 1), jnp.bool_)
      if context is not None:
        ca = Attention(self.num_heads, name="cross_attn")(nn.LayerNorm(name="norm_cross")(x), context, mask)
        self.sow("intermediates", "ca", ca)
        x = x + ca
    h = _modulate(ln("norm_2")(x), shift2, scale2)
    h = nn.Dense(int(self.mlp_ratio * d), name="mlp_0")(h)
    h = nn.Dense(d, name="mlp_1")(nn.gelu(h, approximate=True))
    self.sow("intermediates", "ff", h)
    return x + gate2[:, None, :] * h


class DiT(nn.Module):
  """Tiny DiT velocity network ``v(x_t, t, y, context)``; see the module docstring.

  Attributes:
    patch_size: patch side ``p`` (4 gives 49 tokens on 28x28, 2 gives 196).
    hidden_size: token width ``D`` (divisible by 4 and by ``num_heads``).
    depth: number of transformer blocks.
    num_heads: attention heads.
    mlp_ratio: MLP hidden width as a multiple of ``D``.
    num_classes: number of real classes, or ``None`` for no class conditioning; the null class is
      ``num_classes``.
    context_dim: width of the context tokens, or ``None`` for no cross-attention.
    time_freq_dim: number of sinusoidal time features.
    time_scale: ``t`` is multiplied by this before the sinusoids (1000 for ``t`` in ``[0, 1]``).
    zero_init_output: zero-initialise the final projection so the initial velocity is exactly 0.

  Example::

    model = DiT(num_classes=10, context_dim=32)
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,)))
    v = model.apply(params, x, t, y, tokens, token_mask)          # tokens [B, L, 32], token_mask [B, L] bool
  """

  patch_size: int = 4
  hidden_size: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: float = 4.0
  num_classes: int | None = 10
  context_dim: int | None = None
  time_freq_dim: int = 128
  time_scale: float = 1000.0
  zero_init_output: bool = True

  @property
  def null_class(self) -> int | None:
    """The label of the unconditional (null) class, ``num_classes``."""
    return self.num_classes

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None,
               context: jax.Array | None = None, context_mask: jax.Array | None = None) -> jax.Array:
    """Velocity at ``(x, t)`` given class labels ``y`` and/or context tokens.

    Args:
      x: ``[B, H, W, C]`` state :math:`x_t`.
      t: scalar or ``[B]`` flow time in ``[0, 1]`` (0 = noise, 1 = data).
      y: optional integer ``[B]`` labels in ``[0, num_classes]``; ``None`` means the null class.
      context: optional ``[B, L, context_dim]`` condition tokens.
      context_mask: optional boolean ``[B, L]``; ``False`` tokens are ignored.

    Returns:
      ``[B, H, W, C]`` velocity, dtype of ``x``.
    """
    p, d = self.patch_size, self.hidden_size
    _check_images("x", x, divisor=p)
    b, hh, ww, ch = x.shape
    t = _check_time(t, b)
    y = _check_labels(y, b, self.num_classes)
    _check_context(context, context_mask, b, self.context_dim)
    if d % 4 != 0 or d % self.num_heads != 0:
      raise ValueError(f"DiT: hidden_size={d} must be divisible by 4 and by num_heads={self.num_heads}")
    gh, gw = hh // p, ww // p

    tokens = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", name="patch_embed")(x.astype(jnp.float32))
    tokens = tokens.reshape(b, gh * gw, d) + jnp.asarray(sincos_pos_embed_2d(d, gh, gw))[None]   # [B, N, D]

    c = timestep_embedding(t, self.time_freq_dim, time_scale=self.time_scale)
    c = nn.Dense(d, name="time_mlp_1")(nn.silu(nn.Dense(d, name="time_mlp_0")(c)))         # [B, D]
    if y is not None:
      c = c + LabelEmbedding(self.num_classes, d, name="label_embed")(y)

    for i in range(self.depth):
      tokens = DiTBlock(self.num_heads, self.mlp_ratio, self.context_dim, name=f"block_{i}")(
          tokens, c, context, context_mask)

    shift, scale = jnp.split(
        nn.Dense(2 * d, kernel_init=nn.initializers.zeros_init(), name="final_adaln")(nn.silu(c)), 2, axis=-1)
    h = _modulate(nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6, name="final_norm")(tokens),
                  shift, scale)
    out_init = nn.initializers.zeros_init() if self.zero_init_output else nn.initializers.lecun_normal()
    h = nn.Dense(p * p * ch, kernel_init=out_init, name="final_proj")(h)                  # [B, N, p*p*C]
    v = h.reshape(b, gh, gw, p, p, ch).transpose(0, 1, 3, 2, 4, 5).reshape(b, hh, ww, ch)
    return v.astype(x.dtype)
