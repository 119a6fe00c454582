"""The dispatch of every method, the fisher-greedy ablation and the one-shot global mask, all run on the same sample.

What each `--method` is and changes is declared once in `methods.REGISTRY`; this module runs them:
`run_method` dispatches on the entry's algorithm (K-prune's loop, Kwon et al.'s pipeline `kwon.kwon`, or
`kwon_fisher`); `kwon_fisher` is the fisher-greedy ablation of Kwon et al. (formerly the kwon-fisher baseline: Kwon's
Fisher information of the task loss on the TRUE labels w.r.t. one mask variable per head and per neuron,
Σ_batches (∂L/∂m)²; one global FLOPs-constrained greedy selection by Fisher/FLOPs; no split search, no
rearrangement, no mask rescaling, no tuning); `one_shot_global_masks` is the one-threshold ablation of KPMS's
iteration.
"""
from __future__ import annotations

import time
import torch

from kprune_lib.encoder.arch import Arch
from kprune_lib.config import PruneConfig
from kprune_lib.costs.flops import UnitFlops
from kprune_lib.encoder.masks import head_dims
from kprune_lib.method.kcm import kcm
from kprune_lib.method.kwon import kwon, mask_gradients
from kprune_lib.method.methods import check, get, require_dense, resolve
from kprune_lib.method.loop import PruneResult, kprune
from kprune_lib.method.search import kpms_threshold
from kprune_lib.encoder.sublayer import FFN, MHA, Sublayer, sublayers


def run_method(model: torch.nn.Module | Arch, batches: list[dict], problem: str, config: PruneConfig, seq_len: float,
               progress: bool = True, record_knowledge: bool = False, latency=None, score=None) -> PruneResult:
    """Prune `model` (or the model of an `Arch`) in place (dense shapes, pruned projection columns zeroed) with
    `config.method` (its registry entry, `methods.REGISTRY`, says which algorithm runs and with which settings).
    With `config.latency_budget_ms`, `latency` is the model's latency table (`latency.latency_table`).
    score(model) -> dev metrics: a method with stages (kwon) records them after each (`KwonResult.stages`)."""
    cfg = resolve(config)
    check(cfg, problem)
    algorithm = get(cfg.method).algorithm
    if algorithm == "fisher-greedy":
        return kwon_fisher(model, batches, problem, constraint=cfg.constraint, seq_len=seq_len, name=cfg.method)
    if algorithm == "kcm":
        return kcm(model, batches, problem, constraint=cfg.constraint, seq_len=seq_len, score=score,
                   progress=progress, name=cfg.method)
    if algorithm == "kwon":
        return kwon(model, batches, problem, constraint=cfg.constraint, seq_len=seq_len, score=score,
                    progress=progress, name=cfg.method, latency=latency, latency_budget_ms=cfg.latency_budget_ms)
    return kprune(model, batches, problem, cfg, seq_len=seq_len, latency=latency, progress=progress,
                  record_knowledge=record_knowledge)


