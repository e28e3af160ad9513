"""Train loop: exact resume, data-parallel == single device, pmap step, batch source, checkpoints."""

import json

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.core import checkpoint, parallel, train
from jaxgen.nn import MLP


def _problem(num_examples=64, dim=6, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num_examples, dim)).astype(np.float32)
  w = rng.normal(size=(dim, classes)).astype(np.float32)
  y = np.argmax(x @ w + 0.3 * rng.normal(size=(num_examples, classes)), axis=-1).astype(np.int32)
  return {"x": x, "y": y}


def _setup(dropout=0.2, seed=0, lr=3e-2):
  model = MLP((16, 3), dropout_rate=dropout)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 6)))
  # A schedule and weight decay make the optimizer state non-trivial (count, moments).
  optimizer = optax.adamw(optax.cosine_decay_schedule(lr, 40), weight_decay=1e-3)

  def loss_fn(params, batch, key):
    logits = model.apply(params, batch["x"], deterministic=dropout == 0.0, rngs={"dropout": key})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"acc": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

  state = train.init_train_state(params, optimizer, jax.random.key(seed + 1))
  return state, loss_fn, optimizer


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class _Interrupt(Exception):
  pass


def test_resume_is_bit_exact(tmp_path):
  data = _problem()
  batches = train.epoch_batches(data, 16, seed=3)
  state0, loss_fn, optimizer = _setup()
  step = train.make_train_step(loss_fn, optimizer, has_aux=True)

  full = train.fit(state0, step, batches, 23, out_dir=tmp_path / "a", checkpoint_every=5, log_every=1,
                   progress=False)

  def crashing(k):
    if k == 13:
      raise _Interrupt("simulated preemption")
    return batches(k)

  with pytest.raises(_Interrupt):
    train.fit(state0, step, crashing, 23, out_dir=tmp_path / "b", checkpoint_every=5, log_every=1, progress=False)
  resumed = train.fit(state0, step, batches, 23, out_dir=tmp_path / "b", checkpoint_every=5, log_every=1,
                      progress=False)

  assert resumed.resumed_from == 10
  assert int(resumed.state.step) == 23
  _leaves_equal(full.state, resumed.state)
  # The metrics files hold one record per step, identical in both runs (records past the checkpoint were dropped).
  rec_a = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  rec_b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rec_b] == list(range(1, 24))
  assert rec_a == rec_b
  # The caller's initial state was not donated away.
  assert int(state0.step) == 0


def test_resume_changes_nothing_when_already_finished(tmp_path):
  data = _problem()
  batches = train.epoch_batches(data, 16, seed=3)
  state0, loss_fn, optimizer = _setup()
  step = train.make_train_step(loss_fn, optimizer, has_aux=True)
  first = train.fit(state0, step, batches, 6, out_dir=tmp_path, progress=False)
  again = train.fit(state0, step, batches, 6, out_dir=tmp_path, progress=False)
  assert again.resumed_from == 6
  _leaves_equal(first.state, again.state)


def test_without_checkpoints_differs_from_fresh_run_only_by_seed():
  data = _problem()
  batches = train.epoch_batches(data, 16, seed=3)
  state0, loss_fn, optimizer = _setup()
  step = train.make_train_step(loss_fn, optimizer, has_aux=True)
  a = train.fit(state0, step, batches, 8, progress=False).state
  b = train.fit(state0, step, batches, 8, progress=False).state
  _leaves_equal(a, b)
  state_other, _, _ = _setup(seed=5)
  c = train.fit(state_other, step, batches, 8, progress=False).state
  assert not np.array_equal(np.asarray(jax.tree.leaves(a.params)[0]), np.asarray(jax.tree.leaves(c.params)[0]))


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_data_parallel_equals_single_device(dropout):
  assert jax.device_count() == 8
  data = _problem(num_examples=64)
  batches = train.epoch_batches(data, 16, seed=1)
  state0, loss_fn, optimizer = _setup(dropout=dropout)

  single = train.fit(state0, train.make_train_step(loss_fn, optimizer, has_aux=True), batches, 12,
                     progress=False, log_every=1)
  mesh = parallel.make_data_mesh(8)
  sharded_step = train.make_train_step(loss_fn, optimizer, has_aux=True, mesh=mesh)
  multi = train.fit(state0, sharded_step, batches, 12, mesh=mesh, progress=False, log_every=1)

  assert len(multi.state.params["params"]["dense_0"]["kernel"].sharding.device_set) == 8
  # Same math; only the order of the cross-device float32 sums differs.
  chex.assert_trees_all_close(jax.device_get(multi.state.params), jax.device_get(single.state.params),
                              rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose([r["loss"] for r in multi.history], [r["loss"] for r in single.history],
                             rtol=1e-5)


def test_data_parallel_rejects_indivisible_batch():
  mesh = parallel.make_data_mesh(8)
  with pytest.raises(ValueError, match="divisible"):
    parallel.shard_batch({"x": np.zeros((12, 3))}, mesh)


def test_pmap_step_matches_single_device():
  data = _problem(num_examples=16)
  state0, loss_fn, optimizer = _setup(dropout=0.0)
  single_step = train.make_train_step(loss_fn, optimizer, has_aux=True, donate=False)
  pmap_step = jax.pmap(train.make_train_step(loss_fn, optimizer, has_aux=True, pmap_axis_name="data"),
                       axis_name="data")
  n = jax.device_count()
  replicated = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), state0)
  split = jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), data)
  s1, s8 = state0, replicated
  for _ in range(3):
    s1, m1 = single_step(s1, data)
    s8, m8 = pmap_step(s8, split)
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], s8.params), s1.params, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(m8["loss"]), float(m1["loss"]), rtol=1e-5)


