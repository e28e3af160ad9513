"""Tests for jaxgen.core.ode: closed forms, convergence orders, diffusers grids and sampler fixtures."""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxgen.core import ode

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "guidance"
ORDERS = {"euler": 1.0, "heun": 2.0, "midpoint": 2.0, "rk4": 4.0}


def _linear_problem():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(3, 3)) * 0.7
  x0 = rng.normal(size=(3,))
  return a, x0


# ---------------------------------------------------------------------------------------------------
# Closed forms and convergence.


@pytest.mark.parametrize("method,num_steps,tol", [("euler", 400, 3e-2), ("heun", 100, 1e-4),
                                                  ("midpoint", 100, 1e-4), ("rk4", 50, 1e-8)])
def test_linear_ode_matches_expm(method, num_steps, tol):
  a, x0 = _linear_problem()
  expected_fwd = scipy.linalg.expm(a) @ x0
  with jax.enable_x64(True):
    ts = ode.uniform_grid(num_steps, dtype=jnp.float64)
    v = lambda t, x: jnp.asarray(a) @ x
    x1 = ode.odeint(v, jnp.asarray(x0), ts, method)
    assert x1.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(x1), expected_fwd, atol=tol * np.abs(expected_fwd).max())
    # A decreasing grid integrates backwards: from x(1) back to x(0).
    x_back = ode.odeint(v, jnp.asarray(expected_fwd), ts[::-1], method)
    np.testing.assert_allclose(np.asarray(x_back), x0, atol=tol * np.abs(x0).max())


def test_gradient_through_solver_is_matrix_exponential():
  a, x0 = _linear_problem()
  with jax.enable_x64(True):
    ts = ode.uniform_grid(40, dtype=jnp.float64)
    v = lambda t, x: jnp.asarray(a) @ x
    for checkpoint in (False, True):
      jac = jax.jacrev(lambda x: ode.rk4_solve(v, x, ts, checkpoint=checkpoint))(jnp.asarray(x0))
      np.testing.assert_allclose(np.asarray(jac), scipy.linalg.expm(a), rtol=1e-7, atol=1e-8)


def _nonlinear_velocity(t, x):
  # Independent components in a pytree state:
  #   a' = cos(t) a  -> a(t) = a0 exp(sin t)       (non-autonomous: exercises the time arguments)
  #   b' = -b^2      -> b(t) = b0 / (1 + b0 t)      (nonlinear)
  return {"a": jnp.cos(t) * x["a"], "b": -x["b"] ** 2}


def _nonlinear_exact(x0, t):
  return {"a": x0["a"] * np.exp(np.sin(t)), "b": x0["b"] / (1 + x0["b"] * t)}


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_empirical_convergence_order(method):
  x0 = {"a": np.array([1.0, -0.5]), "b": np.array([0.8])}
  t_end = 2.0
  exact = _nonlinear_exact(x0, t_end)
  steps = np.array([32, 64, 128, 256])     # asymptotic regime (midpoint is still at 1.8 for 16 -> 32)
  errors = []
  with jax.enable_x64(True):
    for n in steps:
      ts = ode.uniform_grid(int(n), t_end=t_end, dtype=jnp.float64)
      x1 = ode.odeint(_nonlinear_velocity, jax.tree.map(jnp.asarray, x0), ts, method)
      errors.append(max(np.abs(np.asarray(x1[k]) - exact[k]).max() for k in exact))
  slope = np.polyfit(np.log(t_end / steps), np.log(errors), 1)[0]
  assert abs(slope - ORDERS[method]) < 0.15, (method, slope, errors)


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_convergence_on_a_nonuniform_shifted_grid(method):
  # On a shift-3 warped grid (refined proportionally) every method keeps its order.
  x0 = {"a": np.array([1.0]), "b": np.array([0.8])}
  exact = _nonlinear_exact(x0, 1.0)
  steps = np.array([32, 64, 128, 256])
  errors = []
  with jax.enable_x64(True):
    for n in steps:
      u = np.linspace(0.0, 1.0, n + 1)
      ts = jnp.asarray(1.0 - 3.0 * (1 - u) / (1 + 2.0 * (1 - u)))
      x1 = ode.odeint(_nonlinear_velocity, jax.tree.map(jnp.asarray, x0), ts, method)
      errors.append(max(np.abs(np.asarray(x1[k]) - exact[k]).max() for k in exact))
  slope = np.polyfit(np.log(1.0 / steps), np.log(errors), 1)[0]
  assert abs(slope - ORDERS[method]) < 0.15, (method, slope, errors)


