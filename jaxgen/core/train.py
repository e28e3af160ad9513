r"""Training loop: a ``TrainState`` pytree, a jitted step factory, and ``fit`` with checkpoints and exact resume.

The pieces:

* :class:`TrainState` — ``step`` (int32), ``params``, ``opt_state``, ``key`` (a typed PRNG key). A plain
  ``NamedTuple``, so it is a pytree that goes into ``jit``, ``lax.scan`` and orbax unchanged.
* :func:`make_train_step` — from a pure loss ``loss_fn(params, batch, key) -> loss`` (or ``(loss, aux)``) and an
  optax optimizer, builds ``step(state, batch) -> (state, metrics)``. The key used at step :math:`k` is
  ``fold_in(state.key, k)``: randomness is a function of (seed, step) alone, which is what makes resume exact.
* :func:`epoch_batches` — a deterministic batch source ``batches(step) -> batch`` (a fresh permutation per epoch,
  seeded by ``(seed, epoch)``), again a pure function of the step.
* :func:`fit` — the host loop: progress bar, JSONL metrics, periodic orbax checkpoints, optional evaluation,
  optional data-parallel mesh. A run stopped at any point and started again with the same arguments resumes from
  its latest checkpoint and ends bit-identical to an uninterrupted run.

Data parallelism: pass ``mesh`` (see :mod:`jaxgen.core.parallel`) to both :func:`make_train_step` and :func:`fit`;
the batch is sharded along its leading axis and the state replicated. ``pmap_axis_name`` builds the same step for
users who wrap it in ``jax.pmap`` themselves (gradients and loss are then ``pmean``-ed over that axis).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxgen.core import checkpoint as checkpoint_lib
from jaxgen.core import metrics as metrics_lib
from jaxgen.core import parallel

PyTree = Any
Batch = Any
LossFn = Callable[[PyTree, Batch, jax.Array], Any]  # (params, batch, key) -> loss | (loss, aux dict)
BatchFn = Callable[[int], Batch]  # step -> batch
EvalFn = Callable[["TrainState"], Mapping[str, Any]]


class TrainState(NamedTuple):
  """Everything that changes during training.

  Attributes:
    step: int32 scalar, number of optimizer updates applied so far.
    params: model parameters (any pytree).
    opt_state: the optax optimizer state.
    key: typed PRNG key (``jax.random.key(seed)``); step ``k`` uses ``jax.random.fold_in(key, k)``.
  """

  step: jax.Array
  params: PyTree
  opt_state: optax.OptState
  key: jax.Array


def init_train_state(params: PyTree, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
  """A fresh :class:`TrainState` at step 0.

  Args:
    params: initial parameters.
    optimizer: the optax transformation whose state is initialised from ``params``.
    key: a typed PRNG key from ``jax.random.key(seed)`` (raw ``uint32[2]`` keys are converted).
  """
  key = _as_typed_key(key)
  return TrainState(jnp.zeros([], jnp.int32), params, optimizer.init(params), key)


def _as_typed_key(key: jax.Array) -> jax.Array:
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(f"key must be a single PRNG key (shape ()), got shape {key.shape}")
    return key
  if key.shape == (2,) and key.dtype == jnp.uint32:
    return jax.random.wrap_key_data(key)
  raise TypeError(f"key must be a PRNG key from jax.random.key(seed), got dtype {key.dtype} shape {key.shape}")


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    has_aux: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    pmap_axis_name: str | None = None,
    jit: bool = True,
    donate: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """Build ``step(state, batch) -> (new_state, metrics)`` from a pure loss.

  Args:
    loss_fn: ``loss_fn(params, batch, key)`` returning a scalar loss, or ``(loss, aux)`` with ``aux`` a dict of
      scalar metrics when ``has_aux``. The loss must be a *mean* over the batch for data parallelism to equal
      single-device training.
    optimizer: an optax ``GradientTransformation``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    mesh: if given, the step is jitted for data parallelism on this mesh: state replicated, batch split along its
      leading axis over the mesh's ``"data"`` axis.
    pmap_axis_name: build the step for ``jax.pmap(step, axis_name=...)``: gradients, loss and metrics are
      ``pmean``-ed over that axis. The returned function is then not jitted (``pmap`` compiles it).
    jit: jit the step (ignored with ``pmap_axis_name``).
    donate: donate the input state's buffers to the output (saves memory; the input state is invalid afterwards).

  Returns:
    The step function. ``metrics`` always holds ``"loss"`` and ``"grad_norm"`` plus the aux entries.
  """
  if mesh is not None and pmap_axis_name is not None:
    raise ValueError("pass either mesh (sharded jit) or pmap_axis_name (jax.pmap), not both")

  def step(state: TrainState, batch: Batch):
    step_key = jax.random.fold_in(state.key, state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)
    if has_aux:
      (loss, aux), grads = grad_fn(state.params, batch, step_key)
    else:
      loss, grads = grad_fn(state.params, batch, step_key)
      aux = {}
    if pmap_axis_name is not None:
      grads = jax.lax.pmean(grads, pmap_axis_name)
      loss = jax.lax.pmean(loss, pmap_axis_name)
      aux = jax.lax.pmean(aux, pmap_axis_name)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(state.step + 1, params, opt_state, state.key)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return new_state, metrics

  if pmap_axis_name is not None or not jit:
    return step
  donate_argnums = (0,) if donate else ()
  if mesh is None:
    return jax.jit(step, donate_argnums=donate_argnums)
  replicated = parallel.replicated_sharding(mesh)
  return jax.jit(
      step,
      in_shardings=(replicated, parallel.batch_sharding(mesh)),
      out_shardings=(replicated, replicated),
      donate_argnums=donate_argnums,
  )


class ParamsEmaState(NamedTuple):
  """State of :func:`track_params_ema`: the exponential moving average of the parameters."""

  ema: PyTree


def track_params_ema(decay: float) -> optax.GradientTransformation:
  r"""Keep an exponential moving average of the parameters inside the optimizer state.

  Chain it *last* (``optax.chain(optimizer, track_params_ema(0.999))``): it passes the updates through unchanged
  and tracks :math:`\bar\theta \leftarrow d\,\bar\theta + (1 - d)(\theta + u)` — the average of the parameters
  *after* each update. Because it lives in ``opt_state``, the average is checkpointed, resumed and sharded like
  everything else. Read it back with :func:`params_ema`.

  Args:
    decay: :math:`d` in ``[0, 1)``.
  """
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"decay must be in [0, 1), got {decay}")

  def init_fn(params):
    return ParamsEmaState(jax.tree.map(lambda p: jnp.asarray(p).copy(), params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("track_params_ema needs params: call optimizer.update(grads, state, params)")
    ema = jax.tree.map(lambda e, p, u: (decay * e + (1.0 - decay) * (p + u)).astype(e.dtype),
                       state.ema, params, updates)
    return updates, ParamsEmaState(ema)

  return optax.GradientTransformation(init_fn, update_fn)


def params_ema(opt_state: optax.OptState) -> PyTree:
  """The averaged parameters tracked by :func:`track_params_ema` somewhere inside ``opt_state``."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, ParamsEmaState))
           if isinstance(s, ParamsEmaState)]
  if len(found) != 1:
    raise ValueError(f"opt_state must contain exactly one ParamsEmaState (chain track_params_ema), found {len(found)}")
  return found[0].ema


