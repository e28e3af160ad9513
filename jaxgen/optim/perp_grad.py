r"""⊥Grad: keep only the gradient component orthogonal to the weights (an optax transform).

Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability", ICLR 2025, arXiv 2501.04697
(https://arxiv.org/abs/2501.04697), Sec. 5 (Eq. 10); official code
github.com/LucasPrietoAl/grokking-at-the-edge-of-numerical-stability @ 0cc9e8d, ``orthograd.py::OrthoGrad``.

Per pytree leaf, with :math:`w` the current parameter and :math:`g` its gradient (both flattened over the whole
tensor):

.. math::
   g_\perp = g - \frac{w \cdot g}{w \cdot w + \epsilon_0}\, w, \qquad \epsilon_0 = 10^{-30}
   \quad \text{(paper Eq. 10)},

and the reference code additionally rescales to the original norm (``rescale=True``, the default):

.. math:: g_{out} = g_\perp\, \frac{\|g\|_2}{\|g_\perp\|_2 + \epsilon_0}.

Any optimizer then consumes :math:`g_{out}` (paper: ⊥AdamW, ⊥SGD), e.g.
``optax.chain(perp_grad(), optax.adamw(1e-2))``. Rationale: after the training set is fit, the cross-entropy
gradient aligns with the weights ("naïve loss minimisation": scaling the logits up lowers the loss without changing
the predictions) and drives the logits towards Softmax Collapse; removing the radial component keeps
:math:`\|w\|` constant to first order under gradient flow and leaves only directions that change the function.

Pitfall (documented in the spec): when :math:`g` is (nearly) parallel to :math:`w`, :math:`g_\perp` is round-off and
the rescale blows it up to a full-norm vector of arbitrary direction; use ``rescale=False`` where that matters.
Edge cases: a zero-weight leaf passes its gradient through unchanged; a zero gradient stays zero.

Precision: dot products and the projection are computed in at least float32 (the reference upcasts with
``.float()``) and cast back to the gradient dtype.

Sharded leaves: under ``jit`` with ``NamedSharding`` the whole-tensor dot products are automatic. With leaves *split*
across devices inside ``shard_map`` (FSDP style), pass ``axis_name``: the three dot products are ``psum``-ed over it.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["perp_grad"]


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den``, and 0 where ``den == 0`` (double ``where``: no NaN in values or gradients)."""
  return jnp.where(den == 0, 0.0, num / jnp.where(den == 0, 1.0, den))


def perp_grad(rescale: bool = True, eps: float = 1e-30, axis_name: str | None = None
              ) -> optax.GradientTransformation:
  r"""⊥Grad as a stateless optax transform: project each gradient leaf orthogonally to its parameter.

  Args:
    rescale: rescale :math:`g_\perp` to the norm of :math:`g` (the official ``OrthoGrad``; ``False`` gives the
      paper's Eq. 10 projection only).
    eps: :math:`\epsilon_0` (``1e-30`` in the reference), added to :math:`w\cdot w` and to :math:`\|g_\perp\|`; finite
      and ``>= 0`` (with ``eps = 0`` a zero denominator gives a zero coefficient, so the edge cases above still hold).
    axis_name: mesh axis over which leaves are split inside ``shard_map`` (dot products are ``psum``-ed).

  Returns:
    An ``optax.GradientTransformation`` whose ``update(updates, state, params)`` requires ``params``.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> tx = perp_grad(rescale=False)
    >>> w, g = {"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([3.0, 4.0])}
    >>> tx.update(g, tx.init(w), w)[0]["w"].tolist()  # the radial component 3 is removed
    [0.0, 4.0]
    >>> opt = optax.chain(perp_grad(), optax.adamw(1e-2, weight_decay=0.0))  # ⊥AdamW

  References:
    Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability", ICLR 2025, arXiv 2501.04697.
  """
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
    raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")

  def reduce(x):
    return x if axis_name is None else jax.lax.psum(x, axis_name)

  def project(g: jax.Array, w: jax.Array) -> jax.Array:
    if g.shape != w.shape:
      raise ValueError(f"updates and params must have the same shapes, got {g.shape} and {w.shape}")
    if not (jnp.issubdtype(g.dtype, jnp.floating) and jnp.issubdtype(w.dtype, jnp.floating)):
      raise TypeError(f"updates and params must be floating point, got {g.dtype} and {w.dtype}")
    dtype = jnp.promote_types(g.dtype, jnp.float32)
    gf, wf = g.astype(dtype), w.astype(dtype)
    w_dot_w = reduce(jnp.vdot(wf, wf))
    w_dot_g = reduce(jnp.vdot(wf, gf))
    g_perp = gf - _safe_div(w_dot_g, w_dot_w + eps) * wf     # a zero-weight leaf passes g through (eps = 0 too)
    if rescale:
      g_norm = jnp.sqrt(reduce(jnp.vdot(gf, gf)))
      perp_norm = jnp.sqrt(reduce(jnp.vdot(g_perp, g_perp)))
      g_perp = g_perp * _safe_div(g_norm, perp_norm + eps)   # g_perp = 0 stays 0 (eps = 0 too)
    return g_perp.astype(g.dtype)

  def init_fn(params: Any) -> optax.EmptyState:
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("perp_grad needs the current params: call update(updates, state, params)")
    if jax.tree.structure(updates) != jax.tree.structure(params):
      raise ValueError(f"updates and params must have the same tree structure, got {jax.tree.structure(updates)} "
                       f"and {jax.tree.structure(params)}")
    return jax.tree.map(project, updates, params), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
