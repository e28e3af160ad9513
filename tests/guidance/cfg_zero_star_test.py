"""Tests for jaxgen.guidance.cfg_zero_star: reference fixtures, least-squares invariants, zero-init, dtypes."""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import guidance
from jaxgen.guidance import cfg_zero_star as czs

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "guidance"
# FIXTURES.md: float32 arrays agree with an independent implementation to ~2e-6 absolute (relative 1e-6);
# the spec asks for rtol=1e-5, atol=2e-6 on float32 fixtures.
F32_TOL = {"rtol": 1e-5, "atol": 2e-6}


def _random_velocities(seed=0, shape=(4, 3, 5, 5), correlation=0.8):
  rng = np.random.default_rng(seed)
  v_u = rng.normal(size=shape).astype(np.float32)
  v_c = (correlation * v_u + rng.normal(size=shape) * 0.5).astype(np.float32)
  return jnp.asarray(v_c), jnp.asarray(v_u)


# ---------------------------------------------------------------------------------------------------
# Fixtures from the reference implementation.


def test_optimized_scale_fixture_float32():
  ref = np.load(FIXTURES / "optimized_scale.npz")
  s = guidance.optimized_scale(jnp.asarray(ref["positive"]), jnp.asarray(ref["negative"]))
  assert s.shape == (3, 1, 1, 1) and s.dtype == jnp.float32
  # The reference returns (B, 1) on flattened views; ours keeps the reduced axes as size-1 axes.
  np.testing.assert_allclose(np.asarray(s).reshape(3, 1), ref["st_star"], **F32_TOL)
  assert float(s[2, 0, 0, 0]) < 0     # row 2 is anti-correlated
  flat = guidance.optimized_scale(jnp.asarray(ref["positive"]).reshape(3, -1),
                                  jnp.asarray(ref["negative"]).reshape(3, -1))
  np.testing.assert_allclose(np.asarray(flat), ref["st_star"], **F32_TOL)


def test_optimized_scale_fixture_float64():
  ref = np.load(FIXTURES / "optimized_scale.npz")
  with jax.enable_x64(True):
    s = guidance.optimized_scale(jnp.asarray(ref["positive_f64"]), jnp.asarray(ref["negative_f64"]))
    assert s.dtype == jnp.float64
    # 32-term float64 sums: only summation order differs from the reference.
    np.testing.assert_allclose(np.asarray(s), ref["st_star_f64"], rtol=1e-12, atol=0)


def test_optimized_scale_fixture_epsilon_rows():
  ref = np.load(FIXTURES / "optimized_scale.npz")
  assert float(ref["eps"]) == guidance.DEFAULT_EPS == 1e-8
  s = np.asarray(guidance.optimized_scale(jnp.asarray(ref["eps_positive"]), jnp.asarray(ref["eps_negative"])))
  expected = ref["eps_st_star"]
  # Row 0: all-zero v_uncond -> exactly 0 (not NaN).
  assert np.all(ref["eps_negative"][0] == 0)
  assert s[0, 0] == 0.0
  # Row 1: ||v_u||^2 ~ 3e-11 << eps, so s* = dot / 1e-8 ~ -859: epsilon does not bound s* (relative tol).
  assert (ref["eps_negative"][1].astype(np.float64) ** 2).sum() < 1e-10
  np.testing.assert_allclose(s[1], expected[1], rtol=1e-5)
  assert s[1, 0] < -800
  # Rows 2-3: ordinary.
  np.testing.assert_allclose(s[2:], expected[2:], **F32_TOL)


