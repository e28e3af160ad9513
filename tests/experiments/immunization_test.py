"""Tests for the immunization experiment: closed-form erasure, config validation, a tiny end-to-end run (slow)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.experiments import immunization as exp
from jaxgen.immunization import imma

TINY_MODEL = exp.ModelConfig(hidden_size=32, depth=1, num_steps=20)


def _random_params(config=TINY_MODEL):
  """The DiT at init with every leaf perturbed (its zero-initialised output layers would make v == 0)."""
  module = exp.build_module(config)
  params = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,)), None,
                                jnp.zeros((1, 2, config.context_dim)))
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return module, treedef.unflatten([l + 0.3 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])


def test_erasure_maps_concepts_to_null_and_keeps_every_other_token():
  _, params = _random_params()
  kv = exp._kv_paths(params)
  assert len(kv) == 2 * TINY_MODEL.depth
  erased, _ = exp.erase_concepts(TINY_MODEL, params, (3, 8), kv)
  bos, table = exp.token_table(TINY_MODEL)
  before = {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(l)
            for p, l in jax.tree_util.tree_flatten_with_path(params)[0]}
  after = {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(l)
           for p, l in jax.tree_util.tree_flatten_with_path(erased)[0]}
  for name, w0 in before.items():
    if name not in kv:  # only the K/V kernels change
      np.testing.assert_array_equal(after[name], w0)
      continue
    w0, w1 = w0.reshape(w0.shape[0], -1), after[name].reshape(w0.shape[0], -1)
    scale = np.abs(table @ w0).max()
    for concept in (3, 8):  # the concept token now has the null prompt's keys/values
      np.testing.assert_allclose(table[concept] @ w1, table[exp.NULL_TOKEN] @ w0, atol=1e-4 * scale)
    for tok in (0, 5, 9, exp.NULL_TOKEN, exp.SPARE_TOKEN):
      np.testing.assert_allclose(table[tok] @ w1, table[tok] @ w0, atol=1e-4 * scale)
    np.testing.assert_allclose(bos @ w1, bos @ w0, atol=1e-4 * scale)
    assert not np.allclose(w1, w0)


def test_losses_split_and_distillation_is_zero_at_reference():
  module, params = _random_params()
  model = exp.TokenFlowModel(TINY_MODEL, module, params, [])
  _, concept_loss, pres_loss = exp._losses(model)
  theta, rest = imma.split_params(params, exp.UPPER)
  batch = {"x": jax.random.normal(jax.random.key(2), (3, 28, 28, 1)), "tok": jnp.array([0, 1, exp.NULL_TOKEN])}
  frozen = {"rest": rest, "ref_u": theta}
  assert float(pres_loss(theta, frozen, batch, jax.random.key(0))) == 0.0
  assert float(concept_loss(theta, frozen, batch, jax.random.key(0))) > 0.0


@pytest.mark.parametrize("change, match", [
    ({"concepts": ()}, "empty"),
    ({"concepts": (3, 10)}, "concepts"),
    ({"concepts": (-1,)}, "concepts"),
    ({"concepts": (3, 3)}, "distinct"),
    ({"lora_rank": 0}, "lora_rank"),
    ({"lora_rank": 17}, "lora_rank"),
    ({"lora_targets": "cross_attn/(key|value)/kernel", "lora_rank": 17}, "lora_rank"),
    ({"lora_targets": "nothing_here"}, "lora_targets"),
    ({"attack_targets": "("}, "attack_targets"),
    ({"attack_targets": "nothing_here"}, "attack_targets"),
    ({"attack_targets": "cross_attn/query"}, "K/V kernels"),
    ({"attack_targets": "(cross_attn|mlp_0)/"}, "outside cross-attention"),
    ({"arms": ("imma",)}, "erased"),
    ({"attacks": ("bogus",)}, "attacks"),
    ({"eval_steps": (0, 30)}, "eval_steps"),
    ({"sgr_step": 75}, "sgr_step"),
])
def test_bad_config_raises(change, match, tmp_path):
  config = dataclasses.replace(exp.Config.quick(), **change)
  with pytest.raises(ValueError, match=match):
    exp.run(config, tmp_path, progress=False)


def test_presets():
  quick, full = exp.Config.quick(), exp.Config.full()
  exp._validate(quick)
  exp._validate(full)
  # quick trains a smaller, shorter-lived base model (it must fit `reproduce all --quick`); same data and context
  assert dataclasses.replace(quick.model, num_steps=full.model.num_steps, hidden_size=full.model.hidden_size,
                             depth=full.model.depth) == full.model
  assert quick.model.num_steps < full.model.num_steps and quick.model.hidden_size < full.model.hidden_size
  # full: the attack that re-learns on the erased-only model (every cross-attention leaf), unrolled bilevel scheme
  assert full.sgr_step == 200 and full.attack_steps == 300 and full.scheme == "unrolled"
  assert full.attack_targets == exp.UPPER and full.relearn_lr == 3e-3


def test_lower_level_matches_attack_targets():
  """IMMA's phi and MIMA's delta set are the leaves the re-learning attack adapts (K/V merged, the rest meaned)."""
  paths = exp._param_paths(TINY_MODEL)
  phi = exp._select(paths, exp.UPPER, "attack_targets")
  assert all("cross_attn/" in p for p in phi) and len(phi) == 8 * TINY_MODEL.depth   # q/k/v/out kernels + biases
  kv = [p for p in paths if p.endswith(("cross_attn/key/kernel", "cross_attn/value/kernel"))]
  assert len(kv) == 2 * TINY_MODEL.depth
  assert set(kv) <= set(phi)


TINY = dict(model=TINY_MODEL, arms=exp.ARMS, immunize_steps=4, attack_steps=4, record_every=2, eval_steps=(0, 2, 4),
            sgr_step=2, samples_per_concept=8, samples_per_other=2, chunk=2, sample_steps=2, immunize_pool=24)


@pytest.mark.slow
def test_tiny_end_to_end_run_is_seed_deterministic(tmp_path):
  from jaxgen.experiments import _classifier

  config = dataclasses.replace(exp.Config.quick(), classifier=_classifier.ClassifierConfig(num_steps=20), **TINY)
  a = exp.run(config, tmp_path / "a", progress=False)
  b = exp.run(config, tmp_path / "b", progress=False)
  assert (tmp_path / "a" / "result.json").read_text() == (tmp_path / "b" / "result.json").read_text()
  result = json.loads((tmp_path / "a" / "result.json").read_text())
  for arm in exp.ARMS:
    for attack in exp.ATTACKS:
      assert len(result["metrics"][f"{arm}/{attack}/acc_curve_3"]) == 3
  for plot in a["plots"]:
    assert (tmp_path / "a" / plot).exists()
  assert "MIMA vs IMMA" in (tmp_path / "a" / "report.md").read_text()
  del b


def _fake_curves(config, acc_at_sgr, others=0.9):
  """Attack curves without training: ``acc_at_sgr[arm][concept]`` at ``sgr_step``, 0 before, 1 after."""
  def rows(a):
    return [{"step": s, "acc": 0.0 if s < config.sgr_step else (a if s == config.sgr_step else 1.0), "fd": 1.0,
             "others_acc": others, "others_min": others} for s in config.eval_steps]

  return {arm: {att: {c: rows(acc_at_sgr[arm][c]) for c in config.concepts} for att in config.attacks}
          for arm in config.arms}


VERDICT_CONFIG = dataclasses.replace(exp.Config.quick(), arms=("erased", "imma"), attacks=("relearn", "lora"),
                                     concepts=(3, 8), eval_steps=(0, 25, 50), sgr_step=50)


@pytest.mark.parametrize("erased_acc, others, held, relearns", [
    ({3: 0.9, 8: 0.8}, 0.9, True, True),        # the baseline re-learns, immunized model resists: held
    ({3: 0.5, 8: 0.5}, 0.9, True, True),        # exactly at the threshold
    ({3: 0.9, 8: 0.3}, 0.9, False, False),      # digit 8 is not re-learned even without immunization
    ({3: 0.2, 8: 0.1}, 0.9, False, False),      # weak attack: a large MSGR is not evidence of immunity
    ({3: 0.9, 8: 0.8}, 0.3, False, True),       # base model cannot draw the other digits
])
def test_verdict_needs_a_baseline_that_relearns(erased_acc, others, held, relearns):
  config = VERDICT_CONFIG
  curves = _fake_curves(config, {"erased": erased_acc, "imma": {3: 0.0, 8: 0.0}}, others=others)
  s = exp._summaries(config, curves)
  assert s["imma/msgr_mean_over_attacks"] == pytest.approx(1.0)   # the ratio alone would say "immune"
  got, lines = exp._verdict(config, s)
  assert got is held
  assert s["baseline_relearns"] is relearns
  assert s["baseline_relearn_acc"] == {f"{a}/{c}": erased_acc[c] for a in config.attacks for c in config.concepts}
  text = "\n".join(lines)
  assert ("cannot hold" in text) is (not held)
  assert "re-learns the concept within the attack budget" in text
  for c, v in erased_acc.items():  # the report names every concept the baseline did not re-learn
    assert ("does not re-learn" in text and f"relearn/{c} {v:.2f}" in text) is (not relearns and v < 0.5)


def test_verdict_preconditions_do_not_mask_a_failed_claim():
  config = VERDICT_CONFIG
  # The baseline re-learns, but so does the "immunized" model: MSGR 0, not held.
  curves = _fake_curves(config, {"erased": {3: 0.9, 8: 0.9}, "imma": {3: 0.9, 8: 0.9}})
  s = exp._summaries(config, curves)
  held, _ = exp._verdict(config, s)
  assert s["baseline_relearns"] and s["base_model_valid"] and not held


def test_verdict_leaves_out_void_pairs():
  """A pair whose baseline does not re-learn is void: excluded from the verdict's MSGR, named in the report."""
  config = VERDICT_CONFIG
  curves = _fake_curves(config, {"erased": {3: 0.9, 8: 0.8}, "imma": {3: 0.0, 8: 0.0}})
  for row in curves["erased"]["lora"][8]:                      # LoRA does not re-learn 8 on the erased model
    row["acc"] = 0.1 if row["step"] == config.sgr_step else row["acc"]
  for row in curves["imma"]["lora"][8]:                        # and the immunized model "beats" it by noise
    row["acc"] = 0.2 if row["step"] == config.sgr_step else row["acc"]
  s = exp._summaries(config, curves)
  held, lines = exp._verdict(config, s)
  assert s["imma/lora/sgr"]["8"] == pytest.approx(-1.0)        # the void ratio would drag the plain mean down
  assert s["valid_pairs"] == ["relearn/3", "relearn/8", "lora/3"]
  assert s["imma/msgr_valid"] == pytest.approx(1.0)
  assert held and s["every_concept_tested"] and not s["baseline_relearns"]
  assert "Void" in "\n".join(lines) and "lora/8 0.10" in "\n".join(lines)
  # If no attack re-learns digit 8 at all, 8 is untested: not held whatever the ratios.
  for row in curves["erased"]["relearn"][8]:
    row["acc"] = 0.1 if row["step"] == config.sgr_step else row["acc"]
  s = exp._summaries(config, curves)
  held, lines = exp._verdict(config, s)
  assert not held and not s["every_concept_tested"] and "cannot hold" in "\n".join(lines)


def test_collateral_damage_under_attack_is_reported_not_judged():
  """Other digits at sgr_step (during the attack): summarized and reported, but the verdict's margin stays on step 0."""
  config = VERDICT_CONFIG
  curves = _fake_curves(config, {"erased": {3: 0.9, 8: 0.8}, "imma": {3: 0.0, 8: 0.0}}, others=0.95)
  for att in config.attacks:
    for c, v in ((3, 0.25), (8, 0.35)):                 # immunized model's other digits collapse mid-attack
      for row in curves["imma"][att][c]:
        row["others_acc"] = v if row["step"] == config.sgr_step else row["others_acc"]
  s = exp._summaries(config, curves)
  assert s["imma/relearn/others_acc_at_sgr"] == pytest.approx(0.30)
  assert s["erased/lora/others_acc_at_sgr"] == pytest.approx(0.95)
  assert s["imma/others_drop_under_attack"] == pytest.approx(0.65)
  assert s["imma/others_drop_vs_erased"] == pytest.approx(0.0)
  held, lines = exp._verdict(config, s)
  assert held
  assert "during* the attack, at step 50 (mean over attacks and concepts): erased 0.95, imma 0.30" in "\n".join(lines)
