"""Fuzzing the input validation of jaxgen.immunization (FSC learners, LTO, IMMA, MIMA) with hypothesis.

Same contract as ``fuzz_core_test.py``: every generated case raises ``ValueError`` / ``TypeError`` whose message
names the offending argument, or returns the documented result. Covered: the four few-shot learners, task /
support sampling, accuracy by group and DropRatio, the closed-form K/V merge and model merging, LoRA rank checks,
the IMMA / MIMA / LTO configurations (NaN or out-of-range hyper-parameters, empty concept sets, incompatible LoRA
ranks) and the immunization experiment's concept ids. Shapes are tiny. Case counts per function are printed in the
terminal summary.
"""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxgen.immunization import fsc, imma, lto, mima
from tests.reliability._fuzz import FUZZ, finite, raises_clean

SMALL = settings(FUZZ, max_examples=10)
BAD_FLOATS = [math.nan, math.inf, -math.inf, -1.0, -1e-3, 0.0, 0.5, 1.0, 1.5, 1e30]


def _apply(theta, x):
  return jnp.tanh(x @ theta["w"])


THETA = {"w": jax.random.normal(jax.random.key(0), (4, 3))}
XS = jax.random.normal(jax.random.key(1), (4, 4))
YS = jnp.asarray([0, 1, 0, 1])
XQ = jax.random.normal(jax.random.key(2), (3, 4))
POOL = jax.random.normal(jax.random.key(3), (2, 5, 4))          # class-major [n_way, P, D]


def _fsc_cfg(**kw):
  return fsc.FSCConfig(**{"apply_fn": _apply, "n_way": 2, "steps": 2, **kw})


# ----------------------------------------------------------------------------------------------------------------
# fsc


FSC_FAULTS = {
    "label_range": (lambda: ({"y_support": YS.at[3].set(2)}, {}), "y_support"),
    "negative_label": (lambda: ({"y_support": YS.at[0].set(-1)}, {}), "y_support"),
    "missing_class": (lambda: ({"y_support": jnp.zeros(4, jnp.int32)}, {}), "y_support"),
    "float_labels": (lambda: ({"y_support": YS.astype(jnp.float32)}, {}), "y_support"),
    "label_shape": (lambda: ({"y_support": YS[:3]}, {}), "y_support"),
    "empty_support": (lambda: ({"x_support": XS[:0], "y_support": YS[:0]}, {}), "x_support"),
    "query_shape": (lambda: ({"x_query": XQ[:, :3]}, {}), "x_query"),
    "n_way": (lambda: ({}, {"n_way": 0}), "cfg.n_way"),
    "n_way_float": (lambda: ({}, {"n_way": 2.0}), "cfg.n_way"),
    "steps": (lambda: ({}, {"steps": -1}), "cfg.steps"),
    "lr_nan": (lambda: ({}, {"lr": math.nan}), "cfg.lr"),
    "lr_negative": (lambda: ({}, {"lr": -0.1}), "cfg.lr"),
    "scale_inf": (lambda: ({}, {"scale": math.inf}), "cfg.scale"),
    "bias_nan": (lambda: ({}, {"bias": math.nan}), "cfg.bias"),
    "backbone_lr_scale": (lambda: ({}, {"backbone_lr_scale": -1.0}), "cfg.backbone_lr_scale"),
    "grad_mode": (lambda: ({}, {"grad_mode": "exact"}), "cfg.grad_mode"),
    "ok": (lambda: ({}, {}), None),
}


@FUZZ
@given(st.sampled_from(fsc.METHODS), st.sampled_from(sorted(FSC_FAULTS)))
def test_fsc_learners(fuzz_record, method, fault):
  fuzz_record(f"immunization.fsc_{method}")
  make, arg = FSC_FAULTS[fault]
  data, cfg_kw = make()
  args = {"x_support": XS, "y_support": YS, "x_query": XQ, **data}
  call = lambda: fsc.fsc_learner(method)(THETA, args["x_support"], args["y_support"], args["x_query"],  # noqa: E731
                                         _fsc_cfg(**cfg_kw))
  if arg is None or (method == "protonet" and fault == "steps"):   # documented: protonet ignores steps
    logits = call()
    assert logits.shape == (3, 2) and finite(logits)
  else:
    raises_clean(call, arg)


