"""Tests for the tiny Shakespeare loader and the character vocabulary helpers."""

import numpy as np
import pytest

from jaxgen import data
from jaxgen.data import _files


@pytest.fixture(scope="module")
def text():
  try:
    _files.find_dataset_dir("tinyshakespeare")
  except FileNotFoundError:
    pytest.skip("shared dataset 'tinyshakespeare' not available")
  return data.load_tinyshakespeare()


def test_tinyshakespeare_statistics(text):
  assert isinstance(text, str)
  assert len(text) == 1_115_394
  assert text.count("\n") == 40_000
  assert len(text.split()) == 202_651
  assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")


def test_vocabulary_and_round_trip(text):
  vocabulary = data.char_vocabulary(text)
  assert vocabulary == "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
  ids = data.encode_chars(text, vocabulary)
  assert ids.shape == (1_115_394,) and ids.dtype == np.int32
  assert ids.min() == 0 and ids.max() == 64
  assert data.decode_chars(ids[:14], vocabulary) == "First Citizen:"
  assert data.decode_chars(ids, vocabulary) == text
  n_train = int(0.9 * len(ids))
  assert (n_train, len(ids) - n_train) == (1_003_854, 111_540)  # nanoGPT shakespeare_char split


def test_encode_non_ascii_and_errors():
  vocabulary = data.char_vocabulary("héllo")
  assert vocabulary == "hloé"  # sorted by code point: é (U+00E9) last
  np.testing.assert_array_equal(data.encode_chars("hé", vocabulary), [vocabulary.index("h"), vocabulary.index("é")])
  assert data.decode_chars(data.encode_chars("héllo", vocabulary), vocabulary) == "héllo"
  with pytest.raises(ValueError, match=r"not in vocabulary: \['z'\]"):
    data.encode_chars("hz", "h")
  with pytest.raises(ValueError, match="repeat"):
    data.encode_chars("a", "aa")
  with pytest.raises(ValueError, match=r"ids must lie in \[0, 2\)"):
    data.decode_chars([0, 2], "ab")
  with pytest.raises(TypeError, match="text must be a str"):
    data.char_vocabulary(b"bytes")
  assert data.decode_chars([], "ab") == ""
  with pytest.raises(ValueError, match="integer"):
    data.decode_chars([0.0], "ab")
