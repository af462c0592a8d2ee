"""Figures the chapters show: image grids, the sign structure of the last layer's gradient, fidelity curves,
restored label counts and accuracy against batch size."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["to_numpy_image", "show_images", "plot_last_layer_gradient", "plot_fidelity", "plot_label_counts",
           "plot_label_accuracy", "plot_defense_grid", "plot_privacy_utility"]


def to_numpy_image(x: torch.Tensor) -> np.ndarray:
    """A ``(C, H, W)`` tensor in [0, 1] as an ``(H, W)`` or ``(H, W, 3)`` array for ``imshow``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a 3-D image tensor (C, H, W); got {getattr(x, 'shape', type(x).__name__)}")
    img = x.detach().float().cpu().clamp(0, 1)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def show_images(
    x: torch.Tensor, titles: Sequence[str] | None = None, *, ncols: int = 8, size: float = 1.4
) -> Figure:
    """A grid of the images in ``x`` (``(N, C, H, W)``, values in [0, 1]) with optional titles."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D image tensor (N, C, H, W); got {getattr(x, 'shape', type(x).__name__)}")
    if titles is not None and len(titles) != len(x):
        raise ValueError(f"titles has {len(titles)} entries but x has {len(x)} images")
    n = len(x)
    cols = min(ncols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.3 * (titles is not None)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_numpy_image(x[i]), cmap="gray", vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def plot_last_layer_gradient(
    dW: torch.Tensor,
    db: torch.Tensor | None,
    label: int | Sequence[int] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """The sign structure of the last layer's gradient, for chapter 1 and the label-restoration chapters.

    Left: ``dL/dW`` as a red (positive) / blue (negative) heat map, one row per class, the true class(es) boxed.
    Right: each row's sum ``sum_j dL/dW[i, j]`` and the bias gradient ``dL/db[i]``; for one sample with
    non-negative features only the true class's entries are negative (iDLG's label rule).
    """
    W = dW.detach().double().cpu().numpy()
    if W.ndim != 2:
        raise ValueError(f"dW must be a 2-D (classes, features) tensor; got shape {tuple(W.shape)}")
    classes = W.shape[0]
    labels = [] if label is None else ([int(label)] if np.ndim(label) == 0 else [int(v) for v in label])
    names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
    if len(names) < classes:
        raise ValueError(f"class_names has {len(names)} names but dW has {classes} rows")

    panels = 3 if db is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(12, 0.28 * classes + 1.6),
                             gridspec_kw={"width_ratios": [2.4] + [0.8] * (panels - 1)})
    ax_w = axes[0]
    lim = np.abs(W).max() or 1.0
    ax_w.imshow(W, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax_w.set_yticks(range(classes), names[:classes], fontsize=7)
    ax_w.set_xlabel("feature j (input of the last layer)")
    ax_w.set_ylabel("class i")
    ax_w.set_title(r"$\partial L/\partial W_{ij}$ (red > 0, blue < 0)")
    for c in labels:
        ax_w.add_patch(Rectangle((-0.5, c - 0.5), W.shape[1], 1, fill=False, edgecolor="black", linewidth=1.5))

    bars = [(W.sum(1), r"row sum $\sum_j \partial L/\partial W_{ij}$")]
    if db is not None:
        bars.append((db.detach().double().cpu().numpy(), r"bias $\partial L/\partial b_i$"))
    for ax, (values, name) in zip(axes[1:], bars, strict=True):
        ax.barh(np.arange(classes), values, color=np.where(values < 0, "tab:blue", "tab:red"))
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_ylim(classes - 0.5, -0.5)
        ax.set_yticks(range(classes), names[:classes], fontsize=7)
        for c in labels:
            ax.get_yticklabels()[c].set_fontweight("bold")
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_fidelity(fidelity: dict[str, dict[str, float]], *, title: str | None = None) -> Figure:
    """iDLG's Figure 1: for each method, the share of trials whose MSE is below each threshold.

    ``fidelity`` maps a method name to ``{threshold (as a string or float): share}``, as written by
    ``python -m leaklib reproduce idlg``.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, curve in fidelity.items():
        thresholds = sorted((float(k) for k in curve), reverse=True)
        shares = [100 * curve[next(k for k in curve if float(k) == t)] for t in thresholds]
        ax.plot(range(len(thresholds)), shares, marker="o", label=name)
        ax.set_xticks(range(len(thresholds)), [f"{t:g}" for t in thresholds])
    ax.set_xlabel("MSE threshold (stricter to the right)")
    ax.set_ylabel("trials below threshold (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_label_counts(true_counts: torch.Tensor, restored: dict[str, torch.Tensor], *,
                      title: str | None = None, max_classes: int = 40) -> Figure:
    """Bars of the true label counts per class with each method's restored counts beside them.

    Only classes that are in the batch or that some method restored are drawn (at most ``max_classes`` of them).
    """
    true_counts = torch.as_tensor(true_counts)
    shown = true_counts > 0
    for counts in restored.values():
        shown |= torch.as_tensor(counts) > 0
    classes = torch.nonzero(shown).flatten()[:max_classes]
    width = 0.8 / (1 + len(restored))
    fig, ax = plt.subplots(figsize=(min(12, 2.5 + 0.45 * len(classes) * (1 + len(restored)) ** 0.5), 3))
    pos = np.arange(len(classes))
    ax.bar(pos, true_counts[classes].numpy(), width, color="0.2", label="true")
    for i, (name, counts) in enumerate(restored.items(), start=1):
        ax.bar(pos + i * width, torch.as_tensor(counts)[classes].numpy(), width, label=name)
    ax.set_xticks(pos + 0.4 - width / 2, [str(int(c)) for c in classes], fontsize=7)
    ax.set_xlabel("class")
    ax.set_ylabel("samples in the batch")
    ax.legend(fontsize=7, ncol=min(6, 1 + len(restored)))
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_label_accuracy(rows: Sequence[dict], *, title: str | None = None, ax=None) -> Figure:
    """Instance accuracy against batch size (log scale), one line per method, from ``reproduce_labels`` rows."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
    else:
        fig = ax.figure
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        mine = sorted((r["batch_size"], r["instance_accuracy"]) for r in rows if r["method"] == method)
        ax.plot([b for b, _ in mine], [100 * a for _, a in mine], marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("instance accuracy (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_defense_grid(x: torch.Tensor, reconstructions: dict[str, torch.Tensor], *, max_rows: int = 8,
                      title: str | None = None) -> Figure:
    """The private images (first column), then one column per defense: what the attack rebuilt from the defended
    gradient of each client (one row per client, at most ``max_rows``), each labelled with its MSE.

    ``x``: ``(T, 1, C, H, W)`` or ``(T, C, H, W)``; ``reconstructions``: ``{defense: same shape}``, as
    :func:`leaklib.experiments.defense_attack` returns them.
    """
    private = x.reshape(len(x), *x.shape[-3:])
    rows = min(max_rows, len(private))
    names = list(reconstructions)
    fig, axes = plt.subplots(rows, len(names) + 1, figsize=(0.95 * (len(names) + 1), 1.12 * rows + 0.5),
                             squeeze=False)
    for c, (name, imgs) in enumerate([("private", private), *((n, reconstructions[n]) for n in names)]):
        imgs = imgs.reshape(len(imgs), *imgs.shape[-3:])
        axes[0, c].set_title(name, fontsize=7)
        for r in range(rows):
            ax = axes[r, c]
            ax.imshow(to_numpy_image(imgs[r]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c:
                ax.set_xlabel(f"{float(((imgs[r] - private[r]) ** 2).mean()):.0e}", fontsize=6, labelpad=1)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(h_pad=0.2, w_pad=0.2)
    return fig


def _defense_kind(spec: str) -> str:
    return spec.split("+")[0].split(":")[0]


def plot_privacy_utility(rows: Sequence[dict], *, title: str | None = None, ax=None) -> Figure:
    """Privacy against utility at a glance: one point per defense and strength, from ``reproduce_defenses`` rows
    with ``test_accuracy``.

    x: the test accuracy a model reaches when trained under the defense (utility, higher is better); y: the median
    SSIM between the attack's reconstructions and the private images (leakage, lower is better). Points of one
    kind are joined in the order given and labelled with their strength; the lower right corner is where a
    defense would want to be.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.2, 4.2))
    else:
        fig = ax.figure
    missing = [r["defense"] for r in rows if "test_accuracy" not in r]
    if missing:
        raise ValueError(f"rows need test_accuracy (run with utility=True); missing for {missing}")
    kinds = list(dict.fromkeys(_defense_kind(r["defense"]) for r in rows))
    markers = "o^sDvP*Xh"
    for k, kind in enumerate(kinds):
        mine = [r for r in rows if _defense_kind(r["defense"]) == kind]
        xs = [100 * r["test_accuracy"] for r in mine]
        ys = [r["ssim_median"] for r in mine]
        ax.plot(xs, ys, marker=markers[k % len(markers)], ms=7, lw=1, alpha=0.85, label=kind)
        for r, px, py in zip(mine, xs, ys, strict=True):
            label = r["defense"].split(":", 1)[1] if ":" in r["defense"] else r["defense"]
            ax.annotate(label, (px, py), textcoords="offset points", xytext=(4, 3 if k % 2 == 0 else -9), fontsize=7)
    ax.set_xlabel("test accuracy after training under the defense (%)  ->  more useful")
    ax.set_ylabel("median SSIM of the attack  ->  more leakage")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="defense", title_fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
