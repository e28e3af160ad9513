"""Tests for jaxgen.immunization.imma: the schemes' gradients (closed forms), invariants, attacks, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.immunization import imma

A, B, ALPHA = 1.5, 0.4, 0.3


def _quadratic_cfg(**kw):
  """The spec's 2-parameter toy L(theta, phi) = 1/2 (phi - a theta)^2 + 1/2 b theta phi (no data, no key)."""
  def attack_loss(theta, phi, frozen, batch, key):
    del frozen, batch, key
    t, p = theta["t"], phi["p"]
    return 0.5 * (p - A * t) ** 2 + 0.5 * B * t * p

  def pres_loss(theta, frozen, batch, key):
    del batch, key
    return 0.5 * (theta["t"] - frozen["t0"]) ** 2

  kw.setdefault("tau", 1e9)
  return imma.IMMAConfig(attack_loss=attack_loss, pres_loss=pres_loss, **kw)


def _grad_j(cfg, theta, phi, frozen):
  return jax.grad(lambda th: imma.imma_outer_loss(th, phi, frozen, None, None, jax.random.key(0), cfg)[0])(theta)


def test_unrolled_k1_matches_closed_form():
  """phi1 = phi0 - alpha (phi0 - a t + b t / 2); J = -L(t, phi1): dJ/dt by hand (lam = 0)."""
  t, p0 = 0.7, -0.2
  with jax.enable_x64(True):
    cfg = _quadratic_cfg(scheme="unrolled", inner_steps=1, inner_lr=ALPHA, lam=0.0)
    g = _grad_j(cfg, {"t": jnp.asarray(t)}, {"p": jnp.asarray(p0)}, {"t0": jnp.asarray(0.0)})
    p1 = p0 - ALPHA * (p0 - A * t + 0.5 * B * t)
    dp1_dt = -ALPHA * (-A + 0.5 * B)
    dl_dt = -A * (p1 - A * t) + 0.5 * B * p1
    dl_dp = (p1 - A * t) + 0.5 * B * t
    np.testing.assert_allclose(float(g["t"]), -(dl_dt + dl_dp * dp1_dt), rtol=1e-12)
    # Nested jax.grad, written independently of core.bilevel.
    def nested(tt):
      p1 = p0 - ALPHA * jax.grad(lambda pp: cfg.attack_loss({"t": tt}, {"p": pp}, None, None, None))(p0)
      return -cfg.attack_loss({"t": tt}, {"p": p1}, None, None, None)
    np.testing.assert_allclose(float(g["t"]), float(jax.grad(nested)(t)), rtol=1e-12)


def test_first_order_same_value_gradient_at_fixed_phi():
  theta, phi, frozen = {"t": jnp.asarray(0.7)}, {"p": jnp.asarray(-0.2)}, {"t0": jnp.asarray(0.1)}
  with jax.enable_x64(True):
    exact = _quadratic_cfg(scheme="unrolled", inner_steps=3, inner_lr=ALPHA, lam=0.5)
    fo = _quadratic_cfg(scheme="unrolled", inner_steps=3, inner_lr=ALPHA, lam=0.5, first_order=True)
    key = jax.random.key(0)
    j, aux = imma.imma_outer_loss(theta, phi, frozen, None, None, key, exact)
    j_fo, aux_fo = imma.imma_outer_loss(theta, phi, frozen, None, None, key, fo)
    np.testing.assert_allclose(float(j_fo), float(j), rtol=1e-14)
    phi_k = aux_fo["phi_K"]
    expected = jax.grad(lambda th: -fo.attack_loss(th, phi_k, frozen, None, None) + 0.5 * fo.pres_loss(
        th, frozen, None, None))(theta)
    np.testing.assert_allclose(float(_grad_j(fo, theta, phi, frozen)["t"]), float(expected["t"]), rtol=1e-12)
    assert abs(float(_grad_j(exact, theta, phi, frozen)["t"]) - float(expected["t"])) > 1e-3


