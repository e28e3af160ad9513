"""Shared pieces of the fuzz suites: hypothesis settings and the two checks every suite makes."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest
from hypothesis import HealthCheck, settings

FUZZ = settings(max_examples=15, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def raises_clean(call, *names):
  """``call()`` raises ValueError/TypeError whose message names one of ``names`` (as a whole word)."""
  with pytest.raises((ValueError, TypeError)) as info:
    call()
  message = str(info.value)
  assert any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message) for n in names), \
      f"error does not name {names}: {message}"


def finite(tree) -> bool:
  """Every inexact leaf of ``tree`` is finite."""
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact))
