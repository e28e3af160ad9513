"""benchmarks/immunization_single_concept.py: recomputed from the committed runs it equals the committed summary, and
its criteria follow from each run's result.json by hand."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "benchmarks" / "results" / "immunization_digits8_single"
DIRS = [RUNS / f"lam{lam}" for lam in (1, 5, 20)]


def _load():
  spec = importlib.util.spec_from_file_location("single", ROOT / "benchmarks" / "immunization_single_concept.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.skipif(not all((d / "result.json").exists() for d in DIRS), reason="committed single-concept runs absent")
def test_summary_reproduces_committed_file_and_hand_values(tmp_path, monkeypatch):
  out = tmp_path / "summary.json"
  monkeypatch.chdir(ROOT)
  monkeypatch.setattr(sys, "argv", ["x", str(out)] + [str(d.relative_to(ROOT)) for d in DIRS])
  _load().main()
  got = json.loads(out.read_text())
  assert got == json.loads((RUNS / "summary.json").read_text())
  for d, run in zip(DIRS, got["runs"]):
    m = json.loads((d / "result.json").read_text())["metrics"]
    for attack, a in run["attacks"].items():
      erased, imma = m[f"erased/{attack}/acc_curve_3"], m[f"imma/{attack}/acc_curve_3"]
      assert a["mean_acc_ratio"] == pytest.approx(np.mean(imma) / np.mean(erased))
      i100 = got["steps"].index(100)
      assert a["sgr_at_100"] == pytest.approx((erased[i100] - imma[i100]) / erased[i100], abs=1e-3)  # rounded curves
      assert a["passes"] == (a["mean_acc_ratio"] <= 0.5 and a["sgr_at_100"] >= 0.5 and a["others_drop_step0"] <= 0.1)


def test_refuses_a_multi_concept_run(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "result.json").write_text(json.dumps({"metrics": {}, "config": {"concepts": [3, 8], "sgr_step": 100}}))
  with pytest.raises(SystemExit, match="single-concept"):
    _load().one_run(run)