def test_guided_velocity_fixture():
  ref = np.load(FIXTURES / "guided_velocity.npz")
  v_c, v_u = jnp.asarray(ref["v_cond"]), jnp.asarray(ref["v_uncond"])
  alpha = guidance.optimized_scale(v_c, v_u)
  np.testing.assert_allclose(np.asarray(alpha), ref["alpha"], **F32_TOL)
  for i, w in enumerate(ref["guidance_scales"]):
    w = float(w)
    # Official branch use_cfg_zero_star=True at step i=5 with zero_steps=0 (num_zero_steps=1): not zeroed.
    out = guidance.cfg_zero_star_combine(v_c, v_u, w, step=5, num_zero_steps=1)
    np.testing.assert_allclose(np.asarray(out), ref["cfg_zero_star"][i], **F32_TOL)
    # Same call at step 0: zero-init -> all zeros, exactly.
    zero = guidance.cfg_zero_star_combine(v_c, v_u, w, step=0, num_zero_steps=1)
    np.testing.assert_array_equal(np.asarray(zero), ref["zero_init_output"][i])
    # use_optimized_scale=False and no zero-init is the plain CFG branch.
    plain = guidance.cfg_zero_star_combine(v_c, v_u, w, step=5, num_zero_steps=0, use_optimized_scale=False)
    np.testing.assert_allclose(np.asarray(plain), ref["cfg"][i], **F32_TOL)
  # w = 1: the conditional velocity, to float32 rounding.
  assert float(ref["guidance_scales"][0]) == 1.0
  np.testing.assert_allclose(ref["cfg_zero_star"][0], ref["v_cond"], rtol=0, atol=1e-6)
  out1 = guidance.cfg_zero_star_combine(v_c, v_u, 1.0, step=5)
  np.testing.assert_allclose(np.asarray(out1), ref["v_cond"], rtol=0, atol=1e-6)


def test_zero_mask_fixture_and_step_mapping():
  ref = np.load(FIXTURES / "guided_velocity.npz")
  mask = ref["zero_mask"]                              # row z = official zero_steps, column i = step index
  v_c, v_u = _random_velocities(1, shape=(2, 3))
  for z in range(mask.shape[0]):
    k = guidance.num_zero_steps_from_reference(z)
    assert k == z + 1
    np.testing.assert_array_equal(np.asarray(guidance.zero_init_mask(mask.shape[1], k)), mask[z])
    for i in range(mask.shape[1]):
      out = guidance.cfg_zero_star_combine(v_c, v_u, 3.0, step=i, num_zero_steps=k)
      assert bool(jnp.all(out == 0)) == bool(mask[z, i]), (z, i)
  assert guidance.num_zero_steps_from_reference(-1) == 0     # zero-init off
  assert not bool(jnp.any(guidance.zero_init_mask(8, 0)))


def test_traced_step_inside_scan():
  v_c, v_u = _random_velocities(2, shape=(3, 4))

  def body(carry, step):
    return carry, guidance.cfg_zero_star_combine(v_c, v_u, 2.5, step=step, num_zero_steps=3)

  _, outs = jax.jit(lambda: jax.lax.scan(body, 0.0, jnp.arange(6)))()
  expected = guidance.cfg_zero_star_combine(v_c, v_u, 2.5, step=5, num_zero_steps=0)
  np.testing.assert_array_equal(np.asarray(outs[:3]), 0.0)
  for i in range(3, 6):   # compiled vs eager: fused multiply-adds differ by an ulp
    np.testing.assert_allclose(np.asarray(outs[i]), np.asarray(expected), rtol=1e-6, atol=1e-7)
  # num_zero_steps may be traced too (a sweep without recompiling).
  f = jax.jit(lambda k: guidance.cfg_zero_star_combine(v_c, v_u, 2.5, step=2, num_zero_steps=k))
  assert bool(jnp.all(f(3) == 0)) and not bool(jnp.any(f(2) == 0))


# ---------------------------------------------------------------------------------------------------
# Invariants of the spec (section 1.5).


def test_optimized_scale_is_the_least_squares_coefficient():
  v_c, v_u = _random_velocities(3)
  s = np.asarray(guidance.optimized_scale(v_c, v_u)).reshape(-1)
  vc64 = np.asarray(v_c, np.float64).reshape(4, -1)
  vu64 = np.asarray(v_u, np.float64).reshape(4, -1)
  for b in range(4):
    coef = np.linalg.lstsq(vu64[b][:, None], vc64[b], rcond=None)[0][0]
    np.testing.assert_allclose(s[b], coef, rtol=1e-5)
    # argmin: perturbing s increases the squared residual.
    res = lambda c, b=b: np.sum((vc64[b] - c * vu64[b]) ** 2)
    assert res(s[b]) < res(s[b] + 1e-3) and res(s[b]) < res(s[b] - 1e-3)
    # Orthogonal residual, relative to ||v_c|| ||v_u||.
    ortho = np.dot(vc64[b] - s[b] * vu64[b], vu64[b]) / (np.linalg.norm(vc64[b]) * np.linalg.norm(vu64[b]))
    assert abs(ortho) < 1e-6


