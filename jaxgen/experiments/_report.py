"""Helpers every experiment uses to write its run folder: config.json, result.json, report.md and plots."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxgen.core import metrics as metrics_lib


def config_dict(config: Any) -> dict[str, Any]:
  if not dataclasses.is_dataclass(config):
    raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
  return metrics_lib.to_json_safe(dataclasses.asdict(config))


def write_config(out_dir: str | os.PathLike, name: str, config: Any) -> Path:
  """Write ``config.json`` (the experiment name and every config field)."""
  path = Path(out_dir) / "config.json"
  metrics_lib.write_json(path, {"experiment": name, "config": config_dict(config)})
  return path


def environment() -> dict[str, Any]:
  """What the numbers were measured on."""
  return {
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "python": platform.python_version(),
      "machine": platform.machine(),
      "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }


def finish(
    out_dir: str | os.PathLike,
    *,
    name: str,
    config: Any,
    metrics: Mapping[str, Any],
    claim: str,
    held: bool,
    measured: str,
    plots: Sequence[str] = (),
    notes: str = "",
    wall_time_s: float | None = None,
    timing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """Write ``result.json``, ``run.json`` and ``report.md``; return the result dict.

  ``result.json`` holds only what the seed determines (so two runs with one seed give identical files);
  ``run.json`` holds what varies between machines and runs: wall time, throughput, the environment.

  Args:
    out_dir: the run folder.
    name: registry name of the experiment.
    config: the config dataclass the run used.
    metrics: the measured numbers (scalars or small lists).
    claim: the paper's claim, in words, with its numbers.
    held: whether the claim held in this run (decided by the experiment from ``metrics``).
    measured: one sentence stating what this run measured, with the key numbers.
    plots: file names (inside ``out_dir``) of the PNG plots.
    notes: extra markdown (why a claim may not hold at CPU scale, deviations from the paper).
    wall_time_s: run time.
    timing: other machine-dependent numbers (throughput...), written to ``run.json``.
  """
  out = Path(out_dir)
  result = {
      "experiment": name,
      "claim": claim,
      "held": bool(held),
      "measured": measured,
      "metrics": metrics_lib.to_json_safe(dict(metrics)),
      "config": config_dict(config),
      "plots": list(plots),
  }
  metrics_lib.write_json(out / "result.json", result)
  run_info = {"wall_time_s": wall_time_s, **dict(timing or {}), "environment": environment()}
  metrics_lib.write_json(out / "run.json", run_info)
  lines = [
      f"# {name}",
      "",
      f"**Claim.** {claim}",
      "",
      f"**Held in this run:** {'yes' if held else 'no'}.",
      "",
      f"**Measured.** {measured}",
      "",
      "| metric | value |",
      "| --- | --- |",
  ]
  for key, value in result["metrics"].items():
    lines.append(f"| {key} | {_fmt(value)} |")
  lines += ["", "Config:", "", "```json", json.dumps(result["config"], indent=2), "```", ""]
  for plot in plots:
    lines += [f"![{plot}]({plot})", ""]
  if notes:
    lines += [notes.strip(), ""]
  if wall_time_s is not None:
    lines += [f"Wall time: {wall_time_s:.1f} s on {jax.default_backend()} "
              f"({jax.device_count()} device(s)); details in `run.json`.", ""]
  (out / "report.md").write_text("\n".join(lines))
  return {**result, "wall_time_s": wall_time_s}


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, dict):
    if len(value) > 12:
      return f"{{{len(value)} entries}}"
    return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
  if isinstance(value, list) and len(value) > 8:
    return f"[{len(value)} values]"
  return str(value)


def plot_curves(
    path: str | os.PathLike,
    panels: Sequence[Mapping[str, Any]],
    *,
    title: str | None = None,
) -> Path:
  """Save a row of line plots.

  Args:
    path: the PNG to write.
    panels: one dict per subplot with keys ``series`` (``{label: (x, y)}``), ``xlabel``, ``ylabel`` and optional
      ``logy`` (bool) and ``title``.
    title: figure title.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
  for ax, panel in zip(axes[0], panels):
    for label, (x, y) in panel["series"].items():
      ax.plot(np.asarray(x), np.asarray(y), label=label, lw=1.5)
    ax.set_xlabel(panel.get("xlabel", ""))
    ax.set_ylabel(panel.get("ylabel", ""))
    if panel.get("logy"):
      ax.set_yscale("log")
    if panel.get("title"):
      ax.set_title(panel["title"])
    ax.grid(alpha=0.3)
    if len(panel["series"]) > 1:
      ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  path = Path(path)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
