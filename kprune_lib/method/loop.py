"""The K-prune loop (paper Algorithm 1), bottom-up over the 2L sublayers (even s: attention of layer s/2, odd s:
its FFN). For s = 0 … 2L−1:

1. measure (§4.1), one pass over the sample (`_measure`): the knowledge K_pred, K_rep of every undecided
   sublayer t ≥ s (`measurement.KnowledgeSums`);
2. search, KPMS (§4.2): importance scores of every unit of t ≥ s, one threshold over them, sublayer s keeps its
   units above it (`_scores`, `search.kpms_step`);
3. tune, KPWT (§4.3): the normal equations of the kept units over the sample (`_normal_equations`, on what the
   measurement pass held: no forward through the model), solve for their weights and write them; a sublayer with
   nothing left drops its bias and becomes LayerNorm(X) (`tuning.kpwt_step`);
4. advance to s + 1 (`schedules`: "naive" re-runs the student from the embeddings next time, "cached" moves its held
   student input through the tuned sublayer s).

Where the student's input, the teacher's targets and the advance come from is the schedule's business
(`schedules.NaiveSchedule`, `schedules.CachedSchedule`); both give identical masks and bit-identical weights.
While pruning, the model keeps its dense shapes (pruned projection columns are zeroed and masked);
`physical.prune_physically` shrinks it afterwards.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from kprune_lib.config import PruneConfig
from kprune_lib.costs.budget import unit_costs
from kprune_lib.costs.flops import UnitFlops
from kprune_lib.encoder.arch import Arch
from kprune_lib.costs.latency import LatencyTable
from kprune_lib.encoder.masks import UnitMasks, head_dims, kept_per_layer, per_layer
from kprune_lib.method.measurement import (KnowledgeSums, SampleGroups, importance_scores, objectives,
                                           predictive_gradient_vanishes, teacher_signal)
from kprune_lib.method.methods import configure, get, resolve
from kprune_lib.method.schedules import AUTOCAST, SCHEDULE_CLASSES, NaiveSchedule, Schedule
from kprune_lib.method.search import kpms_step
from kprune_lib.encoder.sublayer import FFN, MHA, Sublayer, sublayers
from kprune_lib.method.tuning import NormalEquations, kpwt_step

log = logging.getLogger(__name__)


class NonFiniteScores(FloatingPointError):
    pass


@dataclass
class PruneResult:
    head_mask: UnitMasks  # (L, H) bool, True = kept; a list of per-layer rows when the layers differ (`masks.per_layer`)
    neuron_mask: UnitMasks  # (L, N) bool, likewise
    sublayers: list[dict]  # one record per sublayer: kept, tau, budget_left, errors, ridge, seconds
    timings: dict[str, float]  # seconds per stage
    seconds: float
    flops_dense: float
    flops_pruned: float
    scores: dict[int, torch.Tensor] = field(default_factory=dict)  # target sublayer's unit scores per iteration
    # with record_knowledge: knowledge[s][t] = {"k_pred", "k_rep", "score"} per-unit tensors of every
    # sublayer t >= s, as measured at iteration s (for the workbook's plots)
    knowledge: dict[int, dict[int, dict[str, torch.Tensor]]] = field(default_factory=dict)
    latency_budget_ms: float | None = None  # a latency-budget run: its budget, and the table's prediction for the
    predicted_latency_ms: float | None = None  # kept shape (fixed + Σ sublayer costs)

    @property
    def heads_kept(self) -> list[int]:
        return kept_per_layer(self.head_mask)

    @property
    def neurons_kept(self) -> list[int]:
        return kept_per_layer(self.neuron_mask)

    @property
    def ridge_fallbacks(self) -> list[dict]:
        return [{"sublayer": r["sublayer"], "ridge": r["ridge"]} for r in self.sublayers if r["ridge"]]


class _Clock:
    """Accumulates wall time per stage (synchronising CUDA so the split is honest)."""

    def __init__(self, device: torch.device):
        self.totals: dict[str, float] = defaultdict(float)
        self.cuda = device.type == "cuda"

    def __call__(self, stage: str):
        clock = self

        class _Span:
            def __enter__(self):
                if clock.cuda:
                    torch.cuda.synchronize()
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                if clock.cuda:
                    torch.cuda.synchronize()
                clock.totals[stage] += time.perf_counter() - self.t

        return _Span()


def _dims(arch: Arch, s: Sublayer, keep_units: torch.Tensor) -> torch.Tensor:
    """Unit keep-mask of sublayer s -> indices of the kept projection-input dims."""
    dim_mask = head_dims(keep_units, arch.head_size) if s.is_mha else keep_units
    return dim_mask.nonzero().flatten()


@dataclass
class _Run:
    """What every step of one pruning run reads."""

    arch: Arch
    config: PruneConfig  # the hyper-parameters, as resolved (`methods.resolve`)
    schedule: Schedule  # also holds the problem, temperature and autocast setting
    clock: _Clock
    groups: SampleGroups
    fixed: dict[int, torch.Tensor]  # {t: (w_t,)} decided dim masks (all ones while t is undecided)
    progress: bool

    @property
    def n_sub(self) -> int:
        return 2 * self.arch.num_layers


def kprune(model: torch.nn.Module | Arch, batches: list[dict], problem: str, config: PruneConfig | None = None, *,
           seq_len: float, latency: LatencyTable | None = None, progress: bool = True, record_knowledge: bool = False,
           autocast: str | None = None, **settings) -> PruneResult:
    """Prune `model` (or the model of an `Arch`) in place (masked, its current shapes) to its budget: by default
    remove `constraint` of its FLOPs. A model pruned before (layers of different widths) prunes further the same way:
    its FLOPs are those of its own units.

    config: the hyper-parameters (`PruneConfig`, default `PruneConfig()`; a registry method's settings applied,
    `methods.resolve`; a method of another algorithm runs through `baselines.run_method`); settings: its fields by
    name, over it (`kprune(model, batches, problem, constraint=0.5, seq_len=…, lam_rep=…)`). Read here:
    constraint or latency_budget_ms, lam_pred, lam_rep, mu, temperature, tuning, schedule, ridge, pred_knowledge,
    gold_first, damping.

    batches: the pruning sample, padded (B, T) tensors on the model's device. A batch's optional "group" (B,) names
    each row's sample batch (`batching.sample_batches`), the unit of the paper's batch-mean gradient; without it
    every batch is its own group. Mask gradients are taken per example (one mask row per example, one backward of
    the summed loss) and regrouped, so the masks do not depend on how the sample is batched for compute.
    problem: "classification", "regression", "qa" or "token" (token classification: batches carry "labels" (B, T),
    -100 where a position is not scored; `measurement.token_kl_t2`). seq_len: L_seq of the FLOPs formula.
    autocast: None, "bf16" or "fp16": lower precision for the measurement forward/backward only;
    teacher signals, the tuning statistics and the solve stay in float32/float64.
    pred_knowledge: "batch" (the paper: ½ (∂ batch-mean loss/∂m)² per sample batch); K-prune+ candidates:
    "example" (the per-example empirical Fisher Σ_i ½ (∂l_i/∂m)²) and "gauss-newton" (Σ_i ½ J_iᵀ H_i J_i, the
    curvature of the predictive loss in output space; `measurement.curvature_projections`).
    gold_first: K-prune+ candidate: at s = 0, where the student is the teacher and the predictive gradient is zero,
    measure predictive knowledge with the gold-label loss (batches need "labels") instead.
    damping: K-prune+ candidate: KPWT shrunk toward the current weights (`tuning.NormalEquations.solve`).
    latency, latency_budget_ms: instead of `constraint`, prune until the latency model of the table (measured on this
    model's shape, `latency.latency_table`) predicts less than latency_budget_ms. A unit's cost is then its marginal
    latency (README "Latency budgets"): score denominator (C_t(U_t) − C_t(0)) / U_t, and in the budget walk the unit
    ranked r-th in its sublayer costs C_t(r) − C_t(r−1); the budget is G⁻¹(latency_budget_ms) − Σ_t C_t(0) (G: the
    table's in-situ calibration, `LatencyTable.sublayer_budget`).
    """
    cfg = resolve(configure(config, **settings))
    if get(cfg.method).algorithm != "kprune":
        raise ValueError(f"method {cfg.method} is not K-prune's loop: run it with baselines.run_method")
    _validate(batches, cfg, autocast)
    t_start = time.perf_counter()
    arch = Arch.of(model)
    model = arch.model
    # what a unit costs: FLOPs, or milliseconds from the latency table; of the given model's own units (a model
    # pruned before has fewer than its config's)
    costs = unit_costs(cfg.budget, arch, seq_len, latency)
    L, n_sub = arch.num_layers, 2 * arch.num_layers
    flops = UnitFlops.of(arch)
    flops_dense = flops.model([arch.heads_in_layer(i) for i in range(L)], [arch.neurons_in_layer(i) for i in range(L)],
                              seq_len)
    spendable = costs.spendable  # the KPMS walk's budget, in costs.unit; what the kept units have not spent yet
    model.eval()
    device = next(model.parameters()).device
    clock = _Clock(device)
    fixed = {s: torch.ones(arch.out_proj(s).in_features, device=device, dtype=model.dtype) for s in range(n_sub)}
    keep_units: dict[int, torch.Tensor] = {}
    records, target_scores, knowledge = [], {}, {}
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    try:
        sched = SCHEDULE_CLASSES[cfg.schedule](arch, batches, problem, cfg.temperature, autocast, clock)
        run = _Run(arch, cfg, sched, clock, SampleGroups.of(batches, device), fixed, progress)
        with clock("teacher"):
            sched.prepare_teacher()
        for s in tqdm(sublayers(L), desc=f"K-prune ({cfg.schedule})", disable=not progress, unit="sublayer"):
            t_sub = time.perf_counter()
            # 1. measure: knowledge of every sublayer t ≥ s (one pass over the sample)
            know = _measure(run, s)
            # 2. search (KPMS): scores {t ≥ s: (units_t,)} -> keep (units_s,) bool, threshold τ, budget left
            with clock("score_search"):
                scores = _scores(run, s, know, costs, knowledge.setdefault(s, {}) if record_knowledge else None)
                keep, tau, spendable = kpms_step(scores, {t: costs.walk_costs(t, scores[t]) for t in scores}, s,
                                                 spendable)
                keep_units[s], target_scores[s] = keep, scores[s].cpu()
            # 3. tune (KPWT): normal equations of the kept dims idx (k,), solve, write the weights (bias zeroed if k = 0)
            idx = _dims(arch, s, keep)
            eqs = _normal_equations(run, s, idx)
            with clock("tuning_solve"):
                tuned = kpwt_step(arch.out_proj(s), eqs, idx, cfg.tuning, cfg.ridge, cfg.damping)
                fixed[s] = torch.zeros_like(fixed[s]).index_fill_(0, idx, 1.0)
            # 4. advance to s + 1 with sublayer s decided
            sched.advance(s, fixed[s])
            records.append(_record(s, keep, tau, spendable, eqs, tuned, cfg.tuning, time.perf_counter() - t_sub))
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(requires_grad[n])
    head_mask = per_layer([keep_units[Sublayer.at(i, MHA)].cpu() for i in range(L)])
    neuron_mask = per_layer([keep_units[Sublayer.at(i, FFN)].cpu() for i in range(L)])
    flops_pruned = flops.model(kept_per_layer(head_mask), kept_per_layer(neuron_mask), seq_len)
    predicted = None if latency is None else \
        latency.predict(kept_per_layer(head_mask), kept_per_layer(neuron_mask))
    return PruneResult(head_mask, neuron_mask, records, dict(clock.totals), time.perf_counter() - t_start,
                       flops_dense, flops_pruned, target_scores, knowledge, cfg.latency_budget_ms, predicted)


def _validate(batches, cfg: PruneConfig, autocast) -> None:
    """What a PruneConfig cannot check itself (its own fields it checks when built)."""
    if not batches:
        raise ValueError("empty pruning sample: increase num_tokens")
    if autocast not in AUTOCAST:
        raise ValueError(f"autocast must be one of {list(AUTOCAST)}, got {autocast!r}")
    if cfg.gold_first and not all("labels" in b for b in batches):
        raise ValueError("gold_first needs gold labels in the sample batches (a GLUE task)")


# ---- 1. measure -----------------------------------------------------------------------------------------------------
def _measure(run: _Run, s: int) -> KnowledgeSums:
    """Step 1 of iteration s, one pass over the sample: the knowledge of every undecided sublayer t ≥ s (paper §4.1),
    K_pred from per-example mask gradients (one backward of the objective summed over examples; none at s = 0,
    where they vanish: `predictive_gradient_vanishes`), K_rep from the projection inputs a_t. The schedule holds
    what tuning sublayer s will need (`Schedule.hold`)."""
    arch, n_sub = run.arch, run.n_sub
    device = run.fixed[s].device
    know = KnowledgeSums({t: arch.out_proj(t).in_features for t in range(s, n_sub)}, run.groups,
                         run.config.pred_knowledge, device)
    for j, b in enumerate(tqdm(run.schedule.batches, desc=f"sublayer {s}", leave=False, disable=not run.progress)):
        _measure_batch(run, s, j, b, know)
        run.schedule.trim()
    return know


def _measure_batch(run: _Run, s: int, j: int, b: dict, know: KnowledgeSums) -> None:
    """Batch j's share of iteration s's measurement; its autograd graph and activations go on return."""
    sched, clock = run.schedule, run.clock
    with clock("measure_forward_backward"):
        if predictive_gradient_vanishes(s, run.config.pred_knowledge, run.config.gold_first):  # s = 0: forward only
            with torch.no_grad():
                x_s, feats, out = sched.forward(j, s, {}, {})
            sched.soft_target(j, out)
            grads = {t: [] for t in range(s, run.n_sub)}  # K_pred = 0
        else:
            x_s, feats, grads = _forward_backward(run, s, j, b)
    with clock("knowledge_accumulate"):
        for t, g in grads.items():
            know.add(j, t, g, feats[t], b["attention_mask"])
    sched.hold(j, s, x_s, feats[s])


def _forward_backward(run: _Run, s: int, j: int, b: dict):
    """The measurement forward of batch j with per-example mask leaves, and one backward per objective of the sum
    over examples. Returns X_s (B, T, d), the projection inputs {t ≥ s: a_t (B, T, w_t)} and, per sublayer t ≥ s,
    the list (one per objective) of mask gradients (B, w_t), one row per example."""
    arch, sched = run.arch, run.schedule
    B = b["input_ids"].shape[0]
    # per-example leaves, one row per example: all-ones probes on the undecided sublayers t ≥ s; naive also
    # puts the decided masks t < s in as leaves (its backward goes to the bottom, as the reference's)
    masks = {t: run.fixed[t].expand(B, -1).clone().requires_grad_(True)
             for t in range(sched.first_sublayer(s), s)}
    probes = {t: run.fixed[t].new_ones(B, arch.out_proj(t).in_features).requires_grad_(True)
              for t in range(s, run.n_sub)}
    x_s, feats, out = sched.forward(j, s, masks, probes)
    target = sched.soft_target(j, out)
    gold = b["labels"] if run.config.gold_first and s == 0 else None  # K-prune+: a signal that is not zero at s = 0
    objs = objectives(out, target, sched.problem, sched.temperature, run.config.pred_knowledge, gold)
    leaves = list(masks.values()) + list(probes.values())
    grad_sets = [torch.autograd.grad(y, leaves, retain_graph=k < len(objs) - 1)[len(masks):]
                 for k, y in enumerate(objs)]  # per objective: the probes' gradients (B, w_t), t = s … 2L−1
    return x_s, feats, {t: [grads[i] for grads in grad_sets] for i, t in enumerate(probes)}


def measure_knowledge(model: torch.nn.Module | Arch, batches: list[dict], problem: str,
                      config: PruneConfig | None = None, *, teacher_outputs: list,
                      **settings) -> dict[int, dict[str, torch.Tensor]]:
    """Step 1 of the loop for every sublayer at once, on `model` (or the model of an `Arch`) as it is now, against a
    teacher's outputs (its logits per batch; e.g. the dense model's for a pruned student): the loop's own
    measurement (`_forward_backward`, `measurement.KnowledgeSums`: per-example mask gradients regrouped by sample
    batch, float64 sums), so what the workbook shows is what the pruning computes. config and settings as `kprune`'s;
    read here: temperature, pred_knowledge. Returns {t: {"k_pred", "k_rep"}} per-unit tensors on the CPU."""
    cfg = replace(resolve(configure(config, **settings)), gold_first=False)  # the teacher's signal throughout
    _validate(batches, cfg, None)
    arch = Arch.of(model)
    model = arch.model
    device = next(model.parameters()).device
    clock = _Clock(device)
    sched = _MeasureOnly(arch, batches, problem, cfg.temperature, None, clock)
    sched.targets = [teacher_signal(z, problem, cfg.temperature, b.get("labels"))
                     for z, b in zip(teacher_outputs, batches)]
    L = arch.num_layers
    fixed = {s: torch.ones(arch.out_proj(s).in_features, device=device, dtype=model.dtype) for s in range(2 * L)}
    run = _Run(arch, cfg, sched, clock, SampleGroups.of(batches, device), fixed, False)
    know = KnowledgeSums({t: arch.out_proj(t).in_features for t in sublayers(L)}, run.groups, cfg.pred_knowledge,
                         device)
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    model.eval()
    try:
        for j, b in enumerate(batches):
            _, feats, grads = _forward_backward(run, Sublayer(0), j, b)
            for t, g in grads.items():
                know.add(j, t, g, feats[t], b["attention_mask"])
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(requires_grad[n])
    out = {}
    for t in sublayers(L):
        k_rep, k_pred = know.per_unit(t, arch.unit_width(t), arch.out_proj(t).weight)
        out[t] = {"k_pred": k_pred.cpu(), "k_rep": k_rep.cpu()}
    return out


class _MeasureOnly(NaiveSchedule):
    """The naive schedule's forward from the embeddings, for a measurement only: nothing held for tuning."""

    def prepare_teacher(self) -> None:
        pass

    def _observe(self, j, s, t, h, y):
        pass


# ---- 2. search ------------------------------------------------------------------------------------------------------
def _scores(run: _Run, s: int, know: KnowledgeSums, costs, record: dict | None) -> dict[int, torch.Tensor]:
    """The importance scores (units_t,) of every undecided sublayer t ≥ s, KPMS's candidates (paper §4.2):
    μ (λ_rep K_rep + λ_pred K_pred) / F_head for heads, (λ_rep K_rep + λ_pred K_pred) / F_neuron for neurons.
    record: if given, receives {t: {"k_pred", "k_rep", "score"}} per-unit tensors on the CPU."""
    arch, cfg = run.arch, run.config
    scores = {}
    for t in sublayers(arch.num_layers, start=s):
        kr, kp = know.per_unit(t, arch.unit_width(t), arch.out_proj(t).weight)
        scores[t] = importance_scores(kr, kp, cfg.lam_rep, cfg.lam_pred, costs.unit_cost(t), t.pick(cfg.mu, 1.0))
        if record is not None:
            record[t] = {"k_pred": kp.cpu(), "k_rep": kr.cpu(), "score": scores[t].cpu()}
        if not bool(torch.isfinite(scores[t]).all()):
            raise NonFiniteScores(f"non-finite importance scores at sublayer {t} while pruning sublayer {s}: "
                                  "the model or the sample produces NaN/Inf; check the checkpoint and inputs")
    return scores


# ---- 3. tune --------------------------------------------------------------------------------------------------------
def _normal_equations(run: _Run, s: int, idx: torch.Tensor) -> NormalEquations:
    """The normal equations of KPWT for sublayer s on its kept dims idx (k,) (paper §4.3): AᵀA, AᵀR with A the kept
    projection inputs (tokens, k) and R = Y_s − X_s − b_s (tokens, d), Y_s the teacher's pre-LayerNorm sum, over the
    sample's real tokens. Formed after the search, on the kept dims only: a fraction k/w of AᵀR's work and (k/w)²
    of AᵀA's."""
    arch, sched = run.arch, run.schedule
    bias = arch.out_proj(s).bias
    eqs = NormalEquations.zeros(len(idx), arch.hidden, run.fixed[s].device)
    with run.clock("tuning_accumulate"), torch.no_grad():
        for j, b in enumerate(sched.batches):
            x_s = sched.tuning_input(j, s)  # X_s (B, T, d) float32
            y_teacher = sched.teacher_target(j, s, x_s)  # Y_s (B, T, d)
            residual = y_teacher - x_s if bias is None else y_teacher - x_s - bias
            eqs.add(sched.kept_projection_input(j, s, x_s, idx), residual, b["attention_mask"])
            sched.trim()
    return eqs


# ---- the per-sublayer record ----------------------------------------------------------------------------------------
def _record(s: Sublayer, keep: torch.Tensor, tau: float, budget: float, eqs: NormalEquations,
            tuned: tuple[float, float, float], tuning: bool, seconds: float) -> dict:
    err_before, err_after, used_ridge = tuned
    if used_ridge:
        log.warning("sublayer %d: ridge fallback %.1e recorded", s, used_ridge)
    rr = float(eqs.rr) or 1.0
    return {
        "sublayer": int(s), "layer": s.layer, "kind": s.kind,
        "units": int(keep.numel()), "kept": int(keep.sum()), "tau": tau, "budget_left": budget,
        "rel_error_before_tuning": err_before / rr, "rel_error_after_tuning": err_after / rr,
        "tuned": tuning, "ridge": used_ridge, "seconds": seconds,
    }
