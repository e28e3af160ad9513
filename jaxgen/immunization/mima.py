r"""MIMA: multi-concept model immunization through a differentiable closed-form key/value merge.

Zheng & Yeh, "Multi-concept Model Immunization through Differentiable Model Merging", AAAI 2025
(arXiv 2412.15320); released code github.com/amberyzheng/MIMA (``composenW.py::gdupdateWexact``, inherited from
Custom Diffusion's multi-concept composition). Spec: ``shared/specs/immunization.md`` §3.

**Merge** (paper Eq. for the merged cross-attention projections; spec §3.1). For every key/value projection
:math:`W \in \mathbb R^{d \times o}` (row-vector convention ``out = c @ W``, ``d`` = context width) solve

.. math::  W^* = \arg\min_{W'} \|C_{reg}(W' - W)\|_F^2 + \rho \|W' - W\|_F^2
           \quad\text{s.t.}\quad C_t W' = V_t,

with :math:`C_{reg} \in \mathbb R^{r \times d}` the context vectors that should keep their outputs,
:math:`C_t \in \mathbb R^{m \times d}` the target-concept context rows of all concepts and :math:`V_t` whose row
:math:`i` is :math:`c_i W'_n` for the adapted copy :math:`W'_n` of the concept :math:`n` owning row :math:`i`. With
:math:`G = C_{reg}^\top C_{reg} + \rho I` and :math:`D = G^{-1} C_t^\top`,

.. math::  W^* = W + D\,(C_t D)^{-1}\,(V_t - C_t W)

(Lagrange conditions :math:`G(W^* - W) = C_t^\top \Lambda`, :math:`C_t W^* = V_t`). Both solves are Cholesky
solves of symmetric positive definite systems, so :math:`W^*` is a differentiable function of
:math:`(W, C_{reg}, C_t, V_t)` and ``jax.grad`` flows through it — the paper's premise. The released code writes
:math:`W^*` under ``torch.no_grad``; here that is the ``"alternating"`` scheme, the differentiable path is the
default.

**Outer objective** (spec §3.1, minimized over the upper-level parameters :math:`\theta_u`, the cross-attention
q/k/v/out projections): each concept :math:`n` gets its own lower-level copy :math:`\theta'_n =
\mathrm{Adapt}_n(\theta_u)` (``K`` SGD steps of the attacker's re-learning loss on the concept's data, here on
``MIMAConfig.delta_paths``, by default the K/V kernels), the copies are merged (K/V by the closed form, every
other leaf by the mean), and

.. math::  J(\theta_u) = \frac1N\sum_n -\min\big(L(x_n, c_n; \mathrm{Merge}(\{\theta'_n\})), \tau\big)
           + \lambda\, L_{pres}(\mathrm{Merge}(\{\theta'_n\})).

Schemes (``MIMAConfig.scheme``): ``"unrolled"`` (default; the adaptation restarts from zero K/V deltas at each
outer step and ``jax.grad`` runs through the ``K`` inner steps of every concept and the merge), ``"truncated"``
(the deltas persist across outer steps, gradients through the last ``K`` steps), ``"alternating"`` (the released
code: one SGD step per concept on K/V, merge with no gradient, write the merged K/V into the model, then one outer
Adam step of :math:`J` evaluated at the written model). ``first_order=True`` stops gradients through the inner
gradients (FOMAML) in the scanned schemes.

Pitfalls (spec §7): the solves need a well-conditioned :math:`C_{reg}^\top C_{reg}` (many more rows than ``d``,
or ``ridge`` :math:`\rho > 0`) and distinct target rows (:func:`dedupe_rows`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import optax

from jaxgen.core import bilevel
from jaxgen.core.lora import path_to_str
from jaxgen.core.validate import check_count, check_real
from jaxgen.immunization import imma as imma_lib

PyTree = Any
SCHEMES = ("unrolled", "truncated", "alternating")

__all__ = [
    "MIMAConfig",
    "MIMAState",
    "SCHEMES",
    "apply_kv_delta",
    "dedupe_rows",
    "kv_delta_init",
    "kv_merge",
    "kv_merge_from_weights",
    "merge_params",
    "mima_init",
    "mima_outer_loss",
    "mima_step",
    "mima_train",
]


# ---------------------------------------------------------------------------------------------------------------
# The closed-form merge.


def _check_matrix(name: str, a: jax.Array, cols: int | None = None, min_rows: int = 0) -> jax.Array:
  a = jnp.asarray(a)
  if a.ndim != 2:
    raise ValueError(f"`{name}` must be a 2-D matrix, got shape {a.shape}")
  if cols is not None and a.shape[1] != cols:
    raise ValueError(f"`{name}` must have {cols} columns, got shape {a.shape}")
  if a.shape[0] < min_rows:
    raise ValueError(f"`{name}` must have at least {min_rows} row(s), got shape {a.shape}")
  if not jnp.issubdtype(a.dtype, jnp.floating):
    raise ValueError(f"`{name}` must be floating, got dtype {a.dtype}")
  return a


def kv_merge(w0: jax.Array, c_reg: jax.Array, c_targets: jax.Array, v_targets: jax.Array, *,
             ridge: float | jax.Array = 0.0) -> jax.Array:
  r"""Closed-form constrained least-squares edit of one key/value projection (MIMA merge, spec §3.1).

  :math:`W^* = W_0 + D (C_t D)^{-1} (V_t - C_t W_0)`, :math:`D = (C_{reg}^\top C_{reg} + \rho I)^{-1} C_t^\top`.

  Args:
    w0: :math:`W_0`, ``[d, o]`` (row-vector convention ``out = c @ W``; the released code's ``W`` transposed).
    c_reg: :math:`C_{reg}`, ``[r, d]`` regularization context rows (``r`` may be 0 when ``ridge > 0``).
    c_targets: :math:`C_t`, ``[m, d]`` target context rows (``1 <= m <= d``, linearly independent).
    v_targets: :math:`V_t`, ``[m, o]`` required outputs of the target rows.
    ridge: :math:`\rho \ge 0` (the released code uses 0).

  Returns:
    :math:`W^*`, ``[d, o]`` in the promoted dtype of the inputs; :math:`C_t W^* = V_t`.

  Example (the target row maps exactly to its value; rows of :math:`C_{reg}` keep their outputs)::

    >>> import jax.numpy as jnp
    >>> w0, c_reg = jnp.zeros((3, 2)), jnp.eye(3)[:2]
    >>> c_t, v_t = jnp.array([[0.0, 0.0, 1.0]]), jnp.array([[1.0, -1.0]])
    >>> w = kv_merge(w0, c_reg, c_t, v_t, ridge=1e-3)
    >>> (c_t @ w).round(4).tolist(), (c_reg @ w).round(4).tolist()
    ([[1.0, -1.0]], [[0.0, 0.0], [0.0, 0.0]])
  """
  w0 = _check_matrix("w0", w0)
  d, o = w0.shape
  c_reg = _check_matrix("c_reg", c_reg, d)
  c_targets = _check_matrix("c_targets", c_targets, d, min_rows=1)
  v_targets = _check_matrix("v_targets", v_targets, o)
  if v_targets.shape[0] != c_targets.shape[0]:
    raise ValueError(f"`v_targets` must have one row per row of `c_targets` ({c_targets.shape[0]}), "
                     f"got shape {v_targets.shape}")
  if c_targets.shape[0] > d:
    raise ValueError(f"`c_targets` has {c_targets.shape[0]} rows but the context width is d={d}: the constraints "
                     "C_t W = V_t are over-determined (dedupe the rows or use fewer target tokens)")
  if not isinstance(ridge, jax.core.Tracer):
    r = np.asarray(ridge)
    if r.shape != () or not np.isfinite(r) or r < 0:
      raise ValueError(f"`ridge` must be a finite scalar >= 0, got {ridge!r}")
    if r == 0 and c_reg.shape[0] < d:
      raise ValueError(f"`c_reg` has {c_reg.shape[0]} rows for context width d={d} and `ridge` is 0: "
                       "C_reg^T C_reg is singular (give at least d rows or a ridge > 0)")
  dtype = jnp.result_type(w0, c_reg, c_targets, v_targets)
  w0, c_reg, c_targets, v_targets = (a.astype(dtype) for a in (w0, c_reg, c_targets, v_targets))
  gram = c_reg.T @ c_reg + jnp.asarray(ridge, dtype) * jnp.eye(d, dtype=dtype)            # G [d, d]
  dmat = jsl.solve(gram, c_targets.T, assume_a="pos")                                    # D [d, m]
  schur = c_targets @ dmat                                                                # C_t D [m, m]
  resid = v_targets - c_targets @ w0                                                      # [m, o]
  return w0 + dmat @ jsl.solve(schur, resid, assume_a="pos")


def kv_merge_from_weights(w0: jax.Array, c_reg: jax.Array, c_targets_per_concept: Sequence[jax.Array] | jax.Array,
                          w_adapted_per_concept: Sequence[jax.Array] | jax.Array, *,
                          ridge: float | jax.Array = 0.0) -> jax.Array:
  r"""Merge per-concept adapted projections: :math:`V_t` row :math:`i` = :math:`c_i W'_n` for its concept ``n``.

  Args:
    w0: :math:`W_0` ``[d, o]`` (the pre-adaptation weight).
    c_reg: ``[r, d]``.
    c_targets_per_concept: ``N`` arrays ``[m_n, d]`` (or one stacked ``[N, m, d]`` array).
    w_adapted_per_concept: ``N`` adapted weights ``[d, o]`` (or stacked ``[N, d, o]``).
    ridge: :math:`\rho`.

  Returns:
    :math:`W^*` ``[d, o]`` (see :func:`kv_merge`).
  """
  cs = list(c_targets_per_concept) if not hasattr(c_targets_per_concept, "ndim") else \
      [c_targets_per_concept[i] for i in range(c_targets_per_concept.shape[0])]
  ws = list(w_adapted_per_concept) if not hasattr(w_adapted_per_concept, "ndim") else \
      [w_adapted_per_concept[i] for i in range(w_adapted_per_concept.shape[0])]
  if not cs:
    raise ValueError("`c_targets_per_concept` is empty: need at least one concept")
  if len(cs) != len(ws):
    raise ValueError(f"got {len(cs)} concepts' context rows but {len(ws)} adapted weights "
                     "(`c_targets_per_concept` and `w_adapted_per_concept` must have the same length)")
  for n, (c, w) in enumerate(zip(cs, ws)):
    _check_matrix(f"c_targets_per_concept[{n}]", c, jnp.shape(w0)[0], min_rows=1)
    if jnp.shape(w) != jnp.shape(w0):
      raise ValueError(f"`w_adapted_per_concept[{n}]` must have the shape of w0 {jnp.shape(w0)}, got {jnp.shape(w)}")
  c_t = jnp.concatenate([jnp.asarray(c) for c in cs], axis=0)
  v_t = jnp.concatenate([jnp.asarray(c) @ jnp.asarray(w) for c, w in zip(cs, ws)], axis=0)
  return kv_merge(w0, c_reg, c_t, v_t, ridge=ridge)


def _as_path_predicate(kv_paths: Sequence[str] | Callable[[str], bool]) -> Callable[[str], bool]:
  if callable(kv_paths):
    return kv_paths
  if isinstance(kv_paths, str):
    raise TypeError(f"`kv_paths` must be a sequence of paths (or a predicate), got the string {kv_paths!r}; "
                    f"use ({kv_paths!r},)")
  paths = tuple(kv_paths)
  if not paths:
    raise ValueError("`kv_paths` is empty: name at least one key/value kernel")
  return lambda p: p in paths


def merge_params(base: PyTree, adapted_list: Sequence[PyTree], kv_paths: Sequence[str] | Callable[[str], bool],
                 contexts: Sequence[jax.Array] | jax.Array, c_reg: jax.Array, *,
                 ridge: float | jax.Array = 0.0) -> PyTree:
  r"""Merge ``N`` adapted copies of a parameter pytree (spec §3.1).

  Key/value kernels (leaves whose ``'/'``-joined path is in ``kv_paths``, or satisfies it when it is a
  predicate) are merged by :func:`kv_merge_from_weights` with :math:`W_0` the leaf of ``base``; a kernel of more
  than two dimensions (Flax ``DenseGeneral`` ``[d, heads, head_dim]``) is merged as its ``[d, -1]`` view. Every
  other leaf is the arithmetic mean of the adapted copies.

  Args:
    base: the pre-adaptation parameters (:math:`W_0` of every K/V kernel).
    adapted_list: ``N >= 1`` adapted copies with ``base``'s structure.
    kv_paths: the K/V kernel paths, or a predicate on paths.
    contexts: per-concept target context rows, ``N`` arrays ``[m_n, d]`` or ``[N, m, d]``.
    c_reg: ``[r, d]`` regularization rows.
    ridge: :math:`\rho`.

  Returns:
    The merged pytree (``base``'s structure).
  """
  adapted_list = list(adapted_list)
  if not adapted_list:
    raise ValueError("`adapted_list` is empty: need at least one adapted copy (one per concept)")
  n_ctx = contexts.shape[0] if hasattr(contexts, "ndim") else len(contexts)
  if n_ctx != len(adapted_list):
    raise ValueError(f"`contexts` has {n_ctx} concepts but `adapted_list` has {len(adapted_list)} copies")
  is_kv = _as_path_predicate(kv_paths)
  base_leaves, treedef = jax.tree_util.tree_flatten_with_path(base)
  copies = []
  for i, a in enumerate(adapted_list):
    try:
      copies.append(treedef.flatten_up_to(a))
    except (ValueError, TypeError) as e:
      raise ValueError(f"`adapted_list[{i}]` does not have the structure of `base`: {e}") from e
  out, found = [], False
  for j, (path, w0) in enumerate(base_leaves):
    ws = [c[j] for c in copies]
    if is_kv(path_to_str(path)):
      found = True
      shape = jnp.shape(w0)
      flat = lambda w, shape=shape: jnp.reshape(w, (shape[0], -1))
      merged = kv_merge_from_weights(flat(w0), c_reg, contexts, [flat(w) for w in ws], ridge=ridge)
      out.append(merged.reshape(shape).astype(jnp.result_type(w0)))
    else:
      out.append(sum(ws[1:], ws[0]) / len(ws) if len(ws) > 1 else ws[0])
  if not found:
    raise ValueError(f"`kv_paths`={kv_paths!r} matched no leaf of `base` (paths: "
                     f"{[path_to_str(p) for p, _ in base_leaves]})")
  return treedef.unflatten(out)


def dedupe_rows(c_targets: np.ndarray, v_targets: np.ndarray, *, atol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
  """Keep the first occurrence of identical target context rows (and their value rows); not jittable.

  The released code removes exact duplicate tokens before the merge (duplicates make :math:`C_t D` singular).
  Two rows are identical when every entry differs by at most ``atol``.
  """
  if isinstance(atol, (bool, np.bool_)) or not isinstance(atol, (int, float, np.integer, np.floating)) or not (
      np.isfinite(atol) and atol >= 0):
    raise ValueError(f"`atol` must be a finite number >= 0, got {atol!r}")
  c = np.asarray(c_targets)
  v = np.asarray(v_targets)
  if c.ndim != 2 or v.ndim != 2 or c.shape[0] != v.shape[0]:
    raise ValueError(f"`c_targets` [m, d] and `v_targets` [m, o] must be 2-D with equal rows, got {c.shape}, {v.shape}")
  keep: list[int] = []
  for i in range(c.shape[0]):
    if not any(np.all(np.abs(c[i] - c[j]) <= atol) for j in keep):
      keep.append(i)
  return c[keep], v[keep]


# ---------------------------------------------------------------------------------------------------------------
# K/V deltas: the lower-level parameters of the toy (the attacker re-learns the K/V kernels).


def _kv_items(theta_u: PyTree, is_kv: Callable[[str], bool]) -> dict[str, jax.Array]:
  items = {path_to_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(theta_u)[0]
           if is_kv(path_to_str(p))}
  if not items:
    raise ValueError("`kv_paths` matched no leaf of `theta_u`")
  return items


def kv_delta_init(theta_u: PyTree, kv_paths: Sequence[str] | Callable[[str], bool]) -> dict[str, jax.Array]:
  """Zero deltas ``{path: zeros_like(kernel)}`` for the K/V kernels of ``theta_u`` (the attacker's start)."""
  return {p: jnp.zeros_like(w) for p, w in _kv_items(theta_u, _as_path_predicate(kv_paths)).items()}


def apply_kv_delta(theta_u: PyTree, delta: dict[str, jax.Array]) -> PyTree:
  """``theta_u`` with ``delta[path]`` added to the leaf at each ``path`` (other leaves unchanged)."""
  def leaf(path, w):
    name = path_to_str(path)
    return w + delta[name].astype(w.dtype) if name in delta else w

  return jax.tree_util.tree_map_with_path(leaf, theta_u)


# ---------------------------------------------------------------------------------------------------------------
# The outer objective and the training loop.


@dataclasses.dataclass(frozen=True)
class MIMAConfig:
  r"""MIMA hyper-parameters (toy defaults of spec §3.2; the released code's in brackets).

  Attributes:
    concept_loss: ``concept_loss(theta_u, frozen, batch, key) -> scalar``, the attacker's re-learning loss
      :math:`L(x_n, c_n; \theta)` on one concept's batch (inner loop and outer concept term).
    pres_loss: ``pres_loss(theta_u, frozen, batch, key) -> scalar``, the preservation ("prior") loss
      :math:`L_{pres}` evaluated on the merged model.
    kv_paths: ``'/'``-joined paths of the K/V kernels inside ``theta_u`` (merged in closed form).
    delta_paths: the lower-level leaves :math:`\phi` each concept's inner loop adapts (additive deltas); ``None``
      (default) = ``kv_paths``. Must contain every path of ``kv_paths``; the extra leaves (e.g. the query/out
      projections and biases when the attacker fine-tunes all of cross-attention) are merged by the mean of the
      adapted copies, as the released code does for every non-K/V parameter.
    scheme: ``"unrolled"`` (default, exact bilevel gradient through the merge), ``"truncated"`` or
      ``"alternating"`` (released code, first-order, merged weights written with no gradient).
    first_order: FOMAML gradients through the scanned inner loops.
    inner_steps: ``K`` SGD steps per concept (toy 3) [1 per iteration].
    inner_lr: inner SGD step (toy 0.03) [1e-5].
    outer_lr: Adam step on :math:`\theta_u` (toy 2e-3) [AdamW 3e-5].
    clip: global-norm clip of the outer gradient (1.0).
    lam: :math:`\lambda`, prior weight (toy 5-20) [1.0].
    tau: :math:`\tau`, cap of the concept loss (toy 5.0; ``inf`` for none).
    ridge: :math:`\rho` of the merge (toy 1e-3) [0].
  """

  concept_loss: Callable[..., jax.Array]
  pres_loss: Callable[..., jax.Array]
  kv_paths: tuple[str, ...]
  delta_paths: tuple[str, ...] | None = None
  scheme: str = "unrolled"
  first_order: bool = False
  inner_steps: int = 3
  inner_lr: float = 0.03
  outer_lr: float = 2e-3
  clip: float = 1.0
  lam: float = 20.0
  tau: float = 5.0
  ridge: float = 1e-3

  def __post_init__(self):
    if self.scheme not in SCHEMES:
      raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
    if isinstance(self.kv_paths, str):
      raise TypeError(f"kv_paths must be a tuple of paths, got the string {self.kv_paths!r}")
    if not self.kv_paths:
      raise ValueError("kv_paths must name at least one key/value kernel")
    if self.delta_paths is not None:
      if isinstance(self.delta_paths, str):
        raise TypeError(f"delta_paths must be a tuple of paths, got the string {self.delta_paths!r}")
      missing = [p for p in self.kv_paths if p not in tuple(self.delta_paths)]
      if missing:
        raise ValueError(f"delta_paths must contain every kv_paths entry (the merged K/V kernels are adapted by "
                         f"the inner loop); missing {missing}")
    check_count("inner_steps", self.inner_steps, 1)
    for name in ("lam", "ridge"):
      check_real(name, getattr(self, name), lo=0.0)
    for name in ("inner_lr", "outer_lr"):
      check_real(name, getattr(self, name), lo=0.0, open_lo=True)
    check_real("clip", self.clip, lo=0.0, open_lo=True, allow_inf=True)
    check_real("tau", self.tau, lo=-np.inf, allow_inf=True)

  def outer_optimizer(self) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(self.clip), optax.adam(self.outer_lr))

  @property
  def phi_paths(self) -> tuple[str, ...]:
    """The leaves the inner loops adapt: ``delta_paths``, or ``kv_paths`` when it is ``None``."""
    return tuple(self.kv_paths if self.delta_paths is None else self.delta_paths)


class MIMAState(NamedTuple):
  """``theta_u``: upper-level params; ``deltas``: per-concept K/V deltas stacked on a leading ``N`` axis (carried
  by ``"truncated"``, zero otherwise); ``opt_state``: the outer Adam state; ``step``: int32 outer steps."""

  theta_u: PyTree
  deltas: dict[str, jax.Array]
  opt_state: optax.OptState
  step: jax.Array


def _check_per_concept(name: str, tree: PyTree, num: int) -> None:
  """Every leaf of ``tree`` is stacked on a leading axis of size ``num`` (one slice per concept)."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != num:
      raise ValueError(f"`{name}` must be stacked per concept (leading axis {num} = contexts.shape[0]), got leaf "
                       f"{path_to_str(path) or '<root>'} of shape {jnp.shape(leaf)}")


def _check_merge_data(contexts: jax.Array, c_reg: jax.Array) -> None:
  if not hasattr(contexts, "ndim") or contexts.ndim != 3:
    raise ValueError(f"`contexts` must be a stacked [N, m, d] array of per-concept target rows, "
                     f"got {getattr(contexts, 'shape', type(contexts))}")
  if contexts.shape[0] < 1 or contexts.shape[1] < 1:
    raise ValueError(f"`contexts` must hold at least one concept with one row, got shape {contexts.shape}")
  if jnp.ndim(c_reg) != 2 or jnp.shape(c_reg)[1] != contexts.shape[2]:
    raise ValueError(f"`c_reg` must be [r, d={contexts.shape[2]}], got shape {jnp.shape(c_reg)}")


def mima_init(theta_u: PyTree, num_concepts: int, cfg: MIMAConfig) -> MIMAState:
  """Initial state: zero deltas for each of ``num_concepts`` concepts, fresh outer Adam state."""
  if isinstance(num_concepts, (bool, np.bool_)) or not isinstance(num_concepts, (int, np.integer)) or num_concepts < 1:
    raise ValueError(f"`num_concepts` must be an int >= 1 (an empty concept set cannot be immunized), "
                     f"got {num_concepts!r}")
  delta = kv_delta_init(theta_u, cfg.phi_paths)
  if len(delta) != len(cfg.phi_paths):
    missing = sorted(set(cfg.phi_paths) - set(delta))
    raise ValueError(f"`delta_paths`/`kv_paths` name leaves that are not in `theta_u`: {missing}")
  deltas = jax.tree.map(lambda z: jnp.broadcast_to(z, (int(num_concepts),) + z.shape), delta)
  return MIMAState(theta_u, deltas, cfg.outer_optimizer().init(theta_u), jnp.zeros([], jnp.int32))


def _adapt(theta_u, delta0, frozen, batch, key, cfg: MIMAConfig):
  """``K`` SGD steps of the concept loss on the K/V delta (core.bilevel.inner_adapt, lax.scan)."""
  loss = lambda d, b, k: cfg.concept_loss(apply_kv_delta(theta_u, d), frozen, b, k)
  return bilevel.inner_adapt(delta0, batch, loss, num_steps=int(cfg.inner_steps), lr=cfg.inner_lr,
                             mode="first_order" if cfg.first_order else "full", key=key)


def mima_outer_loss(theta_u: PyTree, states: dict[str, jax.Array], frozen: PyTree, concept_batches: PyTree,
                    pres_batch: PyTree, key: jax.Array, cfg: MIMAConfig, contexts: jax.Array,
                    c_reg: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
  r"""The MIMA objective :math:`J(\theta_u)` (spec §3.1) through per-concept inner loops and the merge.

  Args:
    theta_u: upper-level parameters (the cross-attention projections).
    states: per-concept starting K/V deltas, leaves stacked ``[N, ...]`` (zeros for ``"unrolled"``).
    frozen: every other parameter (passed to the losses).
    concept_batches: per-concept batches, leaves stacked ``[N, ...]``.
    pres_batch: the preservation batch.
    key: PRNG key; split into one inner key per concept and the outer keys (identical for exact and first-order
      runs, spec §7.5).
    cfg: :class:`MIMAConfig`.
    contexts: ``[N, m, d]`` target context rows of each concept.
    c_reg: ``[r, d]`` regularization rows.

  Returns:
    ``(J, aux)`` with ``aux`` = ``concept_losses [N]`` (on the merged model), ``pres_loss``, ``adapted_deltas``
    (the inner loops' end points, ``[N, ...]``).
  """
  _check_merge_data(contexts, c_reg)
  num = contexts.shape[0]
  _check_per_concept("states", states, num)
  _check_per_concept("concept_batches", concept_batches, num)
  k_inner, k_outer, k_pres = jax.random.split(key, 3)
  inner_keys = jax.random.split(k_inner, num)
  adapted = jax.vmap(lambda d0, b, k: _adapt(theta_u, d0, frozen, b, k, cfg))(states, concept_batches, inner_keys)
  copies = [apply_kv_delta(theta_u, jax.tree.map(lambda a, n=n: a[n], adapted)) for n in range(num)]
  merged = merge_params(theta_u, copies, cfg.kv_paths, contexts, c_reg, ridge=cfg.ridge)
  outer_keys = jax.random.split(k_outer, num)
  losses = jax.vmap(lambda b, k: cfg.concept_loss(merged, frozen, b, k))(concept_batches, outer_keys)
  pres = cfg.pres_loss(merged, frozen, pres_batch, k_pres)
  j = -jnp.mean(jnp.minimum(losses, cfg.tau)) + cfg.lam * pres
  return j, {"concept_losses": losses, "pres_loss": pres, "adapted_deltas": adapted}


def _alternating_step(state: MIMAState, frozen, concept_batches, pres_batch, key, cfg: MIMAConfig, contexts, c_reg):
  """The released code's iteration: one SGD step per concept on K/V, merge (no grad), write, outer step."""
  theta_u = state.theta_u
  num = contexts.shape[0]
  k_inner, k_outer, k_pres = jax.random.split(key, 3)
  zero = kv_delta_init(theta_u, cfg.phi_paths)

  def one_step(b, k):
    g = jax.grad(lambda d: cfg.concept_loss(apply_kv_delta(theta_u, d), frozen, b, k))(zero)
    return jax.tree.map(lambda gi: -cfg.inner_lr * gi, g)

  steps = jax.vmap(one_step)(concept_batches, jax.random.split(k_inner, num))
  copies = [apply_kv_delta(theta_u, jax.tree.map(lambda a, n=n: a[n], steps)) for n in range(num)]
  written = jax.lax.stop_gradient(merge_params(theta_u, copies, cfg.kv_paths, contexts, c_reg, ridge=cfg.ridge))

  def objective(th):
    outer_keys = jax.random.split(k_outer, num)
    losses = jax.vmap(lambda b, k: cfg.concept_loss(th, frozen, b, k))(concept_batches, outer_keys)
    pres = cfg.pres_loss(th, frozen, pres_batch, k_pres)
    return -jnp.mean(jnp.minimum(losses, cfg.tau)) + cfg.lam * pres, (losses, pres)

  (j, (losses, pres)), grads = jax.value_and_grad(objective, has_aux=True)(written)
  updates, opt_state = cfg.outer_optimizer().update(grads, state.opt_state, written)
  theta_u = optax.apply_updates(written, updates)
  metrics = {"objective": j, "concept_loss": jnp.mean(losses), "pres_loss": pres, "grad_norm": optax.tree.norm(grads)}
  return MIMAState(theta_u, state.deltas, opt_state, state.step + 1), metrics


def mima_step(state: MIMAState, frozen: PyTree, concept_batches: PyTree, pres_batch: PyTree, key: jax.Array,
              cfg: MIMAConfig, contexts: jax.Array, c_reg: jax.Array) -> tuple[MIMAState, dict[str, jax.Array]]:
  """One outer step of the configured scheme; pure and jittable (``cfg`` static)."""
  _check_merge_data(contexts, c_reg)
  _check_per_concept("concept_batches", concept_batches, contexts.shape[0])
  _check_per_concept("state.deltas", state.deltas, contexts.shape[0])
  if cfg.scheme == "alternating":
    return _alternating_step(state, frozen, concept_batches, pres_batch, key, cfg, contexts, c_reg)
  starts = state.deltas if cfg.scheme == "truncated" else jax.tree.map(jnp.zeros_like, state.deltas)
  starts = jax.lax.stop_gradient(starts)
  (j, aux), grads = jax.value_and_grad(mima_outer_loss, has_aux=True)(
      state.theta_u, starts, frozen, concept_batches, pres_batch, key, cfg, contexts, c_reg)
  updates, opt_state = cfg.outer_optimizer().update(grads, state.opt_state, state.theta_u)
  theta_u = optax.apply_updates(state.theta_u, updates)
  deltas = jax.lax.stop_gradient(aux["adapted_deltas"]) if cfg.scheme == "truncated" else state.deltas
  metrics = {"objective": j, "concept_loss": jnp.mean(aux["concept_losses"]), "pres_loss": aux["pres_loss"],
             "grad_norm": optax.tree.norm(grads)}
  return MIMAState(theta_u, deltas, opt_state, state.step + 1), metrics


def mima_train(frozen: PyTree, theta_u: PyTree, data_fn: Callable[[jax.Array, PyTree], tuple[PyTree, PyTree]],
               key: jax.Array, cfg: MIMAConfig, contexts: jax.Array, c_reg: jax.Array, *, num_steps: int,
               data: PyTree = None,
               chunk: int = 25, progress: bool = True, desc: str = "mima") -> tuple[PyTree, list[dict[str, float]]]:
  """Run ``num_steps`` outer steps; returns the immunized ``theta_u`` and per-chunk mean metrics.

  ``data_fn(key, data) -> (concept_batches [N, ...], pres_batch)`` samples one step's data from the arrays
  ``data`` (jittable; ``data`` is an argument of the compiled chunk, not a constant). The steps run as
  ``lax.scan`` chunks of ``chunk`` steps (one progress-bar tick per chunk); step ``s`` uses
  ``jax.random.fold_in(key, s)``.
  """
  num_steps = check_count("num_steps", num_steps, 0)
  _check_merge_data(contexts, c_reg)
  state = mima_init(theta_u, contexts.shape[0], cfg)

  state, history = imma_lib.train_loop(state, _mima_body, (frozen, contexts, c_reg, data), key, int(num_steps),
                                       chunk, progress, desc, static=(cfg, data_fn))
  return state.theta_u, history


def _mima_body(st, k, args, cfg, data_fn):
  frozen, contexts, c_reg, data = args
  return mima_step(st, frozen, *data_fn(jax.random.fold_in(k, 1), data), k, cfg, contexts, c_reg)
