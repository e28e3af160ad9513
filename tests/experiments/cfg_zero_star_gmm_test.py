"""cfg-zero-star-gmm at toy size: files, metric structure, and the scale invariance it demonstrates."""

import json

import pytest

from jaxgen import experiments


def test_tiny_run(tmp_path):
  config = experiments.make_config("cfg-zero-star-gmm", quick=True, num_samples=400, ed_samples=200, num_seeds=1,
                                   bias_sweep=(0.0, 3.0), zero_steps_sweep=(0, 1, 2))
  result = experiments.load("cfg-zero-star-gmm").run(config, tmp_path, progress=False)
  for name in ("result.json", "report.md", "metrics.jsonl", "gmm_samples.png", "zero_init_turning_point.png"):
    assert (tmp_path / name).is_file(), name
  m = json.loads((tmp_path / "result.json").read_text())["metrics"]
  assert m == result["metrics"]
  # Invariant 2 of the spec: CFG-Zero* does not see a rescaled unconditional branch (same samples up to float32
  # rounding amplified over 20 steps, so the same ED to 1 %; CFG moves by a factor of 4 below).
  assert m["ed_E2_misscale_w3"]["cfg-zero-star"] == pytest.approx(m["ed_E1_w3"]["cfg-zero-star"], rel=1e-2)
  assert m["ed_E2_misscale_w3"]["optimized-scale"] == pytest.approx(m["ed_E1_w3"]["optimized-scale"], rel=1e-2)
  # ...while plain CFG does.
  assert m["ed_E2_misscale_w3"]["cfg"] > m["ed_E1_w3"]["cfg"]
  # At w = 1 without zero-init every rule is the conditional velocity: identical samples.
  assert m["ed_E1_w1"]["cfg"] == pytest.approx(m["ed_E1_w1"]["optimized-scale"], abs=1e-6)
  assert set(m["t0_relative_error_by_bias"]) == {"w=1", "w=3"}
  assert m["t0_relative_error_by_bias"]["w=1"]["0"] == pytest.approx(0.0, abs=1e-5)
  assert len(m["ed_E5_by_zero_steps"]["w=1"]) == 3


def test_bad_config_raises(tmp_path):
  config = experiments.make_config("cfg-zero-star-gmm", quick=True, zero_steps_sweep=(0, 30))
  with pytest.raises(ValueError, match="zero_steps_sweep"):
    experiments.load("cfg-zero-star-gmm").run(config, tmp_path, progress=False)
