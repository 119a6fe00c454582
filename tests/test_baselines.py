"""Methods: the ablations' hyper-parameters, the fisher-greedy ablation (formerly kwon-fisher) and the one-shot
global mask. Kwon et al.'s own pipeline (`--method kwon`) is tested in test_kwon.py."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from conftest import random_batches, tiny_model
from kprune_lib.encoder.arch import Arch
from kprune_lib.method.baselines import fisher_scores, greedy_flops_selection, kwon_fisher, one_shot_global_masks, run_method
from kprune_lib.data.batching import pad_batch, tokenize
from kprune_lib.config import PruneConfig
from kprune_lib.method.methods import METHOD_NAMES, REGISTRY, check, get, same_settings
from kprune_lib.method.methods import resolve as resolve_method
from kprune_lib.costs.flops import head_flops, neuron_flops
from kprune_lib.data.glue import Examples
from kprune_lib.encoder.masks import masked_model
from kprune_lib.encoder.physical import prune_physically

SEQ = 10.0


def labelled(problem: str, n_batches: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batches = random_batches(n_batches, seed=seed)
    for b in batches:
        B = b["input_ids"].shape[0]
        b["labels"] = torch.randint(0, 2, (B,), generator=g) if problem == "classification" else torch.rand(B, generator=g) * 5
    return batches


def test_resolve_method_sets_the_ablated_hyperparameters():
    base = PruneConfig()
    assert resolve_method(base) == base
    assert resolve_method(replace(base, tuning=False)).method == "kprune-no-tuning"
    assert resolve_method(replace(base, method="kprune-no-tuning")).tuning is False
    pred = resolve_method(replace(base, method="kprune-pred-only"))
    assert (pred.lam_rep, pred.lam_pred, pred.tuning) == (0.0, base.lam_pred, True)
    rep = resolve_method(replace(base, method="kprune-rep-only"))
    assert (rep.lam_rep, rep.lam_pred) == (base.lam_rep, 0.0)
    assert resolve_method(replace(base, method="kwon-fisher")).tuning is False
    with pytest.raises(ValueError, match="unknown method 'magnitude'; choose from kprune, "):
        resolve_method(PruneConfig(method="magnitude"))
    assert resolve_method(replace(base, method="kprune-gn")).pred_knowledge == "gauss-newton"
    assert resolve_method(replace(base, method="kprune-fisher")).pred_knowledge == "example"
    assert resolve_method(replace(base, method="kprune-gold")).gold_first is True
    assert set(METHOD_NAMES) >= {"kprune", "kprune-no-tuning", "kprune-pred-only", "kprune-rep-only", "kwon-fisher",
                            "kprune-fisher", "kprune-gn", "kprune-gold"}


def test_registry_settings_are_config_fields_and_resolve():
    for m in REGISTRY.values():
        cfg = resolve_method(PruneConfig(method=m.name))
        assert all(getattr(cfg, k) == v for k, v in m.settings.items()), m.name
    assert resolve_method(PruneConfig(method="kprune-plus")).damping == 0.01
    assert same_settings("kprune-plus") == "kprune-damp" and same_settings("kprune") is None


def test_methods_refuse_what_they_cannot_run_with_one_line():
    with pytest.raises(ValueError, match="kwon-fisher takes a FLOPs --constraint only; a latency budget needs one of kprune,"):
        check(PruneConfig(method="kwon-fisher", latency_budget_ms=10.0), "classification")
    with pytest.raises(ValueError, match="kprune-gold needs gold labels of a classification / regression task, so it does not support qa"):
        check(PruneConfig(method="kprune-gold"), "qa")
    with pytest.raises(ValueError, match="for SQuAD use --pred-knowledge batch"):
        check(PruneConfig(gold_first=True), "qa")
    check(PruneConfig(method="kprune-plus", latency_budget_ms=10.0), "qa")  # accepted


def test_ablations_run_kprune_with_their_hyperparameters():
    batches = random_batches(3)
    from kprune_lib.method.loop import kprune

    masks = {}
    for method in ("kprune-pred-only", "kprune-rep-only"):
        m1, m2, m3 = tiny_model(layers=3), tiny_model(layers=3), tiny_model(layers=3)
        r1 = run_method(m1, batches, "classification", PruneConfig(method=method), SEQ, progress=False)
        cfg = resolve_method(PruneConfig(method=method))
        # the loop's keyword form (settings by name over the default config) and its config form
        r2 = kprune(m2, batches, "classification", constraint=cfg.constraint, seq_len=SEQ, lam_pred=cfg.lam_pred,
                    lam_rep=cfg.lam_rep, mu=cfg.mu, temperature=cfg.temperature, progress=False)
        r3 = kprune(Arch(m3), batches, "classification", PruneConfig(method=method), seq_len=SEQ, progress=False)
        for r in (r2, r3):
            assert torch.equal(r1.head_mask, r.head_mask) and torch.equal(r1.neuron_mask, r.neuron_mask)
        masks[method] = torch.cat([r1.head_mask.flatten(), r1.neuron_mask.flatten()])
    assert not torch.equal(masks["kprune-pred-only"], masks["kprune-rep-only"])  # the ablation changes something


def test_batches_carry_gold_labels():
    class Tok:  # whitespace "tokenizer" with the HF call signature
        def __call__(self, a, b, truncation, max_length):
            ids = [[1] + [len(w) for w in s.split()][: max_length - 1] for s in a]
            return {"input_ids": ids}

    ex = Examples(["a bb ccc", "dddd"], None, [1, 0])
    feats = tokenize(Tok(), ex, 8, labels=True)
    assert [f["label"] for f in feats] == [1, 0]
    b = pad_batch(feats, 0)
    assert b["labels"].dtype == torch.long and b["labels"].tolist() == [1, 0]
    reg = pad_batch(tokenize(Tok(), Examples(["a", "b c"], None, [0.5, 4.25]), 8, labels=True), 0)
    assert reg["labels"].dtype == torch.float32 and reg["labels"].tolist() == [0.5, 4.25]
    assert "labels" not in pad_batch(tokenize(Tok(), ex, 8), 0)


def _loss_with_scaled_unit(model, batch, problem, s, dims, scale):
    """The HF forward's task loss with the output-projection columns of one unit multiplied by `scale`."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        Arch(m).out_proj(s).weight[:, dims] *= scale
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   token_type_ids=batch["token_type_ids"]).logits
    if problem == "classification":
        return F.cross_entropy(logits, batch["labels"])
    return F.mse_loss(logits.squeeze(-1), batch["labels"].double())


