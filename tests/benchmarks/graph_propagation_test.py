"""The graph-propagation benchmark (jaxgen vs PyG APPNP) runs in its tiny mode; skipped without torch/PyG."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "graph_propagation.py"


def test_tiny_run_writes_json(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("torch_geometric")
  spec = importlib.util.spec_from_file_location("graph_propagation", BENCH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  out = tmp_path / "gp.json"
  report = module.main(["--tiny", "--epochs", "2", "--rounds", "1", "--out", str(out)])
  saved = json.loads(out.read_text())
  assert saved["benchmark"] == "graph_propagation" and saved["tiny"]
  results = saved["results"]
  assert set(results) == {"jaxgen_dense", "jaxgen_sparse_features", "pyg_appnp", "pyg_appnp_1thread"}
  assert all(r["ms_per_epoch_median"] > 0 for r in results.values())
  # Ratios are against the faster PyG setting.
  assert min(results[k]["time_ratio_to_pyg_median"] for k in ("pyg_appnp", "pyg_appnp_1thread")) == 1.0
  # Both implementations compute the same APPNP propagation.
  assert saved["propagation_max_abs_diff_vs_pyg"] < 1e-4
  assert report["held"].keys() == {"ratio_le_1", "ratio_le_1_sparse_features"}
