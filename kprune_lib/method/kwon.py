"""Kwon et al., "A Fast Post-Training Pruning Framework for Transformers" (NeurIPS 2022), as its authors' code runs
it (github WoosukKwon/retraining-free-pruning, commit 806ac5a: main.py, prune/{fisher,search,rearrange,rescale}.py,
utils/{linalg,schedule,arch}.py, efficiency/{mac,latency}.py), restated here from its facts and formulas.

1. Fisher (`mask_gradients`): one mask variable per head and per neuron, all ones; the gradient of the gold-label
   task loss (batch mean) per sample batch, kept per batch; importance = Σ_batches grad² (prune/fisher.py).
2. Search (`search_mac`; under a latency budget `search_latency`), twice: for the teacher at `teacher_mac`
   (utils/schedule.py get_pruning_schedule(target, num_iter=2)[0] = √target) and for the target (prune/search.py).
3. Rearrangement (`rearrange_mask`): per layer, the greedy swap that minimises ‖Σ_pruned g‖² (prune/rearrange.py).
4. Rescaling (`rescale_mask`): layer by layer, a least-squares fit of the kept units' mask values so that the
   student's sublayer output matches the teacher's, solved by LSMR (`lsmr_solve`; prune/rescale.py,
   utils/linalg.py).
Their constraint is the fraction of MACs KEPT, ours the fraction of FLOPs REMOVED; FLOPs = 2·MAC unit for unit
(`costs.flops`), so their kept fraction is 1 − ours (`mac_kept`). Their masks multiply a unit's output and leave the
output bias in place, so a sublayer with no unit left still adds its bias; `fold_scales` writes the final mask values
into the output projections (and such a bias into the LayerNorm shift before it), so that the dense-shaped model
computes their masked model with no hook and physical pruning keeps it exact. Quirks kept as theirs: the teacher's
FFN target sums ALL of that layer's neurons; layer 0's attention is never rescaled; the last layer's FFN is fitted on
the first ([CLS]) token only (every GLUE task, regression included); rescaling stops at the first rejected solve.
Deviations, named: (a) `search_mac` skips head counts whose heads alone exceed the budget (theirs would return such
a split, over budget); (b) a one-unit system is solved in closed form and accepted (theirs reads an unset variable
there and crashes; the reference run bridged it the same way); (c) sorting is stable (ties: lower index first).
Arithmetic in the model's dtype as theirs (float32 gradients, importance sums, normal equations; LSMR on them).
`benchmarks/kwon_reference.py` compares every stage with the authors' own run (benchmarks/KWON.md).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse.linalg import lsmr

from kprune_lib.costs.flops import model_flops
from kprune_lib.encoder.arch import Arch
from kprune_lib.encoder.forward import attention_bias, encode, ffn_activations, mha_context
from kprune_lib.encoder.masks import apply_masks, head_dims
from kprune_lib.encoder.sublayer import MHA, Sublayer, sublayers
from kprune_lib.method.loop import PruneResult
from kprune_lib.method.measurement import gold_loss
from kprune_lib.method.methods import require_dense

NUM_SAMPLES = 2048  # main.py --num_samples: training examples drawn, whatever the token budget
LSMR_DAMP = 1.0  # utils/linalg.py: lsmr(AᵀA, AᵀB − AᵀA·1, damp=1)
SCALE_LIMIT = 10.0  # prune/rescale.py: a solve with a scale outside [−10, 10] stops the rescaling


@dataclass
class KwonResult(PruneResult):
    stages: list[dict] = field(default_factory=list)  # masks (and dev metrics, given a scorer) after each stage


# ---- MAC accounting (efficiency/mac.py) ---------------------------------------------------------------------------
def mac_per_head(seq_len: float, hidden: int, head_size: int) -> float:
    """Q, K, V (3·L·d·d_h) + scores and mixing (2·L²·d_h) + output (L·d_h·d): half of `flops.head_flops`."""
    return 3 * seq_len * hidden * head_size + 2 * seq_len * seq_len * head_size + seq_len * head_size * hidden


def mac_per_neuron(seq_len: float, hidden: int) -> float:
    """2·L·d: half of `flops.neuron_flops`."""
    return 2 * seq_len * hidden


def mac_kept(constraint: float) -> float:
    """Their `--constraint` (fraction of MACs kept) for ours (fraction of FLOPs removed): FLOPs = 2·MAC per unit."""
    return 1.0 - constraint


def teacher_mac(target: float, num_iter: int = 2) -> float:
    """get_pruning_schedule(target, num_iter)[0] = target^(1/num_iter): the teacher's kept MAC fraction."""
    return target ** (1.0 / num_iter)


