r"""Model immunization on a token-conditional MNIST flow model: IMMA vs MIMA (bilevel and first-order).

Papers: Zheng & Yeh, "IMMA: Immunizing text-to-image Models against Malicious Adaptation", ECCV 2024
(arXiv 2311.18815); Zheng & Yeh, "Multi-concept Model Immunization through Differentiable Model Merging", AAAI 2025
(arXiv 2412.15320). Spec: ``shared/specs/immunization.md`` §1-§3, §6-§7 (transposed from the 8x8 digits toy to
MNIST, as the issue asks; the toy itself, with the spec's K/V attacks, is
:mod:`jaxgen.experiments.immunization_digits8`, which runs this module's pipeline with other presets).

Pipeline (``run``):

1. **Base model.** A tiny DiT (:class:`jaxgen.nn.DiT`, patch 7 -> 16 image tokens, no class embedding) whose only
   condition is a 2-token "text" context ``[BOS, E[y]]`` read by cross-attention (spec §1.2: frozen random token
   table, ``d_c = 16``; id 10 = null prompt, id 11 = spare token). Rectified flow, 10 % null-prompt dropout,
   classifier-free guidance ``w`` at sampling. Trained once and cached under ``$JAXGEN_CACHE``.
2. **Erase** the concepts (two digits) in closed form: the cross-attention key/value kernels are edited with the
   MIMA merge (:func:`jaxgen.immunization.mima.kv_merge`) so that each concept token's keys/values equal the null
   prompt's, while BOS, the null token and every other token keep theirs exactly (equality constraints; the
   regularization rows keep the rest close). This replaces the spec's 400 fine-tuning steps (§2.5 step 2) by the
   UCE-style edit the merge already is.
3. **Immunize** the erased model's cross-attention (q, k, v, out) against re-learning (lower level: additive
   deltas on the leaves the attacker fine-tunes, ``Config.attack_targets``, default every cross-attention leaf):
   IMMA per concept (sequentially, half the outer budget each), MIMA jointly with the true bilevel gradient
   through the inner loops *and* the merge (default), and MIMA with the released first-order alternating scheme.
4. **Attack** every model per concept: re-learning (Adam fine-tuning of the ``attack_targets`` leaves on the
   concept's images) and LoRA personalization (rank-``r`` LoRA on the cross-attention q/k/v kernels via
   :mod:`jaxgen.core.lora`), both prompted with the
   concept's token; at each checkpoint, sample the concept and the other digits and score them with the cached
   evaluation CNN (class accuracy, FD).

Claim checked (spec §2.5/§3.4/§6): the immunized concepts are re-learned more slowly (positive similarity gap
ratio on class accuracy, MSGR >= 0.3 for MIMA) while the other digits stay within ``others_margin`` of the erased
model, and MIMA's MSGR beats per-concept IMMA's (reported either way). A gap ratio only measures resistance where
the attack re-learns the concept on the non-immunized (erased-only) model; other (attack, concept) pairs are void
and left out of the verdict's MSGR, and the verdict is "not held" when the base model does not draw the other digits
or some concept has no valid attack (:func:`_verdict`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxgen.core import flow, ode, train
from jaxgen.experiments import _cache, _classifier, _report

NAME = "immunization"
PAPER = ("Zheng & Yeh, IMMA (ECCV 2024, arXiv 2311.18815) and MIMA: Multi-concept Model Immunization through "
         "Differentiable Model Merging (AAAI 2025, arXiv 2412.15320)")
CLAIM = ("Immunized models resist re-learning of the immunized concepts (positive similarity gap ratio throughout "
         "the attack; spec toy: MSGR >= 0.3 on class accuracy at 100 attack steps — 200 here, where the "
         "non-immunized model has re-learned — other concepts within a margin), "
         "and merging per-concept adapted copies (MIMA) immunizes several concepts better than single-concept IMMA.")

NUM_CLASSES = 10
NULL_TOKEN = 10
SPARE_TOKEN = 11
NUM_TOKENS = 12


# ---------------------------------------------------------------------------------------------------------------
# The token-conditional flow model.


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The base flow model: a tiny DiT with a 2-token context ``[BOS, E[y]]`` and how it is trained.

  Attributes:
    dataset: ``"mnist"`` or ``"fashion_mnist"``.
    patch_size, hidden_size, depth, num_heads, mlp_ratio: DiT size (patch 7 -> 16 tokens on 28x28).
    context_dim: ``d_c``, width of the frozen token embeddings.
    batch_size, num_steps, learning_rate: Adam training (warm-up + cosine decay), grad clip 1.0.
    null_dropout: probability of training on the null prompt (classifier-free guidance).
    ema_decay: EMA of the sampled parameters.
    seed: initialisation, token table, noise and data order.
  """

  dataset: str = "mnist"
  patch_size: int = 7
  hidden_size: int = 96
  depth: int = 3
  num_heads: int = 4
  mlp_ratio: float = 2.0
  context_dim: int = 16
  batch_size: int = 128
  num_steps: int = 4000
  learning_rate: float = 2e-3
  null_dropout: float = 0.1
  ema_decay: float = 0.999
  seed: int = 0


def image_shape(config: ModelConfig) -> tuple[int, int, int]:
  """``(S, S, 1)`` of the model's dataset (28 for MNIST / Fashion-MNIST, 8 for the 8x8 digits)."""
  size = _classifier.IMAGE_SIZES[config.dataset]
  return (size, size, 1)


def build_module(config: ModelConfig):
  from jaxgen.nn import DiT

  return DiT(patch_size=config.patch_size, hidden_size=config.hidden_size, depth=config.depth,
             num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, num_classes=None,
             context_dim=config.context_dim)


