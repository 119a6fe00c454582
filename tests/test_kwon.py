"""`--method kwon` (kprune_lib/method/kwon.py): Kwon et al. (2022) pinned stage by stage against cases restated from
the authors' code (WoosukKwon/retraining-free-pruning 806ac5a) — the MAC accounting, search_mac against exhaustive
enumeration, rearrange_mask against brute force and against its rule restated step by step, rescale_mask's normal
equations against an explicitly built least-squares problem read off the Hugging Face forward, its LSMR solve against
a direct solve, the folding of the mask values into the weights — and, where ../shared has it, against the authors'
own run on the MRPC fixture (../shared/reference/kwon-mrpc.jsonl)."""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math

import numpy as np
import pytest
import torch

from conftest import ARCHS, GLUE_DIR, MODELS_DIR, SHARED, needs_shared, random_batches, tiny_model
from kprune_lib.config import PruneConfig
from kprune_lib.costs.flops import head_flops, model_flops, neuron_flops
from kprune_lib.data.batching import sample_indices
from kprune_lib.encoder.arch import TABLES, Arch
from kprune_lib.encoder.forward import attention_bias
from kprune_lib.encoder.masks import apply_masks, head_dims, sublayer_masks
from kprune_lib.encoder.physical import prune_physically
from kprune_lib.method import kwon as K
from kprune_lib.method.baselines import run_method
from kprune_lib.method.methods import REGISTRY

# the architectures kwon prunes: post-norm blocks with a plain FFN (it refuses ModernBERT: test_modernbert.py)
KWON_ARCHS = [a for a in ARCHS if not (TABLES[a].pre_norm or TABLES[a].gated_ffn)]

SEQ = 10.0
REFERENCE = SHARED / "reference" / "kwon-mrpc.jsonl"


def labelled(problem: str = "classification", n_batches: int = 4, seed: int = 0, batch: int = 4):
    g = torch.Generator().manual_seed(seed)
    batches = random_batches(n_batches, batch=batch, seed=seed)
    for b in batches:
        B = b["input_ids"].shape[0]
        b["labels"] = torch.randint(0, 2, (B,), generator=g) if problem == "classification" else \
            torch.rand(B, generator=g) * 5
    return batches


