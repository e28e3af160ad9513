"""Tests for the graph loaders against fixtures/graph/dataset_stats.json, graph.md section E and the SOURCE.md files."""

import pickle

import jraph
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse import csgraph

from jaxgen import data
from jaxgen.data import _files, graphs

_PLANETOID_KEYS = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}


def _require(name):
  try:
    _files.find_dataset_dir(name)
  except FileNotFoundError:
    pytest.skip(f"shared dataset '{name}' not available")


@pytest.fixture(scope="module")
def planetoid():
  _require("planetoid")
  return {name: data.load_planetoid(name) for name in data.PLANETOID_NAMES}


@pytest.fixture(scope="module")
def prognn():
  _require("prognn")
  return {(name, rate): data.load_prognn(name, rate) for name in data.PROGNN_NAMES for rate in data.PROGNN_PTB_RATES}


def _edge_set(graph):
  return set(zip(graph.senders.tolist(), graph.receivers.tolist()))


def _homophily(d):
  g = d.graph
  return float(np.mean(d.labels[g.senders] == d.labels[g.receivers]))


def _check_container(d, num_nodes):
  assert isinstance(d, data.NodeClassificationData)
  assert d._fields == ("graph", "labels", "train_mask", "val_mask", "test_mask", "num_classes", "name")
  g = d.graph
  assert isinstance(g, jraph.GraphsTuple)
  assert g.senders.dtype == np.int32 and g.receivers.dtype == np.int32
  assert g.n_node.tolist() == [num_nodes] and g.n_edge.tolist() == [len(g.senders)] == [len(g.receivers)]
  assert g.n_node.dtype == np.int32 and g.n_edge.dtype == np.int32
  assert g.edges is None and g.globals is None
  assert d.labels.shape == (num_nodes,) and d.labels.dtype == np.int32
  assert 0 <= d.labels.min() and d.labels.max() < d.num_classes
  for mask in (d.train_mask, d.val_mask, d.test_mask):
    assert mask.shape == (num_nodes,) and mask.dtype == np.bool_
  assert not (d.train_mask & d.val_mask).any() and not (d.train_mask & d.test_mask).any()
  assert not (d.val_mask & d.test_mask).any()
  keys = g.senders.astype(np.int64) * num_nodes + g.receivers
  assert np.all(np.diff(keys) > 0), "edges must be sorted by (sender, receiver) without duplicates"
  if g.nodes is not None:
    assert g.nodes.shape[0] == num_nodes and g.nodes.dtype == np.float32


def _check_undirected(graph):
  edges = _edge_set(graph)
  assert edges == {(r, s) for s, r in edges}
  assert not np.any(graph.senders == graph.receivers)


# --- Planetoid ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", data.PLANETOID_NAMES)
def test_planetoid_matches_pyg_statistics(planetoid, graph_stats, name):
  expected = graph_stats["planetoid_public_split_pyg_conventions"][_PLANETOID_KEYS[name]]
  d = planetoid[name]
  n = expected["num_nodes"]
  _check_container(d, n)
  _check_undirected(d.graph)
  assert d.name == f"planetoid/{name}"
  assert int(d.graph.n_edge[0]) == expected["num_edges_directed"]
  assert d.num_classes == expected["num_classes"]
  assert [int(m.sum()) for m in (d.train_mask, d.val_mask, d.test_mask)] == [
      expected["train"], expected["val"], expected["test"]]
  np.testing.assert_array_equal(np.bincount(d.labels[d.train_mask]), expected["train_per_class"])
  assert _homophily(d) == pytest.approx(expected["edge_homophily"], abs=1e-6)
  test_ids = np.nonzero(d.test_mask)[0]
  assert [test_ids.min(), test_ids.max()] == expected["test_idx_range"]
  degree = np.bincount(d.graph.receivers, minlength=n)
  assert int((degree == 0).sum()) == expected["n_isolated"]
  if name == "pubmed":
    # Padding-free graph: every node has a label row, so class counts match.
    np.testing.assert_array_equal(np.bincount(d.labels), expected["class_counts"])
    assert d.graph.nodes is None
    return
  np.testing.assert_array_equal(np.nonzero(d.train_mask)[0], np.arange(expected["train"]))
  val_lo, val_hi = expected["val_idx_range"]
  np.testing.assert_array_equal(np.nonzero(d.val_mask)[0], np.arange(val_lo, val_hi + 1))
  np.testing.assert_array_equal(np.bincount(d.labels), expected["class_counts"])
  x = d.graph.nodes
  assert x.shape == (n, expected["num_features"])
  assert int(np.count_nonzero(x)) == expected["feature_nnz"]
  assert float(x.sum()) == expected["x_sum"]
  assert set(np.unique(x).tolist()) == {0.0, 1.0}
  assert int((x.sum(axis=1) == 0).sum()) == expected["zero_feature_rows"]