# ---- 1. Fisher (prune/fisher.py) ----------------------------------------------------------------------------------
def mask_gradients(arch: Arch, batches: list[dict], problem: str, progress: bool = False):
    """∂L/∂m of the gold-label loss (batch mean) at all-ones masks, one row per batch: (n_batches, L, H) for the
    heads (one variable shared by a head's d_h context dims) and (n_batches, L, N) for the neurons, in the model's
    dtype. batches need "labels". The model's parameters are left untouched."""
    from tqdm.auto import tqdm

    model = arch.model
    model.eval()
    p = next(model.parameters())
    L = arch.num_layers
    head_m = torch.ones(L, arch.num_heads, device=p.device, dtype=p.dtype, requires_grad=True)
    neuron_m = torch.ones(L, arch.ffn_size, device=p.device, dtype=p.dtype, requires_grad=True)
    grads_h, grads_n = [], []
    requires_grad = {n: q.requires_grad for n, q in model.named_parameters()}
    model.requires_grad_(False)
    try:
        for b in tqdm(batches, desc="mask gradients", leave=False, disable=not progress):
            if "labels" not in b:
                raise ValueError("the Fisher methods need gold labels in the sample batches "
                                 "(tokenize(..., labels=True))")
            masks = {s: head_dims(head_m[s.layer], arch.head_size) if s.is_mha else neuron_m[s.layer]
                     for s in sublayers(L)}
            with apply_masks(arch, masks):
                logits = arch.head(encode(arch, b))
            g_h, g_n = torch.autograd.grad(gold_loss(logits, b["labels"], problem), [head_m, neuron_m])
            grads_h.append(g_h.detach())
            grads_n.append(g_n.detach())
    finally:
        for n, q in model.named_parameters():
            q.requires_grad_(requires_grad[n])
    return torch.stack(grads_h).cpu(), torch.stack(grads_n).cpu()


