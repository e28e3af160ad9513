r"""A tiny LLaMA-style decoder-only language model (the model of the Stable-SPAM tiny-LLaMA reproduction).

Touvron et al., "LLaMA: Open and Efficient Foundation Language Models", arXiv 2302.13971
(https://arxiv.org/abs/2302.13971). Pre-norm blocks without biases:

.. math:: h \leftarrow h + W_o\,\mathrm{Attn}(\mathrm{RoPE}(W_q \bar h), \mathrm{RoPE}(W_k \bar h), W_v \bar h),
          \quad \bar h = \mathrm{RMSNorm}(h)

.. math:: h \leftarrow h + W_{down}\bigl(\mathrm{SiLU}(W_{gate} \bar h) \odot W_{up} \bar h\bigr),
          \quad \bar h = \mathrm{RMSNorm}(h)

* RMSNorm: :math:`x / \sqrt{\mathrm{mean}(x^2) + \epsilon} \cdot g` (learned gain :math:`g`, no bias).
* Rotary embeddings (:func:`apply_rotary`, Su et al., arXiv 2104.09864), "rotate-half" layout of the
  Hugging Face / GPT-NeoX LLaMA code: feature :math:`i < d/2` is paired with :math:`i + d/2` and the pair at
  position :math:`p` is rotated by angle :math:`p\,\theta_i`, :math:`\theta_i = \text{base}^{-2i/d}`. Hence
  :math:`\langle \mathrm{RoPE}(q, p), \mathrm{RoPE}(k, p')\rangle` depends on :math:`p - p'` only.
* Causal multi-head softmax attention (softmax in float32).
* Embeddings: untied by default (LLaMA's ``lm_head`` is its own ``[d_model, vocab]`` matrix, an ``nn.Dense`` named
  ``lm_head``); ``tie_embeddings=True`` reuses the token embedding (``logits = h E^T``) and has no ``lm_head``.

Parameter names follow the Hugging Face LLaMA checkpoint: every block ``layers_i`` has the seven projections
``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj`` (``nn.Dense``, no
bias), so :func:`jaxgen.core.quant.fake_quantize_dense` with ``predicate=lambda m: m.name != "lm_head"``
fake-quantizes exactly those seven, as in the paper's 4-bit runs.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["RMSNorm", "TinyLlama", "apply_rotary", "rotary_angles"]


def rotary_angles(positions: jax.Array, head_dim: int, base: float = 10000.0) -> jax.Array:
  """Rotation angles ``positions[:, None] * theta[None, :]``, ``theta_i = base^(-2i/head_dim)``; ``[T, head_dim/2]``."""
  if head_dim % 2:
    raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
  theta = base ** (-jnp.arange(0, head_dim // 2, dtype=jnp.float32) * 2.0 / head_dim)   # [d/2]
  return positions.astype(jnp.float32)[:, None] * theta[None, :]                       # [T, d/2]


def apply_rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding of ``x`` ``[B, T, H, d]`` at integer ``positions`` ``[T]`` (rotate-half layout)."""
  angles = rotary_angles(positions, x.shape[-1], base)                                 # [T, d/2]
  cos = jnp.cos(angles)[None, :, None, :]                                              # [1, T, 1, d/2]
  sin = jnp.sin(angles)[None, :, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = jnp.split(xf, 2, axis=-1)                                                   # [B, T, H, d/2] each
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class RMSNorm(nn.Module):
  """Root-mean-square layer norm with a learned gain (no bias, no mean subtraction)."""

  eps: float = 1e-6
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
    y = y * scale.reshape((1,) * (x.ndim - 1) + (-1,))
    return y.astype(self.dtype or x.dtype)


class _Block(nn.Module):
  d_model: int
  num_heads: int
  mlp_dim: int
  rope_base: float
  dtype: jnp.dtype | None

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    batch, length, _ = h.shape
    head_dim = self.d_model // self.num_heads
    dense = lambda features, name: nn.Dense(features, use_bias=False, dtype=self.dtype, name=name)  # noqa: E731

    x = RMSNorm(dtype=self.dtype, name="attn_norm")(h)
    q = dense(self.d_model, "q_proj")(x).reshape(batch, length, self.num_heads, head_dim)
    k = dense(self.d_model, "k_proj")(x).reshape(batch, length, self.num_heads, head_dim)
    v = dense(self.d_model, "v_proj")(x).reshape(batch, length, self.num_heads, head_dim)
    positions = jnp.arange(length)
    q = apply_rotary(q, positions, self.rope_base)
    k = apply_rotary(k, positions, self.rope_base)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) / math.sqrt(head_dim)
    causal = jnp.tril(jnp.ones((length, length), bool))                                # [T, T]
    logits = jnp.where(causal[None, None], logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=-1)                                          # [B, H, T, T]
    attn = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(jnp.float32)).astype(v.dtype)
    h = h + dense(self.d_model, "o_proj")(attn.reshape(batch, length, self.d_model))

    x = RMSNorm(dtype=self.dtype, name="mlp_norm")(h)
    gated = nn.silu(dense(self.mlp_dim, "gate_proj")(x)) * dense(self.mlp_dim, "up_proj")(x)
    return h + dense(self.d_model, "down_proj")(gated)


