"""The models a federated client trains: DLG's LeNet, a small ReLU ConvNet and ResNet-18 for 32x32 inputs.

Every builder takes a ``seed`` and returns the same weights for the same seed without touching the global
random state, so a "fresh model per trial" is ``build_model(..., seed=trial)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .utils import check_choice

__all__ = [
    "MODELS",
    "LeNet",
    "ConvNet",
    "lenet",
    "convnet",
    "resnet18",
    "build_model",
    "last_linear",
    "last_layer_inputs",
    "train_model",
    "accuracy",
]

MODELS = ("lenet", "convnet", "resnet18")


def _check_positive_int(argument: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{argument} must be a positive int; got {value!r}")
    return value


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class LeNet(nn.Module):
    """The "LeNet" of DLG (Zhu et al. 2019) and iDLG (Zhao et al. 2020), as in their official code.

    ``Conv(C->12, k5, s2, p2) - Sigmoid - Conv(12->12, k5, s2, p2) - Sigmoid - Conv(12->12, k5, s1, p2) - Sigmoid
    - flatten - Linear(hidden -> classes)`` with ``hidden = 12 * ceil(H/4) * ceil(W/4)``: 588 for 28x28 inputs and
    768 for 32x32. Sigmoid (twice differentiable everywhere) keeps the second-order gradient-matching problem smooth;
    its outputs lie in (0, 1), so the last layer's inputs are positive, which is what iDLG's label rule needs.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 100, image_size: int = 32) -> None:
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("image_size", image_size)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 12, kernel_size=5, stride=2, padding=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, stride=2, padding=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, stride=1, padding=2),
            nn.Sigmoid(),
        )
        side = _conv_out(_conv_out(image_size, 5, 2, 2), 5, 2, 2)
        self.hidden = 12 * side * side
        self.fc = nn.Linear(self.hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


class ConvNet(nn.Module):
    """A small ReLU ConvNet: three 3x3 convolutions, a ReLU hidden layer, and a Linear classifier (bias on).

    The last layer's inputs come straight out of a ReLU, so they are non-negative: the setting of the batch
    label-restoration methods (Yin et al. 2021; Geng et al. 2021; Wainakh et al. 2022).
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 100, image_size: int = 32, width: int = 32
    ) -> None:
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("image_size", image_size)
        _check_positive_int("width", width)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, 4 * width),
            nn.ReLU(),
        )
        self.fc = nn.Linear(4 * width, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block and restore the caller's random state afterwards."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def lenet(in_channels: int = 3, num_classes: int = 100, image_size: int = 32, seed: int = 0) -> LeNet:
    """DLG's LeNet with every weight and bias drawn from U(-0.5, 0.5), as in the official DLG/iDLG code."""
    with _seeded(seed):
        model = LeNet(in_channels, num_classes, image_size)
        with torch.no_grad():
            for p in model.parameters():
                p.uniform_(-0.5, 0.5)
    return model


def convnet(
    in_channels: int = 3, num_classes: int = 100, image_size: int = 32, seed: int = 0, width: int = 32
) -> ConvNet:
    """The ReLU ConvNet with PyTorch's default (Kaiming-uniform) initialisation."""
    with _seeded(seed):
        return ConvNet(in_channels, num_classes, image_size, width)


def resnet18(in_channels: int = 3, num_classes: int = 100, image_size: int = 32, seed: int = 0) -> nn.Module:
    """ResNet-18 adapted to 32x32 inputs (a 3x3 stride-1 first convolution and no max-pool, as for CIFAR).

    ``image_size`` is accepted for a uniform interface; the global average pool makes any size >= 8 work.
    """
    from torchvision.models import resnet18 as tv_resnet18

    _check_positive_int("in_channels", in_channels)
    _check_positive_int("num_classes", num_classes)
    if _check_positive_int("image_size", image_size) < 8:
        raise ValueError(f"image_size must be at least 8 for resnet18; got {image_size}")
    with _seeded(seed):
        model = tv_resnet18(weights=None, num_classes=num_classes)
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def build_model(
    name: str,
    dataset: str | None = None,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """Build ``name`` (one of :data:`MODELS`) for a dataset's shape and classes, or for explicit sizes.

    ``build_model("lenet", "mnist", seed=3)`` is the LeNet for 1x28x28 inputs and 10 classes; explicit
    ``in_channels``/``num_classes``/``image_size`` override what the dataset implies.
    """
    key = check_choice("name", name, MODELS)
    if dataset is not None:
        from .data import dataset_info

        info = dataset_info(dataset)
        in_channels = info.shape[0] if in_channels is None else in_channels
        num_classes = info.num_classes if num_classes is None else num_classes
        image_size = info.shape[1] if image_size is None else image_size
    missing = [n for n, v in (("in_channels", in_channels), ("num_classes", num_classes),
                              ("image_size", image_size)) if v is None]
    if missing:
        raise ValueError(f"build_model needs a dataset or explicit {', '.join(missing)}")
    builder = {"lenet": lenet, "convnet": convnet, "resnet18": resnet18}[key]
    model = builder(in_channels, num_classes, image_size, seed=seed)
    model.input_shape = (in_channels, image_size, image_size)  # what label restoration feeds its dummy inputs
    return model


def last_linear(model: nn.Module) -> nn.Linear:
    """Return the model's final ``nn.Linear`` layer (the classifier whose gradient leaks the labels).

    Raises ``ValueError`` when the last module with parameters is not an ``nn.Linear``: the label
    derivations of chapter 1 and the label-restoration methods all read that layer's gradient.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    last = None
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = module
    if not isinstance(last, nn.Linear):
        found = "no parameters at all" if last is None else type(last).__name__
        raise ValueError(
            f"model must end in an nn.Linear classifier (its gradient is what leaks the labels); "
            f"its last layer with parameters is {found}"
        )
    params = list(model.parameters())
    if params[-1] is not (last.bias if last.bias is not None else last.weight):
        raise ValueError("model's final nn.Linear must also be the last entry of model.parameters()")
    return last


def last_layer_inputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on ``x`` and return ``(a, z)``: the inputs ``a`` of its last Linear layer and the logits ``z``."""
    layer = last_linear(model)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return captured[-1], logits


def train_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` in place for ``steps`` SGD steps (momentum 0.9) on random mini-batches of ``(x, y)``.

    The "trained for N steps" model of chapter 4: a model that has learnt something, so that its softmax on a
    client's batch is no longer near uniform (the assumption of Geng et al.'s estimator). ``steps=0`` leaves the
    model untouched. Mini-batches are drawn with a generator seeded by ``seed``; the global random state is not used.
    Returns the model, in eval mode.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative int; got {steps!r}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(f"lr must be a positive number; got {lr!r}")
    _check_positive_int("batch_size", batch_size)
    if steps:
        param = next(model.parameters())
        gen = torch.Generator().manual_seed(int(seed))
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(y), (min(batch_size, len(y)),), generator=gen)
            loss = nn.functional.cross_entropy(model(x[idx].to(param.device)), y[idx].to(param.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256) -> float:
    """Share of ``x`` that ``model`` classifies as ``y`` (eval mode restored to what it was)."""
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    correct = 0
    for lo in range(0, len(y), batch_size):
        pred = model(x[lo : lo + batch_size].to(param.device)).argmax(-1).cpu()
        correct += int((pred == y[lo : lo + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(y))
