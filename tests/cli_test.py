"""The ``jaxgen`` command: list, data list/verify (including a corrupted copy), reproduce argument handling."""

import shutil
import subprocess
import sys

import pytest

from jaxgen import cli, data


def test_list_prints_registry(capsys):
  assert cli.main(["list"]) == 0
  assert "mnist-mlp" in capsys.readouterr().out


def test_reproduce_unknown_name_fails(capsys):
  assert cli.main(["reproduce", "no-such-thing", "--quick"]) == 2
  assert "unknown experiment" in capsys.readouterr().err


def test_data_list_and_verify_shipped(capsys):
  rows = data.list_datasets()
  if not any(r["present"] for r in rows):
    pytest.skip("no dataset found in $JAXGEN_DATA or ../shared/data")
  assert cli.main(["data", "list"]) == 0
  out = capsys.readouterr().out
  assert "mnist" in out and "planetoid" in out
  assert cli.main(["data", "verify"]) == 0
  out = capsys.readouterr().out
  assert "CORRUPT" not in out
  present = [r["name"] for r in rows if r["present"]]
  for name in present:
    assert f"{name}" in out


def test_data_verify_refuses_corrupted_copy_by_name(tmp_path, monkeypatch, capsys):
  source = data.list_datasets()
  sachs = [r for r in source if r["name"] == "sachs"]
  if not sachs or not sachs[0]["present"]:
    pytest.skip("sachs dataset absent")
  root = data.data_root()
  shutil.copytree(root / "sachs", tmp_path / "sachs")
  target = tmp_path / "sachs" / "sachs_cd3cd28.csv"
  raw = bytearray(target.read_bytes())
  raw[100] ^= 0x01
  target.write_bytes(bytes(raw))
  monkeypatch.setenv("JAXGEN_DATA", str(tmp_path))
  assert cli.main(["data", "verify"]) == 1
  out = capsys.readouterr().out
  line = [l for l in out.splitlines() if l.startswith("sachs")][0]
  assert "CORRUPT" in line and "sachs_cd3cd28.csv" in line
  with pytest.raises(ValueError, match="sachs_cd3cd28.csv"):
    data.load_sachs()


def test_console_script_entry_point():
  out = subprocess.run([sys.executable, "-m", "jaxgen.cli", "list"], capture_output=True, text=True, check=True)
  assert "mnist-mlp" in out.stdout


def test_parse_sets():
  assert cli._parse_sets(["model.width=128", "dataset=fashion_mnist", "sample_steps=(1, 2)"]) == {
      "model.width": 128, "dataset": "fashion_mnist", "sample_steps": (1, 2)}
  with pytest.raises(SystemExit):
    cli._parse_sets(["novalue"])
