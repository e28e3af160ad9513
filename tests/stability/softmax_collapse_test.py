"""Softmax Collapse metrics against the official-code fixture, plus the closed-form collapse margins."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.stability import (softmax_collapse_fraction, softmax_collapse_mask, stablemax_cross_entropy,
                              zero_loss_fraction)

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "optim"


def _ce(logits, labels):
  # -log_softmax at the label, as torch's cross_entropy (optax's logsumexp - z_y rounds differently near collapse).
  return -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=-1)[:, 0]


def test_collapse_mask_matches_fixture():
  data = np.load(FIXTURES / "softmax_collapse.npz")
  with jax.enable_x64(True):
    logits = jnp.asarray(data["logits"])
    for dtype, tag in ((jnp.float16, "fp16"), (jnp.float64, "fp64")):
      mask = np.asarray(softmax_collapse_mask(logits, dtype), np.float64)
      np.testing.assert_array_equal(mask, data[f"softmax_collapse_per_sample_{tag}"], err_msg=tag)
      np.testing.assert_allclose(float(softmax_collapse_fraction(logits, dtype)),
                                 data[f"softmax_collapse_fraction_{tag}"], atol=1e-7)
    # float32: rows with margin ~16-18 sit at the rounding edge (summation order decides); allow one such row.
    mask32 = np.asarray(softmax_collapse_mask(logits, jnp.float32), np.float64)
    expected32 = data["softmax_collapse_per_sample_fp32"]
    differ = np.flatnonzero(mask32 != expected32)
    assert len(differ) <= 1 and all(15.0 <= data["margins"][i] <= 18.0 for i in differ), differ
    outside_edge = (data["margins"] < 15.0) | (data["margins"] > 18.0)
    np.testing.assert_array_equal(mask32[outside_edge], expected32[outside_edge])


def test_cross_entropy_zero_loss_and_zero_label_gradient_on_collapsed_rows():
  data = np.load(FIXTURES / "softmax_collapse.npz")
  labels = jnp.asarray(data["labels"])
  with jax.enable_x64(True):
    logits = jnp.asarray(data["logits"])
    for dtype, tag in ((jnp.float32, "fp32"), (jnp.float64, "fp64")):
      z = logits.astype(dtype)
      losses = _ce(z, labels)
      # fp32: a few ulps of 1. fp64: the fixture stores these losses rounded to float32, and log(1 + e) for tiny e
      # carries an absolute summation-order error of ~1e-16.
      np.testing.assert_allclose(losses, data[f"ce_loss_per_sample_{tag}"], rtol=1e-5 if tag == "fp32" else 1e-7,
                                 atol=4e-7 if tag == "fp32" else 1e-15)
      np.testing.assert_allclose(float(zero_loss_fraction(losses)), data[f"ce_zero_loss_fraction_{tag}"])
      grad = np.asarray(jax.grad(lambda x: _ce(x, labels).mean())(z))
      ref = data[f"ce_grad_mean_wrt_logits_{tag}"]
      # fp32: label entries of nearly collapsed rows differ by a few ulps of 1 (divided by the batch of 16).
      np.testing.assert_allclose(grad, ref, rtol=1e-4 if tag == "fp32" else 1e-10,
                                 atol=3e-8 if tag == "fp32" else 1e-16)
      collapsed = np.asarray(softmax_collapse_mask(z, dtype))
      label_grad = grad[np.arange(len(labels)), np.asarray(labels)]
      assert np.all(label_grad[collapsed] == 0.0), tag               # learning stops on collapsed rows
      assert np.all(label_grad[~collapsed] < 0.0), tag
    # StableMax never collapses: its gradient is non-zero on every row.
    sm_loss = stablemax_cross_entropy(logits, labels)
    np.testing.assert_allclose(sm_loss, data["stablemax_loss_per_sample"], rtol=1e-10)
    sm_grad = jax.grad(lambda x: stablemax_cross_entropy(x, labels).mean())(logits)
    np.testing.assert_allclose(sm_grad, data["stablemax_grad_mean_wrt_logits"], rtol=1e-10, atol=1e-18)
    assert np.all(np.asarray(sm_grad)[np.arange(len(labels)), np.asarray(labels)] < 0)


@pytest.mark.parametrize("dtype,bits", [(jnp.float16, 11), (jnp.float32, 24)])
def test_single_competitor_collapse_margin_closed_form(dtype, bits):
  # Two classes, margin m: the sum 1 + e^{-m} rounds to 1 iff e^{-m} <= 2^{-bits} (half an ulp of 1, ties to even).
  edge = bits * np.log(2.0)
  margins = jnp.array([edge - 0.3, edge + 0.3], jnp.float32)
  logits = jnp.stack([margins, jnp.zeros_like(margins)], axis=-1)
  assert softmax_collapse_mask(logits, dtype).tolist() == [False, True]


def test_validation_and_jit():
  with pytest.raises(ValueError, match="dtype"):
    softmax_collapse_mask(jnp.zeros((2, 3)), jnp.int32)
  with pytest.raises(ValueError, match="float64"):
    softmax_collapse_mask(jnp.zeros((2, 3)), jnp.float64)
  with pytest.raises(ValueError, match="per_example_loss"):
    zero_loss_fraction(jnp.zeros((0,)))
  logits = jnp.array([[30.0, 0.0, 1.0], [1.0, 0.5, 0.0]])
  assert float(jax.jit(softmax_collapse_fraction, static_argnums=1)(logits, jnp.float32)) == 0.5
