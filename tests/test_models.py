"""leaklib.models: DLG's LeNet exactly, the ReLU ConvNet, ResNet-18 for 32x32, seeds and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leaklib.models import build_model, convnet, last_layer_inputs, last_linear, lenet, resnet18


@pytest.mark.parametrize("channels, size, hidden", [(1, 28, 588), (3, 32, 768)])
def test_lenet_matches_dlg(channels, size, hidden):
    model = lenet(channels, 10, size, seed=0)
    convs = [m for m in model.body if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (channels, 12, (5, 5), (2, 2), (2, 2)),
        (12, 12, (5, 5), (2, 2), (2, 2)),
        (12, 12, (5, 5), (1, 1), (2, 2)),
    ]
    assert [type(m) for m in model.body] == [nn.Conv2d, nn.Sigmoid] * 3
    assert model.fc.in_features == hidden and model.hidden == hidden
    for p in model.parameters():  # every weight and bias ~ U(-0.5, 0.5)
        assert float(p.detach().min()) >= -0.5 and float(p.detach().max()) <= 0.5
    w = model.fc.weight.detach()
    assert abs(float(w.mean())) < 0.02 and abs(float(w.var()) - 1 / 12) < 0.01
    assert model(torch.rand(2, channels, size, size)).shape == (2, 10)


def test_same_seed_same_model_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = lenet(seed=7)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = lenet(seed=7)
    c = lenet(seed=8)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_convnet_relu_right_before_last_linear():
    model = convnet(3, 100, 32, seed=0)
    assert isinstance(model.body[-1], nn.ReLU) and model.fc.bias is not None
    features, logits = last_layer_inputs(model, torch.rand(4, 3, 32, 32))
    assert features.shape == (4, model.fc.in_features) and float(features.detach().min()) >= 0
    assert logits.shape == (4, 100)


def test_resnet18_for_32x32():
    model = resnet18(3, 100, 32, seed=0)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    model.eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    assert last_linear(model) is model.fc


def test_build_model_from_dataset():
    model = build_model("lenet", "mnist", seed=1)
    assert model.fc.in_features == 588 and model.fc.out_features == 10
    assert build_model("LeNet", "cifar100").fc.out_features == 100
    assert build_model("convnet", in_channels=1, num_classes=5, image_size=28).fc.out_features == 5


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: build_model("vgg16", "mnist"), r"name='vgg16'.*\['lenet', 'convnet', 'resnet18'\]"),
        (lambda: build_model("lenet"), "needs a dataset or explicit"),
        (lambda: build_model("lenet", "imagenet"), "name='imagenet'"),
        (lambda: lenet(0, 10, 28), "in_channels must be a positive int"),
        (lambda: lenet(seed=-3), "seed must be a non-negative int"),
        (lambda: resnet18(image_size=4), "image_size must be at least 8"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_model_without_final_linear_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="must end in an nn.Linear.*Conv2d"):
        last_linear(model)
