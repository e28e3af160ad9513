"""Host-side checks of static scalar arguments (hyper-parameters, counts), shared by every area.

Each raises with the argument's name in the message: ``TypeError`` for a value that is not a real number (bools
included), ``ValueError`` for NaN, an infinity where none is allowed, or a value out of range.

>>> check_count("num_steps", 8.0, 1)
8
>>> check_real("lr", 0.0, lo=0.0, open_lo=True)
Traceback (most recent call last):
...
ValueError: lr must be > 0.0 and finite, got 0.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_REAL = (int, float, np.integer, np.floating)


def check_real(name: str, value: Any, *, lo: float = -math.inf, open_lo: bool = False,
               allow_inf: bool = False) -> float:
  """A real number ``>= lo`` (``> lo`` if ``open_lo``), finite unless ``allow_inf``; returns it as ``float``."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, _REAL):
    raise TypeError(f"{name} must be a real number, got {value!r}")
  if np.isnan(value) or (not allow_inf and not np.isfinite(value)) or value < lo or (open_lo and value == lo):
    raise ValueError(f"{name} must be {'> ' if open_lo else '>= '}{lo}{'' if allow_inf else ' and finite'}, "
                     f"got {value!r}")
  return float(value)


def check_count(name: str, value: Any, minimum: int = 0) -> int:
  """An integer ``>= minimum`` (an integral float is accepted, never a bool, NaN or inf); returns it as ``int``."""
  ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, _REAL)
  if not ok or not np.isfinite(value) or int(value) != value or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)
