r"""LoRA (low-rank adaptation) as a pure transform of a parameter pytree.

A selected 2-D kernel :math:`W \in \mathbb R^{d_{in} \times d_{out}}` (Flax ``Dense`` layout: ``y = x W``)
is adapted as

.. math::  W' = W + \frac{\alpha}{r}\, A B,\qquad A \in \mathbb R^{d_{in} \times r},\;
           B \in \mathbb R^{r \times d_{out}},

with :math:`A` random (fan-in scaled) and :math:`B = 0` at initialisation, so :math:`W' = W` until :math:`B`
is trained (Hu et al. 2021; their :math:`\Delta W = BA` acts on column vectors, ours on row vectors, hence
:math:`AB` here). The factored forward pass is :math:`x W + \frac{\alpha}{r} (x A) B` (:func:`lora_dot`).

The adapter is a pytree ``lora_params`` with the *structure of the base params*: each adapted leaf holds a
:class:`LoRAWeights` ``(a, b)`` (``alpha`` is static metadata, not a trainable leaf) and every other leaf
holds ``None``. Train it with any optax optimizer (``None`` leaves carry nothing); the base params stay
frozen because they are simply not differentiated (or wrap them in ``jax.lax.stop_gradient``).

* :func:`lora_init` selects leaves (default: every 2-D leaf named ``kernel``; or a regex on the
  ``'/'``-joined key path, or a predicate) and initialises :math:`A, B`.
* :func:`lora_apply` (= :func:`lora_merge`) returns the effective params :math:`W + \frac\alpha r AB`.
* :func:`lora_unmerge` subtracts the update again (exact up to float rounding).

References:
  Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen, "LoRA: Low-Rank Adaptation of Large Language Models",
  ICLR 2022, arXiv 2106.09685.
"""

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Predicate = Callable[[str, jax.Array], bool]          # (path "params/dense_0/kernel", leaf) -> adapt?
Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]   # jax.nn.initializers signature

__all__ = [
    "LoRAWeights",
    "default_predicate",
    "lora_apply",
    "lora_dot",
    "lora_init",
    "lora_merge",
    "lora_unmerge",
    "path_to_str",
]


@dataclasses.dataclass(frozen=True)
class LoRAWeights:
  """Low-rank factors of one adapted kernel; ``alpha`` is static (part of the treedef, not a leaf).

  Attributes:
    a: :math:`A`, shape ``[d_in, r]``.
    b: :math:`B`, shape ``[r, d_out]``.
    alpha: the LoRA :math:`\\alpha`; the update is scaled by :math:`\\alpha / r`.
  """

  a: jax.Array
  b: jax.Array
  alpha: float = dataclasses.field(default=1.0, metadata={"static": True})

  @property
  def rank(self) -> int:
    return self.a.shape[-1]

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def delta(self) -> jax.Array:
    r"""The kernel update :math:`\frac{\alpha}{r} A B`, shape ``[d_in, d_out]``."""
    return self.scale * (self.a @ self.b)


jax.tree_util.register_dataclass(LoRAWeights, data_fields=["a", "b"], meta_fields=["alpha"])


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def path_to_str(path: tuple[Any, ...]) -> str:
  """A JAX key path as a ``'/'``-joined string, e.g. ``"params/dense_0/kernel"``."""
  return "/".join(_key_name(k) for k in path)


def default_predicate(path: str, leaf: jax.Array) -> bool:
  """Selects every 2-D leaf whose last path component is ``kernel`` (Flax ``Dense`` kernels)."""
  return jnp.ndim(leaf) == 2 and path.split("/")[-1] == "kernel"


def _is_lora_leaf(x: Any) -> bool:
  return x is None or isinstance(x, LoRAWeights)


def _a_initializer(a_init: str | Initializer) -> Initializer:
  if callable(a_init):
    return a_init
  if a_init == "normal":           # N(0, 1/d_in): fan-in scaled Gaussian
    return jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal")

  if a_init == "kaiming_uniform":  # U(-1/sqrt(d_in), 1/sqrt(d_in)): loralib / PEFT default
    def init(key, shape, dtype):
      bound = 1.0 / np.sqrt(shape[0])
      return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init
  raise ValueError(f"`a_init` must be 'normal', 'kaiming_uniform' or a callable, got {a_init!r}")


