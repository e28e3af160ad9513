"""Tests for data-root resolution, the sha256 registry, verification caching, list_datasets and verify_datasets."""

import os
import re
from pathlib import Path

import pytest

import jaxgen
from jaxgen import data
from jaxgen.data import _files

_ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|", re.M)


@pytest.mark.parametrize("name", sorted(_files.DATASETS))
def test_registry_equals_source_md(name, require_dataset):
  """The constants in the code are exactly the (file, bytes, sha256) rows of the folder's SOURCE.md."""
  source = (require_dataset(name) / "SOURCE.md").read_text(encoding="utf-8")
  rows = {path: (int(size), digest) for path, size, digest in _ROW.findall(source)}
  assert rows, f"no file table parsed from {name}/SOURCE.md"
  assert dict(_files.DATASETS[name].files) == rows


def test_registry_covers_every_shipped_file(require_dataset):
  """Every data file in every folder is registered (documentation files are the only exception)."""
  for name, info in _files.DATASETS.items():
    folder = require_dataset(name)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert on_disk - {"SOURCE.md"} == set(info.files), name


def test_candidate_roots_order(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXGEN_DATA", str(tmp_path / "env"))
  (tmp_path / "work" / "cwd").mkdir(parents=True)
  monkeypatch.chdir(tmp_path / "work" / "cwd")
  roots = [root for root, _ in _files.candidate_roots()]
  assert roots == [
      tmp_path / "env",
      Path(jaxgen.__file__).resolve().parents[2] / "shared" / "data",
      tmp_path / "work" / "shared" / "data",
  ]
  # An explicit data_dir overrides everything.
  assert [root for root, _ in _files.candidate_roots(tmp_path / "x")] == [tmp_path / "x"]
  monkeypatch.setenv("JAXGEN_DATA", "")
  assert tmp_path / "env" not in [root for root, _ in _files.candidate_roots()]


def test_default_root_is_shared_data_beside_repo(require_dataset, monkeypatch):
  monkeypatch.delenv("JAXGEN_DATA", raising=False)
  expected = Path(jaxgen.__file__).resolve().parents[2] / "shared" / "data" / "sachs"
  if not expected.is_dir():
    pytest.skip("no shared/data beside the repository")
  assert _files.find_dataset_dir("sachs") == expected


def test_data_root(tmp_path, monkeypatch, require_dataset):
  monkeypatch.delenv("JAXGEN_DATA", raising=False)
  assert data.data_root() == require_dataset("sachs").parent
  (tmp_path / "sachs").mkdir()
  monkeypatch.setenv("JAXGEN_DATA", str(tmp_path))
  assert data.data_root() == tmp_path
  assert data.data_root(tmp_path) == tmp_path
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty"))):
    data.data_root(tmp_path / "empty")


def test_missing_dataset_names_every_directory_searched(tmp_path, monkeypatch):
  repo = tmp_path / "repo"
  (repo / "jaxgen").mkdir(parents=True)
  (tmp_path / "work" / "cwd").mkdir(parents=True)
  monkeypatch.setattr(jaxgen, "__file__", str(repo / "jaxgen" / "__init__.py"))
  monkeypatch.setenv("JAXGEN_DATA", str(tmp_path / "env"))
  monkeypatch.chdir(tmp_path / "work" / "cwd")
  with pytest.raises(FileNotFoundError) as info:
    data.load_mnist()
  message = str(info.value)
  for searched in (tmp_path / "env", tmp_path / "shared" / "data", tmp_path / "work" / "shared" / "data"):
    assert str(searched / "mnist") in message
  assert "JAXGEN_DATA" in message and "../shared/data/mnist/" in message
  assert "https://github.com/fgnt/mnist" in message and "train-images-idx3-ubyte.gz" in message


def test_data_dir_argument_is_exclusive(tmp_path, require_dataset):
  require_dataset("tinyshakespeare")  # present in the default location, but must not be used
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "tinyshakespeare"))):
    data.load_tinyshakespeare(data_dir=tmp_path)
  with pytest.raises(TypeError, match="data_dir"):
    data.load_tinyshakespeare(data_dir=3)


def test_missing_file_in_present_folder(copy_dataset):
  root = copy_dataset("tinyshakespeare")
  (root / "tinyshakespeare" / "input.txt").unlink()
  with pytest.raises(FileNotFoundError, match=r"file 'input\.txt' is missing"):
    data.load_tinyshakespeare(data_dir=root)
  report = {r["name"]: r for r in data.verify_datasets(data_dir=root)}
  assert report["tinyshakespeare"]["status"] == "missing"
  assert "input.txt" in report["tinyshakespeare"]["detail"]
  assert report["mnist"]["status"] == "missing" and str(root / "mnist") in report["mnist"]["detail"]


