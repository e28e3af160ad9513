"""Optimizer step time: adamw vs SPAM vs Stable-SPAM on a ~10M-parameter pytree, against memory-copy bandwidth.

Command (about 2 minutes on a 2-core laptop CPU)::

  python benchmarks/optimizer_step.py           # ~10.2M parameters in LLaMA-like shapes
  python benchmarks/optimizer_step.py --tiny    # seconds; what CI runs

Writes ``benchmarks/results/optimizer_step.json`` (``optimizer_step_tiny.json`` with ``--tiny``).

Each optimizer's step is ``jit(update + apply_updates)`` with the parameters and optimizer state donated, timed
on the same parameters and gradients, interleaved, ``--repeats`` times (compilation excluded); the median and the
minimum (best of N, least disturbed by other load on a shared machine) are both reported.
Achieved bandwidth counts the bytes an Adam-style step must move at least: read params, grads and both moments,
write params and both moments (7 float32 arrays of the parameter size); it is compared with a same-run jitted
memory copy (read + write one array of the same total size). Expected: ``stable_spam`` <= 1.2x ``adamw`` time;
achieved bytes/s >= 0.5 of the copy bandwidth (the step is memory-bound).

Measured on a quiet 2-core machine (2026-12-03, ``benchmarks/results/optimizer_step.json``): stable_spam 1.33x
adamw (median; 1.38x best-of-N), 0.51 of copy bandwidth; spam 1.22x. The 1.2x target is below what Stable-SPAM's
data flow allows on a memory-bound device once a leaf does not stay in cache between passes: its clip threshold
needs ``max |g|`` (one read of g), the AdaGN norm needs the *clipped* gradient's norm, which depends on that
threshold (a second, dependent read of g), and only then can the Adam-style pass run (the 7 arrays adamw
moves). 9 array passes against 7 is a floor of 9/7 = 1.29x; SPAM's single extra pass (its non-finite check)
measures 1.2x. An ablation without the two reductions ran at 1.03x adamw, and forcing leaf-by-leaf order (so the
second read could hit the 32 MiB L3) measured no gain on XLA:CPU.
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
import optax
from tqdm.auto import tqdm

from jaxgen import optim

RESULTS = Path(__file__).resolve().parent / "results"


def llama_like_shapes(vocab: int, width: int, hidden: int, layers: int) -> dict:
  shapes = {"embed": (vocab, width), "final_norm": (width,)}
  for i in range(layers):
    for name in ("q", "k", "v", "o"):
      shapes[f"layer{i}/{name}"] = (width, width)
    shapes[f"layer{i}/gate"] = (width, hidden)
    shapes[f"layer{i}/up"] = (width, hidden)
    shapes[f"layer{i}/down"] = (hidden, width)
    shapes[f"layer{i}/norm1"] = (width,)
    shapes[f"layer{i}/norm2"] = (width,)
  return shapes


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", type=Path, default=None)
  args = parser.parse_args(argv)
  shapes = llama_like_shapes(512, 64, 128, 2) if args.tiny else llama_like_shapes(8192, 384, 1024, 4)
  keys = jax.random.split(jax.random.key(0), len(shapes))
  params = {n: 0.02 * jax.random.normal(k, s, jnp.float32) for (n, s), k in zip(shapes.items(), keys)}
  grads = {n: 1e-3 * jax.random.normal(jax.random.fold_in(k, 1), s, jnp.float32)
           for (n, s), k in zip(shapes.items(), keys)}
  num_params = sum(p.size for p in params.values())

  optimizers = {
      "adamw": optax.adamw(1e-3, weight_decay=0.1),
      "spam": optim.spam(1e-3, weight_decay=0.1),
      "stable_spam": optim.stable_spam(1e-3, weight_decay=0.1, total_steps=1000),
  }
  runners = {}
  for name, tx in optimizers.items():
    def step(params, state, grads, tx=tx):
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1))
    box = {"params": jax.tree.map(jnp.copy, params), "state": tx.init(params)}

    def run(jitted=jitted, box=box):
      box["params"], box["state"] = jitted(box["params"], box["state"], grads)
      return box["params"]

    runners[name] = run
  # In-place (donated) read + write of one array as large as the parameters: the memory-bound floor.
  copy = jax.jit(lambda x: x * 1.0001, donate_argnums=0)
  copy_box = {"x": jnp.ones((num_params,), jnp.float32)}

  def run_copy():
    copy_box["x"] = copy(copy_box["x"])
    return copy_box["x"]

  runners["copy"] = run_copy

  for fn in runners.values():
    for _ in range(2):
      _timed(fn)  # compile + warm
  times = {k: [] for k in runners}
  for _ in tqdm(range(args.repeats), desc="optimizer steps"):
    for k, fn in runners.items():
      times[k].append(_timed(fn))
  med = {k: statistics.median(v) for k, v in times.items()}
  best = {k: min(v) for k, v in times.items()}   # best of N: the least disturbed by other load on the machine
  copy_bandwidth = 2 * 4 * num_params / med["copy"]
  copy_bandwidth_best = 2 * 4 * num_params / best["copy"]
  step_bytes = 7 * 4 * num_params
  rows = {k: {"ms_per_step": 1e3 * med[k], "bytes_per_second": step_bytes / med[k],
              "fraction_of_copy_bandwidth": step_bytes / med[k] / copy_bandwidth,
              "time_ratio_to_adamw": med[k] / med["adamw"],
              "best_ms_per_step": 1e3 * best[k],
              "best_fraction_of_copy_bandwidth": step_bytes / best[k] / copy_bandwidth_best,
              "best_time_ratio_to_adamw": best[k] / best["adamw"]} for k in optimizers}
  ss = rows["stable_spam"]
  report = {
      "benchmark": "optimizer_step", "tiny": args.tiny, "num_params": num_params, "num_leaves": len(params),
      "results": rows,
      "copy": {"ms": 1e3 * med["copy"], "bytes_per_second": copy_bandwidth, "best_ms": 1e3 * best["copy"],
               "best_bytes_per_second": copy_bandwidth_best},
      "statistics": "ms_per_step / ratios: median of the interleaved repeats; best_*: minimum over them",
      "targets": {"stable_spam_time_ratio_to_adamw": "<= 1.2", "fraction_of_copy_bandwidth": ">= 0.5"},
      "held": {"stable_spam_within_1.2x_adamw": ss["time_ratio_to_adamw"] <= 1.2,
               "stable_spam_at_least_half_copy_bandwidth": ss["fraction_of_copy_bandwidth"] >= 0.5,
               "best_of_n_stable_spam_within_1.2x_adamw": ss["best_time_ratio_to_adamw"] <= 1.2,
               "best_of_n_stable_spam_at_least_half_copy_bandwidth": ss["best_fraction_of_copy_bandwidth"] >= 0.5},
      "all_times": times,
      "environment": {"jax": jax.__version__, "backend": jax.default_backend(), "device": str(jax.devices()[0]),
                      "machine": platform.machine(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
  }
  out = args.out or RESULTS / ("optimizer_step_tiny.json" if args.tiny else "optimizer_step.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"{num_params} parameters in {len(params)} leaves; copy bandwidth {copy_bandwidth / 1e9:.2f} GB/s")
  print(f"{'optimizer':<12} {'ms/step':>9} {'GB/s':>7} {'of copy':>8} {'vs adamw':>9} | best: {'ms':>7} "
        f"{'of copy':>8} {'vs adamw':>9}")
  for k, r in rows.items():
    print(f"{k:<12} {r['ms_per_step']:9.2f} {r['bytes_per_second'] / 1e9:7.2f} "
          f"{r['fraction_of_copy_bandwidth']:8.2f} {r['time_ratio_to_adamw']:9.2f} | {r['best_ms_per_step']:13.2f} "
          f"{r['best_fraction_of_copy_bandwidth']:8.2f} {r['best_time_ratio_to_adamw']:9.2f}")
  print(f"wrote {out}")
  return report


if __name__ == "__main__":
  main()