def test_step_does_not_retrace():
  data = _problem()
  batches = train.epoch_batches(data, 16, seed=0)
  state, loss_fn, optimizer = _setup()
  traced = chex.assert_max_traces(loss_fn, n=1)
  step = train.make_train_step(traced, optimizer, has_aux=True)
  for k in range(4):
    state, _ = step(state, batches(k))


def test_epoch_batches_deterministic_permutations():
  data = {"i": np.arange(10)}
  batches = train.epoch_batches(data, 3, seed=7)
  assert batches.steps_per_epoch == 3
  epoch0 = np.concatenate([batches(k)["i"] for k in range(3)])
  epoch1 = np.concatenate([batches(k)["i"] for k in range(3, 6)])
  assert len(set(epoch0.tolist())) == 9 and len(set(epoch1.tolist())) == 9
  assert not np.array_equal(epoch0, epoch1)
  again = train.epoch_batches(data, 3, seed=7)
  np.testing.assert_array_equal(again(4)["i"], batches(4)["i"])
  with pytest.raises(ValueError, match="batch_size"):
    train.epoch_batches(data, 11, seed=0)
  with pytest.raises(ValueError, match="leading dimension"):
    train.epoch_batches({"a": np.zeros(4), "b": np.zeros(5)}, 2, seed=0)


def test_fit_validates_arguments():
  state, loss_fn, optimizer = _setup()
  step = train.make_train_step(loss_fn, optimizer, has_aux=True)
  batches = train.epoch_batches(_problem(), 16, seed=0)
  with pytest.raises(ValueError, match="num_steps"):
    train.fit(state, step, batches, 0, progress=False)
  with pytest.raises(ValueError, match="out_dir"):
    train.fit(state, step, batches, 3, checkpoint_every=1, progress=False)
  with pytest.raises(TypeError, match="PRNG key"):
    train.init_train_state({}, optimizer, jnp.zeros(3))


def test_checkpoint_roundtrip_keeps_namedtuples_and_keys(tmp_path):
  state, _, _ = _setup()
  checkpoint.save(tmp_path, 7, state)
  target = jax.eval_shape(lambda: state)
  restored = checkpoint.restore(tmp_path, target)
  assert isinstance(restored, train.TrainState)
  assert type(restored.opt_state) is type(state.opt_state)
  assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
  _leaves_equal(restored, state)


def test_checkpoint_missing_raises(tmp_path):
  state, _, _ = _setup()
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    checkpoint.restore(tmp_path / "empty", state)


def test_flax_module_is_used():
  # Guard: the helper model really is a Flax module with dropout (the resume test relies on randomness).
  assert issubclass(MLP, nn.Module)


def test_corrupted_checkpoint_falls_back_to_previous(tmp_path):
  data = _problem()
  batches = train.epoch_batches(data, 16, seed=3)
  state0, loss_fn, optimizer = _setup()
  step = train.make_train_step(loss_fn, optimizer, has_aux=True)
  full = train.fit(state0, step, batches, 12, progress=False)
  train.fit(state0, step, batches, 8, out_dir=tmp_path, checkpoint_every=4, progress=False)
  # Corrupt every array file of the newest checkpoint (step 8).
  newest = tmp_path / "checkpoints" / "8"
  for path in newest.rglob("*"):
    if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
      path.write_bytes(b"\0garbage" * 3)
  with pytest.warns(train.CheckpointWarning, match="unreadable"):
    resumed = train.fit(state0, step, batches, 12, out_dir=tmp_path, checkpoint_every=4, progress=False)
  assert resumed.resumed_from == 4
  _leaves_equal(full.state, resumed.state)


def test_params_ema_tracks_post_update_average():
  params = {"w": jnp.array([1.0, 2.0])}
  tx = optax.chain(optax.sgd(0.5), train.track_params_ema(0.9))
  state = tx.init(params)
  ema_ref = np.array([1.0, 2.0])
  p = params
  for grad in ([1.0, 0.0], [0.0, 2.0], [4.0, 4.0]):
    updates, state = tx.update({"w": jnp.array(grad)}, state, p)
    p = optax.apply_updates(p, updates)
    ema_ref = 0.9 * ema_ref + 0.1 * np.asarray(p["w"])
  np.testing.assert_allclose(np.asarray(train.params_ema(state)["w"]), ema_ref, rtol=1e-6)
  with pytest.raises(ValueError, match="decay"):
    train.track_params_ema(1.0)
  with pytest.raises(ValueError, match="exactly one"):
    train.params_ema(optax.sgd(0.1).init(params))
