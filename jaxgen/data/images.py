"""Image datasets: MNIST, Fashion-MNIST (original IDX files), Omniglot (Vinyals et al. few-shot split) and the 8x8
digits (shipped inside the package).

All loaders verify the sha256 of every file they read before parsing it (see :mod:`jaxgen.data._files`) and return
host-side NumPy arrays; move them to devices (``jax.device_put``) where they are used.

MNIST / Fashion-MNIST are parsed from the IDX format (big-endian header: magic ``0x00000803`` for uint8 images with
3 dims, ``0x00000801`` for uint8 labels with 1 dim, then the dimension sizes, then raw bytes). Pixel 0 is background,
255 is ink. Normalisation is left to the caller (MNIST train mean/std 0.1307/0.3081; Fashion-MNIST 0.2860/0.3530).

Omniglot comes as two npz files (background: characters 1..964, evaluation: 965..1623; each ``images`` bool
[num_characters, 20, 105, 105] with True = white background) plus the class lists of Vinyals et al. (2016), in which
every (character, rotation by 0/90/180/270 degrees) pair is a separate class. :func:`load_omniglot` returns ink = 1.

The 8x8 digits (scikit-learn's ``load_digits`` set, 1797 images, pixel values 0..16) are small enough to ship with
the package: ``jaxgen/data/files/digits.csv.gz`` (provenance and sha256 in ``DIGITS_SOURCE.md`` beside it).
:func:`load_digits8` verifies and parses it and applies a fixed seed-0 permutation and an 80/20 train/test split.
"""

from __future__ import annotations

import csv
import gzip
import re
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxgen.data import _files
from jaxgen.data._files import PathLike

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", 0x00000803, (60000, 28, 28)),
    "train_labels": ("train-labels-idx1-ubyte.gz", 0x00000801, (60000,)),
    "test_images": ("t10k-images-idx3-ubyte.gz", 0x00000803, (10000, 28, 28)),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", 0x00000801, (10000,)),
}

OMNIGLOT_SPLITS = ("train", "val", "test", "trainval", "background", "evaluation")
_OMNIGLOT_NATIVE_SIZE = 105
_OMNIGLOT_DRAWERS = 20
_OMNIGLOT_NPZ = {"background": ("images_background.npz", 964), "evaluation": ("images_evaluation.npz", 659)}
_DIGITS8_FILE = Path(__file__).parent / "files" / "digits.csv.gz"
_DIGITS8_SIZE = 57523
_DIGITS8_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
DIGITS8_NUM_TRAIN = 1437  # 80 % of 1797 after the seed-0 permutation; the remaining 360 are the test split
_OMNIGLOT_LINE = re.compile(r"^(?P<alphabet>[^/]+)/character(?P<number>\d+)/rot(?P<rotation>000|090|180|270)$")


class ImageDataset(NamedTuple):
  """A labelled image dataset with a fixed train/test split (MNIST layout)."""

  train_images: np.ndarray  # uint8 [60000, 28, 28], 0 = background, 255 = ink
  train_labels: np.ndarray  # int32 [60000], class ids 0..9
  test_images: np.ndarray  # uint8 [10000, 28, 28]
  test_labels: np.ndarray  # int32 [10000]


class OmniglotDataset(NamedTuple):
  """Omniglot classes of one split, every class with its 20 drawings.

  Attributes:
    images: ``[num_classes, 20, S, S]`` with ink = 1 and background = 0. With ``image_size=None``: uint8 in {0, 1}
      at the native S = 105. With ``image_size=S``: float32 in [0, 1], the fraction of each output pixel covered
      by ink (area-averaged resize, see :func:`load_omniglot`).
    class_names: ``num_classes`` names ``"<alphabet>/character<NN>/rot<DDD>"`` in the order of the split file.
    character_ids: int32 ``[num_classes]`` global Omniglot character id 1..1623 (the ``XXXX`` of the official file
      names ``XXXX_YY.png``); several classes share an id when they differ only by rotation.
    rotations: int32 ``[num_classes]`` counter-clockwise rotation in degrees (0, 90, 180, 270).
  """

  images: np.ndarray
  class_names: tuple[str, ...]
  character_ids: np.ndarray
  rotations: np.ndarray


