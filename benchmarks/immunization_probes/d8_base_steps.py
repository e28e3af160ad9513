"""Probe: does the 8x8-digits base model follow the prompt after N training steps? (why the quick preset keeps 2000)

    JAXGEN_CACHE=DIR python3 benchmarks/immunization_probes/d8_base_steps.py 1000 2000

Trains (or loads from the cache) the `immunization-digits8` base model with N steps and prints the evaluation CNN's
per-digit class accuracy of 100 samples per digit at CFG w = 1, 2, 3 (w = 2 is what the experiment samples with).
"""

import dataclasses
import sys
import time

import jax
import numpy as np

from jaxgen.experiments import _classifier
from jaxgen.experiments import immunization as im
from jaxgen.experiments import immunization_digits8 as d8

evaluator = _classifier.get_evaluator(d8.CLASSIFIER, progress=False)
print(f"classifier test accuracy {evaluator.test_accuracy:.4f}")
tokens = np.repeat(np.arange(10), 100).astype(np.int32)
for steps in map(int, sys.argv[1:]):
  t = time.perf_counter()
  cfg = dataclasses.replace(d8.MODEL, num_steps=steps)
  model = im.train_model(cfg, progress=False)
  print(f"steps {steps}: model ready in {time.perf_counter() - t:.1f} s (cached if fast), final loss "
        f"{model.history[-1].get('loss', float('nan')):.4f}")
  for w in (1.0, 2.0, 3.0):
    x = im.generate(cfg, model.params, tokens, jax.random.key(1), guidance=w)
    _, logits = evaluator.features_and_logits(x)
    acc = [float(np.mean(np.argmax(logits[tokens == c], -1) == c)) for c in range(10)]
    print(f"  w {w}: per-digit class accuracy {np.round(acc, 2).tolist()}")
