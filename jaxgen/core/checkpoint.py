"""Orbax checkpoints of arbitrary train-state pytrees, restored against an abstract target.

A small wrapper over ``orbax.checkpoint.CheckpointManager``:

* :func:`save` writes ``state`` under ``<directory>/<step>`` (asynchronously; :meth:`Checkpointer.close` or
  :meth:`Checkpointer.wait` blocks until it is on disk),
* :func:`restore` reads a step back into the *structure* of an abstract target (``jax.eval_shape`` of the
  initial state), so ``NamedTuple`` states (``TrainState``, optax states) come back as ``NamedTuple`` objects,
  with the target's dtypes and, when given, its shardings.

Typed PRNG keys (``jax.random.key``) are stored as their raw ``uint32`` key data and re-wrapped on restore with the
implementation recorded in the target, because orbax stores plain numeric arrays only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_keys_to_data(tree: PyTree) -> PyTree:
  """Map typed-key leaves of an abstract target to the ShapeDtypeStruct of their key data."""

  def convert(x):
    if _is_key(x):
      data = jax.eval_shape(jax.random.key_data, x)
      sharding = getattr(x, "sharding", None)
      return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding) if sharding is not None else data
    return x

  return jax.tree.map(convert, tree)


def _data_to_keys(restored: PyTree, target: PyTree) -> PyTree:
  def convert(value, abstract):
    if _is_key(abstract):
      impl = jax.random.key_impl(abstract) if not isinstance(abstract, jax.ShapeDtypeStruct) else abstract.dtype._impl  # noqa: SLF001
      return jax.random.wrap_key_data(value, impl=impl)
    return value

  return jax.tree.map(convert, restored, target)


def abstract_like(tree: PyTree) -> PyTree:
  """``ShapeDtypeStruct`` tree of ``tree`` (keeping shardings of committed arrays)."""

  def to_abstract(x):
    x = jnp.asarray(x) if isinstance(x, (np.ndarray, np.generic, int, float)) else x
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  return jax.tree.map(to_abstract, tree)


class Checkpointer:
  """Periodic checkpoints of one run in ``directory`` (one sub-folder per step).

  Args:
    directory: where checkpoints live; created if absent. Must be an absolute or relative local path.
    max_to_keep: how many most recent checkpoints to keep (``None`` keeps all).
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
    self.directory = Path(directory).absolute()
    self.directory.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest step with a finished checkpoint, or ``None``."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: PyTree, *, force: bool = False) -> bool:
    """Start saving ``state`` as ``step`` (asynchronous). Returns whether a save was started."""
    return self._manager.save(int(step), args=ocp.args.StandardSave(_keys_to_data(state)), force=force)

  def restore(self, step: int | None, target: PyTree) -> PyTree:
    """Restore ``step`` (default: latest) into the structure, dtypes and shardings of ``target``.

    Args:
      step: the step to restore, or ``None`` for the latest.
      target: a concrete or abstract (``jax.eval_shape``) state with the tree structure to restore into.
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint found in {self.directory}")
    abstract = _abstract_keys_to_data(abstract_like(target) if not _all_abstract(target) else target)
    restored = self._manager.restore(int(step), args=ocp.args.StandardRestore(abstract))
    return _data_to_keys(restored, target)

  def wait(self) -> None:
    """Block until every started save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _all_abstract(tree: PyTree) -> bool:
  return all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(tree))


def save(directory: str | os.PathLike, step: int, state: PyTree) -> None:
  """Save one checkpoint synchronously (convenience for scripts)."""
  with Checkpointer(directory, max_to_keep=None) as ckpt:
    ckpt.save(step, state, force=True)


def restore(directory: str | os.PathLike, target: PyTree, step: int | None = None) -> PyTree:
  """Restore ``step`` (default latest) from ``directory`` into the structure of ``target``."""
  with Checkpointer(directory, max_to_keep=None) as ckpt:
    return ckpt.restore(step, target)
