"""Knowledge measurement does not depend on how the sample is batched for compute (issue: real tokens only).

Per-example mask rows give each example's own gradient from one backward; regrouped by sample batch they give the
paper's squared batch-mean gradient exactly, so length-sorted compute batches yield the masks of the draw order."""
import pytest
import torch

from conftest import random_batches, tiny_model
from kprune_lib.encoder.arch import Arch
from kprune_lib.data.batching import padded_tokens, sample_batches
from kprune_lib.encoder.forward import encode
from kprune_lib.encoder.masks import apply_masks
from kprune_lib.method.measurement import (empirical_fisher, group_gradients, predictive_knowledge, predictive_loss,
                                    teacher_signal)
from kprune_lib.method.loop import kprune

HP = dict(lam_pred=1.0, lam_rep=2.5e-4, mu=64.0, temperature=2.0)


def features(n=40, seed=0, vocab=99, labels=False):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(3, 15, (1,), generator=g))
        f = {"input_ids": torch.randint(5, vocab, (length,), generator=g).tolist(), "token_type_ids": [0] * length}
        if labels:
            f["label"] = i % 2
        out.append(f)
    return out


def test_sorted_batches_keep_the_sample_and_its_grouping():
    feats = features()
    drawn = sample_batches(feats, 8, pad_id=1, batch_tokens=0)
    sorted_ = sample_batches(feats, 8, pad_id=1, batch_tokens=40)
    assert [b["group"].tolist() for b in drawn] == [[j] * 8 for j in range(5)]
    assert all(b["input_ids"].numel() <= 40 or b["input_ids"].shape[0] == 1 for b in sorted_)
    # the same examples, each in its own sample batch
    rows = lambda bs: sorted((int(g), tuple(ids[m.bool()].tolist())) for b in bs
                             for g, ids, m in zip(b["group"], b["input_ids"], b["attention_mask"]))
    assert rows(drawn) == rows(sorted_)
    assert padded_tokens(sorted_) < padded_tokens(drawn)


def _partition_cost(lengths, bounds, overhead):
    return sum(overhead + (b - a) * lengths[b - 1] for a, b in bounds)


@pytest.mark.parametrize("seed", range(4))
def test_length_partition_is_the_cheapest_cut(seed):
    """The dynamic programme equals brute force over all 2^(n-1) cuts of a sorted length list, within the cap."""
    import itertools
    import random

    from kprune_lib.data.batching import length_partition

    rng = random.Random(seed)
    lengths = sorted(rng.randint(3, 30) for _ in range(11))
    cap, overhead = 64, rng.choice([0, 8, 40])
    best = None
    for cuts in itertools.product([False, True], repeat=len(lengths) - 1):
        edges = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [len(lengths)]
        bounds = list(zip(edges[:-1], edges[1:]))
        if all((b - a) * lengths[b - 1] <= cap or b - a == 1 for a, b in bounds):
            cost = _partition_cost(lengths, bounds, overhead)
            best = cost if best is None else min(best, cost)
    got = length_partition(lengths, cap, overhead)
    assert [a for a, _ in got][1:] == [b for _, b in got][:-1] and got[0][0] == 0 and got[-1][1] == len(lengths)
    assert all((b - a) * lengths[b - 1] <= cap or b - a == 1 for a, b in got)
    assert _partition_cost(lengths, got, overhead) == best
    if overhead == 0:  # nothing to save by merging: no padding at all
        assert all(lengths[a] == lengths[b - 1] for a, b in got)


def test_regrouped_example_gradients_equal_the_batch_gradient():
    """Σ over sample batches of ½ (∂ batch-mean loss/∂m)², from per-example rows of any compute order."""
    model = tiny_model("bert")
    arch = Arch(model)
    model.requires_grad_(False)
    feats = features(24)
    drawn = sample_batches(feats, 8, pad_id=1, batch_tokens=0)
    with torch.no_grad():
        targets = {j: teacher_signal(arch.head(encode(arch, b)) + 0.3 * torch.randn(b["input_ids"].shape[0], 2),
                                     "classification", 2.0) for j, b in enumerate(drawn)}
    s = 1  # the FFN of layer 0
    width = arch.out_proj(s).in_features
    expected = torch.zeros(width, dtype=torch.float64)
    for j, b in enumerate(drawn):  # the paper's form: one shared mask per batch, batch-mean loss
        m = torch.ones(width, requires_grad=True)
        with apply_masks(arch, {s: m}):
            loss = predictive_loss(arch.head(encode(arch, b)), targets[j], "classification", 2.0)
        expected += 0.5 * torch.autograd.grad(loss, m)[0].double() ** 2
    sorted_ = sample_batches(feats, 8, pad_id=1, batch_tokens=50)
    sums = torch.zeros(3, width, dtype=torch.float64)
    fisher = torch.zeros(width, dtype=torch.float64)
    for b in sorted_:  # per-example rows, summed loss, any order
        B = b["input_ids"].shape[0]
        m = torch.ones(B, width, requires_grad=True)
        tgt = torch.stack([_target_of(drawn, targets, b, i) for i in range(B)])
        with apply_masks(arch, {s: m}):
            loss = predictive_loss(arch.head(encode(arch, b)), tgt, "classification", 2.0, reduction="sum")
        g = torch.autograd.grad(loss, m)[0]
        sums += group_gradients(g, b["group"], 3)
        fisher += empirical_fisher(g, torch.full((B,), 8))
    got = predictive_knowledge(sums, torch.tensor([8, 8, 8]))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-12)
    assert bool((fisher > got).any())  # the per-example form is a different quantity (examples do not cancel)