# ---------------------------------------------------------------------------------------------------
# Loop variants, jit, trajectories, dtypes.


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_scan_and_python_loop_agree(method):
  x0 = {"a": jnp.array([1.0, -0.5]), "b": jnp.array([[0.8, 0.3]])}
  ts = jnp.asarray(1.0 - ode.flow_euler_sigmas(7, shift=3.0))
  solve = lambda loop, x: ode.odeint(_nonlinear_velocity, x, ts, method, return_trajectory=True, loop=loop)
  out_scan = solve(jax.lax.scan, x0)
  # Compiled, the unrolled Python loop is bit-identical to the scan.
  out_loop_jit = jax.jit(lambda x: solve(ode.python_scan, x))(x0)
  chex.assert_trees_all_equal(out_scan, out_loop_jit)
  # Eager op-by-op execution differs only by float rounding: compiled XLA contracts `x + h * v` into a
  # fused multiply-add, eager mode rounds the product first (measured: at most 1 ulp per step).
  out_loop = solve(ode.python_scan, x0)
  chex.assert_trees_all_close(out_scan, out_loop, rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_equal_structs(out_scan, out_loop)


def test_python_scan_matches_lax_scan_semantics():
  def f(c, x):
    return c + x, c * x

  xs = jnp.arange(5.0)
  chex.assert_trees_all_equal(ode.python_scan(f, 1.0, xs), jax.lax.scan(f, 1.0, xs))
  carry, ys = ode.python_scan(lambda c, _: (c + 1, None), 0, None, length=3)
  assert carry == 3 and ys is None


def test_jit_does_not_retrace_for_new_grid_values_or_states():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def solve(x0, ts):
    return ode.heun_solve(lambda t, x: -t * x, x0, ts, return_trajectory=True)

  out1 = solve(jnp.ones(3), ode.uniform_grid(10))
  out2 = solve(2 * jnp.ones(3), jnp.asarray(1.0 - ode.flow_euler_sigmas(10, shift=3.0)))
  chex.assert_trees_all_close(out1[0] * 2, solve(2 * jnp.ones(3), ode.uniform_grid(10))[0], rtol=1e-6)
  assert not np.allclose(out1[0] * 2, out2[0])
  chex.clear_trace_counter()


def test_trajectory_layout():
  ts = ode.uniform_grid(5)
  x0 = jnp.arange(6.0).reshape(2, 3)
  x1, traj = ode.euler_solve(lambda t, x: jnp.ones_like(x), x0, ts, return_trajectory=True)
  chex.assert_shape(traj, (6, 2, 3))
  np.testing.assert_array_equal(traj[0], x0)
  np.testing.assert_array_equal(traj[-1], x1)
  np.testing.assert_allclose(traj, x0[None] + np.asarray(ts).reshape(6, 1, 1), rtol=1e-6)


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_state_dtype_is_preserved(method):
  x0 = jnp.ones((4,), jnp.bfloat16)
  x1 = ode.odeint(lambda t, x: -x, x0, ode.uniform_grid(4), method)
  assert x1.dtype == jnp.bfloat16
  x1_f32 = ode.odeint(lambda t, x: -x, x0.astype(jnp.float32), ode.uniform_grid(4), method)
  np.testing.assert_allclose(np.asarray(x1, np.float32), x1_f32, rtol=2e-2)


def test_named_solvers_equal_odeint():
  x0 = jnp.array([0.3, -1.2])
  ts = ode.uniform_grid(6)
  v = lambda t, x: jnp.sin(x) + t
  for name, fn in [("euler", ode.euler_solve), ("heun", ode.heun_solve), ("midpoint", ode.midpoint_solve),
                   ("rk4", ode.rk4_solve)]:
    chex.assert_trees_all_equal(fn(v, x0, ts), ode.odeint(v, x0, ts, name))


def test_step_formulas():
  # On v(t, x) = t (x-independent) every method integrates t exactly except Euler, which uses t0 only.
  x = jnp.zeros(())
  t0, t1 = jnp.asarray(0.5), jnp.asarray(1.5)
  v = lambda t, x: t
  assert float(ode.euler_step(v, t0, t1, x)) == 0.5
  for step in (ode.heun_step, ode.midpoint_step, ode.rk4_step):
    np.testing.assert_allclose(float(step(v, t0, t1, x)), 1.0, rtol=1e-7)
  # On v = t^3 only RK4 is exact (Simpson's rule).
  v3 = lambda t, x: t ** 3
  np.testing.assert_allclose(float(ode.rk4_step(v3, t0, t1, x)), (1.5 ** 4 - 0.5 ** 4) / 4, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize("ts,match", [
    (jnp.zeros((2, 3)), "1-D"),
    (jnp.zeros((1,)), "at least 2"),
    (jnp.arange(4), "floating"),
    (jnp.array([0.0, 0.5, 0.4, 1.0]), "monotone"),
    (jnp.array([0.0, 0.5, 0.5, 1.0]), "monotone"),
])
def test_bad_grids_raise(ts, match):
  with pytest.raises(ValueError, match=f"`ts`.*{match}"):
    ode.odeint(lambda t, x: x, jnp.ones(2), ts)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="`method`"):
    ode.odeint(lambda t, x: x, jnp.ones(2), ode.uniform_grid(2), "rk45")
  with pytest.raises(ValueError, match="`x0`"):
    ode.odeint(lambda t, x: x, jnp.ones(2, jnp.int32), ode.uniform_grid(2))
  for fn in (ode.uniform_grid, ode.flow_euler_sigmas, ode.unipc_flow_sigmas):
    with pytest.raises(ValueError, match="`num_steps`"):
      fn(0)
    with pytest.raises(ValueError, match="`num_steps`"):
      fn(2.0)
  for fn in (ode.flow_euler_sigmas, ode.unipc_flow_sigmas):
    with pytest.raises(ValueError, match="`shift`"):
      fn(4, shift=0.0)


def test_traced_grid_is_accepted_under_jit():
  # Monotonicity can only be checked for concrete grids; traced grids still go through.
  out = jax.jit(lambda ts: ode.euler_solve(lambda t, x: x, jnp.ones(()), ts))(ode.uniform_grid(3))
  np.testing.assert_allclose(out, (4 / 3) ** 3, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Grids and conventions.


@pytest.mark.parametrize("num_steps", [10, 28, 50])
@pytest.mark.parametrize("shift", [1, 3])
def test_grids_match_diffusers_fixture_exactly(num_steps, shift):
  ref = np.load(FIXTURES / "scheduler_grids.npz")
  fm = ode.flow_euler_sigmas(num_steps, shift=float(shift))
  unipc = ode.unipc_flow_sigmas(num_steps, shift=float(shift))
  assert fm.dtype == unipc.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(fm), ref[f"fm_euler_sigmas_n{num_steps}_shift{shift}"])
  np.testing.assert_array_equal(np.asarray(unipc), ref[f"unipc_flow_sigmas_n{num_steps}_shift{shift}"])
  # The model timesteps diffusers derives from the grids.
  np.testing.assert_array_equal(np.asarray(fm)[:-1] * np.float32(1000),
                                ref[f"fm_euler_timesteps_n{num_steps}_shift{shift}"])
  np.testing.assert_array_equal(np.floor(1000 * np.asarray(unipc, np.float64)[:-1]).astype(np.int64),
                                ref[f"unipc_flow_timesteps_n{num_steps}_shift{shift}"])


def test_uniform_grid_and_shift():
  ts = ode.uniform_grid(4)
  np.testing.assert_allclose(ts, [0.0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(ode.uniform_grid(2, t_start=1.0, t_end=0.0), [1.0, 0.5, 0.0])
  s = jnp.linspace(0.0, 1.0, 11)
  np.testing.assert_allclose(ode.shift_time(s, 1.0), s, rtol=1e-7)
  shifted = ode.shift_time(s, 3.0)
  np.testing.assert_allclose(shifted[jnp.array([0, -1])], [0.0, 1.0])
  assert bool(jnp.all(shifted >= s)) and bool(jnp.all(jnp.diff(shifted) > 0))
  # Closed form of the FlowMatchEuler grid stated in FIXTURES.md (float64 version, float32 agreement).
  n, sh = 28, 3.0
  f = lambda u: sh * u / (1 + (sh - 1) * u)
  closed = np.append(f(np.linspace(1.0, f(1 / 1000), n)), 0.0)
  np.testing.assert_allclose(ode.flow_euler_sigmas(n, sh), closed, rtol=1e-6, atol=1e-7)


def test_convention_adapters_round_trip():
  t = jnp.linspace(0.0, 1.0, 5)
  np.testing.assert_allclose(ode.sigma_to_t(ode.t_to_sigma(t)), t)
  v = lambda t, x: {"u": t * x["u"] + 1.0}
  x = {"u": jnp.array([0.5, -2.0])}
  v_sigma = ode.velocity_t_to_sigma(v)
  chex.assert_trees_all_close(v_sigma(jnp.asarray(0.25), x), jax.tree.map(jnp.negative, v(0.75, x)))
  v_back = ode.velocity_sigma_to_t(v_sigma)
  chex.assert_trees_all_close(v_back(jnp.asarray(0.3), x), v(jnp.asarray(0.3), x), rtol=1e-6)


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_sigma_and_t_conventions_give_the_same_trajectory(method):
  # A sigma-convention model integrated on its decreasing sigma grid equals the wrapped model integrated
  # on t = 1 - sigma (the state is shared; only time and the velocity's sign flip).
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(3, 3)) * 0.5, jnp.float32)
  v_sigma = lambda s, x: jnp.tanh(x @ w) + s * x
  sigmas = ode.flow_euler_sigmas(12, shift=3.0)
  x0 = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  xs, traj_s = ode.odeint(v_sigma, x0, sigmas, method, return_trajectory=True)
  xt, traj_t = ode.odeint(ode.velocity_sigma_to_t(v_sigma), x0, ode.sigma_to_t(sigmas), method,
                          return_trajectory=True)
  chex.assert_trees_all_close(traj_s, traj_t, rtol=1e-5, atol=2e-6)
  chex.assert_trees_all_close(xs, xt, rtol=1e-5, atol=2e-6)


def _fixture_cfg_velocity_sigma(ref, optimized_scale):
  """The fixture's toy network with guidance, in the sigma-convention (returns noise - data)."""

  def branch(prefix, x, sigma):
    p = {k: jnp.asarray(ref[f"{prefix}_{k}"]) for k in ("W1", "u1", "b1", "W2", "u2", "b2")}
    timestep = sigma * jnp.float32(1000)          # what the pipeline passes as `timestep`
    s = timestep / jnp.float32(1000)              # the toy network's time feature
    flat = x.reshape(x.shape[0], -1)
    h = jnp.tanh(flat @ p["W1"] + s * p["u1"][None, :] + p["b1"][None, :])
    return (h @ p["W2"] + s * p["u2"][None, :] + p["b2"][None, :]).reshape(x.shape)

  w = jnp.float32(ref["guidance_scale"])

  def v_sigma(sigma, x):
    v_c, v_u = branch("cond", x, sigma), branch("uncond", x, sigma)
    if not optimized_scale:
      return v_u + w * (v_c - v_u)
    # CFG-Zero*'s optimized scale s* = <v_c, v_u> / (||v_u||^2 + 1e-8) per sample, without zero-init.
    dot = jnp.sum(v_c * v_u, axis=(1, 2, 3), keepdims=True)
    s_star = dot / (jnp.sum(v_u * v_u, axis=(1, 2, 3), keepdims=True) + 1e-8)
    return s_star * v_u + w * (v_c - s_star * v_u)

  return v_sigma


@pytest.mark.parametrize("method_name,optimized_scale", [("cfg", False), ("optimized_scale_only", True)])
def test_sampler_fm_euler_fixture(method_name, optimized_scale):
  # sampler_fm_euler.npz: diffusers FlowMatchEuler loop on a toy network. Plain CFG (w = 3.5) and the
  # optimized scale without zero-init are velocity combinators, so the plain Euler solver must reproduce
  # their trajectories. (The zero-init rows zero the velocity by step index; they belong to the guidance
  # package's sampler tests.)
  ref = np.load(FIXTURES / "sampler_fm_euler.npz")
  sigmas = ode.flow_euler_sigmas(int(ref["num_inference_steps"]), shift=float(ref["shift"]))
  np.testing.assert_array_equal(np.asarray(sigmas), ref["sigmas"])
  v_sigma = _fixture_cfg_velocity_sigma(ref, optimized_scale)
  noise = jnp.asarray(ref["noise"])
  # sigma-convention: integrate on the decreasing sigma grid (exactly the diffusers update).
  x_s, traj_s = ode.euler_solve(v_sigma, noise, sigmas, return_trajectory=True)
  np.testing.assert_allclose(np.asarray(traj_s), ref[f"traj_{method_name}"], rtol=1e-5, atol=2e-6)
  np.testing.assert_allclose(np.asarray(x_s), ref[f"final_{method_name}"], rtol=1e-5, atol=2e-6)
  # t-convention through the adapters.
  x_t, traj_t = jax.jit(lambda x: ode.euler_solve(ode.velocity_sigma_to_t(v_sigma), x, ode.sigma_to_t(sigmas),
                                                  return_trajectory=True))(noise)
  np.testing.assert_allclose(np.asarray(traj_t), ref[f"traj_{method_name}"], rtol=1e-5, atol=2e-6)
  np.testing.assert_allclose(np.asarray(x_t), ref[f"final_{method_name}"], rtol=1e-5, atol=2e-6)
