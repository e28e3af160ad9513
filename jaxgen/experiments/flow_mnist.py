r"""Class-conditional flow matching on MNIST (or Fashion-MNIST): sample quality vs number of Euler steps.

The generative core's end-to-end check. A velocity network is trained with the rectified-flow / flow-matching loss
(Lipman et al. 2023, "Flow Matching for Generative Modeling", arXiv:2210.02747; Liu et al. 2023, "Flow Straight and
Fast", arXiv:2209.03003) with classifier-free label dropout, then sampled with the ``lax.scan`` Euler solver of
:mod:`jaxgen.core.ode` at several step counts. Samples are scored by a separately trained CNN: class accuracy
(did the model draw the digit it was asked for?) and Fréchet distance on the CNN's penultimate features.

Run: ``jaxgen reproduce flow-mnist --quick`` (about a minute on 2 CPU cores the first time; the flow model and the
classifier are cached, see :mod:`jaxgen.experiments._cache`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from jaxgen.experiments import _classifier, _flow_models, _report

NAME = "flow-mnist"
PAPER = ("Lipman et al., Flow Matching for Generative Modeling, ICLR 2023 (arXiv:2210.02747); "
         "Liu et al., Flow Straight and Fast, ICLR 2023 (arXiv:2209.03003)")
CLAIM = ("A class-conditional flow-matching model sampled with a few Euler steps generates images of the requested "
         "class: sample class accuracy well above chance (quick) and >= 0.9 (full), with FD falling as the number "
         "of steps grows.")


@dataclasses.dataclass(frozen=True)
class Config:
  """Flow model, evaluation classifier, and the sampling sweep.

  Attributes:
    dataset: ``"mnist"`` or ``"fashion_mnist"``; copied into ``model`` and ``classifier``.
    model: the flow model (architecture, training).
    classifier: the evaluation CNN (trained once per dataset, cached).
    sample_steps: Euler step counts to evaluate.
    samples_per_class: generated images per class for each step count.
    target_accuracy: class accuracy the claim asks for at the largest step count.
    seed: sampling seed (the model's own seed is ``model.seed``).
  """

  dataset: str = "mnist"
  model: _flow_models.FlowModelConfig = _flow_models.FlowModelConfig(width=512, depth=4, num_steps=20000,
                                                                      checkpoint_every=2500)
  classifier: _classifier.ClassifierConfig = _classifier.ClassifierConfig()
  sample_steps: tuple[int, ...] = (1, 2, 5, 10, 20, 50)
  samples_per_class: int = 200
  target_accuracy: float = 0.9
  seed: int = 0

  def __post_init__(self):
    # One dataset for the model and its evaluator (e.g. `jaxgen reproduce flow-mnist --set dataset=fashion_mnist`).
    object.__setattr__(self, "model", dataclasses.replace(self.model, dataset=self.dataset))
    object.__setattr__(self, "classifier", dataclasses.replace(self.classifier, dataset=self.dataset))

  @classmethod
  def quick(cls) -> Config:
    return cls(model=_flow_models.FlowModelConfig(width=256, depth=4, num_steps=2500, checkpoint_every=500),
               sample_steps=(1, 2, 5, 10, 20), samples_per_class=50, target_accuracy=0.5)

  @classmethod
  def full(cls) -> Config:
    return cls()


def run(config: Config, out_dir: str | Path, progress: bool = True) -> dict:
  start_time = time.perf_counter()
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  _report.write_config(out, NAME, config)
  if not config.sample_steps or min(config.sample_steps) < 1:
    raise ValueError(f"sample_steps must be positive step counts, got {config.sample_steps}")

  evaluator = _classifier.get_evaluator(config.classifier, progress=progress)
  model = _flow_models.train_flow_model(config.model, progress=progress)
  train_time = time.perf_counter() - start_time

  labels = np.repeat(np.arange(_flow_models.NUM_CLASSES), config.samples_per_class)
  key = jax.random.key(config.seed)
  rows = []
  grids = {}
  for num_steps in config.sample_steps:
    images = _flow_models.sample(model.velocity_fn(), model.params, labels, jax.random.fold_in(key, num_steps),
                                 num_steps=num_steps)
    scores = evaluator.score(images, labels)
    rows.append({"sample_steps": num_steps, **scores})
    grids[num_steps] = images
  # Reference point: the FD of real held-out images (the test split against itself is 0 by construction, so use
  # the same number of training images).
  train_x, train_y, _, _ = _classifier.load_images(config.model.dataset)
  rng = np.random.default_rng(config.seed)
  real_idx = rng.choice(train_x.shape[0], labels.shape[0], replace=False)
  real = evaluator.score(train_x[real_idx], train_y[real_idx])

  _report.plot_curves(out / "fd_accuracy_vs_steps.png", [
      {"series": {"samples": ([r["sample_steps"] for r in rows], [r["fd"] for r in rows]),
                  "real train images": (list(config.sample_steps), [real["fd"]] * len(rows))},
       "xlabel": "Euler steps", "ylabel": "FD (classifier features)", "logy": True, "title": "Fréchet distance"},
      {"series": {"samples": ([r["sample_steps"] for r in rows], [r["class_accuracy"] for r in rows]),
                  "real train images": (list(config.sample_steps), [real["class_accuracy"]] * len(rows))},
       "xlabel": "Euler steps", "ylabel": "class accuracy", "title": "class accuracy of samples"},
  ], title=f"flow matching on {config.model.dataset} ({config.model.arch}, {model.step} steps)")
  losses = [r for r in model.history if "loss" in r]
  _report.plot_curves(out / "training_loss.png", [
      {"series": {"flow-matching loss": ([r["step"] for r in losses], [r["loss"] for r in losses])},
       "xlabel": "step", "ylabel": "loss", "title": "training loss"}])
  best = max(config.sample_steps)
  per_row = min(10, config.samples_per_class)
  pick = np.concatenate([np.arange(c * config.samples_per_class, c * config.samples_per_class + per_row)
                         for c in range(_flow_models.NUM_CLASSES)])
  _flow_models.save_image_grid(out / "samples.png", grids[best][pick], nrow=_flow_models.NUM_CLASSES,
                               title=f"{best} Euler steps, one row per class")
  final = rows[-1]
  held = final["class_accuracy"] >= config.target_accuracy and rows[-1]["fd"] < rows[0]["fd"]
  metrics = {
      "class_accuracy_by_steps": {str(r["sample_steps"]): r["class_accuracy"] for r in rows},
      "fd_by_steps": {str(r["sample_steps"]): r["fd"] for r in rows},
      "class_accuracy": final["class_accuracy"],
      "fd": final["fd"],
      "real_images_fd": real["fd"],
      "real_images_class_accuracy": real["class_accuracy"],
      "classifier_test_accuracy": evaluator.test_accuracy,
      "flow_train_steps": model.step,
      "final_train_loss": float(np.mean([r["loss"] for r in losses[-5:]])),
  }
  table = ["| Euler steps | class accuracy | FD |", "| ---: | ---: | ---: |"]
  table += [f"| {r['sample_steps']} | {r['class_accuracy']:.3f} | {r['fd']:.3g} |" for r in rows]
  table.append(f"| real images | {real['class_accuracy']:.3f} | {real['fd']:.3g} |")
  return _report.finish(
      out, name=NAME, config=config, metrics=metrics, claim=CLAIM, held=held,
      measured=(f"with {best} Euler steps: class accuracy {final['class_accuracy']:.3f} "
                f"(target {config.target_accuracy}), FD {final['fd']:.3g} vs {rows[0]['fd']:.3g} at "
                f"{rows[0]['sample_steps']} step(s); real images: FD {real['fd']:.3g}."),
      plots=["fd_accuracy_vs_steps.png", "samples.png", "training_loss.png"],
      notes="\n".join(table) + "\n\nFD is measured in the evaluation CNN's 128-d feature space against the test "
            "split, so it is comparable only within this library (it is not FID).",
      wall_time_s=time.perf_counter() - start_time, timing={"train_or_load_s": train_time})
