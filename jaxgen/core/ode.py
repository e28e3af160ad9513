r"""Fixed-grid ODE solvers (Euler, Heun, midpoint, RK4) as ``lax.scan`` loops over an explicit time grid.

The solvers integrate

.. math::  \frac{dx}{dt} = v(t, x)

over a time grid ``ts = (t_0, t_1, ..., t_N)`` given by the caller, one solver step per interval
:math:`[t_n, t_{n+1}]` with :math:`h_n = t_{n+1} - t_n`. The grid may increase or decrease (a decreasing
grid integrates backwards in time); it must be strictly monotone. The state ``x`` may be any pytree of
arrays; ``velocity_fn(t, x)`` returns a pytree of the same structure.

Time convention of the library ("t-convention")
-----------------------------------------------
``t`` runs in ``[0, 1]``; ``t = 0`` is pure noise and ``t = 1`` is data:

.. math::  x_t = t\,x_1 + (1 - t)\,x_0,\qquad x_0 \sim \mathcal N(0, I),\qquad v = x_1 - x_0,

and sampling integrates :math:`dx/dt = v(t, x)` from ``t = 0`` to ``t = 1`` on an increasing grid
(e.g. :func:`uniform_grid`). This is the convention of the rectified-flow / CFG-Zero* papers and of
:mod:`jaxgen.core.flow`.

The diffusers / SD3 "sigma-convention" runs the other way: :math:`\sigma = 1 - t`,
:math:`x_\sigma = (1-\sigma)\,x_{data} + \sigma\,\epsilon`, the network returns
:math:`v_\sigma = \epsilon - x_{data} = -v` and the Euler update is
:math:`x \leftarrow x + (\sigma_{next} - \sigma)\,v_\sigma`. The state is the same in both conventions
(:math:`x_t = x_{\sigma = 1 - t}`). Convert at the edge with :func:`sigma_to_t` / :func:`t_to_sigma` for grids
and :func:`velocity_sigma_to_t` / :func:`velocity_t_to_sigma` for velocity functions. Because the solvers
accept any monotone grid, a sigma-convention model can also be integrated directly on its decreasing sigma
grid (that is literally the diffusers ``FlowMatchEulerDiscreteScheduler`` loop when ``method="euler"``).

Grids: :func:`uniform_grid` (t-convention), :func:`flow_euler_sigmas` (diffusers'
``FlowMatchEulerDiscreteScheduler`` / SD3 shifted grid, sigma-convention) and :func:`unipc_flow_sigmas`
(diffusers' ``UniPCMultistepScheduler(use_flow_sigmas=True)`` grid used by Wan2.1, sigma-convention).

Steps (``h = t_{n+1} - t_n``):

* Euler (order 1):    :math:`x' = x + h\,v(t, x)`.
* Heun (order 2):     :math:`\tilde x = x + h\,v(t, x)`, :math:`x' = x + \tfrac h2\,[v(t, x) + v(t + h, \tilde x)]`.
* midpoint (order 2): :math:`x' = x + h\,v(t + \tfrac h2, x + \tfrac h2\,v(t, x))`.
* RK4 (order 4):      the classical Runge-Kutta scheme with weights (1, 2, 2, 1) / 6.

Each step computes in the promoted dtype of state, velocity and time, and casts the new state back to
the dtype of the incoming state, so the ``lax.scan`` carry keeps its type (bf16 states stay bf16).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
VelocityFn = Callable[[jax.Array, PyTree], PyTree]          # (t, x) -> dx/dt, same tree as x
StepFn = Callable[[VelocityFn, jax.Array, jax.Array, PyTree], PyTree]   # (v, t0, t1, x) -> x(t1)
LoopFn = Callable[..., tuple[Any, Any]]                      # lax.scan-compatible: (f, init, xs) -> (carry, ys)

__all__ = [
    "METHODS",
    "VelocityFn",
    "euler_solve",
    "euler_step",
    "flow_euler_sigmas",
    "heun_solve",
    "heun_step",
    "midpoint_solve",
    "midpoint_step",
    "odeint",
    "python_scan",
    "rk4_solve",
    "rk4_step",
    "shift_time",
    "sigma_to_t",
    "t_to_sigma",
    "uniform_grid",
    "unipc_flow_sigmas",
    "velocity_sigma_to_t",
    "velocity_t_to_sigma",
]


# ----------------------------------------------------------------------------------------------------
# Small pure helpers.


def _combine(x: PyTree, terms: list[tuple[Any, PyTree]]) -> PyTree:
  """Returns ``x + sum_i c_i * k_i`` leaf-wise, cast back to the dtype of each leaf of ``x``."""
  coeffs = [c for c, _ in terms]
  trees = [k for _, k in terms]

  def leaf(xl, *ks):
    out = xl
    for c, kl in zip(coeffs, ks):
      out = out + c * kl
    return out.astype(jnp.result_type(xl))

  return jax.tree.map(leaf, x, *trees)


def python_scan(f: Callable, init: Any, xs: Any = None, length: int | None = None) -> tuple[Any, Any]:
  """A plain Python loop with the signature and semantics of :func:`jax.lax.scan` (debugging aid).

  Pass it as ``loop=python_scan`` to a solver to step through the integration eagerly (prints and
  breakpoints work inside ``velocity_fn``); results equal the ``lax.scan`` version. mctx offers the same
  hook as ``loop_fn``.

  Args:
    f: ``f(carry, x) -> (carry, y)``.
    init: initial carry.
    xs: pytree of arrays scanned along their leading axis, or ``None``.
    length: number of iterations; required when ``xs`` is ``None``.

  Returns:
    ``(carry, ys)`` with ``ys`` the per-iteration outputs stacked along a new leading axis.
  """
  leaves = jax.tree.leaves(xs)
  if length is None:
    if not leaves:
      raise ValueError("python_scan: `length` is required when `xs` has no leaves")
    length = leaves[0].shape[0]
  carry, ys = init, []
  for i in range(length):
    x = None if xs is None else jax.tree.map(lambda leaf, i=i: leaf[i], xs)
    carry, y = f(carry, x)
    ys.append(y)
  if not ys:
    return carry, None
  stacked = jax.tree.map(lambda *ls: jnp.stack(ls), *ys)
  return carry, stacked


def _check_grid(ts: Any, name: str = "ts") -> jax.Array:
  """Validates a time grid: 1-D, floating, length >= 2 and (when concrete) strictly monotone."""
  ts = jnp.asarray(ts)
  if ts.ndim != 1:
    raise ValueError(f"`{name}` must be a 1-D time grid, got shape {ts.shape}")
  if ts.shape[0] < 2:
    raise ValueError(f"`{name}` must contain at least 2 time points, got {ts.shape[0]}")
  if not jnp.issubdtype(ts.dtype, jnp.floating):
    raise ValueError(f"`{name}` must have a floating dtype, got {ts.dtype}")
  if not isinstance(ts, jax.core.Tracer):
    d = np.diff(np.asarray(ts, dtype=np.float64))
    if not (np.all(d > 0) or np.all(d < 0)):
      raise ValueError(f"`{name}` must be strictly monotone (all increasing or all decreasing), got {ts}")
  return ts


def _check_int(value: Any, name: str, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"`{name}` must be a Python int >= {minimum}, got {value!r}")
  return int(value)


def _check_shift(shift: Any) -> float:
  shift = float(shift)
  if not np.isfinite(shift) or shift <= 0:
    raise ValueError(f"`shift` must be a finite positive number, got {shift}")
  return shift


# ----------------------------------------------------------------------------------------------------
# One-step maps.


def euler_step(velocity_fn: VelocityFn, t0: jax.Array, t1: jax.Array, x: PyTree) -> PyTree:
  r"""One explicit Euler step :math:`x + h\,v(t_0, x)`, :math:`h = t_1 - t_0` (1 velocity evaluation)."""
  h = t1 - t0
  return _combine(x, [(h, velocity_fn(t0, x))])


def heun_step(velocity_fn: VelocityFn, t0: jax.Array, t1: jax.Array, x: PyTree) -> PyTree:
  r"""One Heun (explicit trapezoidal) step (2 velocity evaluations).

  :math:`\tilde x = x + h\,k_1`, :math:`x' = x + \tfrac h2 (k_1 + k_2)` with :math:`k_1 = v(t_0, x)`,
  :math:`k_2 = v(t_1, \tilde x)`.
  """
  h = t1 - t0
  k1 = velocity_fn(t0, x)
  k2 = velocity_fn(t1, _combine(x, [(h, k1)]))
  return _combine(x, [(h / 2, k1), (h / 2, k2)])


def midpoint_step(velocity_fn: VelocityFn, t0: jax.Array, t1: jax.Array, x: PyTree) -> PyTree:
  r"""One explicit midpoint step :math:`x + h\,v(t_0 + \tfrac h2, x + \tfrac h2 v(t_0, x))` (2 evaluations)."""
  h = t1 - t0
  k1 = velocity_fn(t0, x)
  k2 = velocity_fn(t0 + h / 2, _combine(x, [(h / 2, k1)]))
  return _combine(x, [(h, k2)])


def rk4_step(velocity_fn: VelocityFn, t0: jax.Array, t1: jax.Array, x: PyTree) -> PyTree:
  r"""One classical fourth-order Runge-Kutta step (4 velocity evaluations).

  :math:`k_1 = v(t_0, x)`, :math:`k_2 = v(t_0 + \tfrac h2, x + \tfrac h2 k_1)`,
  :math:`k_3 = v(t_0 + \tfrac h2, x + \tfrac h2 k_2)`, :math:`k_4 = v(t_1, x + h k_3)`,
  :math:`x' = x + \tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4)`.
  """
  h = t1 - t0
  tm = t0 + h / 2
  k1 = velocity_fn(t0, x)
  k2 = velocity_fn(tm, _combine(x, [(h / 2, k1)]))
  k3 = velocity_fn(tm, _combine(x, [(h / 2, k2)]))
  k4 = velocity_fn(t1, _combine(x, [(h, k3)]))
  return _combine(x, [(h / 6, k1), (h / 3, k2), (h / 3, k3), (h / 6, k4)])


METHODS: dict[str, StepFn] = {
    "euler": euler_step,
    "heun": heun_step,
    "midpoint": midpoint_step,
    "rk4": rk4_step,
}
"""Solver name -> one-step map ``step(velocity_fn, t0, t1, x)``. Convergence orders 1, 2, 2, 4."""


# ----------------------------------------------------------------------------------------------------
# Solvers.


def odeint(
    velocity_fn: VelocityFn,
    x0: PyTree,
    ts: jax.Array,
    method: str = "euler",
    *,
    return_trajectory: bool = False,
    loop: LoopFn = jax.lax.scan,
    checkpoint: bool = False,
) -> PyTree | tuple[PyTree, PyTree]:
  r"""Integrates :math:`dx/dt = v(t, x)` from ``ts[0]`` to ``ts[-1]`` with a fixed-grid method.

  One ``loop`` (default ``lax.scan``) iteration per grid interval; the number of steps ``len(ts) - 1`` is
  static (it is the grid's length), the grid values themselves may be traced, so a jitted caller does not
  retrace when only the grid values change.

  Args:
    velocity_fn: ``v(t, x) -> dx/dt``; ``t`` is a scalar array of ``ts.dtype``, ``x`` a pytree like ``x0``.
    x0: initial state at ``ts[0]`` (any pytree of floating arrays).
    ts: ``[N + 1]`` strictly monotone time grid (increasing from 0 to 1 for sampling in the library's
      t-convention; a decreasing grid integrates backwards).
    method: ``"euler"``, ``"heun"``, ``"midpoint"`` or ``"rk4"``.
    return_trajectory: also return the states at every grid point.
    loop: a :func:`jax.lax.scan`-compatible loop; pass :func:`python_scan` to debug eagerly.
    checkpoint: wrap each step in :func:`jax.checkpoint` (rematerialise in the backward pass; use it
      when differentiating through long samplers).

  Returns:
    ``x(ts[-1])``, or ``(x(ts[-1]), trajectory)`` when ``return_trajectory``; ``trajectory`` has the
    structure of ``x0`` with leaves of shape ``[N + 1, *leaf.shape]`` and ``trajectory[n] = x(ts[n])``
    (``trajectory[0] = x0``).

  Examples:
    >>> import jax.numpy as jnp
    >>> x1 = odeint(lambda t, x: -x, jnp.ones(2), uniform_grid(100), method="rk4")
    >>> bool(jnp.allclose(x1, jnp.exp(-1.0)))
    True
  """
  if method not in METHODS:
    raise ValueError(f"`method` must be one of {sorted(METHODS)}, got {method!r}")
  ts = _check_grid(ts)
  for leaf in jax.tree.leaves(x0):
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
      raise ValueError(f"`x0` leaves must have a floating dtype, got {jnp.result_type(leaf)}")
  x0 = jax.tree.map(jnp.asarray, x0)
  step_fn = METHODS[method]

  def step(x, t_pair):
    t0, t1 = t_pair
    x_next = step_fn(velocity_fn, t0, t1, x)
    return x_next, (x_next if return_trajectory else None)

  if checkpoint:
    step = jax.checkpoint(step)
  x_final, path = loop(step, x0, (ts[:-1], ts[1:]))
  if not return_trajectory:
    return x_final
  trajectory = jax.tree.map(lambda a, p: jnp.concatenate([a[None], p], axis=0), x0, path)
  return x_final, trajectory


def _named_solver(method: str) -> Callable:
  def solve(
      velocity_fn: VelocityFn,
      x0: PyTree,
      ts: jax.Array,
      *,
      return_trajectory: bool = False,
      loop: LoopFn = jax.lax.scan,
      checkpoint: bool = False,
  ) -> PyTree | tuple[PyTree, PyTree]:
    return odeint(velocity_fn, x0, ts, method, return_trajectory=return_trajectory, loop=loop,
                  checkpoint=checkpoint)

  solve.__name__ = solve.__qualname__ = f"{method}_solve"
  solve.__doc__ = (f"``odeint(velocity_fn, x0, ts, method={method!r}, ...)``; see :func:`odeint` for the "
                   f"arguments and :func:`{method}_step` for the update.")
  return solve


euler_solve = _named_solver("euler")
heun_solve = _named_solver("heun")
midpoint_solve = _named_solver("midpoint")
rk4_solve = _named_solver("rk4")


# ----------------------------------------------------------------------------------------------------
# Conventions.


def sigma_to_t(sigma: jax.Array) -> jax.Array:
  r"""Sigma-convention time (:math:`\sigma = 1` noise, 0 data) to library time: :math:`t = 1 - \sigma`."""
  return 1 - jnp.asarray(sigma)


def t_to_sigma(t: jax.Array) -> jax.Array:
  r"""Library time (:math:`t = 0` noise, 1 data) to sigma-convention time: :math:`\sigma = 1 - t`."""
  return 1 - jnp.asarray(t)


def velocity_sigma_to_t(velocity_sigma_fn: VelocityFn) -> VelocityFn:
  r"""Wraps a sigma-convention model :math:`v_\sigma(\sigma, x) = \epsilon - x_{data}` as a t-convention one.

  Returns :math:`v(t, x) = -v_\sigma(1 - t, x)` (:math:`dx/dt = -dx/d\sigma`), so that integrating it on
  ``sigma_to_t(sigmas)`` reproduces the diffusers trajectory on ``sigmas``.
  """

  def velocity_fn(t, x):
    return jax.tree.map(jnp.negative, velocity_sigma_fn(t_to_sigma(t), x))

  return velocity_fn


def velocity_t_to_sigma(velocity_fn: VelocityFn) -> VelocityFn:
  r"""Inverse of :func:`velocity_sigma_to_t`: :math:`v_\sigma(\sigma, x) = -v(1 - \sigma, x)`."""

  def velocity_sigma_fn(sigma, x):
    return jax.tree.map(jnp.negative, velocity_fn(sigma_to_t(sigma), x))

  return velocity_sigma_fn


# ----------------------------------------------------------------------------------------------------
# Time grids.


def uniform_grid(num_steps: int, *, t_start: float = 0.0, t_end: float = 1.0,
                 dtype: Any = jnp.float32) -> jax.Array:
  """Uniform grid ``linspace(t_start, t_end, num_steps + 1)`` (default: t-convention sampling grid 0 -> 1).

  Args:
    num_steps: number of solver steps N (Python int >= 1); the grid has N + 1 points.
    t_start: first time point.
    t_end: last time point (must differ from ``t_start``).
    dtype: floating dtype of the grid.

  Returns:
    ``[num_steps + 1]`` array.
  """
  num_steps = _check_int(num_steps, "num_steps", 1)
  if float(t_start) == float(t_end):
    raise ValueError(f"`t_start` and `t_end` must differ, both are {t_start}")
  return jnp.asarray(np.linspace(float(t_start), float(t_end), num_steps + 1), dtype=dtype)


def shift_time(sigma: jax.Array, shift: float) -> jax.Array:
  r"""SD3 timestep shift in the sigma-convention: :math:`f(\sigma) = s\,\sigma / (1 + (s - 1)\,\sigma)`.

  ``shift > 1`` spends more steps at high noise. In the t-convention the shifted time is
  ``1 - shift_time(1 - t, shift)``.
  """
  sigma = jnp.asarray(sigma)
  return shift * sigma / (1 + (shift - 1) * sigma)


def flow_euler_sigmas(num_steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> jax.Array:
  r"""The sigma grid of diffusers' ``FlowMatchEulerDiscreteScheduler`` (SD3 / SD3.5), bit for bit.

  With :math:`f` = :func:`shift_time` and :math:`T` = ``num_train_timesteps``:
  :math:`u = \mathrm{linspace}(1, f(1/T), N)`, :math:`\sigma = f(u)`, then a final 0 is appended. The lower
  end is shifted twice (once when the scheduler builds its training sigmas, once in ``set_timesteps``);
  this is what diffusers does and is kept. The arithmetic follows diffusers 0.33.1 exactly: the training
  minimum :math:`f(1/T)` in float32, the inference grid in float64, the result cast to float32.
  The model timesteps diffusers passes to the network are ``T * sigmas[:-1]`` (float32).

  Args:
    num_steps: number of inference steps N (Python int >= 1).
    shift: the shift :math:`s` (SD3/SD3.5: 3.0; 1.0 = unshifted). A static Python number.
    num_train_timesteps: T (1000 for every SD3-family model).

  Returns:
    float32 ``[N + 1]`` decreasing sigma grid from 1 to 0 (sigma-convention; use :func:`sigma_to_t` for
    the library convention).
  """
  num_steps = _check_int(num_steps, "num_steps", 1)
  num_train_timesteps = _check_int(num_train_timesteps, "num_train_timesteps", 1)
  shift = _check_shift(shift)
  # Scheduler __init__ (torch float32): training sigmas 1/T ... 1, shifted; we need the extremes.
  train_min = np.float32(1.0) / np.float32(num_train_timesteps)
  sigma_min = np.float32(shift) * train_min / (np.float32(1.0) + np.float32(shift - 1.0) * train_min)
  sigma_max = np.float32(shift) / (np.float32(1.0) + np.float32(shift - 1.0))
  # set_timesteps (numpy float64): linspace over timesteps, back to sigmas, shift again, cast to float32.
  timesteps = np.linspace(float(sigma_max) * num_train_timesteps, float(sigma_min) * num_train_timesteps,
                          num_steps)
  sigmas = timesteps / num_train_timesteps
  sigmas = (shift * sigmas / (1 + (shift - 1) * sigmas)).astype(np.float32)
  return jnp.asarray(np.concatenate([sigmas, np.zeros(1, np.float32)]))


def unipc_flow_sigmas(num_steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> jax.Array:
  r"""The sigma grid of diffusers' ``UniPCMultistepScheduler(use_flow_sigmas=True)`` (Wan2.1), bit for bit.

  :math:`a = \mathrm{linspace}(1, 1/T, N + 1)`, :math:`\sigma = \mathrm{reverse}(f(1 - a))[:-1]` with
  :math:`f` = :func:`shift_time` (``flow_shift`` in diffusers), then a final 0 is appended
  (``final_sigmas_type="zero"``); float64 arithmetic cast to float32 as in diffusers 0.33.1. Only the grid
  is provided; the UniPC multistep update is not implemented here. The integer timesteps diffusers passes
  to the network are ``floor(T * sigmas[:-1])`` computed before the float32 cast.

  Args:
    num_steps: number of inference steps N (Python int >= 1).
    shift: ``flow_shift`` (Wan2.1: 3.0 at 480p, 5.0 at 720p).
    num_train_timesteps: T.

  Returns:
    float32 ``[N + 1]`` decreasing sigma grid, first entry :math:`f(1 - 1/T) < 1`, last entry 0.
  """
  num_steps = _check_int(num_steps, "num_steps", 1)
  num_train_timesteps = _check_int(num_train_timesteps, "num_train_timesteps", 1)
  shift = _check_shift(shift)
  alphas = np.linspace(1.0, 1.0 / num_train_timesteps, num_steps + 1)
  sigmas = 1.0 - alphas
  sigmas = np.flip(shift * sigmas / (1 + (shift - 1) * sigmas))[:-1]
  return jnp.asarray(np.concatenate([sigmas, [0.0]]).astype(np.float32))
