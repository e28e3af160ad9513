"""``kill -9`` of a ``jaxgen reproduce`` run mid-training, then ``--resume``: the run ends bit-identical to an
uninterrupted one (result.json, metrics.jsonl), and a corrupted latest checkpoint falls back to the previous one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SETTINGS = ["--set", "num_steps=600", "--set", "checkpoint_every=100", "--set", "eval_every=100",
            "--set", "hidden=[64]", "--set", "batch_size=64"]


def _command(out: Path, *extra: str) -> list[str]:
  return [sys.executable, "-m", "jaxgen.cli", "reproduce", "mnist-mlp", "--quick", "--no-progress", "--out", str(out),
          *SETTINGS, *extra]


def _env():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)          # one CPU device, like a user's shell
  env["PYTHONWARNINGS"] = "ignore"
  return env


def _checkpoints(run: Path) -> list[int]:
  root = run / "checkpoints"
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def _run_to_end(out: Path, *extra: str) -> subprocess.CompletedProcess:
  done = subprocess.run(_command(out, *extra), env=_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def _deterministic(result_path: Path) -> dict:
  return json.loads(result_path.read_text())


def _rows(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, require_mnist):
  out = tmp_path_factory.mktemp("uninterrupted")
  _run_to_end(out)
  return out / "mnist-mlp"


@pytest.fixture(scope="module")
def require_mnist():
  from jaxgen import data
  rows = {r["name"]: r for r in data.list_datasets()}
  if not rows.get("mnist", {}).get("present"):
    pytest.skip("MNIST is not in $JAXGEN_DATA or ../shared/data")


def test_kill_9_then_resume_is_bit_identical(tmp_path, reference):
  out = tmp_path / "killed"
  proc = subprocess.Popen(_command(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  run = out / "mnist-mlp"
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and proc.poll() is None:
    if any(step >= 200 for step in _checkpoints(run)):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed; make it longer"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not (run / "result.json").exists()
  killed_at = max(_checkpoints(run))
  assert killed_at < 600

  _run_to_end(out, "--resume")
  assert _deterministic(run / "result.json") == _deterministic(reference / "result.json")
  assert _rows(run / "metrics.jsonl") == _rows(reference / "metrics.jsonl")
  timing = json.loads((run / "run.json").read_text())
  assert timing["resumed_from_step"] == killed_at, timing


def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference):
  out = tmp_path / "corrupt"
  shutil.copytree(reference.parent, out)
  run = out / "mnist-mlp"
  steps = _checkpoints(run)
  assert len(steps) >= 2, steps
  (run / "result.json").unlink()
  latest = run / "checkpoints" / str(steps[-1])
  for f in latest.rglob("*"):
    if f.is_file():
      f.write_bytes(b"\x00garbage")
  done = _run_to_end(out, "--resume")
  assert "checkpoint" in done.stderr.lower() and str(steps[-1]) in done.stderr, done.stderr[-2000:]
  assert _deterministic(run / "result.json") == _deterministic(reference / "result.json")
  timing = json.loads((run / "run.json").read_text())
  assert timing["resumed_from_step"] == steps[-2]
