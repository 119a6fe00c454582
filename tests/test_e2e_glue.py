"""End to end on the real fine-tuned MiniLM fixtures, with a small token budget (CI-sized)."""
import json

import pytest

from conftest import GLUE_DIR, MODELS_DIR, needs_shared
from kprune_lib.cli import main
from kprune_lib.artifacts.checkpoint import load_model

pytestmark = [pytest.mark.e2e, needs_shared(MODELS_DIR / "minilm-l6-mrpc"), needs_shared(GLUE_DIR)]
SUMMARY_KEYS = {"task", "model", "constraint", "num_tokens", "seed", "flops_dense", "flops_pruned", "flops_removed",
                "params_dense", "params_pruned", "metric", "dense", "pruned", "heads_kept", "neurons_kept",
                "pruning_seconds", "device"}


@pytest.mark.parametrize("task,tokens,tolerance", [("mrpc", 3000, 0.06), ("stsb", 2000, 0.04)])
def test_prune_reload_evaluate(tmp_path, capsys, task, tokens, tolerance):
    out = tmp_path / "run"
    code = main(["prune", "--model", str(MODELS_DIR / f"minilm-l6-{task}"), "--task", task, "--data-dir", str(GLUE_DIR),
                 "--constraint", "0.5", "--num-tokens", str(tokens), "--seed", "0", "--output", str(out), "--quiet"])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(s)
    assert s["flops_removed"] >= 0.5
    assert s["params_pruned"] < s["params_dense"]
    m = s["metric"]
    assert s["pruned"][m] >= s["dense"][m] - tolerance, (s["dense"], s["pruned"])
    # the saved model is physically smaller and reloads with the same metrics
    pruned, _ = load_model(str(out / "model"))
    assert sum(p.numel() for p in pruned.parameters()) == s["params_pruned"]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model"), "--task", task, "--data-dir", str(GLUE_DIR), "--quiet"]) == 0
    reloaded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k, v in s["pruned"].items():
        assert reloaded[k] == pytest.approx(v, abs=1e-6)
    meta = json.loads((out / "model" / "kprune.json").read_text())
    assert [len(h) for h in meta["kept_heads"]] == s["heads_kept"]
    assert meta["hyperparameters"]["lam_rep"] == 2.5e-4
