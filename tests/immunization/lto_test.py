"""Tests for jaxgen.immunization.lto: metric fixture, DropRatio rule, objective, splits, outer step and loop."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.immunization import fsc, lto

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "immunization"
N_WAY, DIM_IN, PER_CLASS = 4, 5, 6
RESTRICTED = np.array([True, False, True, False])


def _tanh_apply(theta, x):
  return jnp.tanh(x @ theta["w1"] + theta["b1"][None, :]) @ theta["w2"]


def _theta(key, dtype=jnp.float32):
  k1, k2, k3 = jax.random.split(key, 3)
  return {"w1": (jax.random.normal(k1, (DIM_IN, 6)) * 0.7).astype(dtype),
          "b1": (jax.random.normal(k2, (6,)) * 0.1).astype(dtype),
          "w2": (jax.random.normal(k3, (6, 4)) * 0.7).astype(dtype)}


def _pool(key, dtype=jnp.float32):
  """Class-major pool [N_WAY, PER_CLASS, DIM_IN] of a separable toy problem."""
  k1, k2 = jax.random.split(key)
  means = jax.random.normal(k1, (N_WAY, 1, DIM_IN)) * 1.5
  return (means + 0.4 * jax.random.normal(k2, (N_WAY, PER_CLASS, DIM_IN))).astype(dtype)


def _cfg(method="finetune", steps=2, **kwargs):
  return lto.LTOConfig(fsc=fsc.FSCConfig(_tanh_apply, N_WAY, steps=steps, lr=0.2), method=method, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def test_accuracy_by_group_and_drop_ratio_match_reference_fixture():
  d = np.load(FIXTURES / "lto_metrics_case0.npz")
  n_groups = d["accuracies"].shape[1] - 3
  rounds = []
  for r in range(d["logits"].shape[0]):
    got = lto.accuracy_by_group(d["logits"][r], d["targets"], d["restricted_labels"], d["superclass_of_label"])
    accs = [got["acc_all"], got["acc_r"], got["acc_o"], *got["acc_per_group"]]
    counts = [got["counts"]["all"], got["counts"]["r"], got["counts"]["o"], *got["counts"]["per_group"]]
    assert len(got["acc_per_group"]) == n_groups
    np.testing.assert_allclose(accs, d["accuracies"][r], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(counts, d["counts"][r])
    rounds.append(got)
  strings = ["N/A"] + [lto.format_drop_ratio(rounds[0]["acc_r"], rounds[0]["acc_o"], g["acc_r"], g["acc_o"])
                       for g in rounds[1:]]
  assert strings == list(d["drop_ratio_str"])
  assert lto.format_drop_ratio(None, None, 0.5, 0.5) == "N/A"


def test_drop_ratio_edge_cases():
  assert lto.drop_ratio(0.9, 0.8, 0.6, 0.5) == pytest.approx((1.0, False))          # equal drops -> 1
  value, flagged = lto.drop_ratio(0.9, 0.8, 0.4, 0.8)                               # no other-class drop
  assert flagged and value == pytest.approx(50.0)
  value, flagged = lto.drop_ratio(0.9, 0.8, 0.4, 0.85)                              # other classes improved
  assert flagged and value == pytest.approx(50.0)
  assert lto.drop_ratio(0.9, 0.8, 0.5, 0.7) == pytest.approx((4.0, False))
  assert lto.format_drop_ratio(0.9, 0.8, 0.4, 0.8) == "50.00*"


def test_restricted_classes_not_in_the_dataset_raise():
  with pytest.raises(ValueError, match="not classes of the dataset"):
    lto.restricted_mask_from_labels([1, 7], N_WAY)
  with pytest.raises(ValueError, match="at least one"):
    lto.restricted_mask_from_labels([], N_WAY)
  with pytest.raises(ValueError, match="other class"):
    lto.restricted_mask_from_labels(range(N_WAY), N_WAY)
  logits, targets = np.zeros((3, N_WAY)), np.array([0, 1, 2])
  with pytest.raises(ValueError, match="restricted_labels"):
    lto.accuracy_by_group(logits, targets, [N_WAY])
  pool = _pool(jax.random.key(0))
  with pytest.raises(ValueError, match="restricted_labels"):
    lto.evaluate_fsc(_theta(jax.random.key(1)), "protonet", pool, (pool[:, 0], jnp.arange(N_WAY)), jax.random.key(2),
                     2, 1, cfg=fsc.FSCConfig(_tanh_apply, N_WAY), restricted_labels=[9])
  np.testing.assert_array_equal(lto.restricted_mask_from_labels([0, 2], N_WAY), RESTRICTED)


# ---------------------------------------------------------------------------------------------------------------
# Objective and splits
# ---------------------------------------------------------------------------------------------------------------


def test_outer_loss_matches_float64_numpy_reference():
  """ProtoNet learner on a linear backbone: -min(CE_R, cap) + lambda_o CE_O written out in NumPy."""
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, DIM_IN))
  xs, ys = rng.normal(size=(8, DIM_IN)), np.repeat(np.arange(N_WAY), 2)
  xq, yq = rng.normal(size=(12, DIM_IN)), np.tile(np.arange(N_WAY), 3)

  def norm(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)

  protos = np.stack([(xs @ w.T)[ys == c].mean(0) for c in range(N_WAY)])
  logits = 10.0 * norm(xq @ w.T) @ norm(protos).T
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  ce = -logp[np.arange(len(yq)), yq]
  ce_r, ce_o = ce[RESTRICTED[yq]].mean(), ce[~RESTRICTED[yq]].mean()
  with jax.enable_x64(True):
    for cap, lam_r, lam_o in ((None, 1.0, 1.0), (0.5, 2.0, 0.5)):
      cfg = lto.LTOConfig(fsc=fsc.FSCConfig(lambda t, x: x @ t.T, N_WAY), method="protonet", restricted_cap=cap,
                          lambda_r=lam_r, lambda_o=lam_o)
      loss, (got_r, got_o) = lto.lto_outer_loss(jnp.asarray(w), (jnp.asarray(xs), jnp.asarray(ys)),
                                                (jnp.asarray(xq), jnp.asarray(yq)), RESTRICTED, None, cfg)
      expected = -lam_r * (ce_r if cap is None else min(ce_r, cap)) + lam_o * ce_o
      np.testing.assert_allclose([loss, got_r, got_o], [expected, ce_r, ce_o], rtol=1e-12)
      fn_loss, _ = lto.lto_outer_loss(jnp.asarray(w), (jnp.asarray(xs), jnp.asarray(ys)),
                                      (jnp.asarray(xq), jnp.asarray(yq)),
                                      lambda y: jnp.asarray(RESTRICTED)[y], None, cfg)   # a mask function works too
      np.testing.assert_allclose(fn_loss, expected, rtol=1e-12)


def test_task_sets_are_disjoint_and_labelled_by_pool_row():
  ids = jnp.arange(N_WAY * PER_CLASS, dtype=jnp.float32).reshape(N_WAY, PER_CLASS, 1)   # each sample its own id
  task = jax.jit(lambda k: lto.sample_task(k, ids, jnp.asarray(RESTRICTED), 2, 3))(jax.random.key(0))
  s_ids, o_ids = np.asarray(task.x_support[:, 0]).astype(int), np.asarray(task.x_obstruct[:, 0]).astype(int)
  assert len(set(s_ids)) == len(s_ids) == 2 * N_WAY and len(set(o_ids)) == 3 * N_WAY
  assert not set(s_ids) & set(o_ids)                                         # support and obstruct never share
  np.testing.assert_array_equal(s_ids // PER_CLASS, task.y_support)         # label = the pool row it came from
  np.testing.assert_array_equal(o_ids // PER_CLASS, task.y_obstruct)
  np.testing.assert_array_equal(task.restricted, RESTRICTED)
  with pytest.raises(ValueError, match="distinct samples"):
    lto.sample_task(jax.random.key(0), ids, jnp.asarray(RESTRICTED), 4, 3)


@pytest.mark.parametrize("method", ["protonet", "finetune"])
def test_restricted_and_other_terms_never_leak(method):
  """CE_R depends only on restricted-class queries, CE_O only on the others (per-sample backbone)."""
  theta, pool = _theta(jax.random.key(0)), _pool(jax.random.key(1))
  task = lto.sample_task(jax.random.key(2), pool, jnp.asarray(RESTRICTED), 2, 3)
  cfg = _cfg(method)
  is_r = RESTRICTED[np.asarray(task.y_obstruct)]

  def terms(xq):
    _, (ce_r, ce_o) = lto.lto_outer_loss(theta, (task.x_support, task.y_support), (xq, task.y_obstruct),
                                         task.restricted, None, cfg)
    return ce_r, ce_o

  terms = jax.jit(terms)
  base_r, base_o = terms(task.x_obstruct)
  noise = 5.0 * jax.random.normal(jax.random.key(3), task.x_obstruct.shape)
  r_again, o_moved = terms(task.x_obstruct + jnp.where(is_r[:, None], 0.0, noise))      # perturb other queries
  assert float(r_again) == float(base_r) and float(o_moved) != float(base_o)
  r_moved, o_again = terms(task.x_obstruct + jnp.where(is_r[:, None], noise, 0.0))      # perturb restricted ones
  assert float(o_again) == float(base_o) and float(r_moved) != float(base_r)
  g_r = jax.grad(lambda x: terms(x)[0])(task.x_obstruct)
  g_o = jax.grad(lambda x: terms(x)[1])(task.x_obstruct)
  assert np.all(np.asarray(g_r)[~is_r] == 0) and np.any(np.asarray(g_r)[is_r] != 0)
  assert np.all(np.asarray(g_o)[is_r] == 0) and np.any(np.asarray(g_o)[~is_r] != 0)


def test_exact_meta_gradient_of_the_objective_matches_finite_differences():
  with jax.enable_x64(True):
    theta, pool = _theta(jax.random.key(0), jnp.float64), _pool(jax.random.key(1), jnp.float64)
    task = lto.sample_task(jax.random.key(2), pool, jnp.asarray(RESTRICTED), 2, 3)
    cfg = _cfg("finetune", steps=2, restricted_cap=None)

    def loss(t):
      return lto.lto_outer_loss(t, (task.x_support, task.y_support), (task.x_obstruct, task.y_obstruct),
                                task.restricted, None, cfg)[0]

    loss = jax.jit(loss)
    grad = jax.jit(jax.grad(loss))(theta)
    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.key(5), a.shape, jnp.float64), theta)
    eps = 1e-5
    fd = (loss(jax.tree.map(lambda a, d: a + eps * d, theta, direction))
          - loss(jax.tree.map(lambda a, d: a - eps * d, theta, direction))) / (2 * eps)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Outer step and loop
# ---------------------------------------------------------------------------------------------------------------


def _one_step(cfg, theta, task):
  opt_state = lto.lto_optimizer(cfg).init(theta)
  return jax.jit(lambda t, s: lto.lto_step(t, s, task, None, cfg))(theta, opt_state)


def test_exact_and_first_order_steps_coincide_without_inner_steps():
  theta, pool = _theta(jax.random.key(0)), _pool(jax.random.key(1))
  task = lto.sample_task(jax.random.key(2), pool, jnp.asarray(RESTRICTED), 2, 3)
  outs = []
  for mode in ("full", "first_order"):
    cfg = lto.LTOConfig(fsc=fsc.FSCConfig(_tanh_apply, N_WAY, steps=0, grad_mode=mode), method="finetune")
    outs.append(_one_step(cfg, theta, task)[0])
  jax.tree.map(np.testing.assert_array_equal, outs[0], outs[1])


def test_other_term_alone_improves_other_classes():
  """lambda_r = 0: a small outer step lowers CE_O on the obstruct batch."""
  theta, pool = _theta(jax.random.key(0)), _pool(jax.random.key(1))
  task = lto.sample_task(jax.random.key(2), pool, jnp.asarray(RESTRICTED), 2, 3)
  cfg = _cfg("finetune", steps=1, lambda_r=0.0, learning_rate=1e-3)
  new_theta, _, metrics = _one_step(cfg, theta, task)
  _, (_, ce_o_after) = lto.lto_outer_loss(new_theta, (task.x_support, task.y_support),
                                          (task.x_obstruct, task.y_obstruct), task.restricted, None, cfg)
  assert float(ce_o_after) < float(metrics["ce_o"])


def test_clamped_restricted_gradient_matches_manual_update():
  theta, pool = _theta(jax.random.key(0)), _pool(jax.random.key(1))
  task = lto.sample_task(jax.random.key(2), pool, jnp.asarray(RESTRICTED), 2, 3)
  plain = _one_step(_cfg("protonet", learning_rate=1e-2, clip_norm=None), theta, task)[0]
  huge = _one_step(_cfg("protonet", learning_rate=1e-2, clip_norm=None, clamp_restricted=1e9), theta, task)[0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), plain, huge)
  cfg = _cfg("protonet", learning_rate=1e-2, clip_norm=None, clamp_restricted=0.01, lambda_r=2.0)
  got = _one_step(cfg, theta, task)[0]

  def term(t, which):
    capped, ce_o, _ = lto._terms(t, (task.x_support, task.y_support), (task.x_obstruct, task.y_obstruct),
                                 task.restricted, cfg)
    return capped if which == "r" else ce_o

  g_r, g_o = jax.grad(term)(theta, "r"), jax.grad(term)(theta, "o")
  grads = jax.tree.map(lambda a, b: -2.0 * jnp.clip(a, -0.01, 0.01) + b, g_r, g_o)
  opt = optax.adam(1e-2)
  updates, _ = opt.update(grads, opt.init(theta), theta)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got,
               optax.apply_updates(theta, updates))


def test_lto_train_obstructs_restricted_classes_and_is_deterministic():
  theta, pool = _theta(jax.random.key(0)), _pool(jax.random.key(1))
  mask = jnp.asarray(RESTRICTED)
  cfg = _cfg("finetune", steps=1, num_steps=30, learning_rate=3e-2)

  def sample(k):
    return lto.sample_task(k, pool, mask, 2, 3)

  final, hist = lto.lto_train(theta, sample, jax.random.key(3), cfg, log_every=10, return_history=True)
  again = lto.lto_train(theta, sample, jax.random.key(3), cfg, log_every=10)
  jax.tree.map(np.testing.assert_array_equal, final, again)
  assert set(hist) >= {"loss", "ce_r", "ce_o", "acc_r", "acc_o", "grad_norm"}
  assert hist["loss"].shape == (30,) and np.all(np.isfinite(hist["loss"]))
  assert hist["ce_r"][-5:].mean() > hist["ce_r"][:5].mean() + 0.3             # restricted loss pushed up
  assert hist["ce_o"][-5:].mean() < hist["ce_r"][-5:].mean()
  evals = [lto.evaluate_fsc(t, "protonet", pool[:, :3], (pool[:, 3:].reshape(-1, DIM_IN), jnp.repeat(
      jnp.arange(N_WAY), PER_CLASS - 3)), jax.random.key(4), 2, 2, cfg=fsc.FSCConfig(_tanh_apply, N_WAY),
      restricted_labels=[0, 2]) for t in (theta, final)]
  for e in evals:
    assert 0.0 <= e["acc_r"] <= 1.0 and 0.0 <= e["acc_o"] <= 1.0 and len(e["reps_acc_r"]) == 2
  assert evals[1]["acc_r"] <= evals[0]["acc_r"]
  assert hist["acc_r"][-5:].mean() < hist["acc_r"][:5].mean()                  # on the obstruct sets
