"""The 8x8-digits setting of the immunization study: presets (spec §1.2/§2.5/§3.4), data scaling, validation."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from jaxgen import data
from jaxgen.experiments import _classifier, registry
from jaxgen.experiments import immunization as base
from jaxgen.experiments import immunization_digits8 as exp


def test_presets_follow_the_spec_toy():
  full, quick = exp.Config.full(), exp.Config.quick()
  assert exp.Config() == full
  base._validate(full)
  base._validate(quick)
  assert isinstance(full, base.Config)
  m = full.model
  assert (m.dataset, m.patch_size, m.hidden_size, m.depth, m.context_dim, m.num_steps) == ("digits8", 4, 64, 2, 16,
                                                                                            4000)
  assert full.classifier.dataset == "digits8"
  # spec §2.5 / §3.4: K/V attacks (re-learning and rank-4 LoRA, Adam 3e-3, 20 images, 300 steps), gap ratio at
  # step 100, truncated scheme with K = 3 SGD 0.03, 600 outer steps, lambda = 20, 128 preservation images
  assert full.attack_targets == full.lora_targets == base.KV_REGEX
  assert (full.relearn_lr, full.lora_lr, full.lora_rank, full.attack_images, full.attack_steps) == (3e-3, 3e-3, 4,
                                                                                                    20, 300)
  assert (full.sgr_step, full.scheme, full.inner_steps, full.inner_lr) == (100, "truncated", 3, 0.03)
  assert (full.immunize_steps, full.lam, full.pres_batch, full.concepts) == (600, 20.0, 128, (3, 8))
  assert quick.model == dataclasses.replace(m, num_steps=2000)
  assert "immunization-digits8" in registry.names()
  assert registry.make_config("immunization-digits8", quick=False, seed=3).seed == 3


def test_lower_level_is_the_kv_kernels():
  paths = base._param_paths(exp.MODEL)
  phi = base._select(paths, exp.Config().attack_targets, "attack_targets")
  assert len(phi) == 2 * exp.MODEL.depth and all(p.endswith(("key/kernel", "value/kernel")) for p in phi)
  assert all(paths[p] == (16, 4, 16) for p in phi)        # d_c x heads x head_dim (H = 64)


def test_images_are_scaled_as_in_the_spec():
  train_x, train_y, test_x, test_y = _classifier.load_images("digits8")
  ds = data.load_digits8()
  assert train_x.shape == (1437, 8, 8, 1) and test_x.shape == (360, 8, 8, 1) and train_x.dtype == np.float32
  np.testing.assert_array_equal(train_x[..., 0], ds.train_images / 8.0 - 1.0)       # v / 8 - 1 (spec §1.2)
  np.testing.assert_array_equal(test_y, ds.test_labels)
  assert train_x.min() == -1.0 and train_x.max() == 1.0


@pytest.mark.parametrize("change, match", [
    ({"classifier": _classifier.ClassifierConfig(dataset="mnist")}, "classifier.dataset"),
    ({"model": dataclasses.replace(exp.MODEL, patch_size=3)}, "patch_size"),
    ({"model": dataclasses.replace(exp.MODEL, dataset="cifar")}, "model.dataset"),
])
def test_bad_config_raises(change, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    exp.run(dataclasses.replace(exp.Config.quick(), **change), tmp_path, progress=False)


def test_too_few_images_per_concept_raises():
  # digit 8 has 144 training images: 20 for the attacker + 130 for the immunizer do not fit
  with pytest.raises(ValueError, match="immunize_pool"):
    base._data(dataclasses.replace(exp.Config(), immunize_pool=130))
  attack, pools, pres, _ = base._data(exp.Config())
  assert {c: (attack[c].shape[0], pools[c].shape[0]) for c in (3, 8)} == {3: (20, 120), 8: (20, 120)}
  assert not np.isin(pres["y"], (3, 8)).any() and pres["x"].shape[0] == 1437 - 155 - 144   # every other image


@pytest.mark.slow  # ~2 min on 2 cores, almost all XLA compilation; the colab's fast run covers the same pipeline
def test_tiny_end_to_end_run(tmp_path):
  """The whole pipeline at toy size on the 8x8 digits: files written, curves complete, report names the setting."""
  tiny_model = dataclasses.replace(exp.MODEL, hidden_size=16, num_steps=10)
  config = dataclasses.replace(
      exp.Config(), model=tiny_model, classifier=dataclasses.replace(exp.CLASSIFIER, num_steps=10),
      immunize_steps=2, chunk=2, attack_steps=2, record_every=1, eval_steps=(0, 1, 2), sgr_step=1,
      samples_per_concept=4, samples_per_other=1, sample_steps=2)
  result = exp.run(config, tmp_path, progress=False)
  stored = json.loads((tmp_path / "result.json").read_text())
  assert stored["experiment"] == "immunization-digits8" and stored["claim"] == exp.CLAIM
  assert result["held"] == stored["held"]
  for arm in config.arms:
    for attack in config.attacks:
      assert len(stored["metrics"][f"{arm}/{attack}/acc_curve_8"]) == 3
  report = (tmp_path / "report.md").read_text()
  assert "8x8-digits toy" in report and "IMMA (joint: one copy on both concepts)" in report
  assert set(stored["metrics"]["mima_beats_imma_joint"]) == {"mima", "mima_fo"}


def test_joint_imma_trains_one_copy_on_the_union_of_the_concept_batches():
  sample = base._sample_fn(5, 7, 0.0)
  pools = np.stack([np.full((9, 8, 8, 1), 3.0, np.float32), np.full((9, 8, 8, 1), 8.0, np.float32)])
  pres = {"x": np.zeros((20, 8, 8, 1), np.float32), "y": np.zeros((20,), np.int32)}
  data = (pools, np.array([3, 8], np.int32), pres)
  key = jax.random.key(0)
  concept, pres_batch = base._union(sample)(key, data)
  per_concept, pres_ref = sample(key, data)
  assert concept["x"].shape == (10, 8, 8, 1) and concept["tok"].shape == (10,)
  np.testing.assert_array_equal(concept["tok"], [3] * 5 + [8] * 5)
  np.testing.assert_array_equal(concept["x"][:, 0, 0, 0], concept["tok"].astype(np.float32))   # image matches token
  np.testing.assert_array_equal(concept["x"], np.asarray(per_concept["x"]).reshape(10, 8, 8, 1))
  np.testing.assert_array_equal(pres_batch["x"], pres_ref["x"])
  base._validate(dataclasses.replace(exp.Config(), arms=("erased", "imma_joint")))
  with pytest.raises(ValueError, match="arms"):
    base._validate(dataclasses.replace(exp.Config(), arms=("erased", "joint")))