def epoch_batches(data: PyTree, batch_size: int, seed: int, *, shuffle: bool = True) -> BatchFn:
  """A deterministic batch source over in-memory arrays: ``batches(step) -> batch``.

  Step ``k`` reads batch ``k mod S`` of epoch ``k // S`` (``S = N // batch_size``; the remainder of each epoch is
  dropped), with epoch ``e`` shuffled by ``np.random.default_rng([seed, e])``. Being a pure function of the step,
  it needs no state in a checkpoint.

  Args:
    data: a pytree of arrays sharing the leading dimension ``N``.
    batch_size: examples per batch (``1 <= batch_size <= N``).
    seed: shuffling seed.
    shuffle: if False, batches are read in order.
  """
  leaves = jax.tree.leaves(data)
  if not leaves:
    raise ValueError("data must contain at least one array")
  n = int(np.shape(leaves[0])[0])
  for leaf in leaves:
    if np.shape(leaf)[0] != n:
      raise ValueError(f"every array in data must share the leading dimension {n}, got shape {np.shape(leaf)}")
  if not 1 <= batch_size <= n:
    raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
  steps_per_epoch = n // batch_size

  @functools.lru_cache(maxsize=2)
  def permutation(epoch: int) -> np.ndarray:
    if not shuffle:
      return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)

  def batches(step: int) -> Batch:
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    epoch, i = divmod(int(step), steps_per_epoch)
    idx = permutation(epoch)[i * batch_size:(i + 1) * batch_size]
    return jax.tree.map(lambda x: np.asarray(x)[idx], data)

  batches.steps_per_epoch = steps_per_epoch  # type: ignore[attr-defined]
  return batches


class CheckpointWarning(UserWarning):
  """A checkpoint could not be read and an older one was used instead."""


def _restore_newest_readable(ckpt: checkpoint_lib.Checkpointer, target: TrainState) -> tuple[int, TrainState] | None:
  """Restore the newest checkpoint that reads back; warn about (and skip) unreadable newer ones."""
  steps = sorted(ckpt.all_steps(), reverse=True)
  errors = []
  for step in steps:
    try:
      return step, ckpt.restore(step, target)
    except Exception as err:  # orbax raises many types for truncated / corrupted files
      errors.append(f"step {step}: {type(err).__name__}: {err}")
      warnings.warn(f"checkpoint {ckpt.directory / str(step)} is unreadable ({type(err).__name__}: {err}); "
                    "trying the previous one", CheckpointWarning, stacklevel=3)
  if errors:
    raise RuntimeError(f"no readable checkpoint in {ckpt.directory}:\n" + "\n".join(errors))
  return None