# ---- 2. search (prune/search.py search_mac) ----------------------------------------------------------------------
def search_mac(head_importance: torch.Tensor, neuron_importance: torch.Tensor, seq_len: float, hidden: int,
               head_size: int, mac_constraint: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Sort heads and neurons by importance (descending); for every number k ≥ 1 of kept heads, fill the MAC budget
    left, int((budget − k·MAC_head) / MAC_neuron), with the top neurons; keep the split with the largest summed
    importance (the first on a tie). Sums in the importances' dtype, as theirs. Returns (L, H) and (L, N) bool masks
    and {"heads", "neurons", "importance"}. Head counts that alone exceed the budget are skipped (deviation (a))."""
    if not 0.0 < mac_constraint < 1.0:
        raise ValueError(f"the kept MAC fraction must be in (0, 1), got {mac_constraint}")
    (L, H), N = head_importance.shape, neuron_importance.shape[1]
    mh, mn = mac_per_head(seq_len, hidden, head_size), mac_per_neuron(seq_len, hidden)
    total = 0.0
    for _ in range(L):  # compute_mac's per-layer sum, so that the budget is theirs to the last bit
        total += H * mh + N * mn
    max_mac = mac_constraint * total
    h_sorted, h_order = torch.sort(head_importance.flatten(), descending=True, stable=True)
    n_sorted, n_order = torch.sort(neuron_importance.flatten(), descending=True, stable=True)
    best, best_k, best_m = None, 0, min(max(int(max_mac / mn), 0), L * N)
    for k in range(1, L * H + 1):
        heads_mac = mh * k
        if heads_mac > max_mac:
            break
        m = max(int((max_mac - heads_mac) / mn), 0)
        value = h_sorted[:k].sum() + n_sorted[:m].sum()
        if best is None or value > best:
            best, best_k, best_m = value, k, min(m, L * N)
    if best is None:  # not even one head fits: neurons only (theirs requires a head)
        best = n_sorted[:best_m].sum()
    head_mask = torch.zeros(L * H, dtype=torch.bool)
    head_mask[h_order[:best_k]] = True
    neuron_mask = torch.zeros(L * N, dtype=torch.bool)
    neuron_mask[n_order[:best_m]] = True
    info = {"heads": best_k, "neurons": best_m, "importance": float(best)}
    return head_mask.view(L, H), neuron_mask.view(L, N), info


# ---- 2'. search under a latency budget (prune/search.py search_latency, efficiency/latency.py) -------------------
@dataclass(frozen=True)
class PiecewiseLinear:
    """fit_latency_fn's model of a sublayer's latency in its unit count n: c for n ≤ threshold, then
    c + slope·(n − threshold)."""

    threshold: int
    c: float
    slope: float


def fit_latency_fn(lut) -> PiecewiseLinear:
    """fit_latency_fn: lut[n−1] = the latency of a sublayer with n units (n = 1 … U). For each threshold t = 1 … U:
    c = mean(lut[:t]); slope = Σ_i i·(lut[t−1+i] − c) / Σ_i i² (i = 1 … U − t; least squares through (0, c),
    clipped at 0; 0 when t = U); the t of least squared error Σ_n (lut[n−1] − f(n))² wins (the first on a tie).
    Theirs starts the minimum at 10000 (ms²) and has no fit above it; here any error is a candidate."""
    lut = np.asarray(lut, dtype=np.float64)
    best, fit = math.inf, None
    for t in range(1, len(lut) + 1):
        c = lut[:t].sum() / t
        y = lut[t:] - c
        x = np.arange(1, len(y) + 1)
        slope = 0.0 if t == len(lut) else max(float((x * y).sum() / (x * x).sum()), 0.0)
        approx = np.concatenate([np.full(t, c), slope * x + c])
        err = float(((lut - approx) ** 2).sum())
        if err < best:
            best, fit = err, PiecewiseLinear(t, float(c), slope)
    return fit


def unit_luts(table, heads: int, neurons: int) -> tuple[list[float], list[float]]:
    """Their look-up tables from ours (`costs.latency_model.LatencyTable`): lut[n−1] = C(n) − C(0) for n = 1 … U,
    the sublayer's latency above an empty one (theirs: a sublayer with no unit costs 0, `lookup_latency`)."""
    luts = []
    for kind, units in ((MHA, heads), ("ffn", neurons)):
        zero = table.cost(kind, 0)
        luts.append([table.cost(kind, n) - zero for n in range(1, units + 1)])
    return luts[0], luts[1]


def latency_kept(table, budget_ms: float, layers: int, mha_lut, ffn_lut) -> float:
    """Their `--constraint` under `--metric latency` (the fraction of the dense model's summed sublayer latency,
    `estimate_latency`, to keep) for our budget in milliseconds of the whole model: (G⁻¹(budget) − L·(C_attn(0) +
    C_ffn(0))) / (L·(lut_attn[H−1] + lut_ffn[N−1])), G the table's whole-model calibration
    (`LatencyTable.sublayer_budget`), so that the masks the search returns meet our budget by our table."""
    empty = layers * (table.cost(MHA, 0) + table.cost("ffn", 0))
    kept = (table.sublayer_budget(budget_ms) - empty) / (layers * (mha_lut[-1] + ffn_lut[-1]))
    if not 0.0 < kept < 1.0:
        raise ValueError(f"latency budget {budget_ms:.4g} ms leaves {kept:.3g} of the sublayers' latency to kwon's "
                         "search; choose a budget between the model's floor and its dense latency")
    return kept


def search_latency(head_importance: torch.Tensor, neuron_importance: torch.Tensor, latency_constraint: float,
                   mha_lut, ffn_lut) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """search_latency: each sublayer kind's latency fitted piecewise-linearly (`fit_latency_fn`: a flat part up to
    `threshold` units, then `slope` per unit). Every layer first keeps its `threshold` most important units (its
    base, costing c); for every number of whole MHA and FFN sublayers dropped (those of least base importance,
    0 … L − 1 each), the other units compete globally: for every count k ≥ 1 of extra heads, the budget left after
    the kept bases and k·slope_attn is filled with the top neurons at slope_ffn each; the split of largest summed
    importance, kept bases included, wins (the first on a tie). Returns (L, H) and (L, N) bool masks and {"heads", "neurons",
    "importance", "dropped", "fitted_ms" (the split's latency by the fits), "budget_ms", "fit"}: the search meets
    the budget by its fits, not by the table itself (`Method.latency_model`).
    Kept as theirs: a dropped sublayer's non-base units still compete, at importance 0; a split may exceed the
    budget by less than one neuron's slope (the neuron count is truncated toward 0).
    Deviations, named: (d) where every head is in the flat part (threshold = H) the head count runs from 0 (theirs
    has no candidate and crashes); (e) a flat FFN fit (slope 0) fits every remaining neuron (theirs divides by 0);
    (f) no candidate within the budget is a one-line error (theirs crashes on an unset variable); (g) each
    candidate's budget for the non-base units is the budget less ITS bases' cost. Theirs subtracts the bases' cost
    from a running total inside both loops (`max_latency = max_latency − …`), so every candidate after the first
    gets less than the budget, dropping a sublayer can never pay, and a budget below the first candidate's bases
    finds no split at all; (h) a candidate's importance includes its bases' (theirs sums the non-base units only,
    which, with (g), would make dropping a sublayer free). Every candidate without a drop has the same bases, so
    among those the choice is theirs; a drop candidate wins here only by keeping more importance within the
    budget."""
    assert 0.0 < latency_constraint < 1.0, latency_constraint
    (L, H), N = head_importance.shape, neuron_importance.shape[1]
    budget = latency_constraint * L * (mha_lut[H - 1] + ffn_lut[N - 1])  # × estimate_latency of all-ones masks
    fm, ff = fit_latency_fn(mha_lut), fit_latency_fn(ffn_lut)
    local_h, local_h_idx = head_importance.sort(dim=1, descending=True, stable=True)
    local_n, local_n_idx = neuron_importance.sort(dim=1, descending=True, stable=True)
    base_h_idx = local_h_idx[:, :fm.threshold] + torch.arange(L).unsqueeze(1) * H  # global indices
    base_n_idx = local_n_idx[:, :ff.threshold] + torch.arange(L).unsqueeze(1) * N
    base_h_imp, base_n_imp = local_h[:, :fm.threshold].sum(1), local_n[:, :ff.threshold].sum(1)  # per layer
    mha_order = base_h_imp.sort(stable=True).indices  # ascending base importance
    ffn_order = base_n_imp.sort(stable=True).indices
    rest_h_idx, rest_n_idx = local_h_idx[:, fm.threshold:], local_n_idx[:, ff.threshold:]
    rest_h_global = (rest_h_idx + torch.arange(L).unsqueeze(1) * H).flatten()
    rest_n_global = (rest_n_idx + torch.arange(L).unsqueeze(1) * N).flatten()
    head_imp, best, choice = head_importance.clone(), None, None
    for mha_drops in range(L):
        head_imp[mha_order[:mha_drops]] = 0
        base_h = base_h_idx[mha_order[mha_drops:]].flatten()
        mha_layers = L - mha_drops
        neuron_imp = neuron_importance.clone()
        for ffn_drops in range(L):
            neuron_imp[ffn_order[:ffn_drops]] = 0
            base_n = base_n_idx[ffn_order[ffn_drops:]].flatten()
            ffn_layers = L - ffn_drops
            h_sorted, h_order = head_imp.gather(1, rest_h_idx).flatten().sort(descending=True, stable=True)
            n_sorted, n_order = neuron_imp.gather(1, rest_n_idx).flatten().sort(descending=True, stable=True)
            left_for_rest = budget - (mha_layers * fm.c + ffn_layers * ff.c)  # deviation (g)
            kept_bases = base_h_imp[mha_order[mha_drops:]].sum() + base_n_imp[ffn_order[ffn_drops:]].sum()
            if left_for_rest < 0:
                continue
            extra_heads = mha_layers * (H - fm.threshold)
            for k in range(1 if extra_heads else 0, extra_heads + 1):  # deviation (d)
                left = left_for_rest - fm.slope * k
                if ff.slope == 0:  # deviation (e)
                    if left < 0:
                        break
                    m = n_sorted.numel()
                else:
                    m = int(left / ff.slope)  # truncated toward 0, as theirs: a split a fraction of one neuron
                    if m < 0:  # over is still a candidate
                        break
                value = h_sorted[:k].sum() + n_sorted[:m].sum() + kept_bases  # deviation (h)
                if best is None or value > best:
                    best = value
                    choice = (torch.cat([base_h, rest_h_global[h_order[:k]]]),
                              torch.cat([base_n, rest_n_global[n_order[:m]]]),
                              {"heads": k, "neurons": min(m, n_sorted.numel()), "importance": float(value),
                               "dropped": {"mha": mha_drops, "ffn": ffn_drops},
                               "fitted_ms": budget - left + ff.slope * min(m, n_sorted.numel())})
    if choice is None:  # deviation (f)
        raise ValueError("kwon's latency search found no split within the budget (the sublayers' fixed costs alone "
                         "exceed it); choose a larger --latency-budget-ms")
    head_mask = torch.zeros(L * H, dtype=torch.bool)
    head_mask[choice[0]] = True
    neuron_mask = torch.zeros(L * N, dtype=torch.bool)
    neuron_mask[choice[1]] = True
    info = choice[2] | {"budget_ms": budget, "fit": {"mha": vars(fm), "ffn": vars(ff)}}
    return head_mask.view(L, H), neuron_mask.view(L, N), info


# ---- 3. rearrangement (prune/rearrange.py) -----------------------------------------------------------------------
def greedy_rearrange(grads: torch.Tensor, num_pruned: int) -> list[int]:
    """One layer: grads (units, batches). Start from the num_pruned units of least Σ_b g² (ascending); take the others
    in that order, each joining the pruned set, which then drops the member whose removal leaves the smallest
    ‖Σ_pruned g‖² (the first on a tie). Returns the pruned units. Only the count of the searched mask matters."""
    units = grads.shape[0]
    if num_pruned in (0, units):
        return list(range(units))[:num_pruned]
    order = torch.argsort(grads.pow(2).sum(1), stable=True).tolist()
    pruned = order[:num_pruned]
    for u in order[num_pruned:]:
        pruned.append(u)
        g = grads[pruned]
        rest = (g.sum(0) - g).pow(2).sum(1)  # ‖Σ_pruned g − g_i‖² for each member i
        del pruned[int(rest.argmin())]
    return pruned


def rearrange_mask(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """rearrange_mask: every layer's pruned set re-chosen by `greedy_rearrange`, its size kept.
    mask: (L, U) bool; grads: (batches, L, U) per-batch mask gradients. Returns a new (L, U) bool mask."""
    out = torch.ones_like(mask, dtype=torch.bool)
    for i in range(mask.shape[0]):
        out[i, greedy_rearrange(grads[:, i, :].t().contiguous(), int((~mask[i].bool()).sum()))] = False
    return out


# ---- 4. rescaling (prune/rescale.py, utils/linalg.py) ------------------------------------------------------------
def lsmr_solve(ata: torch.Tensor, atb: torch.Tensor) -> tuple[torch.Tensor, bool, int]:
    """lsmr_cupy_solver: x = 1 + δ with δ from LSMR on (AᵀA) δ = AᵀB − AᵀA·1, damp 1, maxiter 5·n (cupyx's default),
    accepted where istop < 3 (a solution within atol / btol, not an ill-conditioned or exhausted stop). A 1 × 1
    system: δ = b / a, accepted (deviation (b)). Returns (x, accepted, istop; −1 for the closed form)."""
    b = (atb - ata.sum(1)).cpu().numpy()
    a = ata.cpu().numpy()
    if a.shape[0] == 1:
        return torch.from_numpy(b / a[0, 0]) + 1, True, -1
    with np.errstate(over="ignore"):  # scipy compares its 1e100 start value with float32 scalars: a harmless cast
        delta, istop = lsmr(a, b, damp=LSMR_DAMP, maxiter=5 * a.shape[0])[:2]
    return torch.from_numpy(np.asarray(delta, dtype=a.dtype)) + 1, bool(istop < 3), int(istop)


def _attention(arch: Arch, i: int, x, bias, head_row):
    """Layer i's attention with per-head multipliers: (context × multipliers, pre-LN sum, LayerNorm output)."""
    ctx = mha_context(arch, i, x, bias) * head_dims(head_row, arch.head_size).to(x.dtype)
    y = x + arch.module(i, "o")(ctx)
    return ctx, y, arch.module(i, "attn_ln")(y)


def _layer(arch: Arch, i: int, x, bias, head_row, neuron_row):
    """Layer i with unit multipliers on the units' outputs, biases in place (their masked model)."""
    z = _attention(arch, i, x, bias, head_row)[2]
    return arch.module(i, "ffn_ln")(z + arch.module(i, "ffn_out")(ffn_activations(arch, i, z) * neuron_row))


def _mha_system(arch: Arch, i: int, inputs, teacher_heads, kept: torch.Tensor):
    """get_mha_lstsq: columns = each kept head's output W_h·ctx_h on the real tokens, flattened, and a constant
    column; target = teacher's X + W·ctx + b − b − the student's X."""
    o, H, dh, n = arch.module(i, "o"), arch.num_heads, arch.head_size, int(kept.numel())
    w = o.weight.view(o.weight.shape[0], H, dh)[:, kept]  # (d, n, d_h)
    ata = torch.zeros(n + 1, n + 1, dtype=o.weight.dtype, device=o.weight.device)
    atb = torch.zeros(n + 1, dtype=o.weight.dtype, device=o.weight.device)
    for b, bias, xt, xs in inputs:
        real = b["attention_mask"].bool()
        y_t = _attention(arch, i, xt, bias, teacher_heads)[1][real]
        ctx = mha_context(arch, i, xs, bias)[real].view(-1, H, dh)[:, kept]  # (tokens, n, d_h)
        per_head = torch.einsum("tnk,dnk->ntd", ctx, w)  # (n, tokens, d)
        target = y_t - o.bias - xs[real]
        ata[:n, :n] += torch.einsum("ntd,mtd->nm", per_head, per_head)
        ata[:n, n] += per_head.sum((1, 2))
        ata[n, :n] = ata[:n, n]
        ata[n, n] += target.numel()
        atb[:n] += torch.einsum("ntd,td->n", per_head, target)
        atb[n] += target.sum()
    return ata, atb


def _ffn_system(arch: Arch, i: int, inputs, teacher_heads, student_heads, kept: torch.Tensor, cls_only: bool):
    """get_ffn_lstsq: (AᵀA)_ij = (w_i·w_j) Σ_t h_ti h_tj, (AᵀB)_i = Σ_t h_ti (w_i·B_t) over the real tokens (the
    first token only when cls_only); target = the teacher's Z + W·h(all neurons) + b − b − the student's Z."""
    out = arch.module(i, "ffn_out")
    w = out.weight[:, kept]  # (d, n)
    gram = w.t() @ w
    n = int(kept.numel())
    ata = torch.zeros(n, n, dtype=w.dtype, device=w.device)
    atb = torch.zeros(n, dtype=w.dtype, device=w.device)
    for b, bias, xt, xs in inputs:
        rows = (lambda t: t[:, 0]) if cls_only else (lambda t, real=b["attention_mask"].bool(): t[real])
        z_t = _attention(arch, i, xt, bias, teacher_heads)[2]
        y_t = rows(z_t + out(ffn_activations(arch, i, z_t)))
        z_s = _attention(arch, i, xs, bias, student_heads)[2]
        h = rows(ffn_activations(arch, i, z_s))[:, kept]  # (tokens, n)
        target = y_t - out.bias - rows(z_s)
        ata += gram * (h.t() @ h)
        atb += ((target @ w) * h).sum(0)
    return ata, atb


@torch.no_grad()
def rescale_mask(arch: Arch, batches: list[dict], teacher: tuple, student: tuple, problem: str,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """rescale_mask: layer by layer, bottom-up, the student's kept heads (not in layer 0) and then its kept neurons
    get the mask values that best reproduce the teacher's sublayer output from the student's own input (the layers
    below already rescaled); each system is solved by `lsmr_solve` and its scales applied only if accepted and
    within ±10, else rescaling stops there (the layers above keep 0/1). teacher, student: ((L, H), (L, N)) masks.
    Returns the rescaled (L, H) and (L, N) float masks and one record per solved sublayer."""
    from tqdm.auto import tqdm

    dtype = arch.model.dtype
    t_h, t_n = (m.to(dtype) for m in teacher)
    r_h, r_n = (m.to(dtype).clone() for m in student)
    inputs = []
    for b in batches:
        x = arch.embed(b["input_ids"], b.get("token_type_ids"))
        inputs.append((b, attention_bias(b["attention_mask"], dtype), x, x))
    log = []
    L = arch.num_layers
    dev = next(arch.model.parameters()).device
    for i in tqdm(range(L), desc="rescale", leave=False, disable=not progress):
        for kind, mask in (("mha", r_h), ("ffn", r_n)):
            kept = mask[i].nonzero().flatten()
            if kept.numel() == 0 or (kind == "mha" and i == 0):
                continue
            if kind == "mha":
                ata, atb = _mha_system(arch, i, inputs, t_h[i].to(dev), kept.to(dev))
            else:
                ata, atb = _ffn_system(arch, i, inputs, t_h[i].to(dev), r_h[i].to(dev), kept.to(dev),
                                       cls_only=problem != "qa" and i == L - 1)
            x, ok, istop = lsmr_solve(ata, atb)
            scale = x[:-1] if kind == "mha" else x
            ok = ok and bool(scale.max() <= SCALE_LIMIT and scale.min() >= -SCALE_LIMIT)
            log.append({"sublayer": int(Sublayer.at(i, kind)), "layer": i, "kind": kind, "units": int(kept.numel()),
                        "istop": istop, "accepted": ok, "scale_min": float(scale.min()),
                        "scale_max": float(scale.max())})
            if not ok:
                return r_h, r_n, log
            mask[i, kept] *= scale.to(mask.dtype)
        if i < L - 1:
            inputs = [(b, bias, _layer(arch, i, xt, bias, t_h[i].to(dev), t_n[i].to(dev)),
                       _layer(arch, i, xs, bias, r_h[i].to(dev), r_n[i].to(dev))) for b, bias, xt, xs in inputs]
    return r_h, r_n, log


# ---- the mask values into the weights ----------------------------------------------------------------------------
def _input_shift(arch: Arch, s: Sublayer) -> torch.Tensor:
    """The parameter whose increase by b shifts sublayer s's input X by b: the LayerNorm shift β of the sublayer
    below; for s = 0 the embeddings' LayerNorm (ELECTRA with an embedding projection: the projection's bias)."""
    if s == 0:
        project = getattr(arch.base, "embeddings_project", None)
        return project.bias if project is not None else arch.embeddings.LayerNorm.bias
    below = Sublayer(s - 1)
    return arch.module(below.layer, below.pick("attn_ln", "ffn_ln")).bias


@torch.no_grad()
def fold_scales(arch: Arch, head_scale: torch.Tensor, neuron_scale: torch.Tensor) -> None:
    """Write unit multipliers ((L, H), (L, N); 0 = pruned) into the output projections' input columns, in place. A
    sublayer left with no unit still adds its output bias in their masked model, LayerNorm(X + b); b moves into the
    shift of X (`_input_shift`: X feeds nothing else once its sublayer has no unit), so the physically pruned model,
    which drops an empty projection's bias, computes the same."""
    for s in sublayers(arch.num_layers):
        m = s.pick(head_dims(head_scale[s.layer], arch.head_size), neuron_scale[s.layer])
        proj = arch.out_proj(s)
        proj.weight.mul_(m.to(proj.weight))
        if proj.bias is not None and not bool(m.any()):
            _input_shift(arch, s).add_(proj.bias)
            proj.bias.zero_()


@contextmanager
def multiplied(arch: Arch, head_scale: torch.Tensor, neuron_scale: torch.Tensor):
    """Their masked model: each unit's output multiplied by its mask value, biases in place (for the dev metric of a
    stage without changing the weights)."""
    handles = []
    try:
        for s in sublayers(arch.num_layers):
            proj = arch.out_proj(s)
            m = s.pick(head_dims(head_scale[s.layer], arch.head_size), neuron_scale[s.layer]).to(proj.weight)
            handles.append(proj.register_forward_pre_hook(lambda _mod, inp, m=m: (inp[0] * m,) + tuple(inp[1:])))
        yield
    finally:
        for h in handles:
            h.remove()


# ---- stage records -----------------------------------------------------------------------------------------------
def mask_hex(row: torch.Tensor) -> str:
    """A 0/1 row as hex, unit 0 the most significant bit (padded with zeros to whole hex digits)."""
    bits = "".join("1" if bool(v) else "0" for v in row.tolist())
    bits += "0" * (-len(bits) % 4)
    return "".join(f"{int(bits[i:i + 4], 2):x}" for i in range(0, len(bits), 4))


def mask_from_hex(text: str, units: int) -> torch.Tensor:
    bits = "".join(f"{int(c, 16):04b}" for c in text)[:units]
    return torch.tensor([b == "1" for b in bits], dtype=torch.bool)


def _stage(name: str, head_mask, neuron_mask, before: dict | None, **extra) -> dict:
    rec = {"stage": name, "heads_kept": [int(r.sum()) for r in head_mask],
           "neurons_kept": [int(r.sum()) for r in neuron_mask],
           "kept_heads": [r.nonzero().flatten().tolist() for r in head_mask],
           "neuron_masks_hex": [mask_hex(r) for r in neuron_mask]}
    if before is not None:  # units whose kept / pruned state changed since the stage before
        rec["changed_heads"] = sum(len(set(a) ^ set(b)) for a, b in zip(rec["kept_heads"], before["kept_heads"]))
        rec["changed_neurons"] = sum(int((mask_from_hex(a, len(r)) != r.bool()).sum())
                                     for a, r in zip(before["neuron_masks_hex"], neuron_mask))
    return rec | extra


def _evaluate(rec: dict, score, arch: Arch, head_scale, neuron_scale) -> None:
    if score is None:
        return
    t = time.perf_counter()
    with multiplied(arch, head_scale, neuron_scale):
        rec["dev"] = score(arch.model)
    rec["eval_seconds"] = time.perf_counter() - t


# ---- the pipeline (main.py) --------------------------------------------------------------------------------------
def kwon(model: torch.nn.Module | Arch, batches: list[dict], problem: str, *, constraint: float, seq_len: float,
         score=None, progress: bool = False, name: str = "kwon", latency=None,
         latency_budget_ms: float | None = None) -> KwonResult:
    """Prune to `constraint` (fraction of FLOPs removed) as main.py does: mask gradients → search_mac for the teacher
    and the target → rearrange_mask → rescale_mask. With a latency table `latency` (`costs.latency.latency_table`,
    of this model) and `latency_budget_ms` instead, main.py's `--metric latency`: search_latency on their look-up
    tables read off ours (`unit_luts`) at the kept fraction our budget gives (`latency_kept`). The model (or the
    model of an `Arch`) is changed in place by `fold_scales` only: dense shapes, pruned columns zero, kept columns
    scaled. score(model) -> dev metrics, if given, is evaluated after each stage (`KwonResult.stages`; its time is
    not pruning time)."""
    t0 = time.perf_counter()
    arch = Arch.of(model)
    L, H, N, d, dh = arch.num_layers, arch.num_heads, arch.ffn_size, arch.hidden, arch.head_size
    require_dense(arch, name)
    if arch.rel_positions:  # its authors' MAC formula is BERT's: it would not count DeBERTa's position terms
        raise ValueError(f"{name} counts BERT's MACs and cannot budget {arch.model_type}'s relative-position terms; "
                         "use --method kprune or fisher-greedy")
    if arch.table.pre_norm or arch.table.gated_ffn:  # BERT's MACs again, and its rescaling fits post-norm outputs
        raise ValueError(f"{name} counts BERT's MACs and rescales masks against post-LayerNorm block outputs, which "
                         f"{arch.model_type} does not have (gated FFN, pre-norm blocks); use --method kprune or "
                         "fisher-greedy")
    timings, evals = {}, 0.0
    g_h, g_n = mask_gradients(arch, batches, problem, progress)
    imp_h, imp_n = g_h.pow(2).sum(0), g_n.pow(2).sum(0)  # compute_fisher_info
    timings["fisher"] = time.perf_counter() - t0

    t = time.perf_counter()
    if latency_budget_ms is None:
        target, kept_key = mac_kept(constraint), "mac_kept"
        t_h, t_n, t_info = search_mac(imp_h, imp_n, seq_len, d, dh, teacher_mac(target))
        head_mask, neuron_mask, info = search_mac(imp_h, imp_n, seq_len, d, dh, target)
    else:
        luts = unit_luts(latency, H, N)
        target, kept_key = latency_kept(latency, latency_budget_ms, L, *luts), "latency_kept"
        t_h, t_n, t_info = search_latency(imp_h, imp_n, teacher_mac(target), *luts)
        head_mask, neuron_mask, info = search_latency(imp_h, imp_n, target, *luts)
    timings["search"] = time.perf_counter() - t
    teacher = {kept_key: teacher_mac(target), "heads_kept": t_h.sum(1).tolist(),
               "neurons_kept": t_n.sum(1).tolist(), "split": t_info}
    stages = [_stage("search", head_mask, neuron_mask, None, **{kept_key: target}, split=info, teacher=teacher)]
    t = time.perf_counter()
    _evaluate(stages[-1], score, arch, head_mask, neuron_mask)
    evals += time.perf_counter() - t

    t = time.perf_counter()
    head_mask, neuron_mask = rearrange_mask(head_mask, g_h), rearrange_mask(neuron_mask, g_n)
    timings["rearrange"] = time.perf_counter() - t
    stages.append(_stage("rearrange", head_mask, neuron_mask, stages[-1]))
    t = time.perf_counter()
    _evaluate(stages[-1], score, arch, head_mask, neuron_mask)
    evals += time.perf_counter() - t

    t = time.perf_counter()
    scale_h, scale_n, solves = rescale_mask(arch, batches, (t_h, t_n), (head_mask, neuron_mask), problem, progress)
    fold_scales(arch, scale_h, scale_n)
    timings["rescale"] = time.perf_counter() - t
    stopped = next((r["sublayer"] for r in solves if not r["accepted"]), None)
    stats = [{"min": float(r[m].min()), "max": float(r[m].max()), "mean": float(r[m].mean())} if m.any() else None
             for r, m in zip(scale_n, neuron_mask)]
    stages.append(_stage("rescale", head_mask, neuron_mask, stages[-1], solves=solves, stopped_at=stopped,
                         head_scales=scale_h.tolist(), neuron_scale_stats=stats))
    if score is not None:  # the folded model itself, no hook: what is saved
        t = time.perf_counter()
        stages[-1]["dev"] = score(arch.model)
        stages[-1]["eval_seconds"] = time.perf_counter() - t
        evals += stages[-1]["eval_seconds"]

    solved = {r["sublayer"]: r for r in solves}
    records = []
    for s in sublayers(L):
        m = s.pick(head_mask, neuron_mask)[s.layer]
        r = solved.get(int(s), {})
        records.append({"sublayer": int(s), "layer": s.layer, "kind": s.kind, "units": int(m.numel()),
                        "kept": int(m.sum()), "tuned": False, "ridge": 0.0,
                        "rescaled": bool(r.get("accepted", False))})
    flops_dense = model_flops([H] * L, [N] * L, seq_len, d, dh)
    flops_pruned = model_flops(head_mask.sum(1).tolist(), neuron_mask.sum(1).tolist(), seq_len, d, dh)
    predicted = None if latency_budget_ms is None else \
        latency.predict(head_mask.sum(1).tolist(), neuron_mask.sum(1).tolist())
    return KwonResult(head_mask, neuron_mask, records, timings, time.perf_counter() - t0 - evals, flops_dense,
                      flops_pruned, scores={s: s.pick(imp_h, imp_n)[s.layer] for s in sublayers(L)},
                      latency_budget_ms=latency_budget_ms, predicted_latency_ms=predicted, stages=stages)
