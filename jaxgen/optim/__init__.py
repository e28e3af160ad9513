"""Optimizers as optax ``GradientTransformation`` s: SPAM and Stable-SPAM.

* :func:`spam` / :func:`scale_by_spam` — SPAM (Huang et al., ICLR 2025, arXiv 2501.06842).
* :func:`stable_spam` / :func:`scale_by_stable_spam` — Stable-SPAM (Huang et al. 2025, arXiv 2502.17055), plus
  :func:`stable_spam_diagnostics` for clip fractions and pre/post-AdaGN norms, :func:`stable_spam_moments`.
* :func:`perp_grad` — ⊥Grad (Prieto et al., ICLR 2025, arXiv 2501.04697): chain it before any optimizer.
"""

from jaxgen.optim.perp_grad import perp_grad
from jaxgen.optim.spam import SpamState, scale_by_spam, spam
from jaxgen.optim.stable_spam import (
    StableSpamState,
    scale_by_stable_spam,
    stable_spam,
    stable_spam_diagnostics,
    stable_spam_moments,
)

__all__ = [
    "SpamState",
    "StableSpamState",
    "perp_grad",
    "scale_by_spam",
    "scale_by_stable_spam",
    "spam",
    "stable_spam",
    "stable_spam_diagnostics",
    "stable_spam_moments",
]
