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
