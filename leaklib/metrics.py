"""How good a reconstruction is: MSE, PSNR, SSIM, label accuracy, fidelity, and batch matching.

MSE is computed on the raw reconstruction, as iDLG does (``mean((dummy - x)^2)`` per image). PSNR and SSIM come from
scikit-image (``skimage.metrics``) on images clipped to their [0, 1] display range.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["FIDELITY_THRESHOLDS", "mse", "psnr", "ssim", "label_accuracy", "instance_accuracy", "fidelity",
           "match_batch"]

FIDELITY_THRESHOLDS = (1e-2, 5e-3, 1e-3, 5e-4, 1e-4)  # iDLG's Figure 1


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("reconstruction and truth must be tensors")
    if a.shape != b.shape:
        raise ValueError(f"reconstruction has shape {tuple(a.shape)} but truth has shape {tuple(b.shape)}")
    if a.dim() < 3:
        raise ValueError(f"expected images (..., C, H, W); got shape {tuple(a.shape)}")
    return a.detach().double().cpu(), b.detach().double().cpu()


def mse(reconstruction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error over ``(C, H, W)``: shape ``reconstruction.shape[:-3]``."""
    a, b = _pair(reconstruction, truth)
    return ((a - b) ** 2).mean(dim=(-3, -2, -1))


def _per_image(fn, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lead = a.shape[:-3]
    flat_a = a.clamp(0, 1).reshape(-1, *a.shape[-3:]).numpy()
    flat_b = b.clamp(0, 1).reshape(-1, *b.shape[-3:]).numpy()
    values = [fn(x.transpose(1, 2, 0), y.transpose(1, 2, 0)) for x, y in zip(flat_a, flat_b, strict=True)]
    return torch.tensor(values, dtype=torch.float64).reshape(lead)


def psnr(reconstruction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (``skimage.metrics.peak_signal_noise_ratio``, data range 1); ``inf`` for a perfect match."""
    from skimage.metrics import peak_signal_noise_ratio

    def one(x: np.ndarray, y: np.ndarray) -> float:
        return float("inf") if np.array_equal(x, y) else peak_signal_noise_ratio(y, x, data_range=1.0)

    return _per_image(one, *_pair(reconstruction, truth))


def ssim(reconstruction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (``skimage.metrics.structural_similarity``, data range 1, Gaussian-free 7x7 window)."""
    from skimage.metrics import structural_similarity

    def one(x: np.ndarray, y: np.ndarray) -> float:
        return float(structural_similarity(y, x, data_range=1.0, channel_axis=2))

    return _per_image(one, *_pair(reconstruction, truth))


def label_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of labels predicted exactly (elementwise; shapes must agree)."""
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted has shape {tuple(predicted.shape)} but truth has shape {tuple(truth.shape)}")
    return float((predicted.cpu() == truth.cpu()).double().mean())


def instance_accuracy(predicted_counts: torch.Tensor, true_counts: torch.Tensor) -> float:
    """Batch label restoration's instance accuracy, ``sum_c min(khat_c, k_c) / B`` (Ma et al. 2023, iLRG).

    Counts are per class; ``B`` is the true batch size ``sum_c k_c``. 1.0 means the batch's labels came back exactly
    (the "exact batch"); each wrongly restored sample costs ``1/B``.
    """
    p, t = torch.as_tensor(predicted_counts).cpu(), torch.as_tensor(true_counts).cpu()
    if p.shape != t.shape or p.dim() != 1:
        raise ValueError(f"predicted_counts {tuple(p.shape)} and true_counts {tuple(t.shape)} must be equal 1-D shapes")
    if bool((p < 0).any()) or bool((t < 0).any()) or int(t.sum()) < 1:
        raise ValueError("counts must be non-negative and the true batch non-empty")
    return float(torch.minimum(p, t).sum()) / float(t.sum())


def fidelity(mses: torch.Tensor, thresholds: Sequence[float] = FIDELITY_THRESHOLDS) -> dict[float, float]:
    """iDLG's fidelity: for each MSE threshold, the share of trials whose MSE is below it."""
    m = torch.as_tensor(mses, dtype=torch.float64).flatten()
    if m.numel() == 0:
        raise ValueError("mses is empty")
    return {float(t): float((m < t).double().mean()) for t in thresholds}


def match_batch(reconstruction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The order of ``reconstruction`` that best matches ``truth`` (Hungarian assignment on pairwise MSE).

    A batch comes back in no particular order; ``reconstruction[match_batch(reconstruction, truth)]`` lines each
    reconstruction up with its private image (``scipy.optimize.linear_sum_assignment``).
    """
    from scipy.optimize import linear_sum_assignment

    a, b = _pair(reconstruction, truth)
    if a.dim() != 4:
        raise ValueError(f"expected one batch (B, C, H, W); got shape {tuple(a.shape)}")
    cost = ((b[:, None] - a[None]) ** 2).mean(dim=(-3, -2, -1)).numpy()  # cost[i, j]: truth i vs recon j
    rows, cols = linear_sum_assignment(cost)
    return torch.as_tensor(cols[np.argsort(rows)], dtype=torch.long)
