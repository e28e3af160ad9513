"""benchmarks/immunization_seeds.py: the aggregate recomputed from the committed runs equals the committed summary,
and its numbers follow from each run's result.json by hand."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDIES = [ROOT / "benchmarks" / "results" / name for name in ("immunization_full", "immunization_digits8_full")]


def _load():
  spec = importlib.util.spec_from_file_location("immunization_seeds", ROOT / "benchmarks" / "immunization_seeds.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("runs", STUDIES, ids=[p.name for p in STUDIES])
def test_summary_reproduces_committed_file_and_hand_values(runs, tmp_path, monkeypatch):
  dirs = [runs, runs / "seed1", runs / "seed2", runs / "model_seed1"]
  if not all((d / "result.json").exists() for d in dirs):
    pytest.skip(f"committed immunization runs absent under {runs}")
  out = tmp_path / "summary.json"
  monkeypatch.chdir(ROOT)
  monkeypatch.setattr(sys, "argv", ["immunization_seeds.py", str(out)] + [str(d.relative_to(ROOT)) for d in dirs])
  _load().main()
  got = json.loads(out.read_text())
  assert got == json.loads((runs / "seeds_summary.json").read_text())
  # By hand: MSGR over the valid pairs = mean of the per-pair SGRs at sgr_step, from result.json alone.
  for d, run in zip(dirs, got["runs"]):
    m = json.loads((d / "result.json").read_text())["metrics"]
    for arm in run["arms"]:
      sgrs = []
      for pair in m["valid_pairs"]:
        attack, c = pair.split("/")
        ref, val = m[f"erased/{attack}/acc_at_sgr_{c}"], m[f"{arm}/{attack}/acc_at_sgr_{c}"]
        sgrs.append((ref - val) / ref)
      assert run["arms"][arm]["msgr_valid"] == pytest.approx(np.mean(sgrs), abs=1e-12)
      # collateral damage during the attack: the erased-only model's other-digit accuracy minus the arm's, at sgr_step
      drop = np.mean([m[f"erased/{a}/others_acc_at_sgr"] - m[f"{arm}/{a}/others_acc_at_sgr"]
                      for a in ("relearn", "lora")])
      assert run["arms"][arm]["others_drop_under_attack"] == pytest.approx(drop, abs=1e-12)
  vals = [r["arms"]["mima"]["msgr_valid"] for r in got["runs"]]
  assert got["aggregate"]["mima"]["msgr_valid"]["mean"] == pytest.approx(np.mean(vals))
  assert got["aggregate"]["mima"]["msgr_valid"]["std"] == pytest.approx(np.std(vals, ddof=1))
