"""flow-mnist end to end at toy size: cache, intermediate checkpoints, scoring, run folder."""

import json

import jax
import numpy as np
import pytest

from jaxgen import experiments
from jaxgen.experiments import _classifier, _flow_models, flow_mnist

TINY_MODEL = _flow_models.FlowModelConfig(width=32, depth=1, num_steps=20, checkpoint_every=10, batch_size=32)
TINY_CLASSIFIER = _classifier.ClassifierConfig(channels=(4, 8), feature_dim=16, num_steps=60, batch_size=32)


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
  """One private cache for the module: the tiny models are trained once and reused by every test."""
  path = tmp_path_factory.mktemp("cache")
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("JAXGEN_CACHE", str(path))
    yield path


def test_flow_model_is_cached_and_checkpoints_reload(cache_dir):
  first = _flow_models.train_flow_model(TINY_MODEL, progress=False)
  assert first.step == 20
  entry = next((cache_dir / "flow").iterdir())
  assert sorted(p.name for p in (entry / "checkpoints").iterdir()) == ["10", "20"]
  again = _flow_models.train_flow_model(TINY_MODEL, progress=False)  # loaded, not retrained
  for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  early = _flow_models.load_flow_model(TINY_MODEL, 10, progress=False)
  assert early.step == 10 and all(r["step"] <= 10 for r in early.history)
  assert any(not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(early.params)))
  with pytest.raises(ValueError, match="checkpoint_every"):
    _flow_models.load_flow_model(TINY_MODEL, 7, progress=False)


def test_sampler_shapes_and_determinism():
  model = _flow_models.train_flow_model(TINY_MODEL, progress=False)
  labels = np.array([0, 3, 10])  # 10 = null class (unconditional)
  a = _flow_models.sample(model.velocity_fn(), model.params, labels, jax.random.key(1), num_steps=3, batch_size=2)
  b = _flow_models.sample(model.velocity_fn(), model.params, labels, jax.random.key(1), num_steps=3, batch_size=2)
  assert a.shape == (3, 28, 28, 1) and np.isfinite(a).all()
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="labels"):
    _flow_models.sample(model.velocity_fn(), model.params, labels[None], jax.random.key(1), num_steps=3)


def test_evaluator_scores_real_images_well_and_noise_badly():
  evaluator = _classifier.get_evaluator(TINY_CLASSIFIER, progress=False)
  train_x, train_y, _, _ = _classifier.load_images("mnist")
  real = evaluator.score(train_x[:300], train_y[:300])
  noise = evaluator.score(np.random.default_rng(0).uniform(-1, 1, (300, 28, 28, 1)).astype(np.float32),
                          train_y[:300])
  assert real["fd"] < noise["fd"]
  assert real["class_accuracy"] > 0.5 > noise["class_accuracy"] - 0.2


def test_config_validation():
  with pytest.raises(ValueError, match="arch"):
    _flow_models.FlowModelConfig(arch="transformer")
  with pytest.raises(ValueError, match="dataset"):
    _flow_models.FlowModelConfig(dataset="cifar")


def test_run_writes_report(tmp_path):
  config = experiments.make_config("flow-mnist", quick=True, model=TINY_MODEL, classifier=TINY_CLASSIFIER,
                                   sample_steps=(1, 4), samples_per_class=4)
  result = flow_mnist.run(config, tmp_path / "run", progress=False)
  for name in ("config.json", "result.json", "report.md", "run.json", "samples.png", "fd_accuracy_vs_steps.png",
               "training_loss.png"):
    assert (tmp_path / "run" / name).is_file(), name
  saved = json.loads((tmp_path / "run" / "result.json").read_text())
  assert set(saved["metrics"]["fd_by_steps"]) == {"1", "4"}
  assert saved["held"] == result["held"]
  assert saved["metrics"]["flow_train_steps"] == 20


@pytest.mark.slow
def test_quick_preset_well_above_chance(tmp_path):
  result = experiments.reproduce("flow-mnist", quick=True, out_dir=tmp_path, progress=False)
  assert result["metrics"]["class_accuracy"] >= 0.5
