"""Numerical and dynamical stability of training.

* :mod:`~jaxgen.stability.stablemax` — StableMax and its cross-entropy (Prieto et al., ICLR 2025, arXiv 2501.04697).
* :mod:`~jaxgen.stability.softmax_collapse` — the Softmax-Collapse metrics of the same paper.
* :mod:`~jaxgen.stability.sharpness` — Hessian-vector products, Hutchinson trace and Frobenius estimates, power
  iteration and Lanczos for the top eigenvalue, Gauss-Newton traces and the GD / SGD linear-stability conditions
  (Wu & Su, ICML 2023, arXiv 2305.17490).

The ⊥Grad optimizer transform of Prieto et al. lives with the other optax transforms: :func:`jaxgen.optim.perp_grad`.
"""

from jaxgen.stability.sharpness import (
    LanczosResult,
    exact_hessian_trace,
    gauss_newton_trace,
    gd_linear_stable,
    hessian_trace,
    hutchinson_frobenius_sq,
    hutchinson_trace,
    hvp,
    lanczos,
    sgd_linear_stable,
    stability_report,
    top_eigenvalue,
    top_hessian_eigenvalue,
)
from jaxgen.stability.softmax_collapse import softmax_collapse_fraction, softmax_collapse_mask, zero_loss_fraction
from jaxgen.stability.stablemax import (
    log_stablemax,
    stablemax,
    stablemax_cross_entropy,
    stablemax_log_s,
    stablemax_s,
)

__all__ = [
    "LanczosResult",
    "exact_hessian_trace",
    "gauss_newton_trace",
    "gd_linear_stable",
    "hessian_trace",
    "hutchinson_frobenius_sq",
    "hutchinson_trace",
    "hvp",
    "lanczos",
    "log_stablemax",
    "sgd_linear_stable",
    "softmax_collapse_fraction",
    "softmax_collapse_mask",
    "stability_report",
    "stablemax",
    "stablemax_cross_entropy",
    "stablemax_log_s",
    "stablemax_s",
    "top_eigenvalue",
    "top_hessian_eigenvalue",
    "zero_loss_fraction",
]