def token_table(config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
  """The frozen "text encoder": ``(bos [d_c], table [NUM_TOKENS, d_c])``, unit-variance Gaussian rows."""
  rng = np.random.default_rng([config.seed, 7])
  emb = rng.standard_normal((NUM_TOKENS + 1, config.context_dim)).astype(np.float32)
  return emb[0], emb[1:]


def contexts(config: ModelConfig, tokens: jax.Array) -> jax.Array:
  """Context ``[B, 2, d_c]`` = ``[BOS, E[token]]`` for integer ``tokens [B]``."""
  bos, table = token_table(config)
  rows = jnp.take(jnp.asarray(table), tokens, axis=0)                                    # [B, d_c]
  first = jnp.broadcast_to(jnp.asarray(bos), rows.shape)
  return jnp.stack([first, rows], axis=1)


class TokenFlowModel(NamedTuple):
  config: ModelConfig
  module: Any
  params: Any           # EMA parameters
  history: list[dict[str, Any]]

  def apply(self, params, x, t, tokens):
    """Velocity ``v(x_t, t | [BOS, E[tokens]])`` (t-convention: 0 noise, 1 data)."""
    return self.module.apply(params, x, jnp.broadcast_to(t, (x.shape[0],)), None, contexts(self.config, tokens))


def train_model(config: ModelConfig, *, progress: bool = True) -> TokenFlowModel:
  """Train (or load from the cache) the token-conditional base flow model."""
  module = build_module(config)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  x = jnp.zeros((1, *image_shape(config)), jnp.float32)
  params = module.init(init_key, x, jnp.zeros((1,)), None, jnp.zeros((1, 2, config.context_dim)))
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, max(1, config.num_steps // 50),
                                                config.num_steps, end_value=config.learning_rate * 0.05)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule),
                          train.track_params_ema(config.ema_decay))
  train_x, train_y, _, _ = _classifier.load_images(config.dataset)

  def loss_fn(params, batch, key):
    drop_key, loss_key = jax.random.split(key)
    tokens = flow.drop_labels(drop_key, batch["y"], rate=config.null_dropout, null_label=NULL_TOKEN)
    return flow.flow_matching_loss(
        lambda p, xt, t, c: module.apply(p, xt, t, None, contexts(config, c)), params, batch["x"], loss_key,
        cond=tokens)

  state = train.init_train_state(params, optimizer, train_key)
  fitted = train.fit(state, train.make_train_step(loss_fn, optimizer),
                     train.epoch_batches({"x": train_x, "y": train_y}, config.batch_size, seed=config.seed),
                     config.num_steps, out_dir=_cache.entry_dir("immunization_flow", config), log_every=50,
                     max_to_keep=1, progress=progress, desc=f"token-flow[{config.dataset}]")
  return TokenFlowModel(config, module, train.params_ema(fitted.state.opt_state), fitted.history)


@functools.lru_cache(maxsize=8)
def _sampler(model_config: ModelConfig, num_steps: int, guidance: float):
  module = build_module(model_config)
  ts = ode.uniform_grid(num_steps)

  @jax.jit
  def run(params, tokens, key):
    x0 = jax.random.normal(key, (tokens.shape[0], *image_shape(model_config)), jnp.float32)
    cond = contexts(model_config, tokens)
    null = contexts(model_config, jnp.full_like(tokens, NULL_TOKEN))

    def velocity(t, x):
      tb = jnp.broadcast_to(t, (x.shape[0],))
      v_c = module.apply(params, x, tb, None, cond)
      v_u = module.apply(params, x, tb, None, null)
      return v_u + guidance * (v_c - v_u)

    return ode.odeint(velocity, x0, ts, "euler")

  return run


def generate(model_config: ModelConfig, params, tokens, key, *, num_steps: int = 20,
             guidance: float = 2.0) -> np.ndarray:
  """Euler samples (classifier-free guidance ``guidance``, null prompt = token 10), one per entry of ``tokens``."""
  run = _sampler(model_config, int(num_steps), float(guidance))
  return np.asarray(run(params, jnp.asarray(tokens, jnp.int32), key))


# ---------------------------------------------------------------------------------------------------------------
# The experiment.

ARMS = ("erased", "imma", "mima", "mima_fo")        # the MNIST study's default arms
ALL_ARMS = ARMS + ("imma_joint",)
ARM_LABELS = {"erased": "no immunization (erased only)", "imma": "IMMA (per concept)",
              "imma_joint": "IMMA (joint: one copy on both concepts)",
              "mima": "MIMA (bilevel, grad through merge)", "mima_fo": "MIMA (first-order, released)"}
ATTACKS = ("relearn", "lora")
MIN_BASE_OTHERS_ACC = 0.5                       # erased model, other digits, before any attack
MIN_BASELINE_RELEARN_ACC = 0.5                  # erased-only model, each concept and attack, at `sgr_step`
UPPER = "cross_attn/"                                    # theta_u: every cross-attention q/k/v/out leaf
KV_REGEX = "cross_attn/(key|value)/kernel"
LORA_QKV = "cross_attn/(query|key|value)/kernel"


