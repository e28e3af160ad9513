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
# # CFG-Zero*: optimized-scale guidance and zero-init for flow models
#
# Fan et al., *CFG-Zero\*: Improved Classifier-Free Guidance for Flow Matching Models* (2025, arXiv:2503.18886).
# Guidance rules are velocity combinators: `s* = <v_c, v_u> / ||v_u||^2` rescales the unconditional branch, and
# zero-init sets the velocity of the first sampler step(s) to 0. This notebook (1) shows the rules on an exact
# Gaussian-mixture flow and (2) compares them on a trained MNIST flow model. Set `JAXGEN_FAST=1` for a
# seconds-long run (what CI does).

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

from jaxgen import experiments, guidance
from jaxgen.core import ode

FAST = os.environ.get("JAXGEN_FAST") == "1"
OUT = "runs-colab"

# %% [markdown]
# ## The functional API in a few lines

# %%
means, stds, weights = guidance.circle_gmm(8, radius=4.0, std=0.5)
labels = jnp.arange(512) % 8
x0 = jax.random.normal(jax.random.key(0), (512, 2))


def v_cond(t, x):
  return guidance.gmm_class_velocity(x, t, means, stds, labels)


def v_uncond(t, x):
  return 1.6 * guidance.gmm_velocity(x, t, means, stds, weights)  # a mis-scaled unconditional branch


ts = ode.uniform_grid(20)
for rule in ("cfg", "cfg-zero-star"):
  x1 = guidance.guided_sample(v_cond, v_uncond, x0, ts, rule=rule, w=3.0, num_zero_steps=1)
  dist = jnp.linalg.norm(x1 - means[labels], axis=1).mean()
  print(f"{rule:>14}: mean distance to the class mean {float(dist):.2f} (true samples: about 0.63)")

# %% [markdown]
# ## 1. Exact Gaussian-mixture flow (spec experiments E1, E2, E5)

# %%
gmm_overrides = dict(num_samples=400, ed_samples=200, num_seeds=1, bias_sweep=(0.0, 3.0)) if FAST else {}
gmm = experiments.reproduce("cfg-zero-star-gmm", quick=True, out_dir=OUT, progress=True, **gmm_overrides)
print(gmm["measured"])

# %%
try:
  from IPython.display import Image, display

  display(Image(filename=f"{OUT}/cfg-zero-star-gmm/gmm_samples.png"))
  display(Image(filename=f"{OUT}/cfg-zero-star-gmm/zero_init_turning_point.png"))
except ImportError:
  pass

# %% [markdown]
# ## 2. A trained class-conditional flow model on MNIST (early and final checkpoints)

# %%
if FAST:
  from jaxgen.experiments import _classifier, _flow_models

  real_overrides = dict(
      model=_flow_models.FlowModelConfig(width=32, depth=1, num_steps=20, checkpoint_every=10, batch_size=32),
      classifier=_classifier.ClassifierConfig(channels=(4, 8), feature_dim=16, num_steps=30, batch_size=32),
      early_step=10, sample_steps=(4,), ws=(1.0, 3.0), samples_per_class=3)
else:
  real_overrides = {}
real = experiments.reproduce("cfg-zero-star", quick=True, out_dir=OUT, progress=True, **real_overrides)
print(real["measured"])

# %%
try:
  from IPython.display import Image, display

  for name in real["plots"]:
    display(Image(filename=f"{OUT}/cfg-zero-star/{name}"))
except ImportError:
  pass

# %%
print(f"{'checkpoint':<10} {'rule':<16} {'w':>4} {'FD':>9} {'accuracy':>9}")
for row in real["metrics"]["rows"]:
  print(f"{row['checkpoint']:<10} {row['rule']:<16} {row['w']:>4} {row['fd']:9.2f} {row['class_accuracy']:9.3f}")
print("claims held:", {"gmm": gmm["held"], "mnist": real["held"]})