def _read_idx(path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
  """Parses one gzipped IDX file of uint8 values and checks its magic number and dimensions."""
  with gzip.open(path, "rb") as f:
    raw = f.read()
  ndim = len(shape)
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{path}: IDX file too short ({len(raw)} bytes)")
  (found_magic,) = struct.unpack(">I", raw[:4])
  if found_magic != magic:
    raise ValueError(f"{path}: IDX magic number is {found_magic:#010x}, expected {magic:#010x}")
  dims = struct.unpack(f">{ndim}I", raw[4:header])
  if dims != shape:
    raise ValueError(f"{path}: IDX dimensions are {dims}, expected {shape}")
  if len(raw) - header != int(np.prod(shape)):
    raise ValueError(f"{path}: IDX payload has {len(raw) - header} bytes, expected {int(np.prod(shape))}")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape).copy()


def _load_idx_dataset(name: str, data_dir: PathLike | None) -> ImageDataset:
  paths = _files.dataset_files(name, [f for f, _, _ in _IDX_FILES.values()], data_dir)
  arrays = {field: _read_idx(paths[f], magic, shape) for field, (f, magic, shape) in _IDX_FILES.items()}
  for field in ("train_labels", "test_labels"):
    if arrays[field].max() > 9:
      raise ValueError(f"{name}: {field} contain {arrays[field].max()}, expected class ids 0..9")
    arrays[field] = arrays[field].astype(np.int32)
  return ImageDataset(**arrays)


def load_mnist(data_dir: PathLike | None = None) -> ImageDataset:
  """Loads MNIST (LeCun et al., 1998) from the four original IDX ``.gz`` files.

  Args:
    data_dir: data root containing ``mnist/``; default: ``$JAXGEN_DATA``, then ``../shared/data``.

  Returns:
    :class:`ImageDataset`: ``train_images`` uint8 [60000, 28, 28], ``train_labels`` int32 [60000],
    ``test_images`` uint8 [10000, 28, 28], ``test_labels`` int32 [10000].

  Raises:
    FileNotFoundError: the dataset is not found (the message lists the directories searched).
    ValueError: a file fails its sha256 check, or its IDX header is not as expected.
  """
  return _load_idx_dataset("mnist", data_dir)


def load_fashion_mnist(data_dir: PathLike | None = None) -> ImageDataset:
  """Loads Fashion-MNIST (Xiao et al., 2017, arXiv:1708.07747) from the four original IDX ``.gz`` files.

  Class names are in :data:`FASHION_MNIST_CLASSES`. Same layout, arguments and errors as :func:`load_mnist`.
  """
  return _load_idx_dataset("fashion_mnist", data_dir)