def with_biases(model, seed: int = 1):
    """Nonzero biases (and LayerNorm shifts) everywhere, so that a dropped or moved bias shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


# ---- the sample and the MAC accounting ---------------------------------------------------------------------------
def test_the_sample_is_main_pys_draw():
    """main.py: set_seed(seed) (numpy's global seed) then np.random.choice(len(train), num_samples): 2048 draws
    with replacement, not derived from a token budget and not capped by the pool."""
    assert REGISTRY["kwon"].sample_examples == K.NUM_SAMPLES == 2048
    for seed, pool in ((0, 3668), (3, 100)):
        np.random.seed(seed)
        theirs = np.random.choice(pool, 2048)
        assert sample_indices(pool, 10, 53.24, seed, examples=2048).tolist() == theirs.tolist()
    assert sample_indices(3668, 100_000, 53.24, 0).numel() == 1878  # the token-budget draw is unchanged


@pytest.mark.parametrize("arch", KWON_ARCHS)
def test_their_macs_are_half_our_flops_so_the_kept_fractions_agree(arch):
    a = Arch(tiny_model(arch))
    for seq in (SEQ, 53.24):
        assert 2 * K.mac_per_head(seq, a.hidden, a.head_size) == pytest.approx(head_flops(seq, a.hidden, a.head_size),
                                                                              rel=1e-15)
        assert 2 * K.mac_per_neuron(seq, a.hidden) == pytest.approx(neuron_flops(seq, a.hidden), rel=1e-15)
        heads, neurons = [a.num_heads, 1], [0, a.ffn_size // 3]
        mac = sum(h * K.mac_per_head(seq, a.hidden, a.head_size) + n * K.mac_per_neuron(seq, a.hidden)
                  for h, n in zip(heads, neurons))
        mac_dense = 2 * (a.num_heads * K.mac_per_head(seq, a.hidden, a.head_size)
                         + a.ffn_size * K.mac_per_neuron(seq, a.hidden))
        flops = model_flops(heads, neurons, seq, a.hidden, a.head_size)
        flops_dense = model_flops([a.num_heads] * 2, [a.ffn_size] * 2, seq, a.hidden, a.head_size)
        assert mac / mac_dense == pytest.approx(flops / flops_dense, rel=1e-14)
    assert K.mac_kept(0.6) == pytest.approx(0.4) and K.mac_kept(0.5) == 0.5  # their 0.4 kept = our 0.6 removed
    assert K.teacher_mac(0.5) == pytest.approx(math.sqrt(0.5))  # get_pruning_schedule(0.5, num_iter=2)[0]


# ---- search_mac ----------------------------------------------------------------------------------------------------
def exhaustive(imp_h, imp_n, mh, mn, max_mac):
    """Every split (at least one head) within the MAC budget; the largest summed importance."""
    (L, H), N = imp_h.shape, imp_n.shape[1]
    h, n = imp_h.flatten().double(), imp_n.flatten().double()
    best, arg = -1.0, None
    for hs in itertools.product((0, 1), repeat=L * H):
        if sum(hs) == 0 or sum(hs) * mh > max_mac:
            continue
        for ns in itertools.product((0, 1), repeat=L * N):
            if sum(hs) * mh + sum(ns) * mn > max_mac:
                continue
            value = float(h @ torch.tensor(hs, dtype=torch.float64) + n @ torch.tensor(ns, dtype=torch.float64))
            if value > best:
                best, arg = value, (hs, ns)
    return torch.tensor(arg[0], dtype=torch.bool).view(L, H), torch.tensor(arg[1], dtype=torch.bool).view(L, N)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kept", [0.25, 0.4, 0.6, 0.8])
def test_search_is_the_best_split_by_exhaustive_enumeration(seed, kept):
    """L = 2, H = 2, N = 3; a head costs 10 neurons (seq 4, d 8, d_h 4: 640 vs 64 MACs). Heads are made 0.1×,
    1× or 30× as important as neurons so that the best split moves; 30× is where their loop, which also scores
    head counts that alone exceed the budget, would keep every head: ours stays within the budget."""
    g = torch.Generator().manual_seed(seed)
    imp_h = torch.rand(2, 2, generator=g) * (0.1, 1.0, 30.0, 3.0)[seed]
    imp_n = torch.rand(2, 3, generator=g)
    mh, mn = K.mac_per_head(4, 8, 4), K.mac_per_neuron(4, 8)
    assert (mh, mn) == (640, 64)
    hm, nm, info = K.search_mac(imp_h, imp_n, 4, 8, 4, kept)
    want_h, want_n = exhaustive(imp_h, imp_n, mh, mn, kept * (4 * mh + 6 * mn))
    assert torch.equal(hm, want_h) and torch.equal(nm, want_n)
    assert int(hm.sum()) * mh + int(nm.sum()) * mn <= kept * (4 * mh + 6 * mn)
    assert (info["heads"], info["neurons"]) == (int(hm.sum()), int(nm.sum()))


def test_search_is_over_the_split_not_a_greedy_ratio():
    """By hand: 4 heads of 640 MACs, 6 neurons of 64, budget 1418 MACs. Heads 10.5, 9, 0.5, 0.25, neurons 1 each.
    One head leaves room for all 6 neurons: 10.5 + 6 = 16.5; two heads for 2 neurons: 19.5 + 2 = 21.5; three do not
    fit. The search keeps two heads and the first two neurons. A greedy walk by importance per MAC (fisher-greedy)
    takes head 10.5 (0.0164 per MAC), then the 6 neurons (0.0156), and no second head fits: 16.5."""
    from kprune_lib.method.baselines import greedy_flops_selection

    imp_h, imp_n = torch.tensor([[10.5, 9.0], [0.5, 0.25]]), torch.ones(2, 3)
    kept = 1418 / (4 * 640 + 6 * 64)
    hm, nm, info = K.search_mac(imp_h, imp_n, 4, 8, 4, kept)
    assert info == {"heads": 2, "neurons": 2, "importance": 21.5}
    assert hm.tolist() == [[True, True], [False, False]] and nm.tolist() == [[True, True, False], [False] * 3]
    greedy = greedy_flops_selection(torch.cat([imp_h.flatten(), imp_n.flatten()]),
                                    torch.tensor([640.0] * 4 + [64.0] * 6), 1418)
    assert float(torch.cat([imp_h.flatten(), imp_n.flatten()])[greedy].sum()) == 16.5


# ---- search_latency ------------------------------------------------------------------------------------------------
def test_latency_fit_recovers_a_piecewise_linear_table():
    """fit_latency_fn on a table that is exactly flat for 3 units and then linear: that threshold, level and slope;
    a table that falls after its first unit is fitted flat (negative slopes are clipped)."""
    lut = [2.0] * 3 + [2.0 + 0.5 * i for i in range(1, 6)]
    assert K.fit_latency_fn(lut) == K.PiecewiseLinear(3, 2.0, 0.5)
    assert K.fit_latency_fn([1.0, 0.875]) == K.PiecewiseLinear(2, 0.9375, 0.0)


LUTS = ([1.0, 1.5], [0.25, 0.375, 0.5])  # fits: MHA (1, 1, 0.5), FFN (1, 0.25, 0.125); all-ones: 2·(1.5 + 0.5) = 4
IMP_H, IMP_N = torch.tensor([[5.0, 1.0], [4.0, 3.0]]), torch.tensor([[2.0, 1.0, 0.5], [0.1, 0.2, 0.3]])


def test_latency_search_by_hand_drops_the_sublayer_that_pays():
    """By hand, budget 3 (0.75 of 4). Bases: head 0 of each layer (5, 4), neuron 0 of layer 0 (2) and neuron 2 of
    layer 1 (0.3), costing 2·1 + 2·0.25 = 2.5. Without a drop, 0.5 is left: one extra head (layer 1's, 3; slope 0.5)
    and no neuron: 11.3 + 3 = 14.3 — the split their code returns. Dropping layer 1's FFN (least base importance)
    costs 2.25, leaves 0.75: one head (3) and two neurons (layer 0's 1 and 0.5): 11 + 3 + 1.5 = 15.5, within the
    budget by the fits and by the tables. Theirs never sees it: its running budget is already below zero there."""
    hm, nm, info = K.search_latency(IMP_H, IMP_N, 0.75, *LUTS)
    assert hm.tolist() == [[True, False], [True, True]]
    assert nm.tolist() == [[True, True, True], [False, False, False]]
    assert (info["heads"], info["neurons"], info["importance"]) == (1, 2, 15.5)
    assert info["dropped"] == {"mha": 0, "ffn": 1} and info["fitted_ms"] == 3.0 == info["budget_ms"]
    by_table = sum(LUTS[0][int(r.sum()) - 1] for r in hm if r.any()) + \
        sum(LUTS[1][int(r.sum()) - 1] for r in nm if r.any())
    assert by_table <= 3.0


def test_latency_search_without_a_drop_is_theirs_and_an_impossible_budget_is_one_line():
    """Budget 3.8: without a drop 1.3 is left: both extra heads (1.0) and two neurons (0.25): 11.3 + 4 + 1.5 = 16.8;
    the best drop (layer 1's FFN) reaches 11 + 4 + 1.5 = 16.5; so the split is their code's (which, comparing the
    extra units only, also takes k = 2: 5.5 against 4.8 for k = 1). A budget below one MHA and one FFN base
    (1 < 1.25) has no split: a one-line error."""
    hm, nm, info = K.search_latency(IMP_H, IMP_N, 0.95, *LUTS)
    assert info["dropped"] == {"mha": 0, "ffn": 0} and bool(hm.all()) and info["neurons"] == 2
    assert nm.tolist() == [[True, True, True], [False, False, True]]
    assert info["importance"] == pytest.approx(16.8)
    with pytest.raises(ValueError, match="no split within the budget"):
        K.search_latency(IMP_H, IMP_N, 1.0 / 4, *LUTS)


def test_latency_search_with_every_head_in_the_flat_part_keeps_whole_layers():
    """Deviation (d): an MHA table fitted flat over all its heads (threshold = H) leaves no extra head to count;
    the search still runs (theirs has no candidate): every kept MHA sublayer keeps all its heads."""
    hm, nm, info = K.search_latency(IMP_H, IMP_N, 0.7, [1.0, 0.875], LUTS[1])
    assert info["heads"] == 0
    assert all(bool(r.all()) or not bool(r.any()) for r in hm)
    assert info["fitted_ms"] <= info["budget_ms"] + info["fit"]["ffn"]["slope"]


def test_squad_gold_loss_is_the_qa_heads_own_loss():
    """kwon on SQuAD differentiates the QA head's fine-tuning loss: gold_loss(start/end logits, (start, end), "qa")
    equals transformers' own `outputs.loss` given start_positions / end_positions."""
    from kprune_lib.encoder.forward import encode
    from kprune_lib.method.measurement import gold_loss

    model = tiny_model("bert", qa=True)
    arch = Arch(model)
    b = random_batches(1, batch=4, seed=3)[0]
    g = torch.Generator().manual_seed(1)
    spans = torch.randint(0, 6, (4, 2), generator=g)
    with torch.no_grad():
        ours = gold_loss(arch.head(encode(arch, b)), spans, "qa")
        theirs = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                       token_type_ids=b.get("token_type_ids"), start_positions=spans[:, 0],
                       end_positions=spans[:, 1]).loss
    torch.testing.assert_close(ours, theirs)


# ---- rearrange_mask ------------------------------------------------------------------------------------------------
def restated(grads: list[list[float]], k: int) -> list[int]:
    """prune/rearrange.py greedy_rearrange restated plainly: the k units of least Σ g² first; every other unit, in
    ascending Σ g², joins the set, which drops the member whose removal leaves the least ‖Σ g‖² (the first)."""
    U, B = len(grads), len(grads[0])
    sq = [sum(x * x for x in g) for g in grads]
    order = sorted(range(U), key=lambda i: (sq[i], i))
    pruned = order[:k]
    for u in order[k:]:
        pruned = pruned + [u]
        total = [sum(grads[i][b] for i in pruned) for b in range(B)]
        left = [sum((total[b] - grads[i][b]) ** 2 for b in range(B)) for i in pruned]
        j = left.index(min(left))
        pruned = pruned[:j] + pruned[j + 1:]
    return sorted(pruned)


def objective(grads: torch.Tensor, pruned) -> float:
    return float(grads[list(pruned)].sum(0).pow(2).sum())


def test_rearrangement_prunes_units_whose_gradients_cancel():
    """By hand: a = (1, 0), b = (−1, 0), c = (0.5, 0.5) over two batches. Fisher ranks c lowest (0.5 < 1 = 1), so the
    search keeping one unit keeps a or b; pruning a and b together changes the summed gradient by 0, so the
    rearranged mask keeps c."""
    grads = torch.tensor([[[1.0, -1.0, 0.5]], [[0.0, 0.0, 0.5]]])  # (batches, L = 1, units)
    searched = torch.tensor([[True, False, False]])
    assert K.rearrange_mask(searched, grads).tolist() == [[False, False, True]]


@pytest.mark.parametrize("seed", range(5))
def test_rearrangement_is_exact_where_the_greedy_is_and_follows_its_rule_elsewhere(seed):
    g = torch.Generator().manual_seed(seed)
    U, B = 7, 4
    grads = torch.randn(U, B, generator=g, dtype=torch.float64) * torch.rand(U, 1, generator=g, dtype=torch.float64)
    for k in range(U + 1):
        ours = sorted(K.greedy_rearrange(grads, k))
        assert len(ours) == k and ours == restated(grads.tolist(), k)
        if k in (1, U - 1):  # one member or one unit left out: the greedy sees every candidate set
            brute = min(itertools.combinations(range(U), k), key=lambda p: objective(grads, p))
            assert ours == sorted(brute)
        if 0 < k < U:  # each swap never raises ‖Σ g‖²; never below the best set
            start = sorted(range(U), key=lambda i: (float(grads[i].pow(2).sum()), i))[:k]
            best = min(objective(grads, p) for p in itertools.combinations(range(U), k))
            assert best - 1e-12 <= objective(grads, ours) <= objective(grads, start) + 1e-12


def test_rearrange_mask_keeps_each_layers_count_not_its_positions():
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(5, 3, 8, generator=g)  # (batches, L, units)
    a = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0], [1] * 8], dtype=torch.bool)
    b = a.flip(1)
    ra, rb = K.rearrange_mask(a, grads), K.rearrange_mask(b, grads)
    assert torch.equal(ra, rb) and ra.sum(1).tolist() == a.sum(1).tolist()
    for i in range(2):
        assert (~ra[i]).nonzero().flatten().tolist() == sorted(K.greedy_rearrange(grads[:, i].t(), int((~a[i]).sum())))


