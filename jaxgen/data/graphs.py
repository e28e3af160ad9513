"""Node-classification graphs: Planetoid (Cora/CiteSeer/PubMed), Pro-GNN (clean + Metattack), heterophily benchmarks.

Every loader returns :class:`NodeClassificationData`, whose ``graph`` is a ``jraph.GraphsTuple`` holding host-side
NumPy arrays (one graph): ``nodes`` = float32 features ``[N, F]`` (or ``None``), ``senders``/``receivers`` int32 ``[E]``
(message direction ``senders[e] -> receivers[e]``; an undirected edge appears once in each direction), ``edges`` and
``globals`` = ``None``, ``n_node`` = ``[N]`` and ``n_edge`` = ``[E]`` (int32). Edges are sorted by (sender, receiver),
as PyTorch Geometric's ``coalesce`` does. Masks are bool ``[N]``; labels int32 ``[N]``.

Conventions follow the references whose numbers papers quote:
  * Planetoid: PyTorch Geometric's ``Planetoid(split="public")`` / Kipf & Welling's GCN code (see
    :func:`load_planetoid`).
  * Pro-GNN: DeepRobust's ``Dataset(setting="nettack")`` / ``PrePtbDataset`` as used by Pro-GNN and STABLE.
  * Geom-GCN sets: the raw Geom-GCN files and split masks (as PyTorch Geometric's ``WebKB`` / ``Actor``), with
    optional symmetrisation; Chameleon from Platonov et al. (2023).

The Planetoid files are Python-2 pickles. They are unpickled only after their sha256 matched, and with a restricted
unpickler that resolves only the six globals these files use (numpy array reconstruction, a stand-in for scipy's CSR
matrix, ``collections.defaultdict`` and ``list``); anything else raises ``pickle.UnpicklingError``.
"""

from __future__ import annotations

import collections
import io
import json
import math
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import jraph
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from jaxgen.data import _files
from jaxgen.data._files import PathLike

PLANETOID_NAMES = ("cora", "citeseer", "pubmed")
PROGNN_NAMES = ("cora", "citeseer", "polblogs")
PROGNN_PTB_RATES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
HETEROPHILY_NAMES = ("texas", "cornell", "cornell_corrected", "wisconsin", "film", "actor", "chameleon",
                     "chameleon_filtered")
NUM_SPLITS = 10

_GEOM_GCN_FEATURES = {"texas": 1703, "cornell": 1703, "cornell_corrected": 1703, "wisconsin": 1703, "film": 932}


class NodeClassificationData(NamedTuple):
  """One graph with node labels and a train/val/test split (all arrays host-side NumPy).

  Attributes:
    graph: ``jraph.GraphsTuple`` with ``nodes`` float32 ``[N, F]`` or ``None`` (features unavailable),
      ``senders``/``receivers`` int32 ``[E]``, ``n_node`` int32 ``[1]`` = N, ``n_edge`` int32 ``[1]`` = E.
    labels: int32 ``[N]`` class ids in ``0..num_classes-1``.
    train_mask, val_mask, test_mask: bool ``[N]``.
    num_classes: number of classes C.
    name: e.g. ``"planetoid/cora"``, ``"prognn/cora/meta-0.2"``, ``"heterophily/texas/split-0"``.
  """

  graph: jraph.GraphsTuple
  labels: np.ndarray
  train_mask: np.ndarray
  val_mask: np.ndarray
  test_mask: np.ndarray
  num_classes: int
  name: str


# ---------------------------------------------------------------------------------------------------------------
# Small helpers.


def _make_graph(features: np.ndarray | None, senders: np.ndarray, receivers: np.ndarray, num_nodes: int):
  return jraph.GraphsTuple(
      nodes=features, edges=None, senders=senders.astype(np.int32), receivers=receivers.astype(np.int32),
      globals=None, n_node=np.array([num_nodes], np.int32), n_edge=np.array([len(senders)], np.int32),
  )


