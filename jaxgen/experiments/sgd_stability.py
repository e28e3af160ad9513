r"""Dynamical stability of SGD vs GD on a diagonal linear network (spec E3).

Wu & Su, "The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent", ICML 2023,
arXiv 2305.17490.

Setup: :math:`d = 100`, :math:`n = 30` training inputs :math:`x \sim U[-1, 1]^d`, teacher
:math:`\beta^* = (1, 1, 1, 0, \dots, 0)`, :math:`y = \beta^{*\top} x`, 2000 test points. Model
:math:`f(x) = \langle u \odot v, x\rangle` with a large initialisation :math:`u, v \sim N(0, I)`, loss
:math:`L = \frac1{2n}\sum_i (f(x_i) - y_i)^2`. SGD (batch size 1, indices drawn uniformly with replacement, the same
index sequence for every learning rate) and GD run with the same :math:`\eta` on a grid, ``num_steps`` steps each;
every run of the grid is one lane of a single ``vmap``-ed ``lax.scan``.

At the end (interpolating minimum, :math:`H = G`): train loss, :math:`\operatorname{tr}(G)`
(:func:`jaxgen.stability.gauss_newton_trace`), :math:`\lambda_{max}` by power iteration on the loss Hessian
(:func:`jaxgen.stability.top_hessian_eigenvalue`) and exactly from the :math:`n\times n` Gram matrix of the
per-example output gradients (a cross-check), :math:`\|G\|_F`, :math:`\|u \odot v\|_1`, test MSE; the stability
lines :math:`2/\eta` are drawn in the plots.

Theory (Wu & Su): a minimum that is linearly stable for GD has :math:`\lambda_{max}(H) \le 2/\eta`; one that is
linearly stable for SGD (batch 1) has :math:`\operatorname{tr}(H) \le 2/\eta`. For this model
:math:`\operatorname{tr}(G) = \frac1n\sum_{i,j} x_{ij}^2(u_j^2 + v_j^2) \ge \frac2n\sum_{i,j} x_{ij}^2|\beta_j|`, so
SGD's constraint bounds a data-weighted :math:`\ell_1` norm of :math:`\beta = u \odot v` and tightens as
:math:`\eta` grows; GD's does not (:math:`\lambda_{max}` is far below :math:`2/\eta` on this grid).

Claim decision (``held``), decided before running: (1) every converged SGD run has
:math:`\operatorname{tr}(G) \le 2/\eta`; (2) every converged GD run has :math:`\lambda_{max}(G) \le 2/\eta`;
(3) over the converged SGD runs ordered by :math:`\eta`, :math:`\operatorname{tr}(G)` and :math:`\|\beta\|_1` never
increase by more than ``monotone_slack`` (2 %) from one :math:`\eta` to the next and fall by at least
``min_drop`` (20 %) from the smallest to the largest converged :math:`\eta`; (4) over the converged GD runs their
spread (max − min) / median stays ≤ ``gd_spread`` (10 %). A run has converged if its final training loss is finite
and ≤ ``converge_tol``. At least ``min_converged`` (3) converged runs of each method are required.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxgen.core import metrics as metrics_lib
from jaxgen.experiments import _report

NAME = "sgd-stability"
PAPER = ("Wu & Su, 'The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent', ICML 2023, "
         "arXiv 2305.17490")
CLAIM = ("Linear stability constrains SGD's minima much more than GD's: a minimum stable for SGD has "
         "tr(H) <= 2/eta, one stable for GD only lambda_max(H) <= 2/eta. On a diagonal linear net tr(H) bounds a "
         "weighted l1 norm of beta = u*v, so with larger eta SGD finds flatter, sparser, better-generalising "
         "solutions while GD's solution does not change (spec E3; NumPy prototype: GD tr ~45, ||beta||_1 ~37 for "
         "every eta; SGD tr 45.5 -> 8.6 and ||beta||_1 36.9 -> 10.2 as eta goes 0.005 -> 0.06; SGD diverges at "
         "eta >= 0.08 from this initialisation).")

METHODS = ("sgd", "gd")


@dataclasses.dataclass(frozen=True)
class Config:
  """Diagonal linear network, SGD vs GD over a learning-rate grid.

  Attributes:
    dim: input dimension :math:`d` (100).
    num_train: training points :math:`n` (30).
    num_test: test points (2000).
    num_active: number of ones in :math:`\\beta^*` (3).
    learning_rates: the :math:`\\eta` grid (both methods).
    num_steps: steps per run (40,000).
    log_every: logging period in steps (the inner ``lax.scan`` length).
    converge_tol: a run has converged if its final train loss is finite and at most this.
    monotone_slack, min_drop, gd_spread, min_converged: the claim decision (module docstring).
    power_iters: power-iteration budget for :math:`\\lambda_{max}`.
    data_seed: seed of the data (inputs of train and test sets).
    seed: seed of the initialisation and of SGD's index sequence.
  """

  dim: int = 100
  num_train: int = 30
  num_test: int = 2000
  num_active: int = 3
  learning_rates: tuple[float, ...] = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08)
  num_steps: int = 40_000
  log_every: int = 1000
  converge_tol: float = 1e-6
  monotone_slack: float = 0.02
  min_drop: float = 0.2
  gd_spread: float = 0.1
  min_converged: int = 3
  power_iters: int = 500
  data_seed: int = 0
  seed: int = 1

  @classmethod
  def quick(cls) -> Config:
    """The spec's grid and step count."""
    return cls()

  @classmethod
  def full(cls) -> Config:
    """A finer and wider grid (GD up to eta = 0.2, as the prototype), 100k steps."""
    return cls(learning_rates=(0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.15, 0.2),
               num_steps=100_000, log_every=2000)


