"""What a unit costs against a run's budget (`config.Budget`: a FLOPs constraint or a latency budget, built in one
place, `Budget.of`, which is also where "exactly one of the two" is checked).

The loop never handles a bare number whose unit depends on a flag: it asks a cost model (`FlopsCosts` or
`LatencyCosts`, from `unit_costs`) for
- `unit_cost(t)`: the denominator of a unit's importance score (F_head / F_neuron, or the mean marginal latency);
- `walk_costs(t, scores)`: what each unit of sublayer t costs in KPMS's budget walk;
- `spendable`: the budget of that walk, in the same unit (`unit`: "FLOPs" or "ms").
"""
from __future__ import annotations

import torch

from kprune_lib.config import FLOPS, Budget
from kprune_lib.costs.flops import UnitFlops
from kprune_lib.encoder.sublayer import KINDS, Sublayer, sublayers


class FlopsCosts:
    """Unit costs in FLOPs (the paper's): every head costs F_head, every neuron F_neuron."""

    unit = "FLOPs"

    def __init__(self, units: dict[int, int], seq_len: float, flops: UnitFlops, remove: float):
        self.per_unit = dict(zip(KINDS, (flops.head(seq_len), flops.neuron(seq_len))))
        heads, neurons = ([units[s] for s in sorted(units) if Sublayer(s).kind == k] for k in KINDS)
        self.total = flops.model(heads, neurons, seq_len)
        self.spendable = (1.0 - remove) * self.total

    def unit_cost(self, t: int) -> float:
        return self.per_unit[Sublayer(t).kind]

    def walk_costs(self, t: int, scores: torch.Tensor) -> float:
        return self.unit_cost(t)


class LatencyCosts:
    """Unit costs in milliseconds from a measured latency table (`latency.LatencyTable`): a unit's score denominator
    is its sublayer's mean marginal latency; in the walk, the unit ranked r-th in its sublayer costs C(r) − C(r−1);
    the walk's budget is G⁻¹(budget) − Σ_t C_t(0) (docs/latency.md)."""

    unit = "ms"

    def __init__(self, table, units: dict[int, int], budget_ms: float):
        table.check_budget(budget_ms)
        self.table = table
        self.average = {t: table.average_unit_cost(Sublayer(t).kind, n) for t, n in units.items()}
        self.spendable = table.sublayer_budget(budget_ms) - sum(table.cost(Sublayer(t).kind, 0) for t in units)

    def unit_cost(self, t: int) -> float:
        return self.average[t]

    def walk_costs(self, t: int, scores: torch.Tensor) -> torch.Tensor:
        return self.table.rank_costs(Sublayer(t).kind, scores)


def unit_costs(budget: Budget, arch, seq_len: float, table=None):
    """The cost model of `budget` for the model behind `arch` as it is now (a model pruned before: its own units)."""
    units = {s: arch.units(s) for s in sublayers(arch.num_layers)}
    if budget.kind == FLOPS:
        return FlopsCosts(units, seq_len, UnitFlops.of(arch), budget.value)
    if table is None:
        raise ValueError("a latency budget needs the model's latency table (kprune_lib.costs.latency.latency_table)")
    return LatencyCosts(table, units, budget.value)