def area_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """Row-stochastic ``[out_size, in_size]`` matrix of an area-averaging (box-filter) 1-D resize.

  Output pixel ``i`` covers the interval ``[i, i + 1) * in_size / out_size`` of the input axis; entry ``(i, j)`` is
  the length of its overlap with input pixel ``[j, j + 1)`` divided by the interval length. A 2-D image resizes as
  ``R @ image @ R.T``: every output pixel is the exact area-weighted mean of the input pixels it covers (the
  same result as Pillow's ``Image.BOX`` filter), so the image mean is preserved. The grid is mirror-symmetric,
  so the resize commutes with flips and 90-degree rotations of a square image.

  >>> area_resize_matrix(3, 2).round(4).tolist()     # output pixel 0 covers input [0, 1.5)
  [[0.6667, 0.3333, 0.0], [0.0, 0.3333, 0.6667]]
  """
  for argument, value in (("in_size", in_size), ("out_size", out_size)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{argument} must be a positive int, got {value!r}")
  # Work in units of 1 / out_size input pixels so that all interval ends are integers (exact arithmetic).
  out_lo = np.arange(out_size)[:, None] * in_size
  in_lo = np.arange(in_size)[None, :] * out_size
  overlap = np.minimum(out_lo + in_size, in_lo + out_size) - np.maximum(out_lo, in_lo)
  return (np.clip(overlap, 0, None) / in_size).astype(np.float64)


def _omniglot_alphabets(path: Path) -> dict[str, dict[str, int | str]]:
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  table = {}
  for row in rows:
    table[row["alphabet"]] = {
        "split": row["split"],
        "first_id": int(row["first_character_id"]),
        "n": int(row["n_characters"]),
        "npz": row["npz_file"],
        "first_row": int(row["npz_first_row"]),
    }
  if sum(int(r["n"]) for r in table.values()) != 1623:
    raise ValueError(f"{path}: alphabets.csv should describe 1623 characters")
  return table


def _omniglot_classes(split: str, alphabets: dict, split_file: Path | None) -> list[tuple[str, str, int, int]]:
  """(class name, alphabet, character number NN, rotation degrees) for every class of ``split``."""
  if split_file is None:  # Lake et al.'s background / evaluation sets, unrotated.
    return [
        (f"{alphabet}/character{nn:02d}/rot000", alphabet, nn, 0)
        for alphabet, row in alphabets.items() if row["split"] == split
        for nn in range(1, int(row["n"]) + 1)
    ]
  classes = []
  for line in split_file.read_text(encoding="utf-8").split():
    match = _OMNIGLOT_LINE.match(line)
    if match is None or match["alphabet"] not in alphabets:
      raise ValueError(f"{split_file}: unexpected class line {line!r}")
    nn = int(match["number"])
    if not 1 <= nn <= int(alphabets[match["alphabet"]]["n"]):
      raise ValueError(f"{split_file}: {line!r} names a character beyond the alphabet's size")
    classes.append((line, match["alphabet"], nn, int(match["rotation"])))
  return classes


def load_omniglot(
    data_dir: PathLike | None = None, split: str = "train", image_size: int | None = 28
) -> OmniglotDataset:
  """Loads one split of Omniglot (Lake et al., Science 2015) as class-major image arrays with ink = 1.

  Splits:
    * ``"train"`` / ``"val"`` / ``"test"`` / ``"trainval"``: the class split of Vinyals et al. (2016) used by Matching
      Networks, Prototypical Networks and MAML: 1028 / 172 / 423 / 1200 characters, each in 4 rotations, i.e.
      4112 / 688 / 1692 / 4800 classes (the split mixes Lake's background and evaluation sets; characters of one
      alphabet can fall in two splits, e.g. Gurmukhi).
    * ``"background"`` / ``"evaluation"``: Lake et al.'s original 964 / 659 characters, unrotated.

  Resizing (``image_size=S``): each 105x105 ink image is resized with exact area averaging,
  ``R @ ink @ R.T`` with ``R = area_resize_matrix(105, S)``, giving float32 ink coverage in [0, 1] (S = 28 is the
  usual few-shot setting; upstream code used various PIL filters, so pixel values differ slightly between papers).
  The rotation is applied after resizing, which gives the same result as rotating first (the box grid is symmetric).
  ``image_size=None`` keeps the native binary images as uint8 {0, 1}.

  Memory: ``num_classes * 20 * S * S`` elements, e.g. the train split is 258 MB at S = 28 (float32) and 907 MB at
  the native size (uint8); the npz files for the split (about 210 MB for the background set) are decompressed
  transiently.

  Args:
    data_dir: data root containing ``omniglot/``; default: ``$JAXGEN_DATA``, then ``../shared/data``.
    split: one of ``OMNIGLOT_SPLITS`` (default ``"train"``).
    image_size: output side length S (positive int), or ``None`` for the native 105 binary images. Default 28.

  Returns:
    :class:`OmniglotDataset` with ``images`` ``[num_classes, 20, S, S]``, ``class_names``, ``character_ids`` and
    ``rotations``.

  Raises:
    ValueError: unknown ``split``, invalid ``image_size``, or a file fails its sha256 check.
    FileNotFoundError: the dataset is not found (the message lists the directories searched).
  """
  _files.check_choice("split", split, OMNIGLOT_SPLITS)
  if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))):
    raise TypeError(f"image_size must be a positive int or None, got {type(image_size).__name__} {image_size!r}")
  if image_size is not None and image_size < 1:
    raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")

  vinyals = split not in _OMNIGLOT_NPZ
  relpaths = ["alphabets.csv"] + [npz for npz, _ in _OMNIGLOT_NPZ.values()]
  if vinyals:
    relpaths.append(f"vinyals_splits/{split}.txt")
  paths = _files.dataset_files("omniglot", relpaths, data_dir)  # everything verified before parsing
  alphabets = _omniglot_alphabets(paths["alphabets.csv"])
  classes = _omniglot_classes(split, alphabets, paths[f"vinyals_splits/{split}.txt"] if vinyals else None)

  character_ids = np.array([int(alphabets[a]["first_id"]) + nn - 1 for _, a, nn, _ in classes], np.int32)
  rotations = np.array([rot for _, _, _, rot in classes], np.int32)
  unique_ids, class_to_char = np.unique(character_ids, return_inverse=True)

  size = _OMNIGLOT_NATIVE_SIZE if image_size is None else int(image_size)
  dtype = np.uint8 if image_size is None else np.float32
  resize = None if image_size is None else area_resize_matrix(_OMNIGLOT_NATIVE_SIZE, size)
  base = np.empty((len(unique_ids), _OMNIGLOT_DRAWERS, size, size), dtype)  # one entry per unrotated character
  for subset, (npz_name, count) in _OMNIGLOT_NPZ.items():
    first_id = 1 if subset == "background" else 965
    wanted = np.nonzero((unique_ids >= first_id) & (unique_ids < first_id + count))[0]
    if wanted.size == 0:
      continue
    with np.load(paths[npz_name], allow_pickle=False) as npz:
      images, labels = npz["images"], npz["labels"]
    expected = (count, _OMNIGLOT_DRAWERS, _OMNIGLOT_NATIVE_SIZE, _OMNIGLOT_NATIVE_SIZE)
    if images.shape != expected or images.dtype != np.bool_:
      raise ValueError(f"{npz_name}: images are {images.dtype}{images.shape}, expected bool{expected}")
    if not np.array_equal(labels, np.broadcast_to(np.arange(count)[:, None], labels.shape)):
      raise ValueError(f"{npz_name}: labels should equal the row index")
    rows = unique_ids[wanted] - first_id
    for start in range(0, len(rows), 16):  # chunks keep the float64 temporaries small (about 28 MB)
      chunk = ~images[rows[start:start + 16]]  # True = ink
      if resize is None:
        base[wanted[start:start + 16]] = chunk
      else:  # float64 products, clipped so that rounding cannot leave [0, 1]
        base[wanted[start:start + 16]] = np.clip(resize @ chunk.astype(np.float64) @ resize.T, 0.0, 1.0)
    del images

  out = np.empty((len(classes), _OMNIGLOT_DRAWERS, size, size), dtype)
  for quarter_turns in range(4):
    idx = np.nonzero(rotations == 90 * quarter_turns)[0]
    if idx.size:
      out[idx] = np.rot90(base[class_to_char[idx]], k=quarter_turns, axes=(2, 3))
  return OmniglotDataset(out, tuple(name for name, _, _, _ in classes), character_ids, rotations)