def test_naive_step_is_one_adam_ascent_step():
  theta, phi, frozen = {"t": jnp.asarray(0.7)}, {"p": jnp.asarray(-0.2)}, {"t0": jnp.asarray(0.0)}
  cfg = _quadratic_cfg(scheme="naive", lam=0.0, outer_lr=0.01, clip=1e9)
  state = imma.imma_init(theta, phi, cfg)
  new, _ = imma.imma_step(state, frozen, None, None, jax.random.key(0), cfg)
  g = jax.grad(lambda th: -cfg.attack_loss(th, phi, frozen, None, None))(theta)
  opt = optax.adam(0.01)
  updates, _ = opt.update(g, opt.init(theta), theta)
  np.testing.assert_allclose(float(new.theta_u["t"]), float(theta["t"] + updates["t"]), rtol=1e-6)
  assert float(new.phi["p"]) == float(phi["p"])


def test_truncated_carries_phi_and_alternating_updates_it():
  theta, phi, frozen = {"t": jnp.asarray(0.7)}, {"p": jnp.asarray(-0.2)}, {"t0": jnp.asarray(0.0)}
  trunc = _quadratic_cfg(scheme="truncated", inner_steps=2, inner_lr=ALPHA)
  state = imma.imma_init(theta, phi, trunc)
  new, _ = imma.imma_step(state, frozen, None, None, jax.random.key(0), trunc)
  _, aux = imma.imma_outer_loss(theta, phi, frozen, None, None, jax.random.key(0), trunc)
  np.testing.assert_allclose(float(new.phi["p"]), float(aux["phi_K"]["p"]), rtol=1e-6)
  unrolled = _quadratic_cfg(scheme="unrolled", inner_steps=2, inner_lr=ALPHA)
  new_u, _ = imma.imma_step(imma.imma_init(theta, phi, unrolled), frozen, None, None, jax.random.key(0), unrolled)
  assert float(new_u.phi["p"]) == float(phi["p"])
  alt = _quadratic_cfg(scheme="alternating")
  new_a, m = imma.imma_step(imma.imma_init(theta, phi, alt), frozen, None, None, jax.random.key(0), alt)
  assert float(new_a.phi["p"]) != float(phi["p"]) and "attack_loss" in m


def _net_problem():
  rng = np.random.default_rng(0)
  params = {"attn": {"key": {"kernel": rng.normal(size=(4, 2, 3)).astype(np.float32)},
                     "value": {"kernel": rng.normal(size=(4, 6)).astype(np.float32)},
                     "query": {"kernel": rng.normal(size=(6, 6)).astype(np.float32)}},
            "mlp": {"kernel": rng.normal(size=(6, 6)).astype(np.float32), "bias": np.zeros(6, np.float32)}}
  data = {"c": rng.normal(size=(16, 4)).astype(np.float32), "y": rng.normal(size=(16, 6)).astype(np.float32)}

  def model_loss(p, batch, key):
    del key
    k = jnp.reshape(p["attn"]["key"]["kernel"], (4, 6))
    h = jnp.tanh(batch["c"] @ k + batch["c"] @ p["attn"]["value"]["kernel"]) @ p["attn"]["query"]["kernel"]
    out = h @ p["mlp"]["kernel"] + p["mlp"]["bias"][None, :]
    return jnp.mean((out - batch["y"]) ** 2)

  data_fn = lambda key, d: jax.tree.map(lambda a: a[jax.random.choice(key, 16, (8,), replace=False)], d)
  return params, data, model_loss, data_fn


