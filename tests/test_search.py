"""KPMS equals an exhaustive search over kept sets on small cases."""
import itertools
import math

import pytest
import torch

from kprune_lib.method.search import kpms_step, kpms_threshold


def exhaustive_threshold(scores, flops, budget):
    """Brute force from the definition: the smallest candidate score τ with Σ_{S>τ} F < budget."""
    best = math.inf
    for tau in scores:
        cost = sum(f for s, f in zip(scores, flops) if s > tau)
        if cost < budget:
            best = min(best, tau)
    return best


def exhaustive_kept_set(scores, flops, budget):
    """Independent brute force over all subsets: the largest score-closed set (if u is kept, every unit
    scoring at least as high is kept) that leaves something out and fits the budget."""
    n = len(scores)
    best = set()
    for r in range(n):
        for subset in itertools.combinations(range(n), r):
            kept = set(subset)
            closed = all(scores[j] < scores[i] or j in kept for i in kept for j in range(n))
            if closed and sum(flops[i] for i in kept) < budget and len(kept) > len(best):
                best = kept
    return best


@pytest.mark.parametrize("seed", range(20))
def test_threshold_equals_exhaustive(seed):
    g = torch.Generator().manual_seed(seed)
    n = 9
    scores = torch.randint(0, 6, (n,), generator=g).double() / 3  # ties on purpose
    flops = torch.randint(1, 5, (n,), generator=g).double()
    budget = float(torch.randint(1, int(flops.sum()) + 2, (1,), generator=g))
    tau = kpms_threshold(scores, flops, budget)
    assert tau == exhaustive_threshold(scores.tolist(), flops.tolist(), budget)
    kept = {i for i in range(n) if scores[i] > tau}
    ref = exhaustive_kept_set(scores.tolist(), flops.tolist(), budget)
    assert sum(flops[i] for i in kept) == sum(flops[i] for i in ref)
    assert kept == ref


def test_step_prunes_target_only_and_pays_budget():
    scores = {0: torch.tensor([5.0, 0.1, 3.0]), 1: torch.tensor([0.2, 4.0, 0.3, 2.0])}
    flops = {0: 10.0, 1: 1.0}
    keep, tau, left = kpms_step(scores, flops, target=0, budget=23.0)
    # sorted: 0.1 .2 .3 2 3 4 5; cost above 0.1 = 24, above 0.2 = 23 (not < 23), above 0.3 = 22 -> τ = 0.3
    assert tau == pytest.approx(0.3)
    assert keep.tolist() == [True, False, True]
    assert left == pytest.approx(23.0 - 2 * 10.0)


def test_exhausted_budget_prunes_everything():
    keep, tau, left = kpms_step({0: torch.tensor([1.0, 2.0])}, {0: 3.0}, target=0, budget=0.0)
    assert tau == math.inf and not keep.any() and left == 0.0