def _coalesce(senders: np.ndarray, receivers: np.ndarray, num_nodes: int, *, symmetrize: bool,
              remove_self_loops: bool) -> tuple[np.ndarray, np.ndarray]:
  """Optionally adds reversed edges and drops self loops, then deduplicates and sorts by (sender, receiver)."""
  senders, receivers = np.asarray(senders, np.int64), np.asarray(receivers, np.int64)
  if senders.size and (min(senders.min(), receivers.min()) < 0 or max(senders.max(), receivers.max()) >= num_nodes):
    raise ValueError(f"edge endpoints must lie in [0, {num_nodes})")
  if symmetrize:
    senders, receivers = np.concatenate([senders, receivers]), np.concatenate([receivers, senders])
  if remove_self_loops:
    keep = senders != receivers
    senders, receivers = senders[keep], receivers[keep]
  keys = np.unique(senders * num_nodes + receivers)
  return keys // num_nodes, keys % num_nodes


def _mask(indices: np.ndarray, num_nodes: int) -> np.ndarray:
  mask = np.zeros(num_nodes, bool)
  mask[indices] = True
  return mask


def _check_name(name: Any, allowed: tuple[str, ...]) -> str:
  if not isinstance(name, str):
    raise TypeError(f"name must be a str, one of {allowed}; got {type(name).__name__} {name!r}")
  _files.check_choice("name", name.lower(), allowed)
  return name.lower()


def _check_split(split: Any) -> int:
  if isinstance(split, bool) or not isinstance(split, (int, np.integer)):
    raise TypeError(f"split must be an int in 0..{NUM_SPLITS - 1}, got {type(split).__name__} {split!r}")
  if not 0 <= split < NUM_SPLITS:
    raise ValueError(f"split must be an int in 0..{NUM_SPLITS - 1}, got {split}")
  return int(split)


# ---------------------------------------------------------------------------------------------------------------
# Planetoid.


class _CsrState:
  """Stand-in for the pickled ``scipy.sparse.csr.csr_matrix``: collects its state; converted by ``_to_csr``."""

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.state = state


_NDARRAY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own _reconstruct, whatever its module
_PLANETOID_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _NDARRAY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NDARRAY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("scipy.sparse.csr", "csr_matrix"): _CsrState,
    ("scipy.sparse._csr", "csr_matrix"): _CsrState,
    ("collections", "defaultdict"): collections.defaultdict,
    ("__builtin__", "list"): list,
    ("builtins", "list"): list,
}


class _PlanetoidUnpickler(pickle.Unpickler):
  """Unpickler that resolves only the globals the Planetoid files need."""

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _PLANETOID_GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a Planetoid file") from None


def _unpickle(path: Path) -> Any:
  """Unpickles one (already verified) Planetoid file with the restricted unpickler, ``encoding="latin1"``."""
  with open(path, "rb") as f:
    return _PlanetoidUnpickler(io.BytesIO(f.read()), encoding="latin1").load()


def _to_csr(obj: Any, path: Path) -> sp.csr_matrix:
  if not isinstance(obj, _CsrState):
    raise ValueError(f"{path}: expected a pickled scipy CSR matrix, got {type(obj).__name__}")
  s = obj.state
  return sp.csr_matrix((s["data"], s["indices"], s["indptr"]), shape=tuple(int(d) for d in s["_shape"]))


def _to_dense_labels(obj: Any, path: Path) -> np.ndarray:
  if not isinstance(obj, np.ndarray) or obj.ndim != 2:
    raise ValueError(f"{path}: expected a 2-D one-hot label array, got {type(obj).__name__}")
  return obj


