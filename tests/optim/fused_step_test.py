"""The compiled SPAM / Stable-SPAM steps update donated moments in place, and the one-pass reductions are exact.

The speed target itself is measured by ``benchmarks/optimizer_step.py``; these tests pin the structure that makes
it possible (a regression that re-introduces full-size copies of the state or a library reduction fails here).
"""

import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen import optim

spam_module = importlib.import_module("jaxgen.optim.spam")

SHAPES = {"a": (64, 48), "b": (96,), "c": (8, 16, 4)}


def _compiled_step_text(tx):
  params = {k: jnp.ones(s, jnp.float32) for k, s in SHAPES.items()}

  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  return jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params).compile().as_text()


@pytest.mark.parametrize("name, tx", [
    ("adamw", optax.adamw(1e-3, weight_decay=0.1)),
    ("spam", optim.spam(1e-3, weight_decay=0.1)),
    ("stable_spam", optim.stable_spam(1e-3, weight_decay=0.1, total_steps=100)),
    ("stable_spam_clean", optim.stable_spam(1e-3, reference_quirks=False)),
])
def test_no_full_size_copies_and_no_library_reductions(name, tx):
  text = _compiled_step_text(tx)
  entry = text[text.index("ENTRY"):]
  array_copies = [line for line in entry.splitlines() if re.search(r"= f32\[\d[^\]]*\]\S* copy\(", line)]
  assert not array_copies, f"{name}: full-size copies in the compiled step:\n" + "\n".join(array_copies)
  assert "ynn_fusion" not in text and "xnn_fusion" not in text, name
  # Per leaf: at most two reduction passes over the gradient and three elementwise kernels (m, v, params).
  big = [line for line in entry.splitlines() if " fusion(" in line and re.search(r"= \(?f32\[(64,48|96|8,16,4)\]", line)]
  assert len(big) <= 3 * len(SHAPES), (name, len(big))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16])
def test_max_abs_matches_numpy_including_nan_and_inf(dtype):
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    x = rng.normal(size=(37, 5)) * 10
    cases = [x, np.zeros((3,)), -np.abs(x), x.copy(), x.copy(), x.copy(), np.array([-0.0, 0.0])]
    cases[3][4, 2] = np.inf
    cases[4][0, 0] = -np.inf
    cases[5][36, 4] = np.nan
    for case in cases:
      arr = jnp.asarray(case, dtype)
      got = jax.jit(spam_module._max_abs)(arr)
      want = np.max(np.abs(np.asarray(arr, np.float64)))
      assert got.dtype == dtype
      if np.isnan(want):
        assert np.isnan(float(got))
      else:
        assert float(got) == want


def test_sum_sq_and_abs_matches_numpy_at_every_level_count():
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    for size in (1, 17, 255, 256, 4096, 16 * 16 * 16 * 3, 70001):
      x = rng.normal(size=(size,))
      sq, ab = jax.jit(spam_module._sum_sq_and_abs)(jnp.asarray(x))
      np.testing.assert_allclose(float(sq), np.sum(x * x), rtol=1e-12)
      np.testing.assert_allclose(float(ab), np.sum(np.abs(x)), rtol=1e-12)
