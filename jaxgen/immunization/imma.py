r"""IMMA: immunizing a generative model against malicious adaptation (single concept), and the attacks.

Zheng & Yeh, "IMMA: Immunizing text-to-image Models against Malicious Adaptation", ECCV 2024 (arXiv 2311.18815);
released code github.com/amberyzheng/IMMA. Spec: ``shared/specs/immunization.md`` §1.1, §2.

**Bilevel problem** (paper Eq. 3; spec §2.1). The model's parameters split into the upper level
:math:`\theta_u` (the cross-attention projections the immunizer edits), the lower level :math:`\phi` (what the
attacker adapts: LoRA factors, K/V deltas, all weights) and the rest (``frozen``). With the attack's own loss
:math:`L_A`,

.. math::  \max_{\theta_u} L_A(x^u, c; \theta_u, \phi^*(\theta_u))
           \ \text{s.t.}\ \phi^*(\theta_u) = \arg\min_\phi L_A(x^l, c; \theta_u, \phi),

relaxed to ``K`` inner steps :math:`\phi_K(\theta_u)`, a cap :math:`\tau` and a preservation term, giving the
minimized outer objective

.. math::  J(\theta_u) = -\min\big(L_A(x^u, c; \theta_u, \phi_K(\theta_u)), \tau\big)
           + \lambda\, L_{pres}(\theta_u).

**Schemes** (``IMMAConfig.scheme``; spec §2.2):

* ``"alternating"`` (default, the released code): per iteration one inner optimizer step on :math:`\phi` (Adam on
  :math:`L_A`), then one outer step on :math:`\theta_u` with :math:`\phi` fixed; :math:`\phi` persists.
* ``"unrolled"``: :math:`\phi` restarts from :math:`\phi_0` at every outer step; ``K`` SGD steps unrolled in
  ``lax.scan`` (:func:`jaxgen.core.bilevel.inner_adapt`), ``jax.grad`` of :math:`J` through them.
* ``"truncated"``: :math:`\phi` persists (stop-gradient between outer steps); each outer step advances it ``K`` SGD
  steps and differentiates through those ``K``.
* ``"naive"``: no inner loop, ascent on the un-adapted concept loss (the released code's ``--max`` baseline).

``first_order=True`` (scanned schemes) stops the gradient through the inner gradients: the outer gradient is
:math:`\partial J/\partial\theta_u` at :math:`\phi_K` held fixed.

**Attacks** (the inner loops an attacker runs after release; spec §2.5-§2.6): :func:`relearn_attack`
(fine-tuning selected weights on the concept, Adam) and :func:`lora_attack` (LoRA personalization through
:mod:`jaxgen.core.lora`; kernels of more than two dimensions, e.g. Flax ``DenseGeneral`` K/V ``[d, heads,
head_dim]``, are adapted as their ``[d, -1]`` view). Both are ``lax.scan`` loops that return the adapted
parameters every ``record_every`` steps.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxgen.core import bilevel
from jaxgen.core import lora as lora_lib
from jaxgen.core.validate import check_count, check_real

PyTree = Any
SCHEMES = ("alternating", "unrolled", "truncated", "naive")
Predicate = Callable[[str], bool]

__all__ = [
    "IMMAConfig",
    "IMMAState",
    "SCHEMES",
    "combine_params",
    "imma_init",
    "imma_outer_loss",
    "imma_step",
    "imma_train",
    "lora_attack",
    "lora_phi_apply",
    "lora_phi_init",
    "relearn_attack",
    "split_params",
]



# ---------------------------------------------------------------------------------------------------------------
# Parameter partitions.


def _as_predicate(targets: str | Sequence[str] | Predicate) -> Predicate:
  if callable(targets):
    return targets
  if isinstance(targets, str):
    import re

    pattern = re.compile(targets)
    return lambda p: bool(pattern.search(p))
  paths = tuple(targets)
  if not paths:
    raise ValueError("`targets` is empty: select at least one parameter")
  return lambda p: p in paths


def split_params(params: PyTree, targets: str | Sequence[str] | Predicate) -> tuple[PyTree, PyTree]:
  """Split ``params`` into ``(selected, rest)``, both with ``params``' structure and ``None`` in the other's leaves.

  ``targets``: a regex searched in the ``'/'``-joined leaf path, a collection of exact paths, or a predicate.
  """
  is_sel = _as_predicate(targets)
  flags = jax.tree_util.tree_map_with_path(lambda p, _: bool(is_sel(lora_lib.path_to_str(p))), params)
  if not any(jax.tree.leaves(flags)):
    raise ValueError(f"`targets`={targets!r} selected no leaf of `params`")
  selected = jax.tree.map(lambda f, x: x if f else None, flags, params)
  rest = jax.tree.map(lambda f, x: None if f else x, flags, params)
  return selected, rest


def combine_params(selected: PyTree, rest: PyTree) -> PyTree:
  """Inverse of :func:`split_params`: every leaf from whichever part holds it."""
  return jax.tree.map(lambda a, b: b if a is None else a, selected, rest, is_leaf=lambda x: x is None)


# ---------------------------------------------------------------------------------------------------------------
# LoRA on N-D kernels through core.lora (2-D views).


def _kernel_views(params: PyTree, is_sel: Predicate) -> dict[str, jax.Array]:
  return {lora_lib.path_to_str(p): jnp.reshape(x, (x.shape[0], -1))
          for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
          if is_sel(lora_lib.path_to_str(p)) and jnp.ndim(x) >= 2}


def lora_phi_init(key: jax.Array, params: PyTree, *, rank: int, targets: str | Sequence[str] | Predicate,
                  alpha: float | None = None) -> dict[str, lora_lib.LoRAWeights]:
  r"""LoRA factors (``A ~ N(0, 1/d_in)``, ``B = 0``) for the selected kernels, keyed by path.

  Kernels with more than two axes are adapted as their ``[d_in, -1]`` view. ``rank`` must satisfy
  ``1 <= rank <= min(d_in, d_out)`` of every selected kernel (a larger rank is not low-rank and is rejected).
  """
  if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
    raise ValueError(f"`rank` must be an int >= 1, got {rank!r}")
  if alpha is not None:
    check_real("alpha", alpha, lo=0.0, open_lo=True)
  views = _kernel_views(params, _as_predicate(targets))
  if not views:
    raise ValueError(f"`targets`={targets!r} selected no kernel (>= 2-D leaf) of `params`")
  for path, v in views.items():
    if rank > min(v.shape):
      raise ValueError(f"`rank`={rank} is incompatible with kernel {path} of 2-D view shape {v.shape}: "
                       f"a LoRA rank must be at most min(d_in, d_out)={min(v.shape)}")
  return lora_lib.lora_init(key, views, rank=int(rank), alpha=alpha, targets=lambda p, leaf: True)


def lora_phi_apply(params: PyTree, phi: dict[str, lora_lib.LoRAWeights]) -> PyTree:
  r"""``params`` with :math:`W + \frac{\alpha}{r} A B` at every adapted kernel (via :func:`core.lora.lora_apply`)."""
  leaves = {lora_lib.path_to_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  for path, w in phi.items():
    if path not in leaves:
      raise ValueError(f"LoRA factors for {path!r}, which is not a leaf of `params`")
    view = jnp.reshape(leaves[path], (leaves[path].shape[0], -1))
    if (jnp.ndim(w.a) != 2 or jnp.ndim(w.b) != 2 or w.a.shape[1] != w.b.shape[0] or w.a.shape[0] != view.shape[0]
        or w.b.shape[1] != view.shape[1]):
      raise ValueError(f"`phi` LoRA factors a{w.a.shape} @ b{w.b.shape} are incompatible with kernel {path} "
                       f"(2-D view {view.shape})")
  views = {p: jnp.reshape(leaves[p], (leaves[p].shape[0], -1)) for p in phi}
  merged = lora_lib.lora_apply(views, phi)

  def leaf(path, x):
    name = lora_lib.path_to_str(path)
    return merged[name].reshape(x.shape) if name in merged else x

  return jax.tree_util.tree_map_with_path(leaf, params)


# ---------------------------------------------------------------------------------------------------------------
# The IMMA objective and loop.


@dataclasses.dataclass(frozen=True)
class IMMAConfig:
  r"""IMMA hyper-parameters (toy defaults of spec §2.3; the released code's in brackets).

  Attributes:
    attack_loss: ``attack_loss(theta_u, phi, frozen, batch, key) -> scalar``, :math:`L_A`.
    pres_loss: ``pres_loss(theta_u, frozen, batch, key) -> scalar``, :math:`L_{pres}` (training loss on other
      concepts or distillation to the pre-immunization model).
    scheme: ``"alternating"`` (default, released code), ``"unrolled"``, ``"truncated"`` or ``"naive"``.
    first_order: FOMAML gradient through the scanned inner loops.
    inner_steps: ``K`` (toy 3) for ``"unrolled"``/``"truncated"``.
    inner_lr: inner SGD step (toy 0.03) for the scanned schemes.
    alt_inner_lr: Adam step of the alternating scheme's inner update (toy 1e-2) [LoRA 1e-4].
    outer_lr: outer Adam step (toy 2e-3) [AdamW 2e-5 / 1e-5].
    clip: global-norm clip of the outer gradient (1.0).
    lam: :math:`\lambda` (toy 5.0).
    tau: :math:`\tau` (toy 5.0; ``inf`` for the released code).
  """

  attack_loss: Callable[..., jax.Array]
  pres_loss: Callable[..., jax.Array]
  scheme: str = "alternating"
  first_order: bool = False
  inner_steps: int = 3
  inner_lr: float = 0.03
  alt_inner_lr: float = 1e-2
  outer_lr: float = 2e-3
  clip: float = 1.0
  lam: float = 5.0
  tau: float = 5.0

  def __post_init__(self):
    if self.scheme not in SCHEMES:
      raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
    check_count("inner_steps", self.inner_steps, 1)
    check_real("lam", self.lam, lo=0.0)
    for name in ("inner_lr", "alt_inner_lr", "outer_lr"):
      check_real(name, getattr(self, name), lo=0.0, open_lo=True)
    check_real("clip", self.clip, lo=0.0, open_lo=True, allow_inf=True)
    check_real("tau", self.tau, lo=-np.inf, allow_inf=True)

  def outer_optimizer(self) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(self.clip), optax.adam(self.outer_lr))

  def inner_optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.alt_inner_lr)


class IMMAState(NamedTuple):
  """``theta_u``; ``phi`` (the attacker's current parameters; ``phi0`` for ``"unrolled"``/``"naive"``); the outer and
  inner optimizer states; ``step`` (int32 outer steps)."""

  theta_u: PyTree
  phi: PyTree
  outer_opt_state: optax.OptState
  inner_opt_state: optax.OptState
  step: jax.Array


def imma_init(theta_u: PyTree, phi0: PyTree, cfg: IMMAConfig) -> IMMAState:
  return IMMAState(theta_u, phi0, cfg.outer_optimizer().init(theta_u), cfg.inner_optimizer().init(phi0),
                   jnp.zeros([], jnp.int32))


def imma_outer_loss(theta_u: PyTree, phi: PyTree, frozen: PyTree, concept_batch: PyTree, pres_batch: PyTree,
                    key: jax.Array, cfg: IMMAConfig) -> tuple[jax.Array, dict[str, Any]]:
  r"""The outer objective :math:`J(\theta_u)` of spec §2.1 (minimized).

  For ``"unrolled"``/``"truncated"``, :math:`\phi_K` = ``K`` SGD steps of :math:`L_A` from ``phi`` inside
  ``lax.scan`` (exact or first-order); for ``"alternating"``/``"naive"`` :math:`\phi_K` = ``phi``.
  ``key`` is split into (inner, outer, preservation) keys in that order for every scheme.

  Returns:
    ``(J, aux)`` with ``aux`` = ``concept_loss`` (:math:`L_A` at :math:`\phi_K`), ``pres_loss``, ``phi_K``.
  """
  k_inner, k_outer, k_pres = jax.random.split(key, 3)
  if cfg.scheme in ("unrolled", "truncated"):
    inner = lambda p, b, k: cfg.attack_loss(theta_u, p, frozen, b, k)
    phi_k = bilevel.inner_adapt(phi, concept_batch, inner, num_steps=int(cfg.inner_steps), lr=cfg.inner_lr,
                                mode="first_order" if cfg.first_order else "full", key=k_inner)
  else:
    phi_k = phi
  concept = cfg.attack_loss(theta_u, phi_k, frozen, concept_batch, k_outer)
  pres = cfg.pres_loss(theta_u, frozen, pres_batch, k_pres) if cfg.lam > 0 else jnp.zeros([], concept.dtype)
  j = -jnp.minimum(concept, cfg.tau) + cfg.lam * pres
  return j, {"concept_loss": concept, "pres_loss": pres, "phi_K": phi_k}


def imma_step(state: IMMAState, frozen: PyTree, concept_batch: PyTree, pres_batch: PyTree, key: jax.Array,
              cfg: IMMAConfig) -> tuple[IMMAState, dict[str, jax.Array]]:
  """One iteration of the configured scheme (pure; jit with ``cfg`` static). Only ``theta_u`` and ``phi`` change."""
  phi, inner_state = state.phi, state.inner_opt_state
  metrics = {}
  if cfg.scheme == "alternating":
    k_attack, key = jax.random.split(key)
    loss_a, g = jax.value_and_grad(lambda p: cfg.attack_loss(state.theta_u, p, frozen, concept_batch, k_attack))(phi)
    updates, inner_state = cfg.inner_optimizer().update(g, inner_state, phi)
    phi = optax.apply_updates(phi, updates)
    metrics["attack_loss"] = loss_a
  start = jax.lax.stop_gradient(phi)
  (j, aux), grads = jax.value_and_grad(imma_outer_loss, has_aux=True)(
      state.theta_u, start, frozen, concept_batch, pres_batch, key, cfg)
  updates, outer_state = cfg.outer_optimizer().update(grads, state.outer_opt_state, state.theta_u)
  theta_u = optax.apply_updates(state.theta_u, updates)
  if cfg.scheme == "truncated":
    phi = jax.lax.stop_gradient(aux["phi_K"])
  metrics.update({"objective": j, "concept_loss": aux["concept_loss"], "pres_loss": aux["pres_loss"],
                  "grad_norm": optax.tree.norm(grads)})
  return IMMAState(theta_u, phi, outer_state, inner_state, state.step + 1), metrics


@functools.partial(jax.jit, static_argnames=("step_fn", "static"))
def _run_chunk(state, steps, key, args, *, step_fn, static):
  def body(st, s):
    return step_fn(st, jax.random.fold_in(key, s), args, *static)

  return jax.lax.scan(body, state, steps)


def train_loop(state, step_fn, args, key, num_steps: int, chunk: int, progress: bool, desc: str, static=()):
  """Chunked ``lax.scan`` driver of :func:`imma_train` and :func:`jaxgen.immunization.mima.mima_train`.

  ``step_fn(state, key, args, *static) -> (state, metrics)``; ``args`` (parameters, data arrays) are arguments of
  the jitted chunk, not baked-in constants; ``step_fn`` and ``static`` (e.g. the config) are static, so repeated
  calls with the same ones reuse the compiled chunk. Step ``s`` uses ``jax.random.fold_in(key, s)``. One
  progress-bar tick per chunk. Returns ``(final_state, history)`` with the per-chunk mean of every metric.
  """
  chunk = check_count("chunk", chunk, 1)
  num_steps = check_count("num_steps", num_steps, 0)
  history = []
  done = 0
  with tqdm(total=int(num_steps), disable=not progress, desc=desc, leave=False) as bar:
    while done < num_steps:
      n = min(int(chunk), int(num_steps) - done)
      state, metrics = _run_chunk(state, jnp.arange(done, done + n, dtype=jnp.int32), key, args, step_fn=step_fn,
                                  static=tuple(static))
      done += n
      history.append({"step": done, **{k: float(np.mean(np.asarray(v))) for k, v in metrics.items()}})
      bar.update(n)
  return state, history


def _imma_body(st, k, args, cfg, data_fn):
  frozen, data = args
  return imma_step(st, frozen, *data_fn(jax.random.fold_in(k, 1), data), k, cfg)


def imma_train(frozen: PyTree, theta_u: PyTree, phi0: PyTree,
               data_fn: Callable[[jax.Array, PyTree], tuple[PyTree, PyTree]], key: jax.Array, cfg: IMMAConfig, *,
               num_steps: int, data: PyTree = None, chunk: int = 25, progress: bool = True,
               desc: str = "imma") -> tuple[PyTree, list[dict[str, float]]]:
  """Run ``num_steps`` IMMA iterations; returns the immunized ``theta_u`` and per-chunk mean metrics.

  ``data_fn(key, data) -> (concept_batch, pres_batch)`` samples one iteration's data (jittable) from ``data``.
  """
  state = imma_init(theta_u, phi0, cfg)
  state, history = train_loop(state, _imma_body, (frozen, data), key, num_steps, chunk, progress, desc,
                              static=(cfg, data_fn))
  return state.theta_u, history


# ---------------------------------------------------------------------------------------------------------------
# Attacks (the adaptation an attacker runs on the released model).


@functools.partial(jax.jit, static_argnames=("loss_fn", "data_fn", "lr", "length", "mode"))
def _attack_segment(trainable, opt_state, rest, data, key, start, *, loss_fn, data_fn, lr, length, mode):
  opt = optax.adam(lr)

  def params_of(tr):
    return lora_phi_apply(rest, tr) if mode == "lora" else combine_params(tr, rest)

  def body(carry, s):
    tr, st = carry
    k = jax.random.fold_in(key, s)
    batch = data_fn(jax.random.fold_in(k, 1), data)
    loss, g = jax.value_and_grad(lambda t: loss_fn(params_of(t), batch, k))(tr)
    updates, st = opt.update(g, st, tr)
    return (optax.apply_updates(tr, updates), st), loss

  (trainable, opt_state), losses = jax.lax.scan(body, (trainable, opt_state), start + jnp.arange(length))
  return trainable, opt_state, losses


def _check_schedule(num_steps: int, record_every: int) -> None:
  for name, v, lo in (("num_steps", num_steps, 0), ("record_every", record_every, 1)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
      raise ValueError(f"`{name}` must be an int >= {lo}, got {v!r}")
  if num_steps % record_every:
    raise ValueError(f"`num_steps`={num_steps} must be a multiple of `record_every`={record_every}")


def _run_attack(trainable, rest, params_of, loss_fn, data_fn, data, key, num_steps, lr, record_every, mode):
  opt_state = optax.adam(lr).init(trainable)
  out = [(0, params_of(trainable))]
  losses = []
  for start in range(0, num_steps, record_every):
    trainable, opt_state, seg = _attack_segment(trainable, opt_state, rest, data, key, jnp.int32(start),
                                                loss_fn=loss_fn, data_fn=data_fn, lr=float(lr),
                                                length=int(record_every), mode=mode)
    losses.append(np.asarray(seg))
    out.append((start + record_every, params_of(trainable)))
  return out, (np.concatenate(losses) if losses else np.zeros((0,), np.float32))


def relearn_attack(params: PyTree, loss_fn: Callable[[PyTree, PyTree, jax.Array], jax.Array],
                   data_fn: Callable[[jax.Array, PyTree], PyTree], data: PyTree, key: jax.Array, *,
                   targets: str | Sequence[str] | Predicate, num_steps: int, lr: float, record_every: int
                   ) -> tuple[list[tuple[int, PyTree]], np.ndarray]:
  """Re-learning attack: Adam fine-tuning of the ``targets`` leaves on ``loss_fn(params, batch, key)``.

  Batches come from ``data_fn(key, data)``. The loop is a jitted ``lax.scan`` of ``record_every`` steps, called
  ``num_steps / record_every`` times. Returns ``([(step, params_at_step), ...], losses [num_steps])`` with step 0
  (the released model) first.
  """
  _check_schedule(num_steps, record_every)
  check_real("lr", lr, lo=0.0, open_lo=True)
  trainable, rest = split_params(params, targets)
  return _run_attack(trainable, rest, lambda tr: combine_params(tr, rest), loss_fn, data_fn, data, key,
                     num_steps, lr, record_every, "relearn")


def lora_attack(params: PyTree, loss_fn: Callable[[PyTree, PyTree, jax.Array], jax.Array],
                data_fn: Callable[[jax.Array, PyTree], PyTree], data: PyTree, key: jax.Array, *,
                targets: str | Sequence[str] | Predicate, rank: int, num_steps: int, lr: float, record_every: int,
                alpha: float | None = None) -> tuple[list[tuple[int, PyTree]], np.ndarray]:
  """LoRA personalization attack (:mod:`jaxgen.core.lora`): Adam on rank-``rank`` factors of the ``targets`` kernels.

  ``A ~ N(0, 1/d_in)``, ``B = 0`` (the adapted model starts as ``params``); otherwise as :func:`relearn_attack`.
  Raises ``ValueError`` for a rank incompatible with a selected kernel.
  """
  _check_schedule(num_steps, record_every)
  check_real("lr", lr, lo=0.0, open_lo=True)
  init_key, run_key = jax.random.split(key)
  phi = lora_phi_init(init_key, params, rank=rank, targets=targets, alpha=alpha)
  return _run_attack(phi, params, lambda tr: lora_phi_apply(params, tr), loss_fn, data_fn, data, run_key,
                     num_steps, lr, record_every, "lora")
