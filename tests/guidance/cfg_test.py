"""Tests for jaxgen.guidance.cfg: plain CFG, the rule table and the guided sampler on every solver."""

import functools
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import guidance
from jaxgen.core import ode

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "guidance"
F32_TOL = {"rtol": 1e-5, "atol": 2e-6}   # spec 1.5 (11): float32 fixtures
METHODS = sorted(ode.METHODS)

# sampler_fm_euler.npz branch -> (rule, num_zero_steps). The official zero_steps = z zeroes z + 1 steps:
# "k0" (zero_steps=0) is num_zero_steps=1, "k1" (zero_steps=1) is num_zero_steps=2.
SAMPLER_BRANCHES = {
    "cfg": ("cfg", 0),
    "optimized_scale_only": ("optimized-scale", 0),
    "cfg_zero_star_k0": ("cfg-zero-star", 1),
    "cfg_zero_star_k1": ("cfg-zero-star", 2),
}


def _fixture_network(ref, prefix):
  """The toy network of FIXTURES.md in the sigma-convention: (sigma, x) -> noise - data."""
  p = {k: jnp.asarray(ref[f"{prefix}_{k}"]) for k in ("W1", "u1", "b1", "W2", "u2", "b2")}

  def v_sigma(sigma, x):
    timestep = sigma * jnp.float32(1000)          # what the pipeline passes as `timestep`
    s = timestep / jnp.float32(1000)              # the toy network's time feature
    flat = x.reshape(x.shape[0], -1)
    h = jnp.tanh(flat @ p["W1"] + s * p["u1"][None, :] + p["b1"][None, :])
    return (h @ p["W2"] + s * p["u2"][None, :] + p["b2"][None, :]).reshape(x.shape)

  return v_sigma


def _toy_branches(seed=0, dim=3):
  rng = np.random.default_rng(seed)
  a_c = jnp.asarray(rng.normal(size=(dim, dim)) * 0.6, jnp.float32)
  a_u = jnp.asarray(rng.normal(size=(dim, dim)) * 0.6, jnp.float32)
  b = jnp.asarray(rng.normal(size=(dim,)), jnp.float32)
  v_c = lambda t, x: jnp.tanh(x @ a_c) + t * b[None, :]
  v_u = lambda t, x: jnp.tanh(x @ a_u) - 0.5 * x
  x0 = jnp.asarray(rng.normal(size=(5, dim)), jnp.float32)
  return v_c, v_u, x0


# ---------------------------------------------------------------------------------------------------
# Plain CFG.