def load_digits8(path: PathLike | None = None) -> ImageDataset:
  """Loads the 8x8 handwritten digits (the UCI optdigits test set as shipped by scikit-learn's ``load_digits``).

  The 1797 images are permuted with ``np.random.default_rng(0).permutation(1797)``; the first
  :data:`DIGITS8_NUM_TRAIN` = 1437 form the train split, the other 360 the test split (the spec's "fixed permutation
  (seed 0) and fixed splits").

  Args:
    path: the ``digits.csv.gz`` to read; default: the copy inside the package.

  Returns:
    :class:`ImageDataset`: ``train_images`` uint8 [1437, 8, 8] with values 0..16 (0 = background),
    ``train_labels`` int32 [1437], ``test_images`` uint8 [360, 8, 8], ``test_labels`` int32 [360].

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file's size or sha256 is not the shipped one's, or its content is not 1797 rows of 64 pixels in
      0..16 and a label in 0..9.
  """
  file = Path(path) if path is not None else _DIGITS8_FILE
  if not file.is_file():
    raise FileNotFoundError(f"8x8 digits file not found: {file}")
  size = file.stat().st_size
  digest = _files.sha256_file(file)
  if size != _DIGITS8_SIZE or digest != _DIGITS8_SHA256:
    raise ValueError(f"{file}: size {size} / sha256 {digest} do not match the shipped digits.csv.gz "
                     f"({_DIGITS8_SIZE} bytes, sha256 {_DIGITS8_SHA256})")
  with gzip.open(file, "rt") as f:
    rows = np.loadtxt(f, delimiter=",", dtype=np.float64)
  if rows.shape != (1797, 65) or np.any(rows != np.round(rows)):
    raise ValueError(f"{file}: expected 1797 rows of 65 integers, got {rows.shape}")
  pixels, labels = rows[:, :64].astype(np.int64), rows[:, 64].astype(np.int64)
  if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
    raise ValueError(f"{file}: pixels must lie in 0..16 and labels in 0..9")
  order = np.random.default_rng(0).permutation(rows.shape[0])
  images = pixels.reshape(-1, 8, 8).astype(np.uint8)[order]
  labels = labels.astype(np.int32)[order]
  n = DIGITS8_NUM_TRAIN
  return ImageDataset(images[:n], labels[:n], images[n:], labels[n:])