# ---- rescale_mask --------------------------------------------------------------------------------------------------
def hooked_layer_inputs(model, batches, head_mult, neuron_mult, layer, head_size=8):
    """Run the Hugging Face forward with their masks (unit outputs multiplied, biases in place, as HF 4.17's
    head_mask) and read layer `layer`'s attention-output and FFN-output module inputs (context, X) and (h, Z),
    before any multiplier: what their hijack_input reads."""
    enc = model.bert.encoder.layer
    seen, handles = {"mha": [], "ffn": []}, []
    for i, blk in enumerate(enc):
        hm = head_dims(head_mult[i], head_size)
        handles.append(blk.attention.output.dense.register_forward_pre_hook(lambda _m, a, m=hm: (a[0] * m,)))
        handles.append(blk.output.dense.register_forward_pre_hook(lambda _m, a, m=neuron_mult[i]: (a[0] * m,)))
    handles.append(enc[layer].attention.output.register_forward_pre_hook(lambda _m, a: seen["mha"].append(a)))
    handles.append(enc[layer].output.register_forward_pre_hook(lambda _m, a: seen["ffn"].append(a)))
    try:
        with torch.no_grad():
            for b in batches:
                model(**{k: v for k, v in b.items() if k not in ("labels",)})
    finally:
        for h in handles:
            h.remove()
    return seen