@FUZZ
@given(st.sampled_from(["ProtoNet", "maml", "", "linear"]))
def test_fsc_learner_method(fuzz_record, method):
  fuzz_record("immunization.fsc_learner")
  raises_clean(lambda: fsc.fsc_learner(method), "method")


# ----------------------------------------------------------------------------------------------------------------
# lto: sampling, metrics, config


@FUZZ
@given(st.sampled_from(["k_support", "k_obstruct", "k_shot", "restricted", "pool"]),
       st.sampled_from([-1, 0, 1, 2, 4, 6, 1.5, True]))
def test_sample_task_and_support(fuzz_record, arg, k):
  fuzz_record("immunization.sample_support" if arg == "k_shot" else "immunization.sample_task")
  restricted, pool = jnp.asarray([True, False]), POOL
  if arg == "k_shot":
    call = lambda: lto.sample_support(jax.random.key(0), pool, k)  # noqa: E731
    valid = isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 5
  else:
    kw = {"k_support": 2, "k_obstruct": 2}
    if arg in kw:
      kw[arg] = k
      valid = isinstance(k, int) and not isinstance(k, bool) and k >= 1 and sum(kw.values()) <= 5
    elif arg == "restricted":
      restricted, valid = jnp.ones((3,), bool) if k == 4 else jnp.asarray(True), False
    else:
      pool, valid = POOL[0], False
    call = lambda: lto.sample_task(jax.random.key(0), pool, restricted, **kw)  # noqa: E731
  if valid:
    out = call()
    xs, ys = (out.x_support, out.y_support) if arg != "k_shot" else out
    assert xs.shape[1:] == (4,) and np.bincount(np.asarray(ys)).tolist() == [xs.shape[0] // 2] * 2
  else:
    names = ("k_support", "k_obstruct") if arg in ("k_support", "k_obstruct") else (arg,)
    raises_clean(call, *names)


@FUZZ
@given(st.sampled_from([[], [5], [-1], [0, 1, 2], [0.5], [1], [0, 0]]))
def test_restricted_mask_from_labels(fuzz_record, labels):
  fuzz_record("immunization.restricted_mask_from_labels")
  call = lambda: lto.restricted_mask_from_labels(np.asarray(labels), 3)  # noqa: E731
  if labels in ([1], [0, 0]):
    assert call().sum() == len(set(labels))
  else:
    raises_clean(call, "restricted_labels")


@FUZZ
@given(st.sampled_from(["logits_shape", "targets_range", "targets_dtype", "targets_shape", "groups_shape",
                        "groups_negative", "restricted", "empty", "ok"]))
def test_accuracy_by_group(fuzz_record, fault):
  fuzz_record("immunization.accuracy_by_group")
  logits = np.eye(3)[[0, 1, 2, 1]] + 0.1
  targets, groups, restricted = np.asarray([0, 1, 2, 0]), np.asarray([0, 0, 1]), [0]
  arg = {"logits_shape": "logits", "targets_range": "targets", "targets_dtype": "targets", "targets_shape": "targets",
         "groups_shape": "group_of_label", "groups_negative": "group_of_label",
         "restricted": "restricted_labels"}.get(fault)
  if fault == "logits_shape":
    logits = logits[:, :, None]
  elif fault == "targets_range":
    targets = targets.copy()
    targets[1] = 3
  elif fault == "targets_dtype":
    targets = targets.astype(np.float32)
  elif fault == "targets_shape":
    targets = targets[:2]
  elif fault == "groups_shape":
    groups = groups[:2]
  elif fault == "groups_negative":
    groups = np.asarray([0, -1, 1])
  elif fault == "restricted":
    restricted = [0, 1, 2]
  elif fault == "empty":
    logits, targets = logits[:0], targets[:0]
  call = lambda: lto.accuracy_by_group(logits, targets, restricted, groups)  # noqa: E731
  if arg is not None:
    raises_clean(call, arg)
    return
  out = call()
  if fault == "empty":                                   # documented: an empty subset gets NaN
    assert math.isnan(out["acc_all"]) and out["counts"]["all"] == 0
  else:
    assert out["acc_all"] == 0.75 and out["acc_r"] == 0.5 and out["acc_per_group"] == [2 / 3, 1.0]


@FUZZ
@given(st.sampled_from(["drop_ratio", "format_drop_ratio"]), st.sampled_from(["acc_r0", "acc_o0", "acc_r", "acc_o"]),
       st.sampled_from(BAD_FLOATS + [None, "0.5"]))
def test_drop_ratio(fuzz_record, name, arg, value):
  fuzz_record(f"immunization.{name}")
  accs = {"acc_r0": 0.9, "acc_o0": 0.8, "acc_r": 0.4, "acc_o": 0.7}
  accs[arg] = value
  call = lambda: getattr(lto, name)(*accs.values())  # noqa: E731
  if name == "format_drop_ratio" and value is None and arg in ("acc_r0", "acc_o0"):
    assert call() == "N/A"                               # documented: no "before" round
  elif isinstance(value, float) and 0 <= value <= 1:
    out = call()
    if name == "drop_ratio":
      assert math.isfinite(out[0]) and isinstance(out[1], bool)
    else:
      assert re.fullmatch(r"-?\d+\.\d\d\*?", out), out
  else:
    raises_clean(call, arg)


LTO_FIELDS = {"lambda_r": ([0.0, 2.0], [-1.0, math.nan, math.inf]),
              "lambda_o": ([0.0, 1.0], [-0.5, math.nan, math.inf]),
              "learning_rate": ([1e-3], [0.0, -1e-3, math.nan, math.inf]),
              "restricted_cap": ([None, 5.0, math.inf], [0.0, -1.0, math.nan]),
              "clip_norm": ([None, 1.0], [0.0, -1.0, math.nan]),
              "clamp_restricted": ([None, 1.0], [0.0, math.nan]),
              "method": (["protonet", "maml_like"], ["ProtoNet", "lto"]),
              "fsc": ([], [None, "cfg"])}


@FUZZ
@given(st.sampled_from(sorted(LTO_FIELDS)), st.booleans(), st.data())
def test_lto_config(fuzz_record, field, valid, data):
  fuzz_record("immunization.LTOConfig")
  good, bad = LTO_FIELDS[field]
  valid = valid and bool(good)
  value = data.draw(st.sampled_from(good if valid else bad))
  call = lambda: lto.LTOConfig(**{"fsc": _fsc_cfg(), field: value})  # noqa: E731
  if valid:
    cfg = call()
    loss, (ce_r, ce_o) = lto.lto_outer_loss(THETA, (XS, YS), (XQ, jnp.asarray([0, 1, 1])), jnp.asarray([True, False]),
                                            None, cfg)
    assert finite((loss, ce_r, ce_o))
  else:
    raises_clean(call, field)


@SMALL
@given(st.sampled_from(["n_way", "reps", "restricted_labels", "k_shot"]), st.sampled_from([0, 3, -1, 1.5]))
def test_evaluate_fsc(fuzz_record, arg, value):
  fuzz_record("immunization.evaluate_fsc")
  kw = {"k_shot": 2, "reps": 2, "restricted_labels": [0], "cfg": _fsc_cfg()}
  if arg == "n_way":
    kw["cfg"], names = _fsc_cfg(n_way=3), ("cfg.n_way",)
  elif arg == "restricted_labels":
    kw["restricted_labels"], names = [value, 0] if value != 0 else [0, 1], ("restricted_labels",)
  else:
    kw[arg], names = (value if value != 3 else {"k_shot": 9, "reps": True}[arg]), (arg,)
  raises_clean(lambda: lto.evaluate_fsc(THETA, "protonet", POOL, (XQ, jnp.asarray([0, 1, 1])), jax.random.key(0),
                                         **kw), *names)


# ----------------------------------------------------------------------------------------------------------------
# mima: the closed-form merge and model merging


D_CTX, D_OUT = 4, 3


def _merge_problem(r=6, m=2):
  rng = np.random.default_rng(0)
  return (rng.normal(size=(D_CTX, D_OUT)).astype(np.float32), rng.normal(size=(r, D_CTX)).astype(np.float32),
          rng.normal(size=(m, D_CTX)).astype(np.float32), rng.normal(size=(m, D_OUT)).astype(np.float32))


@FUZZ
@given(st.sampled_from(BAD_FLOATS), st.sampled_from([0, 2, 6]))
def test_kv_merge_ridge(fuzz_record, ridge, rows):
  fuzz_record("immunization.kv_merge")
  w0, c_reg, c_t, v_t = _merge_problem(r=rows)
  call = lambda: mima.kv_merge(w0, c_reg, c_t, v_t, ridge=ridge)  # noqa: E731
  if not (math.isfinite(ridge) and ridge >= 0):
    raises_clean(call, "ridge")
  elif ridge == 0 and rows < D_CTX:                      # C_reg^T C_reg is singular: no silent NaN
    raises_clean(call, "c_reg", "ridge")
  else:
    w = call()
    assert finite(w)
    if ridge < 1e6:                                      # the constraint C_t W = V_t holds
      np.testing.assert_allclose(c_t @ np.asarray(w), v_t, atol=1e-3 * max(1.0, ridge))


@FUZZ
@given(st.sampled_from(["w0_rank", "c_reg_cols", "c_targets_cols", "no_targets", "v_rows", "v_cols",
                        "too_many_targets", "int_dtype"]))
def test_kv_merge_shapes(fuzz_record, fault):
  fuzz_record("immunization.kv_merge")
  w0, c_reg, c_t, v_t = _merge_problem()
  arg = {"w0_rank": "w0", "c_reg_cols": "c_reg", "c_targets_cols": "c_targets", "no_targets": "c_targets",
         "v_rows": "v_targets", "v_cols": "v_targets", "too_many_targets": "c_targets", "int_dtype": "c_reg"}[fault]
  if fault == "w0_rank":
    w0 = w0[None]
  elif fault == "c_reg_cols":
    c_reg = c_reg[:, :2]
  elif fault == "c_targets_cols":
    c_t = c_t[:, :2]
  elif fault == "no_targets":
    c_t, v_t = c_t[:0], v_t[:0]
  elif fault == "v_rows":
    v_t = v_t[:1]
  elif fault == "v_cols":
    v_t = v_t[:, :2]
  elif fault == "too_many_targets":
    c_t, v_t = np.ones((D_CTX + 1, D_CTX), np.float32), np.ones((D_CTX + 1, D_OUT), np.float32)
  else:
    c_reg = c_reg.astype(np.int32)
  raises_clean(lambda: mima.kv_merge(w0, c_reg, c_t, v_t, ridge=1e-3), arg)


@FUZZ
@given(st.sampled_from(["empty", "length", "weight_shape", "context_cols", "ok"]))
def test_kv_merge_from_weights(fuzz_record, fault):
  fuzz_record("immunization.kv_merge_from_weights")
  w0, c_reg, c_t, _ = _merge_problem()
  cs, ws = [c_t[:1], c_t[1:]], [w0 + 0.1, w0 - 0.1]
  arg = {"empty": "c_targets_per_concept", "length": "w_adapted_per_concept",
         "weight_shape": "w_adapted_per_concept[1]", "context_cols": "c_targets_per_concept[0]"}.get(fault)
  if fault == "empty":
    cs, ws = [], []
  elif fault == "length":
    ws = ws[:1]
  elif fault == "weight_shape":
    ws = [ws[0], ws[1][:, :2]]
  elif fault == "context_cols":
    cs = [cs[0][:, :2], cs[1]]
  call = lambda: mima.kv_merge_from_weights(w0, c_reg, cs, ws, ridge=1e-3)  # noqa: E731
  if arg is None:
    w = np.asarray(call())
    np.testing.assert_allclose(c_t[:1] @ w, c_t[:1] @ ws[0], atol=1e-3)   # each concept's rows keep its outputs
  else:
    raises_clean(call, arg, "c_targets_per_concept", "w_adapted_per_concept")


def _kv_params():
  return {"attn": {"k": jnp.ones((D_CTX, D_OUT)), "v": jnp.ones((D_CTX, D_OUT)) * 2}, "mlp": jnp.ones((3,))}


@FUZZ
@given(st.sampled_from(["empty_list", "contexts_count", "kv_paths_str", "kv_paths_empty", "kv_paths_nomatch",
                        "structure", "ok"]), st.integers(1, 3))
def test_merge_params(fuzz_record, fault, num):
  fuzz_record("immunization.merge_params")
  base = _kv_params()
  adapted = [jax.tree.map(lambda x, i=i: x + 0.1 * (i + 1), base) for i in range(num)]
  contexts = jnp.asarray(np.random.default_rng(1).normal(size=(num, 1, D_CTX)), jnp.float32)
  kv_paths, c_reg = ("attn/k", "attn/v"), jnp.eye(D_CTX)
  arg = {"empty_list": "adapted_list", "contexts_count": "contexts", "kv_paths_str": "kv_paths",
         "kv_paths_empty": "kv_paths", "kv_paths_nomatch": "kv_paths", "structure": "adapted_list[0]"}.get(fault)
  if fault == "empty_list":
    adapted = []
  elif fault == "contexts_count":
    contexts = contexts[:num - 1] if num > 1 else jnp.concatenate([contexts, contexts])
  elif fault == "kv_paths_str":
    kv_paths = "attn/k"
  elif fault == "kv_paths_empty":
    kv_paths = ()
  elif fault == "kv_paths_nomatch":
    kv_paths = ("attn/q",)
  elif fault == "structure":
    adapted[0] = {"attn": adapted[0]["attn"]}
  call = lambda: mima.merge_params(base, adapted, kv_paths, contexts, c_reg, ridge=1e-3)  # noqa: E731
  if arg is None:
    merged = call()
    assert jax.tree.structure(merged) == jax.tree.structure(base) and finite(merged)
    np.testing.assert_allclose(merged["mlp"], np.mean([a["mlp"] for a in adapted], axis=0), rtol=1e-6)
  else:
    raises_clean(call, arg)


@FUZZ
@given(st.sampled_from(BAD_FLOATS + [True]), st.sampled_from(["atol", "shape"]))
def test_dedupe_rows(fuzz_record, atol, fault):
  fuzz_record("immunization.dedupe_rows")
  c = np.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  v = np.arange(6.0).reshape(3, 2)
  if fault == "shape":
    raises_clean(lambda: mima.dedupe_rows(c, v[:2]), "c_targets", "v_targets")
  elif isinstance(atol, float) and math.isfinite(atol) and atol >= 0:
    c_out, v_out = mima.dedupe_rows(c, v, atol=atol)
    assert len(c_out) == (1 if atol >= 1.0 else 2) and np.array_equal(v_out[0], v[0])
  else:
    raises_clean(lambda: mima.dedupe_rows(c, v, atol=atol), "atol")


# ----------------------------------------------------------------------------------------------------------------
# imma: LoRA rank checks, parameter partitions, attacks


@FUZZ
@given(st.sampled_from([-1, 0, 1, 2, 3, 4, 1.5, True, np.int32(2)]), st.sampled_from(["attn/k", "attn", "nothing"]))
def test_lora_phi_init_rank(fuzz_record, rank, targets):
  fuzz_record("immunization.lora_phi_init")
  params = _kv_params()                                  # kernels [4, 3]: rank <= 3
  call = lambda: imma.lora_phi_init(jax.random.key(0), params, rank=rank, targets=targets)  # noqa: E731
  positive_int = isinstance(rank, (int, np.integer)) and not isinstance(rank, bool) and rank >= 1
  if not positive_int:
    raises_clean(call, "rank")
  elif targets == "nothing":
    raises_clean(call, "targets")
  elif rank > 3:                                         # not low-rank for a [4, 3] kernel
    raises_clean(call, "rank")
  else:
    phi = call()
    assert set(phi) == ({"attn/k"} if targets == "attn/k" else {"attn/k", "attn/v"})
    merged = imma.lora_phi_apply(params, phi)            # B = 0: the adapted model starts as params
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(params)))


