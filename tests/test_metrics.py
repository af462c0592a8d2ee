"""leaklib.metrics against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from leaklib import metrics


def test_mse_psnr_ssim():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 1, 28, 28, generator=g)
    noisy = truth + 0.1 * torch.randn(3, 1, 28, 28, generator=g)
    m = metrics.mse(noisy, truth)
    assert torch.allclose(m, ((noisy - truth) ** 2).mean(dim=(1, 2, 3)).double())
    p = metrics.psnr(noisy.clamp(0, 1), truth)
    expect = 10 * torch.log10(1 / metrics.mse(noisy.clamp(0, 1), truth))
    assert torch.allclose(p, expect, atol=1e-6)
    assert math.isinf(float(metrics.psnr(truth, truth)[0]))
    s = metrics.ssim(noisy, truth)
    assert torch.allclose(metrics.ssim(truth, truth), torch.ones(3, dtype=torch.float64))
    noisier = metrics.ssim(truth + 0.3 * torch.randn(3, 1, 28, 28, generator=g), truth)
    assert (noisier < s).all() and (s < 1).all()
    assert metrics.ssim(torch.rand(2, 4, 3, 1, 28, 28), torch.rand(2, 4, 3, 1, 28, 28)).shape == (2, 4, 3)


def test_fidelity_and_label_accuracy():
    f = metrics.fidelity(torch.tensor([1e-5, 2e-4, 3e-3, 1.0]))
    assert f == {0.01: 0.75, 0.005: 0.75, 0.001: 0.5, 0.0005: 0.5, 0.0001: 0.25}
    assert metrics.label_accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3])) == pytest.approx(2 / 3)


def test_match_batch_undoes_a_permutation():
    truth = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    perm = torch.tensor([3, 0, 4, 1, 2])
    recon = truth[perm] + 0.01
    order = metrics.match_batch(recon, truth)
    assert torch.allclose(recon[order], truth + 0.01)


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        metrics.mse(torch.rand(2, 1, 4, 4), torch.rand(3, 1, 4, 4))
    with pytest.raises(ValueError, match="empty"):
        metrics.fidelity(torch.tensor([]))
