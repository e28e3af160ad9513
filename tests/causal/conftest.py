"""Shared test helpers for jaxgen.causal: float64 everywhere and the reference fixtures."""

import json
import pathlib

import jax
import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "structured"


@pytest.fixture(autouse=True)
def _x64():
  """The parity tolerances (1e-10 / 1e-8) are float64 tolerances."""
  with jax.enable_x64(True):
    yield


def load_fixture(kind: str) -> dict:
  """``colide_{kind}_d10.npz`` as a dict of arrays (the JSON strings decoded)."""
  with np.load(FIXTURES / f"colide_{kind}_d10.npz") as data:
    out = {k: data[k] for k in data.files}
  for key in ("cfg_json", "short_cfg_json", "full_cfg_json"):
    out[key] = json.loads(str(out[key]))
  return out


@pytest.fixture(scope="session", params=["ev", "nv"])
def fixture_data(request):
  return load_fixture(request.param)


@pytest.fixture(scope="session")
def ev_data():
  """The equal-variance fixture (for engine tests that need one realistic dataset)."""
  return load_fixture("ev")
