"""Tests for the MNIST, Fashion-MNIST and Omniglot loaders against the statistics in their SOURCE.md."""

import gzip
import struct

import numpy as np
import pytest

from jaxgen import data
from jaxgen.data import _files, images


@pytest.fixture(scope="module")
def mnist():
  _require("mnist")
  return data.load_mnist()


@pytest.fixture(scope="module")
def fashion():
  _require("fashion_mnist")
  return data.load_fashion_mnist()


@pytest.fixture(scope="module")
def omniglot_test_native():
  _require("omniglot")
  return data.load_omniglot(split="test", image_size=None)


def _require(name):
  try:
    _files.find_dataset_dir(name)
  except FileNotFoundError:
    pytest.skip(f"shared dataset '{name}' not available")


def _check_layout(ds):
  assert isinstance(ds, data.ImageDataset)
  assert ds._fields == ("train_images", "train_labels", "test_images", "test_labels")
  assert ds.train_images.shape == (60000, 28, 28) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (10000, 28, 28) and ds.test_images.dtype == np.uint8
  assert ds.train_labels.shape == (60000,) and ds.train_labels.dtype == np.int32
  assert ds.test_labels.shape == (10000,) and ds.test_labels.dtype == np.int32


def test_mnist_statistics(mnist):
  _check_layout(mnist)
  np.testing.assert_array_equal(np.bincount(mnist.train_labels),
                                [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  np.testing.assert_array_equal(np.bincount(mnist.test_labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  train = mnist.train_images / 255.0
  assert train.mean() == pytest.approx(0.1307, abs=5e-5)
  assert train.std() == pytest.approx(0.3081, abs=5e-5)
  assert (mnist.test_images / 255.0).mean() == pytest.approx(0.1325, abs=5e-5)
  assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]  # the famous first digits
  assert mnist.train_images.flags.writeable


def test_fashion_mnist_statistics(fashion):
  _check_layout(fashion)
  np.testing.assert_array_equal(np.bincount(fashion.train_labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(fashion.test_labels), [1000] * 10)
  assert (fashion.train_images / 255.0).mean() == pytest.approx(0.2860, abs=5e-5)
  assert (fashion.train_images / 255.0).std() == pytest.approx(0.3530, abs=5e-5)
  assert (fashion.test_images / 255.0).mean() == pytest.approx(0.2868, abs=5e-5)
  assert len(data.FASHION_MNIST_CLASSES) == 10 and data.FASHION_MNIST_CLASSES[9] == "Ankle boot"


def _write_idx(path, magic, dims, payload):
  with gzip.open(path, "wb") as f:
    f.write(struct.pack(f">I{len(dims)}I", magic, *dims) + payload)


@pytest.mark.parametrize(
    "magic, dims, payload, match",
    [
        (0x00000801, (2, 2, 2), bytes(8), "magic number"),
        (0x00000803, (2, 3, 2), bytes(12), "dimensions"),
        (0x00000803, (2, 2, 2), bytes(7), "payload"),
    ],
)
def test_idx_header_checks(tmp_path, magic, dims, payload, match):
  path = tmp_path / "x.gz"
  _write_idx(path, magic, dims, payload)
  with pytest.raises(ValueError, match=match):
    images._read_idx(path, 0x00000803, (2, 2, 2))


def test_idx_parses_valid_file(tmp_path):
  path = tmp_path / "x.gz"
  _write_idx(path, 0x00000803, (2, 1, 3), bytes(range(6)))
  np.testing.assert_array_equal(images._read_idx(path, 0x00000803, (2, 1, 3)), np.arange(6).reshape(2, 1, 3))


def test_mnist_corrupt_file_is_rejected_before_parsing(copy_dataset, corrupt, monkeypatch):
  root = copy_dataset("mnist")
  corrupt(root / "mnist" / "t10k-labels-idx1-ubyte.gz")
  monkeypatch.setenv("JAXGEN_DATA", str(root))
  monkeypatch.setattr(images.gzip, "open", lambda *a, **k: pytest.fail("parsed before verification"))
  with pytest.raises(ValueError, match=r"'mnist'.*t10k-labels-idx1-ubyte\.gz"):
    data.load_mnist()


# --- Omniglot ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "split, num_classes, num_characters",
    [("train", 4112, 1028), ("val", 688, 172), ("test", 1692, 423), ("trainval", 4800, 1200),
     ("background", 964, 964), ("evaluation", 659, 659)],
)
def test_omniglot_split_sizes(split, num_classes, num_characters):
  _require("omniglot")
  ds = data.load_omniglot(split=split, image_size=28)
  assert ds.images.shape == (num_classes, 20, 28, 28) and ds.images.dtype == np.float32
  assert len(ds.class_names) == num_classes
  assert ds.character_ids.dtype == np.int32 and ds.rotations.dtype == np.int32
  assert len(np.unique(ds.character_ids)) == num_characters
  assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
  if split in ("background", "evaluation"):
    assert set(ds.rotations.tolist()) == {0}
    first = 1 if split == "background" else 965
    np.testing.assert_array_equal(ds.character_ids, np.arange(first, first + num_characters))
  else:
    np.testing.assert_array_equal(np.bincount(ds.rotations // 90), [num_characters] * 4)


def test_omniglot_vinyals_split_is_a_partition(require_dataset):
  folder = require_dataset("omniglot")
  chars = {s: {line.rsplit("/", 1)[0] for line in (folder / "vinyals_splits" / f"{s}.txt").read_text().split()}
           for s in ("train", "val", "test", "trainval")}
  assert not chars["train"] & chars["val"] and not chars["train"] & chars["test"] and not chars["val"] & chars["test"]
  assert chars["trainval"] == chars["train"] | chars["val"]
  assert len(chars["train"] | chars["val"] | chars["test"]) == 1623


def test_omniglot_native_images_match_npz(omniglot_test_native, require_dataset):
  ds = omniglot_test_native
  assert ds.images.shape == (1692, 20, 105, 105) and ds.images.dtype == np.uint8
  assert set(np.unique(ds.images).tolist()) == {0, 1}
  # First test class: Gurmukhi/character42 = global id 1160 + 41 = 1201 = evaluation row 1201 - 965.
  assert ds.class_names[0] == "Gurmukhi/character42/rot000" and ds.character_ids[0] == 1201
  with np.load(require_dataset("omniglot") / "images_evaluation.npz") as npz:
    raw = npz["images"][[1201 - 965, 1598 - 965]]  # also ULOG/character01 (global id 1598)
  np.testing.assert_array_equal(ds.images[0], ~raw[0])  # True = background in the file, ink = 1 here
  ulog = ds.class_names.index("ULOG/character01/rot000")
  assert ds.character_ids[ulog] == 1598
  np.testing.assert_array_equal(ds.images[ulog], ~raw[1])


def test_omniglot_rotations_are_counter_clockwise(omniglot_test_native):
  ds = omniglot_test_native
  assert ds.class_names[:4] == tuple(f"Gurmukhi/character42/rot{r}" for r in ("000", "090", "180", "270"))
  for k in range(1, 4):
    np.testing.assert_array_equal(ds.images[k], np.rot90(ds.images[0], k=k, axes=(1, 2)))
  # np.rot90 is counter-clockwise on the displayed image, like PIL's Image.rotate(90) used upstream.
  np.testing.assert_array_equal(np.rot90(np.array([[1, 2], [3, 4]])), [[2, 4], [1, 3]])


def test_omniglot_resize_preserves_ink_and_commutes_with_rotation(omniglot_test_native):
  native = omniglot_test_native
  small = data.load_omniglot(split="test", image_size=35)
  assert small.class_names == native.class_names
  # 105 -> 35 is an exact 3x3 block mean.
  blocks = native.images[:8].reshape(8, 20, 35, 3, 35, 3).mean(axis=(3, 5))
  np.testing.assert_allclose(small.images[:8], blocks, atol=1e-6)
  # Rotating after resizing equals resizing the rotated native image.
  r = data.area_resize_matrix(105, 28)
  direct = r @ native.images[1].astype(np.float64) @ r.T
  np.testing.assert_allclose(data.load_omniglot(split="test", image_size=28).images[1], direct, atol=1e-5)
  # Area averaging preserves the ink fraction.
  assert small.images.mean() == pytest.approx(native.images.mean(), rel=1e-5)


def test_area_resize_matrix():
  np.testing.assert_array_equal(data.area_resize_matrix(105, 105), np.eye(105))
  r = data.area_resize_matrix(105, 28)
  assert r.shape == (28, 105)
  np.testing.assert_allclose(r.sum(axis=1), 1.0)
  np.testing.assert_allclose(r.sum(axis=0), 28 / 105)
  np.testing.assert_allclose(r, r[::-1, ::-1])  # mirror-symmetric grid
  np.testing.assert_allclose(data.area_resize_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
  with pytest.raises(ValueError, match="out_size"):
    data.area_resize_matrix(105, 0)


def test_omniglot_background_ink_fraction():
  _require("omniglot")
  ds = data.load_omniglot(split="background", image_size=None)
  assert ds.images.shape == (964, 20, 105, 105)
  assert ds.images.mean() == pytest.approx(0.078, abs=1e-3)  # SOURCE.md: ink fraction 7.8 %
  assert ds.class_names[0] == "Arcadian/character01/rot000" and ds.character_ids[-1] == 964


def test_omniglot_argument_validation():
  with pytest.raises(ValueError, match=r"split must be one of .*'trainval'"):
    data.load_omniglot(split="training")
  with pytest.raises(ValueError, match="image_size"):
    data.load_omniglot(split="test", image_size=0)
  with pytest.raises(TypeError, match="image_size"):
    data.load_omniglot(split="test", image_size=28.0)


def test_omniglot_corrupt_split_file(copy_dataset, corrupt):
  root = copy_dataset("omniglot")
  corrupt(root / "omniglot" / "vinyals_splits" / "val.txt")
  with pytest.raises(ValueError, match=r"vinyals_splits/val\.txt"):
    data.load_omniglot(data_dir=root, split="val")
  data.load_omniglot(data_dir=root, split="background", image_size=7)  # other files still load


# The first image of scikit-learn's digits set (``load_digits().images[0]``, a "0"), as printed in its docs.
_DIGITS_FIRST_IMAGE = np.array([
    [0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0], [0, 4, 12, 0, 0, 8, 8, 0],
    [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0], [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]])


def test_digits8_split_and_content():
  ds = data.load_digits8()
  assert ds.train_images.shape == (1437, 8, 8) and ds.test_images.shape == (360, 8, 8)
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  labels = np.concatenate([ds.train_labels, ds.test_labels])
  np.testing.assert_array_equal(np.bincount(labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
  both = np.concatenate([ds.train_images, ds.test_images])
  assert both.min() == 0 and both.max() == 16
  # The fixed seed-0 permutation: row i of the file sits at position argsort(perm)[i].
  where = int(np.argsort(np.random.default_rng(0).permutation(1797))[0])
  np.testing.assert_array_equal(both[where], _DIGITS_FIRST_IMAGE)
  assert labels[where] == 0
  again = data.load_digits8()
  np.testing.assert_array_equal(again.test_labels, ds.test_labels)


def test_digits8_rejects_a_changed_file(tmp_path):
  raw = gzip.decompress(images._DIGITS8_FILE.read_bytes())
  bad = tmp_path / "digits.csv.gz"
  bad.write_bytes(gzip.compress(raw.replace(b"16", b"15", 1)))
  with pytest.raises(ValueError, match="sha256"):
    data.load_digits8(bad)
  with pytest.raises(FileNotFoundError):
    data.load_digits8(tmp_path / "missing.csv.gz")