def _validate(config: Config) -> None:
  for name in ("dim", "num_train", "num_test", "num_active", "num_steps", "log_every", "power_iters",
               "min_converged"):
    if int(getattr(config, name)) < 1:
      raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
  if config.num_active > config.dim:
    raise ValueError(f"num_active ({config.num_active}) must be <= dim ({config.dim})")
  if not config.learning_rates or any(not lr > 0 for lr in config.learning_rates):
    raise ValueError(f"learning_rates must be a non-empty tuple of positive floats, got {config.learning_rates!r}")
  if config.num_steps % config.log_every:
    raise ValueError(f"log_every ({config.log_every}) must divide num_steps ({config.num_steps})")


def make_data(config: Config) -> dict[str, jax.Array]:
  """Train/test inputs ``U[-1, 1]^d`` and targets of the sparse teacher ``beta* = (1, .., 1, 0, ..)``."""
  k_train, k_test = jax.random.split(jax.random.key(config.data_seed))
  beta_star = jnp.zeros(config.dim).at[:config.num_active].set(1.0)
  x_train = jax.random.uniform(k_train, (config.num_train, config.dim), minval=-1.0, maxval=1.0)
  x_test = jax.random.uniform(k_test, (config.num_test, config.dim), minval=-1.0, maxval=1.0)
  return {"x_train": x_train, "y_train": x_train @ beta_star, "x_test": x_test, "y_test": x_test @ beta_star,
          "beta_star": beta_star}


