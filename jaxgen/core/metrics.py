"""Metrics on the host: a JSONL writer, JSON-safe conversion, and accuracy helpers.

``metrics.jsonl`` holds one JSON object per line, e.g. ``{"step": 10, "loss": 0.42}``. Only the host process
with ``jax.process_index() == 0`` writes (multi-host runs).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def to_json_safe(value: Any) -> Any:
  """Convert arrays / NumPy scalars / tuples inside ``value`` to plain JSON types.

  Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` so the file stays valid JSON.
  """
  if isinstance(value, Mapping):
    return {str(k): to_json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json_safe(v) for v in value]
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    arr = np.asarray(value)
    return to_json_safe(arr.item() if arr.ndim == 0 else arr.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
  if isinstance(value, Path):
    return str(value)
  return value


class JsonlWriter:
  """Append-only JSONL metrics file. Each :meth:`write` appends one line and flushes.

  Args:
    path: the ``metrics.jsonl`` file; parent folders are created.
    truncate_after_step: if given, existing records with ``step`` greater than this are dropped first (used when a
      run resumes from a checkpoint, so the file never holds two records for one step).
  """

  def __init__(self, path: str | os.PathLike, *, truncate_after_step: int | None = None):
    self.path = Path(path)
    self._active = jax.process_index() == 0
    if not self._active:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if truncate_after_step is not None and self.path.exists():
      kept = [r for r in read_jsonl(self.path) if int(r.get("step", -1)) <= truncate_after_step]
      self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    elif truncate_after_step is None and self.path.exists():
      self.path.unlink()

  def write(self, record: Mapping[str, Any]) -> None:
    if not self._active:
      return
    with self.path.open("a") as f:
      f.write(json.dumps(to_json_safe(record)) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Read every record of a JSONL file."""
  with Path(path).open() as f:
    return [json.loads(line) for line in f if line.strip()]


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Write ``obj`` as pretty JSON (arrays converted)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(to_json_safe(obj), indent=2, sort_keys=False) + "\n")


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose arg-max over the last axis equals ``labels``.

  Args:
    logits: ``[..., C]`` scores.
    labels: ``[...]`` integer class ids.
  """
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f"logits batch shape {logits.shape[:-1]} must equal labels shape {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def mean_records(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
  """Average each key over a list of metric dicts (host side)."""
  records = list(records)
  if not records:
    return {}
  keys = records[0].keys()
  return {k: float(np.mean([float(r[k]) for r in records])) for k in keys}
