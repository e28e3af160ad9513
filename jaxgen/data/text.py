"""Character-level text: tiny Shakespeare (Karpathy's char-rnn corpus) and small vocabulary helpers.

The corpus is 1,115,394 ASCII characters with a 65-character vocabulary (newline, space, ``!$&',-.3:;?``, A-Z, a-z).
The usual split (nanoGPT ``shakespeare_char``) is the first 90 % of characters for training (1,003,854) and the rest
for validation (111,540): ``ids[:int(0.9 * len(ids))]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxgen.data import _files
from jaxgen.data._files import PathLike


def load_tinyshakespeare(data_dir: PathLike | None = None) -> str:
  """Returns the whole tiny Shakespeare corpus (``input.txt``) as one str after verifying its sha256.

  Args:
    data_dir: data root containing ``tinyshakespeare/``; default: ``$JAXGEN_DATA``, then ``../shared/data``.

  Raises:
    FileNotFoundError: the dataset is not found (the message lists the directories searched).
    ValueError: the file fails its sha256 check.
  """
  path = _files.dataset_files("tinyshakespeare", ["input.txt"], data_dir)["input.txt"]
  return path.read_bytes().decode("ascii")


def char_vocabulary(text: str) -> str:
  """The sorted distinct characters of ``text`` as one str; index ``i`` is the id of character ``vocabulary[i]``."""
  if not isinstance(text, str):
    raise TypeError(f"text must be a str, got {type(text).__name__}")
  return "".join(sorted(set(text)))


def encode_chars(text: str, vocabulary: str) -> np.ndarray:
  """Maps every character of ``text`` to its index in ``vocabulary``; returns int32 ``[len(text)]``.

  Raises:
    ValueError: ``text`` contains characters missing from ``vocabulary`` (they are named), or ``vocabulary``
      repeats a character.
  """
  if not isinstance(text, str) or not isinstance(vocabulary, str):
    raise TypeError("text and vocabulary must both be str")
  if len(set(vocabulary)) != len(vocabulary):
    raise ValueError("vocabulary must not repeat characters")
  unknown = set(text) - set(vocabulary)
  if unknown:
    raise ValueError(f"text contains characters not in vocabulary: {sorted(unknown)!r}")
  if text.isascii() and vocabulary.isascii():  # fast path: a 128-entry lookup table over the bytes
    table = np.full(128, -1, np.int32)
    table[np.frombuffer(vocabulary.encode("ascii"), np.uint8)] = np.arange(len(vocabulary), dtype=np.int32)
    return table[np.frombuffer(text.encode("ascii"), np.uint8)]
  index = {c: i for i, c in enumerate(vocabulary)}
  return np.fromiter((index[c] for c in text), np.int32, len(text))


def decode_chars(ids: Sequence[int] | np.ndarray, vocabulary: str) -> str:
  """Inverse of :func:`encode_chars`: joins ``vocabulary[i]`` for every id (each id in ``[0, len(vocabulary))``).

  >>> vocab = char_vocabulary("to be or not")
  >>> vocab
  ' benort'
  >>> ids = encode_chars("be not", vocab)
  >>> ids.tolist(), decode_chars(ids, vocab)
  ([1, 2, 0, 3, 4, 6], 'be not')
  """
  ids = np.asarray(ids)
  if ids.ndim == 1 and ids.size == 0:
    return ""
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"ids must be a 1-D integer sequence, got shape {ids.shape} and dtype {ids.dtype}")
  if ids.min() < 0 or ids.max() >= len(vocabulary):
    raise ValueError(f"ids must lie in [0, {len(vocabulary)}), got range [{ids.min()}, {ids.max()}]")
  chars = np.array(list(vocabulary))
  return "".join(chars[ids].tolist())
