"""One knowledge measurement: what the workbook measures (notebook 01, `workbook.steps.measure_knowledge`) is what
the loop recorded, recomputed on the loop's own state."""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import random_batches, tiny_model
from kprune_lib.data.batching import sample_batches
from kprune_lib.encoder.arch import Arch
from kprune_lib.method.loop import kprune
from kprune_lib.workbook import steps

HP = dict(lam_pred=1.0, lam_rep=2.5e-4, mu=64.0, temperature=2.0)


def grouped_batches():
    """Compute batches cut by length (the default), each row tagged with its sample batch: the case where a
    measurement that takes one gradient per compute batch would differ from the paper's per sample batch."""
    feats = []
    for b in random_batches(4, batch=6, max_len=14, seed=3):
        for i in range(b["input_ids"].shape[0]):
            n = int(b["attention_mask"][i].sum())
            feats.append({"input_ids": b["input_ids"][i, :n].tolist(), "token_type_ids": [0] * n})
    return sample_batches(feats, 6, pad_id=1, batch_tokens=40)


@pytest.mark.parametrize("schedule", ["cached", "naive"])
def test_workbook_measurement_equals_the_loops_record(schedule):
    """The last iteration (s = 2L − 1) measures the last FFN with every other sublayer decided and tuned. The pruned
    model with that FFN's output projection put back as it was before its own tuning IS the student of that
    iteration, so measuring it against the dense model's outputs must give the recorded K_pred, K_rep and score."""
    dense = tiny_model("bert", layers=2, ffn=24)
    batches = grouped_batches()
    assert len(batches) != len({int(g) for b in batches for g in b["group"]})  # compute batches ≠ sample batches
    model = copy.deepcopy(dense)
    result = kprune(model, batches, "classification", constraint=0.6, seq_len=10.0, schedule=schedule,
                    progress=False, record_knowledge=True, **HP)
    last = 2 * Arch(model).num_layers - 1
    with torch.no_grad():  # the student of iteration `last`: its own target not tuned yet
        Arch(model).out_proj(last).weight.copy_(Arch(dense).out_proj(last).weight)
        Arch(model).out_proj(last).bias.copy_(Arch(dense).out_proj(last).bias)
    teacher = steps.model_outputs(dense, batches)
    measured = steps.measure_knowledge(model, batches, teacher, "classification", HP["temperature"])
    recorded = result.knowledge[last][last]
    assert float(recorded["k_pred"].abs().sum()) > 0  # a real predictive signal, not the s = 0 zeros
    for key in ("k_pred", "k_rep"):
        torch.testing.assert_close(measured[last][key], recorded[key], rtol=1e-4, atol=1e-9, msg=key)


def test_iteration_zero_record_is_the_dense_models_knowledge():
    dense = tiny_model("bert", layers=2, ffn=24)
    batches = grouped_batches()
    result = kprune(copy.deepcopy(dense), batches, "classification", constraint=0.5, seq_len=10.0, progress=False,
                    record_knowledge=True, **HP)
    measured = steps.measure_knowledge(dense, batches, steps.model_outputs(dense, batches), "classification",
                                       HP["temperature"])
    for t, rec in result.knowledge[0].items():
        torch.testing.assert_close(measured[t]["k_rep"], rec["k_rep"], rtol=1e-6, atol=0, msg=f"K_rep {t}")
        # the loop skips iteration 0's backward (student = teacher: the gradient vanishes); measured, it is noise
        assert float(measured[t]["k_pred"].abs().max()) < 1e-10 and float(rec["k_pred"].abs().max()) == 0.0