class FitResult(NamedTuple):
  state: TrainState
  history: list[dict[str, Any]]  # every record written to metrics.jsonl (train and eval)
  resumed_from: int | None  # the checkpoint step this call started from, if any


def fit(
    state: TrainState,
    train_step: Callable[[TrainState, Batch], tuple[TrainState, Mapping[str, jax.Array]]],
    batches: BatchFn,
    num_steps: int,
    *,
    out_dir: str | os.PathLike | None = None,
    log_every: int = 50,
    checkpoint_every: int | None = None,
    max_to_keep: int | None = 3,
    resume: bool = True,
    eval_fn: EvalFn | None = None,
    eval_every: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
  """Run ``train_step`` until ``state.step == num_steps``, with metrics, checkpoints and exact resume.

  Args:
    state: the initial state (a copy is taken, so a donating ``train_step`` leaves the caller's state valid).
    train_step: from :func:`make_train_step`.
    batches: ``batches(step) -> batch`` (host arrays), e.g. :func:`epoch_batches`. Must be a pure function of the
      step for resume to be exact.
    num_steps: total number of optimizer steps of the run (not of this call).
    out_dir: run folder. Metrics go to ``out_dir/metrics.jsonl`` and checkpoints to ``out_dir/checkpoints``;
      ``None`` keeps everything in memory.
    log_every: write averaged train metrics every this many steps (and at the end).
    checkpoint_every: save a checkpoint every this many steps (and at the end); ``None`` saves only at the end.
      Needs ``out_dir``.
    max_to_keep: checkpoints kept on disk.
    resume: if ``out_dir`` holds checkpoints, continue from the latest instead of starting over.
    eval_fn: ``eval_fn(state) -> dict`` of scalars, run every ``eval_every`` steps and at the end.
    eval_every: evaluation period in steps (``None``: only at the end).
    mesh: data-parallel mesh; batches are sharded over it and the state replicated.
    progress: show a tqdm progress bar.
    desc: progress-bar label.

  Returns:
    :class:`FitResult` with the final state and every metrics record.
  """
  for name, value in (("num_steps", num_steps), ("log_every", log_every)):
    if int(value) < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  for name, value in (("checkpoint_every", checkpoint_every), ("eval_every", eval_every)):
    if value is not None and int(value) < 1:
      raise ValueError(f"{name} must be >= 1 or None, got {value}")
  if checkpoint_every is not None and out_dir is None:
    raise ValueError("checkpoint_every needs out_dir (where checkpoints are written)")

  out_path = Path(out_dir) if out_dir is not None else None
  ckpt = checkpoint_lib.Checkpointer(out_path / "checkpoints", max_to_keep=max_to_keep) if out_path else None
  resumed_from = None
  try:
    restored = _restore_newest_readable(ckpt, state) if ckpt is not None and resume else None
    if restored is not None:
      resumed_from, state = restored
    else:
      state = jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, state)
    if mesh is not None:
      state = parallel.replicate(state, mesh)
    start = int(jax.device_get(state.step))
    if start > num_steps:
      raise ValueError(f"the state is already at step {start}, past num_steps={num_steps}")

    writer = None
    history: list[dict[str, Any]] = []
    if out_path is not None:
      writer = metrics_lib.JsonlWriter(out_path / "metrics.jsonl",
                                       truncate_after_step=start if resumed_from is not None else None)
      if resumed_from is not None:
        history = metrics_lib.read_jsonl(writer.path) if writer.path.exists() else []

    def record(rec: dict[str, Any]) -> None:
      rec = metrics_lib.to_json_safe(rec)
      history.append(rec)
      if writer is not None:
        writer.write(rec)

    pending: list[Mapping[str, jax.Array]] = []
    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)
    with bar:
      for step in range(start, num_steps):
        batch = batches(step)
        if mesh is not None:
          batch = parallel.shard_batch(batch, mesh)
        state, step_metrics = train_step(state, batch)
        pending.append(step_metrics)
        done = step + 1
        bar.update(1)
        if done % log_every == 0 or done == num_steps:
          host = jax.device_get(pending)  # one host sync per logging period
          rec = {"step": done, **{k: float(np.mean([m[k] for m in host])) for k in host[0]}}
          pending = []
          record(rec)
          bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items() if k != "step"}, refresh=False)
        if eval_fn is not None and ((eval_every is not None and done % eval_every == 0) or done == num_steps):
          record({"step": done, **{f"eval/{k}": v for k, v in dict(eval_fn(state)).items()}})
        if ckpt is not None and ((checkpoint_every is not None and done % checkpoint_every == 0)
                                 or done == num_steps):
          ckpt.save(done, state)
    if start == num_steps and eval_fn is not None and not any(
        r.get("step") == num_steps and any(k.startswith("eval/") for k in r) for r in history):
      record({"step": num_steps, **{f"eval/{k}": v for k, v in dict(eval_fn(state)).items()}})
  finally:
    if ckpt is not None:
      ckpt.close()
  return FitResult(state, history, resumed_from)
