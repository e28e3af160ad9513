exec(open("benchmarks/immunization_probes/e2.py").read().split("for spec in sys.argv[1:]:")[0])
TARGETS = {"kv": exp.KV_REGEX, "xattn": "cross_attn/", "all": ".*"}
lam = float(sys.argv[1])
imm = run_imma(lam, 2e-3, seg=100, tag="_e3")
for spec in sys.argv[2:]:
  kind, lr, n_img, tgt, steps = spec.split(",")
  lr, n_img, steps = float(lr), int(n_img), int(steps)
  for c in CFG.concepts:
    ck, losses = attack(imm, c, kind, lr, steps=steps, n_img=n_img, record=50, targets=TARGETS[tgt])
    curve = [round(acc(p, c), 3) for s, p in ck]
    log(run="e3_imma_attack", lam=lam, concept=c, kind=kind, lr=lr, n_img=n_img, targets=tgt,
        steps=[s for s, _ in ck], acc=curve)
