"""Interactive controls for the attack chapters, and the static figures that stand beside them.

A published page shows only saved widget state and runs no callback, so every explorer has a static twin:
:func:`run_demo` + :func:`plot_iteration_strip` at the explorer's default values.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .attacks import PAPER_PROTOCOL, AttackResult, reconstruct
from .data import DATASETS
from .experiments import Trials, make_trials
from .metrics import match_batch, mse
from .plot import to_numpy_image

__all__ = ["run_demo", "plot_iteration_strip", "attack_explorer"]


def _strip_steps(iterations: int) -> list[int]:
    steps = [0, 1, 2, 5, 10, 20, 50, 100, 200, 300]
    return [s for s in steps if s < iterations] + [iterations]


def run_demo(
    dataset: str = "mnist",
    *,
    method: str = "dlg",
    batch_size: int = 1,
    iterations: int = 100,
    seed: int = 0,
    device: str = "auto",
    protocol: bool = True,
    callback=None,
    progress: bool = True,
) -> tuple[Trials, AttackResult]:
    """One attack on one client (``batch_size`` real images of ``dataset``), keeping snapshots for a strip.

    ``protocol=True`` runs the papers' protocol (``N(0, 1)`` start, no restarts), so the strip shows what DLG
    and iDLG themselves do. iDLG reads one label, so ``method="idlg"`` with ``batch_size > 1`` is a
    ``ValueError`` (the attacker is never handed the true labels).
    """
    trials = make_trials(dataset, 1, batch_size=batch_size, seed=seed)
    engine = PAPER_PROTOCOL if protocol else {}
    result = reconstruct(trials.models, trials.target_grads, trials.image_shape, method=method,
                         batch_size=batch_size, iterations=iterations, seed=seed, device=device,
                         snapshot_at=_strip_steps(iterations), callback=callback, progress=progress, **engine)
    return trials, result


def plot_iteration_strip(trials: Trials, result: AttackResult, *, title: str | None = None) -> Figure:
    """DLG's figure: each private image, then its reconstruction after 0, 1, 2, 5, 10, ... steps.

    Reconstructions of a batch are matched to the private images (Hungarian assignment on MSE) first.
    """
    steps = sorted(result.snapshots)
    final = result.dummy_x[0]
    order = match_batch(final, trials.x[0]) if final.shape[0] > 1 else torch.arange(1)
    rows = trials.x.shape[1]
    fig, axes = plt.subplots(rows, len(steps) + 1, figsize=(1.25 * (len(steps) + 1), 1.35 * rows + 0.4),
                             squeeze=False)
    for r in range(rows):
        ax = axes[r, 0]
        ax.imshow(to_numpy_image(trials.x[0, r]), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"private\nlabel {int(trials.y[0, r])}" if r == 0 else f"label {int(trials.y[0, r])}",
                     fontsize=7)
        for c, step in enumerate(steps, start=1):
            img = result.snapshots[step][0, order[r]]
            axes[r, c].imshow(to_numpy_image(img), cmap="gray", vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(f"step {step}", fontsize=7)
        err = float(mse(final[order[r]][None], trials.x[0, r][None])[0])
        axes[r, -1].set_xlabel(f"MSE {err:.1e}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def attack_explorer(
    method: str = "dlg",
    *,
    dataset: str = "mnist",
    iterations: int = 100,
    batch_size: int = 1,
    datasets: Sequence[str] = tuple(DATASETS),
    device: str = "auto",
):
    """Controls for one attack: iterations, batch size (1-8), dataset, a Run button; images update live.

    The attack runs only when Run is pressed, so executing the notebook (or the book build) costs nothing here.
    """
    import ipywidgets as w
    from IPython.display import clear_output, display

    iters = w.IntSlider(value=iterations, min=10, max=300, step=10, description="iterations")
    batch = w.IntSlider(value=batch_size, min=1, max=8, description="batch size")
    data = w.Dropdown(options=list(datasets), value=dataset, description="dataset")
    seed = w.IntText(value=0, description="seed")
    run = w.Button(description="Run", button_style="primary", icon="play")
    status = w.HTML()
    out = w.Output()

    def on_run(_button) -> None:
        run.disabled = True
        live = w.Output()
        with out:
            clear_output()
            display(live)
        every = max(1, iters.value // 20)

        def draw(step: int, dummy_x: torch.Tensor, loss: torch.Tensor) -> None:
            if step % every:
                return
            with live:
                clear_output(wait=True)
                n = dummy_x.shape[1]
                fig, axes = plt.subplots(1, n, figsize=(1.3 * n, 1.5), squeeze=False)
                for i in range(n):
                    axes[0, i].imshow(to_numpy_image(dummy_x[0, i]), cmap="gray", vmin=0, vmax=1)
                    axes[0, i].axis("off")
                fig.suptitle(f"step {step}, matching loss {float(loss[0]):.2e}", fontsize=8)
                plt.show()

        try:
            status.value = f"running {method.upper()} ..."
            trials, result = run_demo(data.value, method=method, batch_size=batch.value, iterations=iters.value,
                                      seed=seed.value, device=device, callback=draw)
            with out:
                clear_output(wait=True)
                plot_iteration_strip(trials, result, title=f"{method.upper()} on {data.value}, "
                                     f"batch {batch.value}, seed {seed.value}")
                plt.show()
            status.value = (f"done in {result.seconds:.1f} s: labels {result.labels[0].tolist()}, "
                            f"true {trials.y[0].tolist()}, matching loss {float(result.loss[0]):.1e}")
        except ValueError as err:
            status.value = f"<b>cannot run</b>: {err}"
        finally:
            run.disabled = False

    run.on_click(on_run)
    return w.VBox([w.HBox([iters, batch]), w.HBox([data, seed, run]), status, out])
