"""cfg-zero-star on a toy flow model: every rule and w is scored, files written, identities hold."""

import json

import pytest

from jaxgen import experiments
from jaxgen.experiments import _classifier, _flow_models


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXGEN_CACHE", str(tmp_path / "cache"))


# slow: ~1-2 min on 2 cores; the default run executes the same pipeline through its colab in fast mode
# (tests/colabs_test.py). This test's finer assertions run with `pytest -m slow`.
@pytest.mark.slow
def test_tiny_run(tmp_path):
  config = experiments.make_config(
      "cfg-zero-star", quick=True,
      model=_flow_models.FlowModelConfig(width=32, depth=1, num_steps=20, checkpoint_every=10, batch_size=32),
      classifier=_classifier.ClassifierConfig(channels=(4, 8), feature_dim=16, num_steps=30, batch_size=32),
      early_step=10, sample_steps=(4,), ws=(1.0, 3.0), samples_per_class=3)
  result = experiments.load("cfg-zero-star").run(config, tmp_path / "run", progress=False)
  saved = json.loads((tmp_path / "run" / "result.json").read_text())
  assert saved["held"] == result["held"]
  rows = saved["metrics"]["rows"]
  assert len(rows) == 2 * 1 * 4 * 2  # checkpoints x step counts x rules x ws
  by = {(r["checkpoint"], r["rule"], r["w"]): r for r in rows}
  for ckpt in ("early", "final"):
    # w = 1 is the conditional velocity for CFG and the optimized scale alike: identical samples.
    assert by[(ckpt, "cfg", 1.0)]["fd"] == pytest.approx(by[(ckpt, "optimized-scale", 1.0)]["fd"], rel=1e-6)
    # zero-init does change the samples.
    assert by[(ckpt, "cfg", 1.0)]["fd"] != by[(ckpt, "zero-init", 1.0)]["fd"]
  assert {r["train_step"] for r in rows} == {10, 20}
  for name in ("fd_vs_w_mnist.png", "optimized_scale_per_step.png", "samples_mnist_early_cfg-zero-star.png"):
    assert (tmp_path / "run" / name).is_file(), name
  stats = saved["metrics"]["scale_statistics_w2"]["mnist/final"]
  assert len(stats["mean"]) == 4 and all(lo <= m <= hi for lo, m, hi in zip(stats["min"], stats["mean"],
                                                                              stats["max"]))


def test_bad_early_step(tmp_path):
  config = experiments.make_config("cfg-zero-star", quick=True, early_step=7)
  with pytest.raises(ValueError, match="early_step"):
    experiments.load("cfg-zero-star").run(config, tmp_path, progress=False)
