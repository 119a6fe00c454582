"""The cached schedule gives the same masks (and tuned weights) as the reference's naive schedule."""
import importlib

import pytest
import torch

from conftest import ARCHS, random_batches, tiny_model
from kprune_lib.method import schedules
from kprune_lib.encoder.arch import Arch
from kprune_lib.method.loop import kprune

HP = dict(lam_pred=1.0, lam_rep=2.5e-4, mu=64.0, temperature=2.0)


def run(arch, schedule, problem="classification", qa=False, constraint=0.5, **kw):
    model = tiny_model(arch, num_labels=1 if problem == "regression" else 2, qa=qa, layers=3)
    batches = random_batches(4, token_types=Arch(model).table.token_types)
    res = kprune(model, batches, problem, constraint=constraint, seq_len=10.0, schedule=schedule, progress=False,
                 **{**HP, **kw})
    return model, res


@pytest.mark.parametrize("teacher", ["held", "streamed"])
@pytest.mark.parametrize("arch", ARCHS)
def test_cached_equals_naive(arch, teacher, monkeypatch):
    """Both ways of the cached schedule — everything held (the teacher's Y_s from iteration 0, the target's
    projection inputs from its measurement pass), or lean (when the sums exceed TEACHER_SUMS_MAX_MB: the teacher
    streamed one sublayer per iteration, the inputs recomputed from X_s) — against the naive schedule, bit for bit."""
    if teacher == "streamed":
        monkeypatch.setattr(schedules, "TEACHER_SUMS_MAX_MB", 0)
    m1, cached = run(arch, "cached")
    m2, naive = run(arch, "naive")
    assert torch.equal(cached.head_mask, naive.head_mask)
    assert torch.equal(cached.neuron_mask, naive.neuron_mask)
    assert 0 < int(cached.neuron_mask.sum()) < cached.neuron_mask.numel()  # the case is not trivial
    # same operations on the same real-token inputs: the tuned weights agree bit for bit
    assert all(torch.equal(p1, p2) for p1, p2 in zip(m1.parameters(), m2.parameters()))
    for r1, r2 in zip(cached.sublayers, naive.sublayers):
        assert r1["rel_error_after_tuning"] == pytest.approx(r2["rel_error_after_tuning"], rel=1e-4, abs=1e-9)


def test_iteration_zero_runs_the_forward_only(monkeypatch):
    """At s = 0 the student is the teacher and the mask gradients vanish: no backward, K_pred exactly 0, and the
    same masks and weights as a run that back-propagates there (and gets rounding noise, as the reference does)."""
    prune_module = importlib.import_module("kprune_lib.method.loop")
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or grad(*a, **k))
    m1, forward_only = run("bert", "cached", record_knowledge=True)
    n_batches = len(calls) // 5  # 3 layers: backward passes at s = 1 … 5 only
    assert len(calls) == 5 * n_batches and n_batches > 0
    monkeypatch.setattr(prune_module, "predictive_gradient_vanishes", lambda *a: False)
    m2, backward = run("bert", "cached", record_knowledge=True)
    assert len(calls) == 5 * n_batches + 6 * n_batches
    k0 = {name: torch.cat([r.knowledge[0][t]["k_pred"] for t in range(6)]) for name, r in
          (("forward_only", forward_only), ("backward", backward))}
    assert not k0["forward_only"].any()
    assert float(k0["backward"].abs().max()) < 1e-12  # rounding noise
    assert torch.equal(forward_only.head_mask, backward.head_mask)
    assert torch.equal(forward_only.neuron_mask, backward.neuron_mask)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2)


@pytest.mark.parametrize("problem,qa", [("regression", False), ("qa", True)])
def test_cached_equals_naive_other_problems(problem, qa):
    m1, cached = run("bert", "cached", problem=problem, qa=qa)
    m2, naive = run("bert", "naive", problem=problem, qa=qa)
    assert torch.equal(cached.head_mask, naive.head_mask)
    assert torch.equal(cached.neuron_mask, naive.neuron_mask)
    assert all(torch.equal(p1, p2) for p1, p2 in zip(m1.parameters(), m2.parameters()))


