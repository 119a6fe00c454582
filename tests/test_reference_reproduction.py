"""The authors' code on the shared MRPC fixture (../shared/reference/mrpc.jsonl), reproduced unit for unit.

Same checkpoint, data, seed and settings (20 000 tokens, 80 % of FLOPs removed, seed 0): the kept heads and neurons
of every layer and the dev metrics must equal the authors'. `benchmarks/reference_check.py` checks every entry."""
import json

import pytest

from conftest import GLUE_DIR, MODELS_DIR, SHARED, needs_shared
from kprune_lib.api import prune

REFERENCE = SHARED / "reference" / "mrpc.jsonl"
pytestmark = [pytest.mark.e2e, needs_shared(REFERENCE), needs_shared(MODELS_DIR / "minilm-l6-mrpc"),
              needs_shared(GLUE_DIR)]


def reference_entry(constraint: float, seed: int) -> dict:
    for line in REFERENCE.read_text().splitlines():
        r = json.loads(line)
        if r["constraint"] == constraint and r["seed"] == seed:
            return r
    raise LookupError(f"no reference entry for constraint {constraint}, seed {seed}")


def test_reproduces_the_authors_masks_and_metrics(tmp_path):
    ref = reference_entry(0.8, 0)
    summary = prune(str(MODELS_DIR / "minilm-l6-mrpc"), "mrpc", str(tmp_path / "run"), data_dir=str(GLUE_DIR),
                    device="cpu", progress=False, constraint=ref["constraint"], num_tokens=ref["num_tokens"],
                    seed=ref["seed"], method="kprune")
    meta = json.loads((tmp_path / "run" / "model" / "kprune.json").read_text())
    assert summary["sample_examples"] == ref["n_samples"]
    assert meta["kept_heads"] == ref["kept_heads"]
    assert meta["kept_neurons"] == ref["kept_neurons"]
    for k, v in ref["dense"].items():
        assert summary["dense"][k] == pytest.approx(v, abs=1e-9)
    for k, v in ref["pruned"].items():
        assert summary["pruned"][k] == pytest.approx(v, abs=1e-9), (summary["pruned"], ref["pruned"])
