import json
rows = [json.loads(l) for l in open("benchmarks/results/immunization_probes/probe2_log.jsonl")]
base = {(r.get("att_seed", 0), r["concept"]): dict(zip(r["steps"], r["acc"])) for r in rows if r.get("run") == "imm2_attack" and r["arm"] == "erased"}
for r in rows:
  if r.get("run") != "imm2_attack": continue
  c = (r.get("att_seed", 0), r["concept"]); a = dict(zip(r["steps"], r["acc"]))
  sg = {s: round((base[c][s] - a[s]) / base[c][s], 2) for s in (100, 200)}
  print("seed", r.get("att_seed", 0), r["arm"], r.get("lam"), r.get("scheme", "truncated" if r["arm"] == "imma" else ""), r.get("K", 3 if r["arm"]=="imma" else ""),
        c, "/".join(f"{v:.2f}" for v in r["acc"]), "sgr100/200", sg[100], sg[200], "oth_after", r["others_after"], "l10", r["loss_first10"])
for r in rows:
  if r.get("run") == "imm2_imma" and r["outer_step"] == 100:
    print("imma", r["lam"], r.get("scheme"), r.get("K"), "after concept", r["concept"], "others", r["others"], "min", min(r["per_digit"][d] for d in (0,1,2,4,5,6,7,9)), "conc", r["conc_acc"], "pres", r["hist"]["pres_loss"], "closs", r["hist"]["concept_loss"])