@FUZZ
@given(st.sampled_from(BAD_FLOATS + [None]))
def test_lora_phi_init_alpha(fuzz_record, alpha):
  fuzz_record("immunization.lora_phi_init")
  call = lambda: imma.lora_phi_init(jax.random.key(0), _kv_params(), rank=2, targets="attn/k", alpha=alpha)  # noqa
  if alpha is None or (math.isfinite(alpha) and alpha > 0):
    assert finite(call())
  else:
    raises_clean(call, "alpha")


@FUZZ
@given(st.sampled_from(["rank_mismatch", "unknown_path", "kernel_mismatch"]))
def test_lora_phi_apply(fuzz_record, fault):
  fuzz_record("immunization.lora_phi_apply")
  params = _kv_params()
  phi = imma.lora_phi_init(jax.random.key(0), params, rank=2, targets="attn/k")
  if fault == "rank_mismatch":
    phi = {"attn/k": dataclasses.replace(phi["attn/k"], b=jnp.zeros((3, D_OUT)))}
  elif fault == "unknown_path":
    phi = {"attn/q": phi["attn/k"]}
  else:
    phi = {"attn/v": dataclasses.replace(phi["attn/k"], a=jnp.zeros((D_CTX + 1, 2)))}
  raises_clean(lambda: imma.lora_phi_apply(params, phi), "phi", "params")