# ---- fisher-greedy (formerly kwon-fisher) ------------------------------------------------------------------------
def fisher_scores(arch: Arch, batches: list[dict], problem: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical Fisher of the mask variables: Σ_batches (∂L/∂m)², one variable per head (L, H) and neuron (L, N),
    from Kwon's per-batch mask gradients (`kwon.mask_gradients`), summed batch by batch in float64.

    batches need "labels" (gold labels). The model's parameters are left untouched.
    """
    g_h, g_n = mask_gradients(arch, batches, problem)
    fisher_h = torch.zeros(g_h.shape[1:], dtype=torch.float64)
    fisher_n = torch.zeros(g_n.shape[1:], dtype=torch.float64)
    for gh, gn in zip(g_h, g_n):
        fisher_h += gh.double() ** 2
        fisher_n += gn.double() ** 2
    return fisher_h, fisher_n


def greedy_flops_selection(scores: torch.Tensor, costs: torch.Tensor, budget: float) -> torch.Tensor:
    """Keep units in descending score/cost order, each one that still fits, until the budget is spent.

    scores, costs: (n,). Returns keep (n,) bool with Σ costs[keep] <= budget.
    """
    ratio = scores.double() / costs.double()
    order = torch.argsort(ratio, descending=True, stable=True).tolist()
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    left = float(budget)
    for i in order:
        c = float(costs[i])
        if c <= left:
            keep[i] = True
            left -= c
    return keep


def kwon_fisher(model: torch.nn.Module | Arch, batches: list[dict], problem: str, *, constraint: float,
                seq_len: float, name: str = "fisher-greedy") -> PruneResult:
    """fisher-greedy: Kwon's Fisher scores, one global FLOPs-constrained greedy pass, no tuning (`name`: the method
    as asked for, for its errors).

    The model (or the model of an `Arch`) is changed in place only by zeroing the pruned units' output-projection
    columns (as K-prune leaves it: dense shapes, equal to the masked model); kept weights are not rescaled.
    """
    t0 = time.perf_counter()
    arch = Arch.of(model)
    L, H, N = arch.num_layers, arch.num_heads, arch.ffn_size
    require_dense(arch, name)
    flops = UnitFlops.of(arch)
    fh, fn = flops.head(seq_len), flops.neuron(seq_len)
    flops_dense = flops.model([H] * L, [N] * L, seq_len)
    fisher_h, fisher_n = fisher_scores(arch, batches, problem)
    t_fisher = time.perf_counter() - t0
    scores = torch.cat([fisher_h.flatten(), fisher_n.flatten()])
    costs = torch.cat([torch.full((L * H,), fh, dtype=torch.float64), torch.full((L * N,), fn, dtype=torch.float64)])
    keep = greedy_flops_selection(scores, costs, (1.0 - constraint) * flops_dense)
    head_mask, neuron_mask = keep[:L * H].view(L, H), keep[L * H:].view(L, N)
    _zero_pruned_columns(arch, head_mask, neuron_mask)
    records = []
    for s in sublayers(L):
        m = s.pick(head_mask, neuron_mask)[s.layer]
        records.append({"sublayer": int(s), "layer": s.layer, "kind": s.kind, "units": int(m.numel()),
                        "kept": int(m.sum()), "tuned": False, "ridge": 0.0})
    flops_pruned = flops.model(head_mask.sum(1).tolist(), neuron_mask.sum(1).tolist(), seq_len)
    seconds = time.perf_counter() - t0
    return PruneResult(head_mask, neuron_mask, records, {"fisher": t_fisher, "search": seconds - t_fisher}, seconds,
                       flops_dense, flops_pruned,
                       scores={s: s.pick(fisher_h, fisher_n)[s.layer] for s in sublayers(L)})


@torch.no_grad()
def _zero_pruned_columns(arch: Arch, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> None:
    for i in range(arch.num_layers):
        for s, m in ((Sublayer.at(i, MHA), head_dims(head_mask[i], arch.head_size)), (Sublayer.at(i, FFN), neuron_mask[i])):
            proj = arch.out_proj(s)
            proj.weight[:, ~m.bool().to(proj.weight.device)] = 0.0


# ---- one-shot global mask (the ablation of KPMS's iteration, for notebook 02) -------------------------------------
def one_shot_global_masks(result: PruneResult, arch: Arch, seq_len: float, constraint: float):
    """Masks from the scores of iteration 0 only, with ONE global KPMS threshold over all units (no iteration).

    result: a K-prune run with record_knowledge=True (its knowledge[0] holds every sublayer's iteration-0 scores).
    Returns (head_mask (L, H) bool, neuron_mask (L, N) bool, τ).
    """
    if 0 not in result.knowledge:
        raise ValueError("one_shot_global_masks needs a K-prune result recorded with record_knowledge=True")
    L = arch.num_layers
    flops = UnitFlops.of(arch)
    fh, fn = flops.head(seq_len), flops.neuron(seq_len)
    scores = [result.knowledge[0][s]["score"] for s in range(2 * L)]
    costs = [torch.full((sc.numel(),), s.pick(fh, fn), dtype=torch.float64) for s, sc in zip(sublayers(L), scores)]
    tau = kpms_threshold(torch.cat(scores), torch.cat(costs), (1.0 - constraint) * result.flops_dense)
    head_mask = torch.stack([scores[Sublayer.at(i, MHA)] > tau for i in range(L)])
    neuron_mask = torch.stack([scores[Sublayer.at(i, FFN)] > tau for i in range(L)])
    return head_mask, neuron_mask, tau
