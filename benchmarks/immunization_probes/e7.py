"""Probe 3 (session 5): does a LoRA attack on the cross-attention q/k/v kernels re-learn the erased digits on the
erased-only model? (precondition of the LoRA arm). Args: LR[:RANK] ...; env ATT_SEED (attack noise/sampling key)."""
import os, sys
src = open("benchmarks/immunization_probes/explore.py").read().replace("probe1_log.jsonl", "probe3_log.jsonl")
exec(src)
ATT_SEED = int(os.environ.get("ATT_SEED", "0"))
TARGETS = os.environ.get("LORA_TARGETS", "cross_attn/(query|key|value)/kernel")
for spec in sys.argv[1:]:
  parts = spec.split(":")
  lr = float(parts[0]); rank = int(parts[1]) if len(parts) > 1 else 4
  for c in CFG.concepts:
    data = {"x": jnp.asarray(attack_x[c][:20]), "tok": jnp.full((20,), c, jnp.int32)}
    k = jax.random.fold_in(key, 1000 + c + 10000 * ATT_SEED)
    ck, losses = imma.lora_attack(erased, flow_loss, lambda k, d: d, data, k, targets=TARGETS, rank=rank,
                                  num_steps=300, lr=lr, record_every=50)
    curve = [round(acc(p, c, seed=ATT_SEED), 3) for s, p in ck]
    pd = per_digit(ck[-1][1], n=15)
    log(run="lora_erased", lr=lr, rank=rank, targets=TARGETS, concept=c, att_seed=ATT_SEED,
        steps=[s for s, _ in ck], acc=curve, acc_n=60, per_digit_after=pd,
        others_after=round(float(np.mean([pd[d] for d in range(10) if d not in CFG.concepts])), 3))
