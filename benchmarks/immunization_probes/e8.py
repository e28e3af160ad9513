"""Probe 4 (session 5): is the full preset's resistance a trap that a more careful attacker avoids?

Rebuilds the full preset's seed-0 erased / IMMA / MIMA (bilevel) models exactly as `run` does (same keys), then
re-learns each concept (every cross-attention leaf, 20 images, 300 steps, the preset's attack noise) with three
attackers: Adam 3e-3 (the preset's), Adam 1e-3, and Adam 3e-3 after a 100-step linear warm-up. Scores class accuracy
of 60 samples of the concept (the preset's sampling key) and the other digits (15 each) at steps 100/200/300.
Log: benchmarks/results/immunization_probes/probe4_log.jsonl.   JAXGEN_CACHE=DIR python3 <this file>
"""
import json, time
import jax, jax.numpy as jnp, numpy as np, optax
from jaxgen.experiments import immunization as exp, _classifier
from jaxgen.immunization import imma

T0 = time.time()
LOG = open("benchmarks/results/immunization_probes/probe4_log.jsonl", "a")
config = exp.Config.full()
ev = _classifier.get_evaluator(config.classifier, progress=False)
model = exp.train_model(config.model, progress=False)
kv = exp._kv_paths(model.params)
erased, c_reg = exp.erase_concepts(config.model, model.params, config.concepts, kv, ridge=config.ridge, seed=config.seed)
_, table = exp.token_table(config.model)
setup = exp._Setup(model, kv, table[list(config.concepts)][:, None, :], c_reg)
attack_x, pools, pres, _ = exp._data(config)
theta_e, rest = imma.split_params(erased, exp.UPPER)
frozen = {"rest": rest, "ref_u": theta_e}
key = jax.random.key(config.seed)
models = {"erased": erased}
for arm in ("imma", "mima"):
  th, _ = exp._immunize(arm, config, setup, theta_e, frozen, pools, pres, jax.random.fold_in(key, 100 + exp.ARMS.index(arm)),
                        False)
  models[arm] = imma.combine_params(th, rest)
flow_loss, _, _ = exp._losses(model)
OTH = [d for d in range(10) if d not in config.concepts]


def score(params, c):
  toks = np.concatenate([np.full(60, c), np.repeat(OTH, 15)]).astype(np.int32)
  img = exp.generate(config.model, params, toks, jax.random.fold_in(key, 7 + c))
  pred = np.argmax(ev.features_and_logits(img)[1], -1)
  return round(float(np.mean(pred[:60] == c)), 3), round(float(np.mean(pred[60:] == toks[60:])), 3)


def attack(params, c, schedule):
  trainable, fixed = imma.split_params(params, config.attack_targets)
  opt = optax.adam(schedule)
  data = {"x": jnp.asarray(attack_x[c]), "tok": jnp.full((config.attack_images,), c, jnp.int32)}
  k_att = jax.random.fold_in(key, 1000 + c)

  @jax.jit
  def segment(tr, st, start):
    def body(carry, i):
      tr, st = carry
      loss, g = jax.value_and_grad(lambda t: flow_loss(imma.combine_params(t, fixed), data, jax.random.fold_in(k_att, i)))(tr)
      u, st = opt.update(g, st, tr)
      return (optax.apply_updates(tr, u), st), loss
    (tr, st), losses = jax.lax.scan(body, (tr, st), start + jnp.arange(100))
    return tr, st, losses

  st = opt.init(trainable)
  out = {}
  for start in (0, 100, 200):
    trainable, st, _ = segment(trainable, st, jnp.int32(start))
    out[start + 100] = score(imma.combine_params(trainable, fixed), c)
  return out


ATTACKERS = {"adam3e-3": 3e-3, "adam1e-3": 1e-3,
             "adam3e-3_warmup100": optax.linear_schedule(0.0, 3e-3, 100)}
for name, sched in ATTACKERS.items():
  for arm, params in models.items():
    for c in config.concepts:
      res = attack(params, c, sched)
      row = {"attacker": name, "arm": arm, "concept": c, "acc": {s: v[0] for s, v in res.items()},
             "others": {s: v[1] for s, v in res.items()}, "t": round(time.time() - T0, 1)}
      print(json.dumps(row), flush=True)
      LOG.write(json.dumps(row) + "\n"); LOG.flush()
