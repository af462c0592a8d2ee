"""leaklib.optim.BatchedLBFGS: PyTorch's L-BFGS, per problem, for many problems at once."""

from __future__ import annotations

import pytest
import torch

from leaklib.optim import BatchedLBFGS

T, D = 5, 30


@pytest.fixture
def problems():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(T, D, D, generator=g, dtype=torch.float64)
    A = A @ A.transpose(1, 2) / D + 0.1 * torch.eye(D, dtype=torch.float64)
    b = torch.randn(T, D, generator=g, dtype=torch.float64)

    def f(z, i):  # a non-quadratic objective: quadratic plus a quartic term
        return 0.5 * z @ A[i] @ z - b[i] @ z + 0.1 * (z**4).sum()

    def closure(z):
        z = z.detach().requires_grad_()
        loss = torch.stack([f(z[i], i) for i in range(T)])
        (grad,) = torch.autograd.grad(loss.sum(), z)
        return loss.detach(), grad

    return f, closure, torch.randn(T, D, generator=g, dtype=torch.float64)


def test_matches_torch_lbfgs_per_problem(problems):
    f, closure, z0 = problems
    opt = BatchedLBFGS(T, D, history_size=7, dtype=torch.float64)  # a small history, so the ring buffer wraps
    z = z0.clone()
    for _ in range(5):
        z, _ = opt.step(z, closure)
    for i in range(T):
        p = z0[i].clone().requires_grad_()
        ref = torch.optim.LBFGS([p], lr=1, history_size=7)

        def cl(p=p, i=i, ref=ref):
            ref.zero_grad()
            loss = f(p, i)
            loss.backward()
            return loss

        for _ in range(5):
            ref.step(cl)
        assert torch.allclose(p.detach(), z[i], atol=1e-10)
        assert int(ref.state[p]["func_evals"]) == int(opt.func_evals[i])


def test_masked_problems_do_not_move_and_others_are_unaffected(problems):
    _, closure, z0 = problems
    mask = torch.tensor([True, False, True, False, True])
    a = BatchedLBFGS(T, D, dtype=torch.float64)
    za, _ = a.step(z0.clone(), closure, mask)
    assert torch.equal(za[~mask], z0[~mask])
    b = BatchedLBFGS(T, D, dtype=torch.float64)
    zb, _ = b.step(z0.clone(), closure)
    assert torch.allclose(za[mask], zb[mask], atol=1e-12)


def test_reset_and_subset(problems):
    _, closure, z0 = problems
    opt = BatchedLBFGS(T, D, dtype=torch.float64)
    z, _ = opt.step(z0.clone(), closure)
    opt.S[0] = float("nan")  # a diverged trajectory's history must not leak through reset
    opt.reset(torch.tensor([True, False, False, False, False]))
    assert int(opt.count[0]) == 0 and int(opt.n_iter[0]) == 0 and not torch.isnan(opt.S).any()
    z, _ = opt.step(z, closure)
    assert torch.isfinite(z).all()
    opt.subset(torch.tensor([4, 2]))
    assert opt.S.shape[0] == 2 and opt.d.shape == (2, D)


def test_stop_below_freezes_converged_problems(problems):
    _, closure, z0 = problems
    loss0, _ = closure(z0)
    opt = BatchedLBFGS(T, D, dtype=torch.float64)
    threshold = float(loss0.sort().values[2])  # the two smallest start below it
    z, start = opt.step(z0.clone(), closure, stop_below=threshold)
    frozen = loss0 < threshold
    assert torch.equal(z[frozen], z0[frozen]) and not torch.equal(z[~frozen], z0[~frozen])
    assert torch.equal(start, loss0)


def test_a_problem_that_reaches_stop_below_mid_step_stops_iterating(problems):
    _, closure, z0 = problems
    free = BatchedLBFGS(T, D, dtype=torch.float64)
    z_free, _ = free.step(z0.clone(), closure)
    loss_free, _ = closure(z_free)
    threshold = float(loss_free.median())  # about half the problems get below it during the step
    opt = BatchedLBFGS(T, D, dtype=torch.float64)
    z, _ = opt.step(z0.clone(), closure, stop_below=threshold)
    loss, _ = closure(z)
    early = opt.func_evals < free.func_evals
    assert early.any() and (loss[early] < threshold).all()
    assert torch.equal(z[~early], z_free[~early])  # the others took exactly the unconstrained step
