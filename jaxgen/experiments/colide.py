r"""CoLiDE (EV / NV) vs the DAGMA-style baseline: noise-level robustness, ER/SF graphs and Sachs (spec §1.6).

Paper: S. S. Saboksayr, G. Mateos, M. Tepper, "CoLiDE: Concomitant Linear DAG Estimation", ICLR 2024,
arXiv 2310.02895. Every fit uses the same engine and schedule (:func:`jaxgen.causal.colide_fit`,
:func:`jaxgen.causal.dagma_linear_fit`: lambda 0.05, s = (1, .9, .8, .7), 2e4/2e4/2e4/7e4 Adam steps, lr 3e-4,
beta (0.99, 0.999), threshold 0.3 then ``threshold_to_dag``), in float64, so the methods differ only through the
concomitant noise scale.

Studies (all SHD numbers are the reference ``count_accuracy`` SHD: extra + missing + reversed):

* **noise** (spec §1.6 A, the paper's Figure 1): d = 20, ER4 (4d expected edges), weights +-U(0.5, 2), n = 1000,
  Gaussian equal-variance noise with variance in ``noise_variances``; ``num_seeds`` graphs, each graph's noise draws
  shared across variances (X scales with the noise std). Expected: DAGMA's SHD rises with the variance, CoLiDE-EV's
  stays roughly flat.
* **graphs** (spec §1.6 B, the paper's heteroscedastic Table 2 at CPU scale): ER4 and SF4 graphs at d in
  ``graph_sizes``, per-node noise variances U(0.5, 10). The spec measured no reliable ordering of the three methods
  at this scale; the numbers are reported, not gated. Also reported: the relative error of CoLiDE-NV's per-node
  noise std estimate vs DAGMA's residual plug-in ``sqrt(diag R(W))`` (paper Figure 3).
* **sachs** (spec §1.6 C, the paper's Table 3): 853 observational cells x 11 proteins, raw (unstandardised)
  values, 17-edge consensus graph (:func:`jaxgen.data.load_sachs`). Paper / reference code: CoLiDE-NV SHD 12,
  CoLiDE-EV 13, DAGMA >= 14 (16 with this schedule).

Claim decision (``held``): at the largest noise variance CoLiDE-EV's mean SHD is at least 30 % below DAGMA's
(spec §1.6 A; the reference code measured -60 %) **and** on Sachs CoLiDE-NV's SHD <= 13 and CoLiDE-EV's <= 14.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxgen.core import metrics as metrics_lib
from jaxgen.experiments import _report

NAME = "colide"
PAPER = ("Saboksayr, Mateos, Tepper, 'CoLiDE: Concomitant Linear DAG Estimation', ICLR 2024, arXiv 2310.02895")
CLAIM = ("With one fixed lambda, CoLiDE-EV's structural Hamming distance stays low as the (equal) noise variance grows "
         "while DAGMA's rises (Figure 1); CoLiDE-NV wins under heteroscedastic noise at d = 200 (Table 2: SHD 390.7 "
         "vs DAGMA 470.2); on Sachs CoLiDE-NV / CoLiDE-EV reach SHD 12 / 13 vs >= 14 for the other methods "
         "(Table 3).")

METHODS = ("dagma", "colide-ev", "colide-nv")


@dataclasses.dataclass(frozen=True)
class Config:
  """CoLiDE reproduction settings.

  Attributes:
    n: samples per synthetic dataset.
    edge_factor: expected edges per node (ER4 / SF4: 4).
    w_min, w_max: edge weights +-U(w_min, w_max).
    noise_d: nodes in the noise-level study.
    noise_variances: equal noise variances of the noise-level study.
    graph_kinds: subset of ``("er", "sf")`` for the heteroscedastic graph study (empty: skip it).
    graph_sizes: node counts of the graph study.
    nv_var_low, nv_var_high: per-node noise variances U(low, high) of the graph study.
    num_seeds: graphs per setting.
    sachs: run the Sachs study.
    lambda1, s_schedule, warm_iters, final_iters, lr, check_every, w_threshold: the shared
      :class:`jaxgen.causal.CoLiDEConfig` (paper defaults).
    decrease_needed: relative SHD decrease of CoLiDE-EV vs DAGMA at the largest variance for the claim (0.3).
    sachs_nv_max, sachs_ev_max: Sachs SHD bounds for the claim (13, 14).
    seed: base seed of graphs and noise.
  """

  n: int = 1000
  edge_factor: int = 4
  w_min: float = 0.5
  w_max: float = 2.0
  noise_d: int = 20
  noise_variances: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)
  graph_kinds: tuple[str, ...] = ("er", "sf")
  graph_sizes: tuple[int, ...] = (20, 50)
  nv_var_low: float = 0.5
  nv_var_high: float = 10.0
  num_seeds: int = 3
  sachs: bool = True
  lambda1: float = 0.05
  s_schedule: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7)
  warm_iters: int = 20_000
  final_iters: int = 70_000
  lr: float = 3e-4
  check_every: int = 1000
  w_threshold: float = 0.3
  decrease_needed: float = 0.3
  sachs_nv_max: int = 13
  sachs_ev_max: int = 14
  seed: int = 0

  @classmethod
  def quick(cls) -> Config:
    return cls(noise_variances=(1.0, 10.0), graph_kinds=("er",), graph_sizes=(20,), num_seeds=2)

  @classmethod
  def full(cls) -> Config:
    return cls()


def _validate(config: Config) -> None:
  if not config.noise_variances or any(not v > 0 for v in config.noise_variances):
    raise ValueError(f"noise_variances must be a non-empty tuple of positive variances, got {config.noise_variances}")
  bad = [k for k in config.graph_kinds if k not in ("er", "sf")]
  if bad:
    raise ValueError(f"graph_kinds must be a subset of ('er', 'sf'), got {config.graph_kinds}")
  for name in ("n", "num_seeds", "noise_d", "edge_factor"):
    if int(getattr(config, name)) < (2 if name in ("n", "noise_d") else 1):
      raise ValueError(f"{name} is too small: {getattr(config, name)}")
  if any(int(d) < 2 for d in config.graph_sizes):
    raise ValueError(f"graph_sizes must be >= 2, got {config.graph_sizes}")


def _fit_config(config: Config):
  from jaxgen.causal import CoLiDEConfig

  return CoLiDEConfig(lambda1=config.lambda1, s_schedule=tuple(config.s_schedule), warm_iters=config.warm_iters,
                      final_iters=config.final_iters, lr=config.lr, check_every=config.check_every,
                      w_threshold=config.w_threshold)


def _fit_all(X: np.ndarray, W_true: np.ndarray, fit_cfg, noise_std: np.ndarray | None = None) -> dict[str, dict]:
  """All three methods on one dataset: graph metrics, plus noise-scale errors when ``noise_std`` is known."""
  from jaxgen import causal

  out = {}
  C = causal.covariance(X)
  for method in METHODS:
    if method == "dagma":
      fit = causal.dagma_linear_fit(X, fit_cfg)
      sigma = np.asarray(causal.nv_sigma(fit.W, C))                      # DAGMA's residual plug-in scales
    else:
      fit = causal.colide_fit(X, fit_cfg, method.split("-")[1])
      sigma = np.asarray(fit.sigma)
    row = causal.graph_metrics(W_true, fit.W_dag)
    row["h_final"] = float(causal.logdet_acyclicity(fit.W, 1.0))
    row["sigma_mean"] = float(np.mean(sigma))
    if noise_std is not None:
      plug = sigma if method != "colide-ev" else np.full_like(noise_std, float(sigma))
      row["sigma_rel_err"] = float(np.mean(np.abs(plug - noise_std) / noise_std))
    out[method] = row
  return out


def _mean(rows: list[dict], key: str) -> float:
  return float(np.mean([r[key] for r in rows]))


def run(config: Config, out_dir: str | Path, progress: bool = True) -> dict:
  """Run the noise-level, graph and Sachs studies and write the run folder; returns the result dict."""
  _validate(config)
  start_time = time.perf_counter()
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  _report.write_config(out, NAME, config)
  writer = metrics_lib.JsonlWriter(out / "metrics.jsonl")
  with jax.enable_x64(True):
    result = _run(config, out, writer, progress)
  result["wall_time_s"] = time.perf_counter() - start_time
  return _report.finish(out, name=NAME, config=config, wall_time_s=result.pop("wall_time_s"), **result)


def _run(config: Config, out: Path, writer, progress: bool) -> dict:
  from jaxgen import causal

  fit_cfg = _fit_config(config)
  base = jax.random.key(config.seed)
  total = (len(config.noise_variances) * config.num_seeds
           + len(config.graph_kinds) * len(config.graph_sizes) * config.num_seeds + int(config.sachs))
  bar = tqdm(total=total, desc=NAME, disable=not progress, dynamic_ncols=True, leave=False)

  # A. noise-level study: one graph and one set of standard-normal draws per seed, scaled by the noise std.
  noise: dict[str, dict[str, list[dict]]] = {m: {} for m in METHODS}
  d = config.noise_d
  for seed in range(config.num_seeds):
    k_graph, k_noise = jax.random.split(jax.random.fold_in(jax.random.fold_in(base, 0), seed))
    W_true = causal.random_dag(k_graph, d, config.edge_factor * d, "er", w_range=(config.w_min, config.w_max))
    for var in config.noise_variances:
      X = np.asarray(causal.sample_linear_sem(k_noise, W_true, config.n, "gaussian", var))
      rows = _fit_all(X, np.asarray(W_true), fit_cfg, np.full(d, np.sqrt(var)))
      for method, row in rows.items():
        noise[method].setdefault(str(var), []).append(row)
        writer.write({"study": "noise", "variance": var, "seed": seed, "method": method, **row})
      bar.update(1)
      bar.set_postfix({"var": var, **{m: rows[m]["shd"] for m in METHODS}}, refresh=False)

  # B. heteroscedastic ER / SF graphs.
  graphs: dict[str, dict[str, list[dict]]] = {}
  for kind_index, kind in enumerate(config.graph_kinds):
    for size in config.graph_sizes:
      label = f"{kind}{config.edge_factor}_d{size}"
      graphs[label] = {m: [] for m in METHODS}
      for seed in range(config.num_seeds):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(base, 1 + kind_index), size), seed)
        k_graph, k_var, k_noise = jax.random.split(key, 3)
        W_true = causal.random_dag(k_graph, size, config.edge_factor * size, kind,
                                   w_range=(config.w_min, config.w_max))
        var = causal.nv_noise_variances(k_var, size, config.nv_var_low, config.nv_var_high)
        X = np.asarray(causal.sample_linear_sem(k_noise, W_true, config.n, "gaussian", var))
        rows = _fit_all(X, np.asarray(W_true), fit_cfg, np.sqrt(np.asarray(var)))
        for method, row in rows.items():
          graphs[label][method].append(row)
          writer.write({"study": "graphs", "setting": label, "seed": seed, "method": method, **row})
        bar.update(1)
        bar.set_postfix({"graph": label, **{m: rows[m]["shd"] for m in METHODS}}, refresh=False)

  # C. Sachs, raw values.
  sachs = {}
  if config.sachs:
    from jaxgen.data import load_sachs

    data = load_sachs()
    sachs = _fit_all(np.asarray(data.data, np.float64), data.adjacency, fit_cfg)
    for method, row in sachs.items():
      writer.write({"study": "sachs", "method": method, **row})
    bar.update(1)
  bar.close()
  return _summarise(config, out, noise, graphs, sachs)


def _summarise(config: Config, out: Path, noise, graphs, sachs) -> dict:
  variances = [str(v) for v in config.noise_variances]
  noise_table = {m: {v: {"shd": _mean(noise[m][v], "shd"), "fdr": _mean(noise[m][v], "fdr"),
                         "tpr": _mean(noise[m][v], "tpr"), "shd_per_seed": [r["shd"] for r in noise[m][v]]}
                     for v in variances} for m in METHODS}
  v_max, v_min = variances[-1], variances[0]
  dagma_hi, ev_hi = noise_table["dagma"][v_max]["shd"], noise_table["colide-ev"][v_max]["shd"]
  decrease = (dagma_hi - ev_hi) / dagma_hi if dagma_hi > 0 else 0.0
  noise_ok = decrease >= config.decrease_needed
  graph_table = {label: {m: {"shd": _mean(rows[m], "shd"), "shd_per_seed": [r["shd"] for r in rows[m]],
                             "tpr": _mean(rows[m], "tpr"), "fdr": _mean(rows[m], "fdr"),
                             "sigma_rel_err": _mean(rows[m], "sigma_rel_err")} for m in METHODS}
                 for label, rows in graphs.items()}
  nv_best = {label: min(METHODS, key=lambda m: t[m]["shd"]) for label, t in graph_table.items()}
  nv_wins = sum(1 for label in graph_table
                if graph_table[label]["colide-nv"]["shd"] < min(graph_table[label]["dagma"]["shd"],
                                                                graph_table[label]["colide-ev"]["shd"]))
  sachs_ok = True
  if sachs:
    sachs_ok = (sachs["colide-nv"]["shd"] <= config.sachs_nv_max and sachs["colide-ev"]["shd"] <= config.sachs_ev_max)
  held = bool(noise_ok and sachs_ok)

  plots = []
  _report.plot_curves(out / "shd_vs_noise.png", [
      {"series": {m: ([float(v) for v in variances], [noise_table[m][v]["shd"] for v in variances])
                  for m in METHODS},
       "xlabel": "noise variance (equal variance)", "ylabel": f"mean SHD ({config.num_seeds} graphs)",
       "title": f"ER{config.edge_factor}, d = {config.noise_d}, n = {config.n}"},
      {"series": {m: ([float(v) for v in variances], [noise_table[m][v]["fdr"] for v in variances])
                  for m in METHODS},
       "xlabel": "noise variance", "ylabel": "mean FDR", "title": "false discovery rate"},
  ], title="CoLiDE vs DAGMA across noise levels (fixed lambda = %g)" % config.lambda1)
  plots.append("shd_vs_noise.png")

  measured = (f"noise variance {v_max}: mean SHD DAGMA {dagma_hi:.1f} vs CoLiDE-EV {ev_hi:.1f} "
              f"({100 * decrease:.0f} % lower; at variance {v_min}: {noise_table['dagma'][v_min]['shd']:.1f} vs "
              f"{noise_table['colide-ev'][v_min]['shd']:.1f})")
  if sachs:
    measured += (f"; Sachs SHD NV {sachs['colide-nv']['shd']}, EV {sachs['colide-ev']['shd']}, "
                 f"DAGMA {sachs['dagma']['shd']}")
  if graph_table:
    measured += f"; heteroscedastic graphs: CoLiDE-NV best in {nv_wins} of {len(graph_table)} settings"

  metrics = {
      "noise_shd": {m: {v: noise_table[m][v]["shd"] for v in variances} for m in METHODS},
      "noise_fdr": {m: {v: noise_table[m][v]["fdr"] for v in variances} for m in METHODS},
      "noise_shd_per_seed": {m: {v: noise_table[m][v]["shd_per_seed"] for v in variances} for m in METHODS},
      "ev_shd_decrease_at_max_variance": decrease,
      "graphs": graph_table,
      "graphs_best_method": nv_best,
      "graphs_nv_strictly_best_count": nv_wins,
      "sachs": sachs,
      "noise_claim_held": bool(noise_ok),
      "sachs_claim_held": bool(sachs_ok),
  }
  notes = _notes(config, noise_table, variances, graph_table, sachs, nv_wins)
  return {"metrics": metrics, "claim": CLAIM, "held": held, "measured": measured, "plots": plots, "notes": notes}


def _notes(config: Config, noise_table, variances, graph_table, sachs, nv_wins) -> str:
  lines = ["## Noise-level study (spec §1.6 A)", "",
           "| method | " + " | ".join(f"var {v}" for v in variances) + " |",
           "| --- | " + " | ".join("---" for _ in variances) + " |"]
  for m in METHODS:
    lines.append(f"| {m} | " + " | ".join(f"{noise_table[m][v]['shd']:.1f} (FDR {noise_table[m][v]['fdr']:.2f})"
                                          for v in variances) + " |")
  lines += ["", "Mean SHD over the seeds (mean FDR). Spec reference (reference NumPy code, 3 seeds): var 1: "
            "DAGMA 14.0 / EV 14.0 / NV 17.0; var 10: 16.7 / 6.7 / 13.7.", ""]
  if graph_table:
    lines += ["## Heteroscedastic graphs (spec §1.6 B)", "",
              "| setting | DAGMA SHD | CoLiDE-EV SHD | CoLiDE-NV SHD | noise-std rel. error DAGMA plug-in / NV |",
              "| --- | --- | --- | --- | --- |"]
    for label, t in graph_table.items():
      lines.append(f"| {label} | " + " | ".join(
          f"{t[m]['shd']:.1f} {t[m]['shd_per_seed']}" for m in METHODS)
          + f" | {t['dagma']['sigma_rel_err']:.3f} / {t['colide-nv']['sigma_rel_err']:.3f} |")
    lines += ["", f"CoLiDE-NV has the strictly lowest mean SHD in {nv_wins} of {len(graph_table)} settings. "
              "The paper's heteroscedastic advantage (Table 2) is measured at d = 200 with 10 graphs; at d <= 50 and "
              "n = 1000 the spec's reference runs found no reliable ordering of the three methods either "
              "(e.g. d = 20: DAGMA 2.7, EV 4.7, NV 19.7 mean SHD), so this part is reported, not gated.", ""]
  if sachs:
    lines += ["## Sachs (raw values, 17-edge consensus graph)", "",
              "| method | SHD | TPR | FDR | edges |", "| --- | --- | --- | --- | --- |"]
    for m in METHODS:
      r = sachs[m]
      lines.append(f"| {m} | {r['shd']} | {r['tpr']:.2f} | {r['fdr']:.2f} | {r['nnz']} |")
    lines += ["", "Paper Table 3 / reference code: CoLiDE-NV 12, CoLiDE-EV 13, DAGMA-style 16 (paper: >= 14).", ""]
  lines += ["All fits: float64, lambda = %g, s = %s, %d/%d Adam steps, lr %g, threshold %g then acyclic pruning."
            % (config.lambda1, list(config.s_schedule), config.warm_iters, config.final_iters, config.lr,
               config.w_threshold)]
  return "\n".join(lines)