def test_citeseer_padding_nodes(planetoid, require_dataset):
  """The 15 test-range ids without a tx row: zero features, label 0, in no mask, and not in test.index."""
  d = planetoid["citeseer"]
  test_index = np.loadtxt(require_dataset("planetoid") / "ind.citeseer.test.index", dtype=np.int64)
  padding = np.setdiff1d(np.arange(2312, 3327), test_index)
  assert len(padding) == 15
  assert not d.graph.nodes[padding].any()
  assert not d.labels[padding].any()
  in_any = d.train_mask | d.val_mask | d.test_mask
  assert not in_any[padding].any()
  np.testing.assert_array_equal(np.nonzero(d.test_mask)[0], np.sort(test_index))


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_planetoid_test_rows_follow_test_index(planetoid, require_dataset, name):
  """Row i of tx/ty lands at graph id test.index[i]; allx/ally fill the first rows (files read independently)."""
  folder = require_dataset("planetoid")
  test_index = np.loadtxt(folder / f"ind.{name}.test.index", dtype=np.int64)
  assert not np.array_equal(test_index, np.sort(test_index))  # the file is not sorted: the permutation matters
  d = planetoid[name]
  read = {part: graphs._unpickle(folder / f"ind.{name}.{part}") for part in ("ty", "tx", "ally", "allx")}
  np.testing.assert_array_equal(d.labels[test_index], read["ty"].argmax(axis=1))
  np.testing.assert_array_equal(d.graph.nodes[test_index], graphs._to_csr(read["tx"], folder).toarray())
  n_allx = len(read["ally"])
  np.testing.assert_array_equal(d.labels[:n_allx], read["ally"].argmax(axis=1))
  np.testing.assert_array_equal(d.graph.nodes[:n_allx], graphs._to_csr(read["allx"], folder).toarray())


def test_pubmed_features_absent(planetoid):
  with pytest.raises(FileNotFoundError, match=r"ind\.pubmed\.allx.*absent"):
    data.load_planetoid("pubmed", require_features=True)
  assert data.load_planetoid("PubMed").graph.nodes is None  # case-insensitive name
  assert data.load_planetoid("cora", require_features=True).graph.nodes.shape == (2708, 1433)


def test_pubmed_allx_with_wrong_blob_id_is_rejected(copy_dataset, monkeypatch):
  root = copy_dataset("planetoid")
  (root / "planetoid" / "ind.pubmed.allx").write_bytes(b"not the real file")
  monkeypatch.setattr(graphs, "_unpickle", lambda path: pytest.fail(f"unpickled {path}"))
  with pytest.raises(ValueError, match=r"ind\.pubmed\.allx.*git-blob-sha1.*3b86bccf"):
    data.load_planetoid("pubmed", data_dir=root)
  report = {r["name"]: r for r in data.verify_datasets(data_dir=root)}
  assert report["planetoid"]["status"] == "corrupt"
  assert report["planetoid"]["corrupt_files"] == ["ind.pubmed.allx"]


