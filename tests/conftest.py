"""Test-wide JAX settings: 8 simulated CPU devices and strict rank promotion.

The device count must be set before JAX initialises its backends, so it is set here, at import time,
before any test module touches ``jax.devices()``.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")

# Fail loudly at collection if another plugin or import initialised JAX first and the settings did not take.
assert jax.config.jax_numpy_rank_promotion == "raise", "jax_numpy_rank_promotion must be 'raise' in tests"


# ---------------------------------------------------------------------------------------------------------------
# Fuzz-case accounting for tests/reliability: every fuzz test calls the session fixture ``fuzz_record(name)`` once
# per generated case; each process (xdist worker or not) writes its counts at session end and the process that
# prints the terminal summary adds them up, so the report is right with and without ``-n auto``.

import collections  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

_FUZZ_ENV = "JAXGEN_FUZZ_COUNTS_DIR"
_fuzz_counts: collections.Counter = collections.Counter()


def pytest_configure(config):
  if not hasattr(config, "workerinput") and _FUZZ_ENV not in os.environ:   # the controller (or a plain run)
    os.environ[_FUZZ_ENV] = tempfile.mkdtemp(prefix=f"jaxgen-fuzz-{uuid.uuid4().hex[:8]}-")


@pytest.fixture(scope="session")
def fuzz_record():
  """``fuzz_record(function_name)``: count one fuzz case for the reliability report."""
  return lambda name: _fuzz_counts.update([name])


def pytest_sessionfinish(session):
  directory = os.environ.get(_FUZZ_ENV)
  if directory and _fuzz_counts:
    with open(os.path.join(directory, f"{os.getpid()}.json"), "w") as f:
      json.dump(dict(_fuzz_counts), f)


def pytest_terminal_summary(terminalreporter, config):
  directory = os.environ.get(_FUZZ_ENV)
  if not directory or not os.path.isdir(directory):
    return
  total: collections.Counter = collections.Counter()
  for name in os.listdir(directory):
    with open(os.path.join(directory, name)) as f:
      total.update(json.load(f))
  if total:
    terminalreporter.section("reliability: fuzz cases per public function")
    for name, count in sorted(total.items()):
      terminalreporter.write_line(f"{count:6d}  {name}")
    terminalreporter.write_line(f"{sum(total.values()):6d}  total over {len(total)} functions")
