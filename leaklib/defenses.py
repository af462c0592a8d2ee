"""Defenses: what a client does to its update before sharing it, and what that costs.

DLG {Zhu, Liu, Han 2019, section 5} tries three ways to blunt its own attack - noise, low precision and gradient
compression (pruning) - and DP-SGD {Abadi et al. 2016} is the defense with a guarantee. Each is a transform of the
client's shared update ``G = (g_1, ..., g_L)`` (one tensor per parameter):

- ``prune:p`` - per layer, zero the fraction ``p`` of the entries of ``g_l`` with the smallest magnitude (DLG's
  "gradient pruning"; ``floor(p * n_l)`` entries of a layer with ``n_l``).
- ``gauss:v`` - ``g + e`` with ``e ~ N(0, v)`` i.i.d. per entry (``v`` is the *variance*, as DLG reports it).
- ``lap:v`` - ``g + e`` with ``e ~ Laplace(0, b)``, ``b = sqrt(v / 2)``, so the noise again has variance ``v``.
- ``fp16`` / ``bf16`` - round every entry to IEEE half precision or bfloat16 and back.
- ``dpsgd:sigma`` or ``dpsgd:sigma:C`` - DP-SGD's gradient: each *sample's* gradient clipped to norm ``C`` (default
  1), summed, Gaussian noise ``N(0, sigma^2 C^2)`` added, divided by the batch size. It needs the per-sample
  gradients, so it is computed from the client's data (through Opacus, :func:`client_gradients`), not from ``G``.
- ``none`` - share ``G`` as it is.

A chain ``"dpsgd:0.5+prune:0.3+fp16"`` applies left to right. Every random draw comes from a seeded generator.
:func:`train_under_defense` trains a model with the same transform applied to every step's gradient (DP-SGD through
Opacus' ``PrivacyEngine``, which also accounts the privacy spent), so the accuracy a defense costs is measured on the
same footing as the privacy it buys.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .gradients import _check_batch, check_update, fedsgd_gradients

__all__ = ["DEFENSE_KINDS", "Defense", "parse_defenses", "apply_defenses", "prune", "gaussian_noise",
           "laplacian_noise", "round_precision", "client_gradients", "train_under_defense"]

DEFENSE_KINDS = ("none", "prune", "gauss", "lap", "fp16", "bf16", "dpsgd")
_STRENGTH = {"prune": "a pruned fraction p in [0, 1]", "gauss": "a noise variance >= 0",
             "lap": "a noise variance >= 0",
             "dpsgd": "a noise multiplier sigma >= 0 (and optionally a clip norm C > 0)"}
_EXAMPLES = {"none": "none", "prune": "prune:0.3", "gauss": "gauss:1e-2", "lap": "lap:1e-2", "fp16": "fp16",
             "bf16": "bf16", "dpsgd": "dpsgd:1.0:0.5"}
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _number(argument: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{argument} must be a finite number; got {value!r}")
    return float(value)


def _check_fraction(p: object) -> float:
    p = _number("p (the pruned fraction)", p)
    if not 0 <= p <= 1:
        raise ValueError(f"p (the pruned fraction) must lie in [0, 1]; got {p!r}")
    return p


def _check_variance(variance: object) -> float:
    variance = _number("variance", variance)
    if variance < 0:
        raise ValueError(f"variance must be >= 0 (it is the noise's variance, not its log); got {variance!r}")
    return variance


@dataclass(frozen=True)
class Defense:
    """One defense: ``kind`` (see :data:`DEFENSE_KINDS`) and its strength.

    ``strength``: the pruned fraction ``p`` (``prune``), the noise variance (``gauss``, ``lap``) or the noise
    multiplier ``sigma`` (``dpsgd``); ``None`` for ``none``, ``fp16`` and ``bf16``. ``clip``: DP-SGD's per-sample
    norm bound ``C``. ``str(defense)`` is the spec it parses from (``"prune:0.3"``, ``"dpsgd:1.0:0.5"``).
    """

    kind: str
    strength: float | None = None
    clip: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in DEFENSE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(DEFENSE_KINDS)}; got {self.kind!r}")
        if self.kind in _STRENGTH:
            if self.strength is None:
                raise ValueError(f"defense {self.kind!r} needs a strength: {_STRENGTH[self.kind]}")
            check = {"prune": _check_fraction, "gauss": _check_variance, "lap": _check_variance}.get(self.kind)
            if check is not None:
                object.__setattr__(self, "strength", check(self.strength))
            else:
                sigma = _number("sigma (DP-SGD's noise multiplier)", self.strength)
                if sigma < 0:
                    raise ValueError(f"sigma (DP-SGD's noise multiplier) must be >= 0; got {sigma!r}")
                object.__setattr__(self, "strength", sigma)
        elif self.strength is not None:
            raise ValueError(f"defense {self.kind!r} takes no strength; got {self.strength!r}")
        if self.kind == "dpsgd":
            clip = 1.0 if self.clip is None else _number("clip (DP-SGD's per-sample norm bound C)", self.clip)
            if not clip > 0:
                raise ValueError(f"clip (DP-SGD's per-sample norm bound C) must be > 0; got {clip!r}")
            object.__setattr__(self, "clip", clip)
        elif self.clip is not None:
            raise ValueError(f"clip is DP-SGD's norm bound; defense {self.kind!r} takes none (got {self.clip!r})")

    def __str__(self) -> str:
        if self.strength is None:
            return self.kind
        text = f"{self.kind}:{self.strength:g}"
        return text + (f":{self.clip:g}" if self.kind == "dpsgd" and self.clip != 1.0 else "")

    def apply(self, update: Sequence[torch.Tensor], *, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """The transformed update (new tensors; ``update`` is left as it was)."""
        if self.kind == "none":
            return [g.clone() for g in update]
        if self.kind == "prune":
            return prune(update, self.strength)
        if self.kind == "gauss":
            return gaussian_noise(update, self.strength, generator=generator)
        if self.kind == "lap":
            return laplacian_noise(update, self.strength, generator=generator)
        if self.kind in _DTYPES:
            return round_precision(update, _DTYPES[self.kind])
        raise ValueError("dpsgd clips each sample's gradient, so it cannot transform an aggregated update: compute "
                         "the shared gradient with leaklib.defenses.client_gradients(model, x, y, defenses)")


def parse_defenses(spec: str | Defense | Sequence[Defense]) -> tuple[Defense, ...]:
    """``"prune:0.3"``, ``"gauss:1e-2"``, ``"dpsgd:1.0:0.5"``, ``"none"`` or a chain ``"dpsgd:0.5+fp16"`` (applied
    left to right) -> a tuple of :class:`Defense`. ``dpsgd`` must come first in a chain: it makes the gradient."""
    if isinstance(spec, Defense):
        return (spec,)
    if not isinstance(spec, str):
        if isinstance(spec, Sequence) and all(isinstance(d, Defense) for d in spec):
            chain = tuple(spec)
        else:
            raise TypeError(f"defenses must be a spec string such as 'prune:0.3+fp16' or Defense objects; "
                            f"got {spec!r}")
    else:
        chain = tuple(_parse_one(part.strip(), spec) for part in spec.split("+"))
    if not chain:
        raise ValueError("defenses is an empty chain; use 'none' for no defense")
    if any(d.kind == "dpsgd" for d in chain[1:]):
        raise ValueError(f"dpsgd makes the gradient from the client's samples, so it must come first in a chain; "
                         f"got {spec!r}")
    return chain


def _parse_one(part: str, spec: str) -> Defense:
    kind, *values = part.lower().split(":")
    if kind not in DEFENSE_KINDS:
        raise ValueError(f"unknown defense {kind!r} in {spec!r}; valid: {', '.join(DEFENSE_KINDS)} "
                         "(e.g. 'prune:0.3', 'gauss:1e-2', 'lap:1e-2', 'fp16', 'bf16', 'dpsgd:1.0', 'none')")
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise ValueError(f"defense {part!r} in {spec!r}: the strength must be a number") from None
    max_numbers = 2 if kind == "dpsgd" else (1 if kind in _STRENGTH else 0)
    if len(numbers) > max_numbers or (kind in _STRENGTH and not numbers):
        raise ValueError(f"defense {part!r} in {spec!r} takes {_STRENGTH.get(kind, 'no strength')}; "
                         f"e.g. {_EXAMPLES[kind]!r}")
    strength = numbers[0] if numbers else None
    clip = numbers[1] if len(numbers) > 1 else None
    return Defense(kind, strength, clip)


def prune(update: Sequence[torch.Tensor], p: float) -> list[torch.Tensor]:
    """DLG's gradient pruning: in each tensor ``g_l`` zero the ``floor(p * n_l)`` entries of smallest ``|g_l|``.

    Ties are broken by position (a stable sort), so exactly that many entries are zeroed.
    """
    p = _check_fraction(p)
    out = []
    for g in update:
        flat = g.detach().reshape(-1).clone()
        k = math.floor(p * flat.numel() + 1e-9)  # 0.29 * 100 is 28.999...: count the entries p names
        if k:
            flat[torch.argsort(flat.abs(), stable=True)[:k]] = 0
        out.append(flat.reshape(g.shape))
    return out


def gaussian_noise(update: Sequence[torch.Tensor], variance: float, *,
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """``g + e``, ``e ~ N(0, variance)`` independently for every entry (DLG's noise is given by its variance)."""
    std = math.sqrt(_check_variance(variance))
    return [g.detach() + std * torch.randn(g.shape, generator=generator, dtype=g.dtype).to(g.device) for g in update]


def laplacian_noise(update: Sequence[torch.Tensor], variance: float, *,
                    generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """``g + e``, ``e ~ Laplace(0, b)`` with ``b = sqrt(variance / 2)`` (a Laplace variable has variance ``2 b^2``).

    Drawn as ``b (E_1 - E_2)`` with ``E_i = -log(1 - U_i)`` standard exponentials, ``U_i ~ U[0, 1)``.
    """
    b = math.sqrt(_check_variance(variance) / 2)
    out = []
    for g in update:
        u = torch.rand((2, *g.shape), generator=generator, dtype=torch.float64)
        e = -torch.log1p(-u)
        out.append(g.detach() + (b * (e[0] - e[1])).to(dtype=g.dtype, device=g.device))
    return out


def round_precision(update: Sequence[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """Each entry rounded to ``dtype`` (``torch.float16`` or ``torch.bfloat16``) and cast back: what a client that
    shares half-precision updates sends, at the receiver's precision."""
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float16 or torch.bfloat16; got {dtype}")
    return [g.detach().to(dtype).to(g.dtype) for g in update]


def apply_defenses(update: Sequence[torch.Tensor], defenses: str | Defense | Sequence[Defense], *,
                   seed: int = 0) -> list[torch.Tensor]:
    """Apply a chain of update transforms (no ``dpsgd``: see :func:`client_gradients`), seeded by ``seed``."""
    chain = parse_defenses(defenses)
    gen = torch.Generator().manual_seed(int(seed))
    out = [g.detach() for g in update]
    for d in chain:
        out = d.apply(out, generator=gen)
    return out


def _dp_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, d: Defense,
                  gen: torch.Generator) -> list[torch.Tensor]:
    """DP-SGD's shared gradient through Opacus: per-sample gradients, clipped to ``C``, summed, noised, averaged."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    gsm = GradSampleModule(copy.deepcopy(model))
    params = [p for p in gsm.parameters() if p.requires_grad]
    optimizer = DPOptimizer(torch.optim.SGD(params, lr=0.0), noise_multiplier=d.strength, max_grad_norm=d.clip,
                            expected_batch_size=len(y), generator=gen)
    device = params[0].device
    optimizer.zero_grad()
    with warnings.catch_warnings():  # Opacus' hooks on a first layer whose input needs no gradient: harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        F.cross_entropy(gsm(x.to(device)), y.to(device)).backward()
    optimizer.pre_step()  # clip per sample, add N(0, sigma^2 C^2) to the sum, divide by the batch size
    return [p.grad.detach().clone() for p in params]


def client_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     defenses: str | Defense | Sequence[Defense] = "none", *, seed: int = 0) -> list[torch.Tensor]:
    """The FedSGD gradient a client shares under ``defenses``: :func:`leaklib.gradients.fedsgd_gradients` of the
    mean cross-entropy on ``(x, y)`` (DP-SGD's clipped and noised version when the chain starts with ``dpsgd``),
    then the other transforms in order. One generator seeded by ``seed`` serves every random draw."""
    chain = parse_defenses(defenses)
    _check_batch(model, x, y)
    param = next(model.parameters())
    gen = torch.Generator(device=param.device).manual_seed(int(seed))
    if chain[0].kind == "dpsgd":
        grads, chain = _dp_gradients(model, x, y, chain[0], gen), chain[1:]
    else:
        grads = fedsgd_gradients(model, x, y)
    cpu_gen = gen if param.device.type == "cpu" else torch.Generator().manual_seed(int(seed))
    for d in chain:
        grads = d.apply(grads, generator=cpu_gen)
    check_update(model, grads, argument="the defended gradient")
    return grads


def train_under_defense(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    defenses: str | Defense | Sequence[Defense] = "none",
    *,
    epochs: int = 3,
    lr: float = 0.1,
    batch_size: int = 64,
    momentum: float = 0.9,
    seed: int = 0,
    delta: float = 1e-5,
) -> dict:
    """Train ``model`` in place with SGD (momentum), every step's mini-batch gradient shared under ``defenses``.

    The utility side of the privacy-utility trade-off: a FedSGD client that defends every update it sends trains the
    model with those updates. Without ``dpsgd`` each step uses :func:`apply_defenses` on the mini-batch gradient;
    with it, Opacus' ``PrivacyEngine`` trains with Poisson-sampled batches of expected size ``batch_size``,
    per-sample clipping to ``C`` and noise multiplier ``sigma`` (the rest of the chain then transforms the noised
    gradient), and its RDP accountant reports the ``epsilon`` spent at ``delta``.

    Returns ``{"model", "epsilon"}`` (``epsilon``: ``None`` without DP-SGD; ``inf`` when ``sigma`` is 0; an upper
    bound from the RDP accountant otherwise).
    """
    chain = parse_defenses(defenses)
    _check_batch(model, x, y)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number; got {lr!r}")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    data = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(data, batch_size=min(batch_size, len(y)), shuffle=True, generator=gen)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    model.train()
    engine = None
    if chain[0].kind == "dpsgd":
        from opacus import PrivacyEngine

        dp, chain = chain[0], chain[1:]
        with warnings.catch_warnings():  # Opacus warns about its non-secure RNG: seeded reproducibility is the point
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp")
            # Poisson sampling draws its batches from the loader's generator, the noise from noise_generator
            wrapped, optimizer, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=dp.strength,
                max_grad_norm=dp.clip, noise_generator=torch.Generator(device=device).manual_seed(int(seed) + 1))
    else:
        wrapped = model
    params = list(model.parameters())

    def transform() -> None:  # the rest of the chain, on the gradient the step is about to use
        new = apply_defenses([p.grad for p in params], chain, seed=int(torch.randint(2**31, (1,), generator=gen)))
        for p, g in zip(params, new, strict=True):
            p.grad = g

    for _ in range(epochs):
        for xb, yb in loader:
            if len(yb) == 0:  # Poisson sampling can draw an empty batch
                continue
            optimizer.zero_grad()
            with warnings.catch_warnings():  # Opacus' hooks on a first layer whose input needs no gradient
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                F.cross_entropy(wrapped(xb.to(device)), yb.to(device)).backward()
            if engine is not None and chain:
                optimizer.pre_step()  # DP-SGD's clipped, noised, averaged gradient into p.grad,
                transform()  # then the rest of the chain,
                optimizer.original_optimizer.step()  # then the plain SGD step
            else:
                if chain:
                    transform()
                optimizer.step()
    epsilon = None
    if engine is not None:
        with warnings.catch_warnings():  # tiny sigma: the bound is loose at the smallest order; it is still a bound
            warnings.filterwarnings("ignore", message="Optimal order is the smallest alpha")
            epsilon = float(engine.get_epsilon(delta)) if dp.strength > 0 else math.inf
        for p in params:  # Opacus leaves per-sample gradients on the parameters
            p.grad_sample = None
    return {"model": model.eval(), "epsilon": epsilon}
