"""Tests for the colide experiment (CoLiDE-EV/NV vs DAGMA: noise levels, heteroscedastic graphs, Sachs)."""

import json

import numpy as np
import pytest

from jaxgen.experiments import reproduce

# d = 6, n = 200, T = 2, check_every = 100: the shapes of the benchmark's tiny mode, so the compiled CoLiDE programs
# are shared when both tests run in one session.
_TOY = dict(n=200, noise_d=6, noise_variances=(1.0, 4.0), graph_kinds=("er",), graph_sizes=(6,), num_seeds=1,
            sachs=False, s_schedule=(1.0, 0.9), warm_iters=200, final_iters=300, check_every=100)


def test_toy_run_writes_files_and_consistent_results(tmp_path):
  result = reproduce("colide", quick=True, out_dir=tmp_path, progress=False, **_TOY)
  run_dir = tmp_path / "colide"
  for name in ("config.json", "result.json", "run.json", "report.md", "metrics.jsonl", "shd_vs_noise.png"):
    assert (run_dir / name).exists(), name
  saved = json.loads((run_dir / "result.json").read_text())
  assert saved["experiment"] == "colide" and isinstance(saved["held"], bool)
  assert saved["held"] == result["held"] == saved["metrics"]["noise_claim_held"]   # no Sachs part here
  shd = saved["metrics"]["noise_shd"]
  assert set(shd) == {"dagma", "colide-ev", "colide-nv"} and set(shd["dagma"]) == {"1.0", "4.0"}
  assert set(saved["metrics"]["graphs"]) == {"er4_d6"}
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert len(records) == 3 * (2 + 1)
  for r in records:
    assert 0 <= r["shd"] <= 6 * 5 and 0.0 <= r["tpr"] <= 1.0 and np.isfinite(r["sigma_mean"])
  noise_rows = [r for r in records if r["study"] == "noise" and r["method"] == "colide-ev"]
  assert [r["shd"] for r in noise_rows] == [shd["colide-ev"]["1.0"], shd["colide-ev"]["4.0"]]
  assert "Noise-level study" in (run_dir / "report.md").read_text()
  # Seed-deterministic: a second run gives the same result.json.
  reproduce("colide", quick=True, out_dir=tmp_path / "again", progress=False, **_TOY)
  assert json.loads((tmp_path / "again" / "colide" / "result.json").read_text()) == saved


def test_config_validation(tmp_path):
  with pytest.raises(ValueError, match="graph_kinds"):
    reproduce("colide", quick=True, out_dir=tmp_path, progress=False, graph_kinds=("ba",))
  with pytest.raises(ValueError, match="noise_variances"):
    reproduce("colide", quick=True, out_dir=tmp_path, progress=False, noise_variances=())


@pytest.mark.slow
def test_quick_preset_reproduces_sachs(tmp_path):
  result = reproduce("colide", quick=True, out_dir=tmp_path, progress=False)
  sachs = result["metrics"]["sachs"]
  assert sachs["colide-nv"]["shd"] <= 13 and sachs["colide-ev"]["shd"] <= 14     # spec §1.6 C
  assert isinstance(result["held"], bool)
