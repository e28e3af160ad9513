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
# # Grokking at the edge of numerical stability: StableMax, ⊥Grad and Softmax Collapse
#
# Prieto, Barsbey, Mediano, Birdal, *Grokking at the Edge of Numerical Stability* (ICLR 2025). After a network fits
# its training set, cross-entropy keeps lowering the loss by scaling the logits up ("naive loss minimisation"), until
# softmax rounds to exactly one-hot in float32 — **Softmax Collapse** — and learning stops before the model
# generalises. Two fixes from the paper are in `jaxgen`: `jaxgen.stability.stablemax_cross_entropy` (a softmax
# whose "exponential" grows only linearly) and `jaxgen.optim.perp_grad` (⊥Grad: drop the gradient component along
# the weights). This notebook trains the spec's modular-addition MLP with AdamW and with ⊥AdamW.
# Set `JAXGEN_FAST=1` for a seconds-long run (what CI does).

# %% [markdown]
# **Install.** Where `jaxgen` is already importable (a checkout with `pip install -e .`, or CI) the next cell does
# nothing. On Colab ([open this notebook there](https://colab.research.google.com/) from the repository's
# `colabs/` folder) it pip-installs jaxgen from `JAXGEN_SOURCE` (this repository's pip address, e.g.
# `git+https://github.com/<owner>/jaxgen`). jaxgen accepts Colab's newer jax: on Python >= 3.12 it asks only for
# `jax>=0.10`.

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
import optax

from jaxgen import experiments, optim, stability

FAST = os.environ.get("JAXGEN_FAST") == "1"
OUT = "runs-colab"

# %% [markdown]
# ## Softmax Collapse in one line, and StableMax

# %%
logits = jnp.array([[20.0, 0.0, -1.0], [5.0, 0.0, -1.0]])
print("softmax collapsed in float32:", stability.softmax_collapse_mask(logits, jnp.float32).tolist())
print("StableMax probabilities:", stability.stablemax(logits).round(4).tolist())
labels = jnp.array([0, 0])
grad = jax.grad(lambda z: stability.stablemax_cross_entropy(z, labels).mean())(logits)
print("StableMax CE still has a gradient on the collapsed row:", float(grad[0, 0]))

# %% [markdown]
# ## ⊥Grad is an optax transform: chain it before any optimizer

# %%
params = {"w": jnp.array([1.0, 2.0])}
grads = {"w": jnp.array([2.0, 4.0])}          # parallel to w: pure "scale the weights" direction
perp = optim.perp_grad(rescale=False)
print("projected gradient:", perp.update(grads, perp.init(params), params)[0]["w"].tolist())
perp_adamw = optax.chain(optim.perp_grad(), optax.adamw(1e-2, b2=0.999, weight_decay=0.0))

# %% [markdown]
# ## Modular addition mod 113: AdamW vs ⊥AdamW (spec E2)

# %%
toy = dict(modulus=23, hidden=32, num_epochs=20, log_every=10, criterion_epoch=20)
result = experiments.reproduce("grokking", quick=True, out_dir=OUT, progress=True, **(toy if FAST else {}))
print(result["measured"])

# %%
try:
  from IPython.display import Image, display

  for name in result["plots"]:
    display(Image(filename=f"{OUT}/grokking/{name}"))
except ImportError:
  pass

# %%
print("claim held:", result["held"])
print(result["claim"])
