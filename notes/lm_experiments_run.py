import sys, json, time, logging, shutil, os
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
sys.path.insert(0, "/work/main/configs")
import demo_decoder
from arc_jax.demo.decoder_lm import train_lm, evaluate_lm
name = sys.argv[1]
cfg = demo_decoder.get_config()
cfg.data.dir = "/tmp/lm_proto/data"  # usage: python notes/lm_experiments_run.py NAME field=python_literal ...
cfg.probe_every = 100
for kv in sys.argv[2:]:
    k, v = kv.split("=")
    node = cfg
    *path, last = k.split(".")
    for p in path: node = node[p]
    node[last] = eval(v)
wd = f"/tmp/lm_proto/runs/{name}"
shutil.rmtree(wd, ignore_errors=True)
s = train_lm(cfg, wd)
print("RESULT", name, sys.argv[2:], s["params"], s["seconds"], s["first_loss"], s["final_loss"])
if os.environ.get("EVAL"):
    t = time.time()
    r = evaluate_lm(f"{wd}/decoder", cfg.data.dir, f"{wd}/eval", max_examples=int(os.environ["EVAL"]))
    print(json.dumps({k: v for k, v in r.items() if k != "settings"})[:2000], time.time() - t)
