exec(open("benchmarks/immunization_probes/explore.py").read())
import sys
from jaxgen.immunization import mima
_, concept_loss, pres_loss = exp._losses(model)
theta_e, rest = imma.split_params(erased, exp.UPPER)
frozen = {"rest": rest, "ref_u": theta_e}
data_pres = {"x": jnp.asarray(pres["x"]), "y": jnp.asarray(pres["y"], jnp.int32)}
OTH = [d for d in range(10) if d not in CFG.concepts]
pd0 = per_digit(erased, n=15)
log(run="e2_erased_per_digit", per_digit=pd0, others=round(float(np.mean([pd0[d] for d in OTH])), 3))

def run_imma(lam, outer_lr, per=100, seg=25, pres_null_rate=0.2, tau=5.0, tag=""):
  sample = exp._sample_fn(CFG.concept_batch, CFG.pres_batch, pres_null_rate)
  data_fn = exp._squeeze_first(sample)
  def attack_loss(th, phi, fr, batch, k):
    return concept_loss(mima.apply_kv_delta(th, phi), fr, batch, k)
  cfg = imma.IMMAConfig(attack_loss=attack_loss, pres_loss=pres_loss, scheme="truncated", inner_steps=3,
                        inner_lr=0.03, outer_lr=outer_lr, lam=lam, tau=tau)
  theta = theta_e
  for i, c in enumerate(CFG.concepts):
    st = imma.imma_init(theta, mima.kv_delta_init(theta, kv), cfg)
    data = (jnp.asarray(pools[c])[None], jnp.asarray([c], jnp.int32), data_pres)
    for j in range(per // seg):
      st, h = imma.train_loop(st, imma._imma_body, (frozen, data), jax.random.fold_in(key, 100 * i + j + 7), seg,
                              seg, False, "", static=(cfg, data_fn))
      params = imma.combine_params(st.theta_u, rest)
      pd = per_digit(params, n=15)
      log(run="e2_imma" + tag, lam=lam, outer_lr=outer_lr, pres_null_rate=pres_null_rate, tau=tau, concept=c,
          outer_step=(j + 1) * seg, hist={k: round(v, 4) for k, v in h[-1].items()},
          others=round(float(np.mean([pd[d] for d in OTH])), 3), others_min=min(pd[d] for d in OTH), per_digit=pd)
    theta = st.theta_u
  return imma.combine_params(theta, rest)

for spec in sys.argv[1:]:
  lam, lr = map(float, spec.split(","))
  run_imma(lam, lr)
