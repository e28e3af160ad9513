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
# # jaxgen template: an MLP on MNIST
#
# The pattern every paper colab follows: install, run the registered experiment (the same code as
# `jaxgen reproduce mnist-mlp`), look at the plot, print the numbers. Set `JAXGEN_FAST=1` for a seconds-long run.

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
import json
import os

from jaxgen import experiments

FAST = os.environ.get("JAXGEN_FAST") == "1"
overrides = {"num_steps": 100, "eval_every": 50, "checkpoint_every": 50} if FAST else {}
result = experiments.reproduce("mnist-mlp", quick=True, out_dir="runs-colab", progress=True, **overrides)

# %%
try:
  from IPython.display import Image, display

  display(Image(filename="runs-colab/mnist-mlp/loss_curve.png"))
except ImportError:
  pass

# %%
print(f"{'metric':<22} value")
for key, value in result["metrics"].items():
  print(f"{key:<22} {value}")
print("claim held:", result["held"])
print(json.dumps({"claim": result["claim"]}, indent=1))