def test_scale_equivariance_and_invariance_of_the_guided_velocity():
  v_c, v_u = _random_velocities(4)
  s = guidance.optimized_scale(v_c, v_u)
  np.testing.assert_allclose(guidance.optimized_scale(2.5 * v_c, v_u), 2.5 * s, rtol=1e-5)
  np.testing.assert_allclose(guidance.optimized_scale(v_c, -4.0 * v_u), s / -4.0, rtol=1e-5)
  out = guidance.cfg_zero_star_combine(v_c, v_u, 3.0, step=1, num_zero_steps=0)
  for a in (1.6, -0.3, 10.0):   # a mis-scaled unconditional branch does not change CFG-Zero*
    out_a = guidance.cfg_zero_star_combine(v_c, a * v_u, 3.0, step=1, num_zero_steps=0)
    np.testing.assert_allclose(out_a, out, rtol=1e-5, atol=1e-5)
  # ... but it does change plain CFG.
  assert not np.allclose(guidance.cfg_combine(v_c, 1.6 * v_u, 3.0), guidance.cfg_combine(v_c, v_u, 3.0))


def test_special_configurations():
  v_c, v_u = _random_velocities(5)
  # v_c = c v_u: s* = c and the output equals v_c for every w.
  for c in (0.7, -1.3):
    np.testing.assert_allclose(guidance.optimized_scale(c * v_u, v_u), jnp.full((4, 1, 1, 1), c), rtol=1e-5)
    for w in (1.0, 3.0, 7.5):
      np.testing.assert_allclose(guidance.cfg_zero_star_combine(c * v_u, v_u, w, step=1, num_zero_steps=0),
                                 c * v_u, rtol=1e-4, atol=1e-5)
  # v_c - v_u orthogonal to v_u: s* = 1 and CFG-Zero* equals CFG.
  vu = np.asarray(v_u, np.float64).reshape(4, -1)
  d = np.asarray(v_c, np.float64).reshape(4, -1)
  d = d - (np.sum(d * vu, axis=1, keepdims=True) / np.sum(vu * vu, axis=1, keepdims=True)) * vu
  v_c_perp = jnp.asarray((vu + d).reshape(v_u.shape), jnp.float32)
  np.testing.assert_allclose(guidance.optimized_scale(v_c_perp, v_u), jnp.ones((4, 1, 1, 1)), rtol=1e-5)
  np.testing.assert_allclose(guidance.cfg_zero_star_combine(v_c_perp, v_u, 4.0, step=2, num_zero_steps=1),
                             guidance.cfg_combine(v_c_perp, v_u, 4.0), rtol=1e-4, atol=1e-5)
  # v_u = 0: s* = 0 and the output is w v_c.
  zero = jnp.zeros_like(v_u)
  np.testing.assert_array_equal(guidance.optimized_scale(v_c, zero), jnp.zeros((4, 1, 1, 1)))
  np.testing.assert_allclose(guidance.cfg_zero_star_combine(v_c, zero, 3.0, step=1, num_zero_steps=0),
                             3.0 * v_c, rtol=1e-6)


def test_negation_leaves_scale_unchanged_and_negates_output():
  v_c, v_u = _random_velocities(6)
  np.testing.assert_array_equal(guidance.optimized_scale(-v_c, -v_u), guidance.optimized_scale(v_c, v_u))
  out = guidance.cfg_zero_star_combine(v_c, v_u, 3.5, step=4)
  np.testing.assert_array_equal(guidance.cfg_zero_star_combine(-v_c, -v_u, 3.5, step=4), -out)


