r"""Fake quantization with straight-through gradients: INT4 group min-max, INT4 absmax with kept outliers, FP4 E1M2.

The low-bit simulation of Stable-SPAM's 4-bit experiments (Huang et al. 2025, arXiv 2502.17055, code
github.com/TianjinYellow/StableSPAM): tensors keep their dtype, but the forward pass only sees values on a 4-bit
grid. Every quantizer works on *groups* of ``group_size`` consecutive values of the row-major flattened tensor
(groups may span rows/tokens; a last partial group is quantized on its own entries only).

Weights — asymmetric INT4, per group min-max (:func:`int4_weight_fake_quant`):

.. math:: s = \max(w_{max} - w_{min}, 10^{-5}) / 15,\quad z = \operatorname{clip}(-\lfloor w_{min}/s \rceil, 0, 15),
          \quad q = \operatorname{clip}(\lfloor w/s \rceil + z, 0, 15),\quad \hat w = (q - z)\, s.

  Reference quirk, reproduced: :math:`z` is clipped to ``[0, 15]``, so the representable values are always
  :math:`(q - z)s \in [-15s, 15s]` with 0 among them; a group whose range does not contain 0 is clipped to
  :math:`[0, 15s]` (all positive) or :math:`[-15s, 0]` (all negative). E.g. a group in ``[10, 11]`` has
  :math:`s = 1/15`, :math:`z = 0` and every entry becomes :math:`15 s = 1`.

Activations — symmetric INT4 per group with outliers kept (:func:`int4_act_fake_quant`): the ``keep_topk`` (2)
largest-:math:`|x|` entries of each group pass through exactly; with :math:`a = \max(\max|x_{rest}|, 10^{-6})` over
the remaining entries,

.. math:: q = \operatorname{clip}(\lfloor 7x / a \rceil, -8, 7),\qquad \hat x = q\, a / 7 .

  (The spec writes both "scale = max|rest|/7" and "x·7/scale"; we read it as a grid step :math:`a/7` with the
  1e-6 floor on :math:`a`; the two readings differ only for groups whose non-outlier entries are all below ~7e-6.)

FP4 E1M2 (:func:`fp4_e1m2_fake_quant`): 1 sign, 1 exponent, 2 mantissa bits, exponent bias 1, with subnormals:
magnitudes :math:`\{0, 0.25, 0.5, 0.75\}` (exponent 0: :math:`m/4`) and :math:`\{1, 1.25, 1.5, 1.75\}` (exponent 1:
:math:`1 + m/4`) — 15 distinct values :data:`FP4_E1M2_VALUES`. Per group the values are scaled so that
:math:`\max|x_{rest}|` maps to 1.75 and rounded to the nearest representable value (ties to even mantissa); the
top-``keep_topk`` entries pass through. Note E1M2's grid is *uniform* (step 0.25), so this equals a symmetric
15-level integer grid :math:`\hat x = \operatorname{clip}(\lfloor 7x/a \rceil, -7, 7)\, a/7`.

Rounding :math:`\lfloor\cdot\rceil` is round-half-to-even (``jnp.round``, like ``torch.round``). Arithmetic runs in
at least float32; the output has the input dtype.

Straight-through estimator: every public quantizer is a ``jax.custom_vjp`` whose forward returns the quantized
tensor exactly and whose backward is the identity (:math:`\partial\hat w/\partial w := I`).

Linear layers: :func:`fake_quant_dot_general` builds a ``lax.dot_general`` replacement that quantizes the
activation (left operand) and the kernel (right operand) and multiplies :math:`\hat x \hat W`; autodiff then gives
the weight gradient from :math:`\hat x` and the input gradient through :math:`\hat W` (STE through both
quantizers), which is what the spec asks of the reference's custom backward. Kernels use Flax's ``[in, out]``
layout; they are grouped along the *input* dimension of each output unit (the row-major flattening of the torch
``[out, in]`` weight), so the groups are the reference's. :class:`QuantDense` is a drop-in ``nn.Dense`` (same
parameter names and shapes) and :func:`fake_quantize_dense` quantizes every ``nn.Dense`` of an existing Flax model
inside a ``with`` block (embeddings, norms and — via ``predicate`` — the LM head can be left alone, as in the
paper).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FP4_E1M2_VALUES",
    "MODES",
    "QuantDense",
    "fake_quant_dot_general",
    "fake_quantize_dense",
    "fp4_e1m2_fake_quant",
    "int4_act_fake_quant",
    "int4_weight_fake_quant",
]

MODES = ("int4", "fp4", "none")


def _fp4_e1m2_values() -> np.ndarray:
  values = set()
  for sign in (1.0, -1.0):
    for exponent in (0, 1):
      for mantissa in range(4):
        magnitude = mantissa / 4 if exponent == 0 else 1 + mantissa / 4   # bias 1: 2^(e-1) scaling is 1 for e=1
        values.add(sign * magnitude + 0.0)
  return np.array(sorted(values))


FP4_E1M2_VALUES = _fp4_e1m2_values()   # the 15 distinct values (+0 and -0 coincide), max magnitude 1.75
_FP4_MAX = 1.75


# ----------------------------------------------------------------------------------------------------------------
# Validation and grouping.


def _check_group_size(group_size: int) -> None:
  if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
    raise ValueError(f"group_size must be a positive integer, got {group_size!r}")


def _check_keep_topk(keep_topk: int, group_size: int) -> None:
  if (isinstance(keep_topk, bool) or not isinstance(keep_topk, (int, np.integer))
      or not 0 <= keep_topk < group_size):
    raise ValueError(f"keep_topk must be an integer in [0, group_size={group_size}), got {keep_topk!r}")


def _check_float(name: str, x: jax.Array) -> None:
  if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
    raise TypeError(f"{name} must be a floating-point array, got dtype {jnp.asarray(x).dtype}")


def _groups(x: jax.Array, group_size: int, pad_mode: str) -> tuple[jax.Array, int]:
  """Flatten row-major, pad to a multiple of ``group_size``; returns ([G, group_size] in >= float32, size)."""
  flat = jnp.ravel(x).astype(jnp.promote_types(x.dtype, jnp.float32))
  size = flat.shape[0]
  pad = (-size) % group_size
  if pad:
    flat = jnp.pad(flat, (0, pad), mode=pad_mode)
  return flat.reshape(-1, group_size), size


def _ungroup(groups: jax.Array, size: int, like: jax.Array) -> jax.Array:
  return groups.reshape(-1)[:size].reshape(like.shape).astype(like.dtype)


def _topk_mask(groups: jax.Array, keep_topk: int) -> jax.Array:
  """Boolean [G, S]: the ``keep_topk`` largest-|x| entries of each group (ties: lowest index)."""
  if keep_topk == 0:
    return jnp.zeros(groups.shape, bool)
  _, idx = jax.lax.top_k(jnp.abs(groups), keep_topk)                     # [G, k]
  hits = idx[:, :, None] == jnp.arange(groups.shape[1])[None, None, :]   # [G, k, S]
  return jnp.any(hits, axis=1)


# ----------------------------------------------------------------------------------------------------------------
# Raw quantizers (no gradient rule) and their straight-through versions.


def _int4_weight(w: jax.Array, group_size: int) -> jax.Array:
  if w.size == 0:
    return w
  g, size = _groups(w, group_size, "edge")                 # edge padding keeps each group's min and max
  w_min = jnp.min(g, axis=1, keepdims=True)
  w_max = jnp.max(g, axis=1, keepdims=True)
  scale = jnp.maximum(w_max - w_min, 1e-5) / 15
  zero = jnp.clip(-jnp.round(w_min / scale), 0, 15)
  q = jnp.clip(jnp.round(g / scale) + zero, 0, 15)
  return _ungroup((q - zero) * scale, size, w)


def _symmetric_with_outliers(x: jax.Array, group_size: int, keep_topk: int, qmin: int) -> jax.Array:
  """x_hat = clip(round(7 x / a), qmin, 7) a / 7 per group, top-k |x| kept exactly."""
  if x.size == 0:
    return x
  g, size = _groups(x, group_size, "constant")             # zero padding never changes max|x|
  keep = _topk_mask(g, keep_topk)
  absmax = jnp.max(jnp.where(keep, 0.0, jnp.abs(g)), axis=1, keepdims=True)
  a = jnp.maximum(absmax, 1e-6)
  q = jnp.clip(jnp.round(g * 7 / a), qmin, 7)
  return _ungroup(jnp.where(keep, g, q * a / 7), size, x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _int4_weight_ste(w, group_size):
  return _int4_weight(w, group_size)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _symmetric_ste(x, group_size, keep_topk, qmin):
  return _symmetric_with_outliers(x, group_size, keep_topk, qmin)


def _identity_bwd(*args):
  """custom_vjp backward: nondiff args first, then (residual, cotangent) -> (cotangent,)."""
  return (args[-1],)


_int4_weight_ste.defvjp(lambda w, group_size: (_int4_weight(w, group_size), None), _identity_bwd)
_symmetric_ste.defvjp(
    lambda x, group_size, keep_topk, qmin: (_symmetric_with_outliers(x, group_size, keep_topk, qmin), None),
    _identity_bwd)


def int4_weight_fake_quant(w: jax.Array, group_size: int = 256) -> jax.Array:
  """INT4 asymmetric per-group min-max fake quantization of a weight, straight-through gradient.

  Args:
    w: any-shape floating array; flattened row-major into groups of ``group_size`` consecutive values.
    group_size: values per group (256 in the reference).

  Returns:
    :math:`\\hat w` (same shape and dtype): at most 16 distinct values per group. The gradient w.r.t. ``w`` is the
    identity.
  """
  _check_float("w", w)
  _check_group_size(group_size)
  return _int4_weight_ste(jnp.asarray(w), int(group_size))


def int4_act_fake_quant(x: jax.Array, group_size: int = 256, keep_topk: int = 2) -> jax.Array:
  """INT4 symmetric per-group fake quantization of an activation, the ``keep_topk`` largest-|x| entries kept.

  Args:
    x: any-shape floating array (e.g. ``[B, T, D]``); flattened row-major into groups of ``group_size``.
    group_size: values per group (256).
    keep_topk: outliers per group passed through unquantized (2).

  Returns:
    :math:`\\hat x` (same shape and dtype), straight-through gradient.
  """
  _check_float("x", x)
  _check_group_size(group_size)
  _check_keep_topk(keep_topk, group_size)
  return _symmetric_ste(jnp.asarray(x), int(group_size), int(keep_topk), -8)


def fp4_e1m2_fake_quant(x: jax.Array, group_size: int = 256, keep_topk: int = 2) -> jax.Array:
  """FP4 (E1M2) per-group absmax fake quantization, the ``keep_topk`` largest-|x| entries kept.

  Each group is scaled so that the largest non-outlier magnitude maps to 1.75 (the largest E1M2 value) and rounded
  to the nearest value of :data:`FP4_E1M2_VALUES`; straight-through gradient.
  """
  _check_float("x", x)
  _check_group_size(group_size)
  _check_keep_topk(keep_topk, group_size)
  # E1M2 is a uniform grid: round(x / a * 1.75 * 4) / 4 * a / 1.75 == clip(round(7 x / a), -7, 7) * a / 7.
  return _symmetric_ste(jnp.asarray(x), int(group_size), int(keep_topk), -7)


# ----------------------------------------------------------------------------------------------------------------
# Linear layers.


def _quantizers(mode: str, group_size: int, keep_topk: int):
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  _check_group_size(group_size)
  _check_keep_topk(keep_topk, group_size)
  if mode == "int4":
    return (lambda x: int4_act_fake_quant(x, group_size, keep_topk),
            lambda w: int4_weight_fake_quant(w, group_size))
  if mode == "fp4":
    return (lambda x: fp4_e1m2_fake_quant(x, group_size, keep_topk),
            lambda w: fp4_e1m2_fake_quant(w, group_size, 0))
  return (lambda x: x), (lambda w: w)


def fake_quant_dot_general(mode: str = "int4", group_size: int = 256, keep_topk: int = 2) -> Callable[..., jax.Array]:
  """A ``lax.dot_general`` replacement for Dense layers: :math:`\\hat x \\hat W` with STE through both quantizers.

  Args:
    mode: ``"int4"`` (activations :func:`int4_act_fake_quant`, kernel :func:`int4_weight_fake_quant`), ``"fp4"``
      (activations :func:`fp4_e1m2_fake_quant` with ``keep_topk`` outliers, kernel FP4 E1M2 per-group absmax
      without kept outliers) or ``"none"`` (plain matmul).
    group_size: values per quantization group (256).
    keep_topk: activation outliers kept per group (2).

  Returns:
    ``dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None)`` supporting the Dense
    contraction (last axis of ``lhs`` with axis 0 of a 2-D ``rhs``, no batch axes). Pass it as
    ``nn.Dense(..., dot_general=...)``.
  """
  quant_x, quant_w = _quantizers(mode, group_size, keep_topk)

  def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    (lc, rc), (lb, rb) = dimension_numbers
    if rhs.ndim != 2 or tuple(lc) != (lhs.ndim - 1,) or tuple(rc) != (0,) or tuple(lb) or tuple(rb):
      raise ValueError("fake_quant_dot_general supports only the Dense contraction lhs[..., in] x rhs[in, out], "
                       f"got dimension_numbers={dimension_numbers} for shapes {lhs.shape}, {rhs.shape}")
    x_hat = quant_x(lhs)
    w_hat = quant_w(rhs.T).T                              # group along `in` for each output unit
    return jax.lax.dot_general(x_hat, w_hat, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)

  return dot_general


def _dense_forward(module: nn.Dense, inputs, kernel, bias, dot_general):
  """nn.Dense's arithmetic with a given ``dot_general``."""
  inputs, kernel, bias = module.promote_dtype(inputs, kernel, bias, dtype=module.dtype)
  y = dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), precision=module.precision)
  if bias is not None:
    y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
  return y