def test_normal_equations_equal_the_explicit_least_squares_problem():
    """Layer 1 of a tiny BERT: A and B built explicitly from the HF forward (their get_mha_lstsq: one column per kept
    head's output W_h·ctx_h over the real tokens and dims, a constant column; B = teacher's pre-LN sum − b − the
    student's X; get_ffn_lstsq: one column per kept neuron h_i·w_i, B = teacher's Z + W·h(ALL neurons) − the
    student's Z, the last layer on token 0 only). AᵀA and AᵀB must equal ours."""
    model = with_biases(tiny_model(layers=2))
    arch = Arch(model)
    batches = labelled(n_batches=3)
    t_h, t_n = torch.tensor([[1., 1, 1, 0], [1, 0, 1, 1]]), torch.ones(2, 24)
    t_n[1, ::3] = 0  # the teacher prunes neurons: its FFN target still sums them all (their quirk)
    s_h, s_n = torch.tensor([[1., 0, 1, 0], [1, 0, 0, 1]]), (torch.arange(24) % 2 == 0).float().expand(2, 24)
    teacher, student = (hooked_layer_inputs(model, batches, t_h, t_n, 1),
                        hooked_layer_inputs(model, batches, s_h, s_n, 1))
    o, out = model.bert.encoder.layer[1].attention.output.dense, model.bert.encoder.layer[1].output.dense
    kept_h, kept_n = s_h[1].nonzero().flatten(), s_n[1].nonzero().flatten()
    rows_a, rows_b, f_a, f_b = [], [], [], []
    for b, (ctx_t, x_t), (ctx_s, x_s), (h_t, z_t), (h_s, z_s) in zip(batches, teacher["mha"], student["mha"],
                                                                       teacher["ffn"], student["ffn"]):
        real = b["attention_mask"].bool()
        y_t = o(ctx_t * head_dims(t_h[1], 8)) + x_t
        cols = [(ctx_s[..., h * 8:(h + 1) * 8] @ o.weight[:, h * 8:(h + 1) * 8].t())[real].flatten() for h in kept_h]
        rows_a.append(torch.stack(cols + [torch.ones_like(cols[0])], 1))
        rows_b.append((y_t - o.bias - x_s)[real].flatten())
        target = (out(h_t) + z_t)[:, 0]  # layer 1 is the last: token 0 only
        f_a.append(torch.stack([(h_s[:, 0, i:i + 1] * out.weight[:, i]).flatten() for i in kept_n], 1))
        f_b.append((target - out.bias - z_s[:, 0]).flatten())
    A, B = torch.cat(rows_a).double(), torch.cat(rows_b).double()
    FA, FB = torch.cat(f_a).double(), torch.cat(f_b).double()

    inputs = [(b, attention_bias(b["attention_mask"], torch.float32), xt, xs) for b, (_, xt), (_, xs)
              in zip(batches, teacher["mha"], student["mha"])]
    with torch.no_grad():
        ata, atb = K._mha_system(arch, 1, inputs, t_h[1], kept_h)
        fata, fatb = K._ffn_system(arch, 1, inputs, t_h[1], s_h[1], kept_n, cls_only=True)
    torch.testing.assert_close(ata.double(), A.t() @ A, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(atb.double(), A.t() @ B, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(fata.double(), FA.t() @ FA, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(fatb.double(), FA.t() @ FB, rtol=1e-4, atol=1e-3)


def test_lsmr_solve_is_their_damped_shifted_problem():
    """x = 1 + δ, δ = argmin ‖M δ − (c − M·1)‖² + ‖δ‖² (LSMR, damp 1) for M = AᵀA, c = AᵀB: against the direct
    solve of that problem (A small, so that the damping moves the solution well beyond LSMR's tolerance). A 1 × 1
    system is solved in closed form: (c − m)/m + 1 = c/m."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(200, 5, generator=g, dtype=torch.float64) * 0.1
    B = A @ torch.tensor([2.0, 1.0, 0.5, -1.0, 3.0], dtype=torch.float64) + 0.01 * torch.randn(200, generator=g,
                                                                                               dtype=torch.float64)
    M, c = (A.t() @ A).float(), (A.t() @ B).float()
    x, ok, istop = K.lsmr_solve(M, c)
    Md, rhs = M.double(), (c - M.sum(1)).double()
    direct = 1 + torch.linalg.solve(Md.t() @ Md + torch.eye(5, dtype=torch.float64), Md.t() @ rhs)
    assert ok and istop in (1, 2)
    torch.testing.assert_close(x.double(), direct, rtol=1e-4, atol=1e-4)
    undamped = 1 + torch.linalg.solve(Md, rhs)
    assert (x.double() - undamped).abs().max() > 1e-2
    x1, ok1, istop1 = K.lsmr_solve(torch.tensor([[4.0]]), torch.tensor([10.0]))
    assert ok1 and istop1 == -1 and x1.tolist() == [2.5]


def test_rescaling_recovers_a_known_scale():
    """Teacher = student except that the teacher multiplies head 0 of layer 1 by 2. Layer 0 keeps no neuron in
    either (nothing to solve there; layer 0's attention is never rescaled), so layer 1's inputs agree and its
    attention's least squares is exact: head 0 gets 2, its other kept heads 1 (up to LSMR's damping)."""
    model = with_biases(tiny_model(layers=2))
    arch = Arch(model)
    batches = labelled(n_batches=4)
    s_h, s_n = torch.tensor([[1., 1, 0, 1], [1, 1, 1, 0]]), torch.ones(2, 24)
    s_n[0] = 0
    t_h = s_h.clone()
    t_h[1, 0] = 2.0
    r_h, r_n, log = K.rescale_mask(arch, batches, (t_h, s_n), (s_h.bool(), s_n.bool()), "classification")
    assert [(r["layer"], r["kind"]) for r in log][:1] == [(1, "mha")] and log[0]["accepted"]
    torch.testing.assert_close(r_h[0], s_h[0])
    torch.testing.assert_close(r_h[1], torch.tensor([2.0, 1.0, 1.0, 0.0]), atol=2e-3, rtol=0)


def test_rescale_mask_gives_each_system_what_their_code_gives_it(monkeypatch):
    """Bottom-up; a layer's FFN is fitted with that layer's heads already rescaled; the last layer's FFN on token 0
    only (GLUE; not SQuAD); each layer's inputs are the layer below's outputs under the teacher's masks and under the
    rescaled student masks (checked against the Hugging Face forward with those multipliers)."""
    model = with_biases(tiny_model(layers=3))
    arch = Arch(model)
    batches = labelled(n_batches=3)
    t_h, t_n = torch.ones(3, 4), torch.ones(3, 24)
    t_n[:, ::4] = 0
    s_h, s_n = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 1, 1]]).bool(), (torch.arange(24) % 3 > 0).expand(3, 24)
    calls = []
    mha, ffn = K._mha_system, K._ffn_system
    monkeypatch.setattr(K, "_mha_system", lambda a, i, inputs, *rest: calls.append(("mha", i, inputs, rest))
                        or mha(a, i, inputs, *rest))
    monkeypatch.setattr(K, "_ffn_system", lambda a, i, inputs, th, sh, kept, cls_only: calls.append(
        ("ffn", i, inputs, (th, sh.clone(), cls_only))) or ffn(a, i, inputs, th, sh, kept, cls_only))
    r_h, r_n, log = K.rescale_mask(arch, batches, (t_h, t_n), (s_h, s_n), "classification")
    assert all(r["accepted"] for r in log) and [(c[0], c[1]) for c in calls] == [("ffn", 0), ("mha", 1), ("ffn", 1),
                                                                                  ("mha", 2), ("ffn", 2)]
    for kind, i, inputs, rest in calls:
        if kind == "ffn":
            assert torch.equal(rest[1], r_h[i]) and rest[2] == (i == 2)
        if i > 0:
            want_t = hooked_layer_inputs(model, batches, t_h, t_n, i)["mha"]
            want_s = hooked_layer_inputs(model, batches, r_h, r_n, i)["mha"]
            for (_, _, xt, xs), (_, wt), (_, ws) in zip(inputs, want_t, want_s):
                torch.testing.assert_close(xt, wt, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(xs, ws, rtol=1e-5, atol=1e-5)
    calls.clear()
    K.rescale_mask(arch, batches, (t_h, t_n), (s_h, s_n), "qa")
    assert [c[3][2] for c in calls if c[0] == "ffn"] == [False, False, False]


def test_rescaling_stops_at_the_first_rejected_solve(monkeypatch):
    """A solve LSMR rejects (istop ≥ 3) or a scale outside ±10 stops the rescaling: what is above keeps 0/1."""
    model = tiny_model(layers=3)
    arch = Arch(model)
    batches = labelled()
    hm, nm = torch.ones(3, 4, dtype=torch.bool), torch.ones(3, 24, dtype=torch.bool)
    real = K.lsmr_solve
    for bad in ("istop", "scale"):
        calls = []

        def solve(ata, atb):
            x, ok, istop = real(ata, atb)
            calls.append(1)
            if len(calls) == 2:
                return (x, False, 3) if bad == "istop" else (x.clone().fill_(11.0), True, 2)
            return torch.full_like(x, 0.5), ok, istop

        monkeypatch.setattr(K, "lsmr_solve", solve)
        r_h, r_n, log = K.rescale_mask(arch, batches, (hm, nm), (hm, nm), "classification")
        assert [r["accepted"] for r in log] == [True, False]  # layer 0 FFN, then layer 1 MHA: stop
        assert r_n[0].eq(0.5).all() and r_h.eq(1).all() and r_n[1:].eq(1).all()


# ---- the mask values in the weights -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch_name", KWON_ARCHS)
def test_folded_weights_compute_their_masked_model_and_prune_physically(arch_name):
    """fold_scales: scaled columns, and the bias of a sublayer left with no unit moved into the shift of its input,
    so that the dense model without hooks, and the physically pruned one (which drops an empty projection's bias),
    both compute their masked model (unit outputs multiplied, biases in place). Layer 0 loses every head."""
    model = with_biases(tiny_model(arch_name, layers=3))
    ref = copy.deepcopy(model)
    arch = Arch(model)
    g = torch.Generator().manual_seed(0)
    hs = torch.rand(3, arch.num_heads, generator=g) + 0.5
    ns = torch.rand(3, arch.ffn_size, generator=g) + 0.5
    hs[0] = 0.0
    hs[2, 1:] = 0.0
    ns[1] = 0.0
    ns[2, ::2] = 0.0
    ids = random_batches(2, seed=5, token_types=arch.table.token_types)[1]
    with torch.no_grad(), K.multiplied(Arch(ref), hs, ns):
        want = ref(**ids).logits
    K.fold_scales(arch, hs, ns)
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, want, rtol=1e-5, atol=1e-5)
        prune_physically(arch, hs != 0, ns != 0)
        torch.testing.assert_close(model(**ids).logits, want, rtol=1e-5, atol=1e-5)
        with apply_masks(Arch(ref), sublayer_masks(Arch(ref), hs, ns)):  # K-prune's rule drops an empty
            dropped = ref(**ids).logits  # sublayer's bias: the biases moved here matter
    assert not torch.allclose(dropped, want, rtol=1e-3, atol=1e-3)


# ---- the pipeline ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("problem,constraint", [("classification", 0.5), ("classification", 0.8), ("regression", 0.5)])
def test_pipeline_stages_are_the_functions_in_order(problem, constraint):
    """kwon = mask gradients → search_mac (teacher at √kept, target) → rearrange_mask → rescale_mask → fold; the
    stage records hold each stage's masks, the dev metric of each (the last one: the folded model itself)."""
    model = with_biases(tiny_model(num_labels=1 if problem == "regression" else 2, layers=3))
    ref = copy.deepcopy(model)
    batches = labelled(problem, n_batches=6)
    ids = random_batches(1, seed=9)[0]

    def score(net):
        with torch.no_grad():
            return {"out": float(net(**ids).logits.sum())}

    res = run_method(model, batches, problem, PruneConfig(method="kwon", constraint=constraint), SEQ, score=score,
                     progress=False)
    arch_ref = Arch(ref)
    g_h, g_n = K.mask_gradients(arch_ref, batches, problem)
    imp_h, imp_n = g_h.pow(2).sum(0), g_n.pow(2).sum(0)
    kept = 1 - constraint
    t_h, t_n, _ = K.search_mac(imp_h, imp_n, SEQ, arch_ref.hidden, arch_ref.head_size, math.sqrt(kept))
    s_h, s_n, _ = K.search_mac(imp_h, imp_n, SEQ, arch_ref.hidden, arch_ref.head_size, kept)
    r_h, r_n = K.rearrange_mask(s_h, g_h), K.rearrange_mask(s_n, g_n)
    stages = {s["stage"]: s for s in res.stages}
    assert list(stages) == ["search", "rearrange", "rescale"]
    for name, (h, n) in (("search", (s_h, s_n)), ("rearrange", (r_h, r_n)), ("rescale", (r_h, r_n))):
        assert stages[name]["kept_heads"] == [row.nonzero().flatten().tolist() for row in h]
        assert [K.mask_from_hex(x, 24).tolist() for x in stages[name]["neuron_masks_hex"]] == n.tolist()
    assert stages["search"]["teacher"]["heads_kept"] == t_h.sum(1).tolist()
    assert torch.equal(res.head_mask, r_h) and torch.equal(res.neuron_mask, r_n)
    assert 1 - res.flops_pruned / res.flops_dense >= constraint - 1e-12
    sc_h, sc_n, _ = K.rescale_mask(arch_ref, batches, (t_h, t_n), (r_h, r_n), problem)
    with K.multiplied(arch_ref, sc_h, sc_n):
        assert stages["rescale"]["dev"]["out"] == pytest.approx(score(ref)["out"], rel=1e-4, abs=1e-4)
    with K.multiplied(arch_ref, s_h.float(), s_n.float()):
        assert stages["search"]["dev"] == score(ref)
    assert stages["rescale"]["dev"] == score(model)  # the folded model, no hook


# ---- the authors' run on the MRPC fixture ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mrpc_stages():
    """The pipeline's stages up to rearrangement on the shared MRPC model at 50 %, seed 0, with the dev accuracy of
    each (rescaling, ten more minutes on CPU, is compared by benchmarks/kwon_reference.py: benchmarks/KWON.md)."""
    from kprune_lib.artifacts.checkpoint import load_model
    from kprune_lib.data.batching import glue_sample, mean_length, tokenize
    from kprune_lib.data.evaluate import evaluate_glue
    from kprune_lib.data.glue import load_glue
    from kprune_lib.data.tasks import get_task

    ref = json.loads(REFERENCE.read_text().splitlines()[0])
    task = get_task("mrpc")
    model, tok = load_model(str(MODELS_DIR / "minilm-l6-mrpc"))
    arch = Arch(model)
    dev = {split: load_glue(task, split, str(GLUE_DIR)) for split in task.eval_splits}
    train = load_glue(task, "train", str(GLUE_DIR))
    seq_len = mean_length(tokenize(tok, dev["validation"], task.max_length))
    batches, n = glue_sample(tok, train, num_tokens=0, seq_len=seq_len, seed=ref["seed"], batch_size=32,
                             max_length=task.max_length, examples=ref["num_samples"])
    g_h, g_n = K.mask_gradients(arch, batches, "classification")
    imp_h, imp_n = g_h.pow(2).sum(0), g_n.pow(2).sum(0)
    kept = K.mac_kept(ref["constraint"])
    teacher = K.search_mac(imp_h, imp_n, seq_len, arch.hidden, arch.head_size, K.teacher_mac(kept))
    search = K.search_mac(imp_h, imp_n, seq_len, arch.hidden, arch.head_size, kept)
    rearranged = K.rearrange_mask(search[0], g_h), K.rearrange_mask(search[1], g_n)

    def accuracy(h, n_):
        with K.multiplied(arch, h.float(), n_.float()):
            return evaluate_glue(model, tok, task, dev, task.max_length)["accuracy"]
    return {"ref": ref, "train": len(train), "examples": n, "teacher": teacher, "search": search,
            "rearranged": rearranged, "dense": evaluate_glue(model, tok, task, dev, task.max_length)["accuracy"],
            "acc_search": accuracy(*search[:2]), "acc_rearranged": accuracy(*rearranged)}


@pytest.mark.e2e
@needs_shared(REFERENCE)
@needs_shared(MODELS_DIR / "minilm-l6-mrpc")
@needs_shared(GLUE_DIR / "MRPC")
def test_reproduces_the_authors_masks_stage_by_stage(mrpc_stages):
    """Same checkpoint, data, seed, 2048 samples, 50 %: the sample, the teacher's and the searched head / neuron
    counts, the rearranged (= final) kept indices and the number of units rearrangement changed equal the
    authors'; so do the dev accuracies after search and after rearrangement."""
    r, ref = mrpc_stages, mrpc_stages["ref"]
    idx = sample_indices(r["train"], 0, 1.0, ref["seed"], examples=ref["num_samples"]).numpy().astype(np.int64)
    assert hashlib.sha1(idx.tobytes()).hexdigest() == ref["sample_idx_sha1"] and r["examples"] == 2048
    t_h, t_n, _ = r["teacher"]
    assert (t_h.sum(1).tolist(), t_n.sum(1).tolist()) == (ref["teacher_heads_per_layer"],
                                                          ref["teacher_neurons_per_layer"])
    s_h, s_n, _ = r["search"]
    assert (s_h.sum(1).tolist(), s_n.sum(1).tolist()) == (ref["heads_per_layer_search"],
                                                          ref["neurons_per_layer_search"])
    h, n = r["rearranged"]
    assert [row.nonzero().flatten().tolist() for row in h] == ref["kept_head_indices"]
    assert [row.nonzero().flatten().tolist() for row in n] == ref["kept_neuron_indices"]
    assert [int((h != s_h).sum()), int((n != s_n).sum())] == [ref["search_vs_rearrange_changed_heads"],
                                                              ref["search_vs_rearrange_changed_neurons"]]
    assert r["dense"] == pytest.approx(ref["dense_dev_acc"], abs=1e-12)
    assert r["acc_search"] == pytest.approx(ref["dev_acc_search"], abs=1e-12)
    assert r["acc_rearranged"] == pytest.approx(ref["dev_acc_rearrange"], abs=1e-12)
