r"""Learning to Obstruct (LTO): make few-shot learning fail on restricted classes, keep it working on the others.

  Zheng, Yang, Yeh, "Learning to Obstruct Few-Shot Image Classification over Restricted Classes", ECCV 2024,
  arXiv 2409.19210 (https://arxiv.org/abs/2409.19210); reference code github.com/amberyzheng/LTO.

A backbone :math:`f_\theta` is shared by a few-shot classification method :math:`F` (a learner of
:mod:`jaxgen.immunization.fsc`, the obstructor's "def" copy) that maps :math:`(\theta, S)` to a classifier.
The classes are split into restricted :math:`R` and others :math:`R'`; LTO learns :math:`\theta` so that
:math:`F(\theta, S)` is bad on :math:`R` and good on :math:`R'` (the paper's bilevel objective; the spec, §4.1):

.. math::  \min_\theta\; \mathbb{E}_{S, Q}\Big[-\lambda_r \min\big(\mathrm{CE}_R(F(\theta, S); Q), \tau\big)
           + \lambda_o\, \mathrm{CE}_O(F(\theta, S); Q)\Big],

where :math:`\mathrm{CE}_R` / :math:`\mathrm{CE}_O` are the mean cross-entropies over the query ("obstruct")
samples whose label is in :math:`R` / :math:`R'`, the obstruct set :math:`Q` is disjoint from the support set
:math:`S`, and :math:`\tau` (``restricted_cap``, 5 in the toy setting; ``None`` = no cap as in the reference) keeps
the ascent bounded. :math:`F` contains the learner's inner optimization (``lax.scan`` in
:mod:`jaxgen.core.bilevel`): the outer gradient is exact through the unrolled loop (``fsc.grad_mode="full"``,
default) or first order (``"first_order"``: the gradient at the adapted parameters, applied to :math:`\theta`).

Outer update: Adam (3e-4) after global-norm clipping (1.0) on the gradient of the objective above. The
reference instead takes a plain gradient step :math:`\theta \leftarrow \theta + \eta(\lambda_r \mathrm{clamp}(\bar
g_R, -1, 1) - \lambda_o \bar g_O)`; ``clamp_restricted=1.0`` reproduces its element-wise clamp of the
restricted-class gradient (the clamp on :math:`\bar g_O` is a no-op in the released code, so it is not applied).

Metrics (paper Sec. 5, reference ``metrics/accuracy.py`` and ``metrics/evaluators.py``): top-1 accuracy on all
test samples, on restricted-label samples (:math:`acc_R`), on the others (:math:`acc_O`) and per group
(superclass), and

.. math::  \mathrm{DropRatio} = \frac{acc_R^{before} - acc_R^{after}}{acc_O^{before} - acc_O^{after}}

in percentage points; when :math:`acc_O` does not drop the raw restricted drop is reported and flagged (printed
with a trailing ``*``, e.g. ``"68.85*"``), never :math:`\pm\infty`.

Conventions: a few-shot task has labels ``0..n_way-1``; the restricted set is a boolean mask ``[n_way]`` (or a
function ``labels -> mask``); pools are class-major arrays ``[n_way, P, ...]`` (class ``c`` owns row ``c``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.core.validate import check_real
from jaxgen.immunization import fsc as fsc_lib

PyTree = Any
Learner = Callable[[PyTree, jax.Array, jax.Array, jax.Array, fsc_lib.FSCConfig], jax.Array]
RestrictedSpec = jax.Array | np.ndarray | Callable[[jax.Array], jax.Array]

__all__ = [
    "LTOConfig", "Task", "accuracy_by_group", "drop_ratio", "evaluate_fsc", "format_drop_ratio",
    "frozen_head_learner", "lto_optimizer", "lto_outer_loss", "lto_step", "lto_train", "restricted_mask",
    "restricted_mask_from_labels", "sample_support", "sample_task",
]


@dataclasses.dataclass(frozen=True)
class LTOConfig:
  r"""Static configuration of the obstruction (hashable).

  Attributes:
    fsc: the obstructor's learner configuration (:class:`~jaxgen.immunization.fsc.FSCConfig`: backbone
      ``apply_fn``, ``n_way``, inner ``steps``/``lr``, ``grad_mode`` = ``"full"`` or ``"first_order"``).
    method: the obstructor's learner, one of :data:`~jaxgen.immunization.fsc.METHODS` (``"finetune"``).
    learner: optional learner function that replaces ``method`` (same signature as ``fsc_*``), e.g.
      :func:`frozen_head_learner` for the no-inner-loop baseline.
    lambda_r: weight :math:`\lambda_r` of the restricted cross-entropy (1).
    lambda_o: weight :math:`\lambda_o` of the other-class cross-entropy (1).
    restricted_cap: cap :math:`\tau` on :math:`\mathrm{CE}_R` (5.0; ``None`` = no cap, the reference).
    learning_rate: outer Adam learning rate (3e-4; reference: plain SGD 1e-5 to 4e-5 on CLIP).
    clip_norm: global-norm gradient clipping before Adam (1.0; ``None`` = off).
    clamp_restricted: element-wise clamp of the restricted-class gradient (reference: 1.0; default ``None``).
    num_steps: outer steps of :func:`lto_train` (300).
  """

  fsc: fsc_lib.FSCConfig
  method: str = "finetune"
  learner: Learner | None = None
  lambda_r: float = 1.0
  lambda_o: float = 1.0
  restricted_cap: float | None = 5.0
  learning_rate: float = 3e-4
  clip_norm: float | None = 1.0
  clamp_restricted: float | None = None
  num_steps: int = 300

  def __post_init__(self):
    if not isinstance(self.fsc, fsc_lib.FSCConfig):
      raise TypeError(f"fsc must be an FSCConfig, got {type(self.fsc).__name__}")
    if self.learner is None and self.method not in fsc_lib.METHODS:
      raise ValueError(f"method must be one of {fsc_lib.METHODS}, got {self.method!r}")
    for name in ("lambda_r", "lambda_o"):
      check_real(name, getattr(self, name), lo=0.0)
    check_real("learning_rate", self.learning_rate, lo=0.0, open_lo=True)
    for name in ("restricted_cap", "clip_norm", "clamp_restricted"):
      if getattr(self, name) is not None:
        check_real(name, getattr(self, name), lo=0.0, open_lo=True, allow_inf=True)

  def get_learner(self) -> Learner:
    return self.learner if self.learner is not None else fsc_lib.fsc_learner(self.method)



class Task(NamedTuple):
  """One obstruction task: a support set, a disjoint obstruct (query) set and the restricted-class mask."""

  x_support: jax.Array     # [n_way * k_support, ...]
  y_support: jax.Array     # int32 [n_way * k_support]
  x_obstruct: jax.Array    # [n_way * k_obstruct, ...]
  y_obstruct: jax.Array    # int32 [n_way * k_obstruct]
  restricted: jax.Array    # bool [n_way]


# ----------------------------------------------------------------------------------------------------------------
# Restricted / other split
# ----------------------------------------------------------------------------------------------------------------


def restricted_mask_from_labels(restricted_labels: Sequence[int] | np.ndarray, n_way: int) -> np.ndarray:
  """Boolean mask ``[n_way]`` of the restricted classes.

  Raises:
    ValueError: ``restricted_labels`` is empty, names a class outside ``0..n_way-1`` (not in the dataset) or
      covers every class (no other classes left).
  """
  labels = np.asarray(restricted_labels).reshape(-1)
  if labels.size == 0:
    raise ValueError("restricted_labels must name at least one class")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"restricted_labels must be integer class ids, got dtype {labels.dtype}")
  bad = sorted(set(labels.tolist()) - set(range(n_way)))
  if bad:
    raise ValueError(f"restricted_labels {bad} are not classes of the dataset (labels 0..{n_way - 1})")
  mask = np.zeros(n_way, bool)
  mask[labels] = True
  if mask.all():
    raise ValueError(f"restricted_labels cover all {n_way} classes; at least one other class is needed")
  return mask


def restricted_mask(labels: jax.Array, restricted: RestrictedSpec) -> jax.Array:
  """Per-sample boolean mask ``label in R`` for ``labels [Q]``; ``restricted`` is a mask ``[n_way]`` or a function."""
  if callable(restricted):
    return jnp.asarray(restricted(labels), bool)
  return jnp.asarray(restricted, bool)[labels]


# ----------------------------------------------------------------------------------------------------------------
# Objective and outer loop
# ----------------------------------------------------------------------------------------------------------------


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  w = mask.astype(values.dtype)
  return jnp.sum(w * values) / jnp.maximum(jnp.sum(w), 1.0)


def _terms(theta, support, obstruct, restricted, cfg: LTOConfig):
  x_s, y_s = support
  x_q, y_q = obstruct
  logits = cfg.get_learner()(theta, x_s, y_s, x_q, cfg.fsc)                             # [Q, N]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_q)                      # [Q]
  is_r = restricted_mask(y_q, restricted)
  ce_r, ce_o = _masked_mean(ce, is_r), _masked_mean(ce, ~is_r)
  capped = ce_r if cfg.restricted_cap is None else jnp.minimum(ce_r, cfg.restricted_cap)
  correct = jnp.argmax(logits, -1) == y_q
  aux = {"ce_r": ce_r, "ce_o": ce_o, "acc_r": _masked_mean(correct, is_r), "acc_o": _masked_mean(correct, ~is_r)}
  return capped, ce_o, aux


def lto_outer_loss(theta: PyTree, support: tuple[jax.Array, jax.Array], obstruct: tuple[jax.Array, jax.Array],
                   restricted_mask_fn: RestrictedSpec, key: jax.Array | None, cfg: LTOConfig
                   ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  r"""The obstruction objective :math:`-\lambda_r\min(\mathrm{CE}_R, \tau) + \lambda_o \mathrm{CE}_O` (minimized).

  Args:
    theta: backbone parameters :math:`\theta`.
    support: ``(x_support [S, ...], y_support [S])`` for the def learner :math:`F`.
    obstruct: ``(x_obstruct [Q, ...], y_obstruct [Q])``, disjoint from the support set.
    restricted_mask_fn: restricted classes :math:`R`, a boolean mask ``[n_way]`` or ``labels -> mask``.
    key: PRNG key (unused by the deterministic learners; kept so stochastic learners fit the signature).
    cfg: :class:`LTOConfig`.

  Returns:
    ``(loss, (ce_r, ce_o))`` with the uncapped mean cross-entropies of the two groups (0 for an empty group).
  """
  del key
  capped, ce_o, aux = _terms(theta, support, obstruct, restricted_mask_fn, cfg)
  loss = -cfg.lambda_r * capped + cfg.lambda_o * ce_o
  return loss, (aux["ce_r"], aux["ce_o"])


def lto_optimizer(cfg: LTOConfig) -> optax.GradientTransformation:
  """Global-norm clipping (``clip_norm``) followed by Adam (``learning_rate``)."""
  adam = optax.adam(cfg.learning_rate)
  return adam if cfg.clip_norm is None else optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adam)


def lto_step(theta: PyTree, opt_state: optax.OptState, task: Task, key: jax.Array | None, cfg: LTOConfig
             ) -> tuple[PyTree, optax.OptState, dict[str, jax.Array]]:
  """One outer step on ``task``; returns ``(theta, opt_state, metrics)`` (metrics on the obstruct set)."""
  del key
  support, obstruct = (task.x_support, task.y_support), (task.x_obstruct, task.y_obstruct)

  def parts(th):
    capped, ce_o, aux = _terms(th, support, obstruct, task.restricted, cfg)
    return (capped, ce_o), aux

  (capped, ce_o), vjp_fn, aux = jax.vjp(parts, theta, has_aux=True)
  one, zero = jnp.ones_like(capped), jnp.zeros_like(capped)
  if cfg.clamp_restricted is None:
    (grads,) = vjp_fn((-cfg.lambda_r * one, cfg.lambda_o * one))
  else:
    (g_r,) = vjp_fn((one, zero))
    (g_o,) = vjp_fn((zero, one))
    c = cfg.clamp_restricted
    grads = jax.tree.map(lambda a, b: -cfg.lambda_r * jnp.clip(a, -c, c) + cfg.lambda_o * b, g_r, g_o)
  updates, opt_state = lto_optimizer(cfg).update(grads, opt_state, theta)
  theta = optax.apply_updates(theta, updates)
  metrics = {"loss": -cfg.lambda_r * capped + cfg.lambda_o * ce_o, "grad_norm": optax.tree.norm(grads), **aux}
  return theta, opt_state, metrics


def lto_train(theta0: PyTree, sample_task_fn: Callable[[jax.Array], Task], key: jax.Array, cfg: LTOConfig, *,
              log_every: int = 10, progress: bool = False, desc: str = "lto",
              callback: Callable[[int, PyTree, dict[str, np.ndarray]], None] | None = None,
              return_history: bool = False) -> PyTree | tuple[PyTree, dict[str, np.ndarray]]:
  """Runs ``cfg.num_steps`` outer steps; chunks of ``log_every`` steps are one jitted ``lax.scan``.

  Args:
    theta0: initial (pre-trained) backbone parameters.
    sample_task_fn: ``key -> Task`` (jittable), e.g. ``functools.partial(sample_task, pool=..., ...)``.
    key: PRNG key; step ``t`` samples its task from the ``t``-th split of ``key``.
    cfg: :class:`LTOConfig`.
    log_every: steps per compiled chunk (one progress-bar tick, one ``callback`` call).
    progress: show a tqdm bar.
    desc: its label.
    callback: called as ``callback(step, theta, chunk_metrics)`` after every chunk.
    return_history: also return every step's metrics (host arrays ``[num_steps]``).

  Returns:
    The obstructed parameters (and the history if ``return_history``).
  """
  from tqdm.auto import tqdm

  if isinstance(cfg.num_steps, bool) or not isinstance(cfg.num_steps, (int, np.integer)) or cfg.num_steps < 0:
    raise ValueError(f"cfg.num_steps must be a non-negative int, got {cfg.num_steps!r}")
  if isinstance(log_every, bool) or not isinstance(log_every, (int, np.integer)) or log_every < 1:
    raise ValueError(f"log_every must be a positive int, got {log_every!r}")
  opt_state = lto_optimizer(cfg).init(theta0)

  @jax.jit
  def chunk(theta, opt_state, keys):
    def body(carry, k):
      th, st = carry
      k_task, k_step = jax.random.split(k)
      th, st, m = lto_step(th, st, sample_task_fn(k_task), k_step, cfg)
      return (th, st), m
    return jax.lax.scan(body, (theta, opt_state), keys)

  keys = jax.random.split(key, max(cfg.num_steps, 1))[:cfg.num_steps]
  theta, history = theta0, []
  with tqdm(total=cfg.num_steps, desc=desc, disable=not progress, dynamic_ncols=True, leave=False) as bar:
    for start in range(0, cfg.num_steps, log_every):
      (theta, opt_state), metrics = chunk(theta, opt_state, keys[start:start + log_every])
      metrics = jax.device_get(metrics)
      history.append(metrics)
      bar.update(len(keys[start:start + log_every]))
      bar.set_postfix({"ce_r": f"{float(metrics['ce_r'][-1]):.2f}", "ce_o": f"{float(metrics['ce_o'][-1]):.2f}"},
                      refresh=False)
      if callback is not None:
        callback(start + len(metrics["loss"]), theta, metrics)
  if not return_history:
    return theta
  merged = {k: np.concatenate([np.asarray(h[k]) for h in history]) for k in history[0]} if history else {}
  return theta, merged


def frozen_head_learner(head: jax.Array) -> Learner:
  r"""The no-inner-loop baseline's "learner": a fixed head, logits :math:`s\,\hat f_\theta(x_q) W` (ignores S).

  ``head`` is ``[D, n_way]`` (e.g. normalized class prototypes of the pre-trained backbone, the analogue of a
  frozen zero-shot/pre-trained classifier head). Obstructing through it is the paper's naive baseline: ascent on
  the restricted loss of the un-adapted model.
  """
  head = jnp.asarray(head)

  def learner(theta, x_support, y_support, x_query, cfg):
    del x_support, y_support
    return cfg.scale * (fsc_lib.normalize(cfg.apply_fn(theta, x_query)) @ head)

  return learner


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------


def _class_major(pool: jax.Array) -> tuple[int, int]:
  if jnp.ndim(pool) < 3:
    raise ValueError(f"pool must be class-major [n_way, P, ...], got shape {jnp.shape(pool)}")
  return int(pool.shape[0]), int(pool.shape[1])


def _draw(key: jax.Array, pool: jax.Array, counts: Sequence[int], names: Sequence[str]
          ) -> list[tuple[jax.Array, jax.Array]]:
  """Disjoint draws of ``counts[j]`` samples per class (one permutation per class); ``names`` for messages."""
  n_way, per_class = _class_major(pool)
  if sum(counts) > per_class:
    raise ValueError(f"cannot draw {' + '.join(map(str, counts))} distinct samples per class from a pool with "
                     f"{per_class} per class: {' + '.join(names)} must be <= {per_class}")
  perms = jax.vmap(lambda k: jax.random.permutation(k, per_class))(jax.random.split(key, n_way))   # [N, P]
  rows = jnp.arange(n_way)[:, None]
  out, start = [], 0
  for count in counts:
    x = pool[rows, perms[:, start:start + count]]                                                   # [N, k, ...]
    out.append((x.reshape((n_way * count,) + pool.shape[2:]), jnp.repeat(jnp.arange(n_way, dtype=jnp.int32), count)))
    start += count
  return out


def sample_support(key: jax.Array, pool: jax.Array, k_shot: int) -> tuple[jax.Array, jax.Array]:
  """``k_shot`` distinct samples of every class of the class-major ``pool [n_way, P, ...]`` (jittable)."""
  if isinstance(k_shot, bool) or not isinstance(k_shot, (int, np.integer)) or k_shot < 1:
    raise ValueError(f"k_shot must be a positive int, got {k_shot!r}")
  return _draw(key, pool, [k_shot], ["k_shot"])[0]


def sample_task(key: jax.Array, pool: jax.Array, restricted: jax.Array, k_support: int, k_obstruct: int) -> Task:
  """A :class:`Task`: ``k_support`` + ``k_obstruct`` distinct samples per class, the two sets disjoint (jittable)."""
  for name, k in (("k_support", k_support), ("k_obstruct", k_obstruct)):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"{name} must be a positive int, got {k!r}")
  n_way, _ = _class_major(pool)
  if jnp.shape(restricted) != (n_way,):
    raise ValueError(f"restricted must be a boolean mask [n_way={n_way}], got shape {jnp.shape(restricted)}")
  (xs, ys), (xo, yo) = _draw(key, pool, [k_support, k_obstruct], ["k_support", "k_obstruct"])
  return Task(xs, ys, xo, yo, jnp.asarray(restricted, bool))


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------


def accuracy_by_group(logits: np.ndarray, targets: np.ndarray, restricted_labels: Sequence[int] | np.ndarray,
                      group_of_label: Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
  """Top-1 accuracy on all samples, restricted-label samples, other samples and every group (superclass).

  Follows the reference ``accuracy_superclass``: fractions in ``[0, 1]``; an empty subset gets ``nan``.

  Args:
    logits: ``[n, n_classes]``.
    targets: ``[n]`` int labels.
    restricted_labels: the restricted classes (each in ``0..n_classes-1``).
    group_of_label: ``[n_classes]`` group id (0..G-1) of every label; default: one group per label.

  Returns:
    dict with ``acc_all``, ``acc_r``, ``acc_o`` (floats), ``acc_per_group`` (list of G floats) and ``counts``
    (``{"all", "r", "o", "per_group"}``).
  """
  logits, targets = np.asarray(logits), np.asarray(targets)
  if logits.ndim != 2 or targets.shape != (logits.shape[0],):
    raise ValueError(f"logits must be [n, n_classes] and targets [n], got {logits.shape} and {targets.shape}")
  if not np.issubdtype(targets.dtype, np.integer):
    raise TypeError(f"targets must be integer labels, got dtype {targets.dtype}")
  n_classes = logits.shape[1]
  if targets.size and (targets.min() < 0 or targets.max() >= n_classes):
    raise ValueError(f"targets must lie in 0..{n_classes - 1}")
  groups = np.arange(n_classes) if group_of_label is None else np.asarray(group_of_label)
  if groups.shape != (n_classes,):
    raise ValueError(f"group_of_label must have one entry per class ({n_classes}), got shape {groups.shape}")
  if not np.issubdtype(groups.dtype, np.integer) or (groups.size and groups.min() < 0):
    raise ValueError(f"group_of_label must hold group ids 0..G-1, got {groups.tolist()}")
  is_r_label = restricted_mask_from_labels(restricted_labels, n_classes)
  correct = np.argmax(logits, -1) == targets
  is_r = is_r_label[targets]

  def acc(mask):
    return float(np.mean(correct[mask])) if mask.any() else float("nan")

  sample_group = groups[targets]
  n_groups = int(groups.max()) + 1
  return {
      "acc_all": acc(np.ones_like(is_r)), "acc_r": acc(is_r), "acc_o": acc(~is_r),
      "acc_per_group": [acc(sample_group == g) for g in range(n_groups)],
      "counts": {"all": int(targets.size), "r": int(is_r.sum()), "o": int((~is_r).sum()),
                 "per_group": [int(np.sum(sample_group == g)) for g in range(n_groups)]},
  }


def _check_accuracy(name: str, value: Any) -> None:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating, np.ndarray,
                                                                  jax.Array)) or np.ndim(value) != 0:
    raise TypeError(f"{name} must be an accuracy (a fraction in [0, 1]), got {value!r}")
  if not 0.0 <= float(value) <= 1.0:          # NaN fails too
    raise ValueError(f"{name} must be an accuracy (a fraction in [0, 1]), got {value!r}")


def drop_ratio(acc_r0: float, acc_o0: float, acc_r: float, acc_o: float) -> tuple[float, bool]:
  r"""DropRatio :math:`(acc_R^0 - acc_R) / (acc_O^0 - acc_O)` (accuracies as fractions, drops in points).

  Returns:
    ``(value, flagged)``. When the other-class accuracy does not drop (:math:`acc_O^0 - acc_O \le 0`) the ratio
    is undefined: ``value`` is then the raw restricted drop in percentage points and ``flagged`` is True.

  Raises:
    ValueError: an accuracy that is not a number in [0, 1] (e.g. the NaN of an empty group).
  """
  for name, acc in (("acc_r0", acc_r0), ("acc_o0", acc_o0), ("acc_r", acc_r), ("acc_o", acc_o)):
    _check_accuracy(name, acc)
  drop_r = 100.0 * (float(acc_r0) - float(acc_r))
  drop_o = 100.0 * (float(acc_o0) - float(acc_o))
  if not drop_o > 0.0:
    return drop_r, True
  return drop_r / drop_o, False


def format_drop_ratio(acc_r0: float | None, acc_o0: float | None, acc_r: float, acc_o: float) -> str:
  """The reference's DropRatio string: ``"N/A"`` without a before round, ``"%.2f"``, or ``"%.2f*"`` when flagged.

  >>> format_drop_ratio(0.9, 0.8, 0.3, 0.7)      # restricted fell 60 points, others 10
  '6.00'
  >>> format_drop_ratio(0.9, 0.8, 0.3, 0.85)     # others did not drop: the raw restricted drop, flagged
  '60.00*'
  >>> format_drop_ratio(None, None, 0.3, 0.7)
  'N/A'
  """
  if acc_r0 is None or acc_o0 is None:
    return "N/A"
  value, flagged = drop_ratio(acc_r0, acc_o0, acc_r, acc_o)
  return f"{value:.2f}{'*' if flagged else ''}"


def _eval_logits(theta, keys, pool, x_test, *, learner, cfg, k_shot):
  def one(key):
    xs, ys = sample_support(key, pool, k_shot)
    return learner(theta, xs, ys, x_test, cfg)
  return jax.lax.map(one, keys)


_eval_logits_jit = jax.jit(_eval_logits, static_argnames=("learner", "cfg", "k_shot"))


def evaluate_fsc(theta: PyTree, method: str | Learner, pool: jax.Array, test: tuple[jax.Array, jax.Array],
                 key: jax.Array, k_shot: int, reps: int, *, cfg: fsc_lib.FSCConfig,
                 restricted_labels: Sequence[int] | np.ndarray,
                 group_of_label: Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
  """Few-shot evaluation of one attacker: ``reps`` support draws of ``k_shot`` per class, accuracies by group.

  Args:
    theta: backbone parameters to attack.
    method: an FSC method name (:data:`~jaxgen.immunization.fsc.METHODS`) or a learner function.
    pool: class-major support pool ``[n_way, P, ...]`` (disjoint from ``test``).
    test: ``(x_test [n, ...], y_test [n])``.
    key: PRNG key of the support draws (use the same key before and after obstruction).
    k_shot: shots per class; reps: number of support draws.
    cfg: the attacker's :class:`~jaxgen.immunization.fsc.FSCConfig` (its ``n_way`` must equal ``len(pool)``).
    restricted_labels: restricted classes; group_of_label: ``[n_way]`` group ids (default: one per class).

  Returns:
    dict with the rep-averaged ``acc_all``, ``acc_r``, ``acc_o``, ``acc_per_group``, and per-rep ``reps_acc_r`` /
    ``reps_acc_o``.
  """
  n_way, _ = _class_major(pool)
  if cfg.n_way != n_way:
    raise ValueError(f"cfg.n_way ({cfg.n_way}) must equal the number of pool classes ({n_way})")
  restricted_mask_from_labels(restricted_labels, n_way)
  if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps < 1:
    raise ValueError(f"reps must be a positive int, got {reps!r}")
  learner = fsc_lib.fsc_learner(method) if isinstance(method, str) else method
  x_test, y_test = test
  logits = np.asarray(_eval_logits_jit(theta, jax.random.split(key, reps), jnp.asarray(pool), jnp.asarray(x_test),
                                       learner=learner, cfg=cfg, k_shot=k_shot))
  per_rep = [accuracy_by_group(l, np.asarray(y_test), restricted_labels, group_of_label) for l in logits]
  mean = lambda k: float(np.mean([r[k] for r in per_rep]))   # noqa: E731
  return {
      "acc_all": mean("acc_all"), "acc_r": mean("acc_r"), "acc_o": mean("acc_o"),
      "acc_per_group": np.mean([r["acc_per_group"] for r in per_rep], axis=0).tolist(),
      "reps_acc_r": [r["acc_r"] for r in per_rep], "reps_acc_o": [r["acc_o"] for r in per_rep],
  }