class QuantDense(nn.Dense):
  """``nn.Dense`` with fake-quantized activations and kernel (same parameters, usable in its place).

  Attributes (in addition to ``nn.Dense``'s; its ``dot_general`` attributes are ignored):
    mode: ``"int4"``, ``"fp4"`` or ``"none"`` (see :func:`fake_quant_dot_general`).
    group_size: values per quantization group (256).
    keep_topk: activation outliers kept per group (2).
  """

  mode: str = "int4"
  group_size: int = 256
  keep_topk: int = 2

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (jnp.shape(inputs)[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    return _dense_forward(self, inputs, kernel, bias, fake_quant_dot_general(self.mode, self.group_size,
                                                                             self.keep_topk))


@contextlib.contextmanager
def fake_quantize_dense(
    mode: str = "int4",
    *,
    group_size: int = 256,
    keep_topk: int = 2,
    predicate: Callable[[nn.Module], bool] | None = None,
) -> Iterator[None]:
  """Fake-quantize every ``nn.Dense`` call of any Flax (Linen) model inside the ``with`` block.

  Uses ``nn.intercept_methods``: while the context is active, ``Dense.__call__`` (not at ``init``) computes
  :math:`\\hat x \\hat W + b` with :func:`fake_quant_dot_general`. Works under ``jit`` (the context must be active
  while tracing). :class:`QuantDense` layers and ``nn.Embed``/norms are left as they are.

  Args:
    mode, group_size, keep_topk: see :func:`fake_quant_dot_general`.
    predicate: ``predicate(module) -> bool`` selecting the Dense layers to quantize (e.g.
      ``lambda m: m.name != "lm_head"``; ``m.path`` is the module's name path). Default: all.

  Example::

    with fake_quantize_dense("int4", predicate=lambda m: m.name != "lm_head"):
      logits = model.apply(params, tokens)
  """
  dot_general = fake_quant_dot_general(mode, group_size, keep_topk)

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name != "__call__" or not isinstance(module, nn.Dense) or isinstance(module, QuantDense)
        or module.is_initializing() or (predicate is not None and not predicate(module))):
      return next_fun(*args, **kwargs)
    (inputs,) = args
    kernel = module.get_variable("params", "kernel")
    bias = module.get_variable("params", "bias") if module.use_bias else None
    return _dense_forward(module, inputs, kernel, bias, dot_general)

  with nn.intercept_methods(interceptor):
    yield
