"""The K-prune loop: bottom-up over the 2L sublayers, measure → search → tune (paper Algorithm 1).

Two schedules give identical masks:
- "naive" (the reference's): every iteration runs the whole model from the embeddings, with the units
  pruned so far masked, and back-propagates to the bottom; teacher sums Y_s of all 2L sublayers are held.
- "cached" (ours): the frozen lower part is never re-run. The student's input to the target sublayer is
  cached over the sample and advanced one sublayer per iteration; the teacher's residual stream is
  cached beside it, so teacher targets are streamed (memory O(N·d) instead of O(2L·N·d)). The advance of
  an attention sublayer reuses the context vectors of the measurement pass (only the tuned output projection
  changed), and at s = 0 the teacher's step comes from the measurement pass itself (student = teacher there).
  The teacher stream is held on real tokens only (its padding rows never reach a target). Same operations
  on the same inputs as the naive schedule, so masks and tuned weights agree bit for bit (tested).
While pruning, the model keeps its dense shapes (pruned projection columns are zeroed and masked);
`physical.prune_physically` shrinks it afterwards.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .arch import Arch
from .config import SCHEDULES
from .flops import head_flops, model_flops, neuron_flops
from .forward import attention_bias, projection_input, sublayer, sublayer_from_input
from .masks import apply_masks, head_dims
from .measurement import (PRED_KNOWLEDGE, curvature_projections, empirical_fisher, gold_loss, group_gradients, importance_scores, per_unit,
                          predictive_knowledge, predictive_loss, representational_knowledge_increment, teacher_signal)
from .search import kpms_step
from .tuning import NormalEquations

log = logging.getLogger(__name__)


class NonFiniteScores(FloatingPointError):
    pass


AUTOCAST = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class PruneResult:
    head_mask: torch.Tensor  # (L, H) bool, True = kept
    neuron_mask: torch.Tensor  # (L, N) bool
    sublayers: list[dict]  # one record per sublayer: kept, tau, budget_left, errors, ridge, seconds
    timings: dict[str, float]  # seconds per stage
    seconds: float
    flops_dense: float
    flops_pruned: float
    scores: dict[int, torch.Tensor] = field(default_factory=dict)  # target sublayer's unit scores per iteration
    # with record_knowledge: knowledge[s][t] = {"k_pred", "k_rep", "score"} per-unit tensors of every
    # sublayer t >= s, as measured at iteration s (for the workbook's plots)
    knowledge: dict[int, dict[int, dict[str, torch.Tensor]]] = field(default_factory=dict)

    @property
    def heads_kept(self) -> list[int]:
        return self.head_mask.sum(1).tolist()

    @property
    def neurons_kept(self) -> list[int]:
        return self.neuron_mask.sum(1).tolist()

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


def _unpack(rows: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Real-token rows (n, d) of the teacher stream -> (B, T, d) with zero padding rows. The teacher's padding
    rows never matter: its targets Y_s are taken on real tokens and attention gives padding keys exactly zero
    weight, so its stream is held without them (a third less memory on MRPC)."""
    x = rows.new_zeros(*token_mask.shape, rows.shape[-1])
    x[token_mask.bool()] = rows
    return x


def _unit_width(arch: Arch, s: int) -> int:
    return arch.head_size if s % 2 == 0 else 1


def _dims(arch: Arch, s: int, keep_units: torch.Tensor) -> torch.Tensor:
    """Unit keep-mask of sublayer s -> indices of the kept projection-input dims."""
    dim_mask = head_dims(keep_units, arch.head_size) if s % 2 == 0 else keep_units
    return dim_mask.nonzero().flatten()


@torch.no_grad()
def _teacher_pass(arch: Arch, batches, problem: str, temperature: float, keep_sums: bool):
    """Soft targets of the unpruned model; with keep_sums also every sublayer's Y_s (naive schedule)."""
    targets, sums = [], []
    for b in batches:
        bias = attention_bias(b["attention_mask"], arch.model.dtype)
        x, ys = arch.embed(b["input_ids"], b.get("token_type_ids")), []
        for s in range(2 * arch.num_layers):
            x, y, _ = sublayer(arch, s, x, bias)
            if keep_sums:
                ys.append(y)
        targets.append(teacher_signal(arch.head(x), problem, temperature))
        sums.append(ys)
    return targets, sums


