"""The papers' experiments, runnable from notebooks and from ``python -m leaklib``.

- :func:`make_trials`: the protocol of DLG/iDLG - a fresh LeNet (weights ``U(-0.5, 0.5)``) per trial, one private
  image (or batch) per trial, and the FedSGD gradient the client shares.
- :func:`sequential_attack`: one attack at a time with ``torch.optim.LBFGS``, following the official iDLG code's
  loop; the baseline the batched engine is measured against.
- :func:`reproduce_idlg`: iDLG's Table 1 (label accuracy) and Figure 1 (fidelity) for DLG and iDLG.
- :func:`benchmark_idlg`: engine and sequential loop on the same trials, in one process.
- :func:`label_trial`, :func:`reproduce_labels`: batch label restoration (chapter 4) - every method on the same
  client batches and updates, FedSGD or FedAvg, untrained or trained models.
- :func:`batch_reconstruction`: chapter 5 - restore a batch's labels, then its images, from a gradient or an update.
- :func:`defense_attack`, :func:`defense_utility`, :func:`reproduce_defenses`: chapter 6 - the attacks against
  DLG's defenses and DP-SGD, and the test accuracy each defense leaves.
"""

from __future__ import annotations

import copy
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import metrics
from .attacks import PAPER_PROTOCOL, AttackResult, reconstruct, trial_seed
from .data import dataset_info, load_dataset
from .gradients import fedavg_update, fedsgd_gradients
from .labels import LABEL_METHODS, label_counts, restore_labels
from .labels import idlg as idlg_label
from .models import build_model, train_model
from .utils import check_choice, get_device

__all__ = ["Trials", "make_trials", "sequential_attack", "evaluate", "reproduce_idlg", "benchmark_idlg",
           "LabelSetup", "label_setup", "label_trial", "reproduce_labels", "batch_reconstruction",
           "DEFAULT_DEFENSES", "defense_attack", "defense_utility", "reproduce_defenses"]


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

    def subset(self, n: int) -> Trials:
        """The first ``n`` trials."""
        return Trials(self.x[:n], self.y[:n], self.models[:n], self.target_grads[:n], self.image_shape, self.source)


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


BENCH_ENGINES = {"engine": {}, "engine_no_polish": {"polish": 0}, "engine_protocol": PAPER_PROTOCOL}


def benchmark_idlg(
    dataset: str = "mnist",
    trials: int = 32,
    *,
    method: str = "idlg",
    iterations: int = 300,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    sequential_trials: int | None = None,
    engines: Sequence[str] = tuple(BENCH_ENGINES),
) -> dict:
    """Engine vs the official code's one-attack-at-a-time loop, on the same trials, in one process.

    Returns attacks per second, fidelity and label accuracy for ``sequential`` (the official loop), ``engine``
    (leaklib's defaults), ``engine_no_polish`` (the defaults without the Gauss-Newton polish: L-BFGS alone) and
    ``engine_protocol`` (the engine with the papers' ``N(0, 1)`` start, no restarts and no polish); ``engines``
    picks which engine rows run. The official loop's rate does not depend on how many attacks it runs (one at a
    time), while the engine's grows with the batch: ``sequential_trials`` runs the loop on the first that many of
    the same trials only (default: all), so that a run at the papers' scale (1,000 trials) does not take hours.
    Each row has its own ``trials``. The loop runs half of its trials before the engine rows and half after them.
    """
    bad = [e for e in engines if e not in BENCH_ENGINES]
    if bad or not engines:
        raise ValueError(f"engines must be a non-empty subset of {list(BENCH_ENGINES)}; got {list(engines)!r}")
    n_seq = trials if sequential_trials is None else sequential_trials
    if isinstance(n_seq, bool) or not isinstance(n_seq, int) or not 1 <= n_seq <= trials:
        raise ValueError(f"sequential_trials must be an int in [1, trials={trials}]; got {sequential_trials!r}")
    data = make_trials(dataset, trials, seed=seed)
    xs, labels = [], []
    seq_seconds = 0.0

    def official(first: int, last: int) -> float:
        start = time.perf_counter()
        for t in range(first, last):
            x, lab, _ = sequential_attack(data.models[t], data.target_grads[t], data.image_shape, method=method,
                                          iterations=iterations, seed=trial_seed(seed, t))
            xs.append(x)
            labels.append(lab)
        return time.perf_counter() - start

    # half of the official loop before the engine rows and half after: on shared cores whose speed drifts during
    # a run (seen here: the same loop at 0.27 and at 0.41 attacks/s an hour apart), both sides see the same machine
    half = n_seq // 2
    seq_seconds += official(0, half)
    engine_rows = {}
    for name in engines:
        result = _engine(data, method, iterations, device, seed, progress, **BENCH_ENGINES[name])
        engine_rows[name] = {"trials": trials, "seconds": result.seconds, "device": result.device,
                             **evaluate(result.dummy_x, result.labels, data)}
    seq_seconds += official(half, n_seq)
    rows = {"sequential": {"trials": n_seq, "seconds": seq_seconds,
                           **evaluate(torch.stack(xs), torch.stack(labels), data.subset(n_seq))}, **engine_rows}
    for row in rows.values():
        row["attacks_per_second"] = row["trials"] / row["seconds"]
    base = rows["sequential"]["attacks_per_second"]
    for row in rows.values():
        row["speedup"] = row["attacks_per_second"] / base
    threads = torch.get_num_threads()
    return {"dataset": dataset, "method": method, "trials": trials, "iterations": iterations, "source": data.source,
            "torch_threads": threads, "rows": rows}


