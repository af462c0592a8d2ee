"""leaklib.gradients: FedSGD and FedAvg updates, and chapter 1's closed forms against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leaklib.gradients import (
    check_update,
    fedavg_update,
    fedsgd_gradients,
    last_layer_gradients,
    logit_gradient,
)
from leaklib.models import convnet, last_layer_inputs, lenet


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 28, 28, generator=g), torch.tensor([3, 1, 3, 7])


def test_fedsgd_is_mean_ce_gradient_in_parameter_order(batch):
    x, y = batch
    model = lenet(1, 10, 28, seed=0)
    grads = fedsgd_gradients(model, x, y)
    assert [g.shape for g in grads] == [p.shape for p in model.parameters()]
    # the mean loss is the average of per-sample losses: the gradient is the average of per-sample gradients
    singles = [fedsgd_gradients(model, x[i : i + 1], y[i : i + 1]) for i in range(4)]
    for k, g in enumerate(grads):
        assert torch.allclose(g, sum(s[k] for s in singles) / 4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # the model is left untouched


def test_logit_gradient_closed_form_matches_autograd():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 6, 2, 2, 4])
    (auto,) = torch.autograd.grad(F.cross_entropy(z, y), z)
    assert torch.allclose(logit_gradient(z.detach(), y), auto, atol=1e-12)
    (auto_sum,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), z)
    assert torch.allclose(logit_gradient(z.detach(), y, reduction="sum"), auto_sum, atol=1e-12)


@pytest.mark.parametrize("builder", [lenet, convnet])
def test_last_layer_closed_form_matches_fedsgd(builder, batch):
    x, y = batch
    model = builder(1, 10, 28, seed=2).double()
    grads = fedsgd_gradients(model, x.double(), y)
    a, z = last_layer_inputs(model, x.double())
    dW, db = last_layer_gradients(a.detach(), z.detach(), y)
    assert torch.allclose(dW, grads[-2], atol=1e-12) and torch.allclose(db, grads[-1], atol=1e-12)


def test_single_sample_sign_structure():
    """With non-negative features only the true class's row of dL/dW is negative (iDLG, Sec. 3)."""
    model = lenet(1, 10, 28, seed=3)
    x = torch.rand(1, 1, 28, 28)
    for label in range(10):
        dW, db = fedsgd_gradients(model, x, torch.tensor([label]))[-2:]
        row_sums = dW.sum(1)
        assert int(row_sums.argmin()) == label and int((row_sums < 0).sum()) == 1
        assert int(db.argmin()) == label and int((db < 0).sum()) == 1


def test_fedavg_one_step_is_lr_times_fedsgd(batch):
    x, y = batch
    model = lenet(1, 10, 28, seed=4)
    before = [p.detach().clone() for p in model.parameters()]
    update = fedavg_update(model, x, y, local_steps=1, lr=0.1)
    for u, g in zip(update, fedsgd_gradients(model, x, y), strict=True):
        assert torch.allclose(u, 0.1 * g, atol=1e-6)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_fedavg_steps_and_minibatches_follow_sgd(batch):
    x, y = batch
    model = lenet(1, 10, 28, seed=5)
    update = fedavg_update(model, x, y, local_steps=3, lr=0.05, batch_size=2)
    # replay by hand: mini-batches [0:2], [2:4], [0:2]
    replica = lenet(1, 10, 28, seed=5)
    opt = torch.optim.SGD(replica.parameters(), lr=0.05)
    for lo in (0, 2, 0):
        opt.zero_grad()
        F.cross_entropy(replica(x[lo : lo + 2]), y[lo : lo + 2]).backward()
        opt.step()
    for u, p0, pk in zip(update, model.parameters(), replica.parameters(), strict=True):
        assert torch.allclose(u, p0.detach() - pk.detach(), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(local_steps=0, lr=0.1), "local_steps must be a positive int"),
        (dict(local_steps=1, lr=-1.0), "lr must be a positive number"),
        (dict(local_steps=1, lr=0.1, batch_size=9), r"batch_size must be an int in \[1, 4\]"),
    ],
)
def test_fedavg_bad_input(batch, kwargs, message):
    x, y = batch
    with pytest.raises(ValueError, match=message):
        fedavg_update(lenet(1, 10, 28), x, y, **kwargs)


@pytest.mark.parametrize(
    "x, y, message",
    [
        (torch.rand(28, 28), torch.tensor([1]), "x must be a 4-D image tensor"),
        (torch.rand(2, 1, 28, 28), torch.tensor([1]), "y has 1 labels but the batch has 2"),
        (torch.rand(1, 1, 28, 28), torch.tensor([1.0]), "y must be a 1-D int64 tensor"),
        (torch.rand(1, 1, 28, 28), torch.tensor([10]), r"labels outside \[0, 10\)"),
    ],
)
def test_fedsgd_bad_input(x, y, message):
    with pytest.raises(ValueError, match=message):
        fedsgd_gradients(lenet(1, 10, 28), x, y)


def test_check_update_names_first_mismatching_parameter(batch):
    x, y = batch
    model = lenet(1, 10, 28)
    grads = fedsgd_gradients(model, x, y)
    check_update(model, grads)
    with pytest.raises(ValueError, match="has 7 tensors but the model has 8 parameters"):
        check_update(model, grads[:-1])
    bad = list(grads)
    bad[2] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"target_grads\[2\] has shape \(3, 3\).*'body.2.weight'"):
        check_update(model, bad)
    with pytest.raises(TypeError, match="must be a list of tensors"):
        check_update(model, grads[0])
