"""KCM (`kprune_lib.method.kcm`): each equation against an independent computation on tiny cases — the kernel and
its mean distance against explicit features, the convex-hull distance against an exact solve over every face of the
simplex, R2 against a brute-force greedy, D2 and the merge of the rankings against hand counts, the merge of the
pruned neurons against the output it must give, the budget against the FLOPs count, and the pipeline's invariants
on a tiny random BERT."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import transformers

from kprune_lib.costs.flops import model_flops
from kprune_lib.encoder.arch import Arch
from kprune_lib.method import kcm as K


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def exact_hull_distance(k_ss: torch.Tensor, k_x: torch.Tensor, k_xx: float) -> tuple[float, torch.Tensor]:
    """min over α ∈ Δ of k_xx − 2αᵀk_x + αᵀK α by brute force: on every face T of the simplex, the equality-
    constrained minimiser from its KKT system [2K_TT 1; 1ᵀ 0]·[α; λ] = [2k_T; 1], kept where α ≥ 0."""
    s = k_ss.shape[0]
    best, best_a = math.inf, None
    for r in range(1, s + 1):
        for face in itertools.combinations(range(s), r):
            t = list(face)
            m = torch.zeros(r + 1, r + 1, dtype=torch.float64)
            m[:r, :r] = 2 * k_ss[t][:, t]
            m[:r, r] = 1
            m[r, :r] = 1
            rhs = torch.cat([2 * k_x[t], torch.ones(1, dtype=torch.float64)])
            try:
                sol = torch.linalg.solve(m, rhs)
            except RuntimeError:  # a singular face: its minimiser lies on a smaller face, enumerated too
                continue
            a = torch.zeros(s, dtype=torch.float64)
            a[t] = sol[:r]
            if bool((a >= -1e-12).all()):
                val = float(k_xx - 2 * a @ k_x + a @ k_ss @ a)
                if val < best:
                    best, best_a = val, a
    return max(best, 0.0), best_a


def test_rbf_kernel_median_bandwidth_and_mean_distance_against_direct_formulas():
    torch.manual_seed(0)
    x = torch.randn(7, 3, dtype=torch.float64)
    pair = [float((x[i] - x[j]).norm()) for i in range(7) for j in range(i + 1, 7)]
    sigma = sorted(pair)[(len(pair) - 1) // 2]  # torch's median: the lower middle value
    assert K.median_bandwidth(x) == pytest.approx(sigma)
    k = K.rbf_kernel(x, x, sigma)
    for i in range(7):
        for j in range(7):
            assert float(k[i, j]) == pytest.approx(math.exp(-float((x[i] - x[j]).pow(2).sum()) / (2 * sigma ** 2)))
    lin = x @ x.t()  # a linear kernel: φ = identity, so the kernel mean is the points' mean
    assert torch.allclose(K.kernel_mean_distance(lin), (x - x.mean(0)).pow(2).sum(1))


def test_hull_distance_against_an_exact_solve_over_every_face():
    torch.manual_seed(1)
    pts = torch.randn(9, 4, dtype=torch.float64)
    k = K.rbf_kernel(pts, pts, K.median_bandwidth(pts))
    s, x = list(range(5)), list(range(5, 9))
    alpha, q, d2 = K.hull_distance(k[s][:, s], k[x][:, s], k.diagonal()[x], iters=100_000, tol=1e-13)
    assert torch.allclose(alpha.sum(1), torch.ones(4, dtype=torch.float64)) and bool((alpha >= 0).all())
    assert torch.allclose(q, alpha @ k[s][:, s])
    for row, i in enumerate(x):
        exact, _ = exact_hull_distance(k[s][:, s], k[i, s], float(k[i, i]))
        assert float(d2[row]) == pytest.approx(exact, abs=1e-6)
    # a linear kernel, where the hull is the ordinary one: a point inside it is at distance 0, one outside at its
    # Euclidean distance to the nearest face
    v = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    p = torch.tensor([[0.5, 0.5], [2.0, 2.0], [-1.0, 0.0]], dtype=torch.float64)
    _, _, d2 = K.hull_distance(v @ v.t(), p @ v.t(), (p * p).sum(1), iters=100_000, tol=1e-14)
    assert torch.allclose(d2, torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64), atol=1e-6)


def brute_force_r2(k: torch.Tensor) -> list[int]:
    """The greedy kernelized convex hull with exact distances at every step."""
    n = k.shape[0]
    order = [int((k.diagonal() - 2 * k.mean(1) + k.mean()).argmax())]
    while len(order) < n:
        dist = {i: exact_hull_distance(k[order][:, order], k[i, order], float(k[i, i]))[0]
                for i in range(n) if i not in order}
        order.append(max(dist, key=lambda i: (dist[i], -i)))
    return order


def test_representative_ranking_against_the_brute_force_greedy():
    torch.manual_seed(3)
    pts = torch.randn(8, 3, dtype=torch.float64)
    k = K.rbf_kernel(pts, pts, K.median_bandwidth(pts))
    expected = brute_force_r2(k)
    assert K.representative_ranking(k, 8, iters=20_000, tol=1e-13) == expected
    assert K.representative_ranking(k, 3, iters=20_000, tol=1e-13) == expected[:3]
    assert sorted(expected) == list(range(8))


def test_data_driven_votes_and_the_merge_of_the_rankings_by_hand():
    out = torch.tensor([[3.0, 1.0, 2.0, 0.0],  # top-2: units 0, 2
                        [0.0, 5.0, 4.0, 1.0],  # units 1, 2
                        [1.0, 0.0, 3.0, 2.0]])  # units 2, 3
    order, votes = K.data_driven_ranking(out, 2)
    assert votes.tolist() == [1.0, 1.0, 3.0, 1.0]
    assert order == [2, 1, 0, 3]  # unit 2: 3 votes; then by summed output 6, 4, 3
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    seq = torch.tensor([[[2.0], [4.0], [100.0]], [[6.0], [100.0], [100.0]]])
    assert K.example_outputs(seq, mask).flatten().tolist() == [3.0, 6.0]  # padding ignored
    assert K.merge_rankings([5, 1, 2, 0], [1, 3, 5, 4], 4) == [5, 1, 3, 2]
    assert K.merge_rankings(iter([0, 1]), [1, 0], 5) == [0, 1]  # fewer units than asked: all of them


def test_merge_gives_the_output_its_formula_says():
    torch.manual_seed(4)
    d, n = 5, 6
    w = torch.randn(d, n, dtype=torch.float64)
    h = torch.rand(10, n, dtype=torch.float64)  # activations of 10 tokens
    kept, pruned = torch.tensor([0, 2, 3]), torch.tensor([1, 4, 5])
    beta = torch.rand(3, 3, dtype=torch.float64)
    beta /= beta.sum(1, keepdim=True)
    merged = w.clone()
    K.merge_pruned(merged, beta, kept, pruned)
    assert bool((merged[:, pruned] == 0).all())
    # each pruned neuron's activation replaced by Σ_j β_pj·(kept activation j), its output column unchanged
    stand_in = h.clone()
    stand_in[:, pruned] = h[:, kept] @ beta.t()
    assert torch.allclose(h @ merged.t(), stand_in @ w.t())


def test_a_duplicated_neuron_is_merged_exactly():
    """A pruned neuron whose filter equals a kept one's has hull distance 0 with all its weight on that neuron, and
    the merged FFN computes the dense FFN exactly."""
    torch.manual_seed(5)
    d, n = 4, 5
    w_in = torch.randn(n, d + 1, dtype=torch.float64)
    w_in[4] = w_in[1]  # neuron 4 duplicates neuron 1
    w_out = torch.randn(d, n, dtype=torch.float64)
    k = K.rbf_kernel(w_in, w_in, K.median_bandwidth(w_in))
    kept, pruned = torch.tensor([0, 1, 2, 3]), torch.tensor([4])
    beta, _, d2 = K.hull_distance(k[kept][:, kept], k[pruned][:, kept], k.diagonal()[pruned])
    assert float(d2[0]) == pytest.approx(0.0, abs=1e-12) and beta[0].tolist() == [0.0, 1.0, 0.0, 0.0]
    x = torch.randn(7, d, dtype=torch.float64)
    h = torch.nn.functional.gelu(x @ w_in[:, :d].t() + w_in[:, d])
    merged = w_out.clone()
    K.merge_pruned(merged, beta, kept, pruned)
    assert torch.allclose(h @ merged.t(), h @ w_out.t())


@pytest.mark.parametrize("dims", [(6, 12, 1536, 53.24, 384, 32), (2, 4, 24, 20.0, 32, 8)])
def test_layer_budget_meets_the_flops_constraint_with_the_fewest_units(dims):
    L, H, N, seq, d, dh = dims
    dense = model_flops([H] * L, [N] * L, seq, d, dh)
    ffn_share = model_flops([0] * L, [N] * L, seq, d, dh) / dense
    for c in (0.05, 0.2, 0.4, 0.6, 0.8, 0.9):
        heads, neurons, allocation = K.layer_budget(c, L, H, N, seq, d, dh)
        assert allocation == ("ffn" if c <= ffn_share else "uniform+heads")
        assert model_flops([H - heads] * L, [N - neurons] * L, seq, d, dh) <= (1 - c) * dense + 1e-6
        if allocation == "ffn":  # the paper's: neurons only, one fewer per layer would not do
            assert heads == 0
            assert model_flops([H] * L, [N - neurons + 1] * L, seq, d, dh) > (1 - c) * dense
        else:
            assert (heads, neurons) == (math.ceil(c * H - 1e-9), math.ceil(c * N - 1e-9))
    with pytest.raises(ValueError, match="constraint must be in"):
        K.layer_budget(1.0, L, H, N, seq, d, dh)
    # relative attention (DeBERTa): heads cost more, so the same fraction of the FLOPs takes more neurons
    dense_rel = model_flops([H] * L, [N] * L, seq, d, dh, 512)
    c = 0.5 * model_flops([0] * L, [N] * L, seq, d, dh, 512) / dense_rel
    rel = K.layer_budget(c, L, H, N, seq, d, dh, rel_positions=512)
    assert model_flops([H - rel[0]] * L, [N - rel[1]] * L, seq, d, dh, 512) <= (1 - c) * dense_rel + 1e-6
    assert rel[0] == 0 and rel[1] >= K.layer_budget(c, L, H, N, seq, d, dh)[1]
    assert model_flops([H] * L, [N - rel[1] + 1] * L, seq, d, dh, 512) > (1 - c) * dense_rel


def _tiny_bert(seed=0):
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=16, num_attention_heads=4, num_hidden_layers=2,
                                  intermediate_size=24, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def _batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):
        ids = torch.randint(1, 60, (4, 9), generator=g)
        mask = torch.ones(4, 9, dtype=torch.long)
        mask[1, 6:] = 0
        mask[3, 4:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
    return out  # no labels: KCM needs none


@pytest.mark.parametrize("constraint", [0.08, 0.5])
def test_kcm_on_a_tiny_bert_meets_the_budget_and_merges_by_convex_coefficients(constraint):
    model = _tiny_bert()
    arch = Arch(model)
    before = {i: arch.module(i, "ffn_out").weight.detach().clone() for i in range(2)}
    attn_before = {i: arch.module(i, "o").weight.detach().clone() for i in range(2)}
    seen = []
    res = K.kcm(model, _batches(), "classification", constraint=constraint, seq_len=8.0,
                score=lambda m: seen.append(1) or {"accuracy": 0.5})
    assert 1 - res.flops_pruned / res.flops_dense >= constraint
    assert [s["stage"] for s in res.stages] == ["select", "merge"] and len(seen) == 2
    allocation = res.stages[0]["allocation"]
    assert allocation == ("ffn" if constraint < 0.1 else "uniform+heads")
    heads, neurons = res.stages[0]["heads_pruned_per_layer"], res.stages[0]["neurons_pruned_per_layer"]
    assert res.heads_kept == [4 - heads] * 2 and res.neurons_kept == [24 - neurons] * 2
    for i in range(2):
        kept, pruned = res.neuron_mask[i].nonzero().flatten(), (~res.neuron_mask[i]).nonzero().flatten()
        w = arch.module(i, "ffn_out").weight.detach()
        assert bool((w[:, pruned] == 0).all())
        # kept columns = old kept + old pruned · β with β's rows on the simplex (old pruned columns independent)
        beta = torch.linalg.lstsq(before[i][:, pruned].double(), (w[:, kept] - before[i][:, kept]).double()).solution
        assert torch.allclose(before[i][:, pruned].double() @ beta, (w[:, kept] - before[i][:, kept]).double(),
                              atol=1e-5)
        assert bool((beta >= -1e-4).all()) and torch.allclose(beta.sum(1), torch.ones(len(pruned), dtype=beta.dtype),
                                                              atol=1e-4)
        o = arch.module(i, "o").weight.detach()
        dead = (~res.head_mask[i]).repeat_interleave(4)
        assert bool((o[:, dead] == 0).all()) and torch.equal(o[:, ~dead], attn_before[i][:, ~dead])
    assert torch.isfinite(model(**_batches()[0]).logits).all()


def test_kcm_refuses_a_pruned_model():
    from kprune_lib.encoder.physical import prune_physically

    model = _tiny_bert()
    neurons = torch.ones(2, 24, dtype=torch.bool)
    neurons[0, :4] = False
    prune_physically(model, torch.ones(2, 4, dtype=torch.bool), neurons, width_multiple=1)
    with pytest.raises(ValueError, match="prunes dense models only"):
        K.kcm(model, _batches(), "classification", constraint=0.3, seq_len=8.0)