# ----------------------------------------------------------------------------------------------------------------
# Chapter 4: batch label restoration


@dataclass
class LabelSetup:
    """What a label-restoration experiment draws its client batches from.

    ``x``/``y``: the pool of images and their labels; ``num_classes``: the model's classes; ``uniform_labels``: batch
    labels drawn uniformly from all ``num_classes`` classes, not tied to the images (for untrained models, so a
    dataset whose offline copy covers few classes still exercises every class); ``trained``: a model trained for
    ``trained_steps`` on the other half of the data, shared by every trial (``None``: a fresh untrained model per
    trial).
    """

    dataset: str
    model: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    uniform_labels: bool
    trained_steps: int
    trained: nn.Module | None
    source: str


def label_setup(
    dataset: str = "mnist",
    model: str = "convnet",
    *,
    trained_steps: int = 0,
    num_classes: int | None = None,
    pool: int = 2000,
    seed: int = 0,
    device: str = "auto",
) -> LabelSetup:
    """Load a pool of (up to ``pool``) images; with ``trained_steps > 0``, train one model on half of it (SGD, batch
    64). Client batches are drawn from the other half.

    ``num_classes`` (default: the dataset's) gives the model that many outputs and draws the batch labels uniformly
    from all of them (``uniform_labels``), not from the images' labels; this is only meaningful for an untrained
    model, so it cannot be combined with ``trained_steps``.
    """
    info = dataset_info(dataset)
    check_choice("model", model, ("lenet", "convnet", "resnet18"))
    if not isinstance(trained_steps, int) or isinstance(trained_steps, bool) or trained_steps < 0:
        raise ValueError(f"trained_steps must be a non-negative int; got {trained_steps!r}")
    classes = info.num_classes if num_classes is None else num_classes
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; got {num_classes!r}")
    uniform = num_classes is not None
    if uniform and trained_steps:
        raise ValueError(f"num_classes={classes} (labels drawn uniformly, not tied to the images) only makes sense "
                         f"for an untrained model; got trained_steps={trained_steps}")
    data = load_dataset(dataset, None, seed=seed)
    x, y, source = data.x[:pool], data.y[:pool], data.source
    half = len(y) // 2
    trained = None
    if trained_steps:
        dev = get_device(device)
        trained = build_model(model, dataset, seed=trial_seed(seed, 7)).to(dev)
        train_model(trained, x[:half], y[:half], steps=trained_steps, seed=trial_seed(seed, 8))
        trained = trained.cpu()
    return LabelSetup(dataset, model, x[half:], y[half:], classes, uniform, trained_steps, trained, source)


