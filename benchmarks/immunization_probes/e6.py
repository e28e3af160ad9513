"""imm2 probe: attack = all cross-attention (q/k/v/out, kernels+biases) Adam 3e-3, 20 images, 300 steps;
IMMA (truncated, K=3, SGD 0.03) whose inner phi = additive delta on the SAME leaves (every cross_attn/ leaf)."""
import sys
src = open("benchmarks/immunization_probes/explore.py").read().replace("probe1_log.jsonl", "probe2_log.jsonl")
exec(src)
from jaxgen.immunization import mima
import os
ATT_SEED = int(os.environ.get("ATT_SEED", "0"))
if ATT_SEED:
  def attack(params, c, kind, lr, steps=200, n_img=20, record=50, targets=exp.KV_REGEX):
    data = {"x": jnp.asarray(attack_x[c][:n_img]), "tok": jnp.full((n_img,), c, jnp.int32)}
    k = jax.random.fold_in(key, 1000 + c + 10000 * ATT_SEED)
    return imma.relearn_attack(params, flow_loss, lambda k, d: d, data, k, targets=targets, num_steps=steps,
                               lr=lr, record_every=record)
XATTN = "cross_attn/"
_, concept_loss, pres_loss = exp._losses(model)
theta_e, rest = imma.split_params(erased, exp.UPPER)
frozen = {"rest": rest, "ref_u": theta_e}
data_pres = {"x": jnp.asarray(pres["x"]), "y": jnp.asarray(pres["y"], jnp.int32)}
OTH = [d for d in range(10) if d not in CFG.concepts]
ATT = dict(lr=3e-3, n_img=20, steps=300, targets=XATTN, kind="relearn", opt="adam")

def others(params, n=15):
  pd = per_digit(params, n=n)
  return round(float(np.mean([pd[d] for d in OTH])), 3), pd

def attack_curves(params, arm, extra):
  res = {}
  for c in CFG.concepts:
    ck, losses = attack(params, c, "relearn", ATT["lr"], steps=ATT["steps"], n_img=ATT["n_img"], record=50,
                        targets=XATTN)
    curve = [round(acc(p, c, seed=ATT_SEED), 3) for s, p in ck]
    oth, pd = others(ck[-1][1])
    l = np.asarray(losses).ravel()
    log(run="imm2_attack", arm=arm, concept=c, attack=ATT, steps=[s for s, _ in ck], acc=curve, acc_n=60,
        others_after=oth, others_n=15, per_digit_after=pd, loss_first10=round(float(np.mean(l[:10])), 4), att_seed=ATT_SEED, **extra)
    res[c] = dict(zip([s for s, _ in ck], curve))
  return res

def run_imma(lam, outer_lr=2e-3, per=100, seg=50, pres_null_rate=0.2, tau=5.0, scheme="truncated", K=3, alt_lr=1e-2):
  sample = exp._sample_fn(CFG.concept_batch, CFG.pres_batch, pres_null_rate)
  data_fn = exp._squeeze_first(sample)
  def attack_loss(th, phi, fr, batch, k):
    return concept_loss(mima.apply_kv_delta(th, phi), fr, batch, k)
  cfg = imma.IMMAConfig(attack_loss=attack_loss, pres_loss=pres_loss, scheme=scheme, inner_steps=K, alt_inner_lr=alt_lr,
                        inner_lr=0.03, outer_lr=outer_lr, lam=lam, tau=tau)
  theta = theta_e
  for i, c in enumerate(CFG.concepts):
    phi0 = mima.kv_delta_init(theta, lambda p: XATTN in p)   # phi covers every theta_u leaf = attack's set
    if i == 0:
      log(run="imm2_phi", n_leaves=len(phi0), n_params=int(sum(v.size for v in phi0.values())), paths=sorted(phi0)[:6])
    st = imma.imma_init(theta, phi0, cfg)
    data = (jnp.asarray(pools[c])[None], jnp.asarray([c], jnp.int32), data_pres)
    for j in range(per // seg):
      st, h = imma.train_loop(st, imma._imma_body, (frozen, data), jax.random.fold_in(key, 100 * i + j + 7), seg,
                              seg, False, "", static=(cfg, data_fn))
      params = imma.combine_params(st.theta_u, rest)
      oth, pd = others(params)
      log(run="imm2_imma", lam=lam, scheme=scheme, K=K, alt_lr=alt_lr, outer_lr=outer_lr, phi="xattn_all", concept=c, outer_step=(j + 1) * seg,
          hist={k: round(float(v), 4) for k, v in h[-1].items()}, others=oth, others_n=15, per_digit=pd,
          conc_acc={d: round(acc(params, d, n=30), 3) for d in CFG.concepts}, conc_n=30)
    theta = st.theta_u
  return imma.combine_params(theta, rest)

for spec in sys.argv[1:]:
  if spec == "base":
    oth, pd = others(erased)
    log(run="imm2_erased", others=oth, per_digit=pd, others_n=15)
    attack_curves(erased, "erased", {})
  else:
    parts = spec.split(":")
    lam = float(parts[1]); scheme = parts[2] if len(parts) > 2 else "truncated"; K = int(parts[3]) if len(parts) > 3 else 3
    alt_lr = float(parts[4]) if len(parts) > 4 else 1e-2
    imm = run_imma(lam, scheme=scheme, K=K, alt_lr=alt_lr)
    attack_curves(imm, "imma", dict(lam=lam, phi="xattn_all", scheme=scheme, K=K, alt_lr=alt_lr))
