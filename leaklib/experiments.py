"""The papers' experiments, runnable from notebooks and from ``python -m leaklib``.

- :func:`make_trials`: the protocol of DLG/iDLG - a fresh LeNet (weights ``U(-0.5, 0.5)``) per trial, one private
  image (or batch) per trial, and the FedSGD gradient the client shares.
- :func:`sequential_attack`: one attack at a time with ``torch.optim.LBFGS``, following the official iDLG code's
  loop; the baseline the batched engine is measured against.
- :func:`reproduce_idlg`: iDLG's Table 1 (label accuracy) and Figure 1 (fidelity) for DLG and iDLG.
- :func:`benchmark_idlg`: engine and sequential loop on the same trials, in one process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import metrics
from .attacks import PAPER_PROTOCOL, AttackResult, reconstruct, trial_seed
from .data import dataset_info, load_dataset
from .gradients import fedsgd_gradients
from .labels import idlg as idlg_label
from .models import build_model
from .utils import check_choice

__all__ = ["Trials", "make_trials", "sequential_attack", "evaluate", "reproduce_idlg", "benchmark_idlg"]


@dataclass
class Trials:
    """``T`` independent attacks: private images ``x`` ``(T, B, C, H, W)``, labels ``y`` ``(T, B)``, one model and
    one shared gradient per trial, and where the images came from."""

    x: torch.Tensor
    y: torch.Tensor
    models: list[nn.Module]
    target_grads: list[list[torch.Tensor]]
    image_shape: tuple[int, int, int]
    source: str


def make_trials(dataset: str, trials: int, *, batch_size: int = 1, model: str = "lenet", seed: int = 0) -> Trials:
    """The DLG/iDLG protocol: ``trials`` private batches of ``batch_size`` images, a fresh model per trial."""
    info = dataset_info(dataset)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"trials must be a positive int; got {trials!r}")
    data = load_dataset(dataset, trials * batch_size, seed=seed)
    x = data.x.reshape(trials, batch_size, *info.shape)
    y = data.y.reshape(trials, batch_size)
    models = [build_model(model, dataset, seed=trial_seed(seed, 1_000_003, t)) for t in range(trials)]
    grads = [fedsgd_gradients(m, x[t], y[t]) for t, m in enumerate(models)]
    return Trials(x, y, models, grads, info.shape, data.source)


def sequential_attack(
    model: nn.Module,
    target_grads: Sequence[torch.Tensor],
    image_shape: tuple[int, int, int],
    *,
    method: str = "idlg",
    batch_size: int = 1,
    iterations: int = 300,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One attack as the official iDLG code runs it (github.com/PatrickZH/Improved-Deep-Leakage-from-Gradients).

    ``torch.optim.LBFGS([dummy], lr=1)``; each iteration one ``optimizer.step(closure)`` and one more closure call
    for the loss; every ``iterations // 30`` iterations, stop if that loss is below 1e-6. DLG optimises the dummy
    image and dummy label logits (``N(0, 1)``), iDLG the image against the label from :func:`leaklib.labels.idlg`.
    Returns the reconstruction ``(B, C, H, W)``, the labels ``(B,)`` and the final matching loss.
    """
    key = check_choice("method", method, ("dlg", "idlg"))
    params = list(model.parameters())
    num_classes = params[-1].shape[0]
    gen = torch.Generator().manual_seed(seed)
    dummy_x = torch.randn(batch_size, *image_shape, generator=gen).requires_grad_(True)
    dummy_label = torch.randn(batch_size, num_classes, generator=gen).requires_grad_(True)
    if key == "idlg":
        label = torch.full((batch_size,), idlg_label(model, list(target_grads)), dtype=torch.long)
        optimizer = torch.optim.LBFGS([dummy_x], lr=1)
    else:
        optimizer = torch.optim.LBFGS([dummy_x, dummy_label], lr=1)

    def closure():
        optimizer.zero_grad()
        pred = model(dummy_x)
        if key == "dlg":
            loss = -torch.mean(torch.sum(torch.softmax(dummy_label, -1) * torch.log_softmax(pred, -1), dim=-1))
        else:
            loss = F.cross_entropy(pred, label)
        dummy_grads = torch.autograd.grad(loss, params, create_graph=True)
        diff = sum(((gx - gy) ** 2).sum() for gx, gy in zip(dummy_grads, target_grads, strict=True))
        diff.backward()
        return diff

    check_every = max(1, iterations // 30)
    current = float("nan")
    for it in range(iterations):
        optimizer.step(closure)
        current = float(closure().detach())
        if it % check_every == 0 and current < 1e-6:
            break
    labels = dummy_label.detach().argmax(-1) if key == "dlg" else label
    return dummy_x.detach(), labels, current


def evaluate(result_x: torch.Tensor, result_labels: torch.Tensor, trials: Trials) -> dict:
    """Label accuracy, fidelity at iDLG's MSE thresholds, and median MSE/PSNR/SSIM, batches matched first."""
    x = result_x.reshape(trials.x.shape)
    labels = result_labels.reshape(trials.y.shape)
    if x.shape[1] > 1:  # a batch comes back in any order: line it up with the private images first
        orders = [metrics.match_batch(x[t], trials.x[t]) for t in range(len(x))]
        x = torch.stack([x[t][o] for t, o in enumerate(orders)])
        labels = torch.stack([labels[t][o] for t, o in enumerate(orders)])
    mse = metrics.mse(x, trials.x).mean(1)  # per trial
    finite = torch.isfinite(mse)
    return {
        "label_accuracy": metrics.label_accuracy(labels, trials.y),
        "fidelity": {str(k): v for k, v in metrics.fidelity(torch.where(finite, mse, torch.inf)).items()},
        "mse_median": float(mse.median()),
        "psnr_median": float(metrics.psnr(x, trials.x).mean(1).median()),
        "ssim_median": float(metrics.ssim(x, trials.x).mean(1).median()),
    }


def _engine(trials: Trials, method: str, iterations: int, device: str, seed: int, progress: bool,
            **engine: object) -> AttackResult:
    return reconstruct(trials.models, trials.target_grads, trials.image_shape, method=method,
                       batch_size=trials.x.shape[1], iterations=iterations, seed=seed, device=device,
                       progress=progress, **engine)


def reproduce_idlg(
    dataset: str = "mnist",
    trials: int = 100,
    *,
    iterations: int = 300,
    methods: Sequence[str] = ("dlg", "idlg"),
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    **engine: object,
) -> dict:
    """iDLG's Table 1 and Figure 1 for ``dataset``: label accuracy and fidelity of DLG and iDLG over ``trials``.

    Returns ``{"dataset", "trials", "device", "label_accuracy": {m}, "fidelity": {m: {threshold: share}},
    "seconds": {m}}`` plus ``"source"`` (where the images came from) and ``"mse_median"``.
    """
    data = make_trials(dataset, trials, seed=seed)
    out: dict = {"dataset": dataset, "trials": trials, "device": None, "source": data.source, "iterations": iterations,
                 "label_accuracy": {}, "fidelity": {}, "seconds": {}, "mse_median": {}}
    for method in methods:
        result = _engine(data, method, iterations, device, seed, progress, **engine)
        scores = evaluate(result.dummy_x, result.labels, data)
        out["device"] = result.device
        out["label_accuracy"][method] = scores["label_accuracy"]
        out["fidelity"][method] = scores["fidelity"]
        out["seconds"][method] = round(result.seconds, 2)
        out["mse_median"][method] = scores["mse_median"]
    return out


def benchmark_idlg(
    dataset: str = "mnist",
    trials: int = 32,
    *,
    method: str = "idlg",
    iterations: int = 300,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Engine vs the official code's one-attack-at-a-time loop, on the same trials, in one process.

    Returns attacks per second, fidelity and label accuracy for ``sequential`` (the official loop), ``engine``
    (leaklib's defaults) and ``engine_protocol`` (the engine with the papers' ``N(0, 1)`` start and no restarts).
    """
    data = make_trials(dataset, trials, seed=seed)
    rows = {}
    start = time.perf_counter()
    xs, labels = [], []
    for t in range(trials):
        x, lab, _ = sequential_attack(data.models[t], data.target_grads[t], data.image_shape, method=method,
                                      iterations=iterations, seed=trial_seed(seed, t))
        xs.append(x)
        labels.append(lab)
    seconds = time.perf_counter() - start
    rows["sequential"] = {"seconds": seconds, **evaluate(torch.stack(xs), torch.stack(labels), data)}
    for name, engine in (("engine", {}), ("engine_protocol", PAPER_PROTOCOL)):
        result = _engine(data, method, iterations, device, seed, progress, **engine)
        rows[name] = {"seconds": result.seconds, "device": result.device,
                      **evaluate(result.dummy_x, result.labels, data)}
    for row in rows.values():
        row["attacks_per_second"] = trials / row["seconds"]
    base = rows["sequential"]["attacks_per_second"]
    for row in rows.values():
        row["speedup"] = row["attacks_per_second"] / base
    threads = torch.get_num_threads()
    return {"dataset": dataset, "method": method, "trials": trials, "iterations": iterations, "source": data.source,
            "torch_threads": threads, "rows": rows}