def test_per_sample_independence_and_per_sample_w():
  v_c, v_u = _random_velocities(7)
  w = jnp.array([1.0, 2.0, 3.5, 5.0])
  out = guidance.cfg_zero_star_combine(v_c, v_u, w, step=1, num_zero_steps=0)
  perm = jnp.array([2, 0, 3, 1])
  out_perm = guidance.cfg_zero_star_combine(v_c[perm], v_u[perm], w[perm], step=1, num_zero_steps=0)
  np.testing.assert_array_equal(out_perm, out[perm])
  # Changing sample 0 leaves the other rows unchanged.
  out_changed = guidance.cfg_zero_star_combine(v_c.at[0].multiply(-3.0), v_u, w, step=1, num_zero_steps=0)
  np.testing.assert_array_equal(out_changed[1:], out[1:])
  for b in range(4):   # per-sample w equals the scalar call row by row
    row = guidance.cfg_zero_star_combine(v_c[b:b + 1], v_u[b:b + 1], float(w[b]), step=1, num_zero_steps=0)
    np.testing.assert_allclose(out[b:b + 1], row, rtol=1e-6, atol=1e-7)


def test_formula_is_pinned_against_known_variants():
  # Pitfall 5: an early library version computed alpha * v_u + w (v_c - v_u); not the paper formula.
  ref = np.load(FIXTURES / "guided_velocity.npz")
  v_c, v_u, alpha = ref["v_cond"], ref["v_uncond"], ref["alpha"]
  out = np.asarray(guidance.cfg_zero_star_combine(jnp.asarray(v_c), jnp.asarray(v_u), 5.0, step=3))
  np.testing.assert_allclose(out, (1 - 5.0) * alpha * v_u + 5.0 * v_c, rtol=1e-5, atol=1e-5)
  assert not np.allclose(out, alpha * v_u + 5.0 * (v_c - v_u), atol=1e-2)


def test_low_precision_inputs_use_float32_math():
  v_c, v_u = _random_velocities(8, shape=(3, 64, 64))   # 4096-element sums
  for dtype in (jnp.bfloat16, jnp.float16):
    vc_lo, vu_lo = v_c.astype(dtype), v_u.astype(dtype)
    s = guidance.optimized_scale(vc_lo, vu_lo)
    assert s.dtype == jnp.float32
    # f32-accurate: equals the float64 value of the same (rounded) inputs to float32 accuracy.
    vc64, vu64 = np.asarray(vc_lo, np.float64), np.asarray(vu_lo, np.float64)
    exact = np.sum(vc64 * vu64, axis=(1, 2), keepdims=True) / (np.sum(vu64 ** 2, axis=(1, 2), keepdims=True) + 1e-8)
    np.testing.assert_allclose(np.asarray(s), exact, rtol=1e-5)
    out = guidance.cfg_zero_star_combine(vc_lo, vu_lo, 3.0, step=2)
    assert out.dtype == dtype
    expected = (1 - 3.0) * exact * vu64 + 3.0 * vc64
    np.testing.assert_allclose(np.asarray(out, np.float64), expected, rtol=1e-2, atol=1e-2)
  # Accumulating in bfloat16 would be far off: the float32 math matters.
  vc_bf, vu_bf = v_c.astype(jnp.bfloat16), v_u.astype(jnp.bfloat16)
  naive = jnp.sum(vc_bf * vu_bf, axis=(1, 2)) / (jnp.sum(vu_bf * vu_bf, axis=(1, 2)) + 1e-8)
  s = guidance.optimized_scale(vc_bf, vu_bf).reshape(-1)
  assert float(jnp.max(jnp.abs(naive.astype(jnp.float32) - s))) > 1e-4


