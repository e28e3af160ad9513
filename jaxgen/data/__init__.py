"""Loaders for the shipped real datasets (sha256-verified before parsing), as host-side NumPy arrays.

Datasets live in ``shared/data/<name>/`` beside the repository, or under ``$JAXGEN_DATA``, or under a ``data_dir``
passed to a loader (see :mod:`jaxgen.data._files` for the exact search order). Every file's size and sha256 are
constants in the code, copied from the folder's ``SOURCE.md``; a mismatch raises ``ValueError`` before anything is
parsed, a missing dataset raises ``FileNotFoundError`` naming the directories searched.

Public API:
  * images: :func:`load_mnist`, :func:`load_fashion_mnist`, :func:`load_digits8` (shipped in the package) ->
    :class:`ImageDataset`; :func:`load_omniglot` ->
    :class:`OmniglotDataset`.
  * graphs: :func:`load_planetoid`, :func:`load_prognn`, :func:`load_heterophily` -> :class:`NodeClassificationData`
    (a ``jraph.GraphsTuple`` plus labels and masks).
  * text: :func:`load_tinyshakespeare` -> str; :func:`char_vocabulary`, :func:`encode_chars`, :func:`decode_chars`.
  * tabular: :func:`load_sachs` -> :class:`CausalDataset`; :func:`load_german_credit`, :func:`load_heloc` ->
    :class:`TabularDataset`.
  * bookkeeping: :func:`data_root`, :func:`list_datasets`, :func:`verify_datasets` (used by ``jaxgen data
    list|verify``).
"""

from jaxgen.data._files import data_root, list_datasets, verify_datasets
from jaxgen.data.graphs import (
    HETEROPHILY_NAMES,
    PLANETOID_NAMES,
    PROGNN_NAMES,
    PROGNN_PTB_RATES,
    NodeClassificationData,
    load_heterophily,
    load_planetoid,
    load_prognn,
)
from jaxgen.data.images import (
    DIGITS8_NUM_TRAIN,
    FASHION_MNIST_CLASSES,
    OMNIGLOT_SPLITS,
    ImageDataset,
    OmniglotDataset,
    area_resize_matrix,
    load_digits8,
    load_fashion_mnist,
    load_mnist,
    load_omniglot,
)
from jaxgen.data.tabular import (
    GERMAN_CREDIT_ATTRIBUTES,
    SACHS_VARIABLES,
    CausalDataset,
    TabularDataset,
    load_german_credit,
    load_heloc,
    load_sachs,
)
from jaxgen.data.text import char_vocabulary, decode_chars, encode_chars, load_tinyshakespeare

__all__ = [
    "CausalDataset",
    "DIGITS8_NUM_TRAIN",
    "FASHION_MNIST_CLASSES",
    "GERMAN_CREDIT_ATTRIBUTES",
    "HETEROPHILY_NAMES",
    "ImageDataset",
    "NodeClassificationData",
    "OMNIGLOT_SPLITS",
    "OmniglotDataset",
    "PLANETOID_NAMES",
    "PROGNN_NAMES",
    "PROGNN_PTB_RATES",
    "SACHS_VARIABLES",
    "TabularDataset",
    "area_resize_matrix",
    "char_vocabulary",
    "data_root",
    "decode_chars",
    "encode_chars",
    "list_datasets",
    "load_digits8",
    "load_fashion_mnist",
    "load_german_credit",
    "load_heloc",
    "load_heterophily",
    "load_mnist",
    "load_omniglot",
    "load_planetoid",
    "load_prognn",
    "load_sachs",
    "load_tinyshakespeare",
    "verify_datasets",
]
