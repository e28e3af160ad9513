r"""Softmax Collapse (SC): the floating-point failure mode that stops grokking.

Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability", ICLR 2025, arXiv 2501.04697
(https://arxiv.org/abs/2501.04697), Sec. 3; official metric ``logger.py::MetricsLogger.compute_softmax_collapse``
@ 0cc9e8d.

Softmax is evaluated as :math:`\mathrm{softmax}(z)_i = e^{z_i - m} / \sum_j e^{z_j - m}` with :math:`m = \max_j z_j`.
When the correct-class logit exceeds every other logit by a large margin, every :math:`e^{z_j - m}` with
:math:`j \ne y` is below half an ulp of 1 and the sum rounds to **exactly 1** in the working precision. Then
:math:`\log\mathrm{softmax}(z)_y = 0` exactly, the loss of that example is 0 and so is the gradient of its
correct-class logit (paper Eq. 4–5): learning on that example stops — Softmax Collapse. With a single competitor at
margin :math:`\Delta`, collapse happens once :math:`e^{-\Delta} < 2^{-p}` with :math:`p = 11, 24, 53` for
float16/32/64, i.e. :math:`\Delta \gtrsim 7.6, 16.6, 36.7`.

* :func:`softmax_collapse_mask` — per example: cast to ``dtype``, subtract the row max, exponentiate, sum; collapsed
  iff the sum equals 1 exactly in that dtype.
* :func:`softmax_collapse_fraction` — the batch mean of the mask (the paper's "SC" curve).
* :func:`zero_loss_fraction` — fraction of per-example losses that are exactly 0 (the official ``zero_terms``).

Note: for rows whose :math:`e^{-\Delta}` sits exactly at the rounding edge the result depends on the order of
summation (PyTorch, NumPy and XLA may differ on such a row).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["softmax_collapse_fraction", "softmax_collapse_mask", "zero_loss_fraction"]


def softmax_collapse_mask(logits: jax.Array, dtype=jnp.float32, axis: int = -1) -> jax.Array:
  r"""Per-example Softmax-Collapse indicator: :math:`\sum_j e^{z_j - \max z} = 1` exactly in ``dtype``.

  Args:
    logits: ``[..., C]`` floating-point logits (any precision; they are cast to ``dtype`` first).
    dtype: the precision in which softmax is evaluated (``jnp.float16``, ``float32`` or ``float64``; float64
      needs ``jax_enable_x64``).
    axis: the class axis.

  Returns:
    Boolean array with ``axis`` removed.

  Examples:
    >>> import jax.numpy as jnp
    >>> softmax_collapse_mask(jnp.array([[20.0, 0.0], [5.0, 0.0]])).tolist()  # e^-20 < 2^-24 < e^-5
    [True, False]
  """
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"logits must be a floating-point array, got dtype {logits.dtype}")
  dtype = jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
  if dtype == jnp.float64 and not jax.config.jax_enable_x64:
    raise ValueError("dtype=float64 needs jax_enable_x64 (e.g. `with jax.enable_x64(True):`)")
  if not isinstance(axis, int) or not -logits.ndim <= axis < logits.ndim:
    raise ValueError(f"axis must be an int in [{-logits.ndim}, {logits.ndim}), got {axis!r}")
  if logits.shape[axis] < 1:
    raise ValueError(f"logits must have at least one class along axis {axis}, got shape {logits.shape}")
  z = logits.astype(dtype)
  shifted = z - jnp.max(z, axis=axis, keepdims=True)
  total = jnp.sum(jnp.exp(shifted), axis=axis, dtype=dtype)
  return total == jnp.asarray(1, dtype)


def softmax_collapse_fraction(logits: jax.Array, dtype=jnp.float32, axis: int = -1) -> jax.Array:
  """Fraction of examples in Softmax Collapse when softmax is computed in ``dtype`` (paper's SC metric).

  Args:
    logits: ``[..., C]`` logits.
    dtype: precision of the softmax evaluation.
    axis: the class axis.

  Returns:
    float32 scalar in [0, 1].

  Raises:
    ValueError: as :func:`softmax_collapse_mask`, or no examples (the fraction of an empty batch is undefined).
  """
  mask = softmax_collapse_mask(logits, dtype, axis)
  if mask.size == 0:
    raise ValueError(f"logits has no examples (shape {jnp.shape(logits)}): the collapse fraction is undefined")
  return jnp.mean(mask.astype(jnp.float32))


def zero_loss_fraction(per_example_loss: jax.Array) -> jax.Array:
  """Fraction of per-example losses that are exactly 0 (their gradient vanishes too).

  Examples:
    >>> import jax.numpy as jnp
    >>> float(zero_loss_fraction(jnp.array([0.0, -0.0, 1e-30, 2.0])))
    0.5
  """
  loss = jnp.asarray(per_example_loss)
  if loss.size == 0:
    raise ValueError("per_example_loss must not be empty")
  return jnp.mean((loss == 0).astype(jnp.float32))