def test_env_var_dataset_wins_and_corruption_is_reported(copy_dataset, corrupt, monkeypatch):
  root = copy_dataset("sachs")
  corrupt(root / "sachs" / "sachs_cd3cd28.csv")
  monkeypatch.setenv("JAXGEN_DATA", str(root))
  assert _files.find_dataset_dir("sachs") == root / "sachs"
  with pytest.raises(ValueError) as info:
    data.load_sachs()
  message = str(info.value)
  assert "'sachs'" in message and "sachs_cd3cd28.csv" in message
  assert _files.DATASETS["sachs"].files["sachs_cd3cd28.csv"][1] in message  # expected hash
  assert _files.sha256_file(root / "sachs" / "sachs_cd3cd28.csv") in message  # actual hash

  report = {r["name"]: r for r in data.verify_datasets()}
  assert report["sachs"]["status"] == "corrupt"
  assert report["sachs"]["corrupt_files"] == ["sachs_cd3cd28.csv"]
  assert "sachs_cd3cd28.csv" in report["sachs"]["detail"]
  # Other datasets are not under $JAXGEN_DATA: they resolve to the shared folder and verify.
  others = {name: r["status"] for name, r in report.items() if name != "sachs"}
  assert others == {name: "ok" for name in _files.DATASETS if name != "sachs"}
  assert all(r["path"] != str(root / name) for name, r in report.items() if name != "sachs")


def test_size_mismatch_is_reported(copy_dataset):
  root = copy_dataset("sachs")
  with open(root / "sachs" / "ground_truth_17_edges.csv", "ab") as f:
    f.write(b"Raf,Jnk\n")
  with pytest.raises(ValueError, match=r"ground_truth_17_edges\.csv.*size 164 bytes, expected 156"):
    data.load_sachs(data_dir=root)


def test_verification_is_cached_per_path_mtime_size(copy_dataset, monkeypatch):
  root = copy_dataset("sachs")
  calls = []
  real_sha256 = _files.sha256_file

  def counting_sha256(path):
    calls.append(Path(path).name)
    return real_sha256(path)

  monkeypatch.setattr(_files, "sha256_file", counting_sha256)
  data.load_sachs(data_dir=root)
  assert sorted(calls) == ["ground_truth_17_edges.csv", "sachs_cd3cd28.csv"]
  data.load_sachs(data_dir=root)
  assert len(calls) == 2  # second load: no re-hash
  csv = root / "sachs" / "sachs_cd3cd28.csv"
  stat = csv.stat()
  os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
  data.load_sachs(data_dir=root)
  assert calls[2:] == ["sachs_cd3cd28.csv"]  # a new mtime forces a re-hash of that file only
  data.verify_datasets(data_dir=root)
  assert calls.count("sachs_cd3cd28.csv") == 3  # verify_datasets never trusts the cache


def test_failed_verification_is_not_cached(copy_dataset, corrupt):
  root = copy_dataset("tinyshakespeare")
  path = root / "tinyshakespeare" / "input.txt"
  original = path.read_bytes()
  corrupt(path)
  stat = path.stat()
  with pytest.raises(ValueError, match="input.txt"):
    data.load_tinyshakespeare(data_dir=root)
  with pytest.raises(ValueError, match="input.txt"):
    data.load_tinyshakespeare(data_dir=root)
  path.write_bytes(original)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same path, mtime and size as the corrupt version
  assert len(data.load_tinyshakespeare(data_dir=root)) == 1115394


def test_list_datasets(require_dataset):
  listing = data.list_datasets()
  assert [d["name"] for d in listing] == list(_files.DATASETS)
  for entry in listing:
    assert {"name", "files", "size_bytes", "present"} <= set(entry)
    info = _files.DATASETS[entry["name"]]
    assert entry["files"] == len(info.files)
    assert entry["size_bytes"] == sum(size for size, _ in info.files.values())
  mnist = next(d for d in listing if d["name"] == "mnist")
  require_dataset("mnist")
  assert mnist["present"] and mnist["files"] == 4 and mnist["size_bytes"] == 11594722


def test_list_datasets_without_data(tmp_path):
  listing = data.list_datasets(data_dir=tmp_path)
  assert len(listing) == 9 and not any(d["present"] for d in listing)
  assert all(d["path"] is None for d in listing)


def test_verify_datasets_all_ok(require_dataset):
  for name in _files.DATASETS:
    require_dataset(name)
  report = data.verify_datasets()
  assert [(r["name"], r["status"]) for r in report] == [(name, "ok") for name in _files.DATASETS]
  assert all({"name", "status", "detail"} <= set(r) for r in report)


@pytest.mark.parametrize(
    "value, allowed, error",
    [("x", ("a", "b"), ValueError), (3, ("a", "b"), TypeError), (True, (0, 1), TypeError)],
)
def test_check_choice(value, allowed, error):
  with pytest.raises(error, match=r"arg must be"):
    _files.check_choice("arg", value, allowed)