@dataclasses.dataclass(frozen=True)
class Config:
  """Immunization study (toy defaults of spec §2.3/§3.2 unless noted).

  Attributes:
    model: the base token-conditional flow model (shared by quick and full; trained once and cached).
    classifier: the evaluation CNN (class accuracy, FD features).
    concepts: digits erased, immunized and attacked.
    arms: which models to attack (a subset of ``ALL_ARMS``; default ``ARMS``): ``"erased"`` (the reference),
      ``"imma"`` (IMMA once per concept, sequentially), ``"imma_joint"`` (IMMA once, with a single adapted copy
      trained on the union of the concepts' images — spec §3.4's "joint IMMA"), ``"mima"`` (bilevel, gradient
      through the merge), ``"mima_fo"`` (the released first-order alternating scheme).
    attacks: ``"relearn"`` (Adam fine-tuning of the ``attack_targets`` leaves) and/or ``"lora"``
      (rank-``lora_rank`` LoRA on the ``lora_targets`` kernels).
    attack_targets: regex over parameter paths: the leaves the re-learning attack fine-tunes, and the lower level
      phi of every immunizer (additive deltas on the same leaves, as IMMA sets phi to what the
      attacker adapts). Must select cross-attention leaves only (the immunizers' theta_u) and include the
      K/V kernels (MIMA merges them in closed form; its other deltas are merged by the mean). Default: every
      cross-attention leaf (q/k/v/out kernels and biases) — with K/V alone the erased-only model does not re-learn
      the concepts within 300 steps on this model (session-4 probes), so the comparison would be void.
    lora_targets: regex of the kernels the LoRA attack adapts (default: the cross-attention q/k/v kernels).
    scheme: bilevel scheme of IMMA and of the bilevel MIMA arm: ``"unrolled"`` (default: the attacker restarts
      from the released weights at every outer step, as the real attacker does) or ``"truncated"`` (spec §3.4).
    immunize_steps: outer steps of each immunization (IMMA: split evenly over the concepts, sequentially).
    inner_steps, inner_lr: ``K`` SGD steps on the K/V deltas per outer step (and per concept).
    outer_lr, lam, tau, ridge: outer Adam step, preservation weight, loss cap, merge ridge.
    immunize_pool: images per concept the immunizer uses (disjoint from the attacker's).
    concept_batch, pres_batch: batch sizes of the concept and preservation terms.
    pres_null_rate: fraction of preservation prompts replaced by the null prompt (keeps CFG's unconditional branch).
    attack_images: the attacker's images per concept.
    attack_steps, eval_steps: attack length and the steps at which samples are scored (multiples of
      ``record_every``).
    relearn_lr, lora_lr, lora_rank: attack optimizers (Adam).
    sgr_step: attack step at which the similarity gap ratio is reported (spec: 100; full preset 200, the first
      checkpoint at which the erased-only model has re-learned every concept on this model).
    samples_per_concept, samples_per_other: generated images per checkpoint.
    sample_steps, guidance: Euler steps and CFG scale of the sampler (spec: 20, 2).
    others_margin: allowed drop of the other digits' class accuracy (immunized vs erased, before any attack).
    seed: data selection, immunization, attacks and sampling.
  """

  model: ModelConfig = ModelConfig()
  classifier: _classifier.ClassifierConfig = _classifier.ClassifierConfig()
  concepts: tuple[int, ...] = (3, 8)
  arms: tuple[str, ...] = ARMS
  attacks: tuple[str, ...] = ATTACKS
  attack_targets: str = UPPER
  lora_targets: str = LORA_QKV
  scheme: str = "unrolled"
  immunize_steps: int = 200
  inner_steps: int = 3
  inner_lr: float = 0.03
  outer_lr: float = 2e-3
  lam: float = 20.0
  tau: float = 5.0
  ridge: float = 1e-3
  immunize_pool: int = 200
  concept_batch: int = 20
  pres_batch: int = 64
  pres_null_rate: float = 0.2
  attack_images: int = 20
  attack_steps: int = 300
  record_every: int = 50
  eval_steps: tuple[int, ...] = (0, 50, 100, 150, 200, 300)
  relearn_lr: float = 3e-3
  lora_lr: float = 1e-2
  lora_rank: int = 4
  sgr_step: int = 200
  samples_per_concept: int = 60
  samples_per_other: int = 15
  sample_steps: int = 20
  guidance: float = 2.0
  others_margin: float = 0.15
  chunk: int = 25
  seed: int = 0

  @classmethod
  def quick(cls) -> Config:
    # A smoke test of the whole pipeline, not a measurement (the full preset is). The token-conditional base model
    # needs thousands of steps before its cross-attention carries the digit (the full one: 4000 steps, ~12 min on
    # 2 cores; after 800 steps its samples match the prompted digit ~9 % of the time, i.e. chance), so quick trains
    # a small one (width 48, depth 2, 400 steps, its own cache entry) that does not follow the prompt either: the
    # report's preconditions then say "NO", as they should. Also no first-order MIMA arm (the full preset runs it), one
    # scan chunk per arm (a second chunk recompiles the program), 50 attack steps. Most of the remaining time is
    # XLA compilation of the immunization and attack programs.
    return cls(model=dataclasses.replace(ModelConfig(), hidden_size=48, depth=2, num_steps=400),
               arms=("erased", "imma", "mima"),
               immunize_steps=40, chunk=40, attack_steps=50, record_every=25, eval_steps=(0, 25, 50),
               sgr_step=50, samples_per_concept=40, samples_per_other=5)

  @classmethod
  def full(cls) -> Config:
    return cls()


def _validate(config: Config) -> None:
  for field, dataset in (("model.dataset", config.model.dataset), ("classifier.dataset", config.classifier.dataset)):
    if dataset not in _classifier.DATASETS:
      raise ValueError(f"{field} must be one of {_classifier.DATASETS}, got {dataset!r}")
  if config.classifier.dataset != config.model.dataset:
    raise ValueError(f"classifier.dataset={config.classifier.dataset!r} must equal model.dataset="
                     f"{config.model.dataset!r} (the evaluator scores the model's own images)")
  size = _classifier.IMAGE_SIZES[config.model.dataset]
  if size % config.model.patch_size:
    raise ValueError(f"model.patch_size={config.model.patch_size} must divide the image size {size}")
  if not config.concepts:
    raise ValueError("concepts is empty: immunize at least one concept")
  if len(set(config.concepts)) != len(config.concepts):
    raise ValueError(f"concepts must be distinct, got {config.concepts}")
  for c in config.concepts:
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < NUM_CLASSES:
      raise ValueError(f"concepts must be digit ids in [0, {NUM_CLASSES - 1}], got {config.concepts}")
  if len(config.concepts) == NUM_CLASSES:
    raise ValueError("concepts cannot hold every digit: the preservation term needs other concepts")
  for name, values, allowed in (("arms", config.arms, ALL_ARMS), ("attacks", config.attacks, ATTACKS)):
    if not values or any(v not in allowed for v in values):
      raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {values}")
  if "erased" not in config.arms:
    raise ValueError("arms must include 'erased' (the reference of the similarity gap ratio)")
  if config.scheme not in ("truncated", "unrolled"):
    raise ValueError(f"scheme must be 'truncated' or 'unrolled', got {config.scheme!r}")
  if config.attack_steps % config.record_every or any(
      s % config.record_every or not 0 <= s <= config.attack_steps for s in config.eval_steps):
    raise ValueError(f"attack_steps and eval_steps must be multiples of record_every={config.record_every} "
                     f"within [0, attack_steps]; got {config.attack_steps}, {config.eval_steps}")
  if config.sgr_step not in config.eval_steps:
    raise ValueError(f"sgr_step={config.sgr_step} must be one of eval_steps={config.eval_steps}")
  _check_targets(config)


