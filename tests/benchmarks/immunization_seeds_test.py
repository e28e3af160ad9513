"""benchmarks/immunization_seeds.py: the aggregate recomputed from the committed runs equals the committed summary,
and its numbers follow from each run's result.json by hand."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "benchmarks" / "results" / "immunization_full"
DIRS = [RUNS, RUNS / "seed1", RUNS / "seed2", RUNS / "model_seed1"]


def _load():
  spec = importlib.util.spec_from_file_location("immunization_seeds", ROOT / "benchmarks" / "immunization_seeds.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.skipif(not all((d / "result.json").exists() for d in DIRS), reason="committed immunization runs absent")
def test_summary_reproduces_committed_file_and_hand_values(tmp_path, monkeypatch):
  out = tmp_path / "summary.json"
  monkeypatch.chdir(ROOT)
  monkeypatch.setattr(sys, "argv", ["immunization_seeds.py", str(out)] + [str(d.relative_to(ROOT)) for d in DIRS])
  _load().main()
  got = json.loads(out.read_text())
  assert got == json.loads((RUNS / "seeds_summary.json").read_text())
  # By hand: MSGR over the valid pairs = mean of the per-pair SGRs at sgr_step, from result.json alone.
  for d, run in zip(DIRS, got["runs"]):
    m = json.loads((d / "result.json").read_text())["metrics"]
    for arm in ("imma", "mima", "mima_fo"):
      sgrs = []
      for pair in m["valid_pairs"]:
        attack, c = pair.split("/")
        ref, val = m[f"erased/{attack}/acc_at_sgr_{c}"], m[f"{arm}/{attack}/acc_at_sgr_{c}"]
        sgrs.append((ref - val) / ref)
      assert run["arms"][arm]["msgr_valid"] == pytest.approx(np.mean(sgrs), abs=1e-12)
  vals = [r["arms"]["mima"]["msgr_valid"] for r in got["runs"]]
  assert got["aggregate"]["mima"]["msgr_valid"]["mean"] == pytest.approx(np.mean(vals))
  assert got["aggregate"]["mima"]["msgr_valid"]["std"] == pytest.approx(np.std(vals, ddof=1))