def model(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """Diagonal linear network :math:`f(x) = \\langle u \\odot v, x\\rangle` for one input ``x`` [d]."""
  return jnp.dot(params["u"] * params["v"], x)


def square_loss(params: dict[str, jax.Array], xs: jax.Array, ys: jax.Array) -> jax.Array:
  """:math:`\\frac1{2n}\\sum_i (f(x_i) - y_i)^2`."""
  return 0.5 * jnp.mean((xs @ (params["u"] * params["v"]) - ys) ** 2)


def _train(config: Config, data: dict, params0: dict, lrs: jax.Array, is_sgd: jax.Array, progress: bool):
  """All runs as lanes of one vmapped scan; returns final params [R, d] and logs [num_logs, R]."""
  order_key = jax.random.key(config.seed + 1_000_003)
  xs, ys = data["x_train"], data["y_train"]
  n = config.num_train

  def one_step(params, t, lr, sgd):
    i = jax.random.randint(jax.random.fold_in(order_key, t), (), 0, n)
    weights = jnp.where(sgd, jax.nn.one_hot(i, n), jnp.full((n,), 1.0 / n))     # batch of 1 vs full batch

    def loss(p):
      return 0.5 * jnp.sum(weights * (xs @ (p["u"] * p["v"]) - ys) ** 2)

    grads = jax.grad(loss)(params)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads)

  def log_values(params):
    beta = params["u"] * params["v"]
    return {"train_loss": square_loss(params, xs, ys),
            "trace": jnp.mean(jnp.sum(xs ** 2 * (params["u"] ** 2 + params["v"] ** 2)[None, :], axis=1)),
            "beta_l1": jnp.sum(jnp.abs(beta))}

  @jax.jit
  def chunk(params, start):
    def run_lane(p, lr, sgd):
      def body(p, t):
        return one_step(p, t, lr, sgd), None
      p, _ = jax.lax.scan(body, p, start + jnp.arange(config.log_every))
      return p, log_values(p)
    return jax.vmap(run_lane)(params, lrs, is_sgd)

  num_runs = lrs.shape[0]
  params = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_runs,) + x.shape), params0)
  logs = [jax.device_get(jax.vmap(log_values)(params))]
  chunks = config.num_steps // config.log_every
  for c in tqdm(range(chunks), desc=NAME, disable=not progress, dynamic_ncols=True, leave=False):
    params, values = chunk(params, jnp.asarray(c * config.log_every, jnp.int32))
    logs.append(jax.device_get(values))
  return params, {k: np.stack([entry[k] for entry in logs]) for k in logs[0]}


def _diagnostics(config: Config, data: dict, params: dict) -> dict[str, np.ndarray]:
  """Sharpness numbers of every run (vmapped), via jaxgen.stability, plus exact Gram-matrix cross-checks."""
  from jaxgen.stability import gauss_newton_trace, top_hessian_eigenvalue

  xs, ys = data["x_train"], data["y_train"]

  def one(p, key):
    loss = lambda q: square_loss(q, xs, ys)  # noqa: E731
    jac = jax.vmap(lambda x: jnp.concatenate([x * p["v"], x * p["u"]]))(xs)      # [n, 2d] rows = grad f(x_i)
    gram_eigs = jnp.linalg.eigvalsh(jac @ jac.T / xs.shape[0])                   # nonzero spectrum of G
    return {
        "train_loss": loss(p),
        "trace": gauss_newton_trace(model, p, xs),
        "lambda_max": top_hessian_eigenvalue(loss, p, key, num_iters=config.power_iters, tol=1e-7),
        "lambda_max_exact": gram_eigs[-1],
        "frobenius": jnp.sqrt(jnp.sum(gram_eigs ** 2)),
        "beta_l1": jnp.sum(jnp.abs(p["u"] * p["v"])),
        "test_mse": jnp.mean((data["x_test"] @ (p["u"] * p["v"]) - data["y_test"]) ** 2),
    }

  num_runs = params["u"].shape[0]
  keys = jax.random.split(jax.random.key(config.seed + 7), num_runs)
  return jax.device_get(jax.jit(jax.vmap(one))(params, keys))