def load_planetoid(name: str, data_dir: PathLike | None = None, *, require_features: bool = False
                   ) -> NodeClassificationData:
  r"""Loads Cora, CiteSeer or PubMed with the public Planetoid split, following PyTorch Geometric exactly.

  Assembly (Kipf & Welling's GCN code, PyG ``read_planetoid_data``): node features are ``vstack(allx, tx)`` with
  row ``i`` of ``tx``/``ty`` placed at graph id ``test.index[i]``; labels are the argmax of the one-hot rows.
  CiteSeer's ``test.index`` spans 2312..3326 but holds 1000 ids: the 15 graph ids in that range without a ``tx``
  row get all-zero features and label 0 and are in no mask (so N = 3327). Edges come from the adjacency dict,
  symmetrised, with duplicates and self loops removed. Split: train = the first ``len(y)`` = 20·C nodes,
  val = the next 500, test = the 1000 ids of ``test.index``.

  Expected: Cora 2708 nodes, 10556 directed edges, 1433 features, 7 classes, 140/500/1000; CiteSeer 3327, 9104,
  3703, 6, 120/500/1000; PubMed 19717, 88648, 500, 3, 60/500/1000.

  PubMed: ``ind.pubmed.allx`` (features of the 18,717 non-test nodes, about 7.5 MB) is not in the shared data
  folder (every public copy exceeded the file-size limit of the snapshots it was assembled from; see
  ``planetoid/SOURCE.md``). Without it ``graph.nodes`` is ``None``: the graph, labels and split are complete, which
  is enough for label propagation. If the file is added, it is checked against its git blob id
  (``3b86bccf...``, the only identifier recorded) and used.

  Args:
    name: ``"cora"``, ``"citeseer"`` or ``"pubmed"`` (case-insensitive).
    data_dir: data root containing ``planetoid/``; default: ``$JAXGEN_DATA``, then ``../shared/data``.
    require_features: if True, raise instead of returning ``graph.nodes = None`` when features are unavailable.

  Returns:
    :class:`NodeClassificationData` named ``"planetoid/<name>"``; ``graph.nodes`` float32 ``[N, F]`` (binary
    bag-of-words for Cora/CiteSeer, TF-IDF for PubMed; not row-normalised) or ``None``.

  Raises:
    ValueError: unknown ``name``, or a file fails its sha256 check (then nothing is unpickled).
    FileNotFoundError: the dataset is not found, or ``require_features=True`` and PubMed's ``allx`` is absent.
  """
  name = _check_name(name, PLANETOID_NAMES)
  parts = ["y", "tx", "ty", "ally", "graph", "test.index"]
  allx_path = None
  if name == "pubmed":
    allx_path = _files.optional_dataset_file("planetoid", "ind.pubmed.allx", data_dir)  # verified if present
    if allx_path is None and require_features:
      raise FileNotFoundError(
          "PubMed features were requested (require_features=True) but 'ind.pubmed.allx' is absent from the "
          "planetoid data folder: every public copy of that 7.5 MB file was larger than the per-file limit of the "
          "snapshots the shared data was assembled from (see planetoid/SOURCE.md). Graph, labels and split load "
          "with require_features=False (features = None). To add it, copy ind.pubmed.allx from "
          "https://github.com/kimiyoung/planetoid/tree/master/data; it must have git blob id "
          f"{_files.DATASETS['planetoid'].optional_files['ind.pubmed.allx'][1]}."
      )
  else:
    parts.append("allx")
  paths = _files.dataset_files("planetoid", [f"ind.{name}.{part}" for part in parts], data_dir)
  path = {part: paths[f"ind.{name}.{part}"] for part in parts}
  if allx_path is not None:
    path["allx"] = allx_path

  # Everything below reads files that passed their hash check.
  test_index = np.array(path["test.index"].read_text(encoding="ascii").split(), np.int64)
  y = _to_dense_labels(_unpickle(path["y"]), path["y"])
  ally = _to_dense_labels(_unpickle(path["ally"]), path["ally"])
  ty = _to_dense_labels(_unpickle(path["ty"]), path["ty"])
  tx = _to_csr(_unpickle(path["tx"]), path["tx"])
  allx = _to_csr(_unpickle(path["allx"]), path["allx"]) if "allx" in path else None
  adjacency_dict = _unpickle(path["graph"])
  if not isinstance(adjacency_dict, dict):
    raise ValueError(f"{path['graph']}: expected a dict of adjacency lists, got {type(adjacency_dict).__name__}")

  num_classes = ally.shape[1]
  test_lo, test_hi = int(test_index.min()), int(test_index.max())
  if test_lo != len(ally) or len(test_index) != len(ty) or tx.shape[0] != len(ty):
    raise ValueError(f"planetoid/{name}: test.index, tx, ty and ally do not line up")
  sorted_test = np.sort(test_index)
  num_nodes = test_hi + 1  # = len(ally) + the (padded) test range

  # Row i of ty/tx lands at graph id test_index[i]; ids in the test range without a row stay zero (CiteSeer).
  labels_one_hot = np.zeros((num_nodes, num_classes), ally.dtype)
  labels_one_hot[:len(ally)] = ally
  labels_one_hot[test_index] = ty
  labels = labels_one_hot.argmax(axis=1).astype(np.int32)

  features = None
  if allx is not None:
    features = np.zeros((num_nodes, allx.shape[1]), np.float32)
    features[:allx.shape[0]] = allx.toarray()
    features[test_index] = tx.toarray()

  lengths = [len(v) for v in adjacency_dict.values()]
  senders = np.repeat(np.fromiter(adjacency_dict.keys(), np.int64, len(adjacency_dict)), lengths)
  receivers = np.fromiter((r for v in adjacency_dict.values() for r in v), np.int64, sum(lengths))
  senders, receivers = _coalesce(senders, receivers, num_nodes, symmetrize=True, remove_self_loops=True)

  num_train = len(y)
  train_mask = _mask(np.arange(num_train), num_nodes)
  val_mask = _mask(np.arange(num_train, num_train + 500), num_nodes)
  test_mask = _mask(sorted_test, num_nodes)
  return NodeClassificationData(
      _make_graph(features, senders, receivers, num_nodes), labels, train_mask, val_mask, test_mask,
      int(num_classes), f"planetoid/{name}",
  )


