"""KPWT: the normal-equation solver equals torch.linalg.lstsq; errors from accumulated sums are exact."""
import logging

import pytest
import torch

from kprune_lib.method.tuning import NormalEquations, solve_normal_equations, symmetric_gram


def _problem(seed=0, tokens=200, n=10, d=6):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(4, tokens // 4, n, generator=g)
    r = torch.randn(4, tokens // 4, d, generator=g)
    mask = (torch.rand(4, tokens // 4, generator=g) > 0.2).long()
    return a, r, mask


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-8), (torch.float32, 1e-4)])
def test_accumulated_solution_equals_lstsq(dtype, tol):
    a, r, mask = _problem()
    a, r = a.to(dtype), r.to(dtype)
    eqs = NormalEquations.zeros(a.shape[-1], r.shape[-1], "cpu")
    for i in range(4):  # batch by batch
        eqs.add(a[i:i + 1], r[i:i + 1], mask[i:i + 1])
    idx = torch.tensor([0, 2, 3, 7, 9])
    w, ridge = eqs.solve(idx)
    A = a[mask.bool()][:, idx].double()
    R = r[mask.bool()].double()
    expected = torch.linalg.lstsq(A, R).solution.T  # (d, k)
    torch.testing.assert_close(w, expected, rtol=tol, atol=tol * 1e-2)
    assert ridge == 0.0
    assert eqs.tokens == int(mask.sum())


def test_error_from_sums_equals_direct_residual():
    a, r, mask = _problem(1)
    a, r = a.double(), r.double()
    eqs = NormalEquations.zeros(a.shape[-1], r.shape[-1], "cpu")
    eqs.add(a, r, mask)
    idx = torch.tensor([1, 4, 5])
    w = torch.randn(r.shape[-1], 3, dtype=torch.float64)
    A, R = a[mask.bool()][:, idx].double(), r[mask.bool()].double()
    direct = float(((A @ w.T - R) ** 2).sum())
    assert eqs.error(w, idx) == pytest.approx(direct, rel=1e-9)
    w_opt, _ = eqs.solve(idx)
    assert eqs.error(w_opt, idx) <= eqs.error(w, idx)


def test_singular_system_uses_logged_ridge(caplog):
    a, r, mask = _problem(2)
    a[..., 3] = a[..., 2]  # duplicated unit: AᵀA singular
    eqs = NormalEquations.zeros(a.shape[-1], r.shape[-1], "cpu")
    eqs.add(a, r, mask)
    with caplog.at_level(logging.WARNING):
        w, ridge = eqs.solve(torch.arange(a.shape[-1]))
    assert ridge > 0
    assert "ridge" in caplog.text
    assert torch.isfinite(w).all()
    A, R = a[mask.bool()].double(), r[mask.bool()].double()
    best = torch.linalg.lstsq(A, R, driver="gelsd").solution.T
    # the ridge solution is (nearly) as good as the minimum-norm least-squares solution
    assert float(((A @ w.T - R) ** 2).sum()) == pytest.approx(float(((A @ best.T - R) ** 2).sum()), rel=1e-4)


def test_empty_selection_returns_empty_weight():
    w, ridge = solve_normal_equations(torch.zeros(0, 0), torch.zeros(0, 5))
    assert w.shape == (5, 0) and ridge == 0.0


@pytest.mark.parametrize("n,panel", [(10, 4), (12, 4), (7, 7), (9, 16)])
def test_symmetric_gram_equals_full_product(n, panel):
    a = torch.randn(50, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    g = symmetric_gram(a, panel=panel)
    assert g.dtype == torch.float64
    if n > panel:  # built from the upper block-triangle: exactly symmetric
        assert torch.equal(g, g.T)
    torch.testing.assert_close(g, a.T @ a, rtol=1e-12, atol=1e-12)


def test_damped_solve_is_the_regularised_least_squares():
    """(AᵀA + δI) W'ᵀ = AᵀR + δ W₀ᵀ minimises ‖AW'ᵀ − R‖² + δ‖W' − W₀‖² (brute force via an augmented lstsq)."""
    from kprune_lib.method.tuning import NormalEquations

    g = torch.Generator().manual_seed(0)
    A, R = torch.randn(1, 40, 6, generator=g), torch.randn(1, 40, 5, generator=g)
    W0 = torch.randn(5, 6, generator=g)
    eqs = NormalEquations.zeros(6, 5, "cpu")
    eqs.add(A, R, torch.ones(1, 40))
    idx = torch.arange(6)
    W, _ = eqs.solve(idx, damping=0.1, prior=W0)
    delta = 0.1 * float((A[0].double().T @ A[0].double()).diagonal().mean())
    aug_A = torch.cat([A[0].double(), delta ** 0.5 * torch.eye(6, dtype=torch.float64)])
    aug_R = torch.cat([R[0].double(), delta ** 0.5 * W0.double().T])
    expected = torch.linalg.lstsq(aug_A, aug_R).solution.T
    torch.testing.assert_close(W, expected, rtol=1e-5, atol=1e-6)  # batch products are float32
    plain, _ = eqs.solve(idx)
    assert (W - W0.double()).norm() < (plain - W0.double()).norm()  # shrunk toward the prior


def test_damped_kpwt_step_on_the_kept_dims_equals_augmented_lstsq():
    """The loop forms the normal equations on the kept dims only and calls kpwt_step with them: the damped solve's
    prior is the kept columns' current weights, and the written weights equal an augmented lstsq on those dims."""
    from kprune_lib.method.tuning import kpwt_step

    g = torch.Generator().manual_seed(3)
    width, hidden, idx = 8, 5, torch.tensor([0, 2, 5, 6])
    a = torch.randn(2, 30, width, generator=g, dtype=torch.float64)
    r = torch.randn(2, 30, hidden, generator=g, dtype=torch.float64)
    proj = torch.nn.Linear(width, hidden).double()
    w_kept = proj.weight.detach()[:, idx].clone()
    eqs = NormalEquations.zeros(len(idx), hidden, "cpu")
    eqs.add(a[..., idx], r, torch.ones(2, 30))
    before, after, ridge = kpwt_step(proj, eqs, idx, damping=0.05)
    A, R = a[..., idx].reshape(-1, len(idx)), r.reshape(-1, hidden)
    delta = 0.05 * float((A.T @ A).diagonal().mean())
    aug_A = torch.cat([A, delta ** 0.5 * torch.eye(len(idx), dtype=torch.float64)])
    aug_R = torch.cat([R, delta ** 0.5 * w_kept.T])
    expected = torch.linalg.lstsq(aug_A, aug_R).solution.T
    torch.testing.assert_close(proj.weight[:, idx], expected, rtol=1e-9, atol=1e-10)
    dropped = torch.tensor([i for i in range(width) if i not in idx.tolist()])
    assert torch.equal(proj.weight[:, dropped], torch.zeros(hidden, len(dropped), dtype=torch.float64))
    assert ridge == 0.0 and after < before


def test_damped_solve_without_its_prior_says_what_is_missing():
    eqs = NormalEquations.zeros(3, 2, "cpu")
    eqs.add(torch.randn(1, 10, 3), torch.randn(1, 10, 2), torch.ones(1, 10))
    with pytest.raises(ValueError, match="prior"):
        eqs.solve(damping=0.01)