def kprune(model: torch.nn.Module, batches: list[dict], problem: str, *, constraint: float, seq_len: float,
           lam_pred: float, lam_rep: float, mu: float, temperature: float, tuning: bool = True,
           schedule: str = "cached", ridge: float = 1e-6, progress: bool = True,
           record_knowledge: bool = False, autocast: str | None = None, pred_knowledge: str = "batch",
           gold_first: bool = False, damping: float = 0.0) -> PruneResult:
    """Prune `model` in place (masked, dense shapes) to remove `constraint` of its FLOPs.

    batches: the pruning sample, padded (B, T) tensors on the model's device. A batch's optional "group" (B,) names
    each row's sample batch (`batching.sample_batches`), the unit of the paper's batch-mean gradient; without it
    every batch is its own group. Mask gradients are taken per example (one mask row per example, one backward of
    the summed loss) and regrouped, so the masks do not depend on how the sample is batched for compute.
    problem: "classification", "regression" or "qa". seq_len: L_seq of the FLOPs formula.
    autocast: None, "bf16" or "fp16": lower precision for the measurement forward/backward only;
    teacher signals, the tuning statistics and the solve stay in float32/float64.
    pred_knowledge: "batch" (the paper: ½ (∂ batch-mean loss/∂m)² per sample batch); K-prune+ candidates:
    "example" (the per-example empirical Fisher Σ_i ½ (∂l_i/∂m)²) and "gauss-newton" (Σ_i ½ J_iᵀ H_i J_i, the
    curvature of the predictive loss in output space; `measurement.curvature_projections`).
    gold_first: K-prune+ candidate: at s = 0, where the student is the teacher and the predictive gradient is zero,
    measure predictive knowledge with the gold-label loss (batches need "labels") instead.
    damping: K-prune+ candidate: KPWT shrunk toward the current weights (`tuning.NormalEquations.solve`).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not batches:
        raise ValueError("empty pruning sample: increase num_tokens")
    if autocast not in AUTOCAST:
        raise ValueError(f"autocast must be one of {list(AUTOCAST)}, got {autocast!r}")
    if pred_knowledge not in PRED_KNOWLEDGE:
        raise ValueError(f"pred_knowledge must be one of {PRED_KNOWLEDGE}, got {pred_knowledge!r}")
    if gold_first and not all("labels" in b for b in batches):
        raise ValueError("gold_first needs gold labels in the sample batches (a GLUE task)")
    t_start = time.perf_counter()
    arch = Arch(model)
    model.eval()
    device = next(model.parameters()).device
    clock = _Clock(device)
    L, d = arch.num_layers, arch.hidden
    n_sub = 2 * L
    fh, fn = head_flops(seq_len, d, arch.head_size), neuron_flops(seq_len, d)
    unit_flops = {s: fh if s % 2 == 0 else fn for s in range(n_sub)}
    flops_dense = model_flops([arch.num_heads] * L, [arch.ffn_size] * L, seq_len, d, arch.head_size)
    budget = (1.0 - constraint) * flops_dense
    n_examples = sum(b["input_ids"].shape[0] for b in batches)
    n_tokens = int(sum(b["attention_mask"].sum() for b in batches))
    groups = [b["group"] if "group" in b else torch.full_like(b["input_ids"][:, 0], j) for j, b in enumerate(batches)]
    n_groups = int(max(int(g.max()) for g in groups)) + 1
    group_sizes = torch.bincount(torch.cat(groups), minlength=n_groups).to(device)
    naive = schedule == "naive"
    widths = {s: arch.out_proj(s).in_features for s in range(n_sub)}
    fixed = {s: torch.ones(widths[s], device=device, dtype=model.dtype) for s in range(n_sub)}  # decided masks
    keep_units: dict[int, torch.Tensor] = {}
    records, target_scores, knowledge = [], {}, {}
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    try:
        # Teacher = the unpruned model. Without autocast its signals come from iteration 0's own forward
        # (at s = 0 the student is still the teacher, as in the reference); with autocast from a separate
        # float32 pass, so that teacher signals never carry reduced precision.
        with clock("teacher"):
            if autocast is not None:
                targets, teacher_sums = _teacher_pass(arch, batches, problem, temperature, keep_sums=naive)
            else:
                targets, teacher_sums = [None] * len(batches), [[] for _ in batches]
            # cached: residual streams of teacher and student at the current sublayer s (their input there). At
            # s = 0 both are the embeddings, recomputed per batch rather than held: the first iteration, whose
            # backward graph is the deepest, then holds no stream memory.
            teacher_x, student_x = [None] * len(batches), [None] * len(batches)
        biases = [attention_bias(b["attention_mask"], model.dtype) for b in batches]
        for s in tqdm(range(n_sub), desc=f"K-prune ({schedule})", disable=not progress, unit="sublayer"):
            t_sub = time.perf_counter()
            k_pred = {t: torch.zeros(widths[t], device=device, dtype=torch.float64) for t in range(s, n_sub)}
            grad_sums = {t: torch.zeros(n_groups, widths[t], device=device, dtype=torch.float64) for t in range(s, n_sub)}
            k_rep = {t: torch.zeros(widths[t], device=device) for t in range(s, n_sub)}
            eqs = NormalEquations.zeros(widths[s], d, device)
            # cached, attention sublayer: keep its projection inputs (context vectors) so that the cache advance
            # after tuning skips the Q/K/V and attention recompute (only the tuned output projection changes)
            contexts = [None] * len(batches) if not naive and s % 2 == 0 else None
            for j, b in enumerate(tqdm(batches, desc=f"sublayer {s}", leave=False, disable=not progress)):
                tok = b["attention_mask"]
                with clock("measure_forward_backward"):
                    first = 0 if naive else s
                    B = b["input_ids"].shape[0]
                    leaves = {t: fixed[t].expand(B, -1).clone().requires_grad_(True) for t in range(first, n_sub)}
                    h = arch.embed(b["input_ids"], b.get("token_type_ids")) if naive or s == 0 else student_x[j]
                    feats, teacher_step = {}, None
                    with apply_masks(arch, leaves), torch.autocast(device.type, AUTOCAST[autocast] or torch.float32,
                                                                   enabled=autocast is not None):
                        for t in range(first, n_sub):
                            if t == s:
                                x_s = h
                            h, y, a = sublayer(arch, t, h, biases[j])
                            if t >= s:
                                feats[t] = a
                            if naive and len(teacher_sums[j]) < n_sub:  # iteration 0: the teacher's Y_t
                                teacher_sums[j].append(y.detach())
                            if not naive and s == t == 0 and autocast is None:  # the student is the teacher here
                                teacher_step = (h.detach(), y.detach())
                        out = arch.head(h)
                    if targets[j] is None:  # iteration 0: the teacher's soft targets
                        targets[j] = teacher_signal(tuple(o.detach() for o in out) if problem == "qa" else out.detach(),
                                                    problem, temperature)
                    if gold_first and s == 0:  # K-prune+ candidate: a predictive signal that is not zero at s = 0
                        objectives = [gold_loss(out, b["labels"], problem, reduction="sum")]
                    elif pred_knowledge == "gauss-newton":  # K-prune+ candidate: curvature, one backward per direction
                        objectives = curvature_projections(out, problem, temperature)
                    else:  # summed over examples: row i of a leaf gets example i's own gradient
                        objectives = [predictive_loss(out, targets[j], problem, temperature, reduction="sum")]
                    grad_sets = [torch.autograd.grad(y, list(leaves.values()), retain_graph=k < len(objectives) - 1)
                                 for k, y in enumerate(objectives)]  # naive: down to the bottom
                with clock("knowledge_accumulate"):
                    for i, t in enumerate(leaves):
                        if t < s:
                            continue
                        for grads in grad_sets:
                            if pred_knowledge == "batch":
                                grad_sums[t] += group_gradients(grads[i], groups[j], n_groups)
                            else:  # per-example forms, on the batch-mean loss's scale (summed over directions)
                                k_pred[t] += empirical_fisher(grads[i], group_sizes[groups[j]])
                        k_rep[t] += representational_knowledge_increment(feats[t], arch.out_proj(t).weight, tok)
                with clock("tuning_accumulate"), torch.no_grad():
                    if naive:
                        y_teacher = teacher_sums[j][s]
                    else:
                        x_teacher = x_s if s == 0 else _unpack(teacher_x[j], tok)  # at s = 0: the embeddings
                        x_next, y_teacher = teacher_step or sublayer(arch, s, x_teacher, biases[j])[:2]
                        teacher_x[j] = x_next[tok.bool()]  # real tokens only (see _unpack)
                    x_s = x_s.detach().float()
                    a_s = feats[s] if autocast is None else projection_input(arch, s, x_s, biases[j])  # fp32 for KPWT
                    eqs.add(a_s, y_teacher - x_s - arch.out_proj(s).bias, tok)
                    if contexts is not None:
                        contexts[j] = a_s.detach()
                del feats, leaves, grad_sets, objectives, out, h, teacher_step
            with clock("score_search"):
                if pred_knowledge == "batch":
                    k_pred = {t: predictive_knowledge(grad_sums[t], group_sizes) for t in range(s, n_sub)}
                scores = {}
                for t in range(s, n_sub):
                    w = _unit_width(arch, t)
                    kr, kp = per_unit(k_rep[t] / n_tokens, w), per_unit((k_pred[t] / n_examples).float(), w)
                    scores[t] = importance_scores(kr, kp, lam_rep, lam_pred, unit_flops[t], mu if t % 2 == 0 else 1.0)
                    if record_knowledge:
                        knowledge.setdefault(s, {})[t] = {"k_pred": kp.cpu(), "k_rep": kr.cpu(), "score": scores[t].cpu()}
                    if not bool(torch.isfinite(scores[t]).all()):
                        raise NonFiniteScores(f"non-finite importance scores at sublayer {t} while pruning sublayer {s}: "
                                              "the model or the sample produces NaN/Inf; check the checkpoint and inputs")
                keep, tau, budget = kpms_step(scores, unit_flops, s, budget)
                keep_units[s] = keep
                target_scores[s] = scores[s].cpu()
            with clock("tuning_solve"), torch.no_grad():
                proj = arch.out_proj(s)
                idx = _dims(arch, s, keep)
                w_old = proj.weight[:, idx]
                err_before = eqs.error(w_old, idx)
                w_new, used_ridge = eqs.solve(idx, ridge, damping, w_old) if tuning else (w_old.double(), 0.0)
                err_after = eqs.error(w_new, idx)
                weight = torch.zeros_like(proj.weight)
                weight[:, idx] = w_new.to(weight.dtype)
                proj.weight.copy_(weight)
                if len(idx) == 0 and proj.bias is not None:  # nothing survives: the sublayer becomes LayerNorm(X)
                    proj.bias.zero_()
                fixed[s] = torch.zeros_like(fixed[s])
                fixed[s][idx] = 1.0
            if not naive:
                with clock("cache_advance"), torch.no_grad(), apply_masks(arch, {s: fixed[s]}):
                    for j, b in enumerate(batches):
                        x = arch.embed(b["input_ids"], b.get("token_type_ids")) if s == 0 else student_x[j]
                        if contexts is not None:
                            student_x[j] = sublayer_from_input(arch, s, x, contexts[j])[0]
                            contexts[j] = None
                        else:
                            student_x[j] = sublayer(arch, s, x, biases[j])[0]
            rr = float(eqs.rr) or 1.0
            records.append({
                "sublayer": s, "layer": s // 2, "kind": "mha" if s % 2 == 0 else "ffn",
                "units": int(keep.numel()), "kept": int(keep.sum()), "tau": tau, "budget_left": budget,
                "rel_error_before_tuning": err_before / rr, "rel_error_after_tuning": err_after / rr,
                "tuned": tuning, "ridge": used_ridge, "seconds": time.perf_counter() - t_sub,
            })
            if used_ridge:
                log.warning("sublayer %d: ridge fallback %.1e recorded", s, used_ridge)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(requires_grad[n])
    head_mask = torch.stack([keep_units[2 * i] for i in range(L)]).cpu()
    neuron_mask = torch.stack([keep_units[2 * i + 1] for i in range(L)]).cpu()
    flops_pruned = model_flops(head_mask.sum(1).tolist(), neuron_mask.sum(1).tolist(), seq_len, d, arch.head_size)
    return PruneResult(head_mask, neuron_mask, records, dict(clock.totals), time.perf_counter() - t_start,
                       flops_dense, flops_pruned, target_scores, knowledge)