# ---------------------------------------------------------------------------------------------------------------
# Pro-GNN (nettack npz + fixed splits + pre-attacked Metattack graphs).


def _csr_from_npz(npz: Any, prefix: str, path: Path) -> sp.csr_matrix:
  try:
    return sp.csr_matrix(
        (npz[f"{prefix}data"], npz[f"{prefix}indices"], npz[f"{prefix}indptr"]),
        shape=tuple(int(d) for d in npz[f"{prefix}shape"]),
    )
  except KeyError as e:
    raise ValueError(f"{path}: missing array {e} of a CSR matrix") from None


def _largest_connected_component(adjacency: sp.csr_matrix) -> np.ndarray:
  """Node ids (ascending) of the largest connected component, as DeepRobust's ``largest_connected_components``."""
  _, component = csgraph.connected_components(adjacency)
  sizes = np.bincount(component)
  return np.nonzero(component == np.argmax(sizes))[0]


def _binary_symmetric(adjacency: sp.spmatrix) -> sp.csr_matrix:
  adjacency = (adjacency + adjacency.T).tocsr()
  adjacency.data = np.minimum(adjacency.data, 1.0)
  return adjacency


def load_prognn(name: str, ptb_rate: float = 0.0, data_dir: PathLike | None = None) -> NodeClassificationData:
  """Loads the Pro-GNN robustness benchmark graph: clean (``ptb_rate=0``) or Metattack-poisoned.

  Follows DeepRobust's ``Dataset(name, setting="nettack", require_lcc=True)`` as used by Pro-GNN (Jin et al.,
  KDD 2020) and STABLE: the nettack npz adjacency is symmetrised (A + Aᵀ, clipped to 1), restricted to its largest
  connected component (nodes kept in ascending original order), and its diagonal is zeroed. Features and labels are
  restricted to the same nodes. Polblogs has no attributes: its features are the LCC rows of the identity of the
  full graph, i.e. ``[1222, 1490]`` (as DeepRobust, which builds ``eye(1490)`` before taking the LCC). The split is
  Pro-GNN's fixed 10/10/80 split (``<name>_prognn_splits.json``, equal to DeepRobust's seed-15 split).

  With ``ptb_rate > 0`` the adjacency is replaced by Pro-GNN's pre-computed Metattack (Meta-Self) graph
  ``<name>_meta_adj_<rate>.npz``, which is indexed like the clean LCC graph; features, labels and split are those of
  the clean graph. Expected (undirected edges): Cora 2485 nodes, 5069 edges clean, 6040 at 20 %; CiteSeer 2110 /
  3668 / 4375; Polblogs 1222 / 16714 / 17794.

  Args:
    name: ``"cora"``, ``"citeseer"`` or ``"polblogs"`` (case-insensitive).
    ptb_rate: one of ``PROGNN_PTB_RATES`` = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25).
    data_dir: data root containing ``prognn/``; default: ``$JAXGEN_DATA``, then ``../shared/data``.

  Returns:
    :class:`NodeClassificationData` named ``"prognn/<name>"`` or ``"prognn/<name>/meta-<rate>"``; each undirected
    edge appears in both directions, no self loops; ``graph.nodes`` float32 (binary for Cora/CiteSeer).

  Raises:
    ValueError: unknown ``name`` or ``ptb_rate``, a file fails its sha256 check, or an attacked graph does not
      match the clean LCC graph's size.
    FileNotFoundError: the dataset is not found.
  """
  name = _check_name(name, PROGNN_NAMES)
  if isinstance(ptb_rate, bool) or not isinstance(ptb_rate, (int, float, np.integer, np.floating)):
    raise TypeError(f"ptb_rate must be a float, one of {PROGNN_PTB_RATES}; got {type(ptb_rate).__name__}")
  rate = next((r for r in PROGNN_PTB_RATES if math.isclose(float(ptb_rate), r, abs_tol=1e-9)), None)
  if rate is None:
    raise ValueError(f"ptb_rate must be one of {PROGNN_PTB_RATES}, got {ptb_rate!r}")

  relpaths = [f"{name}.npz", f"{name}_prognn_splits.json"]
  if rate > 0:
    relpaths.append(f"{name}_meta_adj_{rate:g}.npz")
  paths = _files.dataset_files("prognn", relpaths, data_dir)

  with np.load(paths[f"{name}.npz"], allow_pickle=False) as npz:  # object arrays (idx_to_node) are never read
    adjacency = _csr_from_npz(npz, "adj_", paths[f"{name}.npz"])
    features = _csr_from_npz(npz, "attr_", paths[f"{name}.npz"]) if "attr_data" in npz.files else None
    labels = np.asarray(npz["labels"]).astype(np.int32)
  if features is None:
    features = sp.identity(adjacency.shape[0], np.float32, format="csr")
  adjacency = _binary_symmetric(adjacency)
  lcc = _largest_connected_component(adjacency)
  adjacency = adjacency[lcc][:, lcc].tolil()
  adjacency.setdiag(0)
  adjacency = adjacency.tocsr()
  adjacency.eliminate_zeros()
  features = features[lcc].toarray().astype(np.float32)
  labels = labels[lcc]
  num_nodes = len(lcc)

  if rate > 0:
    meta_path = paths[f"{name}_meta_adj_{rate:g}.npz"]
    with np.load(meta_path, allow_pickle=False) as npz:
      if "format" in npz.files and npz["format"].item() not in (b"csr", "csr"):
        raise ValueError(f"{meta_path}: expected a CSR matrix, got format {npz['format'].item()!r}")
      attacked = _csr_from_npz(npz, "", meta_path)
    if attacked.shape != (num_nodes, num_nodes):
      raise ValueError(f"{meta_path}: attacked graph has shape {attacked.shape}, expected the clean LCC's "
                       f"{(num_nodes, num_nodes)}")
    adjacency = _binary_symmetric(attacked).tolil()  # already symmetric 0/1; this only guards the convention
    adjacency.setdiag(0)
    adjacency = adjacency.tocsr()
    adjacency.eliminate_zeros()

  coo = adjacency.tocoo()
  senders, receivers = _coalesce(coo.row, coo.col, num_nodes, symmetrize=False, remove_self_loops=True)

  split = json.loads(paths[f"{name}_prognn_splits.json"].read_text(encoding="utf-8"))
  masks = []
  for key in ("idx_train", "idx_val", "idx_test"):
    idx = np.asarray(split[key], np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= num_nodes):
      raise ValueError(f"{name}_prognn_splits.json: {key} indexes beyond the {num_nodes} LCC nodes")
    masks.append(_mask(idx, num_nodes))
  suffix = f"/meta-{rate:g}" if rate > 0 else ""
  return NodeClassificationData(
      _make_graph(features, senders, receivers, num_nodes), labels, *masks, int(labels.max()) + 1,
      f"prognn/{name}{suffix}",
  )


