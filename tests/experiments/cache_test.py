"""The user cache helpers: the persistent XLA compilation cache that ``jaxgen reproduce`` turns on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.experiments import _cache


@pytest.fixture
def restore_jax_cache_config():
  """Isolate the process-wide cache: JAX initialises its persistent cache once per process (private reset)."""
  from jax._src import compilation_cache

  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  before = {n: getattr(jax.config, n) for n in names}
  compilation_cache.reset_cache()
  yield
  for n, v in before.items():
    jax.config.update(n, v)
  compilation_cache.reset_cache()


def test_compilation_cache_goes_under_jaxgen_cache(tmp_path, monkeypatch, restore_jax_cache_config):
  jax.config.update("jax_compilation_cache_dir", None)
  monkeypatch.setenv("JAXGEN_CACHE", str(tmp_path))
  monkeypatch.delenv("JAXGEN_XLA_CACHE", raising=False)
  path = _cache.enable_compilation_cache(min_compile_time_s=0.0)
  assert path == tmp_path / "xla" and path.is_dir()
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0


def test_compilation_cache_respects_user_choice_and_opt_out(tmp_path, monkeypatch, restore_jax_cache_config):
  monkeypatch.setenv("JAXGEN_CACHE", str(tmp_path / "jaxgen"))
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
  assert _cache.enable_compilation_cache() == tmp_path / "mine"
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
  jax.config.update("jax_compilation_cache_dir", None)
  monkeypatch.setenv("JAXGEN_XLA_CACHE", "0")
  assert _cache.enable_compilation_cache() is None
  assert jax.config.jax_compilation_cache_dir is None
  assert not (tmp_path / "jaxgen" / "xla").exists()


def test_compilation_cache_hit_gives_identical_numbers(tmp_path, monkeypatch, restore_jax_cache_config):
  """A program compiled fresh and the same program loaded from the persistent cache compute the same bits."""
  jax.config.update("jax_compilation_cache_dir", None)
  monkeypatch.setenv("JAXGEN_CACHE", str(tmp_path))
  _cache.enable_compilation_cache(min_compile_time_s=0.0)
  x = jnp.linspace(-3.0, 3.0, 4096).reshape(64, 64)

  def program():  # a fresh closure each time: the in-memory jit cache misses, the persistent one must hit
    return jax.jit(lambda a: jnp.tanh(a @ a.T).sum(0) * jnp.exp(-a).mean())

  first = np.asarray(program()(x))
  entries = sorted(p.name for p in (tmp_path / "xla").iterdir())
  assert entries, "nothing was written to the persistent compilation cache"
  second = np.asarray(program()(x))
  assert sorted(p.name for p in (tmp_path / "xla").iterdir()) == entries  # a hit writes no new entry
  np.testing.assert_array_equal(first, second)
