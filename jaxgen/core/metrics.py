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


# ---------------------------------------------------------------------------------------------------------------
# Distribution distances (jittable).
# ---------------------------------------------------------------------------------------------------------------


def _check_samples(name: str, x: jax.Array) -> None:
  if x.ndim != 2:
    raise ValueError(f"{name} must be a [num_samples, dim] array, got shape {x.shape}")
  if x.shape[0] < 2:
    raise ValueError(f"{name} needs at least 2 samples, got {x.shape[0]}")


def _pairwise_mean_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  diff = a[:, None, :] - b[None, :, :]
  # sqrt(0) has an infinite derivative; the where keeps gradients finite on identical points.
  sq = jnp.sum(diff * diff, axis=-1)
  safe = jnp.where(sq > 0, sq, 1.0)
  return jnp.mean(jnp.where(sq > 0, jnp.sqrt(safe), 0.0))


def energy_distance(x: jax.Array, y: jax.Array) -> jax.Array:
  r"""Squared energy distance (V-statistic) between two samples.

  .. math:: D^2(P, Q) = 2\,\mathbb{E}\|X - Y\| - \mathbb{E}\|X - X'\| - \mathbb{E}\|Y - Y'\|

  with all pairs (including ``i = j``) averaged. ``scipy.stats.energy_distance`` returns :math:`D` (the square
  root) for 1-D samples.

  Args:
    x: ``[N, D]`` samples of P.
    y: ``[M, D]`` samples of Q.
  """
  _check_samples("x", x)
  _check_samples("y", y)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
  return (2.0 * _pairwise_mean_distance(x, y) - _pairwise_mean_distance(x, x) - _pairwise_mean_distance(y, y))


def gaussian_stats(features: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and unbiased covariance of ``[N, D]`` features (the statistics Fréchet distance compares)."""
  _check_samples("features", features)
  mu = jnp.mean(features, axis=0)
  centered = features - mu[None, :]
  return mu, centered.T @ centered / (features.shape[0] - 1)


def _psd_sqrt(matrix: jax.Array) -> jax.Array:
  eigvals, eigvecs = jnp.linalg.eigh((matrix + matrix.T) / 2)
  return (eigvecs * jnp.sqrt(jnp.clip(eigvals, 0.0))[None, :]) @ eigvecs.T


def frechet_distance_from_stats(mu1: jax.Array, sigma1: jax.Array, mu2: jax.Array, sigma2: jax.Array) -> jax.Array:
  r"""Fréchet (2-Wasserstein) distance between Gaussians :math:`N(\mu_1, \Sigma_1)` and :math:`N(\mu_2, \Sigma_2)`.

  .. math:: \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\big(\Sigma_1 + \Sigma_2
            - 2 (\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2})^{1/2}\big)

  (the FID formula). The matrix square roots use symmetric eigendecompositions, so the function is jittable and
  real-valued; eigenvalues below zero from round-off are clipped.
  """
  if mu1.shape != mu2.shape or mu1.ndim != 1:
    raise ValueError(f"mu1 and mu2 must be vectors of one shape, got {mu1.shape} and {mu2.shape}")
  d = mu1.shape[0]
  for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
    if s.shape != (d, d):
      raise ValueError(f"{name} must have shape {(d, d)}, got {s.shape}")
  root1 = _psd_sqrt(sigma1)
  middle = root1 @ sigma2 @ root1
  trace_sqrt = jnp.sum(jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh((middle + middle.T) / 2), 0.0)))
  diff = mu1 - mu2
  return diff @ diff + jnp.trace(sigma1) + jnp.trace(sigma2) - 2.0 * trace_sqrt


def frechet_distance(features_1: jax.Array, features_2: jax.Array) -> jax.Array:
  """Fréchet distance between Gaussian fits of two ``[N, D]`` feature sets (FID on the given features)."""
  shape_1, shape_2 = jnp.shape(features_1), jnp.shape(features_2)
  if len(shape_1) != 2 or len(shape_2) != 2 or shape_1[1] != shape_2[1]:
    raise ValueError(f"features_1 and features_2 must be [N, D] arrays with the same D, got {shape_1} and {shape_2}")
  _check_samples("features_1", jnp.asarray(features_1))
  _check_samples("features_2", jnp.asarray(features_2))
  return frechet_distance_from_stats(*gaussian_stats(features_1), *gaussian_stats(features_2))
