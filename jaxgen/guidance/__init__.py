"""Guided sampling for flow-matching models: classifier-free guidance rules as velocity combinators.

* :mod:`jaxgen.guidance.cfg` — plain CFG (``w = 1`` is conditional only), the rule table and the generic
  guided sampler :func:`guided_sample` that runs every rule on every :mod:`jaxgen.core.ode` solver.
* :mod:`jaxgen.guidance.cfg_zero_star` — CFG-Zero* (Fan et al., arXiv 2503.18886): optimized scale
  :math:`s^*` and zero-init.
* :mod:`jaxgen.guidance.gmm` — exact velocity of the flow from N(0, I) to a Gaussian mixture (the paper's
  analytic study), plus exact mixture / per-class samples.
"""

from jaxgen.guidance.cfg import (
    RULES,
    StepVelocityFn,
    VelocityFn,
    cfg_combine,
    class_conditional_velocities,
    guided_sample,
    guided_velocity,
    ho_salimans_to_w,
    w_to_ho_salimans,
)
from jaxgen.guidance.cfg_zero_star import (
    DEFAULT_EPS,
    cfg_zero_star_combine,
    num_zero_steps_from_reference,
    optimized_scale,
    zero_init_mask,
)
from jaxgen.guidance.gmm import (
    circle_gmm,
    gmm_class_velocity,
    gmm_component_velocity,
    gmm_log_posterior,
    gmm_posterior,
    gmm_sample,
    gmm_velocity,
)

__all__ = [
    "DEFAULT_EPS",
    "RULES",
    "StepVelocityFn",
    "VelocityFn",
    "cfg_combine",
    "cfg_zero_star_combine",
    "circle_gmm",
    "class_conditional_velocities",
    "gmm_class_velocity",
    "gmm_component_velocity",
    "gmm_log_posterior",
    "gmm_posterior",
    "gmm_sample",
    "gmm_velocity",
    "guided_sample",
    "guided_velocity",
    "ho_salimans_to_w",
    "num_zero_steps_from_reference",
    "optimized_scale",
    "w_to_ho_salimans",
    "zero_init_mask",
]
