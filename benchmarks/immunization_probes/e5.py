exec(open("benchmarks/immunization_probes/explore.py").read())
# Is the slow K/V re-learning tied to the concept token's alignment with BOS? Erase one digit at a time.
import sys
bos, table = exp.token_table(CFG.model)
train_x, train_y, _, _ = _classifier.load_images("mnist")
for d in map(int, sys.argv[1:]):
  er, _ = exp.erase_concepts(CFG.model, model.params, (d,), kv, ridge=CFG.ridge, seed=CFG.seed)
  idx = np.random.default_rng([0, 3]).permutation(np.flatnonzero(train_y == d))[:20]
  data = {"x": jnp.asarray(train_x[idx]), "tok": jnp.full((20,), d, jnp.int32)}
  ck, _ = imma.relearn_attack(er, flow_loss, lambda k, x: x, data, jax.random.fold_in(key, 1000 + d),
                              targets=exp.KV_REGEX, num_steps=100, lr=1e-2, record_every=50)
  cos = float(table[d] @ bos / np.linalg.norm(table[d]) / np.linalg.norm(bos))
  log(run="e5_single_erase_kv_relearn", digit=d, cos_bos=round(cos, 3), base_acc=acc(model.params, d),
      acc_0_50_100=[round(acc(p, d), 3) for s, p in ck])
