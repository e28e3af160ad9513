"""The ``jaxgen`` command.

  jaxgen list                                   registered experiments
  jaxgen reproduce NAME|all [--quick] [--out DIR] [--seed N] [--resume] [--no-progress] [--set KEY=VALUE ...]
  jaxgen data list [--data-dir DIR]             datasets: name, size, present?
  jaxgen data verify [--data-dir DIR]           sha256 check of every present dataset (exit 1 if any is corrupt)

Multi-host runs: set ``JAXGEN_DISTRIBUTED=1`` (or ``JAX_COORDINATOR_ADDRESS``...) and ``jax.distributed.initialize``
is called before anything touches the devices.
"""

from __future__ import annotations

import argparse
import sys


def _cmd_list(args: argparse.Namespace) -> int:
  from jaxgen import experiments

  width = max(len(n) for n in experiments.names())
  for name in experiments.names():
    print(f"{name:<{width}}  {experiments.info(name).summary}")
  return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
  from jaxgen.core import parallel

  parallel.initialize_distributed()
  from jaxgen import experiments
  from jaxgen.experiments import _cache

  if args.name != "all" and args.name not in experiments.names():
    print(f"unknown experiment {args.name!r}; run `jaxgen list` (registered: {', '.join(experiments.names())})",
          file=sys.stderr)
    return 2
  _cache.enable_compilation_cache()
  progress = not args.no_progress
  if args.name == "all":
    results = experiments.reproduce_all(quick=args.quick, out_dir=args.out, seed=args.seed, progress=progress)
  else:
    result = experiments.reproduce(args.name, quick=args.quick, out_dir=args.out, seed=args.seed,
                                   resume=args.resume, progress=progress, **_parse_sets(args.set))
    results = [{**result, "status": "ok"}]
  failed = False
  for r in results:
    status = r.get("status", "ok")
    failed |= status != "ok"
    print(f"{r['experiment']}: {status}; claim held: {'yes' if r.get('held') else 'no'}; {r.get('measured', '')}")
  print(f"results in {args.out}/")
  return 1 if failed else 0


def _parse_sets(items: list[str]) -> dict:
  """``["model.width=128", "dataset=fashion_mnist"]`` -> ``{"model.width": 128, "dataset": "fashion_mnist"}``."""
  import ast

  out = {}
  for item in items:
    key, sep, raw = item.partition("=")
    if not sep or not key:
      raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
    try:
      out[key] = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      out[key] = raw
  return out


def _cmd_data(args: argparse.Namespace) -> int:
  from jaxgen import data

  if args.data_command == "list":
    rows = data.list_datasets(args.data_dir)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
      print(f"{r['name']:<{width}}  {r['size_bytes'] / 1e6:8.2f} MB  {'present' if r['present'] else 'MISSING'}")
    return 0
  rows = data.verify_datasets(args.data_dir)
  width = max(len(r["name"]) for r in rows)
  bad = 0
  for r in rows:
    bad += r["status"] == "corrupt"
    detail = f"  {r['detail']}" if r.get("detail") else ""
    print(f"{r['name']:<{width}}  {r['status'].upper()}{detail}")
  if bad:
    print(f"{bad} dataset(s) failed verification", file=sys.stderr)
  return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxgen", description="jaxgen: JAX reimplementations and reproductions.")
  sub = parser.add_subparsers(dest="command", required=True)

  p_list = sub.add_parser("list", help="list registered experiments")
  p_list.set_defaults(func=_cmd_list)

  p_rep = sub.add_parser("reproduce", help="run an experiment (or all) and write its report")
  p_rep.add_argument("name", help="experiment name from `jaxgen list`, or `all`")
  p_rep.add_argument("--quick", action="store_true", help="the quick preset (about a minute each on 2 CPU cores)")
  p_rep.add_argument("--out", default="runs", help="output folder (default: ./runs)")
  p_rep.add_argument("--seed", type=int, default=None, help="override the preset's seed")
  p_rep.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoints")
  p_rep.add_argument("--no-progress", action="store_true", help="hide progress bars")
  p_rep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field (dots for nested fields), e.g. --set dataset=fashion_mnist")
  p_rep.set_defaults(func=_cmd_reproduce)

  p_data = sub.add_parser("data", help="list or verify the offline datasets")
  p_data.add_argument("data_command", choices=["list", "verify"])
  p_data.add_argument("--data-dir", default=None, help="data root (default: $JAXGEN_DATA, then ../shared/data)")
  p_data.set_defaults(func=_cmd_data)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  return args.func(args)


if __name__ == "__main__":
  sys.exit(main())
