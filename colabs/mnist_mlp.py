# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
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

# %%
# On Colab: !pip install -q "jaxgen @ git+<this repository>"  (datasets: set JAXGEN_DATA to a copy of shared/data)
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