def run(config: Config, out_dir: str | Path, progress: bool = True) -> dict:
  """Train SGD and GD over the learning-rate grid, measure sharpness, decide the claim, write the run folder."""
  _validate(config)
  start_time = time.perf_counter()
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  _report.write_config(out, NAME, config)

  data = make_data(config)
  k_u, k_v = jax.random.split(jax.random.key(config.seed))
  params0 = {"u": jax.random.normal(k_u, (config.dim,)), "v": jax.random.normal(k_v, (config.dim,))}
  runs = [(m, lr) for m in METHODS for lr in config.learning_rates]
  lrs = jnp.asarray([lr for _, lr in runs], jnp.float32)
  is_sgd = jnp.asarray([m == "sgd" for m, _ in runs])
  train_start = time.perf_counter()
  params, logs = _train(config, data, params0, lrs, is_sgd, progress)
  train_seconds = time.perf_counter() - train_start
  diag = _diagnostics(config, data, params)

  results = {}
  writer = metrics_lib.JsonlWriter(out / "metrics.jsonl")
  steps = np.arange(logs["train_loss"].shape[0]) * config.log_every
  for r, (method, lr) in enumerate(runs):
    label = f"{method}/lr={lr:g}"
    for j, step in enumerate(steps):
      writer.write({"step": int(step), "run": label, "method": method, "lr": lr,
                    **{k: float(v[j, r]) for k, v in logs.items()}})
    values = {k: float(v[r]) for k, v in diag.items()}
    converged = bool(np.isfinite(values["train_loss"]) and values["train_loss"] <= config.converge_tol)
    if not converged:   # sharpness of a diverged / unconverged run is meaningless
      values = {k: (v if k == "train_loss" else float("nan")) for k, v in values.items()}
    results[label] = {"method": method, "lr": lr, "two_over_lr": 2.0 / lr, "converged": converged, **values,
                      "initial_trace": float(logs["trace"][0, r])}
  held, checks, measured = _decide(config, results)
  plots = _plot(out, config, results, logs, runs, steps)
  metrics = {
      **{f"{label}/{k}": v for label, res in results.items()
         for k, v in res.items() if k in ("trace", "lambda_max", "beta_l1", "test_mse", "converged")},
      "checks": checks,
      "runs": results,
      "initial_trace": float(logs["trace"][0, 0]),
  }
  notes = (
      "**Setup.** Float32, one `vmap`-ed `lax.scan` over all (method, eta) lanes; SGD draws one training index per "
      "step uniformly with replacement (the same sequence for every eta); GD uses the full batch. Data come from "
      "`jax.random` (seed `data_seed`), so the numbers differ in detail from the spec's NumPy prototype.\n\n"
      "**Measurements.** `trace` = tr(G) from `jaxgen.stability.gauss_newton_trace`; `lambda_max` by power "
      "iteration on the loss Hessian (`top_hessian_eigenvalue`; H = G at an interpolating minimum) with "
      "`lambda_max_exact` from the n x n Gram matrix as a cross-check; `frobenius` = ||G||_F (exact); `beta_l1` = "
      "||u * v||_1. Runs whose final training loss is not finite or above `converge_tol` count as not converged "
      "and have no sharpness values.\n\n"
      f"**Initialisation.** tr(G) at the shared initial point is {float(logs['trace'][0, 0]):.1f} (about 46 in "
      "the spec's prototype data), so 2/eta falls below the initial trace for eta > "
      f"{2.0 / float(logs['trace'][0, 0]):.3f}; SGD runs that diverge do so within the first logging interval, "
      "before they find a flatter region.\n\n"
      "**Plots.** `sharpness_vs_lr.png`: tr(G) and lambda_max against eta with the 2/eta line; "
      "`training.png`: training loss and tr(G) over steps.")
  wall = time.perf_counter() - start_time
  return _report.finish(out, name=NAME, config=config, metrics=metrics, claim=CLAIM, held=held, measured=measured,
                        plots=plots, notes=notes, wall_time_s=wall,
                        timing={"train_seconds": train_seconds, "num_runs": len(runs)})


