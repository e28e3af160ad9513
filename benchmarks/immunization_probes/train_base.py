import dataclasses, time, sys
from jaxgen.experiments import immunization as exp, _classifier
t=time.time()
cfg = dataclasses.replace(exp.Config.full(), model=dataclasses.replace(exp.ModelConfig(), num_steps=2000))
ev = _classifier.get_evaluator(cfg.classifier, progress=False)
print("classifier", ev.test_accuracy, time.time()-t, flush=True)
m = exp.train_model(cfg.model, progress=False)
print("model done", time.time()-t, m.history[-1], flush=True)
