r"""A tiny conditional UNet for flow-matching velocity prediction on small images (MNIST-sized by default).

``UNet()(x_t, t, y, context, context_mask) -> v`` predicts the velocity :math:`v_\theta(x_t, t, c)` of the
library's rectified flow (:mod:`jaxgen.core.ode`): ``t`` in ``[0, 1]``, ``t = 0`` noise, ``t = 1`` data,
:math:`x_t = t x_1 + (1 - t) x_0` and target :math:`x_1 - x_0`. Library code takes it as
``apply_fn = lambda params, x, t, y: model.apply(params, x, t, y)``.

Architecture (NHWC; default ``channels=(32, 64, 64)``, a 28x28 input runs at 28 -> 14 -> 7)::

  t -> sinusoids(time_freq_dim) -> Dense -> SiLU -> Dense = temb [B, E];  temb += LabelEmbedding(y)
  conv3x3(x) -> for each level i: num_res_blocks x [ResBlock(channels[i], temb) (+ AttnBlock)] -> skip,
                                  stride-2 conv3x3 down (except at the last level)
             -> mid: ResBlock, AttnBlock, ResBlock
             -> for each level, top-down: num_res_blocks x [concat(skip) -> ResBlock (+ AttnBlock)],
                                            nearest x2 up + conv3x3 to channels[i-1] (not at level 0)
             -> GroupNorm -> SiLU -> conv3x3 -> v   (same shape as x)

* ``ResBlock``: GroupNorm -> SiLU -> conv3x3 -> ``+ Dense(temb)`` -> GroupNorm -> SiLU -> conv3x3, plus a
  1x1-conv shortcut when the width changes.
* ``AttnBlock`` (at ``attention_levels``, the lowest one by default, and in the mid block):
  ``h += SelfAttn(GroupNorm(h))``, then, when ``context_dim`` is set, ``h += CrossAttn(LayerNorm(h), context)``.
* Class conditioning: an embedding table with ``num_classes + 1`` rows; label ``num_classes`` is the *null
  class* (``y=None`` means "all null"), so classifier-free guidance is two calls, ``y`` and ``y=None``.
* Token conditioning: ``context [B, L, context_dim]`` (text-like tokens, user-preference embeddings, ...) with
  an optional boolean ``context_mask [B, L]``. A sample whose tokens are all masked gets exactly the
  ``context=None`` output (the cross-attention adds an exact zero), so per-sample context dropout for CFG is
  just a mask. With ``context_dim`` set the cross-attention parameters always exist, and ``context`` may still
  be omitted at call time.

Design choice — zero-initialised output conv (``zero_init_output=True``, the default, as in ADM/DiT): the
network starts at :math:`v \equiv 0` for every input, which keeps the first flow-matching steps well scaled
(loss starts at :math:`E\|x_1 - x_0\|^2`) and makes fine-tuned adapters start from a known state. Gradients
still reach every layer after the first update. Set it to ``False`` when an untrained network must depend on
its inputs (tests, random-feature baselines).

Feature taps: every attention block sows its self- and cross-attention outputs (``[B, HW, C]``, before the
residual add) as ``"sa"`` / ``"ca"`` in the ``intermediates`` collection; read them with
``model.apply(params, ..., mutable=["intermediates"])`` (feature distillation, attention analyses).

Input validation (trace time, ``ValueError`` naming the argument): ``x`` is floating ``[B, H, W, C]`` with
``H, W`` multiples of ``2 ** (len(channels) - 1)``; ``t`` is a scalar (broadcast explicitly) or ``[B]``;
``y`` is integer ``[B]`` in ``[0, num_classes]`` (values checked when concrete; inside ``jit`` an out-of-range
label yields NaNs); ``context``/``context_mask`` shapes and dtypes. The output has ``x``'s shape and dtype.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn.layers import (Attention, LabelEmbedding, _check_context, _check_images, _check_labels,
                              _check_time, timestep_embedding)


def _group_norm(channels: int, num_groups: int, name: str | None = None) -> nn.GroupNorm:
  groups = min(num_groups, channels)
  if channels % groups != 0:
    raise ValueError(f"UNet: width {channels} is not divisible by norm_groups={num_groups}")
  return nn.GroupNorm(num_groups=groups, name=name)


class ResBlock(nn.Module):
  """GroupNorm-SiLU-conv residual block with an additive time(+class) embedding."""

  features: int
  norm_groups: int = 8

  @nn.compact
  def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
    skip = h
    h = nn.Conv(self.features, (3, 3), name="conv_0")(nn.silu(_group_norm(h.shape[-1], self.norm_groups)(h)))
    h = h + nn.Dense(self.features, name="emb_proj")(nn.silu(emb))[:, None, None, :]   # [B, H, W, F]
    h = nn.Conv(self.features, (3, 3), name="conv_1")(
        nn.silu(_group_norm(self.features, self.norm_groups)(h)))
    if skip.shape[-1] != self.features:
      skip = nn.Conv(self.features, (1, 1), name="shortcut")(skip)
    return skip + h


class AttnBlock(nn.Module):
  """Self-attention over the pixels, then (when ``context_dim`` is set) cross-attention to the context."""

  num_heads: int
  context_dim: int | None = None
  norm_groups: int = 8

  @nn.compact
  def __call__(self, h: jax.Array, context: jax.Array | None, mask: jax.Array | None) -> jax.Array:
    b, hh, ww, c = h.shape
    tokens = _group_norm(c, self.norm_groups)(h).reshape(b, hh * ww, c)                   # [B, N, C]
    sa = Attention(self.num_heads, name="self_attn")(tokens)
    self.sow("intermediates", "sa", sa)
    h = h + sa.reshape(b, hh, ww, c)
    if self.context_dim is not None:
      if context is None and self.is_initializing():
        # Create the cross-attention parameters even when init is called without a context.
        context = jnp.zeros((b, 1, self.context_dim), h.dtype)
        mask = jnp.zeros((b, 1), jnp.bool_)
      if context is not None:
        q = nn.LayerNorm(name="cross_norm")(h.reshape(b, hh * ww, c))
        ca = Attention(self.num_heads, name="cross_attn")(q, context, mask)
        self.sow("intermediates", "ca", ca)
        h = h + ca.reshape(b, hh, ww, c)
    return h


class UNet(nn.Module):
  """Tiny conditional UNet velocity network ``v(x_t, t, y, context)``; see the module docstring.

  Attributes:
    channels: width per resolution level; ``len(channels) - 1`` stride-2 downsamplings.
    num_res_blocks: residual blocks per level (encoder and decoder each).
    attention_levels: levels (negative indices allowed) with an attention block after each residual block;
      the mid block always has one.
    num_heads: attention heads (every width at an attention level must be divisible by it).
    num_classes: number of real classes, or ``None`` for no class conditioning. The null class is
      ``num_classes``.
    context_dim: width of the context tokens, or ``None`` for no cross-attention.
    time_freq_dim: number of sinusoidal time features.
    time_scale: ``t`` is multiplied by this before the sinusoids (1000 for ``t`` in ``[0, 1]``).
    norm_groups: GroupNorm groups (capped at the width).
    zero_init_output: zero-initialise the final conv so the initial velocity is exactly 0.

  Example::

    model = UNet(num_classes=10)                                   # null class = 10
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,)))
    velocity_fn = lambda params, x, t, y: model.apply(params, x, t, y)
    v_cond, v_uncond = velocity_fn(params, x, t, y), velocity_fn(params, x, t, None)
  """

  channels: Sequence[int] = (32, 64, 64)
  num_res_blocks: int = 1
  attention_levels: Sequence[int] = (-1,)
  num_heads: int = 4
  num_classes: int | None = 10
  context_dim: int | None = None
  time_freq_dim: int = 64
  time_scale: float = 1000.0
  norm_groups: int = 8
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
    num_levels = len(self.channels)
    if num_levels == 0:
      raise ValueError("UNet.channels must name at least one level width")
    _check_images("x", x, divisor=2 ** (num_levels - 1))
    batch = x.shape[0]
    t = _check_time(t, batch)
    y = _check_labels(y, batch, self.num_classes)
    _check_context(context, context_mask, batch, self.context_dim)
    if any(not -num_levels <= lvl < num_levels for lvl in self.attention_levels):
      raise ValueError(f"UNet.attention_levels={tuple(self.attention_levels)} must index the "
                       f"{num_levels} levels of channels={tuple(self.channels)}")
    attn_levels = {lvl % num_levels for lvl in self.attention_levels}

    emb_dim = 4 * self.channels[0]
    emb = timestep_embedding(t, self.time_freq_dim, time_scale=self.time_scale)
    emb = nn.Dense(emb_dim, name="time_mlp_0")(emb)
    emb = nn.Dense(emb_dim, name="time_mlp_1")(nn.silu(emb))                             # [B, E]
    if y is not None:
      emb = emb + LabelEmbedding(self.num_classes, emb_dim, name="label_embed")(y)

    def attn(h, name):
      return AttnBlock(self.num_heads, self.context_dim, self.norm_groups, name=name)(h, context, context_mask)

    h = nn.Conv(self.channels[0], (3, 3), name="conv_in")(x.astype(jnp.float32))
    skips = []
    for i, ch in enumerate(self.channels):
      for j in range(self.num_res_blocks):
        h = ResBlock(ch, self.norm_groups, name=f"down_{i}_res_{j}")(h, emb)
        if i in attn_levels:
          h = attn(h, f"down_{i}_attn_{j}")
        skips.append(h)
      if i < num_levels - 1:
        h = nn.Conv(ch, (3, 3), strides=(2, 2), name=f"down_{i}_downsample")(h)

    h = ResBlock(self.channels[-1], self.norm_groups, name="mid_res_0")(h, emb)
    h = attn(h, "mid_attn")
    h = ResBlock(self.channels[-1], self.norm_groups, name="mid_res_1")(h, emb)

    for i in reversed(range(num_levels)):
      ch = self.channels[i]
      for j in range(self.num_res_blocks):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = ResBlock(ch, self.norm_groups, name=f"up_{i}_res_{j}")(h, emb)
        if i in attn_levels:
          h = attn(h, f"up_{i}_attn_{j}")
      if i > 0:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)                              # nearest x2
        h = nn.Conv(self.channels[i - 1], (3, 3), name=f"up_{i}_upsample")(h)

    h = nn.silu(_group_norm(h.shape[-1], self.norm_groups, name="norm_out")(h))
    out_init = nn.initializers.zeros_init() if self.zero_init_output else nn.initializers.lecun_normal()
    v = nn.Conv(x.shape[-1], (3, 3), kernel_init=out_init, name="conv_out")(h)
    return v.astype(x.dtype)