def _param_paths(model_config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every parameter path of the base model and its shape (abstract evaluation, no compute)."""
  from jaxgen.core.lora import path_to_str

  module = build_module(model_config)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, *image_shape(model_config))),
                                              jnp.zeros((1,)), None,
                                              jnp.zeros((1, 2, model_config.context_dim))))
  return {path_to_str(p): tuple(l.shape) for p, l in jax.tree_util.tree_flatten_with_path(shapes)[0]}


def _select(paths, pattern: str, name: str) -> tuple[str, ...]:
  import re

  if not isinstance(pattern, str):
    raise ValueError(f"{name} must be a regex string over parameter paths, got {pattern!r}")
  try:
    pat = re.compile(pattern)
  except re.error as e:
    raise ValueError(f"{name}={pattern!r} is not a valid regular expression: {e}") from None
  chosen = tuple(p for p in paths if pat.search(p))
  if not chosen:
    raise ValueError(f"{name}={pattern!r} selects no parameter of the model")
  return chosen


def _check_targets(config: Config) -> None:
  """``attack_targets`` select cross-attention leaves including the K/V kernels; ``lora_rank`` fits every
  ``lora_targets`` kernel (2-D view ``[d_in, -1]``)."""
  import re

  paths = _param_paths(config.model)
  phi = _select(paths, config.attack_targets, "attack_targets")
  outside = [p for p in phi if UPPER not in p]
  if outside:
    raise ValueError(f"attack_targets={config.attack_targets!r} selects leaves outside cross-attention "
                     f"({outside[:3]}...): the immunizers' lower level lives in theta_u = {UPPER!r} leaves")
  kv = tuple(p for p in paths if re.search(KV_REGEX, p))
  if not set(kv) <= set(phi):
    raise ValueError(f"attack_targets={config.attack_targets!r} must include the K/V kernels {kv}: MIMA merges "
                     "the adapted K/V in closed form")
  if "lora" in config.attacks:
    kernels = [p for p in _select(paths, config.lora_targets, "lora_targets") if len(paths[p]) >= 2]
    if not kernels:
      raise ValueError(f"lora_targets={config.lora_targets!r} selects no kernel (>= 2-D leaf)")
    dims = {p: (paths[p][0], int(np.prod(paths[p][1:]))) for p in kernels}
    limit = min(min(d) for d in dims.values())
    if isinstance(config.lora_rank, bool) or not isinstance(config.lora_rank, (int, np.integer)) or not (
        1 <= config.lora_rank <= limit):
      raise ValueError(f"lora_rank={config.lora_rank} is incompatible with the LoRA kernels (2-D views "
                       f"{sorted(set(dims.values()))}): it must be an int in [1, {limit}]")


class _Setup(NamedTuple):
  model: TokenFlowModel
  kv_paths: tuple[str, ...]
  ctx_rows: np.ndarray          # [N, 1, d_c] the concepts' token rows (C_t of the merge)
  c_reg: np.ndarray             # [r, d_c]


def _kv_paths(params) -> tuple[str, ...]:
  from jaxgen.core.lora import path_to_str
  import re

  pat = re.compile(KV_REGEX)
  return tuple(path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
               if pat.search(path_to_str(p)))


def erase_concepts(model_config: ModelConfig, params, concepts, kv_paths, *, ridge: float = 1e-3, seed: int = 0):
  r"""Closed-form erasure: every K/V kernel is edited by :func:`mima.kv_merge` so that each concept token's
  keys/values become the null prompt's, while BOS, the null token, the spare token and every other digit token keep
  theirs exactly; 32 random unit-variance rows (plus all token rows) regularize the rest.
  """
  from jaxgen.immunization import mima

  bos, table = token_table(model_config)
  keep = [t for t in range(NUM_TOKENS) if t not in concepts]
  c_t = np.concatenate([table[list(concepts)], bos[None], table[keep]])                # [m, d]
  rng = np.random.default_rng([seed, 11])
  c_reg = np.concatenate([rng.standard_normal((32, model_config.context_dim)), table, bos[None]]).astype(np.float32)

  def edit(path, w):
    from jaxgen.core.lora import path_to_str

    if path_to_str(path) not in kv_paths:
      return w
    w2 = jnp.reshape(w, (w.shape[0], -1))
    v_t = jnp.concatenate([jnp.broadcast_to(table[NULL_TOKEN] @ w2, (len(concepts), w2.shape[1])),
                           jnp.asarray(c_t[len(concepts):]) @ w2])
    return mima.kv_merge(w2, c_reg, jnp.asarray(c_t), v_t, ridge=ridge).reshape(w.shape)

  return jax.tree_util.tree_map_with_path(edit, params), c_reg


def _losses(model: TokenFlowModel):
  """Concept (attack) and preservation losses in the (theta_u, frozen, batch, key) convention of the library."""
  from jaxgen.immunization import imma

  apply = model.module.apply
  cfg = model.config

  def velocity(params, xt, t, tokens):
    return apply(params, xt, t, None, contexts(cfg, tokens))

  def flow_loss(params, batch, key):
    return flow.flow_matching_loss(velocity, params, batch["x"], key, cond=batch["tok"])

  def concept_loss(theta_u, frozen, batch, key):
    return flow_loss(imma.combine_params(theta_u, frozen["rest"]), batch, key)

  def pres_loss(theta_u, frozen, batch, key):
    """Distillation to the erased model on other digits' images and prompts (and the null prompt)."""
    k_t, k_n = jax.random.split(key)
    x1 = batch["x"]
    t = jax.random.uniform(k_t, (x1.shape[0],))
    xt = flow.interpolate(jax.random.normal(k_n, x1.shape), x1, t)
    v = velocity(imma.combine_params(theta_u, frozen["rest"]), xt, t, batch["tok"])
    v_ref = velocity(imma.combine_params(frozen["ref_u"], frozen["rest"]), xt, t, batch["tok"])
    return jnp.mean(jnp.square(v - jax.lax.stop_gradient(v_ref)))

  return flow_loss, concept_loss, pres_loss


def _data(config: Config):
  train_x, train_y, test_x, test_y = _classifier.load_images(config.model.dataset)
  rng = np.random.default_rng([config.seed, 3])
  attack, pool = {}, {}
  for c in config.concepts:
    idx = rng.permutation(np.flatnonzero(train_y == c))
    if idx.size < config.attack_images + config.immunize_pool:
      raise ValueError(f"attack_images + immunize_pool = {config.attack_images} + {config.immunize_pool} exceeds the "
                       f"{idx.size} training images of concept {c} in {config.model.dataset}")
    attack[c] = train_x[idx[:config.attack_images]]
    pool[c] = train_x[idx[config.attack_images:config.attack_images + config.immunize_pool]]
  others = np.flatnonzero(~np.isin(train_y, config.concepts))
  pick = rng.choice(others, min(4000, others.size), replace=False)  # every other image on the 8x8 digits
  pres = {"x": train_x[pick], "y": train_y[pick]}
  test_feats_idx = {c: np.flatnonzero(test_y == c) for c in range(NUM_CLASSES)}
  return attack, pool, pres, (test_x, test_y, test_feats_idx)


@functools.lru_cache(maxsize=4)
def _sample_fn(concept_batch: int, pres_batch: int, pres_null_rate: float):
  """``data_fn(key, (pools [N, P, ...], tokens [N], pres)) -> (concept_batches [N, B, ...], pres_batch)``."""

  def data_fn(key, data):
    pools, tokens, pres = data
    num = pools.shape[0]
    keys = jax.random.split(key, num + 2)
    xs = [jnp.take(pools[i], jax.random.choice(keys[i], pools.shape[1], (concept_batch,), replace=False), axis=0)
          for i in range(num)]
    toks = jnp.broadcast_to(tokens[:, None], (num, concept_batch))
    idx = jax.random.choice(keys[-2], pres["x"].shape[0], (pres_batch,), replace=False)
    tok = jnp.take(pres["y"], idx)
    tok = jnp.where(jax.random.bernoulli(keys[-1], pres_null_rate, (pres_batch,)), NULL_TOKEN, tok)
    return {"x": jnp.stack(xs), "tok": toks}, {"x": jnp.take(pres["x"], idx, axis=0), "tok": tok}

  return data_fn


@functools.lru_cache(maxsize=4)
def _union(sample):
  """Adapt the N-concept sampler to joint IMMA: concept batch leaves ``[N, B, ...] -> [N * B, ...]`` (the union)."""
  def data_fn(key, data):
    concept_batches, pres_batch = sample(key, data)
    return jax.tree.map(lambda a: a.reshape((-1, *a.shape[2:])), concept_batches), pres_batch

  return data_fn


@functools.lru_cache(maxsize=4)
def _squeeze_first(sample):
  """Adapt the N-concept sampler to one concept: concept batch leaves ``[1, B, ...] -> [B, ...]``."""
  def data_fn(key, data):
    concept_batches, pres_batch = sample(key, data)
    return jax.tree.map(lambda a: a[0], concept_batches), pres_batch

  return data_fn


def _immunize(arm: str, config: Config, setup: _Setup, theta_u, frozen, pools, pres, key, progress):
  from jaxgen.immunization import imma, mima

  _, concept_loss, pres_loss = _losses(setup.model)
  data_pres = {"x": jnp.asarray(pres["x"]), "y": jnp.asarray(pres["y"], jnp.int32)}
  sample = _sample_fn(config.concept_batch, config.pres_batch, config.pres_null_rate)
  phi_paths = _select(_param_paths(config.model), config.attack_targets, "attack_targets")
  if arm in ("imma", "imma_joint"):
    def attack_loss(th, phi, fr, batch, k):
      return concept_loss(mima.apply_kv_delta(th, phi), fr, batch, k)

    cfg = imma.IMMAConfig(attack_loss=attack_loss, pres_loss=pres_loss, scheme=config.scheme,
                          inner_steps=config.inner_steps, inner_lr=config.inner_lr, outer_lr=config.outer_lr,
                          lam=config.lam, tau=config.tau)
    if arm == "imma_joint":  # one adapted copy on the union of every concept's batch, the whole outer budget
      data = (jnp.stack([jnp.asarray(pools[c]) for c in config.concepts]), jnp.asarray(config.concepts, jnp.int32),
              data_pres)
      return imma.imma_train(frozen, theta_u, mima.kv_delta_init(theta_u, phi_paths), _union(sample), key, cfg,
                             num_steps=config.immunize_steps, data=data, chunk=config.chunk, progress=progress,
                             desc=ARM_LABELS[arm])
    history = []
    per = max(1, config.immunize_steps // len(config.concepts))
    data_fn = _squeeze_first(sample)
    for i, c in enumerate(config.concepts):  # per-concept IMMA, applied sequentially
      phi0 = mima.kv_delta_init(theta_u, phi_paths)
      data = (jnp.asarray(pools[c])[None], jnp.asarray([c], jnp.int32), data_pres)
      theta_u, h = imma.imma_train(frozen, theta_u, phi0, data_fn, jax.random.fold_in(key, i), cfg, num_steps=per,
                                   data=data, chunk=config.chunk, progress=progress, desc=f"IMMA[{c}]")
      history += [{"concept": c, **r} for r in h]
    return theta_u, history
  cfg = mima.MIMAConfig(concept_loss=concept_loss, pres_loss=pres_loss, kv_paths=setup.kv_paths,
                        delta_paths=phi_paths,
                        scheme=config.scheme if arm == "mima" else "alternating", inner_steps=config.inner_steps,
                        inner_lr=config.inner_lr, outer_lr=config.outer_lr, lam=config.lam, tau=config.tau,
                        ridge=config.ridge)
  data = (jnp.stack([jnp.asarray(pools[c]) for c in config.concepts]), jnp.asarray(config.concepts, jnp.int32),
          data_pres)
  return mima.mima_train(frozen, theta_u, sample, key, cfg,
                         jnp.asarray(setup.ctx_rows), jnp.asarray(setup.c_reg), num_steps=config.immunize_steps,
                         data=data, chunk=config.chunk, progress=progress, desc=ARM_LABELS[arm])



def _fd(a: np.ndarray, b: np.ndarray) -> float:
  from jaxgen.core import metrics as metrics_lib

  with jax.enable_x64(True):
    return float(metrics_lib.frechet_distance(jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)))


def _evaluate(config: Config, evaluator, params, concept: int, key, test_feats) -> dict[str, float]:
  """Class accuracy and FD (to the concept's test images) of the concept's samples; accuracy of the other digits."""
  others = [c for c in range(NUM_CLASSES) if c not in config.concepts]
  tokens = np.concatenate([np.full(config.samples_per_concept, concept),
                           np.repeat(others, config.samples_per_other)]).astype(np.int32)
  images = generate(config.model, params, tokens, key, num_steps=config.sample_steps, guidance=config.guidance)
  feats, logits = evaluator.features_and_logits(images)
  pred = np.argmax(logits, -1)
  n = config.samples_per_concept
  per_other = [float(np.mean(pred[n:][tokens[n:] == c] == c)) for c in others]
  return {"acc": float(np.mean(pred[:n] == concept)), "fd": _fd(feats[:n], test_feats[concept]),
          "others_acc": float(np.mean(per_other)), "others_min": float(np.min(per_other))}


def run(config: Config, out_dir: str | Path, progress: bool = True, *, name: str = NAME, claim: str = CLAIM) -> dict:
  """The pipeline of the module docstring; ``name`` / ``claim`` label the report (the 8x8-digits setting,
  :mod:`jaxgen.experiments.immunization_digits8`, runs this same pipeline under its own name)."""
  from jaxgen.core import metrics as metrics_lib
  from jaxgen.immunization import imma

  _validate(config)
  start_time = time.perf_counter()
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  _report.write_config(out, name, config)
  writer = metrics_lib.JsonlWriter(out / "metrics.jsonl")

  evaluator = _classifier.get_evaluator(config.classifier, progress=progress)
  model = train_model(config.model, progress=progress)
  kv_paths = _kv_paths(model.params)
  erased, c_reg = erase_concepts(config.model, model.params, config.concepts, kv_paths, ridge=config.ridge,
                                 seed=config.seed)
  _, table = token_table(config.model)
  setup = _Setup(model, kv_paths, table[list(config.concepts)][:, None, :], c_reg)
  attack_x, pools, pres, (test_x, test_y, test_idx) = _data(config)
  test_feats = {c: evaluator.features_and_logits(test_x[test_idx[c][:500]])[0] for c in config.concepts}
  base_time = time.perf_counter() - start_time

  theta_e, rest = imma.split_params(erased, UPPER)
  frozen = {"rest": rest, "ref_u": theta_e}
  key = jax.random.key(config.seed)
  models, immunize_history = {"erased": erased}, {}
  for i, arm in enumerate(a for a in config.arms if a != "erased"):
    theta_u, history = _immunize(arm, config, setup, theta_e, frozen, pools, pres,
                                 jax.random.fold_in(key, 100 + ALL_ARMS.index(arm)), progress)
    models[arm] = imma.combine_params(theta_u, rest)
    immunize_history[arm] = history
    for r in history:
      writer.write({"phase": "immunize", "arm": arm, **r})
  immunize_time = time.perf_counter() - start_time - base_time

  flow_loss, _, _ = _losses(model)
  data_fn = lambda k, d: d
  curves: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = {}
  step0: dict[tuple[str, int], dict[str, float]] = {}
  total = len(config.arms) * len(config.attacks) * len(config.concepts)
  with tqdm(total=total, disable=not progress, desc="attacks", leave=False) as bar:
    for arm in config.arms:
      for attack in config.attacks:
        for c in config.concepts:
          data = {"x": jnp.asarray(attack_x[c]), "tok": jnp.full((config.attack_images,), c, jnp.int32)}
          k_att = jax.random.fold_in(key, 1000 + c)          # identical attack noise for every arm
          if attack == "relearn":
            ckpts, _ = imma.relearn_attack(models[arm], flow_loss, data_fn, data, k_att,
                                           targets=config.attack_targets,
                                           num_steps=config.attack_steps, lr=config.relearn_lr,
                                           record_every=config.record_every)
          else:
            ckpts, _ = imma.lora_attack(models[arm], flow_loss, data_fn, data, k_att, targets=config.lora_targets,
                                        rank=config.lora_rank, num_steps=config.attack_steps, lr=config.lora_lr,
                                        record_every=config.record_every)
          rows = []
          for step, params in ckpts:
            if step not in config.eval_steps:
              continue
            if step == 0:
              # Every attack starts from the released model itself (LoRA with B = 0), and the sampling key depends
              # only on the concept: step 0 is evaluated once per (arm, concept) and shared by the attacks.
              if (arm, c) not in step0:
                step0[(arm, c)] = _evaluate(config, evaluator, models[arm], c, jax.random.fold_in(key, 7 + c),
                                            test_feats)
              scores = step0[(arm, c)]
            else:
              scores = _evaluate(config, evaluator, params, c, jax.random.fold_in(key, 7 + c), test_feats)
            r = {"step": step, **scores}
            rows.append(r)
            writer.write({"phase": "attack", "arm": arm, "attack": attack, "concept": c, **r})
          curves.setdefault(arm, {}).setdefault(attack, {})[c] = rows
          bar.update(1)
  wall = time.perf_counter() - start_time
  return _finish(config, out, curves, immunize_history, evaluator, model, wall,
                 {"base_model_and_classifier_s": base_time, "immunize_s": immunize_time,
                  "attack_and_eval_s": wall - base_time - immunize_time}, name=name, claim=claim)


def _at(rows: list[dict[str, Any]], step: int, key: str) -> float:
  return next(r[key] for r in rows if r["step"] == step)


def _summaries(config: Config, curves) -> dict[str, Any]:
  """SGR / MSGR on class accuracy (spec §1.2), trajectory means and the other digits' drop."""
  out: dict[str, Any] = {}
  ref = curves["erased"]
  for arm in config.arms:
    for attack in config.attacks:
      rows_by_c = curves[arm][attack]
      sgr = {}
      for c in config.concepts:
        a_without = _at(ref[attack][c], config.sgr_step, "acc")
        a_with = _at(rows_by_c[c], config.sgr_step, "acc")
        sgr[c] = (a_without - a_with) / a_without if a_without > 0 else float("nan")
        out[f"{arm}/{attack}/acc_curve_{c}"] = [round(r["acc"], 4) for r in rows_by_c[c]]
        out[f"{arm}/{attack}/fd_curve_{c}"] = [round(r["fd"], 3) for r in rows_by_c[c]]
        out[f"{arm}/{attack}/mean_acc_{c}"] = float(np.mean([r["acc"] for r in rows_by_c[c]]))
        out[f"{arm}/{attack}/acc_at_sgr_{c}"] = float(a_with)
      if arm != "erased":
        out[f"{arm}/{attack}/sgr"] = {str(c): float(v) for c, v in sgr.items()}
        out[f"{arm}/{attack}/msgr"] = float(np.nanmean(list(sgr.values())))
      # Other digits before any attack (step 0) and after the full attack.
      first = [rows_by_c[c][0] for c in config.concepts]
      last = [rows_by_c[c][-1] for c in config.concepts]
      out[f"{arm}/{attack}/others_acc_step0"] = float(np.mean([r["others_acc"] for r in first]))
      out[f"{arm}/{attack}/others_min_step0"] = float(np.min([r["others_min"] for r in first]))
      out[f"{arm}/{attack}/others_acc_final"] = float(np.mean([r["others_acc"] for r in last]))
      # ... and while the attack re-learns the concept (at the gap ratio's step): collateral damage of the attack.
      out[f"{arm}/{attack}/others_acc_at_sgr"] = float(np.mean([_at(rows_by_c[c], config.sgr_step, "others_acc")
                                                                for c in config.concepts]))
  for arm in config.arms:
    out[f"{arm}/others_drop_vs_erased"] = float(np.mean([
        out[f"erased/{a}/others_acc_step0"] - out[f"{arm}/{a}/others_acc_step0"] for a in config.attacks]))
    out[f"{arm}/others_drop_under_attack"] = float(np.mean([
        out[f"erased/{a}/others_acc_at_sgr"] - out[f"{arm}/{a}/others_acc_at_sgr"] for a in config.attacks]))
    if arm != "erased":
      out[f"{arm}/msgr_mean_over_attacks"] = float(np.mean([out[f"{arm}/{a}/msgr"] for a in config.attacks]))
  return out


def _verdict(config: Config, s: dict[str, Any]) -> tuple[bool, list[str]]:
  """Whether the claim held, from the summaries ``s`` of :func:`_summaries` (adds its keys to ``s``).

  The similarity gap ratio of an (attack, concept) pair divides by the erased-only model's class accuracy at
  ``sgr_step``; it measures resistance only if the attack re-learns the concept on that *non-immunized* model
  (accuracy >= ``MIN_BASELINE_RELEARN_ACC``). Pairs where it does not are **void** (an immunized model has nothing to
  resist; the ratio is sampling noise — a weak attack is not immunity) and are left out of the verdict's MSGR
  (``{arm}/msgr_valid``). Preconditions, each making the verdict "not held" when it fails:

  * the base model generates the other digits (erased model, step 0: mean class accuracy >=
    ``MIN_BASE_OTHERS_ACC``): otherwise there is nothing to preserve or to lose;
  * every concept has at least one valid attack (so every immunized concept is tested).

  ``held``: preconditions, MSGR over the valid pairs >= 0.3 for the best arm (bilevel MIMA when run) and the other
  digits within ``others_margin``. Returns ``(held, lines)``, one markdown bullet per precondition for the report.
  """
  arms = [a for a in config.arms if a != "erased"]
  best = "mima" if "mima" in arms else (arms[0] if arms else None)
  base_acc = next((s[k] for k in (f"erased/{a}/others_acc_step0" for a in config.attacks) if k in s), float("nan"))
  s["base_model_others_acc"] = base_acc
  s["base_model_valid"] = bool(base_acc >= MIN_BASE_OTHERS_ACC)
  relearn = {f"{a}/{c}": s[f"erased/{a}/acc_at_sgr_{c}"] for a in config.attacks for c in config.concepts}
  valid = [(a, c) for a in config.attacks for c in config.concepts
           if relearn[f"{a}/{c}"] >= MIN_BASELINE_RELEARN_ACC]
  s["baseline_relearn_acc"] = relearn
  s["baseline_relearns"] = bool(len(valid) == len(relearn))
  s["valid_pairs"] = [f"{a}/{c}" for a, c in valid]
  s["every_concept_tested"] = bool(all(any(c == vc for _, vc in valid) for c in config.concepts))
  for arm in arms:
    sgrs = [s[f"{arm}/{a}/sgr"][str(c)] for a, c in valid]
    s[f"{arm}/msgr_valid"] = float(np.mean(sgrs)) if sgrs else float("nan")
  msgr = s.get(f"{best}/msgr_valid", float("nan")) if best else float("nan")
  drop = s.get(f"{best}/others_drop_vs_erased", float("nan")) if best else float("nan")
  held = bool(s["base_model_valid"] and s["every_concept_tested"] and best is not None and msgr >= 0.3
              and drop <= config.others_margin)
  s["held_criterion"] = (f"MSGR({best}) >= 0.3 at attack step {config.sgr_step}, averaged over the valid (attack, "
                         f"concept) pairs — those where the erased-only model re-learns the concept to class "
                         f"accuracy >= {MIN_BASELINE_RELEARN_ACC} — with every concept in at least one valid pair, "
                         f"other digits dropping <= {config.others_margin}, and a base model whose other digits "
                         f"reach class accuracy >= {MIN_BASE_OTHERS_ACC}")
  void = [k for k, v in relearn.items() if not v >= MIN_BASELINE_RELEARN_ACC]
  lines = [
      f"- Base model generates the other digits (erased model, step 0, mean class accuracy {base_acc:.3f} >= "
      f"{MIN_BASE_OTHERS_ACC}): **{'yes' if s['base_model_valid'] else 'NO'}**.",
      f"- The non-immunized (erased-only) model re-learns the concept within the attack budget (class accuracy "
      f">= {MIN_BASELINE_RELEARN_ACC} at step {config.sgr_step}; "
      + ", ".join(f"{k}: {v:.2f}" for k, v in relearn.items()) + f"): valid pairs "
      + (", ".join(s["valid_pairs"]) or "none") + ".",
  ]
  if void:
    lines.append(f"- Void (left out of the verdict's MSGR): {', '.join(f'{k} {relearn[k]:.2f}' for k in void)} — the "
                 "attack does not re-learn these even without immunization, so their gap ratios compare two models "
                 "that both fail to re-learn (sampling noise, not evidence of immunity).")
  if not s["every_concept_tested"]:
    lines.append("- Some concept has no valid attack: its immunity is untested. The claim cannot hold in this run, "
                 "whatever the MSGR.")
  if not s["base_model_valid"]:
    lines.append("- The base model does not generate the other digits: nothing to preserve or lose. The claim cannot "
                 "hold in this run, whatever the MSGR.")
  if arms:
    lines.append("- MSGR over the valid pairs: " + ", ".join(f"{a} {s[f'{a}/msgr_valid']:.2f}" for a in arms) + ".")
    lines.append(
        f"- Not part of the verdict (the margin applies before any attack, as in the spec): the other digits' class "
        f"accuracy *during* the attack, at step {config.sgr_step} (mean over attacks and concepts): "
        + ", ".join(f"{a} {np.mean([s[f'{a}/{att}/others_acc_at_sgr'] for att in config.attacks]):.2f}"
                    for a in config.arms)
        + ". A drop well below the erased-only model's means the attacked immunized model degrades as a whole, "
        "so part of its low concept accuracy is general damage rather than concept-specific resistance.")
  return held, lines


def _finish(config: Config, out: Path, curves, immunize_history, evaluator, model, wall, timing, *, name: str = NAME,
            claim: str = CLAIM) -> dict:
  s = _summaries(config, curves)
  arms = [a for a in config.arms if a != "erased"]
  steps = list(config.eval_steps)
  for attack in config.attacks:
    panels = []
    for c in config.concepts:
      panels.append({"series": {ARM_LABELS[a]: (steps, [r["acc"] for r in curves[a][attack][c]]) for a in config.arms},
                     "xlabel": "attack step", "ylabel": f"class accuracy of '{c}' samples",
                     "title": f"digit {c}: {attack} attack"})
    panels.append({"series": {ARM_LABELS[a]: (steps, [np.mean([curves[a][attack][c][i]["others_acc"]
                                                                for c in config.concepts]) for i in range(len(steps))])
                              for a in config.arms},
                   "xlabel": "attack step", "ylabel": "other digits' class accuracy", "title": "other digits"})
    _report.plot_curves(out / f"attack_curves_{attack}.png", panels,
                        title=f"{attack} attack on the immunized concepts {config.concepts}")
    _report.plot_curves(out / f"attack_fd_{attack}.png", [
        {"series": {ARM_LABELS[a]: (steps, [r["fd"] for r in curves[a][attack][c]]) for a in config.arms},
         "xlabel": "attack step", "ylabel": f"FD to test '{c}' (classifier features)", "title": f"digit {c}"}
        for c in config.concepts], title=f"{attack} attack: Fréchet distance of the concept's samples")
  plots = [f"attack_curves_{a}.png" for a in config.attacks] + [f"attack_fd_{a}.png" for a in config.attacks]
  if immunize_history:
    _report.plot_curves(out / "immunization_objective.png", [
        {"series": {ARM_LABELS[a]: ([r["step"] for r in h], [r[key] for r in h]) for a, h in immunize_history.items()},
         "xlabel": "outer step (IMMA: per concept)", "ylabel": key, "title": key}
        for key in ("concept_loss", "pres_loss")])
    plots.append("immunization_objective.png")

  held, checks = _verdict(config, s)
  mima_vs_imma, mima_vs_joint = {}, {}
  for ref, into in (("imma", mima_vs_imma), ("imma_joint", mima_vs_joint)):
    if ref in arms:
      for a in (x for x in ("mima", "mima_fo") if x in arms):
        into[a] = bool(s[f"{a}/msgr_valid"] > s[f"{ref}/msgr_valid"])
  s["mima_beats_imma"] = mima_vs_imma
  if mima_vs_joint:
    s["mima_beats_imma_joint"] = mima_vs_joint
  parts = []
  for a in arms:
    parts.append(f"{a}: MSGR " + ", ".join(f"{att} {s[f'{a}/{att}/msgr']:.2f}" for att in config.attacks)
                 + f" (over the valid pairs {s[f'{a}/msgr_valid']:.2f}), others drop "
                 f"{s[f'{a}/others_drop_vs_erased']:+.3f}")
  measured = (f"Class accuracy of the immunized digits {config.concepts} at attack step {config.sgr_step} -> "
              f"similarity gap ratios vs the erased-only model: " + "; ".join(parts) + ".")
  table = ["| model | attack | " + " | ".join(f"acc '{c}' at " + "/".join(map(str, steps)) for c in config.concepts)
           + " | MSGR | others acc (step 0) |",
           "| --- | --- | " + " | ".join("---" for _ in config.concepts) + " | ---: | ---: |"]
  for a in config.arms:
    for att in config.attacks:
      accs = " | ".join(" / ".join(f"{v:.2f}" for v in s[f"{a}/{att}/acc_curve_{c}"]) for c in config.concepts)
      msgr_a = f"{s[f'{a}/{att}/msgr']:.2f}" if a != "erased" else "-"
      table.append(f"| {ARM_LABELS[a]} | {att} | {accs} | {msgr_a} | {s[f'{a}/{att}/others_acc_step0']:.3f} |")
  verdicts = []
  for ref, table_ in (("imma", mima_vs_imma), ("imma_joint", mima_vs_joint)):
    for a, beats in table_.items():
      verdicts.append(f"- {ARM_LABELS[a]} {'beats' if beats else 'does NOT beat'} {ARM_LABELS[ref]} on MSGR over "
                      f"the valid pairs ({s[f'{a}/msgr_valid']:.3f} vs {s[f'{ref}/msgr_valid']:.3f}).")
  notes = "\n".join([
      "## Preconditions of the verdict", "", *checks, "",
      "## Attack curves", "", *table, "",
      "## MIMA vs IMMA", "",
      *(verdicts or ["- (not compared: needs an IMMA arm and a MIMA arm in the same run)"]), "",
      "## Setup and deviations from the spec", "",
      f"- Base model: tiny DiT (patch {config.model.patch_size}, width {config.model.hidden_size}, depth "
      f"{config.model.depth}) on {config.model.dataset}, conditioned only through cross-attention on the 2-token "
      f"context [BOS, E[y]] (frozen random table, d_c = {config.model.context_dim}); trained "
      f"{config.model.num_steps} steps, sampled with {config.sample_steps} Euler steps and CFG w = {config.guidance}. "
      + ("The spec's 8x8-digits toy (§1.2: 4 tokens of 4x4 pixels, width 64, 2 blocks); the DiT blocks also carry "
         "self-attention and adaLN time modulation (the spec's blocks: cross-attention + MLP only). Evaluation: a "
         "small CNN on the 8x8 digits instead of the spec's MLP oracle (same role, same pixel scale)."
         if config.model.dataset == "digits8" else
         "The issue asks for MNIST/Fashion-MNIST instead of the spec's 8x8 digits (that toy is the separate "
         "experiment immunization-digits8); the library's FlowMLP has no cross-attention, so the DiT of jaxgen.nn "
         "carries the K/V projections the merge acts on."),
      "- Erasure in closed form with the merge itself (UCE-style): concept tokens get the null prompt's keys/values "
      "exactly, every other token keeps its own exactly; the spec fine-tunes K/V for 400 steps instead.",
      f"- Immunization: theta_u = all cross-attention q/k/v/out; lower level = additive deltas on the leaves the "
      f"re-learning attack adapts (`{config.attack_targets}`), K = {config.inner_steps} "
      f"SGD steps (lr {config.inner_lr}) per concept; outer Adam {config.outer_lr}, clip 1, lambda = {config.lam}, "
      f"tau = {config.tau}; preservation = distillation to the erased model on other digits' images/prompts with "
      f"{config.pres_null_rate:.0%} null prompts. IMMA runs per concept sequentially ({config.immunize_steps} outer "
      f"steps split evenly); joint IMMA (when run: one adapted copy on the union batch, {len(config.concepts)} x "
      f"{config.concept_batch} images) and both MIMA arms run {config.immunize_steps} joint steps; bilevel scheme "
      f"'{config.scheme}' (jax.grad through the inner scans and the closed-form merge), first-order = the released "
      "alternating scheme (merged K/V written without gradient).",
      f"- Attacks per concept on {config.attack_images} held-out training images with the concept's own token: "
      f"re-learning = Adam {config.relearn_lr} on every leaf matching `{config.attack_targets}`; LoRA "
      f"personalization = rank-{config.lora_rank} LoRA (core.lora) on `{config.lora_targets}`, Adam "
      f"{config.lora_lr}. Identical attack noise for every model. "
      + ("K/V only, as the spec's attack." if config.attack_targets == KV_REGEX else
         "The spec attacks K/V only; on the MNIST model the erased-only model does not re-learn the concepts that "
         "way within 300 steps (session-4 probes, benchmarks/immunization_probes/), which would void the "
         "comparison."),
      f"- Metrics: class accuracy of {config.samples_per_concept} samples of the concept (evaluation CNN), FD of "
      f"their classifier features to the concept's test images, mean class accuracy of the other digits "
      f"({config.samples_per_other} samples each). SGR = (acc_erased - acc_immunized) / acc_erased at attack step "
      f"{config.sgr_step}; MSGR = mean over concepts.",
      "- Single seed; differences of a few points in accuracy are within sampling noise "
      f"({config.samples_per_concept} samples: binomial std up to {0.5 / np.sqrt(config.samples_per_concept):.2f}).",
  ])
  metrics = {**s, "classifier_test_accuracy": evaluator.test_accuracy,
             "base_model_final_loss": float(np.mean([r["loss"] for r in model.history if "loss" in r][-5:]))}
  return _report.finish(out, name=name, config=config, metrics=metrics, claim=claim, held=held, measured=measured,
                        plots=plots, notes=notes, wall_time_s=wall, timing=timing)