def _decide(config: Config, results: dict) -> tuple[bool, dict, str]:
  def converged(method):
    return sorted((r for r in results.values() if r["method"] == method and r["converged"]), key=lambda r: r["lr"])

  sgd, gd = converged("sgd"), converged("gd")
  enough = len(sgd) >= config.min_converged and len(gd) >= config.min_converged
  sgd_trace_ok = all(r["trace"] <= r["two_over_lr"] for r in sgd)
  gd_lambda_ok = all(r["lambda_max"] <= r["two_over_lr"] for r in gd)

  def falls(key):
    vals = [r[key] for r in sgd]
    if len(vals) < 2:
      return False
    mono = all(b <= a * (1 + config.monotone_slack) for a, b in zip(vals, vals[1:]))
    return bool(mono and vals[-1] <= (1 - config.min_drop) * vals[0])

  def flat(key):
    vals = np.asarray([r[key] for r in gd])
    return bool(vals.size >= 1 and (vals.max() - vals.min()) / np.median(vals) <= config.gd_spread)

  checks = {
      "enough_converged": bool(enough),
      "sgd_trace_below_2_over_lr": bool(sgd_trace_ok),
      "gd_lambda_max_below_2_over_lr": bool(gd_lambda_ok),
      "sgd_trace_falls_with_lr": falls("trace"),
      "sgd_beta_l1_falls_with_lr": falls("beta_l1"),
      "sgd_test_mse_falls_with_lr": falls("test_mse"),   # reported, not part of `held` (the criteria)
      "gd_trace_flat": flat("trace") if gd else False,
      "gd_beta_l1_flat": flat("beta_l1") if gd else False,
  }
  held = all(v for k, v in checks.items() if k != "sgd_test_mse_falls_with_lr")

  def row(r):
    if not r["converged"]:
      return f"eta={r['lr']:g}: not converged (loss {r['train_loss']:.3g})"
    return (f"eta={r['lr']:g}: tr {r['trace']:.2f} (2/eta {r['two_over_lr']:.1f}), lmax {r['lambda_max']:.2f}, "
            f"|beta|_1 {r['beta_l1']:.2f}, test MSE {r['test_mse']:.3g}")

  parts = [f"{m.upper()}: " + "; ".join(row(r) for r in sorted(
      (r for r in results.values() if r["method"] == m), key=lambda r: r["lr"])) for m in METHODS]
  failed = [k for k, v in checks.items() if not v]
  measured = " | ".join(parts) + (f". Failed checks: {', '.join(failed)}." if failed else ". All checks passed.")
  return held, checks, measured


def _plot(out: Path, config: Config, results: dict, logs: dict, runs: list, steps: np.ndarray) -> list[str]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(14.4, 3.8))
  grid = np.linspace(min(config.learning_rates), max(config.learning_rates), 200)
  for ax, key, title in ((axes[0], "trace", "tr(G) at the end"), (axes[1], "lambda_max", "lambda_max(G) at the end"),
                         (axes[2], "beta_l1", "||u * v||_1 at the end")):
    for method, marker in (("sgd", "o"), ("gd", "s")):
      rs = sorted((r for r in results.values() if r["method"] == method), key=lambda r: r["lr"])
      ax.plot([r["lr"] for r in rs], [r[key] for r in rs], marker=marker, label=method.upper())
      diverged = [r["lr"] for r in rs if not r["converged"]]
      if diverged:
        ax.scatter(diverged, np.zeros(len(diverged)), marker="x", color="red", zorder=3,
                   label=f"{method.upper()} not converged")
    if key != "beta_l1":
      ax.plot(grid, 2.0 / grid, "k--", lw=1, label="2/eta")
      ax.set_ylim(0, 1.3 * max([r[key] for r in results.values() if r["converged"]] + [1.0]))
    ax.set_xlabel("learning rate eta")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out / "sharpness_vs_lr.png", dpi=110)
  plt.close(fig)

  loss_series, trace_series = {}, {}
  for r, (method, lr) in enumerate(runs):
    label = f"{method} {lr:g}"
    loss_series[label] = (steps, np.clip(logs["train_loss"][:, r], 1e-30, 1e6))
    trace_series[label] = (steps, np.clip(logs["trace"][:, r], 0, 1e3))
  p2 = _report.plot_curves(out / "training.png", [
      {"series": loss_series, "xlabel": "step", "ylabel": "train loss", "logy": True, "title": "training loss"},
      {"series": trace_series, "xlabel": "step", "ylabel": "tr(G)", "title": "tr(G) during training"},
  ])
  return ["sharpness_vs_lr.png", p2.name]
