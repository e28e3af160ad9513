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
# # The implicit regularisation of dynamical stability: SGD vs GD
#
# Wu & Su, *The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent* (ICML 2023). A
# minimum that gradient descent can stay at needs λ_max(H) ≤ 2/η; one that single-sample SGD can stay at needs the
# much stronger tr(H) ≤ 2/η. On a diagonal linear network tr(H) bounds a weighted ℓ1 norm of the predictor, so
# larger learning rates make SGD (but not GD) find sparser solutions that generalise better. `jaxgen.stability`
# provides the sharpness tools (Hessian-vector products, Hutchinson trace, power iteration, Lanczos, Gauss-Newton
# trace). Set `JAXGEN_FAST=1` for a seconds-long run (what CI does).

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

from jaxgen import experiments, stability

FAST = os.environ.get("JAXGEN_FAST") == "1"
OUT = "runs-colab"

# %% [markdown]
# ## Sharpness tools on a quadratic with known spectrum

# %%
a = jnp.diag(jnp.array([4.0, 2.0, 1.0, 0.5]))
loss = lambda p: 0.5 * p @ (a @ p)  # noqa: E731
p0 = jnp.ones(4)
print("Hutchinson trace:", float(stability.hessian_trace(loss, p0, jax.random.key(0), num_samples=16)), "(exact 7.5)")
print("power iteration:", float(stability.top_hessian_eigenvalue(loss, p0, jax.random.key(1))), "(exact 4)")
report = stability.stability_report(lambda p, _: loss(p), p0, None, lr=0.4)
print("eta = 0.4: GD stable", bool(report["gd_stable"]), "| SGD trace condition", bool(report["sgd_trace_stable"]))

# %% [markdown]
# ## Diagonal linear network: SGD vs GD over the learning rate (spec E3)

# %%
toy = dict(dim=20, num_train=8, num_test=200, learning_rates=(0.01, 0.05, 0.1), num_steps=2000, log_every=500,
           min_converged=1)
result = experiments.reproduce("sgd-stability", quick=True, out_dir=OUT, progress=True, **(toy if FAST else {}))
print(result["measured"])

# %%
try:
  from IPython.display import Image, display

  for name in result["plots"]:
    display(Image(filename=f"{OUT}/sgd-stability/{name}"))
except ImportError:
  pass

# %%
print("claim held:", result["held"])
print(result["claim"])
