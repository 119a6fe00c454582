"""KCM, Nova, Dai, Schuurmans, "Gradient-Free Structured Pruning with Unlabeled Data" (ICML 2023): the FFN neurons
of every layer ranked without gradients or labels, by two rankings merged into one (R2D2), the kept neurons then
absorbing the pruned ones. No public code is known; what follows is restated from the paper's framing (its abstract,
the authors' talk) and, where the text could not be read, from the natural reading, each such choice named below
and in docs/baselines.md ("KCM").

Stages, layer by layer, bottom-up, on the model pruned so far (so that a layer sees the errors of the layers below):
1. R2, representative ranking (`representative_ranking`): each neuron is a point, its filter (its row of the input
   projection and its bias), mapped by a Gaussian kernel (`rbf_kernel`, bandwidth `median_bandwidth`); the neurons
   are ranked by a greedy kernelized convex-hull approximation: first the point farthest from the kernel mean
   (`kernel_mean_distance`), then always the point farthest from the convex hull of those chosen
   (`hull_distance`, a simplex-constrained least squares in feature space solved by Frank-Wolfe).
2. D2, data-driven ranking (`data_driven_ranking`): on the unlabeled sample, each example votes for the k neurons
   of largest activated output |h|·‖w_out‖ (mean over its real tokens), k the layer's kept count; neurons are
   ranked by votes (majority voting), ties by the summed output.
3. R2D2 (`merge_rankings`): the two rankings merged alternately (R2's first, D2's first, R2's second, ...), a neuron
   already taken skipped, until the layer's kept count.
4. Merge (`merge_pruned`): each pruned neuron is approximated by a convex combination β of the kept neurons in the
   kernel space (`hull_distance` onto the kept set); its output column is added to the kept ones with β, so the kept
   neurons are scaled up to stand in for it: W_out[:, kept] += W_out[:, pruned]·β. The pruned columns are zeroed.
Budget (`layer_budget`): every FFN neuron costs the same FLOPs, and every layer prunes the same number of neurons,
the fewest that meet the FLOPs constraint (uniform across layers, as the paper prunes every FFN alike).

Deviations and readings, named:
(a) Sources: the paper's method section (its equations, its algorithm box) has not been read: not where this was
    written, nor on a later check (2026-12-05) of the stored full-text copy, whose searchable text stops in the
    introduction (docs/baselines.md, "Sources, said plainly"). The structure (R2 from a kernelized convex-hull
    approximation of the neurons' weights, D2 from unlabeled outputs with majority voting, the two rankings merged,
    the kept neurons scaled up, FFN neurons only, layer by layer) is the paper's as its abstract and the first
    author's talk describe it; the kernel (Gaussian, median bandwidth), the greedy farthest-point hull ranking, the
    filter (input row and bias), the alternate merge of the rankings, the vote's top-k = kept count, the merge by
    convex coefficients and the uniform per-layer budget are the natural readings chosen here.
(b) Heads: KCM prunes FFN neurons only. A FLOPs budget the FFNs cannot meet alone (more than every layer's neurons)
    is met by an extension, recorded as `allocation: "uniform+heads"`: every layer removes the fraction c of its
    neurons AND of its heads, the heads ranked by the same R2D2 (a head's filter: its Q, K, V rows and biases and
    its output columns; its output ‖W_O,h·ctx_h‖ for D2) and not merged (a head's output has no common basis with
    another's).
(c) Frank-Wolfe runs `R2_FW_ITERS` steps per greedy step (warm-started: a point keeps its coefficients as the set
    grows) and `MERGE_FW_ITERS` for the merge coefficients; the distances are approximate where it has not
    converged (tests/test_kcm.py checks it against an exact solve).
(d) Ties: the lower index first (stable sorts).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import islice, zip_longest

import torch

from kprune_lib.costs.flops import model_flops, neuron_flops
from kprune_lib.encoder.arch import Arch
from kprune_lib.encoder.forward import attention_bias, ffn_activations, mha_context, sublayer
from kprune_lib.encoder.sublayer import FFN, MHA, Sublayer, sublayers
from kprune_lib.method.kwon import KwonResult, _stage, fold_scales, multiplied
from kprune_lib.method.methods import require_dense

R2_FW_ITERS = 4  # Frank-Wolfe steps per greedy step of R2 (warm-started)
MERGE_FW_ITERS = 200  # Frank-Wolfe steps for the merge coefficients of the pruned neurons onto the kept ones
KCM_DTYPE = torch.float32  # kernels and convex coefficients (tests/test_kcm.py checks the equations in float64)


@dataclass
class KcmResult(KwonResult):
    """KwonResult's fields; `stages` holds "select" (R2D2 masks, weights untouched) and "merge" (what is saved)."""


