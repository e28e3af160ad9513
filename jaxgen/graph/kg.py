r"""Knowledge-graph embeddings as energy descent: a gradient step on the entity embeddings is message passing
(spec graph.md §B.5.4, experiment F5; BloomGML-style, Zheng et al., AISTATS 2024, arXiv 2403.04763, §4).

Entities have free embeddings :math:`Y \in \mathbb{R}^{N\times d}` (no anchor term), relations
:math:`R \in \mathbb{R}^{|\mathcal R|\times d}`; triples :math:`(h, r, t)` are rows of an int ``[P, 3]`` array and
every positive triple p has M corrupted triples ``neg_triples[p, m]`` (``[P, M, 3]``, usually the same h and r with
a random tail).

* TransE (Bordes et al., NeurIPS 2013), squared distance :math:`\delta(h,r,t) = \|y_h + e_r - y_t\|^2`, margin
  ranking energy :math:`E = \sum_{p,m} [\gamma + \delta_p - \delta_{pm}]_+`.
* DistMult (Yang et al., ICLR 2015), score :math:`s(h,r,t) = \langle y_h, e_r, y_t\rangle`, softmax energy
  :math:`E = \sum_p \big[-s_p + \log(e^{s_p} + \sum_m e^{s_{pm}})\big]` (log-sum-exp over candidate tails).

:func:`kge_message_passing_step` computes :math:`-\nabla E` without autodiff: every triple sends a message to its
head, its tail and its relation, aggregated with ``segment_sum`` — node i receives from every triple it takes part
in, as head and as tail. It equals :math:`Y - \mathrm{lr}\,\nabla_Y E` (and the same for R).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.core.validate import check_count

__all__ = [
    "KGE_KINDS",
    "SyntheticKG",
    "filtered_mrr",
    "kge_energy",
    "kge_message_passing_step",
    "kge_scores",
    "make_synthetic_transe_kg",
    "sample_negative_tails",
    "train_kge",
]

KGE_KINDS = ("transe", "distmult")


def _check_triples(name, t, num_entities, num_relations):
  """Integer ``[..., 3]`` (head, relation, tail) ids in range (the range only when concrete)."""
  if not jnp.issubdtype(jnp.result_type(t), jnp.integer):
    raise TypeError(f"{name} must hold integer (head, relation, tail) ids, got dtype {jnp.result_type(t)}")
  if not isinstance(t, jax.core.Tracer) and np.size(t):
    t = np.asarray(t).reshape(-1, 3)
    for col, bound, what in ((0, num_entities, "head"), (2, num_entities, "tail"), (1, num_relations, "relation")):
      if t[:, col].min() < 0 or t[:, col].max() >= bound:
        raise ValueError(f"{name}: {what} ids must lie in [0, {bound})")


def _check_finite(name, value):
  if not isinstance(value, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(value))):
    raise ValueError(f"{name} must be finite, got {value!r}")


def _check(kind, y, r, triples, neg_triples):
  if kind not in KGE_KINDS:
    raise ValueError(f"kind must be one of {KGE_KINDS}, got {kind!r}")
  if jnp.ndim(y) != 2 or jnp.ndim(r) != 2 or jnp.shape(y)[1] != jnp.shape(r)[1]:
    raise ValueError(f"y [N, d] and r [R, d] must share d, got {jnp.shape(y)} and {jnp.shape(r)}")
  if jnp.ndim(triples) != 2 or jnp.shape(triples)[1] != 3:
    raise ValueError(f"triples must be [P, 3], got {jnp.shape(triples)}")
  if jnp.ndim(neg_triples) != 3 or jnp.shape(neg_triples)[0] != jnp.shape(triples)[0] or jnp.shape(
      neg_triples)[2] != 3:
    raise ValueError(f"neg_triples must be [P, M, 3] with P = {jnp.shape(triples)[0]}, got "
                     f"{jnp.shape(neg_triples)}")
  for name, t in (("triples", triples), ("neg_triples", neg_triples)):
    _check_triples(name, t, y.shape[0], r.shape[0])



def _parts(y, r, t):
  return y[t[..., 0]], r[t[..., 1]], y[t[..., 2]]


def kge_scores(kind: str, y: jax.Array, r: jax.Array, triples: jax.Array) -> jax.Array:
  """TransE: squared distance δ (lower is better); DistMult: score s (higher is better). Shape ``triples[..., 0]``.

  ``triples`` rows are ``(head, relation, tail)``. Example (TransE: ``y_h + r - y_t``)::

    >>> import jax.numpy as jnp
    >>> y, r = jnp.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]), jnp.array([[1.0, 0.0]])
    >>> kge_scores("transe", y, r, jnp.array([[0, 0, 1], [0, 0, 2]])).tolist()
    [0.0, 1.0]
  """
  yh, er, yt = _parts(y, r, triples)
  if kind == "transe":
    v = yh + er - yt
    return jnp.sum(v * v, axis=-1)
  if kind == "distmult":
    return jnp.sum(yh * er * yt, axis=-1)
  raise ValueError(f"kind must be one of {KGE_KINDS}, got {kind!r}")


def kge_energy(kind: str, y: jax.Array, r: jax.Array, triples: jax.Array, neg_triples: jax.Array, *,
               margin: float = 1.0) -> jax.Array:
  r"""The KGE energy (module docstring): TransE margin ranking or DistMult softmax cross-entropy.

  Args:
    kind: ``"transe"`` or ``"distmult"``.
    y: entity embeddings ``[N, d]``; r: relation embeddings ``[R, d]``.
    triples: ``[P, 3]`` (head, relation, tail); neg_triples: ``[P, M, 3]`` corrupted triples.
    margin: TransE margin γ.
  """
  _check(kind, y, r, triples, neg_triples)
  _check_finite("margin", margin)
  pos = kge_scores(kind, y, r, triples)  # [P]
  neg = kge_scores(kind, y, r, neg_triples)  # [P, M]
  if kind == "transe":
    return jnp.sum(jax.nn.relu(margin + pos[:, None] - neg))
  logits = jnp.concatenate([pos[:, None], neg], axis=1)
  return jnp.sum(jax.nn.logsumexp(logits, axis=1) - pos)


def _score_grads(kind, y, r, t, coef):
  """Messages for triples ``t`` [K, 3] with dE/d(score) = coef [K]: (to heads, to relations, to tails)."""
  yh, er, yt = _parts(y, r, t)
  c = coef[:, None]
  if kind == "transe":
    v = 2.0 * (yh + er - yt)
    return c * v, c * v, -c * v
  return c * er * yt, c * yh * yt, c * yh * er


def kge_message_passing_step(kind: str, y: jax.Array, r: jax.Array, triples: jax.Array, neg_triples: jax.Array,
                             lr: float, *, margin: float = 1.0) -> tuple[jax.Array, jax.Array]:
  r"""One gradient step on the KGE energy written as message passing with explicit ``segment_sum``.

  Each triple k (positive or corrupted) carries :math:`c_k = \partial E/\partial(\text{score}_k)` — TransE:
  :math:`c_p = \sum_m 1[\gamma + \delta_p - \delta_{pm} > 0]`, :math:`c_{pm} = -1[\cdot]`; DistMult:
  :math:`c_p = \pi_{p0} - 1`, :math:`c_{pm} = \pi_{pm}` with :math:`\pi_p` the softmax over
  :math:`(s_p, s_{p1}, \dots)` — and sends :math:`c_k\,\partial\text{score}_k/\partial y_h` to its head,
  :math:`c_k\,\partial\text{score}_k/\partial y_t` to its tail and :math:`c_k\,\partial\text{score}_k/\partial e_r`
  to its relation. Aggregating with ``segment_sum`` gives :math:`\nabla E`; returns
  :math:`(Y - \mathrm{lr}\nabla_Y E,\ R - \mathrm{lr}\nabla_R E)`.
  """
  _check(kind, y, r, triples, neg_triples)
  _check_finite("margin", margin)
  _check_finite("lr", lr)
  num_pos, num_neg = neg_triples.shape[0], neg_triples.shape[1]
  pos = kge_scores(kind, y, r, triples)
  neg = kge_scores(kind, y, r, neg_triples)
  if kind == "transe":
    active = (margin + pos[:, None] - neg > 0).astype(y.dtype)  # [P, M]
    c_pos, c_neg = jnp.sum(active, axis=1), -active
  else:
    pi = jax.nn.softmax(jnp.concatenate([pos[:, None], neg], axis=1), axis=1)
    c_pos, c_neg = pi[:, 0] - 1.0, pi[:, 1:]
  all_t = jnp.concatenate([triples, neg_triples.reshape(num_pos * num_neg, 3)], axis=0)
  coef = jnp.concatenate([c_pos, c_neg.reshape(-1)])
  to_h, to_r, to_t = _score_grads(kind, y, r, all_t, coef)
  n = y.shape[0]
  grad_y = (jax.ops.segment_sum(to_h, all_t[:, 0], num_segments=n)
            + jax.ops.segment_sum(to_t, all_t[:, 2], num_segments=n))
  grad_r = jax.ops.segment_sum(to_r, all_t[:, 1], num_segments=r.shape[0])
  return y - lr * grad_y, r - lr * grad_r


def sample_negative_tails(key: jax.Array, triples: jax.Array, num_entities: int, num_negatives: int) -> jax.Array:
  """Corrupts the tail of every triple uniformly at random: ``[P, num_negatives, 3]``."""
  num_entities = check_count("num_entities", num_entities, 1)
  num_negatives = check_count("num_negatives", num_negatives, 1)
  if jnp.ndim(triples) != 2 or jnp.shape(triples)[1] != 3:
    raise ValueError(f"triples must be [P, 3], got {jnp.shape(triples)}")
  tails = jax.random.randint(key, (triples.shape[0], num_negatives), 0, num_entities, dtype=triples.dtype)
  neg = jnp.broadcast_to(triples[:, None, :], (triples.shape[0], num_negatives, 3))
  return neg.at[:, :, 2].set(tails)


def _project_unit_ball(y):
  norm = jnp.linalg.norm(y, axis=-1, keepdims=True)
  return y / jnp.maximum(norm, 1.0)


def train_kge(key: jax.Array, kind: str, triples: jax.Array, num_entities: int, num_relations: int, *, dim: int,
              num_steps: int, lr: float, num_negatives: int = 16, margin: float = 1.0, project: bool = True
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Full-batch descent with :func:`kge_message_passing_step` in one ``lax.scan`` (fresh negatives each step).

  ``project``: after each step project entity rows onto the unit ball (TransE's norm constraint, the proximal map
  of its indicator). Returns ``(Y, R, energy_trace[num_steps])``.
  """
  if kind not in KGE_KINDS:
    raise ValueError(f"kind must be one of {KGE_KINDS}, got {kind!r}")
  num_entities = check_count("num_entities", num_entities, 1)
  num_relations = check_count("num_relations", num_relations, 1)
  dim = check_count("dim", dim, 1)
  num_steps = check_count("num_steps", num_steps, 0)
  num_negatives = check_count("num_negatives", num_negatives, 1)
  _check_finite("lr", lr)
  _check_finite("margin", margin)
  if jnp.ndim(triples) != 2 or jnp.shape(triples)[1] != 3:
    raise ValueError(f"triples must be [P, 3], got {jnp.shape(triples)}")
  _check_triples("triples", triples, num_entities, num_relations)
  k_y, k_r, k_loop = jax.random.split(key, 3)
  scale = 1.0 / np.sqrt(dim)
  y = jax.random.uniform(k_y, (num_entities, dim), minval=-scale, maxval=scale) * np.sqrt(3.0)
  r = jax.random.uniform(k_r, (num_relations, dim), minval=-scale, maxval=scale) * np.sqrt(3.0)
  triples = jnp.asarray(triples, jnp.int32)

  def body(carry, k):
    y, r = carry
    neg = sample_negative_tails(k, triples, num_entities, num_negatives)
    e = kge_energy(kind, y, r, triples, neg, margin=margin)
    y, r = kge_message_passing_step(kind, y, r, triples, neg, lr, margin=margin)
    if project:
      y = _project_unit_ball(y)
    return (y, r), e

  (y, r), trace = jax.lax.scan(body, (y, r), jax.random.split(k_loop, num_steps))
  return y, r, trace