@FUZZ
@given(st.sampled_from(["", "^nothing$", (), ("attn/q",), "attn/k", ("attn/k", "mlp")]))
def test_split_params(fuzz_record, targets):
  fuzz_record("immunization.split_params")
  params = _kv_params()
  call = lambda: imma.split_params(params, targets)  # noqa: E731
  if targets in ("attn/k", ("attn/k", "mlp"), ""):     # "" is a regex that matches every path
    selected, rest = call()
    recombined = imma.combine_params(selected, rest)
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(recombined), jax.tree.leaves(params)))
  else:
    raises_clean(call, "targets")


def _attack_loss(p, batch, key):
  return jnp.sum((batch @ p["attn"]["k"]) ** 2)


def _attack_data(key, data):
  return data


@SMALL
@given(st.sampled_from(["relearn_attack", "lora_attack"]), st.sampled_from(["num_steps", "record_every", "lr", "rank"]),
       st.sampled_from([-1, 0, 1, 2, 3, 1.5, math.nan, math.inf]))
def test_attacks(fuzz_record, name, arg, value):
  fuzz_record(f"immunization.{name}")
  kw = {"targets": "attn/k", "num_steps": 2, "lr": 0.01, "record_every": 1}
  if name == "lora_attack":
    kw["rank"] = 2
  if arg == "rank" and name == "relearn_attack":
    arg = "lr"                                            # relearn has no rank
  kw[arg] = value
  is_int = isinstance(value, int) and not isinstance(value, bool)
  valid = {"num_steps": is_int and value >= 0 and value % kw["record_every"] == 0,
           "record_every": is_int and value >= 1 and kw["num_steps"] % value == 0,
           "lr": math.isfinite(value) and value > 0, "rank": is_int and 1 <= value <= 3}[arg]
  call = lambda: getattr(imma, name)(_kv_params(), _attack_loss, _attack_data, jnp.ones((2, D_CTX)),  # noqa: E731
                                     jax.random.key(0), **kw)
  if valid:
    checkpoints, losses = call()
    steps = list(range(0, kw["num_steps"] + 1, kw["record_every"]))
    assert [s for s, _ in checkpoints] == steps and losses.shape == (kw["num_steps"],)
    assert np.all(np.isfinite(losses))
  else:
    raises_clean(call, arg, "num_steps", "record_every")