# ---- R2: kernelized convex hull -----------------------------------------------------------------------------------
def median_bandwidth(x: torch.Tensor) -> float:
    """σ = the median of the pairwise Euclidean distances ‖x_i − x_j‖, i < j (the median heuristic); 1 if all
    points coincide."""
    d = torch.cdist(x, x)
    iu = torch.triu_indices(len(x), len(x), 1)
    sigma = float(d[iu[0], iu[1]].median()) if len(x) > 1 else 1.0
    return sigma if sigma > 0 else 1.0


def rbf_kernel(x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """K_ij = k(x_i, y_j) = exp(−‖x_i − y_j‖² / (2σ²))."""
    return torch.exp(-torch.cdist(x, y).pow(2) / (2.0 * sigma * sigma))


def kernel_mean_distance(k: torch.Tensor) -> torch.Tensor:
    """‖φ(x_i) − μ‖² = K_ii − (2/n)·Σ_j K_ij + (1/n²)·Σ_jl K_jl, μ = (1/n)·Σ_j φ(x_j): each point's squared
    distance to the kernel mean."""
    return k.diagonal() - 2.0 * k.mean(1) + k.mean()


def hull_distance(k_ss: torch.Tensor, k_xs: torch.Tensor, k_xx: torch.Tensor, alpha: torch.Tensor | None = None,
                  q: torch.Tensor | None = None, iters: int = MERGE_FW_ITERS, tol: float = 0.0):
    """d²(φ(x), conv φ(S)) = min_{α ∈ Δ} k(x, x) − 2·αᵀk_S(x) + αᵀK_SS·α, Δ = {α ≥ 0, Σα = 1}: every row x at once,
    by Frank-Wolfe with exact line search (the vertex of least gradient, the step that minimises the quadratic),
    stopping after `iters` steps or when every duality gap is ≤ tol.

    k_ss (s, s), k_xs (n, s), k_xx (n,); alpha (n, s) a warm start, updated in place (default: the nearest vertex,
    argmax k_S(x)), q = alpha·K_SS its product, likewise (computed if not given). Returns (alpha, q, d²)."""
    n, s = k_xs.shape
    rows = torch.arange(n)
    if alpha is None:
        alpha = torch.zeros(n, s, dtype=k_xs.dtype)
        alpha[rows, k_xs.argmax(1)] = 1.0
        q = None
    if q is None:
        q = alpha @ k_ss
    diag = k_ss.diagonal()
    for _ in range(iters):
        g = q - k_xs  # half the gradient of the objective
        j = g.argmin(1)
        gap = 2.0 * ((g * alpha).sum(1) - g[rows, j])  # −∇ᵀ(e_j − α) ≥ 0, the Frank-Wolfe duality gap
        if float(gap.max()) <= tol:
            break
        curv = diag[j] - 2.0 * q[rows, j] + (alpha * q).sum(1)  # (e_j − α)ᵀK(e_j − α)
        gamma = torch.where(curv > 0, gap / (2.0 * curv.clamp_min(1e-30)), torch.ones_like(gap)).clamp_(0.0, 1.0)
        alpha.mul_((1.0 - gamma)[:, None])
        alpha[rows, j] += gamma
        q.mul_((1.0 - gamma)[:, None]).add_(gamma[:, None] * k_ss[j])
    d2 = k_xx - 2.0 * (alpha * k_xs).sum(1) + (alpha * q).sum(1)
    return alpha, q, d2.clamp_min(0.0)


def representative_order(k: torch.Tensor, iters: int = R2_FW_ITERS, tol: float = 0.0):
    """R2, lazily: yields s_1 = argmax_i ‖φ(x_i) − μ‖² (`kernel_mean_distance`), then s_{t+1} = argmax_{i ∉ S_t}
    d²(φ(x_i), conv φ(S_t)) (`hull_distance`, warm-started), the greedy approximation of the kernelized convex
    hull, until every point is chosen. k: (n, n) kernel matrix."""
    n = k.shape[0]
    if n == 0:
        return
    alpha = k.new_zeros(n, n)  # coefficients over the chosen points, in the order chosen (columns 0 … s−1)
    q = k.new_zeros(n, n)  # alpha·K_SS
    k_xs = k.new_zeros(n, n)  # K[:, S]
    k_ss = k.new_zeros(n, n)  # K[S, S]
    taken = torch.zeros(n, dtype=torch.bool)
    c = int(kernel_mean_distance(k).argmax())
    for s in range(n):
        taken[c] = True
        k_xs[:, s] = k[:, c]
        k_ss[s, :s + 1] = k_xs[c, :s + 1]
        k_ss[:s, s] = k_ss[s, :s]
        if s == 0:  # every point's only vertex
            alpha[:, 0] = 1.0
            q[:, 0] = k[c, c]
        else:  # the new vertex's column of alpha·K_SS (its coefficients are 0)
            q[:, s] = alpha[:, :s] @ k_ss[:s, s]
        yield c
        if s == n - 1:
            return
        _, _, d2 = hull_distance(k_ss[:s + 1, :s + 1], k_xs[:, :s + 1], k.diagonal(), alpha[:, :s + 1],
                                 q[:, :s + 1], iters=iters, tol=tol)
        c = int(d2.masked_fill(taken, -1.0).argmax())


def representative_ranking(k: torch.Tensor, depth: int, iters: int = R2_FW_ITERS, tol: float = 0.0) -> list[int]:
    """R2's first `depth` points (`representative_order`)."""
    return list(islice(representative_order(k, iters, tol), max(depth, 0)))


# ---- D2: votes of the unlabeled examples --------------------------------------------------------------------------
def example_outputs(out: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """a_{e,i} = (1/|T_e|)·Σ_{t ∈ T_e} out_{e,t,i}: each unit's output magnitude averaged over an example's real
    tokens. out (B, T, U) ≥ 0, attention_mask (B, T). Returns (B, U)."""
    m = attention_mask.to(out.dtype)[..., None]
    return (out * m).sum(1) / m.sum(1).clamp_min(1.0)


def data_driven_ranking(outputs: torch.Tensor, k: int) -> tuple[list[int], torch.Tensor]:
    """D2: V_i = Σ_e 1[i ∈ top-k of a_{e,·}], each example voting for its k units of largest output; units ranked by
    V descending, ties by Σ_e a_{e,i} descending, then the lower index. outputs (E, U). Returns (order, V)."""
    e, u = outputs.shape
    votes = torch.zeros(u, dtype=torch.float64)
    if k > 0:
        top = outputs.topk(min(k, u), dim=1).indices
        votes.index_add_(0, top.flatten(), torch.ones(top.numel(), dtype=torch.float64))
    total = outputs.double().sum(0)
    order = sorted(range(u), key=lambda i: (-float(votes[i]), -float(total[i]), i))
    return order, votes


def merge_rankings(first, second, k: int) -> list[int]:
    """R2D2: first[0], second[0], first[1], second[1], …, a unit already taken skipped, until k units. first, second:
    iterables (R2 lazily: it is computed only as deep as the merge reads it)."""
    kept, seen = [], set()
    if k <= 0:
        return kept
    for pair in zip_longest(first, second):
        for u in pair:
            if u is not None and u not in seen:
                kept.append(u)
                seen.add(u)
                if len(kept) == k:
                    return kept
    return kept


# ---- the merge ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def merge_pruned(w_out: torch.Tensor, beta: torch.Tensor, kept: torch.Tensor, pruned: torch.Tensor) -> None:
    """W_out[:, kept] ← W_out[:, kept] + W_out[:, pruned]·β, then W_out[:, pruned] ← 0, in place: pruned neuron p,
    approximated by Σ_j β_pj·(kept neuron j), hands its output column to the kept neurons in those proportions.
    w_out (d, N); beta (|pruned|, |kept|), rows on the simplex."""
    if len(pruned) and len(kept):
        w_out[:, kept] += (w_out[:, pruned].to(beta.dtype) @ beta).to(w_out.dtype)
    w_out[:, pruned] = 0.0


def neuron_filters(arch: Arch, i: int) -> torch.Tensor:
    """Layer i's neurons as points: row j = (W_in[j, :], b_in[j]), shape (N, d + 1)."""
    lin = arch.module(i, "ffn_in")
    b = lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.weight.shape[0])
    return torch.cat([lin.weight, b[:, None]], 1).detach().to("cpu", KCM_DTYPE)


def head_filters(arch: Arch, i: int) -> torch.Tensor:
    """Layer i's heads as points (extension (b)): row h = its rows of W_Q, W_K, W_V with their biases and its columns
    of W_O, flattened, shape (H, 3·d_h·(d + 1) + d·d_h)."""
    H, dh = arch.num_heads, arch.head_size
    parts = []
    for name in ("q", "k", "v"):
        lin = arch.module(i, name)
        b = lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.weight.shape[0])
        parts.append(torch.cat([lin.weight, b[:, None]], 1).view(H, -1))
    o = arch.module(i, "o").weight  # (d, H·d_h)
    parts.append(o.view(o.shape[0], H, dh).transpose(0, 1).reshape(H, -1))
    return torch.cat(parts, 1).detach().to("cpu", KCM_DTYPE)