def lora_init(
    key: jax.Array,
    params: PyTree,
    *,
    rank: int,
    alpha: float | None = None,
    targets: str | Predicate | None = None,
    a_init: str | Initializer = "normal",
    dtype: Any = None,
) -> PyTree:
  r"""Initialises LoRA factors for the selected 2-D leaves of ``params``.

  Args:
    key: PRNG key (split once per adapted leaf, in tree-flattening order).
    params: base parameter pytree (e.g. a Flax ``{"params": ...}`` dict).
    rank: :math:`r` (Python int >= 1). A rank above ``min(d_in, d_out)`` of a kernel is allowed (the
      update is then full-rank and over-parameterised), so one rank can be used for every layer.
    alpha: :math:`\alpha`; the update is scaled by :math:`\alpha / r`. Default ``alpha = rank`` (scale 1).
    targets: which leaves to adapt. ``None``: :func:`default_predicate` (2-D ``kernel`` leaves). A string:
      a regular expression searched (``re.search``) in the ``'/'``-joined key path (e.g.
      ``"dense_[01]/kernel"``); only 2-D leaves are adapted. A callable ``(path, leaf) -> bool``: full
      control; every selected leaf must be 2-D.
    a_init: initializer of :math:`A`: ``"normal"`` (:math:`\mathcal N(0, 1/d_{in})`, default),
      ``"kaiming_uniform"`` (:math:`U(\pm 1/\sqrt{d_{in}})`, the loralib/PEFT default) or a
      ``jax.nn.initializers``-style callable ``(key, shape, dtype)``. :math:`B` is always zero.
    dtype: dtype of :math:`A, B` (default: the dtype of each adapted kernel).

  Returns:
    ``lora_params``: a pytree with ``params``' structure holding :class:`LoRAWeights` at adapted leaves
    and ``None`` elsewhere.
  """
  if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
    raise ValueError(f"`rank` must be a Python int >= 1, got {rank!r}")
  rank = int(rank)
  alpha = float(rank if alpha is None else alpha)
  init_a = _a_initializer(a_init)
  if targets is None:
    predicate, strict = default_predicate, False
  elif isinstance(targets, str):
    pattern = re.compile(targets)
    predicate, strict = (lambda path, leaf: bool(pattern.search(path)) and jnp.ndim(leaf) == 2), False
  elif callable(targets):
    predicate, strict = targets, True
  else:
    raise ValueError(f"`targets` must be None, a regex string or a callable (path, leaf) -> bool, got {targets!r}")

  leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
  selected = []
  for path, leaf in leaves_with_paths:
    name = path_to_str(path)
    chosen = bool(predicate(name, leaf))
    if chosen and jnp.ndim(leaf) != 2:
      if strict:
        raise ValueError(f"`targets` selected `{name}` of shape {jnp.shape(leaf)}; LoRA adapts 2-D kernels only")
      chosen = False
    selected.append(chosen)
  if not any(selected):
    raise ValueError(f"`targets`={targets!r} selected no 2-D leaf of `params` (paths: "
                     f"{[path_to_str(p) for p, _ in leaves_with_paths]})")

  keys = iter(jax.random.split(key, sum(selected)))
  out = []
  for (path, leaf), chosen in zip(leaves_with_paths, selected):
    if not chosen:
      out.append(None)
      continue
    d_in, d_out = jnp.shape(leaf)
    leaf_dtype = jnp.result_type(leaf) if dtype is None else dtype
    a = init_a(next(keys), (d_in, rank), leaf_dtype)
    out.append(LoRAWeights(a=a, b=jnp.zeros((rank, d_out), leaf_dtype), alpha=alpha))
  return treedef.unflatten(out)


def _check_structure(params: PyTree, lora_params: PyTree) -> None:
  lora_leaves, lora_def = jax.tree.flatten(lora_params, is_leaf=_is_lora_leaf)
  try:
    base_leaves = lora_def.flatten_up_to(params)
  except (ValueError, TypeError) as e:
    raise ValueError(f"`lora_params` must have the tree structure of `params`: {e}") from e
  for w, leaf in zip(lora_leaves, base_leaves):
    if isinstance(w, LoRAWeights):
      shape = (w.a.shape[0], w.b.shape[-1])
      if jnp.shape(leaf) != shape or w.a.shape[-1] != w.b.shape[0]:
        raise ValueError(f"LoRA factors a{w.a.shape} @ b{w.b.shape} do not fit a kernel of shape {jnp.shape(leaf)}")


def _map(fn: Callable, params: PyTree, lora_params: PyTree) -> PyTree:
  _check_structure(params, lora_params)

  def leaf(w, p):
    return p if w is None else fn(p, w)

  return jax.tree.map(leaf, lora_params, params, is_leaf=_is_lora_leaf)


def lora_apply(params: PyTree, lora_params: PyTree) -> PyTree:
  r"""Effective parameters: :math:`W + \frac{\alpha}{r} A B` at adapted leaves, other leaves unchanged.

  Shape- and dtype-consistent with ``params`` (Flax ``Dense`` kernels ``[in, out]``), so the result goes
  straight into ``model.apply``. Pure and differentiable in both arguments; to train only the adapter,
  differentiate with respect to ``lora_params``.

  Args:
    params: base parameters.
    lora_params: the output of :func:`lora_init` (or a trained version of it).

  Returns:
    A pytree like ``params``.
  """
  return _map(lambda p, w: (p + w.delta().astype(p.dtype)).astype(p.dtype), params, lora_params)


lora_merge = lora_apply
"""Merges the adapter into the weights for deployment; the same map as :func:`lora_apply`."""


def lora_unmerge(merged_params: PyTree, lora_params: PyTree) -> PyTree:
  r"""Removes a merged adapter: :math:`W' - \frac{\alpha}{r} A B` (inverse of :func:`lora_merge` up to rounding)."""
  return _map(lambda p, w: (p - w.delta().astype(p.dtype)).astype(p.dtype), merged_params, lora_params)


def lora_dot(x: jax.Array, kernel: jax.Array, weights: LoRAWeights | None) -> jax.Array:
  r"""Factored LoRA dense map :math:`x W + \frac{\alpha}{r} (x A) B` (no bias); plain :math:`xW` if ``None``.

  Args:
    x: inputs ``[..., d_in]``.
    kernel: :math:`W`, ``[d_in, d_out]``.
    weights: the layer's :class:`LoRAWeights` or ``None``.

  Returns:
    ``[..., d_out]``; equals ``x @ lora_apply(...)`` up to float rounding.
  """
  y = x @ kernel
  if weights is None:
    return y
  return y + weights.scale * ((x @ weights.a) @ weights.b)