def label_trial(
    setup: LabelSetup,
    batch_size: int,
    *,
    trial: int = 0,
    duplicates: bool = True,
    local_steps: int = 1,
    lr: float = 0.1,
    methods: Sequence[str] = LABEL_METHODS,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """One client batch, its update, and every method's restored counts.

    The batch: ``batch_size`` images drawn at random (``duplicates=True``: labels repeat as they happen to) or one
    image from each of ``batch_size`` distinct classes (``duplicates=False``). The update: the FedSGD gradient
    (``local_steps=1``) or the FedAvg weight update after ``local_steps`` full-batch SGD steps with ``lr``. Methods
    whose assumption cannot hold (``idlg`` for ``B > 1``) are skipped. Returns ``{"true": counts, method: counts}``.
    """
    B = batch_size
    if not isinstance(B, int) or isinstance(B, bool) or B < 1:
        raise ValueError(f"batch_size must be a positive int; got {B!r}")
    gen = torch.Generator().manual_seed(trial_seed(seed, trial, B, int(duplicates)))
    C = setup.num_classes
    if setup.uniform_labels:
        if duplicates:
            y = torch.randint(0, C, (B,), generator=gen)
        elif B <= C:
            y = torch.randperm(C, generator=gen)[:B]
        else:
            raise ValueError(f"batch_size={B} unique labels need at least {B} classes; the model has {C}")
        x = setup.x[torch.randint(0, len(setup.y), (B,), generator=gen)]
    elif duplicates:
        idx = torch.randint(0, len(setup.y), (B,), generator=gen)
        x, y = setup.x[idx], setup.y[idx]
    else:
        present = torch.unique(setup.y)
        if B > len(present):
            raise ValueError(f"batch_size={B} unique labels need {B} classes, but the {setup.dataset} pool "
                             f"({setup.source}) has {len(present)}; use duplicates or a smaller batch")
        classes = present[torch.randperm(len(present), generator=gen)[:B]]
        idx = torch.stack([torch.nonzero(setup.y == c).flatten()[
            int(torch.randint(0, int((setup.y == c).sum()), (1,), generator=gen))] for c in classes])
        x, y = setup.x[idx], setup.y[idx]
    dev = get_device(device)
    if setup.trained is not None:
        model = copy.deepcopy(setup.trained)
    else:
        model = build_model(setup.model, setup.dataset, num_classes=C, seed=trial_seed(seed, 1_000_003, trial))
    model = model.to(dev).eval()
    x, y = x.to(dev), y.to(dev)
    if local_steps == 1:
        update, update_lr = fedsgd_gradients(model, x, y), None
    else:
        update, update_lr = fedavg_update(model, x, y, local_steps=local_steps, lr=lr), lr
    out = {"true": label_counts(y.cpu(), C)}
    for method in methods:
        if method == "idlg" and B > 1:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # assumptions are the subject of the comparison, not news
            out[method] = restore_labels(model, update, B, method=method, lr=update_lr, local_steps=local_steps)
    return out


def reproduce_labels(
    dataset: str = "mnist",
    model: str = "convnet",
    *,
    methods: Sequence[str] = LABEL_METHODS,
    batch_sizes: Sequence[int] = (1, 8, 32, 128),
    duplicates: bool = True,
    trained_steps: int = 0,
    local_steps: int = 1,
    lr: float = 0.1,
    num_classes: int | None = None,
    trials: int = 10,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Instance accuracy and exact-batch rate of each method, per batch size, over ``trials`` client batches.

    Every method sees the same batches and updates. Returns ``{"rows": [{"method", "batch_size", "duplicates",
    "trained_steps", "local_steps", "instance_accuracy", "exact_batch_rate"}, ...]}`` plus the setup
    (``dataset``, ``model``, ``source``, ``num_classes``, ``uniform_labels``, ``trials``, ``seconds``).
    """
    methods = [check_choice("methods", m, LABEL_METHODS) for m in methods]
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"trials must be a positive int; got {trials!r}")
    start = time.perf_counter()
    setup = label_setup(dataset, model, trained_steps=trained_steps, num_classes=num_classes, seed=seed,
                        device=device)
    rows = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(batch_sizes) * trials, desc="label restoration", leave=False)
    for B in batch_sizes:
        scores: dict[str, list[float]] = {m: [] for m in methods}
        for t in range(trials):
            out = label_trial(setup, B, trial=t, duplicates=duplicates, local_steps=local_steps, lr=lr,
                              methods=methods, seed=seed, device=device)
            for m in methods:
                if m in out:
                    scores[m].append(metrics.instance_accuracy(out[m], out["true"]))
            if bar is not None:
                bar.update()
        for m in methods:
            if not scores[m]:
                continue
            acc = torch.tensor(scores[m], dtype=torch.float64)
            rows.append({"method": m, "batch_size": B, "duplicates": duplicates, "trained_steps": trained_steps,
                         "local_steps": local_steps, "instance_accuracy": float(acc.mean()),
                         "exact_batch_rate": float((acc == 1).double().mean())})
    if bar is not None:
        bar.close()
    return {"dataset": dataset, "model": model, "source": setup.source, "num_classes": setup.num_classes,
            "uniform_labels": setup.uniform_labels, "trials": trials, "lr": lr,
            "seconds": round(time.perf_counter() - start, 2), "rows": rows}


# ----------------------------------------------------------------------------------------------------------------
# Chapter 5: reconstructing a batch from a FedSGD gradient or a FedAvg update


def batch_reconstruction(
    dataset: str = "mnist",
    trials: int = 2,
    batch_size: int = 4,
    *,
    model: str = "lenet",
    local_steps: int = 1,
    lr: float = 0.1,
    label_method: str = "ilrg",
    wrong_labels: int = 0,
    batch_labels: str = "unique",
    iterations: int = 100,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    **engine: object,
) -> dict:
    """Geng et al.'s pipeline on ``trials`` clients: restore the batch's labels, then reconstruct its images.

    Each client holds ``batch_size`` real images whose labels are all different (``batch_labels="unique"``), drawn
    at random so that they may repeat (``"random"``), or all different except the first two, which share a label
    (``"pair"``). It shares its FedSGD gradient (``local_steps=1``) or its FedAvg update after ``local_steps``
    full-batch SGD steps with ``lr``. The server restores the label counts with ``label_method``
    (:func:`leaklib.labels.restore_labels`), optionally corrupts ``wrong_labels`` of them (the next class) to show
    what one wrong label does, and runs :func:`leaklib.attacks.reconstruct_batch` (``engine`` goes to it).

    Returns ``{"x", "y", "labels" (what the attack used), "label_accuracy", "result", "matched" (reconstructions in
    the order of ``x``), "mse" (T, B), "source"}``.
    """
    from .attacks import reconstruct_batch
    from .labels import counts_to_labels

    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"trials must be a positive int; got {trials!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if not isinstance(wrong_labels, int) or not 0 <= wrong_labels <= batch_size:
        raise ValueError(f"wrong_labels must be an int in [0, batch_size={batch_size}]; got {wrong_labels!r}")
    mode = check_choice("batch_labels", batch_labels, ("unique", "random", "pair"))
    if mode == "pair" and batch_size < 2:
        raise ValueError("batch_labels='pair' needs batch_size >= 2 (two images that share a label)")
    info = dataset_info(dataset)
    data = load_dataset(dataset, None, seed=seed)
    gen = torch.Generator().manual_seed(trial_seed(seed, 5))
    present = torch.unique(data.y)
    xs, ys = [], []
    for _ in range(trials):
        if mode in ("unique", "pair"):
            distinct = batch_size - (mode == "pair")
            if distinct > len(present):
                raise ValueError(f"batch_labels={mode!r} with batch_size={batch_size} needs {distinct} classes; "
                                 f"the {dataset} source has {len(present)}")
            classes = present[torch.randperm(len(present), generator=gen)[:distinct]]
            labels = torch.cat([classes[:1], classes]) if mode == "pair" else classes
            idx: list[int] = []
            for c in labels.tolist():
                pool = [i for i in torch.nonzero(data.y == c).flatten().tolist() if i not in idx]
                idx.append(pool[int(torch.randint(0, len(pool), (1,), generator=gen))])
            idx_t = torch.tensor(idx)
        else:
            idx_t = torch.randperm(len(data.y), generator=gen)[:batch_size]
        xs.append(data.x[idx_t])
        ys.append(data.y[idx_t])
    x, y = torch.stack(xs), torch.stack(ys)
    models = [build_model(model, dataset, seed=trial_seed(seed, 1_000_003, t)) for t in range(trials)]
    if local_steps == 1:
        updates = [fedsgd_gradients(m, x[t], y[t]) for t, m in enumerate(models)]
        kw: dict = {}
    else:
        updates = [fedavg_update(m, x[t], y[t], local_steps=local_steps, lr=lr) for t, m in enumerate(models)]
        kw = {"update": "fedavg", "local_steps": local_steps, "local_lr": lr}
    used, accs = [], []
    for t, m in enumerate(models):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            counts = restore_labels(m, updates[t], batch_size, method=label_method,
                                    lr=None if local_steps == 1 else lr, local_steps=local_steps)
        accs.append(metrics.instance_accuracy(counts, label_counts(y[t], info.num_classes)))
        labels = counts_to_labels(counts)
        labels[:wrong_labels] = (labels[:wrong_labels] + 1) % info.num_classes
        used.append(labels)
    result = reconstruct_batch(models, updates, info.shape, torch.stack(used), iterations=iterations, seed=seed,
                               device=device, progress=progress, **kw, **engine)
    orders = [metrics.match_batch(result.dummy_x[t], x[t]) for t in range(trials)]
    matched = torch.stack([result.dummy_x[t][o] for t, o in enumerate(orders)])
    return {"x": x, "y": y, "labels": torch.stack(used), "label_accuracy": sum(accs) / len(accs), "result": result,
            "matched": matched, "mse": metrics.mse(matched, x), "source": data.source}


# ----------------------------------------------------------------------------------------------------------------
# Chapter 6: defenses

#: The defenses of DLG's section 5 at the strengths it discusses, plus bfloat16 and DP-SGD.
DEFAULT_DEFENSES = ("none", "prune:0.1", "prune:0.2", "prune:0.3", "prune:0.5", "prune:0.9", "gauss:1e-4",
                    "gauss:1e-3", "gauss:1e-2", "gauss:1e-1", "lap:1e-4", "lap:1e-3", "lap:1e-2", "fp16", "bf16",
                    "dpsgd:0.5:10", "dpsgd:1:10")
DEFENSE_FIDELITY = ("0.01", "0.001", "0.0001")


def _spec_seed(seed: int, spec: str, *keys: int) -> int:
    """A seed for one defense's random draws that depends on the defense's text, not its place in a list."""
    return trial_seed(seed, zlib.crc32(spec.encode()), *keys)


def _check_specs(defenses: Sequence[str]) -> list[str]:
    from .defenses import parse_defenses

    if isinstance(defenses, str) or not isinstance(defenses, Sequence) or not defenses:
        raise ValueError(f"defenses must be a non-empty list of defense specs such as ['none', 'prune:0.3']; "
                         f"got {defenses!r}")
    for spec in defenses:
        parse_defenses(spec)  # every spec is checked before any work starts
    return list(defenses)


def defense_attack(
    dataset: str = "mnist",
    defenses: Sequence[str] = DEFAULT_DEFENSES,
    *,
    attack: str = "idlg",
    trials: int = 8,
    iterations: int = 300,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    **engine: object,
) -> dict:
    """DLG's defense experiment: the same ``trials`` clients (fresh LeNet, one private image each, the DLG/iDLG
    protocol of :func:`make_trials`) share their gradient under each defense, and ``attack`` reconstructs it.

    Every (defense, client) pair is one trial of a single batched :func:`leaklib.attacks.reconstruct` call, and a
    client's attack starts from the same random point under every defense, so the rows differ only by the defense.
    iDLG reads the label off the defended gradient with the rule's best guess (``strict=False``). Restarts on
    stalling are off (``patience=None``): a defended gradient usually cannot be matched to a loss of 1e-6, and a
    restart would throw away the best the attack found. The Gauss-Newton polish and the loss scaling are off too
    (``polish=0, scale_to=None``): these are DLG's claims about its L-BFGS attack, and the tables of the results page
    were measured so; pass ``patience``, ``polish`` or ``scale_to`` in ``engine`` to change them.

    Returns ``{"dataset", "attack", "trials", "iterations", "device", "source", "seconds", "rows", "x", "y",
    "reconstructions"}``: one row per defense ``{"defense", "label_accuracy", "fidelity": {"0.01", "0.001",
    "0.0001"}, "mse_median", "ssim_median"}``, the private images ``x`` ``(trials, 1, C, H, W)`` and the
    reconstructions ``{defense: (trials, 1, C, H, W)}``.
    """
    from .defenses import client_gradients

    defenses = _check_specs(defenses)
    attack = check_choice("attack", attack, ("dlg", "idlg"))
    data = make_trials(dataset, trials, seed=seed)
    models, grads, labels, seeds = [], [], [], []
    for spec in defenses:
        for t, model in enumerate(data.models):
            g = client_gradients(model, data.x[t], data.y[t], spec, seed=_spec_seed(seed, spec, t))
            models.append(model)
            grads.append(g)
            labels.append([idlg_label(model, g, strict=False)])
            seeds.append(trial_seed(seed, t))
    engine.setdefault("patience", None)
    engine.setdefault("polish", 0)
    engine.setdefault("scale_to", None)
    result = reconstruct(models, grads, data.image_shape, method=attack, iterations=iterations, seeds=seeds,
                         labels=torch.tensor(labels) if attack == "idlg" else None, device=device,
                         progress=progress, **engine)
    rows, recon = [], {}
    for k, spec in enumerate(defenses):
        part = slice(k * trials, (k + 1) * trials)
        scores = evaluate(result.dummy_x[part], result.labels[part], data)
        rows.append({"defense": spec, "label_accuracy": scores["label_accuracy"],
                     "fidelity": {t: scores["fidelity"][t] for t in DEFENSE_FIDELITY},
                     "mse_median": scores["mse_median"], "ssim_median": scores["ssim_median"]})
        recon[spec] = result.dummy_x[part]
    return {"dataset": dataset, "attack": attack, "trials": trials, "iterations": iterations,
            "device": result.device, "source": data.source, "seconds": round(result.seconds, 2), "rows": rows,
            "x": data.x, "y": data.y, "reconstructions": recon}


def defense_utility(
    dataset: str = "mnist",
    defenses: Sequence[str] = DEFAULT_DEFENSES,
    *,
    model: str = "lenet",
    epochs: int = 3,
    lr: float = 0.01,
    batch_size: int = 64,
    test_fraction: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> list[dict]:
    """What each defense costs: the test accuracy of ``model`` trained for ``epochs`` with every step's gradient
    shared under the defense (:func:`leaklib.defenses.train_under_defense`; SGD with momentum 0.9).

    All of ``dataset``'s images, split at random (seeded) into train and ``test_fraction`` test; the same
    initialisation and the same batches for every defense. Returns ``[{"defense", "test_accuracy", "epsilon"}]``
    (``epsilon`` at ``delta = 1e-5`` for DP-SGD, else ``None``).
    """
    from .defenses import train_under_defense
    from .models import accuracy

    defenses = _check_specs(defenses)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction!r}")
    dev = get_device(device)
    data = load_dataset(dataset, None, seed=seed)
    order = torch.randperm(len(data.y), generator=torch.Generator().manual_seed(trial_seed(seed, 6)))
    n_test = max(1, round(test_fraction * len(order)))
    test, train = order[:n_test], order[n_test:]
    rows = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(defenses), desc="training under each defense", leave=False)
    for spec in defenses:
        net = build_model(model, dataset, seed=trial_seed(seed, 7)).to(dev)
        out = train_under_defense(net, data.x[train], data.y[train], spec, epochs=epochs, lr=lr,
                                  batch_size=batch_size, seed=trial_seed(seed, 8))
        rows.append({"defense": spec, "test_accuracy": accuracy(net, data.x[test], data.y[test]),
                     "epsilon": out["epsilon"]})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rows


def reproduce_defenses(
    dataset: str = "mnist",
    defenses: Sequence[str] = DEFAULT_DEFENSES,
    *,
    attack: str = "idlg",
    trials: int = 8,
    iterations: int = 300,
    utility: bool = False,
    epochs: int = 3,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """:func:`defense_attack`, and with ``utility`` :func:`defense_utility`, as one JSON-ready dict: ``{"dataset",
    "attack", "trials", "iterations", "device", "source", "seconds", "rows": [{"defense", "label_accuracy",
    "fidelity", "mse_median", "ssim_median"[, "test_accuracy", "epsilon"]}]}``."""
    out = defense_attack(dataset, defenses, attack=attack, trials=trials, iterations=iterations, seed=seed,
                         device=device, progress=progress)
    for key in ("x", "y", "reconstructions"):
        out.pop(key)
    if utility:
        start = time.perf_counter()
        for row, extra in zip(out["rows"], defense_utility(dataset, defenses, epochs=epochs, seed=seed, device=device,
                                                           progress=progress), strict=True):
            row.update(test_accuracy=extra["test_accuracy"], epsilon=extra["epsilon"])
        out["utility_seconds"] = round(time.perf_counter() - start, 2)
    return out
