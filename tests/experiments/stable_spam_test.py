"""Tests for the stable-spam experiment (tiny LLaMA, Adam / SPAM / Stable-SPAM x fp32 / INT4)."""

import json

import numpy as np
import pytest

from jaxgen.experiments import make_config, reproduce
from jaxgen.experiments import stable_spam as experiment

_TOY = dict(d_model=16, num_layers=1, num_heads=2, mlp_dim=32, context=16, batch_size=4, num_steps=20,
            eval_every=10, eval_batches=1, group_size=64, reset_interval=10, spam_warmup_steps=3,
            spam_clip_delay=2, spike_window=5)


# slow: ~1-2 min on 2 cores; the default run executes the same pipeline through its colab in fast mode
# (tests/colabs_test.py). This test's finer assertions run with `pytest -m slow`.
@pytest.mark.slow
def test_toy_run_writes_files_and_finite_results(tmp_path):
  config = make_config("stable-spam", quick=True, **_TOY)
  result = reproduce("stable-spam", quick=True, out_dir=tmp_path, progress=False, **_TOY)
  run_dir = tmp_path / "stable-spam"
  for name in ("config.json", "result.json", "run.json", "report.md", "metrics.jsonl", "val_loss.png",
               "grad_norm.png"):
    assert (run_dir / name).exists(), name
  saved = json.loads((run_dir / "result.json").read_text())
  assert saved["experiment"] == "stable-spam"
  assert isinstance(saved["held"], bool)
  assert saved["plots"] == ["val_loss.png", "grad_norm.png"]
  runs = saved["metrics"]["runs"]
  expected = {f"{o}/{p}" for o in config.optimizers for p in config.precisions}
  assert set(runs) == expected == {"adam/fp32", "spam/fp32", "stable-spam/fp32",
                                   "adam/int4", "spam/int4", "stable-spam/int4"}
  for label, summary in runs.items():
    assert summary["all_finite"], label
    assert np.isfinite(summary["final_val_loss"]), label
    assert summary["final_val_loss"] < np.log(65) + 0.5, label
    assert summary["loss_spikes"] >= 0
    curve = saved["metrics"]["val_curves"][label]
    assert [s for s, _ in curve] == [0, 10, 20]
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  train_recs = [r for r in records if r["run"] == "stable-spam/int4" and "loss" in r]
  assert [r["step"] for r in train_recs] == list(range(1, 21))
  assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in train_recs)
  assert result["held"] == saved["held"]


def test_count_spikes():
  losses = np.ones(20)
  assert experiment.count_spikes(losses, 1.5, 5) == 0
  losses[10] = 2.0
  losses[15] = np.nan
  assert experiment.count_spikes(losses, 1.5, 5) == 2


def test_config_validation(tmp_path):
  with pytest.raises(ValueError, match="optimizers"):
    reproduce("stable-spam", quick=True, out_dir=tmp_path, progress=False, optimizers=("sgd",))
  with pytest.raises(ValueError, match="eval_every"):
    reproduce("stable-spam", quick=True, out_dir=tmp_path, progress=False, num_steps=30, eval_every=7)


@pytest.mark.slow
def test_quick_preset(tmp_path):
  result = reproduce("stable-spam", quick=True, out_dir=tmp_path, progress=False)
  assert all(s["all_finite"] for s in result["metrics"]["runs"].values())
  assert isinstance(result["held"], bool)