def _target_of(drawn, targets, b, i):
    """The teacher target of row i of compute batch b, found by its tokens in the draw-order batches."""
    ids = b["input_ids"][i][b["attention_mask"][i].bool()]
    g = int(b["group"][i])
    db = drawn[g]
    for r in range(db["input_ids"].shape[0]):
        if torch.equal(db["input_ids"][r][db["attention_mask"][r].bool()], ids):
            return targets[g][r]
    raise AssertionError("row not found")


@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_sorted_compute_gives_the_draw_order_masks(problem):
    feats = features(48, labels=True)
    results = {}
    for bt in (0, 60):
        model = tiny_model("bert", num_labels=1 if problem == "regression" else 2, layers=3)
        batches = sample_batches(feats, 8, pad_id=1, batch_tokens=bt)
        results[bt] = (model, kprune(model, batches, problem, constraint=0.6, seq_len=10.0, progress=False, **HP))
    (m0, r0), (m1, r1) = results[0], results[60]
    assert torch.equal(r0.head_mask, r1.head_mask) and torch.equal(r0.neuron_mask, r1.neuron_mask)
    assert 0 < int(r0.neuron_mask.sum()) < r0.neuron_mask.numel()
    # tuned weights: the same least-squares problems, summed in another order (tiny sample: ill-conditioned)
    for p0, p1 in zip(m0.parameters(), m1.parameters()):
        torch.testing.assert_close(p0, p1, rtol=1e-2, atol=1e-3)
    for a, b in zip(r0.sublayers, r1.sublayers):
        assert a["rel_error_after_tuning"] == pytest.approx(b["rel_error_after_tuning"], rel=1e-3, abs=1e-7)


def test_kprune_plus_candidates_change_the_measurement_and_meet_the_budget():
    feats = features(48, labels=True)
    runs = {}
    for name, kw in (("paper", {}), ("example", {"pred_knowledge": "example"}), ("gold", {"gold_first": True})):
        model = tiny_model("bert", layers=3)
        batches = sample_batches(feats, 8, pad_id=1, batch_tokens=0)
        res = kprune(model, batches, "classification", constraint=0.6, seq_len=10.0, progress=False,
                     record_knowledge=True, **HP, **kw)
        assert res.flops_pruned <= 0.4 * res.flops_dense
        runs[name] = res
    masks = {k: torch.cat([r.head_mask.flatten(), r.neuron_mask.flatten()]) for k, r in runs.items()}
    assert not torch.equal(masks["paper"], masks["example"])
    # at s = 0 the student is the teacher: no predictive signal in the paper's form, a real one from gold labels
    k0 = {k: torch.cat([r.knowledge[0][t]["k_pred"] for t in range(6)]) for k, r in runs.items()}
    assert float(k0["paper"].abs().max()) < 1e-10
    assert float(k0["gold"].max()) > 1e-4


def test_gold_first_needs_labels():
    model = tiny_model("bert")
    with pytest.raises(ValueError, match="gold labels"):
        kprune(model, random_batches(2), "classification", constraint=0.5, seq_len=10.0, progress=False,
               gold_first=True, **HP)


@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_gauss_newton_knowledge_equals_brute_force(problem):
    """Σ_k ½ (∂y_k/∂m_i)² from `curvature_projections` == ½ J_iᵀ H_i J_i with J from autograd per example."""
    from kprune_lib.method.measurement import curvature_projections

    model = tiny_model("bert", num_labels=1 if problem == "regression" else 3)
    arch = Arch(model)
    model.requires_grad_(False)
    b = sample_batches(features(5), 8, pad_id=1, batch_tokens=0)[0]
    s, width, B = 1, arch.out_proj(1).in_features, 5
    m = torch.ones(B, width, requires_grad=True)
    with apply_masks(arch, {s: m}):
        out = arch.head(encode(arch, b))
    got = torch.zeros(B, width, dtype=torch.float64)
    ys = curvature_projections(out, problem, 2.0)
    for k, y in enumerate(ys):
        got += 0.5 * torch.autograd.grad(y, m, retain_graph=True)[0].double() ** 2
    C = out.shape[-1]
    for i in range(B):
        J = torch.stack([torch.autograd.grad(out[i, c], m, retain_graph=True)[0][i] for c in range(C)]).double()
        if problem == "regression":
            H = torch.full((1, 1), 2.0, dtype=torch.float64)
        else:
            q = torch.softmax(out[i].detach().double() / 2.0, dim=-1)
            H = torch.diag(q) - torch.outer(q, q)
        expected = 0.5 * torch.einsum("cw,cd,dw->w", J, H, J)
        torch.testing.assert_close(got[i], expected, rtol=1e-4, atol=1e-9)
    assert float(got.max()) > 0


def test_gauss_newton_needs_one_backward_per_nonzero_direction():
    from kprune_lib.method.measurement import curvature_projections

    torch.manual_seed(0)
    assert len(curvature_projections(torch.randn(8, 2), "classification", 2.0)) == 1  # binary: rank one
    assert len(curvature_projections(torch.randn(8, 3), "classification", 2.0)) == 2  # C classes: rank C − 1
    assert len(curvature_projections(torch.randn(8, 1), "regression", 2.0)) == 1