# ---- the budget ---------------------------------------------------------------------------------------------------
def layer_budget(constraint: float, num_layers: int, num_heads: int, ffn_size: int, seq_len: float, hidden: int,
                 head_size: int, rel_positions: int = 0) -> tuple[int, int, str]:
    """Units each layer prunes: (heads, neurons, allocation). The paper's ("ffn"): p = ⌈c·F_dense / (L·F_neuron)⌉
    neurons per layer, heads untouched; where p > N (the FFNs cannot meet the budget alone), extension (b)
    ("uniform+heads"): ⌈c·H⌉ heads and ⌈c·N⌉ neurons per layer. Either removes ≥ c of the FLOPs (rel_positions:
    `Arch.rel_positions`, the relative-attention terms of a head's FLOPs)."""
    if not 0.0 < constraint < 1.0:
        raise ValueError(f"constraint must be in (0, 1) (fraction of FLOPs removed), got {constraint}")
    dense = model_flops([num_heads] * num_layers, [ffn_size] * num_layers, seq_len, hidden, head_size, rel_positions)
    p = math.ceil(constraint * dense / (num_layers * neuron_flops(seq_len, hidden)) - 1e-9)
    if p <= ffn_size:
        return 0, p, "ffn"
    return math.ceil(constraint * num_heads - 1e-9), math.ceil(constraint * ffn_size - 1e-9), "uniform+heads"


