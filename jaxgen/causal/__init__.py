"""Causal structure learning.

* CoLiDE (Saboksayr, Mateos, Tepper, ICLR 2024, arXiv 2310.02895): :func:`colide_fit` (EV and NV), its pure core
  :func:`colide_solve`, the scores :func:`ev_score`, :func:`nv_score`, :func:`ls_score`, the closed-form scales
  :func:`ev_sigma`, :func:`nv_sigma` and DAGMA's log-det acyclicity :func:`logdet_acyclicity` (module
  :mod:`jaxgen.causal.colide`).
* DAGMA-style baseline on the same engine: :func:`dagma_linear_fit` (module :mod:`jaxgen.causal.dagma`).
* Linear-SEM utilities: :func:`random_dag`, :func:`sample_linear_sem`, :func:`nv_noise_variances`,
  :func:`threshold_to_dag`, :func:`is_dag`, :func:`graph_metrics` (module :mod:`jaxgen.causal._sem`).
"""

from jaxgen.causal._sem import (
    GRAPH_KINDS,
    NOISE_KINDS,
    graph_metrics,
    is_dag,
    nv_noise_variances,
    random_dag,
    sample_linear_sem,
    threshold_to_dag,
)
from jaxgen.causal.colide import (
    STATUS_NAMES,
    CoLiDEConfig,
    FitResult,
    SolveResult,
    SubproblemInfo,
    admissible,
    colide_fit,
    colide_solve,
    covariance,
    ev_score,
    ev_score_grad,
    ev_sigma,
    logdet_acyclicity,
    logdet_acyclicity_grad,
    ls_score,
    ls_score_grad,
    nv_score,
    nv_score_grad,
    nv_sigma,
)
from jaxgen.causal.dagma import dagma_linear_fit, dagma_linear_solve

__all__ = [
    "GRAPH_KINDS",
    "NOISE_KINDS",
    "STATUS_NAMES",
    "CoLiDEConfig",
    "FitResult",
    "SolveResult",
    "SubproblemInfo",
    "admissible",
    "colide_fit",
    "colide_solve",
    "covariance",
    "dagma_linear_fit",
    "dagma_linear_solve",
    "ev_score",
    "ev_score_grad",
    "ev_sigma",
    "graph_metrics",
    "is_dag",
    "logdet_acyclicity",
    "logdet_acyclicity_grad",
    "ls_score",
    "ls_score_grad",
    "nv_noise_variances",
    "nv_score",
    "nv_score_grad",
    "nv_sigma",
    "random_dag",
    "sample_linear_sem",
    "threshold_to_dag",
]
