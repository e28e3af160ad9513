"""Guidance overhead: CFG-Zero* vs plain CFG sampling with the same model and grid, in one run.

Command (about 3 minutes on a 2-core laptop CPU)::

  python benchmarks/guidance_overhead.py           # tiny UNet, batch 64, 28 Euler steps, 1 zeroed step
  python benchmarks/guidance_overhead.py --tiny    # seconds; what CI runs

Writes ``benchmarks/results/guidance_overhead.json`` (``guidance_overhead_tiny.json`` with ``--tiny``).

Both samplers are the same jitted ``lax.scan`` (:func:`jaxgen.guidance.guided_sample`) with two network evaluations
per step; CFG-Zero* adds the optimized scale (two reductions over each sample) and skips the network calls of the
zeroed step with ``lax.cond``. Expected: time ratio CFG-Zero* / CFG <= 1.05 (with one of 28 steps skipped it is
usually slightly *below* 1). Also reported: the ratio with ``skip_zeroed_evaluations=False`` (the pure cost of the
optimized scale) and the FlowMLP network, where the network is cheaper and the combinator's share larger.
Variants are timed interleaved, ``--repeats`` times each, median kept; compilation is excluded.
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

from jaxgen import guidance
from jaxgen.core import ode
from jaxgen.nn import FlowMLP, UNet

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _measure(model, batch, num_steps, repeats, num_zero_steps):
  x0 = jax.random.normal(jax.random.key(0), (batch, 28, 28, 1))
  labels = jnp.arange(batch, dtype=jnp.int32) % 10
  params = model.init(jax.random.key(1), x0, jnp.zeros((batch,)), labels)
  ts = ode.uniform_grid(num_steps)
  w = jnp.float32(3.5)

  def make(rule, skip):
    @jax.jit
    def run(params, x0, labels, w):
      v_c, v_u = guidance.class_conditional_velocities(model.apply, params, labels, 10)
      return guidance.guided_sample(v_c, v_u, x0, ts, rule=rule, w=w, num_zero_steps=num_zero_steps,
                                    skip_zeroed_evaluations=skip)

    return lambda: run(params, x0, labels, w)

  variants = {"cfg": make("cfg", True), "cfg-zero-star": make("cfg-zero-star", True),
              "cfg-zero-star-no-skip": make("cfg-zero-star", False)}
  for fn in variants.values():
    _timed(fn)  # compile
  times = {k: [] for k in variants}
  for _ in range(repeats):
    for k, fn in variants.items():
      times[k].append(_timed(fn))
  med = {k: statistics.median(v) for k, v in times.items()}
  return {
      "model": f"{type(model).__name__}, {sum(p.size for p in jax.tree.leaves(params))} parameters",
      "batch": batch, "num_steps": num_steps, "num_zero_steps": num_zero_steps,
      "seconds": med, "images_per_second": {k: batch / v for k, v in med.items()},
      "cfg_zero_star_over_cfg_time_ratio": med["cfg-zero-star"] / med["cfg"],
      "no_skip_over_cfg_time_ratio": med["cfg-zero-star-no-skip"] / med["cfg"],
      "all_times": times,
  }


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", type=Path, default=None)
  args = parser.parse_args(argv)
  if args.tiny:
    cases = [(UNet(channels=(8, 16), attention_levels=(), norm_groups=4), 4, 6), (FlowMLP(width=32, depth=1), 8, 6)]
  else:
    cases = [(UNet(), 64, 28), (FlowMLP(width=512, depth=4), 256, 28)]
  rows = [_measure(model, batch, steps, args.repeats, 1) for model, batch, steps in tqdm(cases, desc="models")]
  report = {
      "benchmark": "guidance_overhead", "tiny": args.tiny, "results": rows,
      "target": "cfg_zero_star_over_cfg_time_ratio <= 1.05",
      "held": all(r["cfg_zero_star_over_cfg_time_ratio"] <= 1.05 for r in rows),
      "environment": {"jax": jax.__version__, "backend": jax.default_backend(), "device": str(jax.devices()[0]),
                      "machine": platform.machine(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
  }
  out = args.out or RESULTS / ("guidance_overhead_tiny.json" if args.tiny else "guidance_overhead.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"{'model':<40} {'CFG img/s':>10} {'CFG-Zero* img/s':>16} {'ratio':>7} {'no-skip ratio':>14}")
  for r in rows:
    ips = r["images_per_second"]
    print(f"{r['model']:<40} {ips['cfg']:10.1f} {ips['cfg-zero-star']:16.1f} "
          f"{r['cfg_zero_star_over_cfg_time_ratio']:7.3f} {r['no_skip_over_cfg_time_ratio']:14.3f}")
  print(f"wrote {out}")
  return report


if __name__ == "__main__":
  main()
