"""The latency model of a measured table (`LatencyTable`): what one attention sublayer with h heads and one FFN
sublayer with n neurons cost, and what a whole shape costs.

S(shape) = Σ_layers C_attn(h_i) + C_ffn(n_i), the sublayers' table costs, and total(shape) = G(S(shape)), where G is
calibrated in situ: a sublayer timed alone runs faster than inside the whole forward (its weights stay in cache; the
whole model's need not) and the difference shrinks with the model, so the whole model is also timed at uniform shapes
keeping a fraction f ∈ {0} ∪ LATENCY_CALIBRATION ∪ {1} of every layer's heads and neurons (f = 0: the floor). G
interpolates those measured totals (made monotone) linearly in S; the model thus predicts the floor and the given
model exactly, and its inverse turns a latency budget into a budget on S for KPMS. The fixed part reported
(embeddings, classifier, the rest) is T_floor − S(floor). How the table is measured: `timing`; cached: `latency`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from kprune_lib.encoder.sublayer import KINDS, MHA


@dataclass
class LatencyTable:
    """Milliseconds per forward of one (batch, seq) input: per sublayer kind on a grid of units, and the fixed part."""

    key: dict  # what the table is valid for (device, dtype, threads, batch, seq, architecture shape, …)
    grid: dict[str, list[int]]  # kind -> units measured, ascending from 0
    measured_ms: dict[str, list[float]]  # kind -> median per grid point
    cost_ms: dict[str, list[float]]  # kind -> the monotone table: `monotone(measured_ms)`
    total_ms: float  # measured forward of the whole model the table was measured on (its own shape)
    fixed_ms: float  # embeddings, classifier, the rest: T_floor − S(floor) (without calibration: total − S(model))
    # G: {"fractions": [0, …, 1], "sublayer_ms": S of each uniform shape, "measured_ms": its measured total, made
    # monotone}; None: the plain additive model total = fixed + S
    calibration: dict | None = None
    seconds: float = 0.0  # wall time the measurement took
    measured_at: str | None = None  # when (ISO 8601, local time with offset)
    loadavg: list[float] | None = None  # the machine's 1-minute load average before and after measuring, if known
    # when read from the cache: the dense model re-timed now against the table's total (`check_staleness`)
    check: dict | None = None
    path: str | None = None  # where it is cached

    def cost(self, kind: str, units: float) -> float:
        """C_kind(units): the monotone table, linearly interpolated between grid points."""
        grid = self.grid[kind]
        if not 0 <= units <= grid[-1]:
            raise ValueError(f"{kind} with {units} units is outside the latency table (0 … {grid[-1]})")
        return float(np.interp(units, grid, self.cost_ms[kind]))

    def sublayer_ms(self, heads_per_layer, neurons_per_layer) -> float:
        return sum(self.cost(MHA, h) + self.cost("ffn", n) for h, n in zip(heads_per_layer, neurons_per_layer))

    def predict(self, heads_per_layer, neurons_per_layer) -> float:
        """Predicted latency (ms) of a shape: G(S(shape)), S = Σ_layers C_attn(h_i) + C_ffn(n_i) (module docstring);
        without calibration fixed + S."""
        return self.total_of(self.sublayer_ms(heads_per_layer, neurons_per_layer))

    def total_of(self, sublayer_ms: float) -> float:
        """G: the whole model's latency (ms) for sublayer costs summing to sublayer_ms."""
        if self.calibration is None:
            return self.fixed_ms + sublayer_ms
        c = self.calibration
        return float(np.interp(sublayer_ms, c["sublayer_ms"], c["measured_ms"]))

    def sublayer_budget(self, budget_ms: float) -> float:
        """G⁻¹: the largest Σ of sublayer costs whose predicted latency is budget_ms (KPMS walks against it)."""
        if self.calibration is None:
            return budget_ms - self.fixed_ms
        c = self.calibration
        return float(np.interp(budget_ms, c["measured_ms"], c["sublayer_ms"]))

    def floor_ms(self) -> float:
        """The least any pruning reaches: every sublayer at zero units (LayerNorm(X) only)."""
        L = self.key["layers"]
        return self.total_of(L * (self.cost(MHA, 0) + self.cost("ffn", 0)))

    def average_unit_cost(self, kind: str, units: int) -> float:
        """KPMS's score denominator for a sublayer at `units` units: (C(units) − C(0)) / units, the mean marginal
        cost of its units (for a linear cost, the cost of one unit, as F_head / F_neuron). Floored at 1e-9 ms so that
        a flat table cannot divide by zero."""
        if units == 0:
            return 1.0  # no unit to score
        return max((self.cost(kind, units) - self.cost(kind, 0)) / units, 1e-9)

    def rank_costs(self, kind: str, scores: torch.Tensor) -> torch.Tensor:
        """Per-unit costs (units,) float64 for KPMS's budget walk: the unit ranked r-th by score within its sublayer
        (r = 1 the highest; ties broken by index) costs C(r) − C(r−1) ≥ 0. Units above any threshold are a top-k of
        their sublayer, so their costs sum to C(k) − C(0) exactly (a telescoping sum)."""
        n = scores.numel()
        c = torch.tensor([self.cost(kind, u) for u in range(n + 1)], dtype=torch.float64, device=scores.device)
        order = torch.argsort(scores.double().flatten(), descending=True, stable=True)
        out = torch.empty(n, dtype=torch.float64, device=scores.device)
        out[order] = c[1:] - c[:-1]
        return out

    @property
    def disturbed(self) -> bool:
        """The machine's load changed while the table was measured: the whole model timed faster at a larger
        uniform shape than at a smaller one, or the fixed part came out negative."""
        c = self.calibration
        return self.fixed_ms < 0 or (c is not None and c.get("measured_raw_ms", c["measured_ms"]) != c["measured_ms"])

    def feasible(self) -> tuple[float, float]:
        return self.floor_ms(), self.total_ms

    def check_budget(self, budget_ms: float) -> None:
        """One-line ValueError unless floor < budget < dense."""
        lo, hi = self.feasible()
        k = self.key
        if not lo < budget_ms < hi:
            raise ValueError(
                f"latency budget {budget_ms:.4g} ms is outside the feasible range ({lo:.4g}, {hi:.4g}) ms of this "
                f"model at batch {k['batch']}, sequence length {k['seq']}, {k['device']} ({k['threads']} threads): "
                f"{lo:.4g} ms is its fixed part with every head and neuron removed, {hi:.4g} ms its measured latency; "
                "choose a budget in between")

    def rows(self) -> list[dict]:
        return [{"kind": kind, "units": u, "measured_ms": m, "cost_ms": c}
                for kind in KINDS for u, m, c in zip(self.grid[kind], self.measured_ms[kind], self.cost_ms[kind])]

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("path")
        d.pop("check")
        return d


def monotone(values: list[float]) -> list[float]:
    """The non-decreasing sequence closest to `values` in least squares (isotonic regression, pool-adjacent-
    violators): a run that decreases is replaced by its mean. Unlike a cumulative maximum, one slow outlier does not
    lift every wider grid point."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([float(v), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return [m for m, n in blocks for _ in range(n)]
