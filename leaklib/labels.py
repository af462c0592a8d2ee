"""What the server infers about the labels from a client's update.

Chapter 3: :func:`idlg`, the label of a *single* sample read off the last layer's gradient (Zhao, Mopuri and
Bilen 2020, "iDLG: Improved Deep Leakage from Gradients", Sec. 3). For one sample,
``dL/db = p - e_y`` and ``dL/dW = (p - e_y) a^T`` (chapter 1): the true class is the only negative entry of the
bias gradient, and the only row of ``dL/dW`` whose sign pattern is opposite to all the others.

Chapter 4: :func:`restore_labels`, the label *counts* of a whole batch (duplicates allowed) from a FedSGD gradient
or a FedAvg weight update, by five methods behind one interface (:data:`LABEL_METHODS`). With ``g_W`` (``C x d``)
and ``g_b`` the last layer's gradient of the mean loss over ``B`` samples with features ``a_b`` and softmax ``p_b``,

.. math::  g_W = \\tfrac{1}{B} \\sum_b (p_b - e_{y_b})\\, a_b^\\top,
           \\qquad g_b = \\tfrac{1}{B} \\sum_b (p_b - e_{y_b}).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .gradients import check_update
from .models import last_layer_inputs, last_linear
from .utils import check_choice

__all__ = ["LABEL_METHODS", "idlg", "last_layer_update", "restore_labels", "yin_counts", "llg_counts", "geng_counts",
           "ilrg_counts", "label_counts", "counts_to_labels", "round_counts"]

LABEL_METHODS = ("idlg", "yin", "llg", "geng", "ilrg")

_BATCH_HINT = ("iDLG's rule needs the gradient of a single sample; for a batch, restore label counts with the "
               "batch methods of chapter 4 (GradInversion, Geng et al., LLG, iLRG)")


def last_layer_update(
    model: nn.Module, target_grads: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The last Linear layer's ``(dW, db)`` inside a full update (``db`` is ``None`` without a bias)."""
    check_update(model, target_grads)
    layer = last_linear(model)
    index = {id(p): i for i, p in enumerate(model.parameters())}
    dW = target_grads[index[id(layer.weight)]]
    db = target_grads[index[id(layer.bias)]] if layer.bias is not None else None
    return dW.detach(), (db.detach() if db is not None else None)


