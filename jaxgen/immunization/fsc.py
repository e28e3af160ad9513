r"""Four few-shot classification (FSC) learners, as pure functions ``fsc_*(theta, x_s, y_s, x_q, cfg) -> logits``.

These are the learners that Learning to Obstruct (LTO) obstructs and that its attacker uses:

  Zheng, Yang, Yeh, "Learning to Obstruct Few-Shot Image Classification over Restricted Classes", ECCV 2024,
  arXiv 2409.19210 (https://arxiv.org/abs/2409.19210); reference code github.com/amberyzheng/LTO.

Every learner maps backbone parameters :math:`\theta` and a support set :math:`S = \{(x_i, y_i)\}` (labels in
``0..n_way-1``) to logits on query images; learners with an inner optimization run it on
:func:`jaxgen.core.bilevel.inner_adapt` (``lax.scan``), so ``jax.grad`` with respect to :math:`\theta` is the
exact meta-gradient through the unrolled loop (``grad_mode="full"``, default) or its first-order /
truncated approximation (``"first_order"``, ``"truncated"``). Notation: :math:`f_\theta` is the backbone
(``cfg.apply_fn(theta, x) -> [B, D]``), :math:`\hat f = f / \lVert f \rVert` (L2-normalized), :math:`s` the logit
scale (``cfg.scale``), :math:`N` = ``n_way``, :math:`T` = ``steps``, :math:`\alpha` = ``lr``.

1. ``protonet`` (the reference's ``learners/protonet/model.py::ProtoNet.forward``; no inner loop)::

     p_c = \frac{1}{|S_c|}\sum_{i: y_i = c} f_\theta(x_i),\qquad
     \mathrm{logit}_c(x) = s\,\big(\cos(f_\theta(x), p_c) + b\big),

   with :math:`s = 10, b = 0` (learnable in the reference learner, fixed here). Prototypes average the *raw*
   features and are normalized afterwards (this is what the reference does; the fixture
   ``lto_protonet_case*.npz`` pins it).
2. ``linear_probe``: frozen normalized features, a zero-initialized linear head :math:`(W, c)`,
   :math:`T = 100` full-batch gradient steps with :math:`\alpha = 0.1` on the support cross-entropy of
   :math:`s(\hat f_\theta(x) W + c)`. With :math:`T = 0` the logits are all zero. (The spec's
   :math:`\alpha = 1.0` diverges: the head's curvature reaches :math:`s^2/N`, so stability needs
   :math:`\alpha < 2N/s^2`.)
3. ``finetune``: head :math:`W_0 = [\hat p_1, \dots, \hat p_N]` (normalized prototypes, the analogue of CLIP's
   zero-shot text head), logits :math:`s\,\hat f_\theta(x) W`; :math:`T = 30` SGD steps, :math:`\alpha = 0.05`, on
   backbone *and* head.
4. ``maml_like``: zero-initialized head :math:`(W, c)` on normalized features (logits
   :math:`s(\hat f_\theta(x) W + c)`) and the backbone, :math:`T = 5` SGD steps with a large
   :math:`\alpha = 0.2` (MAML's few-step test-time adaptation; the zero head is the usual "zero trick"). The spec's
   :math:`\alpha = 0.5` diverges for the same reason as the linear probe's 1.0.

In ``finetune`` and ``maml_like`` the backbone's step can be scaled by ``cfg.backbone_lr_scale`` (default 1, one
learning rate for all parameters as in the spec).

Inner losses are mean cross-entropies over the (full) support set. All learners treat every sample
independently given :math:`\theta` as long as the backbone does (e.g. :class:`jaxgen.nn.Conv4` with
``norm="group"`` or ``"none"``; with ``"transductive_batch"`` a sample's features depend on its batch).

Bad input raises ``ValueError`` naming the argument: an empty support set, support labels outside
``0..n_way-1`` or a class without support examples (both checked whenever the labels are concrete, i.e.
outside ``jit``), mismatched shapes, an unknown method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.core import bilevel

PyTree = Any
FeatureFn = Callable[[PyTree, jax.Array], jax.Array]   # apply_fn(theta, x [B, ...]) -> features [B, D]

METHODS = ("protonet", "linear_probe", "finetune", "maml_like")
# Paper/spec defaults (steps T, learning rate alpha) of the attacker's copy of each learner.
DEFAULT_STEPS = {"protonet": 0, "linear_probe": 100, "finetune": 30, "maml_like": 5}
# linear_probe 0.1 and maml_like 0.2, not the spec's 1.0 and 0.5: with logit scale s = 10 a zero-initialized head's
# curvature is up to s^2 / n_way, so gradient descent with those steps diverges for n_way < 50 when the normalized
# features are aligned (post-ReLU features are; measured on Omniglot with a conv4 backbone).
DEFAULT_LR = {"protonet": 0.0, "linear_probe": 0.1, "finetune": 0.05, "maml_like": 0.2}

__all__ = [
    "DEFAULT_LR", "DEFAULT_STEPS", "FSCConfig", "METHODS", "fsc_finetune", "fsc_learner", "fsc_linear_probe",
    "fsc_maml_like", "fsc_protonet", "normalize", "prototypes",
]

_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class FSCConfig:
  r"""Static configuration of an FSC learner (hashable: may be closed over or passed as a static argument).

  Attributes:
    apply_fn: the backbone :math:`f_\theta`, ``apply_fn(theta, x) -> [B, D]`` features.
    n_way: number of classes :math:`N` of the few-shot task (labels ``0..n_way-1``).
    steps: inner steps :math:`T`; ``None`` = the method's default (``DEFAULT_STEPS``). Ignored by protonet.
    lr: inner learning rate :math:`\alpha`; ``None`` = the method's default (``DEFAULT_LR``).
    scale: logit scale :math:`s` (10).
    bias: cosine bias :math:`b` of protonet (0).
    grad_mode: ``"full"`` (exact meta-gradient through the inner ``lax.scan``), ``"first_order"`` or
      ``"truncated"`` (see :mod:`jaxgen.core.bilevel`).
    truncation: exact final steps for ``grad_mode="truncated"``.
    checkpoint: rematerialize the inner step in the backward pass (memory for compute).
    backbone_lr_scale: the backbone's inner learning rate is ``lr * backbone_lr_scale`` in ``finetune`` and
      ``maml_like`` (1.0 = one learning rate, the spec; a conv backbone without normalization needs a much
      smaller step than a zero-initialized head).
  """

  apply_fn: FeatureFn
  n_way: int
  steps: int | None = None
  lr: float | None = None
  scale: float = 10.0
  bias: float = 0.0
  grad_mode: str = "full"
  truncation: int | None = None
  checkpoint: bool = False
  backbone_lr_scale: float = 1.0

  def resolved(self, method: str) -> tuple[int, float]:
    """``(steps, lr)`` with the method's defaults filled in."""
    if method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    steps = DEFAULT_STEPS[method] if self.steps is None else self.steps
    lr = DEFAULT_LR[method] if self.lr is None else self.lr
    return steps, lr


def normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  r""":math:`x / \max(\lVert x \rVert_2, 10^{-12})` along ``axis`` (smooth wherever :math:`x \neq 0`)."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, _EPS ** 2))


def prototypes(features: jax.Array, labels: jax.Array, n_way: int) -> jax.Array:
  """Class means ``[n_way, D]`` of ``features [S, D]`` (a class without samples gets a zero row)."""
  one_hot = jax.nn.one_hot(labels, n_way, dtype=features.dtype)          # [S, N]
  counts = jnp.sum(one_hot, axis=0)                                        # [N]
  return (one_hot.T @ features) / jnp.maximum(counts, 1.0)[:, None]


def _concrete(x: Any) -> np.ndarray | None:
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _validate(x_support: jax.Array, y_support: jax.Array, x_query: jax.Array, cfg: FSCConfig) -> None:
  if not isinstance(cfg, FSCConfig):
    raise TypeError(f"cfg must be an FSCConfig, got {type(cfg).__name__}")
  if isinstance(cfg.n_way, bool) or not isinstance(cfg.n_way, (int, np.integer)) or cfg.n_way < 1:
    raise ValueError(f"cfg.n_way must be a positive int, got {cfg.n_way!r}")
  if jnp.ndim(x_support) < 2 or x_support.shape[0] == 0:
    raise ValueError(f"x_support must be a non-empty batch [S, ...] with S >= 1, got shape {jnp.shape(x_support)}")
  if jnp.ndim(y_support) != 1 or y_support.shape[0] != x_support.shape[0]:
    raise ValueError(f"y_support must be [S] with S = len(x_support) = {x_support.shape[0]}, got shape "
                     f"{jnp.shape(y_support)}")
  if not jnp.issubdtype(jnp.result_type(y_support), jnp.integer):
    raise ValueError(f"y_support must hold integer labels, got dtype {jnp.result_type(y_support)}")
  if jnp.ndim(x_query) != jnp.ndim(x_support) or x_query.shape[1:] != x_support.shape[1:]:
    raise ValueError(f"x_query must be [Q, {', '.join(map(str, x_support.shape[1:]))}] like x_support, got shape "
                     f"{jnp.shape(x_query)}")
  labels = _concrete(y_support)
  if labels is not None:
    if labels.min() < 0 or labels.max() >= cfg.n_way:
      raise ValueError(f"y_support labels must lie in 0..n_way-1 = 0..{cfg.n_way - 1}, got values in "
                       f"[{labels.min()}, {labels.max()}]")
    missing = sorted(set(range(cfg.n_way)) - set(labels.tolist()))
    if missing:
      raise ValueError(f"y_support has no example of classes {missing} (n_way={cfg.n_way}); every class needs "
                       "at least one support example")
  if cfg.grad_mode not in bilevel.MODES:
    raise ValueError(f"cfg.grad_mode must be one of {bilevel.MODES}, got {cfg.grad_mode!r}")
  for name, value, nonneg in (("lr", cfg.lr, True), ("scale", cfg.scale, False), ("bias", cfg.bias, False),
                              ("backbone_lr_scale", cfg.backbone_lr_scale, True)):
    if value is None and name == "lr":
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
        np.isfinite(value) and (value >= 0 or not nonneg)):
      raise ValueError(f"cfg.{name} must be a finite{' non-negative' if nonneg else ''} number, got {value!r}")


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _scaled_sgd(lr: float, scales: dict[str, float]) -> optax.GradientTransformation:
  """SGD on a dict of subtrees, subtree ``k`` with step ``lr * scales[k]`` (stateless, differentiable)."""

  def update_fn(updates, state, params=None):
    del params
    return {k: jax.tree.map(lambda g, k=k: -lr * scales.get(k, 1.0) * g, v) for k, v in updates.items()}, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _adapt(params: PyTree, loss_fn: Callable[[PyTree, Any], jax.Array], batch: Any, steps: int, lr: float,
           cfg: FSCConfig) -> PyTree:
  """``steps`` SGD steps through :func:`jaxgen.core.bilevel.inner_adapt` (identity for ``steps == 0``).

  When ``params`` has a ``"theta"`` (backbone) entry and ``cfg.backbone_lr_scale != 1`` its step is scaled.
  """
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
    raise ValueError(f"cfg.steps must be a non-negative int, got {steps!r}")
  if steps == 0:
    return params
  truncation = None
  if cfg.grad_mode == "truncated":
    truncation = min(cfg.truncation if cfg.truncation is not None else steps, steps)
  if isinstance(params, dict) and "theta" in params and cfg.backbone_lr_scale != 1.0:
    step = {"lr": None, "optimizer": _scaled_sgd(lr, {"theta": cfg.backbone_lr_scale})}
  else:
    step = {"lr": lr}
  return bilevel.inner_adapt(params, batch, loss_fn, num_steps=int(steps), mode=cfg.grad_mode,
                             truncation=truncation, checkpoint=cfg.checkpoint, **step)


def fsc_protonet(theta: PyTree, x_support: jax.Array, y_support: jax.Array, x_query: jax.Array,
                 cfg: FSCConfig) -> jax.Array:
  r"""ProtoNet cosine head: :math:`s(\cos(f_\theta(x_q), p_c) + b)`; returns logits ``[Q, n_way]``.

  Args:
    theta: backbone parameters :math:`\theta`.
    x_support: support images ``[S, ...]``; y_support: ``[S]`` int labels in ``0..n_way-1``.
    x_query: query images ``[Q, ...]``.
    cfg: :class:`FSCConfig` (``scale`` :math:`s` = 10, ``bias`` :math:`b` = 0).

  Example (identity features; the query points along class 0's prototype)::

    >>> import jax, jax.numpy as jnp
    >>> cfg = FSCConfig(apply_fn=lambda theta, x: x @ theta, n_way=2)
    >>> xs, ys, xq = jnp.eye(2), jnp.array([0, 1]), jnp.array([[2.0, 0.0]])
    >>> fsc_protonet(jnp.eye(2), xs, ys, xq, cfg).tolist()            # 10 * cos
    [[10.0, 0.0]]
    >>> jax.grad(lambda t: fsc_protonet(t, xs, ys, xq, cfg)[0, 1])(jnp.eye(2)).shape   # a meta-gradient
    (2, 2)
  """
  _validate(x_support, y_support, x_query, cfg)
  protos = prototypes(cfg.apply_fn(theta, x_support), y_support, cfg.n_way)       # [N, D]
  cos = normalize(cfg.apply_fn(theta, x_query)) @ normalize(protos).T              # [Q, N]
  return cfg.scale * (cos + cfg.bias)


def fsc_linear_probe(theta: PyTree, x_support: jax.Array, y_support: jax.Array, x_query: jax.Array,
                     cfg: FSCConfig) -> jax.Array:
  r"""Linear probe on frozen normalized features: zero head, :math:`T` = 100 GD steps, :math:`\alpha` = 0.1.

  The head :math:`(W, c)` is trained on :math:`\mathrm{CE}(s(\hat f_\theta(x_s) W + c), y_s)`; the backbone is
  not updated, but the meta-gradient flows into :math:`\theta` through the support features (via the inner
  loop) and the query features. Returns logits ``[Q, n_way]``.
  """
  _validate(x_support, y_support, x_query, cfg)
  steps, lr = cfg.resolved("linear_probe")
  feats_s = normalize(cfg.apply_fn(theta, x_support))                                # [S, D]
  head0 = {"w": jnp.zeros((feats_s.shape[-1], cfg.n_way), feats_s.dtype), "c": jnp.zeros((cfg.n_way,), feats_s.dtype)}

  def loss_fn(head, batch):
    feats, labels = batch
    return _cross_entropy(cfg.scale * (feats @ head["w"] + head["c"][None, :]), labels)

  head = _adapt(head0, loss_fn, (feats_s, y_support), steps, lr, cfg)
  return cfg.scale * (normalize(cfg.apply_fn(theta, x_query)) @ head["w"] + head["c"][None, :])


def fsc_finetune(theta: PyTree, x_support: jax.Array, y_support: jax.Array, x_query: jax.Array,
                 cfg: FSCConfig) -> jax.Array:
  r"""Full fine-tuning from a prototype head: :math:`T` = 30 SGD steps (:math:`\alpha` = 0.05) on backbone + head.

  :math:`W_0 = [\hat p_1 \dots \hat p_N]` (``[D, N]``), logits :math:`s\,\hat f_\theta(x) W`; the inner loss is
  the support cross-entropy in :math:`(\theta, W)`. Returns the adapted model's logits ``[Q, n_way]``.
  """
  _validate(x_support, y_support, x_query, cfg)
  steps, lr = cfg.resolved("finetune")
  head0 = normalize(prototypes(cfg.apply_fn(theta, x_support), y_support, cfg.n_way)).T    # [D, N]

  def logits_fn(params, x):
    return cfg.scale * (normalize(cfg.apply_fn(params["theta"], x)) @ params["w"])

  def loss_fn(params, batch):
    return _cross_entropy(logits_fn(params, batch[0]), batch[1])

  params = _adapt({"theta": theta, "w": head0}, loss_fn, (x_support, y_support), steps, lr, cfg)
  return logits_fn(params, x_query)


def fsc_maml_like(theta: PyTree, x_support: jax.Array, y_support: jax.Array, x_query: jax.Array,
                  cfg: FSCConfig) -> jax.Array:
  r"""MAML-style few-step adaptation: zero head + backbone, :math:`T` = 5 SGD steps with :math:`\alpha` = 0.2.

  Logits :math:`s(\hat f_\theta(x) W + c)` with :math:`W = 0, c = 0` at the start (so the first step moves only
  the head). Returns the adapted model's logits ``[Q, n_way]``.
  """
  _validate(x_support, y_support, x_query, cfg)
  steps, lr = cfg.resolved("maml_like")
  dim = jax.eval_shape(cfg.apply_fn, theta, x_support[:1]).shape[-1]
  dtype = jnp.result_type(*jax.tree.leaves(theta))

  def logits_fn(params, x):
    return cfg.scale * (normalize(cfg.apply_fn(params["theta"], x)) @ params["w"] + params["c"][None, :])

  def loss_fn(params, batch):
    return _cross_entropy(logits_fn(params, batch[0]), batch[1])

  params0 = {"theta": theta, "w": jnp.zeros((dim, cfg.n_way), dtype), "c": jnp.zeros((cfg.n_way,), dtype)}
  params = _adapt(params0, loss_fn, (x_support, y_support), steps, lr, cfg)
  return logits_fn(params, x_query)


_LEARNERS = {"protonet": fsc_protonet, "linear_probe": fsc_linear_probe, "finetune": fsc_finetune,
             "maml_like": fsc_maml_like}


def fsc_learner(method: str) -> Callable[[PyTree, jax.Array, jax.Array, jax.Array, FSCConfig], jax.Array]:
  """The learner function named ``method`` (one of :data:`METHODS`)."""
  if method not in _LEARNERS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  return _LEARNERS[method]