@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_fisher_equals_finite_differences_of_the_hf_forward(problem):
    """(∂L/∂m_u)² summed over batches, with m_u scaling a whole head / neuron, against central differences."""
    model = tiny_model(num_labels=2 if problem == "classification" else 1).double()
    batches = labelled(problem, n_batches=2)
    arch, eps = Arch(model), 1e-5
    fh, fn = fisher_scores(arch, batches, problem)
    dh = arch.head_size
    for layer, head in ((0, 1), (1, 3)):
        s, dims = 2 * layer, list(range(head * dh, (head + 1) * dh))
        fd = sum(((_loss_with_scaled_unit(model, b, problem, s, dims, 1 + eps)
                   - _loss_with_scaled_unit(model, b, problem, s, dims, 1 - eps)) / (2 * eps)) ** 2 for b in batches)
        assert float(fh[layer, head]) == pytest.approx(float(fd), rel=1e-4, abs=1e-12)
    for layer, neuron in ((0, 5), (1, 17)):
        fd = sum(((_loss_with_scaled_unit(model, b, problem, 2 * layer + 1, [neuron], 1 + eps)
                   - _loss_with_scaled_unit(model, b, problem, 2 * layer + 1, [neuron], 1 - eps)) / (2 * eps)) ** 2
                 for b in batches)
        assert float(fn[layer, neuron]) == pytest.approx(float(fd), rel=1e-4, abs=1e-12)
    assert fh.shape == (2, 4) and fn.shape == (2, 24) and float(fh.sum()) > 0
    assert all(p.requires_grad for p in model.parameters())  # requires_grad restored


def test_fisher_needs_labels():
    with pytest.raises(ValueError, match="gold labels"):
        fisher_scores(Arch(tiny_model()), random_batches(1), "classification")


