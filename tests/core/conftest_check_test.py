"""The test-wide settings from conftest.py are in force."""

import jax
import jax.numpy as jnp
import pytest


def test_eight_simulated_devices():
  assert jax.device_count() == 8


def test_rank_promotion_raises():
  with pytest.raises(ValueError, match="rank"):
    _ = jnp.ones((3,)) + jnp.ones((2, 3))