def test_git_blob_sha1(tmp_path):
  path = tmp_path / "hello"
  path.write_bytes(b"hello\n")
  assert _files.git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object` of "hello\n"


@pytest.mark.parametrize("part", ["graph", "tx", "test.index"])
def test_planetoid_corrupt_file_is_never_unpickled(copy_dataset, corrupt, monkeypatch, part):
  root = copy_dataset("planetoid")
  corrupt(root / "planetoid" / f"ind.cora.{part}", offset=3)
  monkeypatch.setenv("JAXGEN_DATA", str(root))

  def fail(*args, **kwargs):
    pytest.fail("a Planetoid file was unpickled before verification")

  monkeypatch.setattr(graphs, "_unpickle", fail)
  monkeypatch.setattr(graphs._PlanetoidUnpickler, "load", fail)
  monkeypatch.setattr(pickle, "load", fail)
  monkeypatch.setattr(pickle, "loads", fail)
  with pytest.raises(ValueError) as info:
    data.load_planetoid("cora")
  assert f"ind.cora.{part}" in str(info.value) and "'planetoid'" in str(info.value)
  # Other datasets in the same folder are untouched.
  monkeypatch.undo()
  assert data.load_planetoid("citeseer", data_dir=root).graph.n_node[0] == 3327


def test_restricted_unpickler_rejects_other_globals(tmp_path):
  path = tmp_path / "evil.pkl"
  path.write_bytes(pickle.dumps(print, protocol=2))
  with pytest.raises(pickle.UnpicklingError, match=r"__builtin__\.print' is not allowed"):
    graphs._unpickle(path)
  marker = tmp_path / "executed"
  path.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())  # protocol-0 call of os.system
  with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
    graphs._unpickle(path)
  assert not marker.exists()


def test_planetoid_name_validation():
  with pytest.raises(ValueError, match=r"name must be one of \('cora', 'citeseer', 'pubmed'\)"):
    data.load_planetoid("reddit")
  with pytest.raises(TypeError, match="name must be a str"):
    data.load_planetoid(1)


# --- Pro-GNN -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", data.PROGNN_NAMES)
def test_prognn_clean_matches_statistics(prognn, graph_stats, name):
  expected = graph_stats["prognn_nettack_lcc_setting"][name]
  d = prognn[(name, 0.0)]
  _check_container(d, expected["nodes"])
  _check_undirected(d.graph)
  assert d.name == f"prognn/{name}"
  assert int(d.graph.n_edge[0]) == 2 * expected["edges"]
  assert d.graph.nodes.shape == (expected["nodes"], expected["features"])
  assert d.num_classes == expected["classes"]
  assert [int(m.sum()) for m in (d.train_mask, d.val_mask, d.test_mask)] == [
      expected["train"], expected["val"], expected["test"]]
  assert _homophily(d) == pytest.approx(expected["edge_homophily"], abs=1e-9)
  degree = np.bincount(d.graph.receivers, minlength=expected["nodes"])
  assert degree.min() > 0  # largest connected component: no isolated node
  adjacency = sp.coo_matrix((np.ones(len(d.graph.senders)), (d.graph.senders, d.graph.receivers)))
  assert csgraph.connected_components(adjacency)[0] == 1
  if name == "polblogs":  # identity rows of the full 1490-node graph, restricted to the LCC (DeepRobust)
    x = d.graph.nodes
    assert x.sum() == expected["nodes"] and (x.sum(axis=1) == 1).all() and (x.sum(axis=0) <= 1).all()
  else:
    assert set(np.unique(d.graph.nodes).tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("name", data.PROGNN_NAMES)
@pytest.mark.parametrize("rate", [r for r in data.PROGNN_PTB_RATES if r > 0])
def test_prognn_metattack_graphs(prognn, graph_stats, name, rate):
  expected = graph_stats["prognn_nettack_lcc_setting"][name]
  meta = expected["meta"][f"{rate:g}"]
  clean, attacked = prognn[(name, 0.0)], prognn[(name, rate)]
  _check_container(attacked, expected["nodes"])
  _check_undirected(attacked.graph)
  assert attacked.name == f"prognn/{name}/meta-{rate:g}"
  assert int(attacked.graph.n_edge[0]) == 2 * meta["edges"]
  clean_edges, attacked_edges = _edge_set(clean.graph), _edge_set(attacked.graph)
  assert len(attacked_edges - clean_edges) == 2 * meta["added"]
  assert len(clean_edges - attacked_edges) == 2 * meta["removed"]
  assert meta["added"] + meta["removed"] == int(rate * expected["edges"])  # floor(rate * |E|) flips
  for field in ("labels", "train_mask", "val_mask", "test_mask"):
    np.testing.assert_array_equal(getattr(attacked, field), getattr(clean, field))
  np.testing.assert_array_equal(attacked.graph.nodes, clean.graph.nodes)
  if rate == 0.2:
    assert _homophily(attacked) == pytest.approx(expected["edge_homophily_meta_0.2"], abs=1e-9)


def test_prognn_argument_validation():
  with pytest.raises(ValueError, match=r"ptb_rate must be one of \(0\.0, 0\.05, 0\.1, 0\.15, 0\.2, 0\.25\)"):
    data.load_prognn("cora", 0.3)
  with pytest.raises(TypeError, match="ptb_rate"):
    data.load_prognn("cora", "0.05")
  with pytest.raises(ValueError, match=r"name must be one of \('cora', 'citeseer', 'polblogs'\)"):
    data.load_prognn("pubmed")


def test_prognn_corrupt_attacked_graph(copy_dataset, corrupt):
  root = copy_dataset("prognn")
  corrupt(root / "prognn" / "cora_meta_adj_0.2.npz")
  with pytest.raises(ValueError, match=r"cora_meta_adj_0\.2\.npz"):
    data.load_prognn("cora", 0.2, data_dir=root)
  assert data.load_prognn("cora", 0.05, data_dir=root).graph.n_edge[0] == 2 * 5322


# --- Heterophily -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["texas", "cornell", "wisconsin", "film"])
def test_geom_gcn_matches_statistics(graph_stats, name):
  _require("heterophily")
  expected = graph_stats["geom_gcn_webkb_actor"][name]
  directed = data.load_heterophily(name, 0, symmetrize=False)
  undirected = data.load_heterophily(name, 0)
  for d in (directed, undirected):
    _check_container(d, expected["nodes"])
    assert d.graph.nodes.shape == (expected["nodes"], expected["features"])
    assert d.num_classes == expected["classes"]
    np.testing.assert_array_equal(np.bincount(d.labels), expected["class_counts"])
    assert [int(m.sum()) for m in (d.train_mask, d.val_mask, d.test_mask)] == expected["split0"]
    assert set(np.unique(d.graph.nodes).tolist()) == {0.0, 1.0}
  assert int(directed.graph.n_edge[0]) == expected["unique_directed_edges"]
  assert int((directed.graph.senders == directed.graph.receivers).sum()) == expected["self_loops"]
  assert _homophily(directed) == pytest.approx(expected["edge_homophily_directed"], abs=5e-5)
  _check_undirected(undirected.graph)
  assert int(undirected.graph.n_edge[0]) == 2 * expected["undirected_edges_no_self_loops"]
  assert undirected.name == f"heterophily/{name}/split-0"


@pytest.mark.parametrize(
    "name, nodes, edges, counts, homophily",
    [("chameleon", 2277, 31371, [456, 460, 453, 521, 387], 0.230),
     ("chameleon_filtered", 890, 8854, [242, 134, 209, 164, 141], 0.236),
     ("cornell_corrected", 183, 277, [38, 16, 30, 82, 17], 0.131)],
)
def test_other_heterophily_graphs(name, nodes, edges, counts, homophily):
  _require("heterophily")
  d = data.load_heterophily(name, 3)
  _check_container(d, nodes)
  _check_undirected(d.graph)
  assert int(d.graph.n_edge[0]) == 2 * edges
  np.testing.assert_array_equal(np.bincount(d.labels), counts)
  assert d.graph.nodes.shape[1] == (1703 if name.startswith("cornell") else 2325)
  directed = data.load_heterophily(name, 3, symmetrize=False)
  assert _homophily(directed) == pytest.approx(homophily, abs=5e-4)
  if name == "chameleon":
    assert [int(m.sum()) for m in (d.train_mask, d.val_mask, d.test_mask)] == [1092, 729, 456]
  if name == "chameleon_filtered":
    assert 409 <= d.train_mask.sum() <= 440 and 268 <= d.val_mask.sum() <= 310 and 159 <= d.test_mask.sum() <= 194


def test_heterophily_ten_distinct_splits():
  _require("heterophily")
  splits = [data.load_heterophily("wisconsin", k) for k in range(10)]
  for d in splits:
    assert [int(m.sum()) for m in (d.train_mask, d.val_mask, d.test_mask)] == [120, 80, 51]  # 48 / 32 / 20 %
  assert len({d.train_mask.tobytes() for d in splits}) == 10


def test_official_cornell_reuses_texas_features():
  _require("heterophily")
  texas, cornell = data.load_heterophily("texas"), data.load_heterophily("cornell")
  corrected = data.load_heterophily("cornell_corrected")
  np.testing.assert_array_equal(cornell.graph.nodes, texas.graph.nodes)
  np.testing.assert_array_equal(cornell.labels, texas.labels)
  assert not np.array_equal(corrected.labels, cornell.labels)
  np.testing.assert_array_equal(corrected.train_mask, cornell.train_mask)  # same split files


def test_actor_alias():
  _require("heterophily")
  actor, film = data.load_heterophily("Actor", 2), data.load_heterophily("film", 2)
  assert actor.name == film.name == "heterophily/film/split-2"
  np.testing.assert_array_equal(actor.graph.senders, film.graph.senders)


def test_heterophily_argument_validation():
  with pytest.raises(ValueError, match=r"split must be an int in 0\.\.9"):
    data.load_heterophily("texas", 10)
  with pytest.raises(TypeError, match="split"):
    data.load_heterophily("texas", "0")
  with pytest.raises(ValueError, match=r"name must be one of .*'chameleon'"):
    data.load_heterophily("squirrel")
  with pytest.raises(TypeError, match="symmetrize"):
    data.load_heterophily("texas", symmetrize=1)


def test_heterophily_corrupt_split_file(copy_dataset, corrupt):
  root = copy_dataset("heterophily")
  corrupt(root / "heterophily" / "geom_gcn" / "splits" / "texas_split_0.6_0.2_4.npz")
  with pytest.raises(ValueError, match=r"texas_split_0\.6_0\.2_4\.npz"):
    data.load_heterophily("texas", 4, data_dir=root)
  assert data.load_heterophily("texas", 3, data_dir=root).graph.n_node[0] == 183
