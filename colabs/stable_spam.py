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
# # Stable-SPAM: training in 4-bit more stably than 16-bit Adam
#
# Huang et al., *Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam* (2025); baseline SPAM (Huang et
# al., ICLR 2025). Both are optax `GradientTransformation`s in `jaxgen.optim`; `jaxgen.core.quant` fake-quantizes
# every Dense layer of a Flax model to INT4 / FP4 with straight-through gradients. This notebook trains a tiny LLaMA
# on character-level tiny Shakespeare with Adam, SPAM and Stable-SPAM in full precision and in INT4, and plots the
# curves. Set `JAXGEN_FAST=1` for a seconds-long run (what CI does).

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
import optax

from jaxgen import experiments, optim

FAST = os.environ.get("JAXGEN_FAST") == "1"
OUT = "runs-colab"

# %% [markdown]
# ## The optimizers are ordinary optax transforms

# %%
params = {"w": jnp.ones((4, 4))}
tx = optim.stable_spam(optax.cosine_decay_schedule(1e-3, 1000), total_steps=1000, weight_decay=0.1)
state = tx.init(params)
spiky = {"w": jnp.full((4, 4), 1e3)}  # a gradient spike: Stable-SPAM's adaptive clipping and normalisation damp it
updates, state = tx.update(spiky, state, params)
print("update norm after a 1e3 gradient spike:", float(optax.tree.norm(updates)))
bad = {"w": jnp.full((4, 4), jnp.nan)}
updates, state2 = tx.update(bad, state, params)
print("a NaN gradient gives a zero update:", float(optax.tree.norm(updates)) == 0.0)

# %% [markdown]
# ## Tiny LLaMA on tiny Shakespeare: Adam vs SPAM vs Stable-SPAM, fp32 vs INT4

# %%
toy = dict(d_model=16, num_layers=1, num_heads=2, mlp_dim=32, context=16, batch_size=4, num_steps=20, eval_every=10,
           eval_batches=1, group_size=64, reset_interval=10, spam_warmup_steps=3, spam_clip_delay=2, spike_window=5)
result = experiments.reproduce("stable-spam", quick=True, out_dir=OUT, progress=True, **(toy if FAST else {}))
print(result["measured"])

# %%
try:
  from IPython.display import Image, display

  for name in result["plots"]:
    display(Image(filename=f"{OUT}/stable-spam/{name}"))
except ImportError:
  pass

# %%
print("claim held:", result["held"])
print(result["claim"])