# ----------------------------------------------------------------------------------------------------------------
# IMMA / MIMA configurations, concept sets


def _loss3(theta, phi, frozen, batch, key):
  return jnp.sum(theta["k"] ** 2)


def _loss2(theta, frozen, batch, key):
  return jnp.sum(theta["k"] ** 2)


CONFIG_FIELDS = {
    "inner_steps": ([1, 3, 2.0], [0, -1, 1.5, True, math.nan, math.inf]),
    "inner_lr": ([0.03, 1.0], [0.0, -0.1, math.nan, math.inf]),
    "outer_lr": ([2e-3], [0.0, -1.0, math.nan, math.inf]),
    "lam": ([0.0, 5.0], [-1.0, math.nan, math.inf]),
    "tau": ([5.0, math.inf, -1.0], [math.nan]),
    "clip": ([1.0, math.inf], [0.0, -1.0, math.nan]),
    "scheme": (["unrolled", "truncated"], ["bilevel", ""]),
    "alt_inner_lr": ([1e-2], [0.0, math.nan]),                 # IMMA only
    "ridge": ([0.0, 1e-3], [-1e-3, math.nan, math.inf]),       # MIMA only
    "kv_paths": ([("k",)], ["k", ()]),                          # MIMA only
}


@FUZZ
@given(st.sampled_from(["IMMAConfig", "MIMAConfig"]), st.sampled_from(sorted(CONFIG_FIELDS)), st.booleans(),
       st.data())