def test_greedy_selection_by_score_per_flop():
    # ratios: 0: 10/4=2.5, 1: 3/1=3, 2: 8/4=2, 3: 1/1=1, 4: 0.5/1=0.5; budget 6
    # order 1 (cost 1, left 5), 0 (4, left 1), 2 (4 > 1: skip), 3 (1, left 0), 4 (skip)
    keep = greedy_flops_selection(torch.tensor([10.0, 3.0, 8.0, 1.0, 0.5]), torch.tensor([4.0, 1.0, 4.0, 1.0, 1.0]), 6.0)
    assert keep.tolist() == [True, True, False, True, False]


def test_greedy_selection_properties_random():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        n = 40
        scores, costs = torch.rand(n, generator=g), torch.randint(1, 6, (n,), generator=g).double()
        budget = float(torch.rand(1, generator=g)) * float(costs.sum())
        keep = greedy_flops_selection(scores, costs, budget)
        assert float(costs[keep].sum()) <= budget + 1e-9
        ratio = scores.double() / costs
        for u in (~keep).nonzero().flatten().tolist():  # a dropped unit did not fit when its turn came
            better_kept = keep & (ratio > ratio[u])
            assert float(costs[better_kept].sum()) + float(costs[u]) > budget - 1e-9


def test_kwon_fisher_is_a_deprecated_alias_of_fisher_greedy():
    """The old name runs the same algorithm with the same settings and traits, and is recorded under its own name
    (grids, summaries and benchmarks that name it keep working for one release)."""
    with pytest.warns(DeprecationWarning, match="kwon-fisher is deprecated.*fisher-greedy"):
        alias = get("kwon-fisher")
    assert alias.name == "kwon-fisher" and "kwon-fisher" not in REGISTRY and "kwon-fisher" in METHOD_NAMES
    assert {**vars(alias), "name": "fisher-greedy"} == vars(REGISTRY["fisher-greedy"])
    assert resolve_method(PruneConfig(method="kwon-fisher")).method == "kwon-fisher"
    batches = labelled("classification")
    old, new = (run_method(tiny_model(layers=3), batches, "classification", PruneConfig(method=m, constraint=0.5),
                           SEQ) for m in ("kwon-fisher", "fisher-greedy"))
    assert torch.equal(old.head_mask, new.head_mask) and torch.equal(old.neuron_mask, new.neuron_mask)
    assert old.flops_pruned == new.flops_pruned


def test_fisher_scores_sum_kwons_per_batch_mask_gradients():
    from kprune_lib.method.kwon import mask_gradients

    model, batches = tiny_model(layers=2), labelled("classification")
    g_h, g_n = mask_gradients(Arch(model), batches, "classification")
    assert g_h.shape == (3, 2, 4) and g_n.shape == (3, 2, 24)
    f_h, f_n = fisher_scores(Arch(model), batches, "classification")
    torch.testing.assert_close(f_h, (g_h.double() ** 2).sum(0))
    torch.testing.assert_close(f_n, (g_n.double() ** 2).sum(0))
    one = mask_gradients(Arch(model), batches[1:2], "classification")  # row b is batch b's own gradient
    torch.testing.assert_close(one[0][0], g_h[1])


@pytest.mark.parametrize("constraint", [0.3, 0.6])
def test_kwon_fisher_meets_budget_and_equals_masked_model(constraint):
    model = tiny_model(layers=3)
    reference = copy.deepcopy(model)
    batches = labelled("classification")
    res = kwon_fisher(model, batches, "classification", constraint=constraint, seq_len=SEQ)
    arch = Arch(model)
    fh, fn = head_flops(SEQ, arch.hidden, arch.head_size), neuron_flops(SEQ, arch.hidden)
    assert res.flops_pruned <= (1 - constraint) * res.flops_dense + 1e-6
    assert res.flops_pruned > (1 - constraint) * res.flops_dense - fh  # greedy leaves less than one head unspent
    assert res.flops_pruned == pytest.approx(float(res.head_mask.sum()) * fh + float(res.neuron_mask.sum()) * fn)
    # selection = greedy on the Fisher scores / FLOPs
    fis_h, fis_n = fisher_scores(Arch(reference), batches, "classification")
    L, H, N = 3, arch.num_heads, arch.ffn_size
    expected = greedy_flops_selection(torch.cat([fis_h.flatten(), fis_n.flatten()]),
                                      torch.cat([torch.full((L * H,), fh), torch.full((L * N,), fn)]),
                                      (1 - constraint) * res.flops_dense)
    assert torch.equal(torch.cat([res.head_mask.flatten(), res.neuron_mask.flatten()]), expected)
    # no tuning, no rescaling: the kept weights are the original ones; model == reference with masks applied
    ids = random_batches(1, seed=7)[0]
    with torch.no_grad(), masked_model(Arch(reference), res.head_mask.float(), res.neuron_mask.float()):
        want = reference(**ids).logits
    torch.testing.assert_close(model(**ids).logits, want)
    prune_physically(model, res.head_mask, res.neuron_mask)
    torch.testing.assert_close(model(**ids).logits, want, rtol=1e-5, atol=1e-6)
    assert [r["kept"] for r in res.sublayers[::2]] == res.head_mask.sum(1).tolist()


