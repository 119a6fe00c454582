"""Knowledge-preserving weight tuning, KPWT (paper §4.3): least squares on the normal equations.

For sublayer s, over all non-padding sample tokens: min_W' ‖A W'ᵀ − (Y_s − X − b_s)‖², with A the
kept units' projection inputs of the current model, X its sublayer input and Y_s the teacher's
pre-LayerNorm sum. Statistics are accumulated batch by batch (AᵀA, Aᵀ R, ‖R‖²) and solved once in float64.
Each batch's products are formed in the inputs' precision (at least float32; float64 inputs stay exact) and
summed in float64: half the cost of float64 products, and more precise than the reference's float32 throughout.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from kprune_lib.config import PruneConfig  # the defaults of ridge, damping and tuning

log = logging.getLogger(__name__)


@dataclass
class NormalEquations:
    """Running sums for one sublayer: G = AᵀA (n×n), C = AᵀR (n×d), rr = ‖R‖² (float64)."""

    gram: torch.Tensor
    cross: torch.Tensor
    rr: torch.Tensor
    tokens: int = 0

    @classmethod
    def zeros(cls, width: int, hidden: int, device) -> "NormalEquations":
        f64 = dict(dtype=torch.float64, device=device)
        return cls(torch.zeros(width, width, **f64), torch.zeros(width, hidden, **f64), torch.zeros((), **f64))

    def add(self, a: torch.Tensor, residual: torch.Tensor, token_mask: torch.Tensor) -> None:
        """a: (B, T, n) projection inputs; residual: (B, T, d) target R = Y − X − b; token_mask (B, T)."""
        keep = token_mask.bool()
        dtype = torch.promote_types(a.dtype, torch.float32)
        A = a.detach()[keep].to(dtype)  # (tokens, n)
        R = residual.detach()[keep].to(dtype)  # (tokens, d)
        self.gram += symmetric_gram(A)
        self.cross += (A.T @ R).double()
        self.rr += (R.double() ** 2).sum()
        self.tokens += A.shape[0]

    def _restricted(self, idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.gram, self.cross) if idx is None else (self.gram[idx][:, idx], self.cross[idx])

    def error(self, weight: torch.Tensor, idx: torch.Tensor | None = None) -> float:
        """‖A_idx Wᵀ − R‖² for weight (d, k) acting on the dims idx (None: all of A's), from the accumulated sums."""
        W = weight.double()
        G, C = self._restricted(idx)
        return float(torch.einsum("dk,kl,dl->", W, G, W) - 2.0 * torch.einsum("dk,kd->", W, C) + self.rr)

    def solve(self, idx: torch.Tensor | None = None, ridge: float = PruneConfig.ridge,
              damping: float = PruneConfig.damping, prior: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """W' (d, k) solving (A_idxᵀA_idx) W'ᵀ = A_idxᵀ R (idx None: all of A's dims); returns (W', ridge used or 0.0).

        damping > 0 (K-prune+ candidate): min ‖A W'ᵀ − R‖² + δ‖W' − prior‖² with δ = damping · mean diag(AᵀA),
        i.e. (AᵀA + δI) W'ᵀ = AᵀR + δ priorᵀ — shrinks the fit toward the current weights (the dampening of
        OBS-style solvers, e.g. SparseGPT's 1 %), against over-fitting the sample."""
        G, C = self._restricted(idx)
        if damping > 0 and G.shape[0]:
            if prior is None or prior.shape != (C.shape[1], G.shape[0]):
                raise ValueError(f"damped KPWT needs the kept columns' current weights ({C.shape[1]}×{G.shape[0]}) "
                                 f"as its prior, got {None if prior is None else tuple(prior.shape)}")
            delta = damping * float(G.diagonal().mean())
            G = G + delta * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
            C = C + delta * prior.double().T
        return solve_normal_equations(G, C, ridge)


@torch.no_grad()
def kpwt_step(proj: torch.nn.Linear, eqs: NormalEquations, idx: torch.Tensor, tune: bool = PruneConfig.tuning,
              ridge: float = PruneConfig.ridge, damping: float = PruneConfig.damping) -> tuple[float, float, float]:
    """One KPWT step for the target sublayer: solve for the kept projection-input dims idx (k,) and write the
    weights, W (d, w) with the solution W' (d, k) in the kept columns and zeros elsewhere. eqs: the normal equations
    of the kept dims (A = the projection inputs' columns idx, k wide). A sublayer with no dim
    left drops its bias too and becomes LayerNorm(X) (the authors' rule). tune=False keeps the kept columns' old
    weights (ablation); damping > 0 shrinks the solution toward them (`NormalEquations.solve`).
    Returns (‖A Wᵀ − R‖² before, after, ridge used or 0.0)."""
    if eqs.gram.shape[0] != len(idx):
        raise ValueError(f"normal equations over {eqs.gram.shape[0]} dims for {len(idx)} kept dims")
    w_old = proj.weight[:, idx]
    err_before = eqs.error(w_old)
    w_new, used_ridge = eqs.solve(None, ridge, damping, w_old) if tune else (w_old.double(), 0.0)
    err_after = eqs.error(w_new)
    weight = torch.zeros_like(proj.weight)
    weight[:, idx] = w_new.to(weight.dtype)
    proj.weight.copy_(weight)
    if len(idx) == 0 and proj.bias is not None:  # nothing survives: the sublayer becomes LayerNorm(X)
        proj.bias.zero_()
    return err_before, err_after, used_ridge


def symmetric_gram(A: torch.Tensor, panel: int = 384) -> torch.Tensor:
    """AᵀA (n×n, float64) from its upper block-triangle: panels of `panel` columns times the columns to their right,
    mirrored. For n = 1536 this does 10/16 of the full product's work (faster than A.T @ A on CPU too)."""
    n = A.shape[1]
    if n <= panel:
        return (A.T @ A).double()
    G = A.new_empty(n, n, dtype=torch.float64)
    for i in range(0, n, panel):
        g = (A[:, i:i + panel].T @ A[:, i:]).double()
        G[i:i + panel, i:] = g
        G[i:, i:i + panel] = g.T
    return G


def solve_normal_equations(gram: torch.Tensor, cross: torch.Tensor,
                           ridge: float = PruneConfig.ridge) -> tuple[torch.Tensor, float]:
    """Solve G Xᵀ = C for X (d, k) by Cholesky in float64.

    If G is singular, add ridge·mean(diag G)·I (×10 until it factorises), log it and return the ridge
    actually used so the caller can record it. Never falls back silently.
    """
    G, C = gram.double(), cross.double()
    k = G.shape[0]
    if k == 0:
        return C.new_zeros(C.shape[1], 0), 0.0
    L, info = torch.linalg.cholesky_ex(G)
    used = 0.0
    if int(info) != 0:
        scale = float(G.diagonal().mean()) or 1.0
        used = ridge
        eye = torch.eye(k, dtype=G.dtype, device=G.device)
        for _ in range(12):
            L, info = torch.linalg.cholesky_ex(G + used * scale * eye)
            if int(info) == 0:
                break
            used *= 10.0
        else:
            raise RuntimeError(f"normal equations ({k}×{k}) not positive definite even with ridge {used:g}")
        log.warning("KPWT: AᵀA (%d×%d) is singular; solved with ridge %.1e·mean(diag)", k, k, used)
    return torch.cholesky_solve(C, L).T.contiguous(), used
