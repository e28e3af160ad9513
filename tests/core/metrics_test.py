"""Distribution distances against SciPy / closed forms in float64; JSONL writer round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from jaxgen.core import metrics


def test_energy_distance_matches_scipy_1d():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(40, 1)), rng.normal(loc=0.7, scale=1.3, size=(55, 1))
  with jax.enable_x64(True):
    ours = float(metrics.energy_distance(jnp.asarray(x), jnp.asarray(y)))
  assert ours == pytest.approx(scipy.stats.energy_distance(x[:, 0], y[:, 0]) ** 2, rel=1e-10)


def test_energy_distance_properties_and_gradient():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(30, 3)), jnp.float32)
  assert float(metrics.energy_distance(x, x)) == pytest.approx(0.0, abs=1e-6)
  far = metrics.energy_distance(x, x + 3.0)
  near = metrics.energy_distance(x, x + 0.3)
  assert float(far) > float(near) > 0
  grad = jax.grad(lambda s: metrics.energy_distance(x, x + s))(0.0)
  assert np.isfinite(float(grad))
  with pytest.raises(ValueError, match="same dimension"):
    metrics.energy_distance(x, x[:, :2])


def _frechet_reference(mu1, s1, mu2, s2):
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_matches_scipy_sqrtm():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(200, 5)), rng.normal(size=(150, 5)) @ rng.normal(size=(5, 5)) + 0.5
  with jax.enable_x64(True):
    ours = float(metrics.frechet_distance(jnp.asarray(a), jnp.asarray(b)))
  ref = _frechet_reference(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
  assert ours == pytest.approx(ref, rel=1e-8)


def test_frechet_closed_form_for_isotropic_gaussians():
  # N(0, a^2 I) vs N(m, b^2 I): ||m||^2 + d (a - b)^2.
  d, a, b = 4, 1.5, 0.5
  mu2 = jnp.arange(d, dtype=jnp.float32)
  value = metrics.frechet_distance_from_stats(jnp.zeros(d), a**2 * jnp.eye(d), mu2, b**2 * jnp.eye(d))
  assert float(value) == pytest.approx(float(mu2 @ mu2) + d * (a - b) ** 2, rel=1e-5)
  with pytest.raises(ValueError, match="sigma2"):
    metrics.frechet_distance_from_stats(jnp.zeros(d), jnp.eye(d), jnp.zeros(d), jnp.eye(d + 1))


def test_accuracy_and_validation():
  logits = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
  assert float(metrics.accuracy(logits, jnp.array([1, 0, 0]))) == pytest.approx(2 / 3)
  with pytest.raises(TypeError, match="integer"):
    metrics.accuracy(logits, jnp.array([1.0, 0.0, 0.0]))
  with pytest.raises(ValueError, match="labels shape"):
    metrics.accuracy(logits, jnp.array([1, 0]))


def test_jsonl_roundtrip_and_truncation(tmp_path):
  path = tmp_path / "m.jsonl"
  writer = metrics.JsonlWriter(path)
  for step in range(1, 6):
    writer.write({"step": step, "loss": jnp.float32(1.0 / step), "nan": float("nan")})
  records = metrics.read_jsonl(path)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
  assert records[1]["loss"] == pytest.approx(0.5) and records[0]["nan"] == "nan"
  metrics.JsonlWriter(path, truncate_after_step=3)
  assert [r["step"] for r in metrics.read_jsonl(path)] == [1, 2, 3]
  metrics.JsonlWriter(path)  # a fresh run starts a fresh file
  assert not path.exists()