def test_imma_mima_config(fuzz_record, name, field, valid, data):
  fuzz_record(f"immunization.{name}")
  if (name == "IMMAConfig" and field in ("ridge", "kv_paths")) or (name == "MIMAConfig" and field == "alt_inner_lr"):
    field = "lam"
  good, bad = CONFIG_FIELDS[field]
  value = data.draw(st.sampled_from(good if valid else bad))
  if name == "IMMAConfig":
    call = lambda: imma.IMMAConfig(attack_loss=_loss3, pres_loss=_loss2, **{field: value})  # noqa: E731
  else:
    kw = {"kv_paths": ("k",), field: value}
    call = lambda: mima.MIMAConfig(concept_loss=_loss2, pres_loss=_loss2, **kw)  # noqa: E731
  if valid:
    assert call().inner_steps >= 1
  else:
    raises_clean(call, field)


@FUZZ
@given(st.sampled_from([0, -1, 1, 2, 1.5, True, math.nan]))
def test_mima_init_concepts(fuzz_record, num):
  fuzz_record("immunization.mima_init")
  cfg = mima.MIMAConfig(concept_loss=_loss2, pres_loss=_loss2, kv_paths=("k",))
  theta = {"k": jnp.ones((D_CTX, D_OUT))}
  call = lambda: mima.mima_init(theta, num, cfg)  # noqa: E731
  if isinstance(num, int) and not isinstance(num, bool) and num >= 1:
    assert call().deltas["k"].shape == (num, D_CTX, D_OUT)
  else:
    raises_clean(call, "num_concepts")


