"""Tests for jaxgen.immunization.mima: merge fixtures, the merge's invariants and gradient, the outer objective."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.immunization import mima

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "immunization"


def _case(i):
  return dict(np.load(FIXTURES / f"mima_merge_case{i}.npz"))


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.mark.parametrize("case", [0, 1, 2])
def test_merge_matches_released_code(case):
  """The released gdupdateWexact output (out x d convention, so compare with w_new.T); float64 1e-10, float32 1e-4."""
  f = _case(case)
  is64 = f["w0"].dtype == np.float64
  rtol = 1e-10 if is64 else 1e-4
  with jax.enable_x64(is64):
    w = mima.kv_merge(jnp.asarray(f["w0"].T), jnp.asarray(f["c_reg"]), jnp.asarray(f["c_targets"]),
                      jnp.asarray(f["v_targets"]))
    assert w.dtype == f["w0"].dtype
    w = np.asarray(w)
  scale = np.abs(f["w_new"]).max()
  np.testing.assert_allclose(w, f["w_new"].T, rtol=0, atol=rtol * scale)
  # Constraint C_t W* = V_t at the same tolerance.
  np.testing.assert_allclose(f["c_targets"] @ w, f["v_targets"], rtol=0, atol=rtol * np.abs(f["v_targets"]).max())


@pytest.mark.parametrize("case", [0, 1, 2])
def test_merge_from_weights_and_nochange_match_fixture(case):
  f = _case(case)
  is64 = f["w0"].dtype == np.float64
  tol = 1e-10 if is64 else 1e-4
  counts = np.cumsum(f["concept_token_counts"])[:-1]
  cs = np.split(f["c_targets"], counts)
  with jax.enable_x64(is64):
    w = np.asarray(mima.kv_merge_from_weights(f["w0"].T, f["c_reg"], cs, [wc.T for wc in f["w_concepts"]]))
    w_nc = np.asarray(mima.kv_merge(f["w0"].T, f["c_reg"], f["c_targets"], f["c_targets"] @ f["w0"].T))
  scale = np.abs(f["w_new"]).max()
  np.testing.assert_allclose(w, f["w_new"].T, rtol=0, atol=tol * scale)
  np.testing.assert_allclose(w_nc, f["w_new_nochange"].T, rtol=0, atol=tol * scale)
  np.testing.assert_allclose(w_nc, f["w0"].T, rtol=0, atol=tol * scale)


# ------------------------------------------------------------------------------------------------ invariants


def _random_problem(seed=0, d=10, o=7, m=4, r=30):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(d, o)), rng.normal(size=(r, d)), rng.normal(size=(m, d)), rng.normal(size=(m, o)))


def _null_space(c):
  _, s, vt = np.linalg.svd(c)
  return vt[int(np.sum(s > 1e-10)):].T                                     # [d, d - rank]


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_optimality_against_feasible_perturbations(ridge):
  w0, c_reg, c_t, v_t = _random_problem()
  with jax.enable_x64(True):
    w = np.asarray(mima.kv_merge(w0, c_reg, c_t, v_t, ridge=ridge))
  objective = lambda wp: np.sum((c_reg @ (wp - w0)) ** 2) + ridge * np.sum((wp - w0) ** 2)
  null = _null_space(c_t)
  rng = np.random.default_rng(1)
  best = objective(w)
  for _ in range(20):
    n = null @ rng.normal(size=(null.shape[1], w0.shape[1]))
    np.testing.assert_allclose(c_t @ (w + n), v_t, atol=1e-10)
    assert objective(w + n) >= best - 1e-9
  # Independent float64 NumPy reference via the KKT system [G C^T; C 0][X; L] = [G W0; V].
  g = c_reg.T @ c_reg + ridge * np.eye(w0.shape[0])
  kkt = np.block([[g, c_t.T], [c_t, np.zeros((c_t.shape[0], c_t.shape[0]))]])
  sol = np.linalg.solve(kkt, np.concatenate([g @ w0, v_t]))
  np.testing.assert_allclose(w, sol[:w0.shape[0]], rtol=1e-9, atol=1e-9)


def test_single_row_minimum_norm_correction():
  rng = np.random.default_rng(2)
  w0, c, v = rng.normal(size=(6, 5)), rng.normal(size=(1, 6)), rng.normal(size=(1, 5))
  with jax.enable_x64(True):
    w = np.asarray(mima.kv_merge(w0, np.zeros((0, 6)), c, v, ridge=1.0))
  expected = w0 + c.T @ (v - c @ w0) / np.sum(c ** 2)
  np.testing.assert_allclose(w, expected, rtol=1e-12, atol=1e-12)


def test_permutation_and_scale_invariance():
  w0, c_reg, c_t, v_t = _random_problem(3)
  perm = np.array([2, 0, 3, 1])
  with jax.enable_x64(True):
    w = np.asarray(mima.kv_merge(w0, c_reg, c_t, v_t))
    w_perm = np.asarray(mima.kv_merge(w0, c_reg, c_t[perm], v_t[perm]))
    w_scaled = np.asarray(mima.kv_merge(w0, 3.7 * c_reg, c_t, v_t))
  np.testing.assert_allclose(w_perm, w, rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(w_scaled, w, rtol=1e-10, atol=1e-10)


def test_gradient_matches_finite_differences_and_jacobians_agree():
  w0, c_reg, c_t, v_t = _random_problem(4, d=6, o=3, m=2, r=15)
  probe = np.random.default_rng(5).normal(size=(6, 3))
  with jax.enable_x64(True):
    f = jax.jit(lambda v, w: jnp.sum(jnp.sin(mima.kv_merge(w, c_reg, c_t, v, ridge=1e-2)) * probe))
    g_v, g_w = jax.grad(f, argnums=(0, 1))(jnp.asarray(v_t), jnp.asarray(w0))
    eps = 1e-6
    for arr, grad, which in ((v_t, g_v, 0), (w0, g_w, 1)):
      fd = np.zeros_like(arr)
      for idx in np.ndindex(arr.shape):
        e = np.zeros_like(arr)
        e[idx] = eps
        args_p = [v_t, w0]
        args_m = [v_t, w0]
        args_p[which] = arr + e
        args_m[which] = arr - e
        fd[idx] = (float(f(*args_p)) - float(f(*args_m))) / (2 * eps)
      np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-9)
    merge_v = lambda v: mima.kv_merge(w0, c_reg, c_t, v)
    np.testing.assert_allclose(np.asarray(jax.jacfwd(merge_v)(jnp.asarray(v_t))),
                               np.asarray(jax.jacrev(merge_v)(jnp.asarray(v_t))), rtol=1e-10, atol=1e-12)


def _tree(rng, d=8):
  return {"attn": {"key": {"kernel": rng.normal(size=(d, 2, 3))}, "value": {"kernel": rng.normal(size=(d, 6))},
                   "query": {"kernel": rng.normal(size=(5, 6))}}, "bias": rng.normal(size=(4,))}


KV = ("attn/key/kernel", "attn/value/kernel")


def test_merge_params_means_and_single_concept_constraint():
  rng = np.random.default_rng(6)
  base = _tree(rng)
  copies = [_tree(rng) for _ in range(3)]
  c_reg = rng.normal(size=(20, 8))
  ctx = rng.normal(size=(3, 2, 8))
  with jax.enable_x64(True):
    merged = mima.merge_params(base, copies, KV, ctx, c_reg)
    np.testing.assert_allclose(merged["bias"], np.mean([c["bias"] for c in copies], 0), rtol=1e-12)
    np.testing.assert_allclose(merged["attn"]["query"]["kernel"],
                               np.mean([c["attn"]["query"]["kernel"] for c in copies], 0), rtol=1e-12)
    assert merged["attn"]["key"]["kernel"].shape == (8, 2, 3)
    for n in range(3):  # every concept's rows see its own adapted copy's outputs
      for path in (("key", (8, 6)), ("value", (8, 6))):
        wm = np.reshape(merged["attn"][path[0]]["kernel"], path[1])
        wn = np.reshape(copies[n]["attn"][path[0]]["kernel"], path[1])
        np.testing.assert_allclose(ctx[n] @ wm, ctx[n] @ wn, rtol=1e-9, atol=1e-9)
    single = mima.merge_params(base, copies[:1], KV, ctx[:1], c_reg)
    w1 = np.reshape(single["attn"]["key"]["kernel"], (8, 6))
    wa = np.reshape(copies[0]["attn"]["key"]["kernel"], (8, 6))
    np.testing.assert_allclose(ctx[0] @ w1, ctx[0] @ wa, rtol=1e-9, atol=1e-9)
    assert not np.allclose(w1, wa)  # differs in the directions the target rows do not see


def test_dedupe_rows():
  c = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1e-9]])
  v = np.arange(8.0).reshape(4, 2)
  c1, v1 = mima.dedupe_rows(c, v)
  np.testing.assert_array_equal(c1, c[[0, 1, 3]])
  np.testing.assert_array_equal(v1, v[[0, 1, 3]])
  c2, v2 = mima.dedupe_rows(c, v, atol=1e-6)
  np.testing.assert_array_equal(v2, v[[0, 1]])


def test_bad_inputs_raise():
  w0, c_reg, c_t, v_t = _random_problem(7)
  with pytest.raises(ValueError, match="c_targets"):
    mima.kv_merge(w0, c_reg, np.zeros((0, 10)), np.zeros((0, 7)))
  with pytest.raises(ValueError, match="v_targets"):
    mima.kv_merge(w0, c_reg, c_t, v_t[:2])
  with pytest.raises(ValueError, match="c_targets"):
    mima.kv_merge(w0, c_reg, np.ones((11, 10)), np.ones((11, 7)))
  with pytest.raises(ValueError, match="empty"):
    mima.kv_merge_from_weights(w0, c_reg, [], [])
  with pytest.raises(ValueError, match="adapted_list"):
    mima.merge_params({"k": w0}, [], ("k",), np.zeros((0, 1, 10)), c_reg)
  with pytest.raises(ValueError, match="num_concepts"):
    mima.mima_init({"k": w0}, 0, _config())


# ------------------------------------------------------------------------------------------------ outer objective


def _config(**kw):
  def concept_loss(theta, frozen, batch, key):
    del key
    out = batch["c"] @ theta["k"]                                           # [B, o]
    return jnp.mean((out - batch["y"]) ** 2) + 0.0 * jnp.sum(frozen["f"])

  def pres_loss(theta, frozen, batch, key):
    del key
    return jnp.mean((batch["c"] @ theta["k"] - batch["c"] @ frozen["ref"]) ** 2)

  return mima.MIMAConfig(concept_loss=concept_loss, pres_loss=pres_loss, kv_paths=("k",), **kw)


def _toy_data(rng, n=2, d=6, o=3, b=4):
  ctx = rng.normal(size=(n, 1, d))
  batches = {"c": np.repeat(ctx, b, axis=1), "y": rng.normal(size=(n, b, o))}
  pres = {"c": rng.normal(size=(8, d))}
  return ctx, batches, pres


def test_outer_loss_equals_hand_composition_and_grad_matches_fd():
  """J through K=2 inner SGD steps per concept and the merge, vs. a hand-written composition; grad vs FD."""
  rng = np.random.default_rng(8)
  ctx, batches, pres = _toy_data(rng)
  c_reg = rng.normal(size=(12, 6))
  theta = {"k": rng.normal(size=(6, 3))}
  frozen = {"f": np.zeros(2), "ref": theta["k"].copy()}
  cfg = _config(inner_steps=2, inner_lr=0.1, lam=2.0, tau=100.0, ridge=1e-3, scheme="unrolled")
  with jax.enable_x64(True):
    states = jax.tree.map(lambda z: jnp.zeros((2,) + z.shape), {"k": theta["k"]})
    key = jax.random.key(0)
    j, aux = mima.mima_outer_loss(theta, states, frozen, batches, pres, key, cfg, ctx, c_reg)

    @jax.jit
    def by_hand(k):
      adapted = []
      for n in range(2):
        w = k
        b = {"c": batches["c"][n], "y": batches["y"][n]}
        for _ in range(2):
          w = w - 0.1 * jax.grad(lambda ww: cfg.concept_loss({"k": ww}, frozen, b, None))(w)
        adapted.append(w)
      merged = mima.kv_merge_from_weights(k, c_reg, list(ctx), adapted, ridge=1e-3)
      losses = [cfg.concept_loss({"k": merged}, frozen, {"c": batches["c"][n], "y": batches["y"][n]}, None)
                for n in range(2)]
      return -jnp.mean(jnp.stack(losses)) + 2.0 * cfg.pres_loss({"k": merged}, frozen, pres, None)

    np.testing.assert_allclose(float(j), float(by_hand(jnp.asarray(theta["k"]))), rtol=1e-10)
    g = jax.grad(lambda th: mima.mima_outer_loss(th, states, frozen, batches, pres, key, cfg, ctx, c_reg)[0])(theta)
    eps = 1e-6
    fd = np.zeros_like(theta["k"])
    for idx in np.ndindex(fd.shape):
      e = np.zeros_like(fd)
      e[idx] = eps
      fd[idx] = (float(by_hand(theta["k"] + e)) - float(by_hand(theta["k"] - e))) / (2 * eps)
    np.testing.assert_allclose(np.asarray(g["k"]), fd, rtol=1e-6, atol=1e-9)
    # First order: same value, a different (approximate) gradient.
    cfg_fo = _config(inner_steps=2, inner_lr=0.1, lam=2.0, tau=100.0, ridge=1e-3, first_order=True)
    j_fo = mima.mima_outer_loss(theta, states, frozen, batches, pres, key, cfg_fo, ctx, c_reg)[0]
    np.testing.assert_allclose(float(j_fo), float(j), rtol=1e-12)
    g_fo = jax.grad(lambda th: mima.mima_outer_loss(th, states, frozen, batches, pres, key, cfg_fo, ctx, c_reg)[0])(
        theta)
    assert not np.allclose(np.asarray(g_fo["k"]), np.asarray(g["k"]))


@pytest.mark.parametrize("scheme", ["unrolled", "truncated", "alternating"])
def test_train_runs_deterministic_and_touches_only_theta(scheme):
  rng = np.random.default_rng(9)
  ctx, batches, pres = _toy_data(rng)
  c_reg = rng.normal(size=(12, 6)).astype(np.float32)
  theta = {"k": rng.normal(size=(6, 3)).astype(np.float32)}
  frozen = {"f": np.zeros(2, np.float32), "ref": theta["k"].copy()}
  cfg = _config(scheme=scheme, lam=1.0, outer_lr=1e-2)
  data = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), (batches, pres))
  data_fn = lambda key, d: d
  outs = [mima.mima_train(frozen, theta, data_fn, jax.random.key(1), cfg, jnp.asarray(ctx, jnp.float32), c_reg,
                          num_steps=6, chunk=3, data=data, progress=False) for _ in range(2)]
  np.testing.assert_array_equal(np.asarray(outs[0][0]["k"]), np.asarray(outs[1][0]["k"]))
  assert not np.allclose(np.asarray(outs[0][0]["k"]), theta["k"])
  assert [h["step"] for h in outs[0][1]] == [3, 6]
  if scheme == "unrolled":  # the attacker restarts every step: the immunizer's ascent shows in the concept loss
    assert outs[0][1][-1]["concept_loss"] > outs[0][1][0]["concept_loss"]


def _config_with_bias(**kw):
  """Lower level = the K kernel *and* an output bias ``b`` (not a K/V kernel: merged by the mean)."""
  def concept_loss(theta, frozen, batch, key):
    del key, frozen
    return jnp.mean((batch["c"] @ theta["k"] + theta["b"][None] - batch["y"]) ** 2)

  def pres_loss(theta, frozen, batch, key):
    del key
    return jnp.mean((batch["c"] @ theta["k"] + theta["b"][None] - batch["c"] @ frozen["ref"]) ** 2)

  return mima.MIMAConfig(concept_loss=concept_loss, pres_loss=pres_loss, kv_paths=("k",), delta_paths=("k", "b"),
                         **kw)


def test_delta_paths_adapts_extra_leaves_merged_by_mean():
  """delta_paths = (k, b): k goes through the closed-form merge, b is the mean of the adapted copies; J and its
  gradient (w.r.t. both leaves) equal a hand-written composition (float64, rtol 1e-10 / FD 1e-6)."""
  rng = np.random.default_rng(10)
  ctx, batches, pres = _toy_data(rng)
  c_reg = rng.normal(size=(12, 6))
  theta = {"k": rng.normal(size=(6, 3)), "b": rng.normal(size=(3,))}
  frozen = {"ref": theta["k"].copy()}
  cfg = _config_with_bias(inner_steps=2, inner_lr=0.1, lam=2.0, tau=100.0, ridge=1e-3)
  assert cfg.phi_paths == ("k", "b")
  with jax.enable_x64(True):
    state = mima.mima_init(theta, 2, cfg)
    assert set(state.deltas) == {"k", "b"} and state.deltas["b"].shape == (2, 3)
    key = jax.random.key(0)

    def by_hand(th):
      ks, bs = [], []
      for n in range(2):
        w = dict(th)
        b = {"c": batches["c"][n], "y": batches["y"][n]}
        for _ in range(2):
          g = jax.grad(lambda ww: cfg.concept_loss(ww, frozen, b, None))(w)
          w = jax.tree.map(lambda a, ga: a - 0.1 * ga, w, g)
        ks.append(w["k"])
        bs.append(w["b"])
      merged = {"k": mima.kv_merge_from_weights(th["k"], c_reg, list(ctx), ks, ridge=1e-3), "b": (bs[0] + bs[1]) / 2}
      losses = [cfg.concept_loss(merged, frozen, {"c": batches["c"][n], "y": batches["y"][n]}, None) for n in range(2)]
      return -jnp.mean(jnp.stack(losses)) + 2.0 * cfg.pres_loss(merged, frozen, pres, None)

    loss = lambda th: mima.mima_outer_loss(th, state.deltas, frozen, batches, pres, key, cfg, ctx, c_reg)[0]
    np.testing.assert_allclose(float(loss(theta)), float(by_hand(theta)), rtol=1e-10)
    g, g_hand = jax.grad(loss)(theta), jax.grad(by_hand)(theta)
    for name in ("k", "b"):
      np.testing.assert_allclose(np.asarray(g[name]), np.asarray(g_hand[name]), rtol=1e-8, atol=1e-12)
    # Without b in the lower level the objective differs (b is then not adapted).
    cfg_kv = mima.MIMAConfig(concept_loss=cfg.concept_loss, pres_loss=cfg.pres_loss, kv_paths=("k",), inner_steps=2,
                             inner_lr=0.1, lam=2.0, tau=100.0, ridge=1e-3)
    st_kv = mima.mima_init(theta, 2, cfg_kv)
    j_kv = mima.mima_outer_loss(theta, st_kv.deltas, frozen, batches, pres, key, cfg_kv, ctx, c_reg)[0]
    assert abs(float(j_kv) - float(loss(theta))) > 1e-6


def test_delta_paths_alternating_writes_mean_of_extra_leaves():
  """Released scheme: b is written as b - lr * mean_n grad_b (before the outer step)."""
  rng = np.random.default_rng(11)
  ctx, batches, pres = _toy_data(rng)
  c_reg = rng.normal(size=(12, 6))
  theta = {"k": rng.normal(size=(6, 3)), "b": rng.normal(size=(3,))}
  frozen = {"ref": theta["k"].copy()}
  cfg = _config_with_bias(scheme="alternating", inner_lr=0.1, outer_lr=1e-12, lam=1.0)
  with jax.enable_x64(True):
    state = mima.mima_init(theta, 2, cfg)
    new, _ = mima.mima_step(state, frozen, batches, pres, jax.random.key(0), cfg, ctx, c_reg)
    k_inner = jax.random.split(jax.random.split(jax.random.key(0), 3)[0], 2)
    grads = [jax.grad(lambda bb: cfg.concept_loss({"k": theta["k"], "b": bb}, frozen,
                                                  {"c": batches["c"][n], "y": batches["y"][n]}, k_inner[n]))(theta["b"])
             for n in range(2)]
    np.testing.assert_allclose(np.asarray(new.theta_u["b"]), theta["b"] - 0.1 * (grads[0] + grads[1]) / 2,
                               rtol=1e-9, atol=1e-11)


def test_delta_paths_validation():
  with pytest.raises(ValueError, match="delta_paths must contain"):
    _config(delta_paths=("q",))
  with pytest.raises(TypeError, match="delta_paths"):
    _config(delta_paths="k")
  with pytest.raises(ValueError, match="not in `theta_u`"):
    mima.mima_init({"k": np.zeros((6, 3))}, 2, _config(delta_paths=("k", "missing")))
