"""The reconstruction engine: DLG and iDLG for many independent trials in one batched computation.

**DLG** (Zhu, Liu and Han 2019, "Deep Leakage from Gradients", Alg. 1) optimises a dummy batch ``x'`` and a dummy
label ``y'`` so that the gradient they produce matches the one the client shared:

.. math::
    x'^*, y'^* = \\arg\\min_{x', y'}
    \\big\\| \\nabla_W \\ell(F(x'; W), \\mathrm{softmax}(y')) - \\nabla W \\big\\|^2

with ``l`` the (soft-target) cross-entropy averaged over the batch, exactly as the client's loss is, and L-BFGS
(``lr=1``). **iDLG** (Zhao, Mopuri and Bilen 2020) first reads the label off the gradient
(:func:`leaklib.labels.idlg`) and then optimises ``x'`` alone against the one-hot label.

Every trial has its own model, target gradient and dummy. Their parameters are stacked
(``torch.func.stack_module_state``) and the gradient-matching loss and its gradient are computed for all trials
at once with ``vmap(grad_and_value(...))`` around a ``functional_call``, on the CPU or a GPU with the same code.
The optimiser (:class:`leaklib.optim.BatchedLBFGS`) keeps per-trial state, so a trial's result does not depend on
its batch-mates. Trials stop on their own once their matching loss is below ``tol``; finished trials are dropped
from the computation. A trial whose loss or dummy becomes non-finite restarts from a fresh random start within its
remaining budget, and the restart is counted.

**Batches and FedAvg** (chapter 5; Geng et al. 2021, "Towards General Deep Leakage in Federated Learning"): the same
engine reconstructs a batch of ``B`` images from a FedSGD gradient with known (restored) labels
(:func:`reconstruct_batch`), and from a FedAvg weight update ``W_0 - W_K`` by simulating the client's ``K`` local SGD
steps on the dummy batch, differentiably (``torch.func.grad`` inside the outer gradient), and matching
``(W_0 - W'_K) / eta`` to ``(W_0 - W_K) / eta``. The distance is the squared L2 norm or ``1 - cos`` over all
parameters (Geiping et al. 2020), optionally plus a total-variation prior ``tv * TV(x')``; the optimiser L-BFGS or
Adam (:class:`leaklib.optim.BatchedAdam`).
"""

from __future__ import annotations

import copy
import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, jacfwd, stack_module_state, vmap

from .gradients import check_update
from .labels import idlg as idlg_label
from .models import last_linear
from .optim import BatchedAdam, BatchedLBFGS
from .utils import check_choice, get_device

__all__ = ["AttackResult", "PAPER_PROTOCOL", "reconstruct", "reconstruct_batch", "dlg", "idlg", "trial_seed",
           "total_variation"]

METHODS = ("dlg", "idlg")
UPDATES = ("fedsgd", "fedavg")
DISTANCES = ("l2", "cosine")
OPTIMIZERS = ("lbfgs", "adam")
# The papers' protocol in the engine: an N(0, 1) start, the absolute loss, no restarts and L-BFGS alone (leaklib's
# defaults for a single image: U(0, 1), each trial's loss scaled to ||G||^2 >= 1000, fresh starts for stuck trials
# (STUCK, `patience`), and a Gauss-Newton polish where L-BFGS stopped short).
PAPER_PROTOCOL = {"init": "normal", "patience": None, "polish": 0, "scale_to": None}
# An iDLG trial whose matching loss is still above 10% of ||G||^2 after two steps from its start (3 counts the
# evaluation at the start) is stuck: an early L-BFGS step (no line search) threw the dummy far out, the sigmoids
# saturated and its gradient vanished; such a trial never moves again (it sits at 0.3-1 ||G||^2). Of the first starts
# of 512 MNIST and 256 CIFAR-100 stand-in trials, all 13 and 8 that were still there after 7 steps were above it after
# 2, and 4 of 499 and 3 of 248 that got below it later were too (restarted needlessly: a fresh start costs them two
# steps). Checked after 4 steps instead, one in ~500 fewer trials is restarted needlessly, but a trial that needs many
# fresh starts (one of 512 on MNIST never converges and uses all 20) takes twice as long, alone in the batch at the end.
# DLG optimises its label too and its good starts come down more slowly (after 2 steps 14 of 218 MNIST and 14 of 100
# stand-in starts that converged were still above 10%, after 4 steps 4 and 5): it is checked after four steps.
# With `patience`, such a trial restarts at once.
STUCK = {"idlg": (3, 0.1), "dlg": (5, 0.1)}
# With `patience`, a trial near its solution (below near * ||G||^2) whose loss has not halved in this many steps has
# reached what L-BFGS in float32 can do for it: it stops there (and is polished when that applies). So does a trial
# far from it that has used all its restarts: one stuck at ~||G||^2 would otherwise spend the rest of its budget
# there, alone in the batch once the others have finished (on MNIST at 512 trials, one such trial ran its last 175
# steps alone: 6% of the run).
PLATEAU = 20
# With `patience`, a trial that got near its solution and whose loss then rose this many times above its best (or went
# non-finite) was thrown out by one wild L-BFGS step (no line search: once its curvature pairs are rounding noise, a
# step can land anywhere; on MNIST 3 of 512 trials, from 1e-9 ||G||^2 back to the plateau of a fresh start). It stops
# with the best point of its current start (the polish takes over) instead of being restarted from scratch later.
THROWN = 1e3
# Levenberg-Marquardt in the polish: the first damping (relative to the mean diagonal of J^T J), the factor it
# grows by after a rejected step and shrinks by after an accepted one, and the tries per Jacobian
LM_DAMPING = (1e-12, 100.0)
LM_TRIES = 6
# at most this many Gauss-Newton iterations per trial with polish="auto" (an ill-conditioned one needs about six)
POLISH_ITERATIONS = 20


