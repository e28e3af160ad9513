"""Shared helpers for the data-loader tests: locating the real data, copying a dataset, corrupting a file.

Tests that need a shipped dataset skip (with the reason) when it cannot be found at all; a found-but-corrupt dataset
fails them.
"""

import json
import shutil
from pathlib import Path

import pytest

import jaxgen
from jaxgen.data import _files

SHARED = Path(jaxgen.__file__).resolve().parents[2] / "shared"


def _dataset_dir(name: str) -> Path:
  try:
    return _files.find_dataset_dir(name)
  except FileNotFoundError as e:
    pytest.skip(f"shared dataset '{name}' not available: {e}")


@pytest.fixture
def require_dataset():
  """``require_dataset(name) -> Path`` of the real dataset folder, or skip the test."""
  return _dataset_dir


@pytest.fixture
def copy_dataset(tmp_path):
  """``copy_dataset(name) -> root``: copies the real ``<name>/`` folder to ``<tmp>/root/<name>/``."""

  def copy(name: str) -> Path:
    root = tmp_path / "root"
    shutil.copytree(_dataset_dir(name), root / name)
    return root

  return copy


def flip_byte(path: Path, offset: int = 100) -> None:
  """XORs one byte of ``path`` in place (keeps the size, changes the hash)."""
  original = path.read_bytes()
  data = bytearray(original)
  data[offset % len(data)] ^= 0xFF
  path.write_bytes(bytes(data))
  assert path.read_bytes() != original and len(data) == len(original)


@pytest.fixture
def corrupt():
  """``corrupt(path, offset=100)`` flips one byte of a file."""
  return flip_byte


@pytest.fixture(scope="session")
def graph_stats():
  """Expected graph statistics from ``shared/fixtures/graph/dataset_stats.json``."""
  path = SHARED / "fixtures" / "graph" / "dataset_stats.json"
  if not path.is_file():
    pytest.skip(f"{path} not available")
  return json.loads(path.read_text())
