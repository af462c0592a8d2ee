"""What a federated client shares, and the closed forms of chapter 1.

- FedSGD (McMahan et al. 2017): the client sends the gradient of its batch's *mean* cross-entropy,
  one tensor per parameter in ``model.parameters()`` order (:func:`fedsgd_gradients`).
- FedAvg: the client runs ``K`` local SGD steps with learning rate ``eta`` and sends the weight difference
  ``W_0 - W_K`` (:func:`fedavg_update`); Geng et al. (2021) divide it by ``eta`` to read it like a gradient.
- Chapter 1's closed forms for softmax cross-entropy, ``L = -log p_y`` with ``p = softmax(z)`` and ``z = W a + b``:

  .. math::  \\partial L / \\partial z = p - e_y, \\qquad
             \\partial L / \\partial W = (p - e_y)\\, a^\\top, \\qquad
             \\partial L / \\partial b = p - e_y,

  averaged over the batch for the mean loss (:func:`logit_gradient`, :func:`last_layer_gradients`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .models import last_linear

__all__ = [
    "fedsgd_gradients",
    "fedavg_update",
    "logit_gradient",
    "last_layer_gradients",
    "check_update",
]


def _check_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a 4-D image tensor (batch, channels, height, width); got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")
    _check_labels(y, x.shape[0])


def _check_labels(y: torch.Tensor, batch: int, num_classes: int | None = None) -> None:
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.dtype != torch.int64:
        desc = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a 1-D int64 tensor of class indices; got {desc}")
    if y.shape[0] != batch:
        raise ValueError(f"y has {y.shape[0]} labels but the batch has {batch} samples")
    if batch < 1:
        raise ValueError("the batch is empty; a client needs at least one sample")
    if num_classes is not None and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"y holds labels outside [0, {num_classes}): min {int(y.min())}, max {int(y.max())}")


def fedsgd_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The FedSGD update: ``grad_W mean_i CE(f(x_i), y_i)`` for every parameter, in ``model.parameters()`` order.

    The model is used in whatever mode it is in (call ``model.train()``/``eval()`` first) and is not modified;
    the returned tensors are detached copies.
    """
    _check_batch(model, x, y)
    params = [p for p in model.parameters()]
    logits = model(x)
    _check_labels(y, x.shape[0], logits.shape[-1])
    loss = F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, params)
    return [g.detach().clone() for g in grads]


def fedavg_update(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    local_steps: int,
    lr: float,
    batch_size: int | None = None,
) -> list[torch.Tensor]:
    """The FedAvg update ``W_0 - W_K`` after ``K = local_steps`` SGD steps with learning rate ``lr``.

    Step ``k`` uses the whole local dataset (``batch_size=None``) or its ``k``-th mini-batch of ``batch_size``
    samples, taken in order and cycling through the data (no shuffling, so the update is reproducible).
    Each step minimises the mean cross-entropy of its (mini-)batch:
    ``W_{k+1} = W_k - lr * grad mean CE(W_k; batch_k)``. With ``local_steps=1`` and no mini-batches the update
    equals ``lr`` times :func:`fedsgd_gradients`, which is how Geng et al. (2021) relate FedAvg to FedSGD.
    The model itself is not modified.
    """
    _check_batch(model, x, y)
    if not isinstance(local_steps, int) or isinstance(local_steps, bool) or local_steps < 1:
        raise ValueError(f"local_steps must be a positive int; got {local_steps!r}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(f"lr must be a positive number; got {lr!r}")
    n = x.shape[0]
    if batch_size is None:
        batch_size = n
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an int in [1, {n}] (the client's sample count); got {batch_size!r}")

    names = [name for name, _ in model.named_parameters()]
    start = [p.detach().clone() for p in model.parameters()]
    weights = [w.clone() for w in start]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    batches_per_epoch = -(-n // batch_size)
    for step in range(local_steps):
        lo = (step % batches_per_epoch) * batch_size
        xb, yb = x[lo : lo + batch_size], y[lo : lo + batch_size]
        leaves = [w.requires_grad_(True) for w in weights]
        state = {**dict(zip(names, leaves, strict=True)), **buffers}
        logits = functional_call(model, state, (xb,))
        if step == 0:
            _check_labels(y, n, logits.shape[-1])
        grads = torch.autograd.grad(F.cross_entropy(logits, yb), leaves)
        weights = [(w - lr * g).detach() for w, g in zip(leaves, grads, strict=True)]
    return [w0 - wk for w0, wk in zip(start, weights, strict=True)]


def logit_gradient(logits: torch.Tensor, y: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``dL/dz`` in closed form: ``softmax(z) - onehot(y)`` per sample, divided by ``B`` for the mean loss.

    ``logits`` is ``(B, C)``; ``reduction="sum"`` gives the per-sample rows ``p_b - e_{y_b}`` themselves.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a 2-D tensor (batch, classes); got {getattr(logits, 'shape', logits)}")
    _check_labels(y, logits.shape[0], logits.shape[1])
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r} is not valid; choose 'mean' or 'sum'")
    delta = torch.softmax(logits, dim=1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return delta / logits.shape[0] if reduction == "mean" else delta


def last_layer_gradients(
    features: torch.Tensor, logits: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last Linear layer's gradient of the mean cross-entropy, in closed form.

    With ``a_b`` the layer's input for sample ``b`` (``features``, shape ``(B, d)``) and ``p_b = softmax(z_b)``:
    ``dL/dW = (1/B) sum_b (p_b - e_{y_b}) a_b^T`` (shape ``(C, d)``) and ``dL/db = (1/B) sum_b (p_b - e_{y_b})``.
    For one sample the rows of ``dL/dW`` are ``(p_i - [i = y]) a``: with ``a >= 0`` only the true class's row is
    negative (Zhao et al. 2020, iDLG, Sec. 3).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError(f"features must be a 2-D tensor (batch, d); got {getattr(features, 'shape', features)}")
    if features.shape[0] != getattr(logits, "shape", (None,))[0]:
        raise ValueError(f"features has {features.shape[0]} rows but logits has {logits.shape[0]}")
    delta = logit_gradient(logits, y)
    return delta.T @ features, delta.sum(0)


def check_update(model: nn.Module, update: list[torch.Tensor] | tuple[torch.Tensor, ...], *,
                 argument: str = "target_grads") -> None:
    """Check that ``update`` has one tensor per parameter of ``model``, in order, with matching shapes.

    The error names the first parameter that does not match, so a gradient from another model (or in another
    order) is caught at the boundary rather than deep inside an attack.
    """
    if not isinstance(update, (list, tuple)) or not all(isinstance(g, torch.Tensor) for g in update):
        raise TypeError(f"{argument} must be a list of tensors, one per model parameter; got {type(update).__name__}")
    named = list(model.named_parameters())
    if len(update) != len(named):
        raise ValueError(f"{argument} has {len(update)} tensors but the model has {len(named)} parameters")
    for i, ((name, p), g) in enumerate(zip(named, update, strict=True)):
        if g.shape != p.shape:
            raise ValueError(
                f"{argument}[{i}] has shape {tuple(g.shape)} but parameter {name!r} has shape {tuple(p.shape)}"
            )
    last_linear(model)
