"""Sampler speed: one jitted ``lax.scan`` vs a Python loop of jitted steps vs op-by-op eager execution.

Command (about 10 minutes on a 2-core laptop CPU, most of it in the eager runs)::

  python benchmarks/sampler_speed.py            # tiny UNet, batch 64, 10/28/50 Euler steps
  python benchmarks/sampler_speed.py --tiny     # seconds; what CI runs

Writes ``benchmarks/results/sampler_speed.json`` (``sampler_speed_tiny.json`` with ``--tiny``).

What is compared, on the same tiny UNet (:class:`jaxgen.nn.UNet`, class-conditional) and the same Euler grid:

* ``scan``: the whole sampler ``jax.jit(odeint(...))`` — one XLA program, one dispatch;
* ``loop``: a Python ``for`` over time steps calling a jitted Euler step (the PyTorch-pipeline pattern);
* ``eager``: ``jax.disable_jit()`` — every primitive dispatched one by one.

Expected: ``scan`` is not slower than ``loop`` (time ratio <= 1.0; on CPU with a model this size the per-step
dispatch overhead is small, so expect a ratio close to 1) and at least 3x faster than ``eager``. Times exclude
compilation (reported separately); each variant is timed ``--repeats`` times, interleaved, and the median is kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from jaxgen.core import ode
from jaxgen.nn import UNet

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="tiny model, batch and step counts (CI)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", type=Path, default=None)
  args = parser.parse_args(argv)

  if args.tiny:
    model, batch, step_counts = UNet(channels=(8, 16), attention_levels=(), norm_groups=4), 4, (2, 4)
  else:
    model, batch, step_counts = UNet(), 64, (10, 28, 50)
  x0 = jax.random.normal(jax.random.key(0), (batch, 28, 28, 1))
  labels = jnp.arange(batch, dtype=jnp.int32) % 10
  params = model.init(jax.random.key(1), x0, jnp.zeros((batch,)), labels)
  num_params = sum(p.size for p in jax.tree.leaves(params))

  def velocity(params, t, x):
    return model.apply(params, x, jnp.broadcast_to(t, (x.shape[0],)), labels)

  euler_step = jax.jit(lambda p, t0, t1, x: ode.euler_step(lambda t, y: velocity(p, t, y), t0, t1, x))

  results = {}
  for num_steps in tqdm(step_counts, desc="step counts"):
    ts = ode.uniform_grid(num_steps)
    scan_sampler = jax.jit(lambda p, x: ode.odeint(lambda t, y: velocity(p, t, y), x, ts, "euler"))

    def run_scan():
      return scan_sampler(params, x0)

    def run_loop():
      x = x0
      for i in range(num_steps):
        x = euler_step(params, ts[i], ts[i + 1], x)
      return x

    def run_eager():
      with jax.disable_jit():
        x = x0
        for i in range(num_steps):
          x = ode.euler_step(lambda t, y: velocity(params, t, y), ts[i], ts[i + 1], x)
        return x

    compile_scan = _timed(run_scan)
    compile_loop = _timed(run_loop)
    times = {"scan": [], "loop": [], "eager": []}
    for _ in range(args.repeats):
      times["scan"].append(_timed(run_scan))
      times["loop"].append(_timed(run_loop))
    times["eager"].append(_timed(run_eager))  # one eager run: it is the slow baseline
    med = {k: statistics.median(v) for k, v in times.items()}
    max_diff = float(jnp.max(jnp.abs(run_scan() - run_loop())))
    results[str(num_steps)] = {
        "seconds": med,
        "images_per_second": {k: batch / v for k, v in med.items()},
        "scan_over_loop_time_ratio": med["scan"] / med["loop"],
        "eager_over_scan_time_ratio": med["eager"] / med["scan"],
        "first_call_seconds_incl_compile": {"scan": compile_scan, "loop": compile_loop},
        "max_abs_diff_scan_vs_loop": max_diff,
        "all_times": times,
    }
  held_scan = all(r["scan_over_loop_time_ratio"] <= 1.0 for r in results.values())
  held_eager = all(r["eager_over_scan_time_ratio"] >= 3.0 for r in results.values())
  report = {
      "benchmark": "sampler_speed",
      "tiny": args.tiny,
      "model": f"UNet(channels={tuple(model.channels)}), {num_params} parameters",
      "batch": batch,
      "results_by_steps": results,
      "targets": {"scan_over_loop_time_ratio": "<= 1.0", "eager_over_scan_time_ratio": ">= 3.0"},
      "held": {"scan_not_slower_than_loop": held_scan, "scan_3x_faster_than_eager": held_eager},
      "environment": {"jax": jax.__version__, "backend": jax.default_backend(),
                      "device": str(jax.devices()[0]), "machine": platform.machine(),
                      "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
  }
  out = args.out or RESULTS / ("sampler_speed_tiny.json" if args.tiny else "sampler_speed.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"{'steps':>6} {'scan img/s':>11} {'loop img/s':>11} {'eager img/s':>12} {'scan/loop':>10} {'eager/scan':>11}")
  for k, r in results.items():
    ips = r["images_per_second"]
    print(f"{k:>6} {ips['scan']:11.1f} {ips['loop']:11.1f} {ips['eager']:12.2f} "
          f"{r['scan_over_loop_time_ratio']:10.3f} {r['eager_over_scan_time_ratio']:11.1f}")
  print(f"wrote {out}")
  return report


if __name__ == "__main__":
  main()