def test_reduce_axes():
  v_c, v_u = _random_velocities(9)                      # (B, C, H, W) = (4, 3, 5, 5)
  per_channel = guidance.optimized_scale(v_c, v_u, reduce_axes=(2, 3))
  assert per_channel.shape == (4, 3, 1, 1)
  vc, vu = np.asarray(v_c, np.float64), np.asarray(v_u, np.float64)
  expected = np.sum(vc * vu, axis=(2, 3), keepdims=True) / (np.sum(vu * vu, axis=(2, 3), keepdims=True) + 1e-8)
  np.testing.assert_allclose(per_channel, expected, rtol=1e-5)
  np.testing.assert_allclose(guidance.optimized_scale(v_c, v_u, reduce_axes=(-1, -2)), per_channel, rtol=1e-6)
  # A layout without a batch axis (e.g. one video latent (C, F, H, W)): reduce over everything.
  whole = guidance.optimized_scale(v_c[0], v_u[0], reduce_axes=(0, 1, 2))
  np.testing.assert_allclose(whole.reshape(()), guidance.optimized_scale(v_c, v_u)[0].reshape(()), rtol=1e-6)
  out = guidance.cfg_zero_star_combine(v_c, v_u, 2.0, step=1, reduce_axes=(2, 3))
  np.testing.assert_allclose(out, per_channel * v_u + 2.0 * (v_c - per_channel * v_u), rtol=1e-5, atol=1e-6)


class CombineVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_equals_no_jit(self):
    v_c, v_u = _random_velocities(10)
    w = jnp.array([1.0, 2.0, 4.0, 7.5])
    fn = self.variant(lambda vc, vu, w, step: (
        guidance.optimized_scale(vc, vu),
        guidance.cfg_zero_star_combine(vc, vu, w, step=step, num_zero_steps=2)))
    for step in (1, 2):
      s, out = fn(v_c, v_u, w, step)
      expected_s = np.sum(np.asarray(v_c) * np.asarray(v_u), axis=(1, 2, 3), keepdims=True) / (
          np.sum(np.asarray(v_u) ** 2, axis=(1, 2, 3), keepdims=True) + 1e-8)
      np.testing.assert_allclose(s, expected_s, rtol=1e-5)
      if step < 2:
        np.testing.assert_array_equal(out, 0.0)
      else:
        expected = expected_s * v_u + np.asarray(w).reshape(4, 1, 1, 1) * (v_c - expected_s * v_u)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-6)


# ---------------------------------------------------------------------------------------------------
# Validation.


def test_validation_errors():
  v_c, v_u = _random_velocities(11, shape=(2, 3))
  with pytest.raises(ValueError, match="`v_cond` and `v_uncond`.*same shape"):
    guidance.optimized_scale(v_c, v_u[:, :2])
  with pytest.raises(ValueError, match="`v_cond` and `v_uncond`.*same shape"):
    guidance.cfg_zero_star_combine(v_c, v_u[None], 2.0, step=0)
  with pytest.raises(ValueError, match="`v_cond`"):
    guidance.optimized_scale(jnp.ones((2, 3), jnp.int32), jnp.ones((2, 3), jnp.int32))
  for bad_w in (float("nan"), float("inf"), jnp.array([1.0, jnp.nan])):
    with pytest.raises(ValueError, match="`w`"):
      guidance.cfg_zero_star_combine(v_c, v_u, bad_w, step=3)
  with pytest.raises(ValueError, match="`w`"):
    guidance.cfg_zero_star_combine(v_c, v_u, jnp.ones(3), step=3)          # wrong batch size
  with pytest.raises(ValueError, match="`num_zero_steps`"):
    guidance.cfg_zero_star_combine(v_c, v_u, 2.0, step=0, num_zero_steps=-1)
  with pytest.raises(ValueError, match="`num_zero_steps`"):
    guidance.zero_init_mask(4, -2)
  with pytest.raises(ValueError, match="`step`"):
    guidance.cfg_zero_star_combine(v_c, v_u, 2.0, step=0.5)
  with pytest.raises(ValueError, match="`reduce_axes`"):
    guidance.optimized_scale(v_c, v_u, reduce_axes=(2,))
  with pytest.raises(ValueError, match="`eps`"):
    guidance.optimized_scale(v_c, v_u, eps=-1.0)
  with pytest.raises(ValueError, match="`zero_steps`"):
    guidance.num_zero_steps_from_reference(-2)
  # A traced w cannot be checked for finiteness at trace time; it still computes.
  out = jax.jit(lambda w: czs.cfg_zero_star_combine(v_c, v_u, w, step=3))(2.0)
  assert out.shape == v_c.shape
