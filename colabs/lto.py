# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Learning to Obstruct: few-shot learning that fails on restricted classes
#
# Zheng, Yang, Yeh, *Learning to Obstruct Few-Shot Image Classification over Restricted Classes* (ECCV 2024,
# arXiv 2409.19210). `jaxgen.immunization.fsc` has four few-shot learners (ProtoNet, linear probe, fine-tune,
# MAML-like) as pure functions whose inner loops are differentiable `lax.scan`s; `jaxgen.immunization.lto` learns a
# backbone on which they fail for restricted classes and still work for the others (meta-gradient through the inner
# loop). This notebook shows the API on a toy problem, then runs the conv4 reproduction (Omniglot; MNIST in the full
# preset). Set `JAXGEN_FAST=1` for a seconds-long run (what CI does).

# %% [markdown]
# **Install.** Where `jaxgen` is already importable (a checkout with `pip install -e .`, or CI) the next cell does
# nothing. On Colab ([open this notebook there](https://colab.research.google.com/) from the repository's
# `colabs/` folder) it pip-installs jaxgen from `JAXGEN_SOURCE` (this repository's pip address, e.g.
# `git+https://github.com/<owner>/jaxgen`). jaxgen accepts Colab's newer jax: on Python >= 3.12 it asks only for
# `jax>=0.10`. Datasets are not downloaded: copy the repository's `shared/data` folder (sha256-checked) to the
# runtime and set `JAXGEN_DATA` to it.

# %%
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("jaxgen") is None:
  source = os.environ.get("JAXGEN_SOURCE", "")
  if not source:
    raise RuntimeError("jaxgen is not installed: set os.environ['JAXGEN_SOURCE'] to this repository's pip address "
                       "(e.g. 'git+https://github.com/<owner>/jaxgen') and rerun this cell")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %%
import os

import jax
import jax.numpy as jnp

from jaxgen import experiments
from jaxgen import immunization as imm

FAST = os.environ.get("JAXGEN_FAST") == "1"
OUT = "runs-colab"

# %% [markdown]
# ## The learners are pure functions of (backbone params, support set, queries)

# %%
def backbone(theta, x):                       # any apply_fn(params, x) -> features works, e.g. Conv4().apply
  return jnp.tanh(x @ theta["w"])


key_w, key_x = jax.random.split(jax.random.key(0))
theta = {"w": jax.random.normal(key_w, (5, 8))}
pool = jax.random.normal(key_x, (4, 6, 5)) + 2.0 * jax.random.normal(jax.random.key(1), (4, 1, 5))  # 4 classes
restricted = imm.restricted_mask_from_labels([0, 1], 4)
task = imm.sample_task(jax.random.key(2), pool, restricted, 2, 3)
for method in imm.METHODS:
  cfg = imm.FSCConfig(backbone, n_way=4)
  logits = imm.fsc_learner(method)(theta, task.x_support, task.y_support, task.x_obstruct, cfg)
  print(f"{method:13s} obstruct-set accuracy {float(jnp.mean(jnp.argmax(logits, -1) == task.y_obstruct)):.2f}")

# %% [markdown]
# ## One LTO outer step: ascend the restricted loss, descend the others, through the fine-tuning loop

# %%
cfg = imm.LTOConfig(fsc=imm.FSCConfig(backbone, n_way=4, steps=3, lr=0.1), method="finetune", learning_rate=1e-2)
theta_new, opt_state, metrics = jax.jit(lambda t, s: imm.lto_step(t, s, task, None, cfg))(
    theta, imm.lto_optimizer(cfg).init(theta))
print({k: round(float(v), 3) for k, v in metrics.items()})
print("DropRatio rule:", imm.format_drop_ratio(0.96, 0.94, 0.41, 0.90), "/ no other-class drop:",
      imm.format_drop_ratio(0.75, 0.82, 0.24, 0.85))

# %% [markdown]
# ## The reproduction: conv4 on Omniglot, before / after obstruction, four attackers

# %%
toy = dict(datasets=("mnist",), image_size=16, features=8, pretrain_steps=25, mnist_pretrain_size=500,
           mnist_pool_per_class=10, mnist_test_per_class=5, def_steps=1, def_shots=2, obstruct_shots=2, outer_steps=10,
           k_shot=2, eval_reps=1, attack_steps=(5, 2, 2))
result = experiments.reproduce("lto", quick=True, out_dir=OUT, progress=True, **(toy if FAST else {}))
print(result["measured"])

# %%
try:
  from IPython.display import Image, display

  for name in result["plots"]:
    display(Image(filename=f"{OUT}/lto/{name}"))
except ImportError:
  pass

# %%
print("claim held:", result["held"])
print(result["claim"])