def test_cfg_combine_fixture_and_w_convention():
  ref = np.load(FIXTURES / "guided_velocity.npz")
  v_c, v_u = jnp.asarray(ref["v_cond"]), jnp.asarray(ref["v_uncond"])
  for i, w in enumerate(ref["guidance_scales"]):
    np.testing.assert_allclose(np.asarray(guidance.cfg_combine(v_c, v_u, float(w))), ref["cfg"][i], **F32_TOL)
  # w = 1 is conditional only; w = 0 unconditional.
  np.testing.assert_allclose(guidance.cfg_combine(v_c, v_u, 1.0), v_c, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(guidance.cfg_combine(v_c, v_u, 0.0), v_u)
  # Ho & Salimans' omega = w - 1, only through the explicit conversions.
  assert guidance.ho_salimans_to_w(2.5) == 3.5 and guidance.w_to_ho_salimans(3.5) == 2.5
  omega = 2.5
  np.testing.assert_allclose(guidance.cfg_combine(v_c, v_u, guidance.ho_salimans_to_w(omega)),
                             (1 + omega) * v_c - omega * v_u, rtol=1e-5, atol=1e-5)
  # bf16 velocities stay bf16.
  assert guidance.cfg_combine(v_c.astype(jnp.bfloat16), v_u.astype(jnp.bfloat16), 3.0).dtype == jnp.bfloat16


# ---------------------------------------------------------------------------------------------------
# The reference FlowMatchEuler sampler run (sampler_fm_euler.npz).


@pytest.mark.parametrize("branch", sorted(SAMPLER_BRANCHES))
def test_sampler_fm_euler_fixture(branch):
  ref = np.load(FIXTURES / "sampler_fm_euler.npz")
  rule, num_zero_steps = SAMPLER_BRANCHES[branch]
  sigmas = ode.flow_euler_sigmas(int(ref["num_inference_steps"]), shift=float(ref["shift"]))
  np.testing.assert_array_equal(np.asarray(sigmas), ref["sigmas"])
  v_c_sigma, v_u_sigma = _fixture_network(ref, "cond"), _fixture_network(ref, "uncond")
  noise, w = jnp.asarray(ref["noise"]), float(ref["guidance_scale"])
  expected_traj, expected_final = ref[f"traj_{branch}"], ref[f"final_{branch}"]

  # (a) sigma-convention model on its own decreasing sigma grid: literally the diffusers loop.
  x_s, traj_s = guidance.guided_sample(v_c_sigma, v_u_sigma, noise, sigmas, rule=rule, w=w,
                                       num_zero_steps=num_zero_steps, return_trajectory=True)
  np.testing.assert_allclose(np.asarray(traj_s), expected_traj, **F32_TOL)
  np.testing.assert_allclose(np.asarray(x_s), expected_final, **F32_TOL)

  # (b) t-convention through the core adapters, jitted.
  @jax.jit
  def sample_t(x):
    return guidance.guided_sample(ode.velocity_sigma_to_t(v_c_sigma), ode.velocity_sigma_to_t(v_u_sigma), x,
                                  ode.sigma_to_t(sigmas), rule=rule, w=w, num_zero_steps=num_zero_steps,
                                  return_trajectory=True)

  x_t, traj_t = sample_t(noise)
  np.testing.assert_allclose(np.asarray(traj_t), expected_traj, **F32_TOL)
  np.testing.assert_allclose(np.asarray(x_t), expected_final, **F32_TOL)

  # Zero-init rows: the latents do not move on the zeroed steps (bit for bit).
  for k in range(1, num_zero_steps + 1):
    np.testing.assert_array_equal(expected_traj[k], expected_traj[0])
    np.testing.assert_array_equal(np.asarray(traj_s[k]), np.asarray(noise))
    np.testing.assert_array_equal(np.asarray(traj_t[k]), np.asarray(noise))
  assert not np.array_equal(np.asarray(traj_s[num_zero_steps + 1]), np.asarray(noise))


def test_sampler_fixture_branches_differ():
  # The four branches are distinct runs, so the fixture test above cannot pass by accident.
  ref = np.load(FIXTURES / "sampler_fm_euler.npz")
  finals = [ref[f"final_{b}"] for b in sorted(SAMPLER_BRANCHES)]
  for i in range(len(finals)):
    for j in range(i + 1, len(finals)):
      assert np.abs(finals[i] - finals[j]).max() > 1e-3


# ---------------------------------------------------------------------------------------------------
# Every rule on every solver.


@pytest.mark.parametrize("method", METHODS)
def test_every_rule_on_every_solver(method):
  # Rules without zero-init are plain (t, x) velocities: the guided sampler equals core.odeint on the
  # combined velocity. Zero-init keeps x0 bit for bit for K steps, then equals the K=0 rule on ts[K:].
  v_c, v_u, x0 = _toy_branches(1)
  ts = ode.sigma_to_t(ode.flow_euler_sigmas(6, shift=3.0))
  w, k = 3.0, 2
  plain = {
      "cfg": lambda t, x: guidance.cfg_combine(v_c(t, x), v_u(t, x), w),
      "optimized-scale": lambda t, x: guidance.cfg_zero_star_combine(v_c(t, x), v_u(t, x), w, step=0,
                                                                    num_zero_steps=0),
  }
  base_rule = {"zero-init": "cfg", "cfg-zero-star": "optimized-scale"}

  @jax.jit
  def run_all(x0):
    out = {}
    for rule in guidance.RULES:
      out[rule] = guidance.guided_sample(v_c, v_u, x0, ts, rule=rule, w=w, method=method, num_zero_steps=k,
                                         return_trajectory=True)[1]
    for rule, fn in plain.items():
      out["odeint-" + rule] = ode.odeint(fn, x0, ts, method, return_trajectory=True)[1]
      out["tail-" + rule] = ode.odeint(fn, x0, ts[k:], method, return_trajectory=True)[1]
      if method == "euler":
        out["w1-" + rule] = guidance.guided_sample(v_c, v_u, x0, ts, rule=rule, w=1.0, method=method)
    return out

  out = run_all(x0)
  for rule in plain:
    np.testing.assert_allclose(out[rule], out["odeint-" + rule], rtol=1e-6, atol=1e-6)
  for rule, base in base_rule.items():
    traj = out[rule]
    for i in range(k + 1):
      np.testing.assert_array_equal(traj[i], x0)
    np.testing.assert_allclose(traj[k:], out["tail-" + base], rtol=1e-6, atol=1e-6)
    assert not np.allclose(traj[-1], out[base][-1], atol=1e-3)      # zero-init changes the result
  # At w = 1 CFG and the optimized scale coincide (both give v_c).
  if method == "euler":
    np.testing.assert_allclose(out["w1-cfg"], out["w1-optimized-scale"], rtol=1e-5, atol=1e-5)


@functools.cache
def _eager_python_loop_reference():
  # The unrolled Python loop (the debugging hook), compiled: eager lax.cond re-traces its branches per step.
  v_c, v_u, x0 = _toy_branches(2)
  return jax.jit(lambda x0: guidance.guided_sample(v_c, v_u, x0, ode.uniform_grid(4), rule="cfg-zero-star",
                                                   w=2.5, method="heun", num_zero_steps=1,
                                                   return_trajectory=True, loop=ode.python_scan))(x0)


class GuidedSampleVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_equals_no_jit(self):
    v_c, v_u, x0 = _toy_branches(2)
    ts = ode.uniform_grid(4)
    sample = self.variant(lambda x0, w: guidance.guided_sample(v_c, v_u, x0, ts, rule="cfg-zero-star", w=w,
                                                               method="heun", num_zero_steps=1,
                                                               return_trajectory=True))
    x1, traj = sample(x0, 2.5)
    # Reference: a Python loop over the same steps.
    x1_loop, traj_loop = _eager_python_loop_reference()
    chex.assert_shape(traj, (5, 5, 3))
    np.testing.assert_array_equal(traj[0], x0)
    np.testing.assert_array_equal(traj[-1], x1)
    np.testing.assert_allclose(traj, traj_loop, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x1, x1_loop, rtol=1e-6, atol=1e-6)


def test_no_retracing_across_label_batches_and_scales():
  num_classes, dim = 4, 3
  rng = np.random.default_rng(3)
  params = {"emb": jnp.asarray(rng.normal(size=(num_classes + 1, dim)), jnp.float32),   # row 4: null
            "w": jnp.asarray(rng.normal(size=(dim, dim)) * 0.5, jnp.float32),
            "u": jnp.asarray(rng.normal(size=(dim,)), jnp.float32)}

  def apply_fn(p, x, t, y):                    # class-conditional model with a null class, t of shape [B]
    return jnp.tanh(x @ p["w"] + t[:, None] * p["u"][None, :] + p["emb"][y]) - 0.3 * x

  ts = ode.uniform_grid(6)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def sample(params, x0, labels, w):
    v_c, v_u = guidance.class_conditional_velocities(apply_fn, params, labels, null_label=num_classes)
    return guidance.guided_sample(v_c, v_u, x0, ts, rule="cfg-zero-star", w=w, num_zero_steps=1)

  x0 = jnp.asarray(rng.normal(size=(6, dim)), jnp.float32)
  labels_a = jnp.array([0, 1, 2, 3, 0, 1])
  labels_b = jnp.array([3, 3, 2, 2, 1, 1])
  out_a = sample(params, x0, labels_a, jnp.float32(3.0))
  out_b = sample(params, x0, labels_b, jnp.float32(3.0))
  out_c = sample(params, x0, labels_b, jnp.float32(1.5))
  assert not np.allclose(out_a, out_b) and not np.allclose(out_b, out_c)
  # Each row depends only on its own label: a single-label eager run agrees.
  v_c, v_u = guidance.class_conditional_velocities(apply_fn, params, labels_b[2:3], null_label=num_classes)
  row = guidance.guided_sample(v_c, v_u, x0[2:3], ts, rule="cfg-zero-star", w=3.0)
  np.testing.assert_allclose(out_b[2:3], row, rtol=1e-5, atol=1e-6)
  chex.clear_trace_counter()


def test_zeroed_steps_skip_the_network_calls():
  calls = []
  v_c0, v_u0, x0 = _toy_branches(4)

  def counted(fn, name):
    def v(t, x):
      jax.debug.callback(lambda: calls.append(name))
      return fn(t, x)
    return v

  ts = ode.uniform_grid(8)
  for skip, expected in ((True, 2 * (8 - 3)), (False, 2 * 8)):
    calls.clear()
    out = jax.jit(lambda x: guidance.guided_sample(counted(v_c0, "c"), counted(v_u0, "u"), x, ts,
                                                   rule="zero-init", w=2.0, num_zero_steps=3,
                                                   skip_zeroed_evaluations=skip))(x0)
    jax.block_until_ready(out)
    jax.effects_barrier()
    assert len(calls) == expected, (skip, len(calls))
    if skip:
      out_skip = out
  np.testing.assert_array_equal(out_skip, out)


def test_single_branch_model_zero_init_only():
  # Guidance-distilled models have no unconditional branch: only zero-init applies.
  v_c, _, x0 = _toy_branches(5)
  ts = ode.uniform_grid(10)
  out = guidance.guided_sample(v_c, None, x0, ts, rule="zero-init", w=1.0, num_zero_steps=2)
  np.testing.assert_allclose(out, ode.odeint(v_c, x0, ts[2:]), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="`v_uncond_fn`"):
    guidance.guided_sample(v_c, None, x0, ts, rule="cfg-zero-star", w=1.0)
  with pytest.raises(ValueError, match="`w`"):
    guidance.guided_sample(v_c, None, x0, ts, rule="zero-init", w=3.0)


def test_per_sample_guidance_scale_and_traced_num_zero_steps():
  v_c, v_u, x0 = _toy_branches(6)
  ts = ode.uniform_grid(5)
  w = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
  run = jax.jit(lambda w, k: guidance.guided_sample(v_c, v_u, x0, ts, rule="cfg-zero-star", w=w,
                                                    num_zero_steps=k))
  out = run(w, 1)
  single = jax.jit(lambda w_b: guidance.guided_sample(v_c, v_u, x0, ts, rule="cfg-zero-star", w=w_b,
                                                     num_zero_steps=1))     # one scalar w for the batch
  for b in range(5):
    np.testing.assert_allclose(out[b], single(w[b])[b], rtol=1e-5, atol=1e-6)
  # num_zero_steps as a traced value: a sweep without recompiling; K = N leaves x0 in place.
  np.testing.assert_array_equal(run(w, 5), x0)
  np.testing.assert_allclose(run(w, 0), guidance.guided_sample(v_c, v_u, x0, ts, rule="optimized-scale", w=w),
                             rtol=1e-6, atol=1e-6)


def test_vmap_over_seeds_and_scales():
  # vmap over an outer axis (seeds x scales); each instance keeps its own (B, ...) batch for s*.
  v_c, v_u, x0 = _toy_branches(10)
  ts = ode.uniform_grid(4)
  x0s = jnp.stack([x0, -x0])
  ws = jnp.array([1.5, 4.0])
  sample = lambda x, w: guidance.guided_sample(v_c, v_u, x, ts, rule="cfg-zero-star", w=w, method="heun")
  out = jax.jit(jax.vmap(sample))(x0s, ws)
  single = jax.jit(sample)
  for i in range(2):
    np.testing.assert_allclose(out[i], single(x0s[i], ws[i]), rtol=1e-6, atol=1e-6)


def test_gradient_through_the_sampler_with_checkpointing():
  v_c, v_u, x0 = _toy_branches(7)
  ts = ode.uniform_grid(6)
  loss = lambda w, ckpt: jnp.sum(guidance.guided_sample(v_c, v_u, x0, ts, rule="cfg-zero-star", w=w,
                                                        method="midpoint", checkpoint=ckpt) ** 2)
  h = 1e-2

  @jax.jit
  def grads_and_fd(w):
    fd = (loss(w + h, False) - loss(w - h, False)) / (2 * h)
    return jax.grad(loss)(w, False), jax.grad(loss)(w, True), fd

  g_plain, g_ckpt, fd = grads_and_fd(2.0)
  np.testing.assert_allclose(g_plain, g_ckpt, rtol=1e-6)
  np.testing.assert_allclose(g_plain, fd, rtol=1e-2)


def test_bf16_state_is_preserved():
  v_c, v_u, x0 = _toy_branches(8)
  out = guidance.guided_sample(v_c, v_u, x0.astype(jnp.bfloat16), ode.uniform_grid(4), rule="cfg-zero-star",
                               w=2.0)
  assert out.dtype == jnp.bfloat16
  ref = guidance.guided_sample(v_c, v_u, x0, ode.uniform_grid(4), rule="cfg-zero-star", w=2.0)
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=5e-2, atol=5e-2)


