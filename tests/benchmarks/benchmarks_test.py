"""The sampler benchmark runs in its tiny mode and writes a well-formed JSON."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "sampler_speed.py"


def _load():
  spec = importlib.util.spec_from_file_location("sampler_speed", BENCH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# slow: ~100 s on 2 cores (XLA compiles of the UNet sampler); runs with `pytest -m slow`.
@pytest.mark.slow
def test_tiny_run_writes_json(tmp_path):
  out = tmp_path / "speed.json"
  report = _load().main(["--tiny", "--repeats", "1", "--out", str(out)])
  saved = json.loads(out.read_text())
  assert saved["benchmark"] == "sampler_speed" and saved["tiny"]
  assert set(saved["results_by_steps"]) == {"2", "4"}
  for row in saved["results_by_steps"].values():
    assert row["images_per_second"]["scan"] > 0 and row["scan_over_loop_time_ratio"] > 0
    # The scanned sampler and the Python loop of jitted steps compute the same thing.
    assert row["max_abs_diff_scan_vs_loop"] < 1e-4
  assert report["held"].keys() == {"scan_not_slower_than_loop", "scan_3x_faster_than_eager"}


def _load_named(name):
  path = BENCH.parent / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_guidance_overhead_tiny_run(tmp_path):
  out = tmp_path / "overhead.json"
  _load_named("guidance_overhead").main(["--tiny", "--repeats", "1", "--out", str(out)])
  saved = json.loads(out.read_text())
  assert saved["benchmark"] == "guidance_overhead" and len(saved["results"]) == 2
  for row in saved["results"]:
    assert row["cfg_zero_star_over_cfg_time_ratio"] > 0 and row["num_zero_steps"] == 1


def test_optimizer_step_tiny_run(tmp_path):
  out = tmp_path / "opt.json"
  _load_named("optimizer_step").main(["--tiny", "--repeats", "2", "--out", str(out)])
  saved = json.loads(out.read_text())
  assert set(saved["results"]) == {"adamw", "spam", "stable_spam"}
  assert saved["results"]["adamw"]["time_ratio_to_adamw"] == 1.0
  assert all(r["ms_per_step"] > 0 for r in saved["results"].values())
