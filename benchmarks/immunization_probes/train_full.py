import time
from jaxgen.experiments import immunization as exp
t=time.time()
m = exp.train_model(exp.Config.full().model, progress=False)
print("model done", time.time()-t, m.history[-1], flush=True)
