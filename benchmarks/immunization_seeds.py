"""Aggregate several immunization runs (different seeds) into one table: mean ± std of the gap ratios per arm.

    python3 benchmarks/immunization_seeds.py OUT.json RUN_DIR [RUN_DIR ...]

Reads each run's ``result.json`` (written by ``jaxgen reproduce immunization``), writes ``OUT.json`` and prints a
markdown table. Per run and arm: MSGR over the valid (attack, concept) pairs at ``sgr_step`` (the verdict's number),
the per-pair SGR, the trajectory SGR (on the mean class accuracy over all evaluated attack steps, valid pairs), and
the other digits' drop before the attack and during it (at ``sgr_step``, vs the erased-only model; NaN for runs
written before that metric existed). A pair is valid when the erased-only model re-learns the concept
(``valid_pairs`` of the run); the aggregate only uses pairs valid in that run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ARMS = ("imma", "imma_joint", "mima", "mima_fo")


def one_run(path: Path) -> dict:
  r = json.loads((path / "result.json").read_text())
  m, cfg = r["metrics"], r["config"]
  valid = [tuple(p.split("/")) for p in m["valid_pairs"]]
  row = {"run": str(path), "seed": cfg["seed"], "model_seed": cfg["model"]["seed"], "held": r["held"],
         "valid_pairs": m["valid_pairs"], "baseline_relearn_acc": m["baseline_relearn_acc"],
         "base_model_others_acc": m["base_model_others_acc"], "arms": {}}
  for arm in ARMS:
    if f"{arm}/msgr_valid" not in m:
      continue
    pair_sgr = {f"{a}/{c}": m[f"{arm}/{a}/sgr"][c] for a, c in valid}
    traj = []
    for a, c in valid:
      ref = m[f"erased/{a}/mean_acc_{c}"]
      traj.append((ref - m[f"{arm}/{a}/mean_acc_{c}"]) / ref)
    row["arms"][arm] = {"msgr_valid": m[f"{arm}/msgr_valid"], "pair_sgr": pair_sgr,
                        "traj_msgr_valid": float(np.mean(traj)) if traj else float("nan"),
                        "others_drop": m[f"{arm}/others_drop_vs_erased"],
                        "others_drop_under_attack": m.get(f"{arm}/others_drop_under_attack", float("nan"))}
  return row


def main() -> None:
  out, runs = Path(sys.argv[1]), [one_run(Path(p)) for p in sys.argv[2:]]
  agg = {}
  for arm in ARMS:
    rows = [r["arms"][arm] for r in runs if arm in r["arms"]]
    if not rows:
      continue
    agg[arm] = {}
    for key in ("msgr_valid", "traj_msgr_valid", "others_drop", "others_drop_under_attack"):
      v = np.array([x[key] for x in rows], float)
      ok = v[~np.isnan(v)]
      agg[arm][key] = {"mean": float(np.mean(ok)) if ok.size else None,
                       "std": float(np.std(ok, ddof=1)) if ok.size > 1 else None, "values": v.tolist()}
  summary = {"runs": runs, "aggregate": agg, "held": [r["held"] for r in runs]}
  out.write_text(json.dumps(summary, indent=1) + "\n")
  print("| arm | MSGR@sgr_step (valid pairs), per run | mean ± std | trajectory MSGR mean ± std | others drop "
        "mean ± std | others drop under attack (at sgr_step) |")
  print("| --- | --- | --- | --- | --- | --- |")
  fmt = lambda d: ("-" if d["mean"] is None else
                   f"{d['mean']:.2f} ± {d['std']:.2f}" if d["std"] is not None else f"{d['mean']:.2f}")
  for arm, d in agg.items():
    per = " / ".join(f"{v:.2f}" for v in d["msgr_valid"]["values"])
    print(f"| {arm} | {per} | {fmt(d['msgr_valid'])} | {fmt(d['traj_msgr_valid'])} | {fmt(d['others_drop'])} | "
          f"{fmt(d['others_drop_under_attack'])} |")
  print("held per run:", summary["held"])


if __name__ == "__main__":
  main()
