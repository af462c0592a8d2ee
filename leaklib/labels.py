"""What the server infers about the labels from a client's update.

Chapter 3: :func:`idlg`, the label of a *single* sample read off the last layer's gradient (Zhao, Mopuri and
Bilen 2020, "iDLG: Improved Deep Leakage from Gradients", Sec. 3). For one sample,
``dL/db = p - e_y`` and ``dL/dW = (p - e_y) a^T`` (chapter 1): the true class is the only negative entry of the
bias gradient, and the only row of ``dL/dW`` whose sign pattern is opposite to all the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .gradients import check_update
from .models import last_linear

__all__ = ["idlg", "last_layer_update"]

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


def idlg(model: nn.Module, target_grads: Sequence[torch.Tensor], *, batch_size: int = 1) -> int:
    """The label of the one sample behind ``target_grads`` (iDLG, Zhao et al. 2020).

    - With a bias: ``argmin_i dL/db_i``, since ``dL/db = p - e_y`` is negative only at ``y`` (any activation).
    - Without: ``dL/dW = (p - e_y) a^T`` has rank one; its left factor ``u`` is proportional to ``p - e_y``, so
      ``y`` is the one entry of ``u`` whose sign differs from all others. With non-negative features this is the
      paper's rule, the row with the smallest (only negative) sum; it also holds for features of either sign.
      With two classes there is no "odd one out" and the paper's row-sum rule is used.

    A batch (``batch_size > 1``, or a gradient whose structure is not that of one sample) is a ``ValueError``
    pointing to the batch methods.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if batch_size > 1:
        raise ValueError(f"batch_size={batch_size}: {_BATCH_HINT}")
    dW, db = last_layer_update(model, target_grads)
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
