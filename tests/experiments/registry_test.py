"""Experiment registry, the reproduce runner and the mnist-mlp template."""

import json

import pytest

from jaxgen import experiments
from jaxgen.experiments import mnist_mlp


def test_registry_lists_template():
  assert "mnist-mlp" in experiments.names()
  module = experiments.load("mnist-mlp")
  assert module is mnist_mlp
  assert module.Config.quick().num_steps < module.Config.full().num_steps


def test_unknown_names_and_fields_raise():
  with pytest.raises(ValueError, match="unknown experiment 'nope'"):
    experiments.load("nope")
  with pytest.raises(ValueError, match="unknown config fields"):
    experiments.make_config("mnist-mlp", quick=True, not_a_field=3)


def test_make_config_applies_seed_and_overrides():
  config = experiments.make_config("mnist-mlp", quick=True, seed=4, num_steps=7)
  assert (config.seed, config.num_steps) == (4, 7)


def test_reproduce_writes_the_run_folder(tmp_path):
  result = experiments.reproduce("mnist-mlp", quick=True, out_dir=tmp_path, progress=False, num_steps=60,
                                 checkpoint_every=30, eval_every=30, hidden=(32,))
  run = tmp_path / "mnist-mlp"
  for name in ("config.json", "metrics.jsonl", "result.json", "report.md", "loss_curve.png"):
    assert (run / name).is_file(), name
  saved = json.loads((run / "result.json").read_text())
  assert saved["experiment"] == "mnist-mlp" and saved["claim"] == mnist_mlp.CLAIM
  assert saved["metrics"]["steps"] == 60
  assert isinstance(saved["held"], bool) and saved["held"] == (saved["metrics"]["test_accuracy"] >= 0.95)
  # 60 steps of a small MLP already beat chance by far; a broken pipeline would sit near 0.1.
  assert saved["metrics"]["test_accuracy"] > 0.6
  assert result["metrics"] == saved["metrics"]
  assert "wall_time_s" in json.loads((run / "run.json").read_text())
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["30", "60"]

  # --resume with the same config continues from the last checkpoint (here: already finished).
  again = experiments.reproduce("mnist-mlp", quick=True, out_dir=tmp_path, progress=False, num_steps=60,
                                checkpoint_every=30, eval_every=30, hidden=(32,), resume=True)
  assert json.loads((run / "run.json").read_text())["resumed_from_step"] == 60
  assert again["metrics"]["test_accuracy"] == saved["metrics"]["test_accuracy"]
  with pytest.raises(ValueError, match="different config"):
    experiments.reproduce("mnist-mlp", quick=True, out_dir=tmp_path, progress=False, num_steps=61, resume=True)


def test_reproduce_all_writes_index(tmp_path, monkeypatch):
  calls = []

  def fake_reproduce(name, **kwargs):
    calls.append(name)
    if name == "broken":
      raise RuntimeError("boom")
    return {"experiment": name, "held": True, "claim": "c", "measured": "m", "metrics": {"acc": 0.5},
            "wall_time_s": 1.0}

  monkeypatch.setattr(experiments.registry, "reproduce", fake_reproduce)
  monkeypatch.setattr(experiments.registry, "_EXPERIMENTS", (
      experiments.registry.ExperimentInfo("ok-one", "x", "first"),
      experiments.registry.ExperimentInfo("broken", "y", "second")))
  results = experiments.reproduce_all(out_dir=tmp_path, progress=False)
  assert calls == ["ok-one", "broken"]
  assert [r["status"] for r in results] == ["ok", "error: RuntimeError: boom"]
  index = (tmp_path / "index.md").read_text()
  assert "| ok-one | ok | yes | m |" in index and "[report](ok-one/report.md)" in index
  assert "| broken | error: RuntimeError: boom | no |" in index


def test_same_seed_gives_identical_result_json(tmp_path):
  kwargs = dict(quick=True, progress=False, num_steps=20, checkpoint_every=20, eval_every=20, hidden=(16,))
  experiments.reproduce("mnist-mlp", out_dir=tmp_path / "a", **kwargs)
  experiments.reproduce("mnist-mlp", out_dir=tmp_path / "b", **kwargs)
  a = (tmp_path / "a" / "mnist-mlp" / "result.json").read_text()
  assert a == (tmp_path / "b" / "mnist-mlp" / "result.json").read_text()
  experiments.reproduce("mnist-mlp", out_dir=tmp_path / "c", seed=1, **kwargs)
  assert a != (tmp_path / "c" / "mnist-mlp" / "result.json").read_text()


@pytest.mark.slow
def test_quick_preset_reaches_target(tmp_path):
  result = experiments.reproduce("mnist-mlp", quick=True, out_dir=tmp_path, progress=False)
  assert result["metrics"]["test_accuracy"] >= 0.95
  assert result["held"]


def test_nested_overrides_with_dots():
  config = experiments.make_config("flow-mnist", quick=True, **{"model.width": 64, "dataset": "fashion_mnist"})
  assert config.model.width == 64
  assert config.model.dataset == config.classifier.dataset == "fashion_mnist"
  with pytest.raises(ValueError, match="unknown config fields"):
    experiments.make_config("flow-mnist", quick=True, **{"model.nope": 1})
  with pytest.raises(ValueError, match="not a nested config"):
    experiments.make_config("flow-mnist", quick=True, **{"seed.x": 1})