class TinyLlama(nn.Module):
  """LLaMA-style causal language model: ``(tokens int [B, T]) -> logits float32 [B, T, vocab_size]``.

  Attributes:
    vocab_size: number of token ids (65 for character-level tiny Shakespeare).
    d_model: residual width (128).
    num_layers: decoder blocks (4).
    num_heads: attention heads (4); must divide ``d_model`` with an even head size.
    mlp_dim: SwiGLU hidden width (``None``: LLaMA's ``8/3 d_model`` rounded up to a multiple of 32).
    max_len: optional longest accepted sequence (``None``: any; RoPE needs no table).
    tie_embeddings: reuse the token embedding as the output matrix (default False, as LLaMA).
    rope_base: rotary base (10000).
    dtype: compute dtype of the projections (``None``: float32 parameters' dtype; ``jnp.bfloat16`` for bf16
      compute); parameters are float32 and logits are returned in float32.

  Example (causal: the logits at position t do not depend on tokens after t)::

    >>> import jax, jax.numpy as jnp
    >>> model = TinyLlama(vocab_size=65, d_model=32, num_layers=1, num_heads=2)
    >>> tokens = jnp.array([[1, 2, 3, 4]])
    >>> params = model.init(jax.random.key(0), tokens)
    >>> logits = model.apply(params, tokens)
    >>> logits.shape, logits.dtype
    ((1, 4, 65), dtype('float32'))
    >>> changed = model.apply(params, tokens.at[0, 3].set(9))
    >>> bool(jnp.allclose(logits[:, :3], changed[:, :3], atol=1e-6)), bool(jnp.allclose(logits[:, 3], changed[:, 3]))
    (True, False)
  """

  vocab_size: int
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int | None = None
  max_len: int | None = None
  tie_embeddings: bool = False
  rope_base: float = 10000.0
  dtype: jnp.dtype | None = None

  def _validate(self, tokens: jax.Array) -> None:
    for name in ("vocab_size", "d_model", "num_layers", "num_heads"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if self.d_model % self.num_heads:
      raise ValueError(f"num_heads ({self.num_heads}) must divide d_model ({self.d_model})")
    if (self.d_model // self.num_heads) % 2:
      raise ValueError(f"d_model / num_heads must be even for rotary embeddings, got {self.d_model // self.num_heads}")
    if self.mlp_dim is not None and (not isinstance(self.mlp_dim, int) or self.mlp_dim < 1):
      raise ValueError(f"mlp_dim must be a positive int or None, got {self.mlp_dim!r}")
    if tokens.ndim != 2:
      raise ValueError(f"tokens must have shape [batch, length], got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise TypeError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    if self.max_len is not None and tokens.shape[1] > self.max_len:
      raise ValueError(f"tokens length {tokens.shape[1]} exceeds max_len={self.max_len}")

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    tokens = jnp.asarray(tokens)
    self._validate(tokens)
    mlp_dim = self.mlp_dim or 32 * math.ceil(8 * self.d_model / 3 / 32)
    embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=nn.initializers.normal(0.02), name="embed")
    h = embed(tokens)                                                                  # [B, T, D]
    for i in range(self.num_layers):
      h = _Block(self.d_model, self.num_heads, mlp_dim, self.rope_base, self.dtype, name=f"layers_{i}")(h)
    h = RMSNorm(dtype=self.dtype, name="final_norm")(h)
    if self.tie_embeddings:
      logits = embed.attend(h.astype(jnp.float32))
    else:
      logits = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype, name="lm_head")(h)
    return logits.astype(jnp.float32)                                                  # [B, T, V]
