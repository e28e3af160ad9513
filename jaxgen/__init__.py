"""jaxgen: pure-functional JAX/Flax reimplementations of recent ML papers.

Importing :mod:`jaxgen` is cheap: it does not import any research area or compile anything.
Import what you need explicitly, e.g. ``from jaxgen.core import train`` or ``import jaxgen.data``.
"""

__version__ = "0.1.0"