@dataclass
class AttackResult:
    """What :func:`reconstruct` returns, one entry per trial (tensors on the CPU).

    Attributes:
        dummy_x: the reconstructions, ``(T, B, C, H, W)``.
        labels: the labels the attack settled on, ``(T, B)``: iDLG's extracted (or given) labels; for DLG the
            argmax of ``softmax(dummy_label)`` *after* optimisation.
        dummy_label: DLG's optimised label logits ``(T, B, K)`` (``None`` for iDLG).
        loss: the final gradient-matching loss ``(T,)`` (of the returned ``dummy_x``: for a trial thrown out near
            its solution, ``THROWN``, the best of its last start, below the last entry of its ``loss_history``).
        converged: ``loss < tol`` (the scaled loss, see ``scale_to``) ``(T,)``.
        steps: L-BFGS steps used ``(T,)``, at most ``iterations``.
        restarts: fresh random starts after a non-finite loss or, with ``patience``, a stall ``(T,)``.
        polished: trials whose reconstruction a Gauss-Newton polish improved ``(T,)`` (``polish``); their
            ``loss`` is then the float64 matching loss after it.
        loss_history: matching loss at the start of every step ``(T, iterations)``; ``nan`` after a trial stopped.
        snapshots: ``{step: (T, B, C, H, W)}`` reconstructions at the requested steps (after that many steps;
            a trial that stopped earlier shows its final L-BFGS image, before any polish).
        seconds: wall time of the whole run.
        device: where it ran.
    """

    dummy_x: torch.Tensor
    labels: torch.Tensor
    dummy_label: torch.Tensor | None
    loss: torch.Tensor
    converged: torch.Tensor
    steps: torch.Tensor
    restarts: torch.Tensor
    loss_history: torch.Tensor
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"
    polished: torch.Tensor | None = None


def trial_seed(*keys: int) -> int:
    """A 32-bit seed derived from integer keys, e.g. ``(run seed, trial)`` or ``(trial seed, restart)``."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def _check_models(models: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    if isinstance(models, nn.Module):
        models = [models]
    if not isinstance(models, Sequence) or not models or not all(isinstance(m, nn.Module) for m in models):
        raise TypeError("models must be an nn.Module or a non-empty sequence of them (one per trial)")
    shapes = [tuple(p.shape) for p in models[0].parameters()]
    for i, m in enumerate(models):
        if [tuple(p.shape) for p in m.parameters()] != shapes:
            raise ValueError(f"models[{i}] does not have the architecture of models[0]; trials must share it")
        if any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in m.modules()) and m.training:
            raise ValueError(f"models[{i}] has BatchNorm in training mode; call model.eval() first")
    last_linear(models[0])
    return list(models)


def _full_float32(fn):
    """Run ``fn`` with cuDNN's TF32 convolutions off, then restore the caller's setting.

    PyTorch lets cuDNN compute float32 convolutions in TF32 (a 10-bit mantissa) on Ampere and later GPUs by default.
    Gradient matching drives a loss to 1e-6 and below, where a relative error of 1e-3 in every convolution would
    floor it; the same attack would then succeed on a CPU and fail on an A100 or H100.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        cudnn = torch.backends.cudnn
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            return fn(*args, **kwargs)

    return wrapper


