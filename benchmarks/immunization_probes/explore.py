"""Exploration for issue 8: erased-only attack strength and IMMA collateral damage (2000-step base model)."""
import dataclasses, json, sys, time
import jax, jax.numpy as jnp, numpy as np
from jaxgen.experiments import immunization as exp, _classifier
from jaxgen.immunization import imma

T0 = time.time()
CFG = dataclasses.replace(exp.Config.full(), model=dataclasses.replace(exp.ModelConfig(), num_steps=int(__import__("os").environ.get("MODEL_STEPS", "4000"))))
ev = _classifier.get_evaluator(CFG.classifier, progress=False)
model = exp.train_model(CFG.model, progress=False)
kv = exp._kv_paths(model.params)
erased, c_reg = exp.erase_concepts(CFG.model, model.params, CFG.concepts, kv, ridge=CFG.ridge, seed=CFG.seed)
attack_x, pools, pres, (test_x, test_y, test_idx) = exp._data(dataclasses.replace(CFG, attack_images=200))
flow_loss, _, _ = exp._losses(model)
key = jax.random.key(0)
LOG = open(__import__("os").environ.get("PROBE_LOG", "benchmarks/results/immunization_probes/probe1_log.jsonl"), "a")

def log(**kw):
  kw["t"] = round(time.time() - T0, 1)
  print(json.dumps(kw), flush=True)
  LOG.write(json.dumps(kw) + "\n"); LOG.flush()

def acc(params, digit, n=60, seed=0):
  toks = np.full(n, digit, np.int32)
  img = exp.generate(CFG.model, params, toks, jax.random.fold_in(key, 7 + digit + 100 * seed))
  _, logits = ev.features_and_logits(img)
  return float(np.mean(np.argmax(logits, -1) == digit))

def per_digit(params, n=30):
  toks = np.repeat(np.arange(10), n).astype(np.int32)
  img = exp.generate(CFG.model, params, toks, jax.random.fold_in(key, 3))
  _, logits = ev.features_and_logits(img)
  pred = np.argmax(logits, -1)
  return [round(float(np.mean(pred[toks == d] == d)), 3) for d in range(10)]

def attack(params, c, kind, lr, steps=200, n_img=20, rank=4, record=50, targets=exp.KV_REGEX):
  data = {"x": jnp.asarray(attack_x[c][:n_img]), "tok": jnp.full((n_img,), c, jnp.int32)}
  k = jax.random.fold_in(key, 1000 + c)
  if kind == "relearn":
    ck, losses = imma.relearn_attack(params, flow_loss, lambda k, d: d, data, k, targets=targets, num_steps=steps,
                                     lr=lr, record_every=record)
  else:
    ck, losses = imma.lora_attack(params, flow_loss, lambda k, d: d, data, k, targets=targets, rank=rank,
                                  num_steps=steps, lr=lr, record_every=record)
  return ck, losses
