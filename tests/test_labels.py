"""leaklib.labels.idlg: exact on random models and images, with and without bias, sigmoid, ReLU and tanh."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leaklib.gradients import fedsgd_gradients
from leaklib.labels import idlg
from leaklib.models import convnet, lenet


def mlp(activation: type[nn.Module], bias: bool, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 24), activation(), nn.Linear(24, 10, bias=bias))


@pytest.mark.parametrize("activation", [nn.Sigmoid, nn.ReLU, nn.Tanh])
@pytest.mark.parametrize("bias", [True, False])
def test_idlg_is_exact_on_random_models_and_images(activation, bias):
    for seed in range(10):
        model = mlp(activation, bias, seed)
        x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        for label in range(10):
            grads = fedsgd_gradients(model, x, torch.tensor([label]))
            assert idlg(model, grads) == label


def test_idlg_on_the_books_models():
    for builder, size in ((lenet, 28), (convnet, 32)):
        model = builder(1, 10, size, seed=3)
        x = torch.rand(1, 1, size, size)
        for label in (0, 4, 9):
            assert idlg(model, fedsgd_gradients(model, x, torch.tensor([label]))) == label


def test_idlg_rejects_batches():
    model = lenet(1, 10, 28, seed=0)
    x = torch.rand(4, 1, 28, 28)
    grads = fedsgd_gradients(model, x, torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match="not the gradient of a single sample.*chapter 4"):
        idlg(model, grads)
    with pytest.raises(ValueError, match="batch_size=4.*chapter 4"):
        idlg(model, grads, batch_size=4)
    nobias = mlp(nn.ReLU, False, 0)
    grads = fedsgd_gradients(nobias, torch.rand(3, 1, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="not rank one"):
        idlg(nobias, grads)


def test_idlg_bad_input_names_the_parameter():
    model = lenet(1, 10, 28)
    grads = fedsgd_gradients(model, torch.rand(1, 1, 28, 28), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"target_grads\[7\] has shape \(5,\).*'fc.bias'"):
        idlg(model, [*grads[:-1], torch.zeros(5)])
    with pytest.raises(ValueError, match="must end in an nn.Linear"):
        idlg(nn.Sequential(nn.Conv2d(1, 2, 3)), [torch.zeros(2, 1, 3, 3), torch.zeros(2)])
