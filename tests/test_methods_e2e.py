"""Every method of the registry runs end to end through the real API, for every task kind and budget kind it
declares: a tiny checkpoint on disk -> `kprune_lib.method.loop` (data files, sample draw, the loop, physical pruning,
evaluation, the atomic writer) -> summary.json and OUT/model/ -> reload -> the same metrics.

The cases are generated from `methods.REGISTRY`: a method added there is in this test without editing it.
Classification runs at two FLOPs budgets, the second high enough to empty a sublayer; each method that takes a
latency budget also runs with one (a table measured on the tiny model).
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from conftest import GLUE_DIR, ROOT, needs_shared
from kprune_lib import api
from kprune_lib.artifacts.checkpoint import load_model
from kprune_lib.method.methods import REGISTRY
from squad_helpers import DEV, MINILM, one_thread, tiny_checkpoint, write_slice  # noqa: F401 (one_thread: autouse)

pytestmark = [needs_shared(MINILM), needs_shared(GLUE_DIR / "MRPC"), needs_shared(GLUE_DIR / "STS-B"),
              needs_shared(DEV)]
TASK = {"classification": "mrpc", "regression": "stsb", "qa": "squad", "token": None}  # token: your own files
_spec = importlib.util.spec_from_file_location("ner_corpus", ROOT / "benchmarks" / "ner_corpus.py")
ner_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ner_corpus)
HIGH = 0.9  # removes enough to empty at least one sublayer of the tiny model (asserted)


def _cases():
    for m in REGISTRY.values():
        for problem in m.problems:
            yield pytest.param(m.name, problem, ("flops", 0.5), id=f"{m.name}-{problem}-flops0.5")
        if "classification" in m.problems:
            yield pytest.param(m.name, "classification", ("flops", HIGH), id=f"{m.name}-classification-flops{HIGH}")
            if "latency" in m.budgets:
                yield pytest.param(m.name, "classification", ("latency", 0.6), id=f"{m.name}-classification-latency")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    glue = root / "glue"
    for task, n_train, n_dev in (("MRPC", 120, 40), ("STS-B", 120, 40)):
        (glue / task).mkdir(parents=True)
        for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
            lines = (GLUE_DIR / task / name).read_text(encoding="utf-8-sig").splitlines(keepends=True)
            (glue / task / name).write_text("".join(lines[:n + 1]))
    return {"root": root, "glue": glue, "slice": write_slice(root / "squad.json", n_paragraphs=1),
            "classification": tiny_checkpoint(root / "classification", "classification"),
            "regression": tiny_checkpoint(root / "regression", "classification", num_labels=1),
            "qa": tiny_checkpoint(root / "qa", "qa"),
            "token": tiny_checkpoint(root / "token", "token", label_names=ner_corpus.LABELS),
            "ner": {"train_file": str(ner_corpus.write(ner_corpus.corpus(GLUE_DIR, "train", 120), root / "ner.jsonl")),
                    "validation_file": str(ner_corpus.write(ner_corpus.corpus(GLUE_DIR, "validation", 40),
                                                            root / "ner-dev.jsonl"))}}


@pytest.fixture(scope="module")
def latency_budget_ms(inputs):
    """A feasible budget for the tiny model (batch 2 × 8 tokens, 1 thread): a fraction of the way from its floor to
    its dense latency, from the table the prune then reads from the same cache folder."""
    from kprune_lib.costs.latency import latency_table

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KPRUNE_CACHE_DIR", str(inputs["root"] / "cache"))
        model, _ = load_model(str(inputs["classification"]), device=torch.device("cpu"))
        lo, hi = latency_table(model, 2, 8, torch.device("cpu"), 1, progress=False).feasible()
    return lambda fraction: lo + fraction * (hi - lo)


@pytest.mark.parametrize("method,problem,budget", list(_cases()))
def test_every_method_prunes_saves_and_reloads(method, problem, budget, inputs, latency_budget_ms, tmp_path,
                                               monkeypatch):
    monkeypatch.setenv("KPRUNE_CACHE_DIR", str(inputs["root"] / "cache"))  # the latency fixture's table
    kind, value = budget
    task = TASK[problem]
    out = tmp_path / "out"
    args = dict(data_dir=str(inputs["glue"])) if problem not in ("qa", "token") else \
        dict(eval_file=str(inputs["slice"]), split_articles=0.5) if problem == "qa" else inputs["ner"]
    budget_args = dict(constraint=value) if kind == "flops" else \
        dict(latency_budget_ms=latency_budget_ms(value), latency_batch=2, latency_seq=8, threads=1,
             latency_table_policy="keep")  # the fixture's table, even if the machine's load changed since
    summary = api.prune(str(inputs[problem]), task, str(out), device="cpu", progress=False, method=method,
                        num_tokens=1000, **budget_args, **args)

    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["method"] == (method if method != "kprune" or summary["hyperparameters"]["tuning"] else
                                 "kprune-no-tuning")
    assert summary["hyperparameters"] == {**summary["hyperparameters"], **REGISTRY[method].settings}
    if kind == "flops":
        assert summary["flops_removed"] >= value - 1e-9 and summary["flops_pruned"] < summary["flops_dense"]
    elif REGISTRY[method].latency_model == "table":
        assert summary["predicted_latency_ms"] <= summary["latency_budget_ms"] + 1e-9
    else:  # kwon: within the budget by its piecewise-linear fits (less than one neuron's slope over at most)
        split = summary["stages"][0]["split"]
        assert split["fitted_ms"] <= split["budget_ms"] + split["fit"]["ffn"]["slope"] + 1e-12
        assert summary["predicted_latency_ms"] > 0 and summary["budget_miss"] in (None, "over", "under")
    kept = summary["heads_kept"] + summary["neurons_kept"]
    if value == HIGH:
        assert 0 in kept, f"{HIGH} removed should empty a sublayer: kept {kept}"
    assert len(summary["sublayers"]) == 2 * len(summary["heads_kept"])
    metric = summary["metric"]
    assert all(torch.isfinite(torch.tensor(float(v))) for v in summary["pruned"].values())

    # the physical model: smaller, its shape is the masks', and it reloads with the same metrics
    model, _ = load_model(str(out / "model"))
    assert sum(p.numel() for p in model.parameters()) == summary["params_pruned"] < summary["params_dense"]
    meta = json.loads((out / "model" / "kprune.json").read_text())
    assert [len(h) for h in meta["kept_heads"]] == summary["heads_kept"]
    assert [len(n) for n in meta["kept_neurons"]] == summary["neurons_kept"]
    again = api.evaluate(str(out / "model"), task, device="cpu", progress=False,
                         **{k: v for k, v in args.items() if k != "train_file"})
    assert again[metric] == pytest.approx(summary["pruned"][metric], abs=1e-6)
    # the collapse flag: measured for GLUE (one class / a near-constant on the dev set), and the reloaded model's
    if problem == "qa":
        assert summary["collapsed"] == {"dense": None, "pruned": None}
    else:
        assert all(isinstance(v, bool) for v in summary["collapsed"].values())  # (the tiny dense model predicts one class)
        assert again.collapsed == summary["collapsed"]["pruned"]
