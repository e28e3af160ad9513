"""Tests for the Sachs, German Credit and HELOC loaders against their SOURCE.md statistics."""

import numpy as np
import pytest

from jaxgen import data
from jaxgen.data import _files

_SACHS_MEAN = [59.31, 30.03, 19.49, 81.55, 30.46, 22.18, 41.98, 567.02, 15.02, 34.02, 38.46]
_SACHS_STD = [41.84, 27.45, 14.67, 93.51, 34.20, 89.89, 126.66, 427.80, 11.59, 19.42, 43.09]
_SACHS_EDGES = {
    ("Raf", "Mek"), ("Mek", "Erk"), ("Plcg", "PIP2"), ("Plcg", "PIP3"), ("PIP3", "PIP2"), ("Erk", "Akt"),
    ("PKA", "Akt"), ("PKA", "Erk"), ("PKA", "Jnk"), ("PKA", "Mek"), ("PKA", "P38"), ("PKA", "Raf"),
    ("PKC", "Jnk"), ("PKC", "Mek"), ("PKC", "P38"), ("PKC", "PKA"), ("PKC", "Raf"),
}


def _require(name):
  try:
    _files.find_dataset_dir(name)
  except FileNotFoundError:
    pytest.skip(f"shared dataset '{name}' not available")


def _edges(ds):
  return {(ds.variable_names[i], ds.variable_names[j]) for i, j in zip(*np.nonzero(ds.adjacency))}


def _is_dag(adjacency):
  power = np.eye(len(adjacency), dtype=np.int64)
  for _ in range(len(adjacency)):
    power = power @ adjacency
  return not power.any()


def test_sachs():
  _require("sachs")
  ds = data.load_sachs()
  assert ds._fields == ("data", "variable_names", "adjacency")
  assert ds.data.shape == (853, 11) and ds.data.dtype == np.float64
  assert ds.variable_names == data.SACHS_VARIABLES and ds.variable_names[0] == "Raf"  # BOM stripped
  assert (ds.data > 0).all()
  np.testing.assert_allclose(ds.data.mean(axis=0), _SACHS_MEAN, atol=0.006)
  np.testing.assert_allclose(ds.data.std(axis=0, ddof=1), _SACHS_STD, atol=0.006)
  np.testing.assert_allclose(ds.data[0], [26.4, 13.2, 8.82, 18.3, 58.8, 6.61, 17, 414, 17, 44.9, 40])
  assert ds.adjacency.shape == (11, 11) and ds.adjacency.dtype == np.int32
  assert ds.adjacency.sum() == 17 and _edges(ds) == _SACHS_EDGES
  assert _is_dag(ds.adjacency)


def test_sachs_cmu_ground_truth():
  _require("sachs")
  consensus, cmu = data.load_sachs(), data.load_sachs(ground_truth="cmu20")
  np.testing.assert_array_equal(cmu.data, consensus.data)
  assert cmu.adjacency.sum() == 20 and _is_dag(cmu.adjacency)
  assert _edges(cmu) - _edges(consensus) == {("PIP2", "PKC"), ("Plcg", "PKC"), ("PIP3", "Akt"), ("PIP3", "Plcg")}
  assert _edges(consensus) - _edges(cmu) == {("Plcg", "PIP3")}
  with pytest.raises(ValueError, match=r"ground_truth must be one of \('consensus17', 'cmu20'\)"):
    data.load_sachs(ground_truth="bnlearn")


def test_german_credit_integer_codes():
  _require("credit")
  ds = data.load_german_credit()
  assert ds._fields == ("features", "labels", "feature_names", "categorical")
  assert ds.features.shape == (1000, 20) and ds.features.dtype == np.float32
  assert ds.labels.dtype == np.int32 and np.bincount(ds.labels).tolist() == [300, 700]  # 1 = good (700)
  names = list(ds.feature_names)
  amount, age = ds.features[:, names.index("credit_amount")], ds.features[:, names.index("age")]
  assert (amount.min(), amount.max(), age.min(), age.max()) == (250, 18424, 19, 75)
  assert ds.categorical.sum() == 13 and not ds.categorical[[1, 4, 7, 10, 12, 15, 17]].any()
  # First row of german.data: A11 6 A34 A43 1169 A65 A75 4 A93 A101 4 A121 67 A143 A152 2 A173 1 A192 A201 1
  np.testing.assert_array_equal(ds.features[0], [0, 6, 4, 3, 1169, 4, 4, 4, 2, 0, 4, 0, 67, 2, 1, 2, 2, 1, 1, 0])
  assert ds.labels[0] == 1 and ds.labels[1] == 0  # row 2 has class 2 (bad)
  for j, (_, codes) in enumerate(data.GERMAN_CREDIT_ATTRIBUTES):
    if codes is not None:
      assert ds.features[:, j].max() < len(codes)


def test_german_credit_onehot():
  _require("credit")
  integer, onehot = data.load_german_credit(), data.load_german_credit(encoding="onehot")
  assert onehot.features.shape == (1000, 63) and onehot.categorical.sum() == 56
  np.testing.assert_array_equal(onehot.labels, integer.labels)
  names = list(onehot.feature_names)
  assert not onehot.features[:, names.index("purpose=A47")].any()  # documented but never used
  for j, (attribute, codes) in enumerate(data.GERMAN_CREDIT_ATTRIBUTES):
    if codes is None:
      np.testing.assert_array_equal(onehot.features[:, names.index(attribute)], integer.features[:, j])
      continue
    block = onehot.features[:, [names.index(f"{attribute}={code}") for code in codes]]
    np.testing.assert_array_equal(block.sum(axis=1), 1.0)
    np.testing.assert_array_equal(block.argmax(axis=1), integer.features[:, j])
  with pytest.raises(ValueError, match=r"encoding must be one of \('integer', 'onehot'\)"):
    data.load_german_credit(encoding="ordinal")


def test_heloc():
  _require("credit")
  train, test, full = (data.load_heloc(split=s) for s in ("train", "test", "all"))
  assert train.features.shape == (7403, 21) and test.features.shape == (2468, 21)
  assert np.bincount(train.labels).tolist() == [3855, 3548] and np.bincount(test.labels).tolist() == [1281, 1187]
  np.testing.assert_array_equal(full.features, np.concatenate([train.features, test.features]))
  assert np.bincount(full.labels).tolist() == [5136, 4735]  # Bad / Good after CARLA's filtering
  assert full.feature_names[0] == "ExternalRiskEstimate" and full.feature_names[-1] == "PercentTradesWBalance"
  assert "RiskPerformance" not in full.feature_names
  assert full.features.min() >= 0 and not full.categorical.any()
  np.testing.assert_array_equal(train.features[0, :3], [82.0, 215.0, 32.0])
  with pytest.raises(ValueError, match=r"split must be one of \('all', 'train', 'test'\)"):
    data.load_heloc(split="val")


def test_credit_corrupt_file(copy_dataset, corrupt, monkeypatch):
  root = copy_dataset("credit")
  corrupt(root / "credit" / "heloc" / "heloc_test.csv")
  monkeypatch.setenv("JAXGEN_DATA", str(root))
  assert data.load_german_credit().features.shape == (1000, 20)
  with pytest.raises(ValueError, match=r"'credit'.*heloc/heloc_test\.csv"):
    data.load_heloc()
  assert data.load_heloc(split="train").features.shape == (7403, 21)
