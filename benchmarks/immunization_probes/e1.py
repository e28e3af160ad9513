exec(open("benchmarks/immunization_probes/explore.py").read())
import sys
OTH = [d for d in range(10) if d not in CFG.concepts]
if "base" in sys.argv[1:]:
  b, e = per_digit(model.params), per_digit(erased)
  log(run="e1_base_per_digit", model_steps=CFG.model.num_steps, n=30, base=b, erased=e,
      base_others=round(float(np.mean([b[d] for d in OTH])), 3), erased_others=round(float(np.mean([e[d] for d in OTH])), 3))
  for c in CFG.concepts:
    log(run="e1_concept_acc60", concept=c, base=acc(model.params, c), erased=acc(erased, c))
TARGETS = {"kv": exp.KV_REGEX, "xattn": "cross_attn/", "all": ".*"}
for spec in sys.argv[1:]:
  if spec == "base":
    continue
  kind, lr, n_img, tgt, steps = spec.split(",")
  lr, n_img, steps = float(lr), int(n_img), int(steps)
  for c in CFG.concepts:
    ck, losses = attack(erased, c, kind, lr, steps=steps, n_img=n_img, record=50, targets=TARGETS[tgt])
    curve = [round(acc(p, c), 3) for s, p in ck]
    fin = per_digit(ck[-1][1], n=15)
    log(run="e1_attack", model_steps=CFG.model.num_steps, concept=c, kind=kind, lr=lr, n_img=n_img, targets=tgt,
        steps=[s for s, _ in ck], acc=curve,
        loss_first_last=[round(float(np.mean(losses[:10])), 4), round(float(np.mean(losses[-10:])), 4)],
        others_final=round(float(np.mean([fin[d] for d in OTH])), 3))
