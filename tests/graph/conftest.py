"""Shared helpers for the graph tests: fixture paths and small random graphs."""

from pathlib import Path

import jraph
import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "graph"


def fixture_path(name: str) -> Path:
  path = FIXTURES / name
  if not path.exists():
    pytest.skip(f"fixture {path} not available")
  return path


def make_graph(senders, receivers, num_nodes, nodes=None) -> jraph.GraphsTuple:
  senders = np.asarray(senders, np.int32)
  receivers = np.asarray(receivers, np.int32)
  return jraph.GraphsTuple(nodes=nodes, edges=None, senders=senders, receivers=receivers, globals=None,
                           n_node=np.array([num_nodes], np.int32), n_edge=np.array([len(senders)], np.int32))


def random_undirected_graph(seed: int, num_nodes: int = 20, p: float = 0.2, ring: bool = True) -> jraph.GraphsTuple:
  """Symmetric edge list (both directions), no self loops; a ring keeps every node connected."""
  rng = np.random.default_rng(seed)
  a = np.triu(rng.random((num_nodes, num_nodes)) < p, 1)
  if ring:
    idx = np.arange(num_nodes)
    a[idx, (idx + 1) % num_nodes] = True
  a = np.triu(a | a.T, 1)
  a = a | a.T
  r, s = np.nonzero(a)
  return make_graph(s, r, num_nodes)