# ---------------------------------------------------------------------------------------------------------------
# Heterophily benchmarks.


def _parse_geom_gcn_nodes(path: Path, num_features: int, sparse_indices: bool) -> tuple[np.ndarray, np.ndarray]:
  lines = path.read_text(encoding="utf-8").splitlines()
  if not lines or not lines[0].startswith("node_id"):
    raise ValueError(f"{path}: expected a header line starting with 'node_id'")
  rows = [line.split("\t") for line in lines[1:] if line.strip()]
  num_nodes = len(rows)
  node_ids = np.array([int(r[0]) for r in rows], np.int64)
  if not np.array_equal(np.sort(node_ids), np.arange(num_nodes)):
    raise ValueError(f"{path}: node ids should be a permutation of 0..{num_nodes - 1}")
  features = np.zeros((num_nodes, num_features), np.float32)
  labels = np.empty(num_nodes, np.int32)
  for node, row in zip(node_ids, rows):
    values = np.array(row[1].split(","), np.int64)
    if sparse_indices:  # Actor: indices of the non-zero entries of a binary vector
      features[node, values] = 1.0
    else:
      if values.size != num_features:
        raise ValueError(f"{path}: node {node} has {values.size} features, expected {num_features}")
      features[node] = values
    labels[node] = int(row[2])
  return features, labels