# ---------------------------------------------------------------------------------------------------
# Validation.


def test_validation_errors():
  v_c, v_u, x0 = _toy_branches(9)
  ts = ode.uniform_grid(4)
  sample = lambda **kw: guidance.guided_sample(kw.pop("v_c", v_c), kw.pop("v_u", v_u), kw.pop("x0", x0),
                                               kw.pop("ts", ts), **{"rule": "cfg-zero-star", "w": 2.0, **kw})
  with pytest.raises(ValueError, match="`v_cond` and `v_uncond`.*same shape"):
    sample(v_u=lambda t, x: v_u(t, x)[:, :2])
  with pytest.raises(ValueError, match="`v_cond` and `v_uncond`.*same shape"):
    guidance.cfg_combine(jnp.ones((2, 3)), jnp.ones((3, 2)), 2.0)
  for bad_w in (float("nan"), float("inf"), -float("inf"), np.array([1.0, np.nan, 1.0, 1.0, 1.0])):
    with pytest.raises(ValueError, match="`w`"):
      sample(w=bad_w)
    with pytest.raises(ValueError, match="`w`"):
      guidance.cfg_combine(jnp.ones((5, 3)), jnp.ones((5, 3)), bad_w)
  for bad_k in (-1, 5, 2.0, True):
    with pytest.raises(ValueError, match="`num_zero_steps`"):
      sample(num_zero_steps=bad_k)
  with pytest.raises(ValueError, match="`num_zero_steps`"):
    sample(rule="cfg", num_zero_steps=5)            # validated even where the rule ignores it
  sample(num_zero_steps=4)                           # K = N is allowed
  with pytest.raises(ValueError, match=r"`rule`.*cfg-zero-star.*optimized-scale.*zero-init"):
    sample(rule="cfg++")
  assert sample(rule="cfg_zero_star").shape == x0.shape           # underscores accepted
  with pytest.raises(ValueError, match="`method`"):
    sample(method="dopri5")
  with pytest.raises(ValueError, match="`ts`"):
    sample(ts=jnp.array([0.0, 0.5, 0.5, 1.0]))
  with pytest.raises(ValueError, match="`x0`"):
    sample(x0=jnp.ones((5, 3), jnp.int32))
  with pytest.raises(ValueError, match="`labels`"):
    guidance.class_conditional_velocities(lambda p, x, t, y: x, {}, jnp.zeros((2, 2), jnp.int32), 0)