@pytest.mark.parametrize("constraint", [0.3, 0.6, 0.9])
def test_budget_is_met(constraint):
    _, res = run("bert", "cached", constraint=constraint)
    assert res.flops_pruned <= (1 - constraint) * res.flops_dense
    assert len(res.sublayers) == 6 and all(r["kept"] <= r["units"] for r in res.sublayers)


def test_tuning_reduces_reconstruction_error_and_records_it():
    _, res = run("bert", "cached")
    for r in res.sublayers:
        assert r["rel_error_after_tuning"] <= r["rel_error_before_tuning"] + 1e-9
        assert r["tuned"] and r["seconds"] > 0
    _, untuned = run("bert", "cached", tuning=False)
    assert all(r["rel_error_after_tuning"] == pytest.approx(r["rel_error_before_tuning"]) for r in untuned.sublayers)


def test_ablations_change_the_ranking():
    _, both = run("bert", "cached")
    _, rep_only = run("bert", "cached", lam_pred=0.0)
    _, pred_only = run("bert", "cached", lam_rep=0.0)
    masks = [torch.cat([r.head_mask.flatten(), r.neuron_mask.flatten()]) for r in (both, rep_only, pred_only)]
    assert not torch.equal(masks[1], masks[2])


def test_pruned_tuned_model_is_closer_to_teacher_than_untuned():
    """KPWT must help: KL to the teacher on the sample is lower with tuning than without."""
    from kprune_lib.encoder.forward import encode
    from kprune_lib.method.measurement import predictive_loss, teacher_signal

    teacher = tiny_model("bert", layers=3)
    ta = Arch(teacher)
    batches = random_batches(4)
    with torch.no_grad():
        targets = [teacher_signal(ta.head(encode(ta, b)), "classification", 2.0) for b in batches]
    losses = {}
    for tuning in (True, False):
        model, _ = run("bert", "cached", tuning=tuning)
        a = Arch(model)
        with torch.no_grad():
            losses[tuning] = sum(float(predictive_loss(a.head(encode(a, b)), t, "classification", 2.0))
                                 for b, t in zip(batches, targets))
    assert losses[True] < losses[False]


@pytest.mark.parametrize("schedule", ["cached", "naive"])
def test_bf16_autocast_measurement_meets_budget(schedule):
    # reduced precision only in the measurement passes; tuning statistics and the solve stay float32/float64
    model, res = run("bert", schedule, autocast="bf16")
    assert res.flops_pruned <= 0.5 * res.flops_dense
    assert all(p.dtype == torch.float32 and bool(torch.isfinite(p).all()) for p in model.parameters())
    assert all(r["rel_error_after_tuning"] <= r["rel_error_before_tuning"] + 1e-6 for r in res.sublayers)
    _, exact = run("bert", schedule)
    differing = int((res.head_mask != exact.head_mask).sum() + (res.neuron_mask != exact.neuron_mask).sum())
    assert differing <= 0.25 * (res.head_mask.numel() + res.neuron_mask.numel())


def test_bf16_teacher_sums_held_or_streamed_agree(monkeypatch):
    """With autocast the teacher's Y_t come from a float32 pass: held from it, or streamed (lean), the same masks;
    lean also recomputes the tuning inputs from X_s (an FFN's kept rows only: another summation order, so the tuning
    errors agree to rounding)."""
    held_model, held = run("bert", "cached", autocast="bf16")
    monkeypatch.setattr(schedules, "TEACHER_SUMS_MAX_MB", 0)
    streamed_model, streamed = run("bert", "cached", autocast="bf16")
    assert torch.equal(held.head_mask, streamed.head_mask) and torch.equal(held.neuron_mask, streamed.neuron_mask)
    for r1, r2 in zip(held.sublayers, streamed.sublayers):
        assert r1["rel_error_after_tuning"] == pytest.approx(r2["rel_error_after_tuning"], rel=1e-3, abs=1e-7)


def test_unknown_autocast_is_refused():
    with pytest.raises(ValueError, match="autocast must be one of"):
        run("bert", "cached", autocast="int8")