def _parse_edge_list(path: Path) -> tuple[np.ndarray, np.ndarray]:
  lines = path.read_text(encoding="utf-8").split("\n", 1)
  if not lines[0].startswith("node_id"):
    raise ValueError(f"{path}: expected a header line starting with 'node_id'")
  values = np.array(lines[1].split() if len(lines) > 1 else [], np.int64)
  if values.size % 2:
    raise ValueError(f"{path}: odd number of node ids in the edge list")
  return values[0::2], values[1::2]


def load_heterophily(name: str, split: int = 0, data_dir: PathLike | None = None, *, symmetrize: bool = True
                     ) -> NodeClassificationData:
  """Loads a heterophilous node-classification benchmark with one of its 10 fixed splits.

  Datasets (nodes / features / classes):
    * ``"texas"``, ``"wisconsin"``: Geom-GCN (Pei et al., ICLR 2020) WebKB graphs, 183 / 251 nodes, 1703 binary
      features, 5 classes. Split files are named ``*_0.6_0.2_*`` but hold 48 / 32 / 20 % of the nodes.
    * ``"cornell"``: the *official* Geom-GCN Cornell, whose feature/label file is byte-identical to Texas's; this is
      the version behind published Cornell numbers (edge homophily about 0.30).
    * ``"cornell_corrected"``: Cornell's own features and labels (B. Wei's corrected copy; edge homophily about
      0.13; equal to Platonov et al.'s ``cornell.npz``). Uses the Cornell split files.
    * ``"film"`` (alias ``"actor"``): 7600 nodes, 932 binary features (stored as indices of non-zero entries), 5
      classes.
    * ``"chameleon"``, ``"chameleon_filtered"``: Platonov et al. (ICLR 2023) npz files; 2277 / 890 nodes, 2325
      features, 5 classes. The unfiltered graph and its 10 splits equal Geom-GCN's; the filtered one removes the
      duplicate nodes that leak between train and test.

  Edges: with ``symmetrize=True`` (default; graph.md: "symmetrise for the energy models", as Geom-GCN/H2GCN-style
  models do) every edge is added in both directions, duplicates and self loops are removed (Texas 2 x 279 directed
  edges, Cornell 2 x 277, Wisconsin 2 x 450, Actor 2 x 26659, Chameleon 2 x 31371). With ``symmetrize=False``
  the edges are as stored, deduplicated and sorted, self loops kept (this equals PyTorch Geometric's ``WebKB`` /
  ``Actor`` ``edge_index``: Texas 325, Actor 30019 rows; Platonov npz files store each undirected edge once).

  Args:
    name: one of ``HETEROPHILY_NAMES`` (case-insensitive).
    split: index 0..9 of the fixed split.
    data_dir: data root containing ``heterophily/``; default: ``$JAXGEN_DATA``, then ``../shared/data``.
    symmetrize: see above.

  Returns:
    :class:`NodeClassificationData` named ``"heterophily/<name>/split-<k>"`` (``"actor"`` is reported as ``film``).

  Raises:
    ValueError: unknown ``name``, ``split`` outside 0..9, or a file fails its sha256 check.
    TypeError: ``split`` is not an int.
    FileNotFoundError: the dataset is not found.
  """
  name = _check_name(name, HETEROPHILY_NAMES)
  name = "film" if name == "actor" else name
  split = _check_split(split)
  if not isinstance(symmetrize, bool):
    raise TypeError(f"symmetrize must be a bool, got {type(symmetrize).__name__}")

  if name.startswith("chameleon"):
    relpath = f"platonov2023/{name}.npz"
    path = _files.dataset_files("heterophily", [relpath], data_dir)[relpath]
    with np.load(path, allow_pickle=False) as npz:
      features = np.asarray(npz["node_features"], np.float32)
      labels = np.asarray(npz["node_labels"]).astype(np.int32)
      edges = np.asarray(npz["edges"], np.int64)
      masks = [np.asarray(npz[key][split], bool) for key in ("train_masks", "val_masks", "test_masks")]
    senders, receivers = edges[:, 0], edges[:, 1]
  else:
    split_name = "cornell" if name == "cornell_corrected" else name
    folder = f"geom_gcn/new_data/{name}"
    relpaths = [f"{folder}/out1_node_feature_label.txt", f"{folder}/out1_graph_edges.txt",
                f"geom_gcn/splits/{split_name}_split_0.6_0.2_{split}.npz"]
    paths = _files.dataset_files("heterophily", relpaths, data_dir)
    features, labels = _parse_geom_gcn_nodes(paths[relpaths[0]], _GEOM_GCN_FEATURES[name], name == "film")
    senders, receivers = _parse_edge_list(paths[relpaths[1]])
    with np.load(paths[relpaths[2]], allow_pickle=False) as npz:
      masks = [np.asarray(npz[key]).astype(bool) for key in ("train_mask", "val_mask", "test_mask")]

  num_nodes = len(labels)
  if any(m.shape != (num_nodes,) for m in masks):
    raise ValueError(f"heterophily/{name}: split {split} masks do not have {num_nodes} entries")
  senders, receivers = _coalesce(senders, receivers, num_nodes, symmetrize=symmetrize, remove_self_loops=symmetrize)
  return NodeClassificationData(
      _make_graph(features, senders, receivers, num_nodes), labels, *masks, int(labels.max()) + 1,
      f"heterophily/{name}/split-{split}",
  )
