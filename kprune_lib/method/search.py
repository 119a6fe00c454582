"""Knowledge-preserving mask search, KPMS (paper §4.2, Algorithm 2)."""
from __future__ import annotations

import math

import torch


def kpms_threshold(scores: torch.Tensor, unit_flops: torch.Tensor, budget: float) -> float:
    """The threshold τ of KPMS over all undecided candidate units.

    Walk up the scores in ascending order and return the first score τ for which the candidates
    strictly above τ fit the budget: Σ_{S_u > τ} F_u < budget. Returns +inf when none does
    (budget exhausted: everything in the target goes).
    scores, unit_flops: (n,) one entry per candidate unit (heads and neurons of every sublayer ≥ s).
    """
    s_sorted, order = torch.sort(scores.double())
    f_sorted = unit_flops.double()[order]
    # cost_above[j] = Σ F of sorted units j, j+1, …  (cost_above[n] = 0)
    cost_above = torch.cat([f_sorted.flip(0).cumsum(0).flip(0), f_sorted.new_zeros(1)])
    first_greater = torch.searchsorted(s_sorted, s_sorted, right=True)  # ties count as "not above"
    fits = cost_above[first_greater] < budget
    if not bool(fits.any()):
        return math.inf
    return float(s_sorted[int(fits.nonzero()[0])])


def kpms_step(scores: dict[int, torch.Tensor], unit_flops: dict[int, float | torch.Tensor], target: int,
              budget: float):
    """One KPMS step for the target sublayer.

    scores: {sublayer t: (units_t,) scores} for every undecided sublayer t ≥ target.
    unit_flops: {t: cost of one unit of t}: a number when every unit of t costs the same (FLOPs: F_head, F_neuron),
    or a (units_t,) tensor of per-unit costs (a latency budget: `latency.LatencyTable.rank_costs`).
    Returns (keep (units_target,) bool, τ, budget left after the target's kept units are paid for).
    """
    all_scores = torch.cat([scores[t].flatten() for t in sorted(scores)])
    all_flops = torch.cat([unit_flops[t].double().flatten().to(all_scores.device) if torch.is_tensor(unit_flops[t])
                           else torch.full((scores[t].numel(),), float(unit_flops[t]), dtype=torch.float64)
                           for t in sorted(scores)])
    tau = kpms_threshold(all_scores, all_flops, budget)
    keep = scores[target] > tau
    cost = unit_flops[target]
    if torch.is_tensor(cost):
        return keep, tau, budget - float(cost.double().flatten()[keep.flatten().to(cost.device)].sum())
    return keep, tau, budget - int(keep.sum()) * cost
