"""Interactive controls for the attack chapters, and the static figures that stand beside them.

A published page shows only saved widget state and runs no callback, so every explorer has a static twin:
:func:`run_demo` + :func:`plot_iteration_strip` at the explorer's default values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .attacks import PAPER_PROTOCOL, AttackResult, reconstruct
from .data import DATASETS
from .experiments import Trials, make_trials
from .metrics import match_batch, mse
from .plot import to_numpy_image

__all__ = ["run_demo", "plot_iteration_strip", "attack_explorer", "label_explorer", "plot_batch_reconstruction",
           "batch_explorer", "defense_explorer", "DEFENSE_STRENGTHS"]


def _on_run(run, status, action: Callable[[], str], running: str = "running ...") -> None:
    """Wire a Run button: disable it while ``action()`` runs, show ``action``'s summary (or why it cannot run)."""

    def on_click(_button) -> None:
        run.disabled = True
        status.value = running
        try:
            status.value = action()
        except ValueError as err:
            status.value = f"<b>cannot run</b>: {err}"
        finally:
            run.disabled = False

    run.on_click(on_click)


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

    def action() -> str:
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

        trials, result = run_demo(data.value, method=method, batch_size=batch.value, iterations=iters.value,
                                  seed=seed.value, device=device, callback=draw)
        with out:
            clear_output(wait=True)
            plot_iteration_strip(trials, result, title=f"{method.upper()} on {data.value}, "
                                 f"batch {batch.value}, seed {seed.value}")
            plt.show()
        return (f"done in {result.seconds:.1f} s: labels {result.labels[0].tolist()}, "
                f"true {trials.y[0].tolist()}, matching loss {float(result.loss[0]):.1e}")

    _on_run(run, status, action, running=f"running {method.upper()} ...")
    return w.VBox([w.HBox([iters, batch]), w.HBox([data, seed, run]), status, out])


def label_explorer(*, dataset: str = "mnist", model: str = "convnet", trials: int = 5, device: str = "auto"):
    """Controls for chapter 4: batch size (1-128), duplicates, number of classes, training steps, local steps.

    Run restores the labels of ``trials`` client batches with every method and shows the counts of the first batch
    beside the truth, and each method's instance accuracy.
    """
    import ipywidgets as w
    from IPython.display import clear_output

    from .experiments import label_setup, label_trial
    from .labels import LABEL_METHODS
    from .metrics import instance_accuracy
    from .plot import plot_label_counts

    batch = w.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64, 128], value=32, description="batch size")
    dup = w.Checkbox(value=True, description="duplicates")
    classes = w.Dropdown(options=[("the data's", 0), ("10, uniform", 10), ("100, uniform", 100),
                                  ("1000, uniform", 1000)], value=0, description="classes")
    trained = w.Dropdown(options=[0, 50, 200, 1000], value=0, description="trained steps")
    local = w.IntSlider(value=1, min=1, max=10, description="local steps")
    run = w.Button(description="Run", button_style="primary", icon="play")
    status = w.HTML()
    out = w.Output()

    def action() -> str:
        setup = label_setup(dataset, model, trained_steps=trained.value, num_classes=classes.value or None,
                            device=device)
        results = [label_trial(setup, batch.value, trial=t, duplicates=dup.value, local_steps=local.value,
                               device=device) for t in range(trials)]
        acc = {m: sum(instance_accuracy(r[m], r["true"]) for r in results) / trials
               for m in LABEL_METHODS if m in results[0]}
        with out:
            clear_output(wait=True)
            first = {m: results[0][m] for m in acc}
            plot_label_counts(results[0]["true"], first, title=f"batch 1 of {trials}, B = {batch.value}")
            plt.show()
        return f"instance accuracy over {trials} batches: " + ", ".join(
            f"<b>{m}</b> {100 * a:.1f}%" for m, a in acc.items())

    _on_run(run, status, action)
    return w.VBox([w.HBox([batch, dup, classes]), w.HBox([trained, local, run]), status, out])


