"""Seeds, devices and the one environment knob the notebooks read.

Every chapter starts with ``set_seed`` and ``get_device`` (d2l's ``try_gpu``, Neuromatch's ``set_device``):
the same code runs on a Colab GPU and on a CPU-only laptop.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["set_seed", "get_device", "quick_mode", "check_choice"]


def check_choice(argument: str, value: object, valid: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise a ``ValueError`` naming the argument."""
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a string, one of {list(valid)}; got {type(value).__name__} {value!r}")
    key = value.lower()
    if key not in valid:
        raise ValueError(f"{argument}={value!r} is not valid; choose one of {list(valid)}")
    return key


def set_seed(seed: int = 0) -> int:
    """Seed Python's, NumPy's and PyTorch's (CPU and CUDA) random generators; return the seed."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global generator is the point
    torch.manual_seed(seed)
    return seed


def get_device(device: str | torch.device = "auto", *, verbose: bool = False) -> torch.device:
    """Pick the device to compute on.

    ``"auto"`` gives the first CUDA GPU when one is present and the CPU otherwise; ``"cpu"`` and ``"cuda"``
    (or ``"cuda:N"``) ask for one explicitly, and asking for CUDA without a GPU is a ``ValueError``.
    With ``verbose=True`` and no GPU, one line says how to get one on Colab.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {type(device).__name__}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if verbose:
            print("No GPU found: running on the CPU. On Colab: Runtime > Change runtime type > GPU.")
        return torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for, but no CUDA GPU is available; use 'auto' or 'cpu'")
        return torch.device(device)
    raise ValueError(f"device={device!r} is not valid; choose 'auto', 'cpu', 'cuda' or 'cuda:N'")


def quick_mode() -> bool:
    """True when ``LEAKLIB_QUICK`` is set to a non-empty value other than ``0``.

    The test suite sets it so notebooks shrink their trial counts (never the quantities their
    ``assert`` statements depend on).
    """
    return os.environ.get("LEAKLIB_QUICK", "") not in ("", "0")