@FUZZ
@given(st.sampled_from(["mima_outer_loss", "mima_step"]),
       st.sampled_from(["batches_count", "contexts_rank", "no_concepts", "c_reg_cols", "states_count", "ok"]))
def test_mima_concept_sets(fuzz_record, name, fault):
  fuzz_record(f"immunization.{name}")
  cfg = mima.MIMAConfig(concept_loss=lambda th, fr, b, k: jnp.mean((b @ th["k"]) ** 2), pres_loss=_loss2,
                        kv_paths=("k",), inner_steps=1)
  theta = {"k": jnp.ones((D_CTX, D_OUT))}
  num = 2
  contexts = jnp.asarray(np.random.default_rng(2).normal(size=(num, 1, D_CTX)), jnp.float32)
  batches, c_reg = jnp.ones((num, 3, D_CTX)), jnp.eye(D_CTX)
  state = mima.mima_init(theta, num, cfg)
  arg = {"batches_count": "concept_batches", "contexts_rank": "contexts", "no_concepts": "contexts",
         "c_reg_cols": "c_reg", "states_count": "states" if name == "mima_outer_loss" else "state.deltas"}.get(fault)
  if fault == "batches_count":
    batches = batches[:1]
  elif fault == "contexts_rank":
    contexts = contexts[:, 0]
  elif fault == "no_concepts":
    contexts = contexts[:0]
  elif fault == "c_reg_cols":
    c_reg = c_reg[:, :2]
  elif fault == "states_count":
    state = mima.mima_init(theta, num + 1, cfg)
  if name == "mima_outer_loss":
    call = lambda: mima.mima_outer_loss(theta, state.deltas, {}, batches, None, jax.random.key(0), cfg,  # noqa
                                        contexts, c_reg)
  else:
    call = lambda: mima.mima_step(state, {}, batches, None, jax.random.key(0), cfg, contexts, c_reg)  # noqa
  if arg is None:
    out = call()
    assert finite(out[0] if name == "mima_outer_loss" else out[0].theta_u)
  else:
    raises_clean(call, arg)