def idlg(model: nn.Module, target_grads: Sequence[torch.Tensor], *, batch_size: int = 1, strict: bool = True) -> int:
    """The label of the one sample behind ``target_grads`` (iDLG, Zhao et al. 2020).

    - With a bias: ``argmin_i dL/db_i``, since ``dL/db = p - e_y`` is negative only at ``y`` (any activation).
    - Without: ``dL/dW = (p - e_y) a^T`` has rank one; its left factor ``u`` is proportional to ``p - e_y``, so
      ``y`` is the one entry of ``u`` whose sign differs from all others. With non-negative features this is the
      paper's rule, the row with the smallest (only negative) sum; it also holds for features of either sign.
      With two classes there is no "odd one out" and the paper's row-sum rule is used.

    A batch (``batch_size > 1``, or a gradient whose structure is not that of one sample) is a ``ValueError``
    pointing to the batch methods. ``strict=False`` is for a single sample's gradient that a defense perturbed
    (noise, pruning, clipping; chapter 6): the rule's best guess is returned instead of an error - the bias
    gradient's argmin, or without a bias the row of ``dW`` with the smallest sum (the paper's rule).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if batch_size > 1:
        raise ValueError(f"batch_size={batch_size}: {_BATCH_HINT}")
    dW, db = last_layer_update(model, target_grads)
    if not strict:
        return int(db.argmin()) if db is not None else int(dW.sum(1).argmin())
    if db is not None:
        negative = int((db < 0).sum())
        if negative != 1:
            raise ValueError(f"the bias gradient has {negative} negative entries, not one: this is not the "
                             f"gradient of a single sample. {_BATCH_HINT}")
        return int(db.argmin())
    sv = torch.linalg.svdvals(dW.double())
    if sv[0] == 0 or (len(sv) > 1 and sv[1] > 1e-3 * sv[0]):
        raise ValueError(f"the last layer's weight gradient is not rank one: this is not the gradient of a single "
                         f"sample. {_BATCH_HINT}")
    if dW.shape[0] == 2:
        return int(dW.sum(1).argmin())
    u = torch.linalg.svd(dW.double(), full_matrices=False).U[:, 0]
    positive = u > 0
    minority = positive if int(positive.sum()) * 2 < len(u) else ~positive
    if int(minority.sum()) != 1:
        raise ValueError(f"no single class stands out in the weight gradient's sign pattern. {_BATCH_HINT}")
    return int(torch.nonzero(minority)[0, 0])


def label_counts(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """How many samples of each class a batch holds: ``(num_classes,)`` int64 (``torch.bincount``)."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.dtype != torch.int64:
        raise ValueError(f"y must be a 1-D int64 tensor of class indices; got {getattr(y, 'shape', type(y))}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"y holds labels outside [0, {num_classes}): min {int(y.min())}, max {int(y.max())}")
    return torch.bincount(y.cpu(), minlength=num_classes)


def counts_to_labels(counts: torch.Tensor) -> torch.Tensor:
    """The sorted label vector of a batch with these per-class ``counts`` (counts ``[2, 0, 0, 1]`` -> ``[0, 0, 3]``)."""
    counts = torch.as_tensor(counts)
    if counts.dim() != 1 or bool((counts < 0).any()):
        raise ValueError(f"counts must be a 1-D tensor of non-negative integers; got {counts!r}")
    return torch.repeat_interleave(torch.arange(len(counts)), counts.long().cpu())


def round_counts(estimate: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Real-valued count estimates -> non-negative integers that sum to ``batch_size``.

    Negative estimates are clipped to zero and the rest floored; the missing samples then go, one at a time, to the
    class whose estimate exceeds its integer count the most (largest remainder), and any surplus is taken, one at a
    time, from the class whose integer count exceeds its estimate the most.
    """
    k = np.clip(np.nan_to_num(estimate.detach().double().cpu().numpy(), nan=0.0, posinf=batch_size, neginf=0.0),
                0, batch_size)
    counts = np.floor(k).astype(np.int64)
    while counts.sum() < batch_size:
        counts[np.argmax(k - counts)] += 1
    while counts.sum() > batch_size:
        over = np.where(counts > 0, counts - k, -np.inf)
        counts[np.argmax(over)] -= 1
    return torch.from_numpy(counts)


def _check_positive(name: str, value: object, kind: type = int) -> None:
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok or not value > 0:
        raise ValueError(f"{name} must be a positive {'number' if kind is float else 'int'}; got {value!r}")


def restore_labels(
    model: nn.Module,
    update: Sequence[torch.Tensor],
    batch_size: int,
    *,
    method: str = "geng",
    lr: float | None = None,
    local_steps: int = 1,
    image_shape: tuple[int, int, int] | None = None,
    num_dummy: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """The per-class label counts ``(C,)`` (int64, non-negative, summing to ``batch_size``) behind a client's update.

    Args:
        model: the model the client started from (the server's copy, ``W_0``).
        update: a FedSGD gradient (:func:`leaklib.gradients.fedsgd_gradients`), or with ``lr`` a FedAvg weight update
            ``W_0 - W_K`` (:func:`leaklib.gradients.fedavg_update`) after ``local_steps`` local SGD steps.
        batch_size: ``B``, the number of samples behind the update (the server is told it, as in the papers).
        method: one of :data:`LABEL_METHODS`:

            - ``"idlg"`` (Zhao et al. 2020): the sign rule of chapter 3, ``B = 1`` only.
            - ``"yin"`` (Yin et al. 2021, GradInversion, Sec. 3.2): the ``B`` classes whose rows of ``g_W`` have the
              smallest minima. Assumes unique labels and non-negative features.
            - ``"llg"`` (Wainakh et al. 2022, LLG, its simple variant): classes with a negative row sum
              ``s_i = sum_j g_W[i, j]`` are present; each chosen label adds the impact
              ``m = (1 + 1/C) / B * sum_{s_i < 0} s_i`` back to its class, and the most negative class is chosen
              until ``B`` labels are out. Assumes non-negative features.
            - ``"geng"`` (Geng et al. 2021, Eq. 7, zero-shot): with ``O_b = sum_j a_b[j]``, ``s_i`` sums to
              ``(1/B) sum_b (p_{b,i} - [y_b = i]) O_b``; replacing ``p_b`` and ``O_b`` by their means ``pbar`` and
              ``Obar`` over ``num_dummy`` random inputs gives
              ``k_i = B pbar_i - B s_i / (Obar S)`` for ``S`` local steps (FedAvg reads ``(W_0 - W_K) / lr`` as the
              gradient). Assumes non-negative features and a model that treats the batch like random inputs
              (untrained or barely trained).
            - ``"ilrg"`` (Ma et al. 2023, iLRG): class embeddings ``e_j = g_W[j] / g_b[j]``, their probabilities
              ``P_j = softmax(W e_j + b)``, and the least-squares solution of ``sum_j k_j P_j[i] - k_i = B g_b[i]``
              with ``sum_j k_j = B``. Needs a bias; features of either sign are fine.

            Real-valued estimates are rounded by :func:`round_counts`.
        lr: the clients' local learning rate when ``update`` is a FedAvg weight update (``None``: a gradient).
        local_steps: ``S``, the local steps behind a FedAvg update (``1`` for FedSGD). All methods read
            ``update / (lr * S)`` as the batch gradient.
        image_shape: ``(C, H, W)`` of the inputs, for the dummy inputs of ``geng`` and the check that the features are
            non-negative (default: ``model.input_shape``, set by :func:`leaklib.models.build_model`).
        num_dummy: random ``U(0, 1)`` inputs used to estimate ``pbar`` and ``Obar`` (``geng``).
        seed: seeds those inputs.

    A method whose assumption does not hold warns (``UserWarning``) and names the assumption; ``ilrg`` without a bias
    and ``idlg`` with ``B > 1`` cannot be computed at all and raise ``ValueError``.
    """
    key = check_choice("method", method, LABEL_METHODS)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (the samples behind the update); got {batch_size!r}")
    _check_positive("local_steps", local_steps)
    _check_positive("num_dummy", num_dummy)
    if lr is not None:
        _check_positive("lr", lr, float)
    elif local_steps != 1:
        raise ValueError(f"local_steps={local_steps} describes a FedAvg update: pass the clients' learning rate lr too")
    update = list(update) if isinstance(update, (list, tuple)) else update
    dW, db = last_layer_update(model, update)
    scale = (lr if lr is not None else 1.0) * local_steps
    gW, gb = dW.double() / scale, (db.double() / scale if db is not None else None)
    num_classes = gW.shape[0]
    B = batch_size

    _check_rank(gW, B, local_steps)
    if key == "idlg":
        if B != 1:
            raise ValueError(f"batch_size={B}: iDLG's sign rule reads a single sample; choose one of the batch "
                             f"methods {LABEL_METHODS[1:]}")
        counts = torch.zeros(num_classes, dtype=torch.long)
        counts[idlg(model, [g / scale for g in update])] = 1
        return counts
    if key == "ilrg":
        layer = last_linear(model)
        if gb is None:
            raise ValueError("method='ilrg' needs the last layer's bias gradient, and this model's last Linear layer "
                             "has no bias (iLRG's assumption); use 'geng', 'llg' or 'yin'")
        return ilrg_counts(gW, gb, layer.weight.detach(), layer.bias.detach(), B)

    shape = image_shape if image_shape is not None else getattr(model, "input_shape", None)
    features = None
    if shape is not None:
        features, probs = _dummy_pass(model, shape, num_dummy, seed)
        if bool((features < 0).any()):
            warnings.warn(f"method={key!r} assumes non-negative inputs to the last layer (ReLU or sigmoid features); "
                          f"this model's take negative values (min {float(features.min()):.3g}), so its counts may "
                          f"be wrong", UserWarning, stacklevel=2)
    if key == "yin":
        if B > num_classes:
            warnings.warn(f"method='yin' assumes unique labels, but batch_size={B} exceeds the {num_classes} classes; "
                          "the ranking is repeated to fill the batch", UserWarning, stacklevel=2)
        return yin_counts(gW, B)
    if key == "llg":
        return llg_counts(gW, B)
    # geng
    if features is None:
        raise ValueError("method='geng' estimates pbar and Obar from dummy inputs: pass image_shape=(C, H, W) "
                         "(the model has no input_shape attribute)")
    return geng_counts(gW, probs.mean(0), features.sum(1).mean(), B)


@torch.no_grad()
def _dummy_pass(model: nn.Module, shape, num_dummy: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``a`` and softmax outputs of ``num_dummy`` random ``U(0, 1)`` inputs, in float64."""
    if not (isinstance(shape, (tuple, list)) and len(shape) == 3 and all(int(s) > 0 for s in shape)):
        raise ValueError(f"image_shape must be (C, H, W); got {shape!r}")
    param = next(model.parameters())
    gen = torch.Generator().manual_seed(int(seed))
    dummy = torch.rand(num_dummy, *(int(s) for s in shape), generator=gen).to(param.device, param.dtype)
    was_training = model.training
    model.eval()
    try:
        a, z = last_layer_inputs(model, dummy)
    finally:
        model.train(was_training)
    return a.flatten(1).double().cpu(), torch.softmax(z.double(), dim=-1).cpu()


def _check_rank(gW: torch.Tensor, B: int, local_steps: int) -> None:
    """``g_W`` is a sum of ``B`` rank-one terms per local step: a higher numerical rank means more samples."""
    if B >= min(gW.shape):
        return
    sv = torch.linalg.svdvals(gW)
    rank = int((sv > 1e-4 * sv[0]).sum()) if sv[0] > 0 else 0
    if rank > B * local_steps:
        raise ValueError(f"batch_size={B} disagrees with the update: the last layer's gradient has numerical rank "
                         f"{rank}, so it comes from at least {-(-rank // local_steps)} samples")


def yin_counts(gW: torch.Tensor, batch_size: int) -> torch.Tensor:
    """GradInversion's rule (Yin et al. 2021, Sec. 3.2): one sample for each of the ``B`` classes whose weight
    gradient rows have the smallest minima.

    With features ``a_b >= 0``, a row ``g_W[i] = (1/B) sum_b (p_{b,i} - [y_b = i]) a_b`` is non-negative unless class
    ``i`` is in the batch, so with unique labels the present classes are exactly those with a negative minimum.
    More than ``C`` samples repeat the ranking.
    """
    order = gW.double().min(dim=1).values.argsort()
    counts = torch.zeros(gW.shape[0], dtype=torch.long)
    for i in range(batch_size):
        counts[order[i % gW.shape[0]]] += 1
    return counts


def llg_counts(gW: torch.Tensor, batch_size: int) -> torch.Tensor:
    """LLG, its simple variant (Wainakh et al. 2022, Alg. 1).

    Row sums ``s_i = sum_j g_W[i, j]``; the classes with ``s_i < 0`` are present (the most negative first, at most
    ``B``), and each chosen label adds the impact ``m = (1 + 1/C) / B * sum_{s_i < 0} s_i`` to its class's ``s_i``;
    then the most negative class is chosen until ``B`` labels are out. When every class is present the negative
    sums nearly cancel against the positive ones, ``m`` is near 0, and the rule piles the labels on one class.
    """
    s = gW.double().sum(1).cpu()
    C = len(s)
    negative = s < 0
    impact = float(s[negative].sum()) / batch_size * (1 + 1 / C)
    counts = torch.zeros(C, dtype=torch.long)
    for i in s.argsort()[: min(batch_size, int(negative.sum()))].tolist():
        counts[i] += 1
        s[i] -= impact
    while int(counts.sum()) < batch_size:
        j = int(s.argmin())
        counts[j] += 1
        s[j] -= impact
    return counts


def geng_counts(gW: torch.Tensor, pbar: torch.Tensor, obar: float | torch.Tensor, batch_size: int) -> torch.Tensor:
    """Geng et al.'s zero-shot counts (2021, Eq. 7): ``k_i = B pbar_i - B s_i / Obar``, rounded (:func:`round_counts`).

    From ``s_i = sum_j g_W[i, j] = (1/B) sum_b (p_{b,i} - [y_b = i]) O_b`` with ``O_b = sum_j a_b[j]``: if every
    sample had the softmax ``pbar`` and the summed feature ``Obar``, then ``s_i = Obar (pbar_i - k_i / B)``. It is
    exact when all samples share ``p_b`` and ``O_b``; :func:`restore_labels` estimates both from random inputs.
    ``g_W`` is the batch gradient (a FedAvg update divided by ``lr * S``).
    """
    obar = float(obar)
    if not obar > 0:
        raise ValueError(f"Geng et al.'s estimator divides by the mean summed feature Obar, which is {obar:.3g} here "
                         "(it assumes non-negative, non-zero features)")
    B = batch_size
    return round_counts(B * pbar.double().cpu() - B * gW.double().sum(1).cpu() / obar, B)


def ilrg_counts(gW: torch.Tensor, gb: torch.Tensor, W: torch.Tensor, b: torch.Tensor, batch_size: int) -> torch.Tensor:
    """iLRG (Ma et al. 2023, Sec. 4): counts from the bias gradient and the probabilities of class embeddings.

    ``e_j = g_W[j] / g_b[j]`` is a weighted mean of the features in the batch, dominated by class ``j``'s samples when
    ``j`` is present; ``P_j = softmax(W e_j + b)`` stands for their softmax. Since
    ``B g_b[i] = sum_b p_{b,i} - k_i ~ sum_j k_j P_j[i] - k_i``, the counts solve (least squares)
    ``(P^T - I) k = B g_b`` together with ``sum_j k_j = B``, and are then rounded (:func:`round_counts`). Exact when
    the samples of each class share their features; features of either sign are fine.
    """
    W, b = W.double().cpu(), b.double().cpu()
    gW, gb = gW.double().cpu(), gb.double().cpu()
    C = len(gb)
    tiny = gb.abs() <= 1e-12 * max(float(gb.abs().max()), 1e-300)
    emb = gW / torch.where(tiny, torch.ones_like(gb), gb)[:, None]
    P = torch.softmax(emb @ W.T + b, dim=-1)
    P[tiny] = 0.0  # no signal for this class: its samples (if any) are not modelled
    A = torch.cat([P.T - torch.eye(C, dtype=P.dtype), torch.ones(1, C, dtype=P.dtype)])
    r = torch.cat([batch_size * gb, torch.tensor([float(batch_size)], dtype=P.dtype)])
    k = torch.linalg.lstsq(A, r[:, None], driver="gelsd").solution[:, 0]
    return round_counts(k, batch_size)
