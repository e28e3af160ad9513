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
# # CoLiDE: concomitant linear DAG estimation
#
# Saboksayr, Mateos, Tepper, *CoLiDE: Concomitant Linear DAG Estimation* (ICLR 2024). CoLiDE learns a linear SEM
# `X = X W + Z` by minimising a convex *concomitant* score, which estimates the noise scale `sigma` jointly with `W`,
# plus DAGMA's log-det acyclicity `h(W, s) = -log det(sI - W o W) + d log s`. Because the data fit is divided by
# `sigma`, one L1 weight `lambda` works across noise levels. `jaxgen.causal` runs the whole path (Adam steps,
# closed-form `sigma`, domain guard, convergence checks) as one jitted JAX call. Set `JAXGEN_FAST=1` for a
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
import numpy as np

from jaxgen import causal, experiments

jax.config.update("jax_enable_x64", True)  # the reference code is float64
FAST = os.environ.get("JAXGEN_FAST") == "1"
OUT = "runs-colide"

# %% [markdown]
# ## One graph, three estimators
# An ER graph with 4 expected edges per node, Gaussian noise of variance 10: CoLiDE-EV estimates the common noise
# std (about sqrt(10) = 3.16); DAGMA's least-squares score has no scale, so its fixed `lambda` is relatively weaker.

# %%
d, n = (8, 300) if FAST else (20, 1000)
cfg = (causal.CoLiDEConfig(s_schedule=(1.0, 0.9), warm_iters=500, final_iters=1000, check_every=100) if FAST
       else causal.CoLiDEConfig())
k_graph, k_noise = jax.random.split(jax.random.key(0))
W_true = causal.random_dag(k_graph, d, 4 * d, "er")
X = np.asarray(causal.sample_linear_sem(k_noise, W_true, n, "gaussian", 10.0))
fits = {"DAGMA": causal.dagma_linear_fit(X, cfg), "CoLiDE-EV": causal.colide_fit(X, cfg, "ev"),
        "CoLiDE-NV": causal.colide_fit(X, cfg, "nv")}
print(f"{'method':10s} {'SHD':>4s} {'TPR':>5s} {'FDR':>5s}  sigma")
for name, fit in fits.items():
  m = causal.graph_metrics(W_true, fit.W_dag)
  sigma = np.round(np.atleast_1d(np.asarray(fit.sigma))[:3], 2)
  print(f"{name:10s} {m['shd']:4d} {m['tpr']:5.2f} {m['fdr']:5.2f}  {sigma}")

# %% [markdown]
# ## The reproduction: SHD vs noise level, heteroscedastic ER/SF graphs, Sachs
# `jaxgen reproduce colide` runs the same experiment from the command line.

# %%
toy = dict(n=200, noise_d=6, noise_variances=(1.0, 10.0), graph_kinds=("er",), graph_sizes=(6,), num_seeds=1,
           sachs=False, s_schedule=(1.0, 0.9), warm_iters=300, final_iters=500, check_every=100)
result = experiments.reproduce("colide", quick=True, out_dir=OUT, progress=True, **(toy if FAST else {}))
print(result["measured"])

# %%
try:
  from IPython.display import Image, display

  for name in result["plots"]:
    display(Image(filename=f"{OUT}/colide/{name}"))
except ImportError:
  pass

# %%
print("claim held:", result["held"])
print(result["claim"])