@SMALL
@given(st.sampled_from([(), (10,), (-1,), (3, 3), (True,), (2.0,), tuple(range(10)), ("3",)]))
def test_experiment_concept_ids(fuzz_record, tmp_path_factory, concepts):
  """The immunization experiment's concept ids: in range, distinct, not empty, not every digit (checked first)."""
  fuzz_record("experiments.immunization.run")
  from jaxgen.experiments import immunization as experiment
  config = dataclasses.replace(experiment.Config.quick(), concepts=concepts)
  out = tmp_path_factory.mktemp("imm")
  raises_clean(lambda: experiment.run(config, out, progress=False), "concepts")
  assert not any(out.iterdir())                          # validated before anything is written


@FUZZ
@given(st.sampled_from(["imma_train", "mima_train", "lto_train", "kv_delta_init"]),
       st.sampled_from(["num_steps", "chunk"]), st.sampled_from([-1, 0, 1.5, True, math.nan, math.inf]))
def test_training_loop_settings(fuzz_record, name, arg, value):
  """Invalid loop settings are rejected before anything is compiled (valid runs are covered by the unit tests)."""
  fuzz_record(f"immunization.{name}")
  theta = {"k": jnp.ones((D_CTX, D_OUT))}
  if name == "kv_delta_init":
    raises_clean(lambda: mima.kv_delta_init(theta, ("q",) if arg == "chunk" else "k"), "kv_paths")
    return
  if value == 0 and (arg == "num_steps" or name == "lto_train"):
    value = -1                                            # 0 steps is valid (nothing to run)
  if name == "imma_train":
    cfg = imma.IMMAConfig(attack_loss=_loss3, pres_loss=_loss2)
    call = lambda: imma.imma_train({}, theta, theta, lambda k, d: (None, None), jax.random.key(0), cfg,  # noqa
                                   **{"num_steps": 1, "chunk": 1, "progress": False, arg: value})
  elif name == "mima_train":
    cfg = mima.MIMAConfig(concept_loss=_loss2, pres_loss=_loss2, kv_paths=("k",))
    call = lambda: mima.mima_train({}, theta, lambda k, d: (None, None), jax.random.key(0), cfg,  # noqa: E731
                                   jnp.ones((1, 1, D_CTX)), jnp.eye(D_CTX),
                                   **{"num_steps": 1, "chunk": 1, "progress": False, arg: value})
  else:
    arg = {"num_steps": "cfg.num_steps", "chunk": "log_every"}[arg]
    cfg = lto.LTOConfig(fsc=_fsc_cfg(), num_steps=value if arg == "cfg.num_steps" else 1)
    kw = {"log_every": value} if arg == "log_every" else {}
    call = lambda: lto.lto_train(THETA, lambda k: None, jax.random.key(0), cfg, **kw)  # noqa: E731
  raises_clean(call, arg)
