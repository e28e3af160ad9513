"""A user cache for trained models that several experiments share (flow models, evaluation classifiers).

Folder: ``$JAXGEN_CACHE`` if set, else ``$XDG_CACHE_HOME/jaxgen``, else ``~/.cache/jaxgen``. Each entry is a folder
``<kind>/<key>`` where ``key`` hashes the entry's config dataclass and :data:`CACHE_VERSION`; the folder holds a
``spec.json`` (what was trained) and the run's ``checkpoints/`` and ``metrics.jsonl``. Training into the entry with
:func:`jaxgen.core.train.fit` makes the cache resumable: an interrupted training continues where it stopped, and a
finished one is loaded without a single step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from jaxgen.core import metrics as metrics_lib

# Bump when a change to the training code makes old cached models stale.
CACHE_VERSION = 1


def cache_root() -> Path:
  if os.environ.get("JAXGEN_CACHE"):
    return Path(os.environ["JAXGEN_CACHE"]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base).expanduser() / "jaxgen"


def entry_dir(kind: str, config: Any) -> Path:
  """The cache folder for ``config`` (a dataclass) of ``kind``; created with its ``spec.json``."""
  spec = {"kind": kind, "version": CACHE_VERSION, "config": metrics_lib.to_json_safe(dataclasses.asdict(config))}
  key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
  path = cache_root() / kind / key
  path.mkdir(parents=True, exist_ok=True)
  spec_path = path / "spec.json"
  if not spec_path.exists():
    metrics_lib.write_json(spec_path, spec)
  return path


def enable_compilation_cache(min_compile_time_s: float = 0.5) -> Path | None:
  """Turn on JAX's persistent compilation cache in ``<cache_root>/xla`` (for the ``jaxgen reproduce`` command).

  The experiments build their jitted programs from fresh closures (one per arm, chunk, seed or preset), so the
  in-memory jit cache misses where the compiled program is in fact identical; the persistent cache is keyed by the
  program itself and hits, in the same run as in later ones. Compiled code is the same either way, so results are
  bit-identical with and without it. Leaves a directory the user already chose (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config``) alone; ``JAXGEN_XLA_CACHE=0`` turns it off. Returns the folder in use, or None.
  """
  import jax

  if os.environ.get("JAXGEN_XLA_CACHE", "1") == "0":
    return None
  current = jax.config.jax_compilation_cache_dir
  if current:
    return Path(current)
  path = cache_root() / "xla"
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
  return path
