"""Data parallelism by sharding: the same jitted step runs on 1 or N devices.

The batch is split along its leading axis over a 1-D mesh axis ``"data"``; parameters and optimizer state are
replicated. XLA inserts the gradient all-reduce, so a loss written as a batch *mean* gives the same result as on
one device (up to the order of floating-point summation across devices).

Multi-host (TPU pods, several GPU hosts): call :func:`initialize_distributed` first thing in the entry point, before
anything touches ``jax.devices()``; build global batches with :func:`global_batch_from_local`; let only
``jax.process_index() == 0`` write files (the library's writers already do).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any
DATA_AXIS = "data"


def initialize_distributed(**kwargs: Any) -> None:
  """Call ``jax.distributed.initialize(**kwargs)`` when running multi-process, else do nothing.

  On Cloud TPU pods no arguments are needed. On GPU clusters pass ``coordinator_address``, ``num_processes`` and
  ``process_id`` (or set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``). Set
  ``JAXGEN_DISTRIBUTED=1`` to force initialisation where JAX's auto-detection applies (TPU pods, SLURM).
  """
  wanted = kwargs or os.environ.get("JAXGEN_DISTRIBUTED") == "1" or "JAX_COORDINATOR_ADDRESS" in os.environ
  if wanted:
    jax.distributed.initialize(**kwargs)


def make_data_mesh(num_devices: int | None = None, axis_name: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh over the first ``num_devices`` devices (default: all)."""
  devices = jax.devices()
  if num_devices is None:
    num_devices = len(devices)
  if not 1 <= num_devices <= len(devices):
    raise ValueError(f"num_devices must be in [1, {len(devices)}], got {num_devices}")
  return Mesh(np.asarray(devices[:num_devices]), (axis_name,))


def batch_sharding(mesh: Mesh, axis_name: str = DATA_AXIS) -> NamedSharding:
  """Shard the leading (batch) axis over ``axis_name``."""
  return NamedSharding(mesh, P(axis_name))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_divisible(batch: PyTree, mesh: Mesh, axis_name: str = DATA_AXIS) -> None:
  """Raise ``ValueError`` if some leaf's leading axis does not split evenly over the mesh axis."""
  n = mesh.shape[axis_name]
  for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
    shape = np.shape(leaf)
    if len(shape) == 0 or shape[0] % n != 0:
      raise ValueError(
          f"batch leaf {jax.tree_util.keystr(path)} has shape {shape}: its leading (batch) axis must be divisible "
          f"by the {n} devices of mesh axis {axis_name!r}")


def shard_batch(batch: PyTree, mesh: Mesh, axis_name: str = DATA_AXIS) -> PyTree:
  """Place ``batch`` on ``mesh``, split along the leading axis."""
  check_batch_divisible(batch, mesh, axis_name)
  return jax.device_put(batch, batch_sharding(mesh, axis_name))


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Place ``tree`` on every device of ``mesh`` (parameters, optimizer state, keys)."""
  return jax.device_put(tree, replicated_sharding(mesh))


def global_batch_from_local(local_batch: PyTree, mesh: Mesh, axis_name: str = DATA_AXIS) -> PyTree:
  """Assemble a global, batch-sharded array from each process's local shard (multi-host)."""
  sharding = batch_sharding(mesh, axis_name)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
