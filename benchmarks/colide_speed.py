"""CoLiDE fit time: the jitted JAX engine vs a straightforward NumPy loop of the same schedule (d = 20, n = 1000).

Command (about 1-2 minutes on a 2-core laptop CPU, most of it in the NumPy baseline)::

  python benchmarks/colide_speed.py            # d = 20, n = 1000, ER4, Gaussian EV noise, default schedule
  python benchmarks/colide_speed.py --tiny     # seconds; what CI runs

Writes ``benchmarks/results/colide_speed.json`` (``colide_speed_tiny.json`` with ``--tiny``).

The baseline is written here, in the official code's style (github.com/SAMiatto/colide ``model.py``): float64
NumPy arithmetic, ``scipy.linalg.inv`` and one Python-loop iteration per Adam step, with the same domain guard,
restarts, convergence test and schedule (CoLiDE defaults: lambda 0.05, s = (1, .9, .8, .7), 2e4/2e4/2e4/7e4
steps, lr 3e-4, check every 1000). :func:`jaxgen.causal.colide_fit` runs the whole path as one jitted call in
float64; it is timed after a warm-up call on the same shapes (compilation time is reported separately). Both
variants (EV, NV) are timed on the same data; both must give the same thresholded graph.

Expected: the JAX fit is >= 5x faster than the NumPy loop (the loop is dominated by per-call NumPy/SciPy
overhead on 20 x 20 matrices), with identical thresholded graphs. The raw ``W`` agree to ~1e-15 over short runs;
over the full schedule rounding-level differences can move one convergence check (relative objective change
within 1e-6) by a chunk of 1000 steps, so ``adam_steps`` and ``W`` may differ slightly (``jax_us_per_step`` vs
``numpy_us_per_step`` compares the per-step cost). Measured (shared 2-core CPU, load ~11): 6.5x (EV) and 6.6x (NV).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np
import scipy.linalg as sla
from tqdm.auto import tqdm

RESULTS = Path(__file__).resolve().parent / "results"


def numpy_colide(X: np.ndarray, variant: str, *, lambda1: float, s_schedule, warm_iters: int, final_iters: int,
                 lr: float, check_every: int, mu_init: float = 1.0, mu_factor: float = 0.1, beta1: float = 0.99,
                 beta2: float = 0.999, eps: float = 1e-8, tol: float = 1e-6, w_init: np.ndarray | None = None,
                 progress: bool = False):
  """The reference algorithm in plain NumPy: one Python iteration per Adam step. Returns ``(W, sigma, steps)``.

  ``w_init``: warm start (the reference ``colide_nv.fit(w_init=...)``); sigma then starts from its residuals.
  """
  X = np.array(X, dtype=np.float64)            # a copy: the caller's array is not centred in place
  n, d = X.shape
  eye = np.eye(d)
  X -= X.mean(axis=0, keepdims=True)
  cov = X.T @ X / n
  W_est = np.zeros((d, d)) if w_init is None else np.array(w_init, dtype=np.float64)
  col_std = np.linalg.norm(X @ (eye - W_est), axis=0) / np.sqrt(n)
  sig_est = np.min(col_std) if variant == "ev" else col_std

  def sigma_of(W):
    dif = eye - W
    R = dif.T @ (cov @ dif)
    return np.sqrt(np.trace(R) / d) if variant == "ev" else np.sqrt(np.diag(R))

  def objective(W, sigma, mu, s):
    dif = eye - W
    R = dif.T @ (cov @ dif)
    if variant == "ev":
      score = 0.5 * np.trace(R) / sigma + 0.5 * sigma * d
    else:
      score = (np.trace(np.diag(1.0 / sigma) @ R) + np.sum(sigma)) / 2.0
    h = -np.linalg.slogdet(s * eye - W * W)[1] + d * np.log(s)
    return mu * (score + lambda1 * np.abs(W).sum()) + h

  def minimize(W, sigma, mu, max_iter, s, lr, bar):
    obj_prev, opt_m, opt_v, grad = 1e16, 0.0, 0.0, None
    for it in range(1, max_iter + 1):
      M = sla.inv(s * eye - W * W) + 1e-16
      while np.any(M < -1e-6):
        if it == 1 or s <= 0.9:
          return W, sigma, False, it
        W += lr * grad
        lr *= 0.5
        if lr <= 1e-16:
          return W, sigma, True, it
        W -= lr * grad
        sigma = sigma_of(W)
        M = sla.inv(s * eye - W * W) + 1e-16
      if variant == "ev":
        g_score = -mu * cov @ (eye - W) / sigma
      else:
        g_score = -mu * (cov @ (eye - W) @ np.diag(1.0 / sigma))
      g = g_score + mu * lambda1 * np.sign(W) + 2 * W * M.T
      opt_m = opt_m * beta1 + (1 - beta1) * g
      opt_v = opt_v * beta2 + (1 - beta2) * g ** 2
      grad = (opt_m / (1 - beta1 ** it)) / (np.sqrt(opt_v / (1 - beta2 ** it)) + eps)
      W -= lr * grad
      sigma = sigma_of(W)
      if it % check_every == 0 or it == max_iter:
        obj_new = objective(W, sigma, mu, s)
        bar.update(check_every if it % check_every == 0 else it % check_every)
        if np.abs((obj_prev - obj_new) / obj_prev) <= tol:
          return W, sigma, True, it
        obj_prev = obj_new
    return W, sigma, True, max_iter

  s_list, mu, steps = [float(s) for s in s_schedule], mu_init, 0
  T = len(s_list)
  with tqdm(total=(T - 1) * warm_iters + final_iters, desc=f"numpy {variant}", disable=not progress,
            leave=False) as bar:
    for k in range(T):
      lr_k, ok = lr, False
      iters = final_iters if k == T - 1 else warm_iters
      while not ok:
        W_tmp, sig_tmp, ok, taken = minimize(W_est.copy(), np.copy(sig_est), mu, iters, s_list[k], lr_k, bar)
        steps += taken
        if not ok:
          lr_k *= 0.5
          s_list[k] += 0.1
      W_est, sig_est = W_tmp, sig_tmp
      mu *= mu_factor
  return W_est, sig_est, steps


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="d = 6, n = 200, 2 outer steps of 300/500 Adam steps")
  parser.add_argument("--repeats", type=int, default=3, help="timed JAX fits per variant (median kept)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", type=Path, default=None)
  parser.add_argument("--progress", action="store_true")
  args = parser.parse_args(argv)
  with jax.enable_x64(True):        # float64 like the NumPy loop (scoped: does not leak into a calling test)
    return _run(args)


def _run(args) -> dict:
  from jaxgen import causal

  if args.tiny:
    d, n = 6, 200
    cfg = causal.CoLiDEConfig(s_schedule=(1.0, 0.9), warm_iters=300, final_iters=500, check_every=100)
  else:
    d, n = 20, 1000
    cfg = causal.CoLiDEConfig()
  k_graph, k_data = jax.random.split(jax.random.key(args.seed))
  W_true = np.asarray(causal.random_dag(k_graph, d, 4 * d, "er"))
  X = np.asarray(causal.sample_linear_sem(k_data, W_true, n, "gaussian", 1.0), np.float64)

  results = {}
  for variant in ("ev", "nv"):
    start = time.perf_counter()
    fit = causal.colide_fit(X, cfg, variant)
    jax.block_until_ready(fit.W)
    first_call = time.perf_counter() - start
    times = []
    for _ in range(max(1, args.repeats)):
      start = time.perf_counter()
      fit = causal.colide_fit(X, cfg, variant)
      jax.block_until_ready(fit.W)
      times.append(time.perf_counter() - start)
    jax_time = statistics.median(times)

    start = time.perf_counter()
    W_np, sigma_np, np_steps = numpy_colide(
        X, variant, lambda1=cfg.lambda1, s_schedule=cfg.s_schedule, warm_iters=cfg.warm_iters,
        final_iters=cfg.final_iters, lr=cfg.lr, check_every=cfg.check_every, mu_init=cfg.mu_init,
        mu_factor=cfg.mu_factor, beta1=cfg.beta1, beta2=cfg.beta2, eps=cfg.adam_eps, tol=cfg.rel_tol,
        progress=args.progress)
    numpy_time = time.perf_counter() - start

    dag_np = causal.threshold_to_dag(W_np, cfg.w_threshold)
    jax_steps = int(np.sum(np.asarray(fit.info.iters)))
    metrics_jax = causal.graph_metrics(W_true, fit.W_dag)
    results[variant] = {
        "jax_fit_s": jax_time,
        "jax_fit_times_s": times,
        "jax_first_call_s (incl. compile)": first_call,
        "numpy_fit_s": numpy_time,
        "speedup_numpy_over_jax": numpy_time / jax_time,
        "adam_steps_jax": jax_steps,
        "adam_steps_numpy": int(np_steps),
        "jax_us_per_step": 1e6 * jax_time / max(jax_steps, 1),
        "numpy_us_per_step": 1e6 * numpy_time / max(int(np_steps), 1),
        "same_thresholded_graph": bool(np.array_equal(dag_np != 0, fit.W_dag != 0)),
        "max_abs_diff_W": float(np.max(np.abs(np.asarray(fit.W) - W_np))),
        "max_abs_diff_sigma": float(np.max(np.abs(np.asarray(fit.sigma) - sigma_np))),
        "shd_vs_truth": metrics_jax["shd"],
    }
    print(f"{variant}: jax {jax_time:.3f} s, numpy {numpy_time:.3f} s, speed-up {numpy_time / jax_time:.1f}x, "
          f"same graph {results[variant]['same_thresholded_graph']}, max|dW| {results[variant]['max_abs_diff_W']:.2e}")

  held = {
      "jax_5x_faster_than_numpy": all(r["speedup_numpy_over_jax"] >= 5.0 for r in results.values()),
      "same_thresholded_graph": all(r["same_thresholded_graph"] for r in results.values()),
  }
  report = {
      "benchmark": "colide_speed",
      "tiny": bool(args.tiny),
      "setup": {"d": d, "n": n, "graph": "ER4", "noise": "gaussian, variance 1", "seed": args.seed,
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg._asdict().items()},
                "dtype": "float64", "repeats": args.repeats},
      "results": results,
      "held": held,
      "environment": {"jax": jax.__version__, "numpy": np.__version__, "backend": jax.default_backend(),
                      "python": platform.python_version(), "machine": platform.machine(),
                      "processor": platform.processor(),
                      "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
  }
  out = args.out or RESULTS / ("colide_speed_tiny.json" if args.tiny else "colide_speed.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(json.dumps(held))
  return report


if __name__ == "__main__":
  main()