@_full_float32
def reconstruct(
    models: nn.Module | Sequence[nn.Module],
    target_grads: Sequence[Sequence[torch.Tensor]],
    image_shape: tuple[int, int, int],
    *,
    method: str = "idlg",
    batch_size: int = 1,
    labels: torch.Tensor | None = None,
    iterations: int = 300,
    tol: float = 1e-6,
    scale_to: float | None = 1e3,
    update: str = "fedsgd",
    local_steps: int = 1,
    local_lr: float | None = None,
    local_batch_size: int | None = None,
    distance: str = "l2",
    tv: float = 0.0,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    max_iter: int = 20,
    history_size: int = 100,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    init: str = "uniform",
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
    chunk_size: int | None = None,
    snapshot_at: Sequence[int] = (),
    patience: int | None | str = "auto",
    stall_loss: float | None = None,
    near: float = 1e-4,
    polish: int | str = "auto",
    polish_above: float | str = "auto",
    tolerance_change: float = 1e-9,
    max_restarts: int = 20,
    progress: bool = True,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> AttackResult:
    """Run DLG or iDLG on ``T`` independent trials at once.

    Args:
        models: one model per trial (same architecture), or one model for a single trial.
        target_grads: per trial, the shared update: one tensor per parameter in ``model.parameters()`` order. With
            ``update="fedsgd"`` the gradient of the *mean* cross-entropy over a batch of ``batch_size``
            (:func:`leaklib.gradients.fedsgd_gradients`); with ``"fedavg"`` the weight update ``W_0 - W_K``
            (:func:`leaklib.gradients.fedavg_update`).
        image_shape: ``(C, H, W)`` of one image.
        method: ``"dlg"`` (dummy image and dummy soft label) or ``"idlg"`` (label first, then the image).
        batch_size: images behind each target gradient (DLG's batched setting, B up to 8). iDLG needs
            ``labels`` when ``batch_size > 1``.
        labels: known labels ``(T, B)``; for iDLG they replace the extraction (for DLG they are ignored).
        iterations: optimiser steps per trial (an L-BFGS step makes up to ``max_iter`` evaluations), 300 in the
            papers.
        tol: a trial stops once its matching loss is below this (1e-6 in the papers' code); with ``scale_to``, its
            scaled loss.
        scale_to: with the squared L2 distance, a trial whose target has ``||G||^2`` below this has its matching loss
            multiplied by ``scale_to / ||G||^2`` for the optimiser and for ``tol``. L-BFGS's tolerances are absolute
            (PyTorch's: 1e-9 on the change of the loss, 1e-7 on the largest gradient entry), and a model that is
            already confident about the private image has a tiny gradient (``||G||^2`` down to 6e-5 against a
            median of about 500 on MNIST): unscaled, such a trial meets them, and ``tol``, at once, far from its
            image. ``None``: the papers' absolute loss. The reported ``loss`` and ``loss_history`` are unscaled.
        update: ``"fedsgd"`` (a gradient) or ``"fedavg"`` (a weight update after ``local_steps`` SGD steps with
            learning rate ``local_lr`` on mini-batches of ``local_batch_size``, in order, as
            :func:`leaklib.gradients.fedavg_update`; the dummy batch goes through the same steps).
        local_steps, local_lr, local_batch_size: the FedAvg client's protocol, known to the server.
        distance: ``"l2"`` (squared L2, DLG) or ``"cosine"`` (``1 - cos`` of the concatenated updates).
        tv: weight of the total-variation prior on the dummy images (:func:`total_variation`; 0: none).
        optimizer: ``"lbfgs"`` (the papers) or ``"adam"``.
        lr: the optimiser's learning rate (default 1 for L-BFGS, as in the papers; 0.1 for Adam).
        max_iter, history_size: L-BFGS settings (PyTorch's defaults, as in the papers).
        seed: the random start of trial ``i`` after ``r`` restarts is drawn from ``trial_seed(seeds[i], r)``, with
            ``seeds[i] = trial_seed(seed, i)`` unless ``seeds`` is given.
        seeds: one seed per trial, so a trial starts from the same point whichever batch it runs in.
        init: the dummy image's start: ``"uniform"`` (``U(0, 1)``, the range real pixels live in; converges in
            fewer steps) or ``"normal"`` (``N(0, 1)``, the papers). DLG's dummy label logits always start ``N(0, 1)``.
        device: ``"auto"`` (GPU when present), ``"cpu"`` or ``"cuda"``.
        dtype: ``torch.float32`` (default) or ``torch.float64``.
        chunk_size: trials computed together (default: as many as fit a memory budget).
        snapshot_at: steps after which to keep a copy of the reconstructions.
        patience: restart a trial from a fresh random start when it is still far from its target (``stall_loss``)
            this many steps after its last start (``None``: never, the papers' protocol). Stuck trials then get
            new chances within the same budget instead of spending it all. ``PAPER_PROTOCOL`` (``init="normal",
            patience=None, polish=0, scale_to=None``) is the papers' protocol. ``"auto"``: 50 for a single image
            with L-BFGS on the squared L2 distance without a prior (whose optimum is a loss of 0: an MNIST trial
            converges in about 15 steps), otherwise ``None`` (a batch needs longer).
        stall_loss: with ``patience``, restart only trials whose loss is still above this. Default: above
            ``near * ||G||^2`` (and ``tol``), with ``||G||^2`` the trial's squared target norm: a trial that got that
            close is on its way (a 3,072-pixel image needs 50-150 steps) and is left alone, while a stuck one sits at
            ``loss ~ ||G||^2``; and with this default a trial still above ``0.1 ||G||^2`` two steps after its start
            (four for DLG, ``STUCK``) is restarted without waiting for ``patience``. With ``patience``, a trial that
            got near its solution and was then thrown out by a wild step (``THROWN``) stops with the best point
            (lowest loss at a step boundary) of its current start instead of being restarted.
        near: the relative matching loss ``loss / ||G||^2`` below which a trial counts as near its solution: never
            restarted for patience (and stopped once it no longer improves, ``PLATEAU``), and polished
            (``polish``).
        polish: at most this many Gauss-Newton iterations after L-BFGS on every trial near its solution (see
            :func:`_polish`): L-BFGS stops at the absolute ``tol``, which for a confident model (small ``||G||``, a
            loss of ``1e-7..1e-5 * ||G||^2`` at that point) still leaves an MSE of 1e-4..1e-3; a Gauss-Newton step in
            float64 takes it close to the float limit (one step: MSE ~1e-8; two: ~1e-12). A trial's iterations stop
            once its loss is below ``polish_above * ||G||^2`` (one step, for most) or when no step lowers it. The
            steps are Levenberg-Marquardt's (damped where the plain step would raise the loss): an ill-conditioned
            trial that L-BFGS leaves crawling at ``1e-6 ||G||^2`` with an MSE of 5e-3 (trial 1 of the CIFAR-100
            stand-in) needs about six. Each iteration costs one Jacobian per trial, about as much as the whole L-BFGS
            run of an MNIST trial. ``"auto"``: ``POLISH_ITERATIONS`` where it applies (one image per trial, known
            labels, i.e. iDLG, FedSGD, squared L2, no prior, a final Linear layer), else 0.
        polish_above: polish only trials whose loss is at least this times ``||G||^2`` (those below are already
            close, and the Jacobian is the costly part), and stop polishing a trial once it is below. ``"auto"``:
            ``1e-8 (784 / n)^2`` for images of ``n`` values: on MNIST (784) every trial that L-BFGS left with an MSE
            above 1e-5 was above ``1e-8 ||G||^2``; on 3,072-value images a relative loss of ``3e-9`` can still mean
            an MSE of 1e-4, so almost every such trial is polished.
        tolerance_change: L-BFGS's tolerance on the change of the loss and of the step (PyTorch's 1e-9).
        max_restarts: restarts allowed per trial (for divergence or patience). With ``patience``, a trial that has
            used them all and is still far from its target stops once its loss has not halved in ``PLATEAU``
            steps, instead of spending the rest of its budget where it is.
        progress: show a progress bar.
        callback: ``callback(step, dummy_x, loss)`` after every step of the first chunk (for live figures).
    """
    key = check_choice("method", method, METHODS)
    init = check_choice("init", init, ("normal", "uniform"))
    update = check_choice("update", update, UPDATES)
    distance = check_choice("distance", distance, DISTANCES)
    optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
    if not isinstance(tv, (int, float)) or isinstance(tv, bool) or not tv >= 0:
        raise ValueError(f"tv must be a non-negative number (the prior's weight); got {tv!r}")
    if lr is None:
        lr = 1.0 if optimizer == "lbfgs" else 0.1
    if patience == "auto":
        patience = 50 if (optimizer == "lbfgs" and distance == "l2" and tv == 0 and batch_size == 1) else None
    elif patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
        raise ValueError(f"patience must be a positive int, None or 'auto'; got {patience!r}")
    if update == "fedavg":
        if local_lr is None or not isinstance(local_lr, (int, float)) or isinstance(local_lr, bool) \
                or not local_lr > 0:
            raise ValueError(f"update='fedavg' needs local_lr, the clients' positive learning rate; got {local_lr!r}")
        if not isinstance(local_steps, int) or isinstance(local_steps, bool) or local_steps < 1:
            raise ValueError(f"local_steps must be a positive int; got {local_steps!r}")
    elif local_steps != 1 or local_batch_size is not None:
        raise ValueError(f"local_steps={local_steps!r} and local_batch_size={local_batch_size!r} describe a FedAvg "
                         "client: pass update='fedavg' (and local_lr)")
    models = _check_models(models)
    T = len(models)
    if not isinstance(target_grads, Sequence) or len(target_grads) != T:
        raise ValueError(f"target_grads must hold one gradient per trial ({T}); got {len(target_grads)}")
    for i, (m, g) in enumerate(zip(models, target_grads, strict=True)):
        check_update(m, list(g), argument=f"target_grads[{i}]")
    if not (isinstance(image_shape, (tuple, list)) and len(image_shape) == 3 and all(int(s) > 0 for s in image_shape)):
        raise ValueError(f"image_shape must be (C, H, W); got {image_shape!r}")
    image_shape = tuple(int(s) for s in image_shape)
    for name, value in (("batch_size", batch_size), ("iterations", iterations), ("max_iter", max_iter),
                        ("history_size", history_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if scale_to is not None and (isinstance(scale_to, bool) or not isinstance(scale_to, (int, float))
                                 or not scale_to > 0):
        raise ValueError(f"scale_to must be a positive number or None; got {scale_to!r}")
    if not tol > 0 or not lr > 0:
        raise ValueError(f"tol and lr must be positive; got tol={tol!r}, lr={lr!r}")
    if isinstance(near, bool) or not isinstance(near, (int, float)) or not 0 < near < 1:
        raise ValueError(f"near must be a number in (0, 1) (a loss relative to ||G||^2); got {near!r}")
    if polish != "auto" and (not isinstance(polish, int) or isinstance(polish, bool) or polish < 0):
        raise ValueError(f"polish must be 'auto' or a number of Gauss-Newton iterations >= 0; got {polish!r}")
    if polish_above == "auto":
        polish_above = 1e-8 * (784 / (batch_size * math.prod(int(v) for v in image_shape))) ** 2
    elif isinstance(polish_above, bool) or not isinstance(polish_above, (int, float)) or not 0 <= polish_above < 1:
        raise ValueError(f"polish_above must be 'auto' or a number in [0, 1) (a loss relative to ||G||^2); "
                         f"got {polish_above!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    snapshot_at = sorted({int(s) for s in snapshot_at})
    if any(s < 0 or s > iterations for s in snapshot_at):
        raise ValueError(f"snapshot_at must lie in [0, iterations={iterations}]; got {snapshot_at}")
    dev = get_device(device)
    B = batch_size
    num_classes = last_linear(models[0]).out_features
    local_bs = B if local_batch_size is None else local_batch_size
    if not isinstance(local_bs, int) or isinstance(local_bs, bool) or not 1 <= local_bs <= B:
        raise ValueError(f"local_batch_size must be an int in [1, batch_size={B}]; got {local_batch_size!r}")

    if key == "idlg":
        if labels is None:
            if B > 1:
                raise ValueError(f"iDLG with batch_size={B} needs labels: its label rule reads one sample; "
                                 "restore batch labels with the methods of chapter 4")
            labels = torch.tensor([[idlg_label(m, list(g))] for m, g in zip(models, target_grads, strict=True)])
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(T, -1)
        if labels.shape != (T, B):
            raise ValueError(f"labels must have shape (trials, batch_size) = {(T, B)}; got {tuple(labels.shape)}")
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}); got min {int(labels.min())}, "
                             f"max {int(labels.max())}")

    n_img = B * math.prod(image_shape)
    n_lab = B * num_classes if key == "dlg" else 0
    dim = n_img + n_lab
    if chunk_size is None:
        budget = (16 if dev.type == "cuda" else 1) * 2**30
        width = torch.finfo(dtype).bits // 8
        per_trial = (2 * history_size if optimizer == "lbfgs" else 3) * dim * width
        # the trial's weights and target, and the float64 copy of the last layer's target (a 5,749-class head: 35 MB)
        per_trial += (2 * sum(p.numel() for p in models[0].parameters()) * width
                      + 8 * last_linear(models[0]).weight.numel())
        chunk_size = max(1, min(T, budget // per_trial))

    if seeds is None:
        seeds = [trial_seed(seed, i) for i in range(T)]
    elif len(seeds) != T:
        raise ValueError(f"seeds must hold one seed per trial ({T}); got {len(seeds)}")

    def images(z: torch.Tensor) -> torch.Tensor:
        """The dummy images ``(T, B, C, H, W)`` inside the flat variables ``z``, on the CPU."""
        return z[:, :n_img].reshape(-1, B, *image_shape).detach().cpu()

    def fresh_start(trial: int, restart: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(trial_seed(int(seeds[trial]), restart))
        start = torch.randn(dim, generator=gen, dtype=dtype)
        if init == "uniform":
            start[:n_img] = torch.rand(n_img, generator=gen, dtype=dtype)
        return start

    # one functional copy of the architecture; each trial's weights come in through functional_call
    base = copy.deepcopy(models[0]).to("meta")
    split = _split_head(models[0], image_shape) if (update == "fedsgd" and distance == "l2") else None
    polish_blocker = ("method='dlg' (its label is a variable)" if key == "dlg" else
                      f"batch_size={B}" if B > 1 else
                      f"update={update!r}" if update != "fedsgd" else
                      f"distance={distance!r}" if distance != "l2" else
                      f"tv={tv!r}" if tv else
                      "a model that does something after its last Linear layer" if split is None else None)
    if polish == "auto":
        polish = POLISH_ITERATIONS if polish_blocker is None else 0
    elif polish and polish_blocker is not None:
        raise ValueError(f"polish={polish} needs one image per trial with a known label, FedSGD, distance='l2', "
                         f"tv=0 and a model ending in a Linear layer; got {polish_blocker}")
    if split is not None:
        body = copy.deepcopy(split[0]).to("meta")
        w_name, b_name = split[1], split[2]

    def matching_loss(z, p, b, target, y, w):
        return w * _matching_loss(z, p, b, target, y)

    def _matching_loss(z, p, b, target, y):
        dx = z[:n_img].reshape(B, *image_shape)
        soft = F.softmax(z[n_img:].reshape(B, num_classes), dim=-1) if key == "dlg" else y
        prior = tv * total_variation(dx) if tv else 0.0
        if split is not None:  # FedSGD, L2: the last layer's terms in closed form
            return _split_matching_loss(body, p, b, dx, soft, target, w_name, b_name) + prior

        if update == "fedsgd":  # plain second-order autograd through the whole model
            g = grad(_soft_ce, argnums=1)(base, p, b, dx, soft)
        else:  # the client's local steps on the dummy batch, differentiably
            g = _client_update(base, p, b, dx, soft, local_steps, local_lr, local_bs)
        if distance == "l2":
            return sum(((g[name] - target[name]) ** 2).sum() for name in g) + prior
        dot = sum((g[name] * target[name]).sum() for name in g)
        norms = sum((g[name] ** 2).sum() for name in g).sqrt() * sum((target[name] ** 2).sum() for name in g).sqrt()
        return 1 - dot / (norms + torch.finfo(dx.dtype).tiny) + prior

    target_scale = local_lr if update == "fedavg" else 1.0
    # ||G||^2 per trial, of the target as matched (divided by the FedAvg learning rate): the scale of "near"
    norms = torch.stack([sum((g.detach().double() ** 2).sum() for g in tg) for tg in target_grads]).cpu()
    norms = norms / target_scale**2
    # each trial's loss weight (scale_to), on the CPU in float64; the closure gets a copy on the run's device
    weights = (torch.clamp(scale_to / norms, min=1.0) if scale_to is not None and distance == "l2"
               else torch.ones_like(norms))
    batched = vmap(grad_and_value(matching_loss))

    out_x = torch.zeros(T, B, *image_shape, dtype=dtype)
    out_lab = torch.zeros(T, B, num_classes, dtype=dtype) if key == "dlg" else None
    out_loss = torch.full((T,), float("nan"), dtype=torch.float64)
    out_steps = torch.zeros(T, dtype=torch.long)
    out_restarts = torch.zeros(T, dtype=torch.long)
    history = torch.full((T, iterations), float("nan"), dtype=torch.float64)
    snaps = {s: torch.zeros(T, B, *image_shape, dtype=dtype) for s in snapshot_at}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T * iterations, desc=f"{key.upper()} x{T}", unit="step", leave=False)
    start_time = time.perf_counter()

    for lo in range(0, T, chunk_size):
        ids = torch.arange(lo, min(T, lo + chunk_size))
        chunk = [models[i] for i in ids.tolist()]
        params, buffers = stack_module_state([copy.deepcopy(m).to(dev, dtype) for m in chunk])
        params = {k: v.detach() for k, v in params.items()}
        names = list(params)
        target = {n: torch.stack([target_grads[i][k].detach() for i in ids.tolist()]).to(dev, dtype) / target_scale
                  for k, n in enumerate(names)}
        if split is not None:  # the last layer's target in float64, and its squared norm, for the closed form
            target[_G64] = target[w_name].double()
            target[_GG] = (target[_G64] ** 2).sum((1, 2))
        g2, wc = norms[ids], weights[ids]  # ||G||^2 and the loss weight per row, kept in step with `rows`
        known = labels[ids] if labels is not None else torch.zeros(len(ids), B, dtype=torch.long)
        y = F.one_hot(known, num_classes).to(dev, dtype)
        closure = _closure(batched, params, buffers, target, y, wc.to(dev, dtype))

        z = torch.stack([fresh_start(int(i), 0) for i in ids]).to(dev)
        if optimizer == "lbfgs":
            opt = BatchedLBFGS(len(ids), dim, lr=lr, max_iter=max_iter, history_size=history_size,
                               tolerance_change=tolerance_change, device=dev, dtype=dtype)
        else:
            opt = BatchedAdam(len(ids), dim, lr=lr, device=dev, dtype=dtype)
        restarts = torch.zeros(len(ids), dtype=torch.long)
        started = torch.zeros(len(ids), dtype=torch.long)  # step of each row's last (re)start
        # with patience, each row's lowest loss at a step boundary since its last start, and the point that had it:
        # what a trial thrown out of the neighbourhood of its solution returns (THROWN)
        best_loss = torch.full((len(ids),), float("inf"), dtype=torch.float64)
        best_z = z
        rows = ids.clone()  # original trial index of each row still in the computation
        sync = dev.type != "cuda"
        for step in range(iterations):
            if step in snaps:
                snaps[step][rows] = images(z)
            z_start = z
            z, loss = opt.step(z, closure, stop_below=tol, sync=sync)
            loss_cpu = loss.double().cpu() / wc  # the unscaled matching loss
            history[rows, step] = loss_cpu
            out_steps[rows] = step + 1
            # a non-finite loss or dummy, or no convergence within `patience` steps: a fresh random start for that
            # trial, within its remaining budget
            nonfinite = ~torch.isfinite(loss_cpu) | ~torch.isfinite(z).all(1).cpu()
            bad = nonfinite.clone()
            thrown = torch.zeros_like(bad)
            if patience is not None:  # converged trials, and those near their solution, are never restarted
                better = loss_cpu < best_loss
                best_loss = torch.where(better, loss_cpu, best_loss)
                best_z = torch.where(better.to(dev)[:, None], z_start, best_z)
                thrown = (best_loss < near * g2) & (nonfinite | (loss_cpu > THROWN * best_loss))
                stall = (torch.maximum(near * g2, tol / wc) if stall_loss is None
                         else torch.clamp(tol / wc, min=stall_loss))
                age = step + 1 - started
                bad |= (loss_cpu >= stall) & (age >= patience) & (step + 1 < iterations)
                if stall_loss is None:  # stuck from the start: restart without waiting out `patience`
                    stuck_steps, stuck_share = STUCK[key]
                    bad |= (loss_cpu >= max(stuck_share, near) * g2) & (age >= stuck_steps) & (step + 1 < iterations)
                bad &= ~thrown
            bad &= restarts < max_restarts
            if bool(bad.any()):
                for r in torch.nonzero(bad).flatten().tolist():
                    restarts[r] += 1
                    z[r] = fresh_start(int(rows[r]), int(restarts[r])).to(dev, dtype)
                started[bad] = step + 1
                best_loss[bad] = float("inf")
                opt.reset(bad.to(dev))
            if bar is not None:
                bar.update(len(rows))
            if callback is not None and lo == 0:
                callback(step + 1, images(z), loss_cpu)
            done = (loss_cpu * wc < tol) & ~bad  # converged at the start of this step: it did not move
            if patience is not None and step + 1 > PLATEAU:  # no longer improving: stop when nothing else will help
                before = history[rows, step - PLATEAU]
                flat = (step + 1 - started > PLATEAU) & (loss_cpu > 0.5 * before) & ~bad
                # near its solution (L-BFGS has done what it can; the polish takes over), or far from it with no
                # restart left (the rest of its budget would leave it where it is)
                done |= flat & ((loss_cpu < near * g2) | (restarts >= max_restarts))
            done |= thrown
            if not bool(done.any()):
                continue
            out_steps[rows[done]] = step
            # what a stopping trial returns: the image this step began with (whose loss is loss_cpu), or for one
            # thrown out of the neighbourhood of its solution, the best one since its last start
            dd, th = done.to(dev), thrown.to(dev)
            end_z = torch.where(th[:, None], best_z, z_start)
            end_loss = torch.where(thrown, best_loss, loss_cpu)
            for snap_step, snap in snaps.items():
                if snap_step > step:
                    snap[rows[done]] = images(end_z[dd])
            _store(out_x, out_lab, out_loss, out_restarts, rows[done], end_z[dd], end_loss[done],
                   restarts[done], n_img, B, image_shape, num_classes)
            if bar is not None:
                bar.update(int(done.sum()) * (iterations - step - 1))
            keep = torch.nonzero(~done).flatten()
            rows, restarts, started, g2, wc = rows[keep], restarts[keep], started[keep], g2[keep], wc[keep]
            best_loss = best_loss[keep]
            if len(keep) == 0:
                break
            kd = keep.to(dev)
            z, best_z = z[kd], best_z[kd]
            opt.subset(kd)
            params = {k: v[kd] for k, v in params.items()}
            buffers = {k: v[kd] for k, v in buffers.items()}
            target = {k: v[kd] for k, v in target.items()}
            y = y[kd]
            closure = _closure(batched, params, buffers, target, y, wc.to(dev, dtype))

        if len(rows):  # trials that used the whole budget: one last evaluation for their final loss
            final_loss, _ = closure(z)
            final_loss = final_loss.double().cpu() / wc
            if iterations in snaps:
                snaps[iterations][rows] = images(z)
            _store(out_x, out_lab, out_loss, out_restarts, rows, z, final_loss, restarts, n_img, B,
                   image_shape, num_classes)

    polished = torch.zeros(T, dtype=torch.bool)
    if polish:
        near_rows = torch.nonzero(torch.isfinite(out_loss) & (out_loss < near * norms)
                                  & (out_loss >= polish_above * norms)).flatten()
        if len(near_rows):
            if bar is not None:
                bar.set_description(f"{key.upper()} x{T}: Gauss-Newton polish of {len(near_rows)}")
            x, loss, better = _polish(models, target_grads, labels, out_x, near_rows, split, image_shape, polish,
                                      dev, dtype, polish_above * norms[near_rows])
            out_x[near_rows] = x.to(out_x.dtype)
            out_loss[near_rows] = loss
            polished[near_rows] = better
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start_time
    diverged = ~torch.isfinite(out_loss) | ~torch.isfinite(out_x).flatten(1).all(1)
    if bool(diverged.any()):
        warnings.warn(f"{int(diverged.sum())} of {T} trials still had a non-finite loss or image after "
                      f"{max_restarts} restarts; their results are NaN/inf (see result.restarts)", RuntimeWarning,
                      stacklevel=2)
    if key == "dlg":
        pred = out_lab.argmax(-1)  # after optimisation, never before
    else:
        pred = labels.clone()
    return AttackResult(
        dummy_x=out_x, labels=pred, dummy_label=out_lab, loss=out_loss, converged=out_loss * weights < tol,
        steps=out_steps, restarts=out_restarts, loss_history=history, snapshots=snaps, seconds=seconds,
        device=str(dev), polished=polished,
    )


def _soft_ce(model: nn.Module, params: dict, buffers: dict, x: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """The client's loss on ``x``: cross-entropy against (soft) targets, averaged over the batch."""
    out = functional_call(model, (params, buffers), (x,))
    return -(soft * F.log_softmax(out, dim=-1)).sum(-1).mean()


def _client_update(model, params, buffers, x, soft, local_steps, local_lr, local_batch_size):
    """FedAvg's ``(W_0 - W_K) / lr`` after ``K`` SGD steps on ``x``, as a differentiable function of ``x``.

    The same steps as :func:`leaklib.gradients.fedavg_update` (mini-batches in order, cycling), written with
    ``torch.func.grad`` so that the outer gradient of the matching loss flows through every local step.
    """
    per_epoch = -(-x.shape[0] // local_batch_size)
    w = params
    for step in range(local_steps):
        lo = (step % per_epoch) * local_batch_size
        g = grad(_soft_ce, argnums=1)(model, w, buffers, x[lo : lo + local_batch_size],
                                      soft[lo : lo + local_batch_size])
        w = {name: w[name] - local_lr * g[name] for name in w}
    return {name: (params[name] - w[name]) / local_lr for name in params}


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of images ``(..., C, H, W)``: the mean absolute difference of vertically and of
    horizontally neighbouring pixels, summed (the image prior of Geiping et al. 2020 and Geng et al. 2021)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def _closure(batched, params, buffers, target, y, w):
    """The optimiser's view of the trials still running: ``z -> (loss (T,), gradient (T, dim))``, each trial's
    matching loss multiplied by its weight ``w`` (``scale_to``)."""

    def closure(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g, loss = batched(z, params, buffers, target, y, w)
        return loss.detach(), g.detach()

    return closure


def _split_head(model: nn.Module, image_shape: tuple[int, int, int]):
    """``(body, weight name, bias name)`` when the model is ``last_linear(body(x))``, else ``None``.

    The body is the model with its final Linear layer replaced by the identity; the split is checked on a
    random input, so a model that does anything after its last Linear layer takes the plain autograd path.
    """
    head = last_linear(model)
    path = next(name for name, module in model.named_modules() if module is head)
    body = copy.deepcopy(model)
    parent = body.get_submodule(path.rpartition(".")[0]) if "." in path else body
    setattr(parent, path.rpartition(".")[2], nn.Identity())
    probe = torch.rand(2, *image_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        param = next(model.parameters())
        probe = probe.to(param.device, param.dtype)
        try:
            same = torch.allclose(model(probe), head(body(probe)), rtol=1e-5, atol=1e-6)
        except RuntimeError:
            same = False
    if not same:
        return None
    return body, f"{path}.weight", (f"{path}.bias" if head.bias is not None else None)


_G64, _GG = "__last_layer_target_float64__", "__last_layer_target_norm2__"


def _split_matching_loss(body, p, b, dx, soft, target, w_name, b_name):
    """The gradient-matching loss with the last layer's terms in closed form (chapter 1).

    For features ``a_b`` and ``delta_b = (softmax(z_b) - y_b) / B``, the last layer's gradient is
    ``dW = sum_b delta_b a_b^T`` and ``db = sum_b delta_b``, so
    ``||dW - G||^2 = sum_{b,b'} (delta_b . delta_b')(a_b . a_b') - 2 sum_b delta_b^T G a_b + ||G||^2``: one
    matrix-vector product with ``G`` per sample instead of a ``(K, d)`` gradient and its second derivative. The
    expansion cancels near the optimum, so it is evaluated in float64, and so is the softmax of the logits:
    ``softmax(z) - y`` cancels for a confident model, and its float32 rounding would floor how closely that model's
    gradient can be matched. The body's gradient comes from autograd.
    """
    W = p[w_name]
    bias = p[b_name] if b_name is not None else None
    body_params = {k: v for k, v in p.items() if k not in (w_name, b_name)}

    def inner_loss(bp):  # softmax in float64: softmax - y cancels for a confident model
        a = functional_call(body, (bp, b), (dx,))
        z = (a @ W.T + (bias if bias is not None else 0.0)).double()
        return -(soft.double() * F.log_softmax(z, dim=-1)).sum(-1).mean(), (a, z)

    g, (a, z) = grad(inner_loss, has_aux=True)(body_params)
    loss = sum(((g[name] - target[name]) ** 2).sum() for name in body_params)
    delta = ((F.softmax(z, dim=-1) - soft) / z.shape[0]).double()
    # G in float64 and ||G||^2, computed once per run by `reconstruct` (for a 5,749-class head, converting G on
    # every evaluation cost more than the rest of the loss)
    G = target[_G64] if _G64 in target else target[w_name].double()
    GG = target[_GG] if _GG in target else (G * G).sum()
    a64 = a.double()
    head = ((delta @ delta.T) * (a64 @ a64.T)).sum() - 2 * (delta * (a64 @ G.T)).sum() + GG
    if b_name is not None:
        head = head + ((delta.sum(0) - target[b_name].double()) ** 2).sum()
    return loss + head


def _polish(models, target_grads, labels, start_x, rows, split, image_shape, steps, dev, dtype, stop_below):
    """Levenberg-Marquardt on single-image problems near their solution: ``(x (P, n) float64, loss (P,), better (P,))``.

    The matching loss is a nonlinear least-squares problem ``||r(x)||^2`` with residual ``r = g(x) - G``. A
    Gauss-Newton step solves ``(J^T J + lambda I) dx = -J^T r`` with ``J = dr/dx``; ``lambda`` starts at
    ``1e-12`` of the mean diagonal of ``J^T J`` (a plain Gauss-Newton step), grows a hundredfold for a trial whose
    step would raise its loss (up to ``LM_TRIES`` solves per Jacobian) and shrinks after a step that lowers it
    (Levenberg-Marquardt, Nocedal and Wright, ch. 10). A trial takes at most ``steps`` iterations and stops once its
    loss is below ``stop_below`` (per trial) or when no damping lowers it. With the model split as
    ``z = W a(x) + b`` (features ``a``, ``delta = softmax(z) - y``), the residual has three blocks - the body's
    gradient, the last layer's ``delta a^T - G_W`` and ``delta - G_b`` - and only the Jacobians of the body's
    gradient (``m_body x n``), of ``a`` (``d x n``) and of ``delta`` (``K x n``) are formed (``torch.func.jacfwd``,
    in the run's dtype); the last layer's part of the normal equations has the closed form

    .. math::  J_W^T J_W = \\|a\\|^2 D_\\delta^T D_\\delta + \\|\\delta\\|^2 D_a^T D_a + u v^T + v u^T,\\quad
               J_W^T r_W = D_\\delta^T R a + D_a^T R^T \\delta,

    with ``u = D_delta^T delta``, ``v = D_a^T a`` and ``R = delta a^T - G_W``, so a 5,749-class head costs no more
    than its ``K x n`` Jacobian. The residual and the normal equations are in float64. A step is kept only for the
    trials whose loss it lowers.
    """
    body, w_name, b_name = split
    body = copy.deepcopy(body).to("meta")
    n = math.prod(image_shape)
    names = [name for name, _ in models[0].named_parameters()]
    body_names = [name for name in names if name not in (w_name, b_name)]

    def parts(xf, p, b, y):
        dx = xf.reshape(1, *image_shape)
        W = p[w_name]
        bias = p[b_name] if b_name is not None else None

        def inner(bp):
            a = functional_call(body, (bp, b), (dx,))
            z = a @ W.T + (bias if bias is not None else 0.0)
            return -(y * F.log_softmax(z, dim=-1)).sum(), (a, z)

        g, (a, z) = grad(inner, has_aux=True)({k: p[k] for k in body_names})
        return torch.cat([g[k].flatten() for k in body_names]), a[0], F.softmax(z, dim=-1)[0] - y[0]

    values = vmap(parts)
    jacobians = vmap(jacfwd(parts))

    def residuals(x, p64, b64, y, G, G_body):
        """The loss and the residual blocks (body, ``R``, bias) at ``x``, with ``a`` and ``delta``, in float64."""
        g_body, a, delta = values(x, p64, b64, y)
        r_body = g_body - G_body
        R = delta[:, :, None] * a[:, None, :] - G[w_name]
        r_bias = delta - G[b_name] if b_name is not None else None
        loss = (r_body**2).sum(1) + (R**2).sum((1, 2))
        if r_bias is not None:
            loss = loss + (r_bias**2).sum(1)
        return loss, r_body, R, r_bias, a, delta

    m_body = sum(models[0].get_parameter(k).numel() for k in body_names)
    d = last_linear(models[0]).in_features
    K = last_linear(models[0]).out_features
    per_trial = 8 * (2 * (m_body + d + K) * n + 3 * n * n)
    budget = (8 if dev.type == "cuda" else 1) * 2**30
    group = max(1, budget // per_trial)
    new_xs, new_losses, new_better = [], [], []
    for lo in range(0, len(rows), group):
        ids = rows[lo : lo + group].tolist()
        p64, b64 = stack_module_state([copy.deepcopy(models[i]).to(dev, torch.float64) for i in ids])
        p64 = {k: v.detach() for k, v in p64.items()}
        if dtype == torch.float64:
            p_j, b_j = p64, b64
        else:
            p_j, b_j = stack_module_state([copy.deepcopy(models[i]).to(dev, dtype) for i in ids])
            p_j = {k: v.detach() for k, v in p_j.items()}
        G = [torch.stack([target_grads[i][k].detach() for i in ids]).to(dev, torch.float64)
             for k in range(len(names))]
        G = dict(zip(names, G, strict=True))
        G_body = torch.cat([G[k].flatten(1) for k in body_names], 1)
        y = F.one_hot(labels[ids], K).to(dev, torch.float64)  # (P, 1, K)
        x = start_x[ids].reshape(len(ids), n).to(dev, torch.float64)
        loss, r_body, R, r_bias, a, delta = residuals(x, p64, b64, y, G, G_body)
        better = torch.zeros(len(ids), dtype=torch.bool, device=dev)
        lam = torch.full((len(ids),), LM_DAMPING[0], device=dev, dtype=torch.float64)  # relative damping per trial
        active = torch.ones(len(ids), dtype=torch.bool, device=dev)
        for _ in range(steps):
            sel = torch.nonzero(active).flatten()
            if len(sel) == 0:
                break
            with warnings.catch_warnings():  # torch's own jvp rules call the deprecated torch.jit.script on import
                warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
                J = jacobians(x[sel].to(dtype), _take(p_j, sel), _take(b_j, sel), y[sel].to(dtype))
            J_body, D_a, D_delta = (j.to(torch.float64) for j in J)
            a_s, d_s, R_s = a[sel], delta[sel], R[sel]
            u = torch.einsum("pkn,pk->pn", D_delta, d_s)
            v = torch.einsum("pdn,pd->pn", D_a, a_s)
            A = (J_body.transpose(1, 2) @ J_body
                 + (a_s * a_s).sum(1)[:, None, None] * (D_delta.transpose(1, 2) @ D_delta)
                 + (d_s * d_s).sum(1)[:, None, None] * (D_a.transpose(1, 2) @ D_a)
                 + u[:, :, None] * v[:, None, :] + v[:, :, None] * u[:, None, :])
            rhs = (torch.einsum("pmn,pm->pn", J_body, r_body[sel])
                   + torch.einsum("pkn,pkd,pd->pn", D_delta, R_s, a_s)
                   + torch.einsum("pdn,pkd,pk->pn", D_a, R_s, d_s))
            if b_name is not None:
                A = A + D_delta.transpose(1, 2) @ D_delta
                rhs = rhs + torch.einsum("pkn,pk->pn", D_delta, r_bias[sel])
            del J, J_body, D_a, D_delta
            scale = torch.diagonal(A, dim1=1, dim2=2).mean(1) + torch.finfo(torch.float64).tiny
            pending = torch.ones(len(sel), dtype=torch.bool, device=dev)
            for _ in range(LM_TRIES):  # Levenberg-Marquardt: raise the damping of a trial until its step helps
                ps = torch.nonzero(pending).flatten()
                rows_ = sel[ps]
                damped = A[ps]  # a copy: its diagonal gets this try's damping
                damped.diagonal(dim1=1, dim2=2).add_((lam[rows_] * scale[ps])[:, None])
                L, info = torch.linalg.cholesky_ex(damped)
                step = torch.cholesky_solve(-rhs[ps, :, None], L)[..., 0]
                new_x = x[rows_] + torch.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0)
                new = residuals(new_x, _take(p64, rows_), _take(b64, rows_), y[rows_], _take(G, rows_), G_body[rows_])
                take = (info == 0) & torch.isfinite(new[0]) & (new[0] < loss[rows_])
                t_rows = rows_[take]
                x[t_rows] = new_x[take]
                for old, nw in zip((loss, r_body, R, r_bias, a, delta), new, strict=True):
                    if old is not None:
                        old[t_rows] = nw[take]
                better[t_rows] = True
                lam[t_rows] = torch.clamp(lam[t_rows] / LM_DAMPING[1], min=LM_DAMPING[0])
                lam[rows_[~take]] *= LM_DAMPING[1]
                pending[ps[take]] = False
                if not bool(pending.any()):
                    break
            # a trial stops once close enough, or when no damping gave a better point
            active[sel[pending]] = False
            active &= loss >= stop_below[lo : lo + group].to(dev)
        new_xs.append(x.reshape(len(ids), 1, *image_shape).cpu())
        new_losses.append(loss.cpu())
        new_better.append(better.cpu())
    return torch.cat(new_xs), torch.cat(new_losses), torch.cat(new_better)


def _take(tensors: dict, index: torch.Tensor) -> dict:
    return {k: v[index] for k, v in tensors.items()}


def _store(out_x, out_lab, out_loss, out_restarts, rows, z, loss, restarts, n_img, B, image_shape, num_classes):
    z = z.detach().cpu()
    out_x[rows] = z[:, :n_img].reshape(-1, B, *image_shape).to(out_x.dtype)
    if out_lab is not None:
        out_lab[rows] = z[:, n_img:].reshape(-1, B, num_classes).to(out_lab.dtype)
    out_loss[rows] = loss.double()
    out_restarts[rows] = restarts


def reconstruct_batch(
    models: nn.Module | Sequence[nn.Module],
    updates: Sequence[Sequence[torch.Tensor]],
    image_shape: tuple[int, int, int],
    labels: torch.Tensor,
    **kwargs,
) -> AttackResult:
    """Reconstruct each trial's batch from its update with known (e.g. restored) labels ``(T, B)``.

    The labels fix the one-hot targets of the dummy batch, as Geng et al. (2021) do after restoring the label counts
    (:func:`leaklib.labels.restore_labels`, then :func:`leaklib.labels.counts_to_labels`). The reconstructions come
    back in no particular order; line them up with :func:`leaklib.metrics.match_batch` before scoring. Keyword
    arguments are those of :func:`reconstruct` (``update="fedavg"``, ``local_steps``, ``local_lr``, ``distance``,
    ``tv``, ``optimizer``, ...).
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.dim() == 1:
        labels = labels[None]
    if labels.dim() != 2:
        raise ValueError(f"labels must be (trials, batch_size); got shape {tuple(labels.shape)}")
    for name in ("method", "batch_size", "labels"):
        if name in kwargs:
            raise TypeError(f"reconstruct_batch sets {name} itself (from labels); do not pass it")
    return reconstruct(models, updates, image_shape, method="idlg", batch_size=labels.shape[1], labels=labels,
                       **kwargs)


def dlg(models, target_grads, image_shape, **kwargs) -> AttackResult:
    """DLG (Zhu et al. 2019): dummy image and dummy soft label, optimised together. See :func:`reconstruct`."""
    return reconstruct(models, target_grads, image_shape, method="dlg", **kwargs)


def idlg(models, target_grads, image_shape, **kwargs) -> AttackResult:
    """iDLG (Zhao et al. 2020): the label from the gradient, then the image alone. See :func:`reconstruct`."""
    return reconstruct(models, target_grads, image_shape, method="idlg", **kwargs)