# ---- the pipeline -------------------------------------------------------------------------------------------------
def _select(filters: torch.Tensor, outputs: torch.Tensor, keep: int, r2_iters: int):
    """R2D2 for one sublayer: (kept indices sorted, the kernel, σ, D2 votes)."""
    sigma = median_bandwidth(filters.double())
    k = rbf_kernel(filters.double(), filters.double(), sigma).to(filters.dtype)
    d2, votes = data_driven_ranking(outputs, keep)
    return sorted(merge_rankings(representative_order(k, iters=r2_iters), d2, keep)), k, sigma, votes


@torch.no_grad()
def kcm(model: torch.nn.Module | Arch, batches: list[dict], problem: str, *, constraint: float, seq_len: float,
        score=None, progress: bool = False, name: str = "kcm", r2_iters: int = R2_FW_ITERS,
        merge_iters: int = MERGE_FW_ITERS) -> KcmResult:
    """Prune to `constraint` (fraction of FLOPs removed) with KCM, layer by layer bottom-up on the model pruned so
    far: R2D2 selection of each layer's neurons (and heads, extension (b)), then the merge of its pruned neurons into
    its kept ones. Labels in `batches` are ignored (`problem` only names the task). The model (or the model of an
    `Arch`) is changed in place: dense shapes, pruned columns zero, merged columns updated, an emptied sublayer's
    bias moved as `kwon.fold_scales` does. score(model) -> dev metrics, if given, is evaluated after selection (the
    original weights, masked) and after the merge (`KcmResult.stages`; its time is not pruning time)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    arch = Arch.of(model)
    L, H, N, d, dh = arch.num_layers, arch.num_heads, arch.ffn_size, arch.hidden, arch.head_size
    require_dense(arch, name)
    if arch.table.fused_qkv or arch.table.gated_ffn:  # its filters are rows of separate Q/K/V and of a plain FFN
        raise ValueError(f"{name} reads its filters from separate Q/K/V projections and a plain FFN, which "
                         f"{arch.model_type} does not have (fused Wqkv, gated FFN); use --method kprune or "
                         "fisher-greedy")
    arch.model.eval()
    heads_pruned, neurons_pruned, allocation = layer_budget(constraint, L, H, N, seq_len, d, dh, arch.rel_positions)
    original = {s: arch.out_proj(s).weight.detach().clone() for s in sublayers(L)}
    head_mask = torch.ones(L, H, dtype=torch.bool)
    neuron_mask = torch.ones(L, N, dtype=torch.bool)
    timings = {"r2": 0.0, "d2": 0.0, "merge": 0.0}
    votes, layer_log = {}, []
    dtype = arch.model.dtype
    states = [(b, attention_bias(b["attention_mask"], dtype), arch.embed(b["input_ids"], b.get("token_type_ids")))
              for b in batches]
    for i in tqdm(range(L), desc="kcm", leave=False, disable=not progress):
        log = {"layer": i}
        if heads_pruned:  # extension (b)
            t = time.perf_counter()
            o = arch.module(i, "o").weight
            outs = []
            for b, bias, x in states:
                ctx = mha_context(arch, i, x, bias)
                per_head = torch.einsum("btnk,dnk->btn", ctx.view(*ctx.shape[:2], H, dh), o.view(-1, H, dh))
                outs.append(example_outputs(per_head.abs(), b["attention_mask"]).cpu())
            keep = H - heads_pruned
            kept, _, sigma, v = _select(head_filters(arch, i), torch.cat(outs), keep, r2_iters)
            head_mask[i] = False
            head_mask[i, kept] = True
            arch.out_proj(Sublayer.at(i, MHA)).weight[:, ~head_mask[i].repeat_interleave(dh).to(o.device)] = 0.0
            votes[Sublayer.at(i, MHA)] = v
            log["head_sigma"] = sigma
            timings["d2"] += time.perf_counter() - t
        t = time.perf_counter()
        s_mha, s_ffn = Sublayer.at(i, MHA), Sublayer.at(i, FFN)
        mid = [(b, bias, sublayer(arch, s_mha, x, bias)[0]) for b, bias, x in states]
        w_out = arch.out_proj(s_ffn).weight
        norms = w_out.norm(dim=0)
        outs = [example_outputs(ffn_activations(arch, i, z).abs() * norms, b["attention_mask"]).cpu()
                for b, _, z in mid]
        keep = N - neurons_pruned
        timings["d2"] += time.perf_counter() - t
        t = time.perf_counter()
        filters = neuron_filters(arch, i)
        kept, k, sigma, v = _select(filters, torch.cat(outs), keep, r2_iters)
        timings["r2"] += time.perf_counter() - t
        t = time.perf_counter()
        neuron_mask[i] = False
        neuron_mask[i, kept] = True
        kept_t, pruned_t = neuron_mask[i].nonzero().flatten(), (~neuron_mask[i]).nonzero().flatten()
        d2_res = torch.zeros(0, dtype=KCM_DTYPE)
        if len(kept_t) and len(pruned_t):
            beta, _, d2_res = hull_distance(k[kept_t][:, kept_t], k[pruned_t][:, kept_t], k.diagonal()[pruned_t],
                                            iters=merge_iters)
            merge_pruned(w_out, beta, kept_t.to(w_out.device), pruned_t.to(w_out.device))
        else:
            w_out[:, pruned_t.to(w_out.device)] = 0.0
        votes[s_ffn] = v
        log |= {"neuron_sigma": sigma, "merge_residual_mean": float(d2_res.mean()) if len(d2_res) else 0.0,
                "merge_residual_max": float(d2_res.max()) if len(d2_res) else 0.0}
        layer_log.append(log)
        if i < L - 1:
            states = [(b, bias, sublayer(arch, s_ffn, z, bias)[0]) for b, bias, z in mid]
        timings["merge"] += time.perf_counter() - t

    evals = 0.0
    stages = [_stage("select", head_mask, neuron_mask, None, allocation=allocation,
                     heads_pruned_per_layer=heads_pruned, neurons_pruned_per_layer=neurons_pruned)]
    if score is not None:  # the R2D2 masks on the original weights: selection without the merge
        t = time.perf_counter()
        merged = {s: arch.out_proj(s).weight.detach().clone() for s in sublayers(L)}
        for s in sublayers(L):
            arch.out_proj(s).weight.copy_(original[s])
        with multiplied(arch, head_mask.to(dtype), neuron_mask.to(dtype)):
            stages[-1]["dev"] = score(arch.model)
        for s in sublayers(L):
            arch.out_proj(s).weight.copy_(merged[s])
        evals += time.perf_counter() - t
    fold_scales(arch, head_mask.to(dtype), neuron_mask.to(dtype))  # pruned columns are zero already; moves biases
    stages.append(_stage("merge", head_mask, neuron_mask, stages[-1], layers=layer_log))
    if score is not None:
        t = time.perf_counter()
        stages[-1]["dev"] = score(arch.model)
        evals += time.perf_counter() - t

    records = []
    for s in sublayers(L):
        m = s.pick(head_mask, neuron_mask)[s.layer]
        records.append({"sublayer": int(s), "layer": s.layer, "kind": s.kind, "units": int(m.numel()),
                        "kept": int(m.sum()), "tuned": False, "ridge": 0.0,
                        "merged": (not s.is_mha) and 0 < int(m.sum()) < int(m.numel())})
    flops_dense = model_flops([H] * L, [N] * L, seq_len, d, dh, arch.rel_positions)
    flops_pruned = model_flops(head_mask.sum(1).tolist(), neuron_mask.sum(1).tolist(), seq_len, d, dh,
                               arch.rel_positions)
    scores = {s: votes.get(s, torch.zeros(s.pick(H, N), dtype=torch.float64)) for s in sublayers(L)}
    return KcmResult(head_mask, neuron_mask, records, timings, time.perf_counter() - t0 - evals, flops_dense,
                     flops_pruned, scores=scores, stages=stages)