def plot_batch_reconstruction(out: dict, *, trial: int = 0, title: str | None = None) -> Figure:
    """Private images (top) and their matched reconstructions (bottom) for one client of
    :func:`leaklib.experiments.batch_reconstruction`, each with its label and MSE."""
    x, rec, y = out["x"][trial], out["matched"][trial], out["y"][trial]
    B = x.shape[0]
    fig, axes = plt.subplots(2, B, figsize=(1.35 * B + 0.4, 3.1), squeeze=False)
    for i in range(B):
        axes[0, i].imshow(to_numpy_image(x[i]), cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(f"label {int(y[i])}", fontsize=7)
        axes[1, i].imshow(to_numpy_image(rec[i]), cmap="gray", vmin=0, vmax=1)
        axes[1, i].set_title(f"MSE {float(out['mse'][trial, i]):.0e}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("private", fontsize=8)
    axes[1, 0].set_ylabel("recovered", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def batch_explorer(*, dataset: str = "mnist", iterations: int = 100, device: str = "auto"):
    """Controls for chapter 5: batch size, local steps, local learning rate, label method; Run reconstructs."""
    import ipywidgets as w
    from IPython.display import clear_output

    from .experiments import batch_reconstruction

    batch = w.IntSlider(value=4, min=1, max=8, description="batch size")
    local = w.IntSlider(value=1, min=1, max=5, description="local steps")
    lr = w.FloatLogSlider(value=0.1, base=10, min=-3, max=0, description="local lr")
    method = w.Dropdown(options=["ilrg", "geng", "llg", "yin"], value="ilrg", description="labels by")
    iters = w.IntSlider(value=iterations, min=20, max=300, step=20, description="iterations")
    run = w.Button(description="Run", button_style="primary", icon="play")
    status = w.HTML()
    out = w.Output()

    def action() -> str:
        res = batch_reconstruction(dataset, 1, batch.value, local_steps=local.value, lr=lr.value,
                                   label_method=method.value, iterations=iters.value, device=device)
        with out:
            clear_output(wait=True)
            plot_batch_reconstruction(res, title=f"{'FedSGD' if local.value == 1 else 'FedAvg'}, "
                                      f"B = {batch.value}, {local.value} local step(s)")
            plt.show()
        return (f"labels restored {100 * res['label_accuracy']:.0f}% correct; mean MSE "
                f"{float(res['mse'].mean()):.1e}; {res['result'].seconds:.1f} s")

    _on_run(run, status, action)
    return w.VBox([w.HBox([batch, local, lr]), w.HBox([method, iters, run]), status, out])


#: The defense explorer's strengths per kind (a slider over these values).
DEFENSE_STRENGTHS = {
    "prune": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
    "gauss": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    "lap": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    "dpsgd": (0.0, 0.01, 0.1, 0.5, 1.0, 2.0),
    "fp16": (None,),
    "bf16": (None,),
    "none": (None,),
}


def defense_explorer(*, dataset: str = "mnist", attack: str = "idlg", trials: int = 4, iterations: int = 100,
                     device: str = "auto"):
    """Controls for chapter 6: a defense and its strength, the attack, a Run button; the attack's reconstructions
    of ``trials`` clients under that defense (and without it, for comparison) update live.

    The attack runs only when Run is pressed, so executing the notebook costs nothing here.
    """
    import ipywidgets as w
    from IPython.display import clear_output, display

    from .experiments import defense_attack
    from .plot import plot_defense_grid

    kind = w.Dropdown(options=list(DEFENSE_STRENGTHS), value="prune", description="defense")
    strength = w.SelectionSlider(options=[str(v) for v in DEFENSE_STRENGTHS["prune"]], value="0.3",
                                 description="strength")
    method = w.ToggleButtons(options=["dlg", "idlg"], value=attack, description="attack")
    data = w.Dropdown(options=["mnist", "cifar100"], value=dataset, description="dataset")
    iters = w.IntSlider(value=iterations, min=10, max=300, step=10, description="iterations")
    run = w.Button(description="Run", button_style="primary", icon="play")
    status = w.HTML()
    out = w.Output()

    def on_kind(change) -> None:
        values = DEFENSE_STRENGTHS[change["new"]]
        strength.options = [str(v) for v in values]
        strength.value = strength.options[len(values) // 2]
        strength.disabled = values == (None,)

    kind.observe(on_kind, names="value")

    def spec() -> str:
        return kind.value if strength.disabled or strength.value == "None" else f"{kind.value}:{strength.value}"

    def action() -> str:
        chosen = spec()
        defenses = ["none"] if chosen == "none" else ["none", chosen]
        live = w.Output()
        with out:
            clear_output()
            display(live)

        every = max(1, iters.value // 15)

        def draw(step: int, dummy_x: torch.Tensor, loss: torch.Tensor) -> None:
            if step % every:
                return
            with live:  # the trials still running (the defended ones are last and usually run longest)
                clear_output(wait=True)
                n = min(trials, dummy_x.shape[0])
                fig, axes = plt.subplots(1, n, figsize=(1.3 * n, 1.5), squeeze=False)
                for i in range(n):
                    axes[0, i].imshow(to_numpy_image(dummy_x[-n + i, 0]), cmap="gray", vmin=0, vmax=1)
                    axes[0, i].axis("off")
                fig.suptitle(f"step {step}: still running, median matching loss {float(loss.median()):.2e}",
                             fontsize=8)
                plt.show()

        result = defense_attack(data.value, defenses, attack=method.value, trials=trials, iterations=iters.value,
                                device=device, progress=True, callback=draw)
        with out:
            clear_output(wait=True)
            plot_defense_grid(result["x"], result["reconstructions"],
                              title=f"{method.value.upper()} on {data.value}: without a defense and with {chosen}")
            plt.show()
        row = result["rows"][-1]
        return (f"{chosen}: {result['seconds']:.1f} s, labels {100 * row['label_accuracy']:.0f}%, median MSE "
                f"{row['mse_median']:.1e}, median SSIM {row['ssim_median']:.2f}, share with MSE &lt; 1e-3: "
                f"{100 * row['fidelity']['0.001']:.0f}%")

    _on_run(run, status, action, running="attacking ...")
    return w.VBox([w.HBox([kind, strength]), w.HBox([method, data]), w.HBox([iters, run]), status, out])
