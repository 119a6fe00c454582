"""Run inside the stock environment (tests/stock_env.py): load pruned folders with plain transformers.

argv: a JSON job {"cases": [{"name", "dir", "auto", "inputs"}], "tokenizer_dir", "out", "report"}. For every case:
loading without trust_remote_code must be refused; with it, the outputs are written to `out` (safetensors).
"""
import json
import sys

job = json.load(open(sys.argv[1]))
report = {"refused": {}, "modules": {}}
try:
    import kprune_lib  # noqa: F401
    report["kprune_importable"] = True
except ImportError:
    report["kprune_importable"] = False

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

outputs = {}
for case in job["cases"]:
    auto = getattr(transformers, case["auto"])
    try:
        auto.from_pretrained(case["dir"])
        report["refused"][case["name"]] = None
    except ValueError as e:
        report["refused"][case["name"]] = str(e)
    model = auto.from_pretrained(case["dir"], trust_remote_code=True).eval()
    report["modules"][case["name"]] = type(model).__module__
    with torch.no_grad():
        out = model(**load_file(case["inputs"]))
    for key in ("logits", "start_logits", "end_logits", "last_hidden_state"):
        if key in out:
            outputs[f"{case['name']}/{key}"] = out[key].contiguous()
try:
    transformers.AutoConfig.from_pretrained(job["cases"][0]["dir"])
    report["config_refused"] = None
except ValueError as e:
    report["config_refused"] = str(e)
tok = transformers.AutoTokenizer.from_pretrained(job["tokenizer_dir"], trust_remote_code=True)
report["tokenized"] = tok("w1 w2 w3")["input_ids"]
save_file(outputs, job["out"])
json.dump(report, open(job["report"], "w"))