def filtered_mrr(kind: str, y: jax.Array, r: jax.Array, test_triples: np.ndarray, known_triples: np.ndarray
                 ) -> float:
  """Filtered mean reciprocal rank of the true tail among all entities (other known true tails removed)."""
  if kind not in KGE_KINDS:
    raise ValueError(f"kind must be one of {KGE_KINDS}, got {kind!r}")
  test_triples, known_triples = np.asarray(test_triples), np.asarray(known_triples)
  for name, t in (("test_triples", test_triples), ("known_triples", known_triples)):
    if t.ndim != 2 or t.shape[1] != 3:
      raise ValueError(f"{name} must be [T, 3], got {t.shape}")
    _check_triples(name, t, y.shape[0], r.shape[0])
  if len(test_triples) == 0:
    raise ValueError("test_triples is empty: the mean reciprocal rank of no triple is undefined")
  n = y.shape[0]
  cand = np.broadcast_to(test_triples[:, None, :], (len(test_triples), n, 3)).copy()
  cand[:, :, 2] = np.arange(n)[None, :]
  scores = np.asarray(kge_scores(kind, y, r, jnp.asarray(cand)))  # [T, N]
  if kind == "transe":
    scores = -scores
  scores = np.where(np.isnan(scores), -np.inf, scores)  # a diverged model ranks nothing first
  known = {}
  for h, rel, t in np.asarray(known_triples):
    known.setdefault((int(h), int(rel)), set()).add(int(t))
  rr = []
  for i, (h, rel, t) in enumerate(test_triples):
    s = scores[i].copy()
    others = [o for o in known.get((int(h), int(rel)), ()) if o != int(t)]
    s[others] = -np.inf
    rank = n if s[int(t)] == -np.inf else 1 + np.sum(s > s[int(t)])
    rr.append(1.0 / rank)
  return float(np.mean(rr))


