"""Every colab runs in fast mode, and each paired .ipynb holds the same cells as its .py."""

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

COLABS = sorted((Path(__file__).resolve().parents[1] / "colabs").glob("*.py"))


@pytest.mark.parametrize("script", COLABS, ids=[p.stem for p in COLABS])
def test_notebook_in_sync(script):
  notebook = script.with_suffix(".ipynb")
  assert notebook.is_file(), f"{notebook.name} is missing: run jupytext --sync {script}"
  py_cells = [c.source for c in jupytext.read(script).cells]
  nb_cells = [c.source for c in jupytext.read(notebook).cells]
  assert py_cells == nb_cells, f"{notebook.name} differs from {script.name}: run jupytext --sync {script}"


@pytest.fixture(scope="module")
def colab_cache(tmp_path_factory):
  """One model cache for the colabs of this module (per xdist worker): models several colabs share (the
  evaluation classifier, flow models) are trained once, as in a user's session."""
  return tmp_path_factory.mktemp("colab_cache")


@pytest.mark.parametrize("script", COLABS, ids=[p.stem for p in COLABS])
def test_runs_in_fast_mode(script, tmp_path, colab_cache):
  env = {**os.environ, "JAXGEN_FAST": "1", "JAXGEN_CACHE": str(colab_cache), "MPLBACKEND": "Agg",
         "PYTHONWARNINGS": "error::DeprecationWarning"}
  env.pop("XLA_FLAGS", None)
  done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "claim" in done.stdout.lower() or "held" in done.stdout.lower()


@pytest.mark.parametrize("script", COLABS, ids=[p.stem for p in COLABS])
def test_opens_with_install_cell(script):
  code = [c.source for c in jupytext.read(script).cells if c.cell_type == "code"]
  assert code, f"{script.name} has no code cell"
  first = code[0]
  assert 'importlib.util.find_spec("jaxgen") is None' in first and "pip" in first and "JAXGEN_SOURCE" in first, (
      f"{script.name}: the first code cell must install jaxgen on Colab")
  assert "import jaxgen" not in first and "from jaxgen" not in first
