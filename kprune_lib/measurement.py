"""Knowledge measurement (paper §4.1): predictive and representational knowledge, importance scores."""
from __future__ import annotations

import torch
import torch.nn.functional as F

PROBLEMS = ("classification", "regression", "qa")


def teacher_signal(output, problem: str, temperature: float):
    """Soft targets of the unpruned model: softmax(z/T) (classification), z (regression),
    (softmax(start/T), softmax(end/T)) (QA)."""
    if problem == "classification":
        return F.softmax(output / temperature, dim=-1)
    if problem == "regression":
        return output.squeeze(-1)
    if problem == "qa":
        return tuple(F.softmax(o / temperature, dim=-1) for o in output)
    raise ValueError(f"unknown problem type {problem!r}; expected one of {PROBLEMS}")


def _kl_t2(p_teacher: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(p_t ‖ softmax(z/T)), batch mean."""
    log_q = F.log_softmax(logits / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_q, p_teacher, reduction="batchmean")


def predictive_loss(output, teacher, problem: str, temperature: float) -> torch.Tensor:
    """Distance between the student's predictions and the teacher's soft targets (spec §(1))."""
    if problem == "classification":
        return _kl_t2(teacher, output, temperature)
    if problem == "regression":
        return F.mse_loss(output.squeeze(-1), teacher)  # per-example MSE, shapes (B,) vs (B,)
    if problem == "qa":
        return 0.5 * (_kl_t2(teacher[0], output[0], temperature) + _kl_t2(teacher[1], output[1], temperature))
    raise ValueError(f"unknown problem type {problem!r}; expected one of {PROBLEMS}")


def predictive_knowledge_increment(mask_grad: torch.Tensor) -> torch.Tensor:
    """One batch's contribution to K_pred per mask entry: ½ (∂loss/∂m)²."""
    return 0.5 * mask_grad.detach().float() ** 2


def representational_knowledge_increment(a: torch.Tensor, weight: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """One batch's contribution to K_rep per input dim i of a projection: Σ_tokens a_i² · mean_j W_{j,i}².

    a: (B, T, n) projection inputs; weight: (d, n); token_mask: (B, T) 1 for real tokens.
    """
    a = a.detach().float()
    sq = (a * a * token_mask[..., None].float()).sum(dim=(0, 1))  # (n,)
    return sq * weight.detach().float().pow(2).mean(dim=0)


def per_unit(per_dim: torch.Tensor, width: int) -> torch.Tensor:
    """Per-dimension knowledge -> per-unit knowledge: mean over each unit's `width` dims (d_h for heads, 1 for neurons)."""
    return per_dim.view(-1, width).mean(dim=-1)


def importance_scores(k_rep: torch.Tensor, k_pred: torch.Tensor, lam_rep: float, lam_pred: float,
                      unit_flops: float, multiplier: float = 1.0) -> torch.Tensor:
    """S = multiplier · (λ_rep K_rep + λ_pred K_pred) / F_unit  (multiplier = μ for heads, 1 for neurons)."""
    return multiplier * (lam_rep * k_rep + lam_pred * k_pred) / unit_flops
