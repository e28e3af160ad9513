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
# # Model immunization: IMMA and MIMA (differentiable model merging)
#
# Zheng & Yeh, *IMMA: Immunizing text-to-image Models against Malicious Adaptation* (ECCV 2024) and *Multi-concept
# Model Immunization through Differentiable Model Merging* (MIMA, AAAI 2025). An immunized model is edited so that
# an attacker who fine-tunes it on a concept (re-learning, LoRA personalization) learns that concept slowly.
# MIMA immunizes several concepts at once: each concept gets its own adapted copy of the cross-attention key/value
# projections, the copies are merged by a closed-form constrained least-squares solve, and the outer gradient
# flows through the inner loops *and* the merge. This notebook shows the merge and runs the experiment on the
# spec's own toy, a tiny token-conditional flow model of the 8x8 handwritten digits (shipped with jaxgen; about
# 2-3 minutes on 2 CPU cores). Set `JAXGEN_FAST=1` for a short run (what CI does).

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
import numpy as np

from jaxgen import experiments
from jaxgen.immunization import mima

FAST = os.environ.get("JAXGEN_FAST") == "1"
OUT = "runs-colab"

# %% [markdown]
# ## The merge is a differentiable closed form
#
# `W* = W + D (C_t D)^{-1} (V_t - C_t W)`, `D = (C_reg^T C_reg + rho I)^{-1} C_t^T`: the target context rows `C_t`
# of every concept get exactly the outputs of that concept's adapted copy, the regularization rows `C_reg` change
# as little as possible.

# %%
rng = np.random.default_rng(0)
d, out = 16, 8
w0 = jnp.asarray(rng.normal(size=(d, out)), jnp.float32)
c_reg = jnp.asarray(rng.normal(size=(64, d)), jnp.float32)
contexts = [jnp.asarray(rng.normal(size=(2, d)), jnp.float32) for _ in range(3)]   # 3 concepts, 2 rows each
adapted = [w0 + 0.1 * jnp.asarray(rng.normal(size=(d, out)), jnp.float32) for _ in range(3)]
merged = mima.kv_merge_from_weights(w0, c_reg, contexts, adapted)
for n in range(3):
  err = float(jnp.abs(contexts[n] @ merged - contexts[n] @ adapted[n]).max())
  print(f"concept {n}: max |C_n W* - C_n W'_n| = {err:.2e}")
grad = jax.grad(lambda w: jnp.sum(mima.kv_merge_from_weights(w0, c_reg, contexts, [w, *adapted[1:]]) ** 2))(adapted[0])
print("gradient through the merge, norm:", float(jnp.linalg.norm(grad)))

# %% [markdown]
# ## Immunize, attack, measure
#
# Base model -> closed-form erasure of digits 3 and 8 -> IMMA (per concept) / MIMA (bilevel, gradient through the
# merge) -> re-learning and LoRA attacks on the cross-attention keys/values -> class accuracy of the attacked
# model's samples per attack step. The quick preset trains a 2000-step base model; the full preset
# (`quick=False`, ~5 minutes) adds joint IMMA and the released first-order MIMA scheme and runs 300 attack steps.
# The same study on MNIST is `experiments.reproduce("immunization", quick=False)` (a larger model: ~12 minutes to
# train the base model, ~10 minutes per run).

# %%
NAME = "immunization-digits8"
tiny = {"model.hidden_size": 16, "model.num_steps": 10, "classifier.num_steps": 10, "arms": ("erased", "mima"),
        "attacks": ("lora",), "immunize_steps": 4, "attack_steps": 4, "record_every": 2, "eval_steps": (0, 2, 4),
        "sgr_step": 2, "samples_per_concept": 8, "samples_per_other": 2, "chunk": 2, "sample_steps": 2}
result = experiments.reproduce(NAME, quick=True, out_dir=OUT, progress=True, **(tiny if FAST else {}))
print(result["measured"])

# %%
try:
  from IPython.display import Image, display

  for name in result["plots"]:
    display(Image(filename=f"{OUT}/{NAME}/{name}"))
except ImportError:
  pass

# %%
print("claim held:", result["held"])
print(result["claim"])
