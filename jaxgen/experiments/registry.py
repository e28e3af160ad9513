"""The experiment registry and the ``reproduce`` runner shared by the CLI, the colabs and the slow tests.

An experiment is a module in :mod:`jaxgen.experiments` that defines

* ``NAME`` (registry name), ``PAPER`` (citation or "template"), ``CLAIM`` (the paper's claim in words),
* ``Config``: a frozen dataclass with a ``seed`` field and ``quick()`` / ``full()`` class-method presets,
* ``run(config, out_dir, progress=True) -> dict``: trains/evaluates, writes ``config.json``, ``metrics.jsonl``,
  ``result.json``, PNG plots and ``report.md`` into ``out_dir`` and returns the result dict.

Modules are imported lazily, so ``jaxgen list`` stays fast and an experiment's heavy imports load only when it runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any



@dataclasses.dataclass(frozen=True)
class ExperimentInfo:
  name: str
  module: str
  summary: str


# Name -> module. Add one line per paper experiment.
_EXPERIMENTS: tuple[ExperimentInfo, ...] = (
    ExperimentInfo("mnist-mlp", "jaxgen.experiments.mnist_mlp",
                   "Template: an MLP classifier on MNIST through core.fit, with checkpoints and a loss curve"),
    ExperimentInfo("flow-mnist", "jaxgen.experiments.flow_mnist",
                   "Class-conditional flow matching on MNIST: FD and sample class accuracy vs Euler steps"),
    ExperimentInfo("cfg-zero-star-gmm", "jaxgen.experiments.cfg_zero_star_gmm",
                   "CFG-Zero* vs CFG on an exact 2-D Gaussian-mixture flow (spec E1, E2, E5)"),
    ExperimentInfo("cfg-zero-star", "jaxgen.experiments.cfg_zero_star",
                   "CFG-Zero* and ablations vs CFG on trained MNIST/Fashion-MNIST flow models, early and final"),
    ExperimentInfo("stable-spam", "jaxgen.experiments.stable_spam",
                   "Adam vs SPAM vs Stable-SPAM on a tiny LLaMA (char Shakespeare), fp32 vs INT4/FP4 fake quant"),
    ExperimentInfo("bloomgml", "jaxgen.experiments.bloomgml",
                   "BloomGML-style energy-descent GNNs on Cora/CiteSeer/PubMed, heterophily sets (lambda) and a KG"),
    ExperimentInfo("lto", "jaxgen.experiments.lto",
                   "Learning to Obstruct: bilevel obstruction of four few-shot learners on restricted classes"),
    ExperimentInfo("immunization", "jaxgen.experiments.immunization",
                   "IMMA / MIMA model immunization of a conditional flow model against re-learning and LoRA"),
    ExperimentInfo("immunization-digits8", "jaxgen.experiments.immunization_digits8",
                   "IMMA / MIMA on the spec's 8x8-digits toy: K/V re-learning and LoRA attacks, MSGR at 100 steps"),
    ExperimentInfo("grokking", "jaxgen.experiments.grokking",
                   "Grokking mod 113: AdamW vs perp-AdamW vs StableMax, Softmax Collapse fraction (spec E2)"),
    ExperimentInfo("sgd-stability", "jaxgen.experiments.sgd_stability",
                   "Dynamical stability of SGD vs GD on a diagonal linear net: trace/lambda_max vs 2/eta (spec E3)"),
    ExperimentInfo("colide", "jaxgen.experiments.colide",
                   "CoLiDE (EV/NV) vs DAGMA: SHD across noise levels, ER/SF graphs and Sachs"),
)


def names() -> list[str]:
  """Registered experiment names, in registry order."""
  return [e.name for e in _EXPERIMENTS]


def info(name: str) -> ExperimentInfo:
  for e in _EXPERIMENTS:
    if e.name == name:
      return e
  raise ValueError(f"unknown experiment {name!r}; registered: {', '.join(names())}")


def load(name: str) -> ModuleType:
  """Import the experiment module registered as ``name``."""
  return importlib.import_module(info(name).module)


def make_config(name: str, *, quick: bool, seed: int | None = None, **overrides: Any) -> Any:
  """The ``quick`` or ``full`` preset of ``name``, with ``seed`` and any field overrides applied.

  Overrides may name nested fields with dots (``{"model.width": 128}``).
  """
  module = load(name)
  config = module.Config.quick() if quick else module.Config.full()
  if seed is not None:
    overrides["seed"] = seed
  return _replace_fields(config, overrides, name)


def _replace_fields(config: Any, overrides: dict[str, Any], where: str) -> Any:
  fields = {f.name for f in dataclasses.fields(config)}
  direct, nested = {}, {}
  for key, value in overrides.items():
    head, _, rest = key.partition(".")
    if head not in fields:
      raise ValueError(f"unknown config fields for {where}: [{key!r}] (fields: {sorted(fields)})")
    if rest:
      nested.setdefault(head, {})[rest] = value
    else:
      direct[head] = value
  for head, sub in nested.items():
    inner = direct.get(head, getattr(config, head))
    if not dataclasses.is_dataclass(inner):
      raise ValueError(f"config field {where}.{head} is not a nested config; cannot set {sorted(sub)}")
    direct[head] = _replace_fields(inner, sub, f"{where}.{head}")
  return dataclasses.replace(config, **direct)


def reproduce(
    name: str,
    *,
    quick: bool = True,
    out_dir: str | os.PathLike = "runs",
    seed: int | None = None,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
  """Run experiment ``name`` into ``out_dir/name`` and return its result dict.

  Args:
    name: registry name (see :func:`names`).
    quick: the quick preset (about a minute on 2 CPU cores) instead of the full one.
    out_dir: parent folder of the run folder.
    seed: overrides the preset's seed.
    resume: continue from the run folder's checkpoints (the config must be the same); otherwise the folder is
      cleared first.
    progress: show progress bars.
    **overrides: config fields to change.
  """
  module = load(name)
  config = make_config(name, quick=quick, seed=seed, **overrides)
  run_dir = Path(out_dir) / name
  if run_dir.exists():
    if resume:
      _check_same_config(run_dir, name, config)
    else:
      shutil.rmtree(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  return module.run(config, run_dir, progress=progress)


def _check_same_config(run_dir: Path, name: str, config: Any) -> None:
  path = run_dir / "config.json"
  if not path.exists():
    return
  from jaxgen.experiments._report import config_dict  # local: keeps this module import-light

  saved = json.loads(path.read_text())
  if saved.get("config") != config_dict(config):
    raise ValueError(
        f"--resume: {run_dir} was run with a different config; resume with the same options or drop --resume")


def reproduce_all(
    *,
    quick: bool = True,
    out_dir: str | os.PathLike = "runs",
    seed: int | None = None,
    progress: bool = True,
    only: list[str] | None = None,
) -> list[dict[str, Any]]:
  """Run every registered experiment (or ``only`` these) and write ``out_dir/index.md`` linking the reports."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  results = []
  for name in only or names():
    start = time.perf_counter()
    try:
      result = reproduce(name, quick=quick, out_dir=out, seed=seed, progress=progress)
      result = {**result, "status": "ok"}
    except Exception as err:  # one broken experiment must not hide the others' results
      result = {"experiment": name, "status": f"error: {type(err).__name__}: {err}", "held": False,
                "claim": info(name).summary, "metrics": {}}
    result["wall_time_s"] = result.get("wall_time_s") or time.perf_counter() - start
    results.append(result)
  _write_index(out, results, quick=quick)
  return results


def _write_index(out: Path, results: list[dict[str, Any]], *, quick: bool) -> None:
  lines = [
      f"# jaxgen reproductions ({'quick' if quick else 'full'} presets)",
      "",
      "| experiment | status | claim held | measured | time (s) | report |",
      "| --- | --- | --- | --- | ---: | --- |",
  ]
  for r in results:
    nums = r.get("measured") or ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in list(r.get("metrics", {}).items())[:3]
                                          if not isinstance(v, (list, dict)))
    nums = nums.replace("|", "/")
    link = f"[report]({r['experiment']}/report.md)" if r.get("status") == "ok" else "-"
    lines.append(f"| {r['experiment']} | {r['status']} | {'yes' if r.get('held') else 'no'} | {nums} | "
                 f"{r.get('wall_time_s', 0):.1f} | {link} |")
  (out / "index.md").write_text("\n".join(lines) + "\n")