class SyntheticKG(NamedTuple):
  """Triples drawn from a ground-truth TransE model (F5)."""

  train: np.ndarray  # [P_train, 3]
  test: np.ndarray  # [P_test, 3]
  num_entities: int
  num_relations: int


def make_synthetic_transe_kg(seed: int = 0, *, num_entities: int = 200, num_relations: int = 5,
                             num_triples: int = 2000, dim: int = 8, test_fraction: float = 0.1) -> SyntheticKG:
  """A synthetic KG from a ground-truth TransE model (host-side NumPy).

  Ground truth: entities ~ N(0, I_dim), relations ~ N(0, I_dim). For every (h, r) pair the tails are the
  ``num_triples / (num_entities * num_relations)`` entities nearest to :math:`y_h + e_r` (h excluded); pairs are
  used until ``num_triples`` unique triples exist, then a random ``test_fraction`` is held out.
  """
  num_entities = check_count("num_entities", num_entities, 2)
  num_relations = check_count("num_relations", num_relations, 1)
  num_triples = check_count("num_triples", num_triples, 1)
  dim = check_count("dim", dim, 1)
  if not 0.0 <= test_fraction <= 1.0:
    raise ValueError(f"test_fraction must lie in [0, 1], got {test_fraction!r}")
  rng = np.random.default_rng(seed)
  ent = rng.normal(size=(num_entities, dim))
  rel = rng.normal(size=(num_relations, dim))
  per_pair = int(np.ceil(num_triples / (num_entities * num_relations)))
  triples = []
  for h in range(num_entities):
    for r in range(num_relations):
      dist = np.linalg.norm(ent[h] + rel[r] - ent, axis=1)
      dist[h] = np.inf
      for t in np.argsort(dist)[:per_pair]:
        triples.append((h, r, int(t)))
  triples = np.array(triples, np.int32)
  triples = triples[rng.permutation(len(triples))[:num_triples]]
  num_test = int(round(test_fraction * len(triples)))
  return SyntheticKG(triples[num_test:], triples[:num_test], num_entities, num_relations)
