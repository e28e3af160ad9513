"""Re-write an immunization run's result.json / report.md / plots from its own ``metrics.jsonl`` (no retraining).

Used when the verdict or report code changed after a long run: the attack curves and immunization histories in
``metrics.jsonl`` are everything ``_finish`` reads. The run's config is rebuilt from the full preset plus
``--set KEY=VALUE`` overrides and must equal the run's ``config.json`` (otherwise this refuses). Wall time,
timing and environment are kept from the run's ``run.json`` (the re-write's environment goes to
``rewritten_environment``). The base model and classifier are loaded from ``$JAXGEN_CACHE``.

    JAXGEN_CACHE=DIR python3 benchmarks/immunization_refinish.py RUN_DIR [--experiment immunization-digits8]
        [--set seed=1 ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxgen.cli import _parse_sets
from jaxgen.experiments import _classifier, _report
from jaxgen.experiments import immunization as exp
from jaxgen.experiments import immunization_digits8, registry
from jaxgen.experiments.registry import make_config


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("run_dir")
  ap.add_argument("--experiment", default=exp.NAME, choices=(exp.NAME, immunization_digits8.NAME))
  ap.add_argument("--set", action="append", default=[])
  args = ap.parse_args()
  out = Path(args.run_dir)
  sets = _parse_sets(args.set)
  config = make_config(args.experiment, quick=False, seed=sets.pop("seed", None), **sets)
  module = registry.load(args.experiment)
  stored = json.loads((out / "config.json").read_text())
  stored = stored["config"]
  if _report.config_dict(config) != stored:
    raise SystemExit(f"the rebuilt config differs from {out / 'config.json'}: pass the run's --set overrides")
  curves, history = {}, {}
  for line in (out / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    if r.get("phase") == "attack":
      row = {k: r[k] for k in ("step", "acc", "fd", "others_acc", "others_min")}
      curves.setdefault(r["arm"], {}).setdefault(r["attack"], {}).setdefault(r["concept"], []).append(row)
    elif r.get("phase") == "immunize":
      history.setdefault(r["arm"], []).append({k: v for k, v in r.items() if k not in ("phase", "arm")})
  for arm in curves.values():
    for attack in arm.values():
      for c, rows in attack.items():
        attack[c] = sorted(rows, key=lambda x: x["step"])
  run = json.loads((out / "run.json").read_text())
  timing = {k: v for k, v in run.items() if k not in ("wall_time_s", "environment")}
  evaluator = _classifier.get_evaluator(config.classifier, progress=False)
  model = exp.train_model(config.model, progress=False)
  result = exp._finish(config, out, curves, history, evaluator, model, run["wall_time_s"], timing,
                       name=module.NAME, claim=module.CLAIM)
  rewritten = json.loads((out / "run.json").read_text())
  rewritten["rewritten_environment"] = rewritten["environment"]
  rewritten["environment"] = run["environment"]          # the run's own machine and time, not the re-write's
  (out / "run.json").write_text(json.dumps(rewritten, indent=2) + "\n")
  print(json.dumps({"held": result["held"], "measured": result["measured"]}, indent=1))


if __name__ == "__main__":
  main()
