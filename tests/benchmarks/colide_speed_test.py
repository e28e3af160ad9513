"""The CoLiDE speed benchmark runs in its tiny mode and writes a well-formed JSON."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "colide_speed.py"


def _load():
  spec = importlib.util.spec_from_file_location("colide_speed", BENCH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_tiny_run_writes_json(tmp_path):
  out = tmp_path / "colide_speed.json"
  report = _load().main(["--tiny", "--repeats", "1", "--out", str(out)])
  saved = json.loads(out.read_text())
  assert saved["benchmark"] == "colide_speed" and saved["tiny"]
  assert set(saved["results"]) == {"ev", "nv"}
  for row in saved["results"].values():
    assert row["jax_fit_s"] > 0 and row["numpy_fit_s"] > 0 and row["speedup_numpy_over_jax"] > 0
    # The jitted engine and the NumPy loop run the same algorithm: same steps, same graph, same W.
    assert row["same_thresholded_graph"] and row["adam_steps_jax"] == row["adam_steps_numpy"]
    assert row["max_abs_diff_W"] < 1e-8
  assert report["held"].keys() == {"jax_5x_faster_than_numpy", "same_thresholded_graph"}
