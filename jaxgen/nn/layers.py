r"""Building blocks shared by the small generative networks (:mod:`jaxgen.nn.unet`, :mod:`jaxgen.nn.dit`).

* :func:`timestep_embedding` — sinusoidal features of a flow time ``t``.
* :func:`dot_product_attention` — multi-head scaled dot-product attention with a key padding mask; a query
  whose keys are *all* masked gets an exactly-zero output (not a uniform average), so "no context" is a
  well-defined, batch-local state.
* :class:`Attention` — self- or cross-attention (q/k/v/out projections around the function above).
* :class:`LabelEmbedding` — class-label embedding table with an extra *null class* for classifier-free guidance.

Time convention (the library's, see :mod:`jaxgen.core.ode`): ``t`` in ``[0, 1]``, ``t = 0`` is pure noise and
``t = 1`` is data. The networks multiply ``t`` by ``time_scale`` (default 1000) before taking sinusoids, so the
frequencies of the usual ``max_period = 10000`` table resolve differences of about ``1e-3`` in ``t``; a model
fed DDPM integer steps ``0..T-1`` should use ``time_scale=1``.

The private ``_check_*`` helpers validate public inputs at trace time (shapes and dtypes always; label values
only when they are concrete, i.e. outside ``jit``) and raise ``ValueError`` naming the argument.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def timestep_embedding(t: jax.Array, dim: int, *, max_period: float = 10000.0,
                       time_scale: float = 1000.0) -> jax.Array:
  r"""Sinusoidal time features ``[cos(s t f_k), sin(s t f_k)]`` with ``f_k = max_period^{-k / (dim/2)}``.

  Args:
    t: times, shape ``[B]`` (any real dtype; computed in float32).
    dim: number of features (even).
    max_period: the longest period of the table (``1 / f_min``).
    time_scale: ``s``; ``t`` is multiplied by it first (1000 maps ``t in [0, 1]`` onto the usual DDPM range).

  Returns:
    ``[B, dim]`` float32 features.

  >>> import jax.numpy as jnp
  >>> timestep_embedding(jnp.array([0.0, 0.5]), 4).tolist()[0]     # t = 0: cos = 1, sin = 0
  [1.0, 1.0, 0.0, 0.0]
  """
  if dim % 2 != 0 or dim <= 0:
    raise ValueError(f"timestep_embedding: dim must be a positive even integer, got {dim}")
  t = jnp.asarray(t, jnp.float32)
  if t.ndim != 1:
    raise ValueError(f"timestep_embedding: t must have shape [B], got shape {t.shape}")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)   # [half]
  args = (time_scale * t)[:, None] * freqs[None, :]                                     # [B, half]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          mask: jax.Array | None = None) -> jax.Array:
  r"""Multi-head attention ``softmax(q k^T / sqrt(d)) v`` with an optional key padding mask.

  Args:
    q: queries ``[B, Lq, H, d]``.
    k: keys ``[B, Lk, H, d]``.
    v: values ``[B, Lk, H, dv]``.
    mask: optional boolean ``[B, Lk]``; ``False`` marks keys that must be ignored.

  Returns:
    ``[B, Lq, H, dv]`` in the dtype of ``v``. The softmax is computed in float32. A batch row whose keys are all
    masked returns exactly zero for every query (instead of a NaN or a uniform average).
  """
  scale = 1.0 / math.sqrt(q.shape[-1])
  logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
  if mask is not None:
    keep = mask[:, None, None, :]                                                       # [B, 1, 1, Lk]
    logits = jnp.where(keep, logits, -jnp.inf)
    any_key = jnp.any(mask, axis=-1)[:, None, None, None]                               # [B, 1, 1, 1]
    logits = jnp.where(any_key, logits, 0.0)        # fully masked rows: finite logits, zeroed below
    weights = jax.nn.softmax(logits, axis=-1)
    weights = jnp.where(keep, weights, 0.0)
  else:
    weights = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(jnp.float32))
  return out.astype(v.dtype)


class Attention(nn.Module):
  """Multi-head self-attention (``context=None``) or cross-attention over a token sequence.

  ``q = W_q x``, ``k = W_k c``, ``v = W_v c`` (``c = x`` for self-attention), then
  :func:`dot_product_attention` and an output projection ``W_o``. With a key mask, a batch row with no valid
  key returns exactly zero *after* the output projection (its bias included), so a fully masked context adds
  nothing to a residual stream.

  Attributes:
    num_heads: number of heads; ``features`` must be divisible by it.
    features: width of the query/key/value projections (default: the width of ``x``).
    out_features: output width (default: the width of ``x``).
    zero_init_out: zero-initialise the output projection (the layer then starts as an exact no-op).
  """

  num_heads: int
  features: int | None = None
  out_features: int | None = None
  zero_init_out: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None,
               mask: jax.Array | None = None) -> jax.Array:
    features = self.features or x.shape[-1]
    if features % self.num_heads != 0:
      raise ValueError(f"Attention: features={features} is not divisible by num_heads={self.num_heads}")
    head_dim = features // self.num_heads
    source = x if context is None else context
    dense = lambda name: nn.DenseGeneral((self.num_heads, head_dim), name=name)
    q = dense("query")(x)                                                               # [B, Lq, H, d]
    k = dense("key")(source)                                                            # [B, Lk, H, d]
    v = dense("value")(source)
    out = dot_product_attention(q, k, v, mask)
    out_init = nn.initializers.zeros_init() if self.zero_init_out else nn.initializers.lecun_normal()
    out = nn.DenseGeneral(self.out_features or x.shape[-1], axis=(-2, -1), kernel_init=out_init,
                          name="out")(out)                                              # [B, Lq, D]
    if mask is not None:
      any_key = jnp.any(mask, axis=-1)[:, None, None]                                   # [B, 1, 1]
      out = jnp.where(any_key, out, jnp.zeros_like(out))
    return out


class LabelEmbedding(nn.Module):
  """Class-label embedding table with ``num_classes + 1`` rows; row ``num_classes`` is the null class.

  Labels outside ``[0, num_classes]`` give NaN rows (checked eagerly by the networks when labels are concrete;
  inside ``jit`` the NaN makes a bad label visible instead of silently wrapping or clipping it).

  Attributes:
    num_classes: number of real classes; the null (unconditional) label is ``num_classes``.
    features: embedding width.
  """

  num_classes: int
  features: int

  @nn.compact
  def __call__(self, y: jax.Array) -> jax.Array:
    table = self.param("embedding", nn.initializers.normal(0.02), (self.num_classes + 1, self.features))
    valid = (y >= 0) & (y <= self.num_classes)                                          # [B]
    rows = jnp.take(table, jnp.clip(y, 0, self.num_classes), axis=0)                    # [B, D]
    return jnp.where(valid[:, None], rows, jnp.full_like(rows, jnp.nan))


# ---------------------------------------------------------------------------------------------------
# Input validation shared by the networks (trace-time: shapes and dtypes; values only when concrete).


def _concrete_value(a: jax.Array) -> np.ndarray | None:
  """``a`` as a NumPy array when it is concrete (not traced), else ``None``."""
  if isinstance(a, jax.core.Tracer):
    return None
  try:
    return np.asarray(a)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _check_images(name: str, x: jax.Array, *, divisor: int = 1, min_size: int = 1) -> None:
  """``x`` must be a floating ``[B, H, W, C]`` array with ``H, W`` multiples of ``divisor``, at least ``min_size``."""
  if not hasattr(x, "ndim") or x.ndim != 4:
    raise ValueError(f"{name} must be a [B, H, W, C] image batch, got shape {getattr(x, 'shape', type(x))}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
  _, h, w, _ = x.shape
  if h % divisor != 0 or w % divisor != 0 or h < min_size or w < min_size:
    raise ValueError(f"{name}: height and width must be multiples of {divisor} and at least {min_size}, "
                     f"got shape {x.shape}")


def _check_time(t: jax.Array, batch: int) -> jax.Array:
  """Returns ``t`` as float32 ``[B]``; a scalar is broadcast explicitly. Any other shape raises."""
  t = jnp.asarray(t)
  if not (jnp.issubdtype(t.dtype, jnp.floating) or jnp.issubdtype(t.dtype, jnp.integer)):
    raise ValueError(f"t must be a real number or array, got dtype {t.dtype}")
  if t.ndim == 0:
    t = jnp.broadcast_to(t, (batch,))
  elif t.shape != (batch,):
    raise ValueError(f"t must be a scalar or have shape [B]=({batch},), got shape {t.shape}")
  return t.astype(jnp.float32)


def _check_labels(y: jax.Array | None, batch: int, num_classes: int | None) -> jax.Array | None:
  """Returns int32 labels ``[B]`` (``None`` -> all null class); validates dtype, shape and concrete values."""
  if num_classes is None:
    if y is not None:
      raise ValueError("y (class labels) was given but the network has num_classes=None (unconditional)")
    return None
  if y is None:
    return jnp.full((batch,), num_classes, jnp.int32)
  y = jnp.asarray(y)
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise ValueError(f"y (class labels) must have an integer dtype, got {y.dtype}")
  if y.shape != (batch,):
    raise ValueError(f"y (class labels) must have shape [B]=({batch},), got shape {y.shape}")
  values = _concrete_value(y)
  if values is not None and values.size and (values.min() < 0 or values.max() > num_classes):
    raise ValueError(f"y (class labels) must lie in [0, {num_classes}] ({num_classes} = null class), "
                     f"got values in [{values.min()}, {values.max()}]")
  return y.astype(jnp.int32)


def _check_context(context: jax.Array | None, mask: jax.Array | None, batch: int,
                   context_dim: int | None) -> None:
  """Validates a token-sequence condition ``context [B, L, D_ctx]`` and its boolean ``mask [B, L]``."""
  if context is None:
    if mask is not None:
      raise ValueError("context_mask was given without a context")
    return
  if context_dim is None:
    raise ValueError("context was given but the network has context_dim=None (no cross-attention)")
  if not hasattr(context, "ndim") or context.ndim != 3 or context.shape[0] != batch \
      or context.shape[2] != context_dim:
    raise ValueError(f"context must have shape [B, L, context_dim]=({batch}, L, {context_dim}), "
                     f"got shape {getattr(context, 'shape', type(context))}")
  if context.shape[1] == 0:
    raise ValueError("context must hold at least one token (L >= 1); mask tokens out instead")
  if not jnp.issubdtype(context.dtype, jnp.floating):
    raise ValueError(f"context must have a floating dtype, got {context.dtype}")
  if mask is not None:
    if not hasattr(mask, "shape") or mask.shape != context.shape[:2]:
      raise ValueError(f"context_mask must have shape [B, L]={context.shape[:2]}, "
                       f"got shape {getattr(mask, 'shape', type(mask))}")
    if mask.dtype != jnp.bool_:
      raise ValueError(f"context_mask must be boolean (True = attend), got dtype {mask.dtype}")
