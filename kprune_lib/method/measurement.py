"""Knowledge measurement (paper §4.1): predictive and representational knowledge, importance scores, and their
sums over the sample at one iteration of the loop (`SampleGroups`, `KnowledgeSums`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kprune_lib.config import PruneConfig  # the default of pred_knowledge

PROBLEMS = ("classification", "regression", "qa", "token")
IGNORE = -100  # token classification: the label of positions that are not scored (data.tokens.IGNORE)


def labelled_token_weights(labels: torch.Tensor) -> torch.Tensor:
    """Token classification: per position, 1 / (the example's labelled tokens) at labelled positions (label ≠ −100:
    the first sub-word of each word), 0 elsewhere (special tokens, later sub-words, padding). (B, T) -> (B, T)."""
    scored = (labels != IGNORE).float()
    return scored / scored.sum(-1, keepdim=True).clamp_min(1.0)


def teacher_signal(output, problem: str, temperature: float, labels: torch.Tensor | None = None):
    """Soft targets of the unpruned model: softmax(z/T) (classification), z (regression),
    (softmax(start/T), softmax(end/T)) (QA), (softmax(z/T) per token (B, T, C), `labelled_token_weights`) (token
    classification; labels (B, T): the batch's aligned labels, whose positions, not values, are used)."""
    if problem == "classification":
        return F.softmax(output / temperature, dim=-1)
    if problem == "token":
        if labels is None:
            raise ValueError("token classification needs the labelled positions: batches with 'labels' (B, T), "
                             "-100 where a position is not scored")
        return F.softmax(output / temperature, dim=-1), labelled_token_weights(labels).to(output.dtype)
    if problem == "regression":
        return output.squeeze(-1)
    if problem == "qa":
        return tuple(F.softmax(o / temperature, dim=-1) for o in output)
    raise ValueError(f"unknown problem type {problem!r}; expected one of {PROBLEMS}")



def _kl_t2(p_teacher: torch.Tensor, logits: torch.Tensor, temperature: float, reduction: str) -> torch.Tensor:
    """T² · KL(p_t ‖ softmax(z/T)): batch mean (reduction "mean") or sum over examples ("sum")."""
    log_q = F.log_softmax(logits / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_q, p_teacher, reduction="batchmean" if reduction == "mean" else "sum")


def token_kl_t2(teacher: tuple[torch.Tensor, torch.Tensor], logits: torch.Tensor, temperature: float,
                reduction: str) -> torch.Tensor:
    """Token classification's predictive loss: per example i, the mean over its labelled tokens t (first sub-words)
    of T² · KL(p_it ‖ softmax(z_it/T)), l_i = Σ_t w_it T² KL_it with w = `labelled_token_weights`; the batch mean
    of l_i (reduction "mean") or their sum ("sum"). One example weighs as one sequence-classification example does,
    however many words it has. teacher: (p (B, T, C), w (B, T)); logits (B, T, C)."""
    p, w = teacher
    log_q = F.log_softmax(logits / temperature, dim=-1)
    per_example = temperature**2 * (w * F.kl_div(log_q, p, reduction="none").sum(-1)).sum(-1)  # (B,)
    return per_example.mean() if reduction == "mean" else per_example.sum()


def predictive_loss(output, teacher, problem: str, temperature: float, reduction: str = "mean") -> torch.Tensor:
    """Distance between the student's predictions and the teacher's soft targets (spec §(1)).

    reduction "mean": the batch mean (the spec's loss); "sum": the sum of the per-example losses, whose gradient
    with respect to a per-example mask row is that example's own gradient."""
    if problem == "classification":
        return _kl_t2(teacher, output, temperature, reduction)
    if problem == "token":
        return token_kl_t2(teacher, output, temperature, reduction)
    if problem == "regression":
        return F.mse_loss(output.squeeze(-1), teacher, reduction=reduction)  # per-example MSE, shapes (B,) vs (B,)
    if problem == "qa":
        return 0.5 * (_kl_t2(teacher[0], output[0], temperature, reduction)
                      + _kl_t2(teacher[1], output[1], temperature, reduction))
    raise ValueError(f"unknown problem type {problem!r}; expected one of {PROBLEMS}")


def predictive_gradient_vanishes(s: int, pred_knowledge: str, gold_first: bool) -> bool:
    """Whether iteration s's mask gradients are zero in exact arithmetic, so that its measurement needs the forward
    only (K_rep) and K_pred = 0. At s = 0 the student is the teacher: the predictive loss against the teacher's own
    soft targets (KL) or outputs (MSE) sits at its minimum, where its gradient vanishes. The reference
    back-propagates anyway and gets rounding noise (README "Faithfulness"). Not so for the gold-label loss
    (`gold_first`) or the curvature form ("gauss-newton"), which are not zero at the teacher."""
    return s == 0 and not gold_first and pred_knowledge in ("batch", "example")


def gold_loss(output: torch.Tensor, labels: torch.Tensor, problem: str, reduction: str = "mean") -> torch.Tensor:
    """The fine-tuning loss on gold labels: cross-entropy (classification), MSE (regression), or for question
    answering (output: start and end logits (B, T) each; labels (B, 2): the gold start and end tokens) the mean of
    the start and end cross-entropies, as transformers' QA heads compute it."""
    if problem == "classification":
        return F.cross_entropy(output, labels.long(), reduction=reduction)
    if problem == "regression":
        return F.mse_loss(output.squeeze(-1), labels.to(output.dtype), reduction=reduction)
    if problem == "qa":
        start, end = output
        return (F.cross_entropy(start, labels[:, 0].long(), reduction=reduction)
                + F.cross_entropy(end, labels[:, 1].long(), reduction=reduction)) / 2
    raise ValueError(f"a gold-label loss needs a classification, regression or QA task, not {problem!r}")


def curvature_projections(output: torch.Tensor, problem: str, temperature: float) -> list[torch.Tensor]:
    """K-prune+ candidate ("gauss-newton"): scalars y_k = Σ_i √λ_ik v_ikᵀ z_i, one per eigen-direction of the
    predictive loss's Hessian in output space, H_i = V_i diag(λ_i) V_iᵀ (the student's own distribution q_i:
    diag(q) − q qᵀ for T²·KL at temperature T; 2 for MSE). With per-example mask rows, Σ_k ½ (∂y_k/∂m_i)² is
    ½ J_iᵀ H_i J_i, the second-order loss increase of removing the unit (Gauss-Newton); the loop puts it on the
    batch-mean loss's scale like the empirical Fisher (`empirical_fisher`). Not zero at the teacher,
    where the gradient is. Directions with λ ≈ 0 are skipped (binary tasks need one backward)."""
    if problem == "regression":
        return [2.0 ** 0.5 * output.squeeze(-1).sum()]
    if problem != "classification":
        raise ValueError("pred_knowledge 'gauss-newton' supports classification and regression, not " + problem)
    q = torch.softmax(output.detach().float() / temperature, dim=-1)  # (B, C)
    hess = torch.diag_embed(q) - q[:, :, None] * q[:, None, :]  # (B, C, C)
    lam, vec = torch.linalg.eigh(hess)  # ascending; (B, C), (B, C, C)
    lam = lam.clamp_min(0)
    roots, floor = lam.sqrt(), 1e-6 * float(lam.max())  # rounding leaves ~1e-9 on the null direction: skip it
    out = []
    for k in range(q.shape[-1]):
        if float(lam[:, k].max()) > floor:
            out.append(((roots[:, k, None] * vec[:, :, k]).to(output.dtype) * output).sum())
    return out


def objectives(output, target, problem: str, temperature: float, pred_knowledge: str = PruneConfig.pred_knowledge,
               gold_labels: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The scalars whose gradients with respect to per-example mask rows measure predictive knowledge, each summed
    over the batch's examples (row i of a mask then gets example i's own gradient):
    the predictive loss against the teacher's soft targets (the paper); with gold_labels (B,) the gold-label loss
    instead (K-prune+ `gold_first`, at s = 0); for "gauss-newton" one projection per curvature direction."""
    if gold_labels is not None:
        return [gold_loss(output, gold_labels, problem, reduction="sum")]
    if pred_knowledge == "gauss-newton":
        return curvature_projections(output, problem, temperature)
    return [predictive_loss(output, target, problem, temperature, reduction="sum")]


def group_gradients(example_grads: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per-example mask gradients (B, w) -> their sums per sample batch (n_groups, w), float64.

    groups: (B,) the draw-order batch of each example (the batch whose mean loss the paper differentiates)."""
    one_hot = F.one_hot(groups, n_groups).T.to(torch.float64)  # (n_groups, B)
    return one_hot @ example_grads.detach().double()


def predictive_knowledge(group_grad_sums: torch.Tensor, group_sizes: torch.Tensor) -> torch.Tensor:
    """The paper's K_pred numerator, Σ_batches ½ (∂ batch-mean loss / ∂m)², from per-batch sums of per-example
    gradients: the batch gradient is (Σ_{i in batch} g_i) / |batch|, whatever order the examples were computed in."""
    return 0.5 * ((group_grad_sums / group_sizes[:, None].double()) ** 2).sum(0)


def empirical_fisher(example_grads: torch.Tensor, batch_sizes: torch.Tensor) -> torch.Tensor:
    """K-prune+ candidate: Σ_i ½ (g_i / |batch_i|)², example i's share of its sample batch's mean-loss gradient,
    squared before summing (examples do not cancel). On the paper's scale: when the examples' gradients are
    uncorrelated both forms have the same expectation. example_grads (B, w); batch_sizes (B,) |batch_i|."""
    return 0.5 * ((example_grads.detach().double() / batch_sizes[:, None].double()) ** 2).sum(0)


def squared_activation_sums(a: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Σ over real tokens of a_i², per input dim i of a projection: a (B, T, n), token_mask (B, T) -> (n,) float32."""
    a = a.detach().float().reshape(token_mask.numel(), a.shape[-1])  # (B·T, n); n may be 0 (a sublayer pruned before)
    return token_mask.reshape(1, -1).to(a.dtype).matmul(a * a).squeeze(0)


def representational_knowledge(sq_sums: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """K_rep per input dim i of a projection: Σ_tokens a_i² · mean_j W_{j,i}² (sq_sums (n,); weight (d, n))."""
    return sq_sums * weight.detach().to(sq_sums.dtype).pow(2).mean(dim=0)


def per_unit(per_dim: torch.Tensor, width: int) -> torch.Tensor:
    """Per-dimension knowledge -> per-unit knowledge: mean over each unit's `width` dims (d_h for heads, 1 for neurons)."""
    return per_dim.view(-1, width).mean(dim=-1)


def importance_scores(k_rep: torch.Tensor, k_pred: torch.Tensor, lam_rep: float, lam_pred: float,
                      unit_flops: float, multiplier: float = 1.0) -> torch.Tensor:
    """S = multiplier · (λ_rep K_rep + λ_pred K_pred) / F_unit  (multiplier = μ for heads, 1 for neurons)."""
    return multiplier * (lam_rep * k_rep + lam_pred * k_pred) / unit_flops


# ---- accumulation over the sample ----------------------------------------------------------------------------------
@dataclass
class SampleGroups:
    """Which sample batch (the unit of the paper's batch-mean gradient) each row of each compute batch belongs to."""

    rows: list[torch.Tensor]  # per compute batch j: (B_j,) the sample batch of each row
    sizes: torch.Tensor  # (n_groups,) examples per sample batch
    n_examples: int
    n_tokens: int  # real (non-padding) tokens of the sample

    @classmethod
    def of(cls, batches: list[dict], device) -> "SampleGroups":
        """From each batch's "group" (B,); without it every compute batch is its own sample batch."""
        rows = [b["group"] if "group" in b else torch.full_like(b["input_ids"][:, 0], j)
                for j, b in enumerate(batches)]
        n_groups = int(max(int(g.max()) for g in rows)) + 1
        sizes = torch.bincount(torch.cat(rows), minlength=n_groups).to(device)
        return cls(rows, sizes, sum(b["input_ids"].shape[0] for b in batches),
                   int(sum(b["attention_mask"].sum() for b in batches)))

    @property
    def n(self) -> int:
        return self.sizes.shape[0]


class KnowledgeSums:
    """K_pred and K_rep of the sublayers t ≥ s, summed over the sample at iteration s (paper §4.1).

    pred_knowledge "batch" (the paper): per-example mask gradients are summed per sample batch and squared at the
    end, ½ Σ_batches (∂ batch-mean loss/∂m)², whatever order the examples were computed in; "example" and
    "gauss-newton": per-example squares summed as they come (`empirical_fisher`)."""

    def __init__(self, widths: dict[int, int], groups: SampleGroups, pred_knowledge: str, device):
        f64 = dict(dtype=torch.float64, device=device)
        self.groups, self.form = groups, pred_knowledge
        if pred_knowledge == "batch":
            self.grad_sums = {t: torch.zeros(groups.n, w, **f64) for t, w in widths.items()}  # (n_groups, w_t)
        else:
            self.k_pred = {t: torch.zeros(w, **f64) for t, w in widths.items()}  # (w_t,)
        self.sq_sums = {t: torch.zeros(w, **f64) for t, w in widths.items()}  # (w_t,) Σ_tokens a², K_rep's sum

    def add(self, j: int, t: int, grads: list[torch.Tensor], a: torch.Tensor, token_mask: torch.Tensor) -> None:
        """Compute batch j's share for sublayer t. grads: per objective, the mask gradients (B, w_t) (one row per
        example); a: projection inputs (B, T, w_t); token_mask (B, T)."""
        rows = self.groups.rows[j]
        for g in grads:
            if self.form == "batch":
                self.grad_sums[t] += group_gradients(g, rows, self.groups.n)
            else:  # per-example forms, on the batch-mean loss's scale (summed over directions)
                self.k_pred[t] += empirical_fisher(g, self.groups.sizes[rows])
        self.sq_sums[t] += squared_activation_sums(a, token_mask)

    def per_unit(self, t: int, width: int, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K_rep, K_pred) of sublayer t per unit (heads: width d_h, neurons: 1), K_rep per real token and K_pred
        per example, float32. weight: sublayer t's output projection (d, w_t), unchanged while t is undecided."""
        k_pred = predictive_knowledge(self.grad_sums[t], self.groups.sizes) if self.form == "batch" else self.k_pred[t]
        k_rep = representational_knowledge(self.sq_sums[t], weight).float()
        return (per_unit(k_rep / self.groups.n_tokens, width),
                per_unit((k_pred / self.groups.n_examples).float(), width))