def test_kwon_fisher_regression_runs_through_run_method():
    model = tiny_model(num_labels=1)
    res = run_method(model, labelled("regression"), "regression", PruneConfig(method="kwon-fisher", constraint=0.5), SEQ)
    assert 0.4 < 1 - res.flops_pruned / res.flops_dense <= 0.5 + 1e-9
    assert "fisher" in res.timings


def test_the_given_arch_is_passed_down(monkeypatch):
    """run_method (both algorithms), physical pruning and saving take the Arch they are given and build none."""
    from kprune_lib.artifacts.checkpoint import pruned_shape

    built = []
    init = Arch.__init__
    monkeypatch.setattr(Arch, "__init__", lambda self, model: (built.append(model), init(self, model))[1])
    for method in ("kprune", "kwon-fisher"):
        arch = Arch(tiny_model(layers=2))
        res = run_method(arch, labelled("classification"), "classification", PruneConfig(method=method), SEQ,
                         progress=False)
        prune_physically(arch, res.head_mask, res.neuron_mask)
        assert pruned_shape(arch)["heads_per_layer"] == res.heads_kept  # the Arch sees the model's new shape
    assert len(built) == 2  # the two built here


def test_kprune_refuses_a_method_of_another_algorithm():
    with pytest.raises(ValueError, match="run_method"):
        from kprune_lib.method.loop import kprune

        kprune(tiny_model(), labelled("classification"), "classification", PruneConfig(method="kwon-fisher"),
               seq_len=SEQ)


def test_one_shot_global_mask_is_one_threshold_over_iteration0_scores():
    model = tiny_model(layers=3)
    res = run_method(model, random_batches(3), "classification", PruneConfig(constraint=0.5), SEQ, progress=False,
                     record_knowledge=True)
    hm, nm, tau = one_shot_global_masks(res, Arch(model), SEQ, 0.5)
    arch = Arch(model)
    fh, fn = head_flops(SEQ, arch.hidden, arch.head_size), neuron_flops(SEQ, arch.hidden)
    scores = [res.knowledge[0][s]["score"] for s in range(6)]
    # brute force: the smallest set of top-scored units (descending) whose FLOPs fit strictly below the budget,
    # dropping ties together with the unit that breaks the budget
    units = sorted(((float(sc[u]), fh if s % 2 == 0 else fn, s, u) for s, sc in enumerate(scores)
                    for u in range(sc.numel())), reverse=True)
    budget, spent, kept = 0.5 * res.flops_dense, 0.0, set()
    i = 0
    while i < len(units):
        j = i
        while j < len(units) and units[j][0] == units[i][0]:
            j += 1
        group = units[i:j]
        if spent + sum(c for _, c, _, _ in group) >= budget:
            break
        spent += sum(c for _, c, _, _ in group)
        kept |= {(s, u) for _, _, s, u in group}
        i = j
    got = {(2 * l, h) for l, h in hm.nonzero().tolist()} | {(2 * l + 1, n) for l, n in nm.nonzero().tolist()}
    assert got == kept
    assert float(hm.sum()) * fh + float(nm.sum()) * fn < budget
    # it differs from iterative KPMS on this case or at least is a valid mask of the same shapes
    assert hm.shape == res.head_mask.shape and nm.shape == res.neuron_mask.shape


def test_one_shot_needs_recorded_knowledge():
    model = tiny_model()
    res = run_method(model, random_batches(2), "classification", PruneConfig(), SEQ, progress=False)
    with pytest.raises(ValueError, match="record_knowledge"):
        one_shot_global_masks(res, Arch(model), SEQ, 0.5)