def test_train_deterministic_only_theta_changes_structure_kept():
  params, data, model_loss, data_fn = _net_problem()
  theta, frozen = imma.split_params(params, "attn/")
  phi0 = imma.lora_phi_init(jax.random.key(3), params, rank=2, targets="attn/(key|value)/kernel")

  def attack_loss(th, phi, fr, batch, key):
    return model_loss(imma.lora_phi_apply(imma.combine_params(th, fr), phi), batch, key)

  def pres_loss(th, fr, batch, key):
    return model_loss(imma.combine_params(th, fr), batch, key)

  fn = lambda k, d: (data_fn(k, d), data_fn(jax.random.fold_in(k, 7), d))
  for scheme in ("truncated", "alternating"):
    cfg = imma.IMMAConfig(attack_loss=attack_loss, pres_loss=pres_loss, scheme=scheme, lam=0.1)
    runs = [imma.imma_train(frozen, theta, phi0, fn, jax.random.key(1), cfg, num_steps=4, chunk=2, data=data,
                            progress=False)[0] for _ in range(2)]
    jax.tree.map(np.testing.assert_array_equal, runs[0], runs[1])
    full = imma.combine_params(runs[0], frozen)
    assert jax.tree.structure(full) == jax.tree.structure(params)
    np.testing.assert_array_equal(full["mlp"]["kernel"], params["mlp"]["kernel"])
    np.testing.assert_array_equal(full["mlp"]["bias"], params["mlp"]["bias"])
    assert not np.allclose(full["attn"]["query"]["kernel"], params["attn"]["query"]["kernel"])


def test_attacks_reduce_loss_and_lora_matches_core_lora():
  params, data, model_loss, data_fn = _net_problem()
  ckpts, losses = imma.relearn_attack(params, model_loss, data_fn, data, jax.random.key(0),
                                      targets="attn/(key|value)/kernel", num_steps=40, lr=1e-2, record_every=20)
  assert [s for s, _ in ckpts] == [0, 20, 40] and losses.shape == (40,)
  full = {"c": data["c"], "y": data["y"]}
  assert float(model_loss(ckpts[-1][1], full, None)) < float(model_loss(params, full, None))
  np.testing.assert_array_equal(ckpts[-1][1]["mlp"]["kernel"], params["mlp"]["kernel"])
  lckpts, _ = imma.lora_attack(params, model_loss, data_fn, data, jax.random.key(0),
                               targets="attn/(key|value)/kernel", rank=2, num_steps=40, lr=1e-2, record_every=40)
  jax.tree.map(np.testing.assert_array_equal, lckpts[0][1], params)  # B = 0: the adapter starts as a no-op
  assert float(model_loss(lckpts[-1][1], full, None)) < float(model_loss(params, full, None))
  delta = np.reshape(lckpts[-1][1]["attn"]["key"]["kernel"] - params["attn"]["key"]["kernel"], (4, 6))
  assert np.linalg.matrix_rank(delta, tol=1e-5) <= 2


def test_bad_input_raises():
  params, data, model_loss, data_fn = _net_problem()
  with pytest.raises(ValueError, match="rank"):
    imma.lora_phi_init(jax.random.key(0), params, rank=5, targets="attn/(key|value)/kernel")
  with pytest.raises(ValueError, match="rank"):
    imma.lora_attack(params, model_loss, data_fn, data, jax.random.key(0), targets="attn/key/kernel", rank=0,
                     num_steps=4, lr=1e-2, record_every=2)
  phi = imma.lora_phi_init(jax.random.key(0), params, rank=2, targets="attn/value/kernel")
  bad = {"attn/key/kernel": phi["attn/value/kernel"]}
  bad["attn/key/kernel"] = type(phi["attn/value/kernel"])(a=jnp.zeros((5, 2)), b=jnp.zeros((2, 6)))
  with pytest.raises(ValueError, match="incompatible"):
    imma.lora_phi_apply(params, bad)
  with pytest.raises(ValueError, match="targets"):
    imma.split_params(params, "nothing-matches")
  with pytest.raises(ValueError, match="scheme"):
    _quadratic_cfg(scheme="bogus")
  with pytest.raises(ValueError, match="record_every"):
    imma.relearn_attack(params, model_loss, data_fn, data, jax.random.key(0), targets="attn/", num_steps=5, lr=1e-2,
                        record_every=2)
