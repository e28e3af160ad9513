"""Tests for the grokking experiment (modular addition, AdamW / perp-AdamW / StableMax / float64 arms)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.experiments import grokking as experiment
from jaxgen.experiments import reproduce

_TOY = dict(modulus=11, hidden=16, num_epochs=20, log_every=10, criterion_epoch=20,
            arms=("perp_adamw", "float64"))   # the other two arms: test_arm_losses and the slow quick-preset test


def test_modular_addition_data():
  train_x, train_y, test_x, test_y = experiment.modular_addition_data(13, 0.4, seed=3)
  assert len(train_y) == round(0.4 * 169) and len(train_y) + len(test_y) == 169
  for x, y in ((train_x, train_y), (test_x, test_y)):
    np.testing.assert_array_equal(y, (x[:, 0] + x[:, 1]) % 13)
  pairs = {tuple(p) for p in np.concatenate([train_x, test_x])}
  assert len(pairs) == 169                                       # a partition of all pairs
  again = experiment.modular_addition_data(13, 0.4, seed=3)
  np.testing.assert_array_equal(again[0], train_x)
  with pytest.raises(ValueError, match="train_fraction"):
    experiment.modular_addition_data(13, 1.0, seed=0)
  with pytest.raises(ValueError, match="modulus"):
    experiment.modular_addition_data(1, 0.5, seed=0)


def test_mlp_is_one_hot_concat_mlp_with_torch_default_init():
  p = 7
  params = experiment.init_mlp(jax.random.key(0), (2 * p, 12, 12, p))
  assert [w.shape for w in params] == [(14, 12), (12, 12), (12, 7)]
  for w in params:   # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert float(jnp.max(jnp.abs(w))) <= 1 / np.sqrt(w.shape[0])
  pairs = jnp.array([[0, 3], [6, 6], [2, 5]])
  x = jnp.concatenate([jax.nn.one_hot(pairs[:, 0], p), jax.nn.one_hot(pairs[:, 1], p)], axis=1)
  expected = jax.nn.relu(jax.nn.relu(x @ params[0]) @ params[1]) @ params[2]
  np.testing.assert_allclose(experiment.mlp_logits(params, pairs, p), expected, rtol=1e-5, atol=1e-6)


def test_toy_run_writes_files_and_curves(tmp_path):
  result = reproduce("grokking", quick=False, out_dir=tmp_path, progress=False, **_TOY)
  run_dir = tmp_path / "grokking"
  for name in ("config.json", "result.json", "run.json", "report.md", "metrics.jsonl", "accuracy.png",
               "collapse.png"):
    assert (run_dir / name).exists(), name
  saved = json.loads((run_dir / "result.json").read_text())
  assert saved["experiment"] == "grokking" and isinstance(saved["held"], bool)
  assert saved["held"] == result["held"]
  curves = saved["metrics"]["curves"]
  assert set(curves) == {"perp_adamw", "float64"}
  for arm, curve in curves.items():
    assert curve["epoch"] == [0, 10, 20], arm
    assert all(0.0 <= a <= 1.0 for a in curve["test_acc"] + curve["sc_fraction"]), arm
    assert all(np.isfinite(curve["weight_norm"])), arm
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert len(records) == 3 * 2
  assert {"train_acc", "test_acc", "train_loss", "sc_fraction", "zero_loss_fraction", "own_zero_loss_fraction",
          "weight_norm"} <= set(records[0])
  # perp_grad keeps the weights much closer to their initial norm than AdamW (here with the float64 loss).
  s = saved["metrics"]
  assert s["perp_adamw/final_weight_norm"] < s["float64/final_weight_norm"]
  assert not saved["held"] and "adamw" in saved["measured"]   # the criteria need the adamw arm


def test_arm_losses_and_optimizers():
  from jaxgen.stability import stablemax_cross_entropy

  config = experiment.Config()
  logits = jax.random.normal(jax.random.key(0), (6, 5)) * 4.0
  labels = jnp.array([0, 1, 2, 3, 4, 0])
  params = [jnp.ones((3, 2))]
  for arm in experiment.ARMS:
    opt, per_example_loss, precision = experiment._arm_setup(arm, config)
    with precision:
      loss = per_example_loss(logits, labels)
      if arm == "stablemax":
        expected = stablemax_cross_entropy(logits, labels)
        assert loss.dtype == jnp.float64
      else:
        expected = -jax.nn.log_softmax(logits.astype(jnp.float64 if arm == "float64" else jnp.float32))[
            jnp.arange(6), labels]
        assert loss.dtype == (jnp.float64 if arm == "float64" else jnp.float32), arm
      np.testing.assert_allclose(loss, expected, rtol=1e-6, err_msg=arm)
      updates, _ = opt.update([jnp.full((3, 2), 0.5)], opt.init(params), params)
      assert np.all(np.isfinite(updates[0])), arm


def test_decide():
  config = experiment.Config()
  base = {"first_grok_epoch": None, "final_test_acc": 0.0, "final_sc_fraction": 0.0, "initial_weight_norm": 13.0,
          "final_weight_norm": 100.0, "final_epoch": 300}
  summary = {"adamw": {**base, "test_acc_at_criterion": 0.001, "max_test_acc_by_criterion": 0.01},
             "perp_adamw": {**base, "first_grok_epoch": 110, "test_acc_at_criterion": 1.0,
                            "max_test_acc_by_criterion": 1.0}}
  assert experiment._decide(config, summary)[0]
  summary["adamw"]["test_acc_at_criterion"] = 0.2
  assert not experiment._decide(config, summary)[0]
  assert not experiment._decide(config, {"adamw": summary["adamw"]})[0]


def test_config_validation(tmp_path):
  with pytest.raises(ValueError, match="arms"):
    reproduce("grokking", quick=True, out_dir=tmp_path, progress=False, arms=("sgd",))
  with pytest.raises(ValueError, match="log_every"):
    reproduce("grokking", quick=True, out_dir=tmp_path, progress=False, num_epochs=30, log_every=7)


@pytest.mark.slow
def test_quick_preset_meets_spec_criteria(tmp_path):
  result = reproduce("grokking", quick=True, out_dir=tmp_path, progress=False)
  assert result["metrics"]["perp_adamw/max_test_acc_by_criterion"] >= 0.99
  assert result["metrics"]["adamw/test_acc_at_criterion"] < 0.05
  assert result["held"]
