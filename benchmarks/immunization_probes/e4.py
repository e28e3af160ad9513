exec(open("benchmarks/immunization_probes/explore.py").read())
# CFG hypothesis: does the K/V attack move the null (unconditional) branch along with the concept branch?
def acc_mixed(params_c, params_u, digit, guidance, n=60):
  import jax.numpy as jnp
  from jaxgen.core import ode
  module = exp.build_module(CFG.model)
  toks = jnp.full((n,), digit, jnp.int32)
  cond, null = exp.contexts(CFG.model, toks), exp.contexts(CFG.model, jnp.full_like(toks, exp.NULL_TOKEN))
  x0 = jax.random.normal(jax.random.fold_in(key, 7 + digit), (n, 28, 28, 1))
  def vel(t, x):
    tb = jnp.broadcast_to(t, (n,))
    vu = module.apply(params_u, x, tb, None, null)
    return vu + guidance * (module.apply(params_c, x, tb, None, cond) - vu)
  img = jax.jit(lambda x: ode.odeint(vel, x, ode.uniform_grid(20), "euler"))(x0)
  _, logits = ev.features_and_logits(np.asarray(img))
  return round(float(np.mean(np.argmax(logits, -1) == digit)), 3)
for c in CFG.concepts:
  ck, _ = attack(erased, c, "relearn", 1e-2, steps=100, n_img=20, record=100)
  p = ck[-1][1]
  log(run="e4_cfg_probe", concept=c, attack="relearn kv 1e-2 20img step100",
      w2_attacked_both=acc_mixed(p, p, c, 2.0), w1_cond_only=acc_mixed(p, p, c, 1.0),
      w2_null_from_erased=acc_mixed(p, erased, c, 2.0), w4_attacked_both=acc_mixed(p, p, c, 4.0))
