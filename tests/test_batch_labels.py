"""leaklib.labels: batch label restoration (GradInversion, LLG, Geng et al., iLRG) on constructed and real cases."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from leaklib import metrics
from leaklib.data import load_dataset
from leaklib.experiments import label_setup, label_trial, reproduce_labels
from leaklib.gradients import fedavg_update, fedsgd_gradients
from leaklib.labels import (
    LABEL_METHODS,
    counts_to_labels,
    geng_counts,
    label_counts,
    last_layer_update,
    restore_labels,
    round_counts,
)
from leaklib.models import build_model, convnet, last_layer_inputs

BATCH_METHODS = ("yin", "llg", "geng", "ilrg")


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", 400, seed=0, source="bundled", verbose=False)


def test_round_counts_are_non_negative_integers_summing_to_b():
    gen = torch.Generator().manual_seed(0)
    for B in (1, 3, 8, 128):
        for _ in range(50):
            est = torch.randn(10, generator=gen, dtype=torch.float64) * B / 3
            counts = round_counts(est, B)
            assert counts.dtype == torch.int64 and int(counts.sum()) == B and bool((counts >= 0).all())
    assert round_counts(torch.tensor([2.2, 0.9, -0.4, 0.3]), 3).tolist() == [2, 1, 0, 0]
    assert round_counts(torch.tensor([1.6, 1.6, 0.0]), 3).tolist() in ([2, 1, 0], [1, 2, 0])


def test_counts_and_labels_round_trip():
    y = torch.tensor([3, 0, 3, 7])
    counts = label_counts(y, 10)
    assert counts.tolist() == [1, 0, 0, 2, 0, 0, 0, 1, 0, 0]
    assert counts_to_labels(counts).tolist() == [0, 3, 3, 7]
    assert metrics.instance_accuracy(counts, counts) == 1.0
    wrong = counts.clone()
    wrong[3], wrong[5] = 1, 1  # one sample of class 3 restored as class 5
    assert metrics.instance_accuracy(wrong, counts) == pytest.approx(0.75)


@pytest.mark.parametrize("method", LABEL_METHODS)
def test_every_method_is_exact_for_one_sample(method, mnist):
    for seed in range(4):
        model = build_model("convnet", "mnist", seed=seed)
        x, y = mnist.x[seed : seed + 1], mnist.y[seed : seed + 1]
        counts = restore_labels(model, fedsgd_gradients(model, x, y), 1, method=method)
        assert counts.tolist() == label_counts(y, 10).tolist()


@pytest.mark.parametrize("method", ["yin", "llg", "ilrg"])
def test_unique_labels_on_an_untrained_relu_net_are_exact(method, mnist):
    """With non-negative features, a row of g_W is non-negative exactly when its class is absent (Yin, LLG)."""
    for seed in range(5):
        model = build_model("convnet", "mnist", seed=seed)
        gen = torch.Generator().manual_seed(seed)
        classes = torch.randperm(10, generator=gen)[:6]
        idx = torch.stack([torch.nonzero(mnist.y == c).flatten()[0] for c in classes])
        x, y = mnist.x[idx], mnist.y[idx]
        counts = restore_labels(model, fedsgd_gradients(model, x, y), 6, method=method)
        assert counts.tolist() == label_counts(y, 10).tolist(), (method, seed)


def test_geng_is_exact_when_every_sample_shares_features_and_softmax():
    """A batch of one image under several labels: p_b and O_b are the same for all, so Eq. 7 holds exactly."""
    model = convnet(1, 10, 28, seed=0)
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([2, 2, 2, 5, 7, 7, 0, 9])
    grads = fedsgd_gradients(model, x.expand(len(y), -1, -1, -1), y)
    dW, _ = last_layer_update(model, grads)
    with torch.no_grad():
        a, z = last_layer_inputs(model, x)
    counts = geng_counts(dW, torch.softmax(z.double(), -1)[0], a.double().sum(), len(y))
    assert counts.tolist() == label_counts(y, 10).tolist()
    # iLRG is exact in the same case: every class embedding g_W[j] / g_b[j] is that image's features
    assert restore_labels(model, grads, len(y), method="ilrg").tolist() == label_counts(y, 10).tolist()


def test_geng_and_ilrg_with_duplicates_on_an_untrained_convnet(mnist):
    gen = torch.Generator().manual_seed(0)
    for method in ("geng", "ilrg"):
        accs = []
        for seed in range(4):
            model = build_model("convnet", "mnist", seed=seed)
            idx = torch.randint(0, len(mnist.y), (32,), generator=gen)
            x, y = mnist.x[idx], mnist.y[idx]
            counts = restore_labels(model, fedsgd_gradients(model, x, y), 32, method=method)
            accs.append(metrics.instance_accuracy(counts, label_counts(y, 10)))
        assert sum(accs) / len(accs) >= 0.95, (method, accs)


@pytest.mark.parametrize("method", BATCH_METHODS)
def test_counts_are_non_negative_and_sum_to_b_on_trained_models_too(method, mnist):
    model = build_model("lenet", "mnist", seed=0)
    from leaklib.models import train_model

    train_model(model, mnist.x[:200], mnist.y[:200], steps=30, seed=0)
    for B in (3, 16, 64):
        x, y = mnist.x[200 : 200 + B], mnist.y[200 : 200 + B]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            counts = restore_labels(model, fedsgd_gradients(model, x, y), B, method=method)
        assert counts.dtype == torch.int64 and int(counts.sum()) == B and bool((counts >= 0).all())


@pytest.mark.parametrize("method", BATCH_METHODS)
def test_fedavg_with_one_local_step_agrees_with_fedsgd(method, mnist):
    model = build_model("convnet", "mnist", seed=2)
    x, y = mnist.x[:8], mnist.y[:8]
    from_grad = restore_labels(model, fedsgd_gradients(model, x, y), 8, method=method)
    from_update = restore_labels(model, fedavg_update(model, x, y, local_steps=1, lr=0.05), 8, method=method,
                                 lr=0.05, local_steps=1)
    assert from_update.tolist() == from_grad.tolist()


def test_fedavg_after_five_local_steps(mnist):
    model = build_model("convnet", "mnist", seed=3)
    x, y = mnist.x[:32], mnist.y[:32]
    update = fedavg_update(model, x, y, local_steps=5, lr=0.1)
    counts = restore_labels(model, update, 32, method="geng", lr=0.1, local_steps=5)
    assert metrics.instance_accuracy(counts, label_counts(y, 10)) >= 0.9


def test_assumptions_that_do_not_hold_warn_or_fail_clearly(mnist):
    torch.manual_seed(0)
    tanh = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 10))
    grads = fedsgd_gradients(tanh, mnist.x[:4], mnist.y[:4])
    for method in ("geng", "llg", "yin"):
        with pytest.warns(UserWarning, match="non-negative inputs to the last layer"):
            restore_labels(tanh, grads, 4, method=method, image_shape=(1, 28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # iLRG tolerates features of either sign: no warning
        restore_labels(tanh, grads, 4, method="ilrg")
    nobias = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10, bias=False))
    grads = fedsgd_gradients(nobias, mnist.x[:4], mnist.y[:4])
    with pytest.raises(ValueError, match="no bias"):
        restore_labels(nobias, grads, 4, method="ilrg")
    with pytest.raises(ValueError, match="geng.*image_shape"):
        restore_labels(nobias, grads, 4, method="geng")
    model = build_model("convnet", "mnist", seed=0)
    with pytest.warns(UserWarning, match="unique labels"):
        restore_labels(model, fedsgd_gradients(model, mnist.x[:16], mnist.y[:16]), 16, method="yin")


def test_bad_input_names_the_argument(mnist):
    model = build_model("lenet", "mnist", seed=0)
    x, y = mnist.x[:6], mnist.y[:6]
    grads = fedsgd_gradients(model, x, y)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            restore_labels(model, grads, bad)
    with pytest.raises(ValueError, match=r"batch_size=2 disagrees with the update.*numerical rank \d"):
        restore_labels(model, grads, 2)
    with pytest.raises(ValueError, match="batch_size=6: iDLG"):
        restore_labels(model, grads, 6, method="idlg")
    with pytest.raises(ValueError, match=r"target_grads has 9 tensors but the model has 8"):
        restore_labels(model, [*grads, torch.zeros(3)], 6)
    other = build_model("lenet", "cifar100", seed=0)
    with pytest.raises(ValueError, match=r"target_grads\[0\] has shape .* but parameter 'body.0.weight'"):
        restore_labels(other, grads, 6)
    with pytest.raises(ValueError, match="method='gradinversion' is not valid"):
        restore_labels(model, grads, 6, method="gradinversion")
    with pytest.raises(ValueError, match="local_steps=3 describes a FedAvg update"):
        restore_labels(model, grads, 6, local_steps=3)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        restore_labels(model, grads, 6, lr=-0.1)


def test_label_trial_draws_unique_or_duplicate_batches():
    setup = label_setup("mnist", "convnet", pool=200)
    out = label_trial(setup, 8, duplicates=False, methods=("geng", "ilrg"), device="cpu")
    assert bool((out["true"] <= 1).all()) and int(out["true"].sum()) == 8
    out = label_trial(setup, 64, duplicates=True, methods=("idlg", "geng"), device="cpu")
    assert int(out["true"].max()) > 1 and "idlg" not in out  # iDLG only reads one sample
    with pytest.raises(ValueError, match="batch_size=16 unique labels need 16 classes"):
        label_trial(setup, 16, duplicates=False, device="cpu")
    with pytest.raises(ValueError, match="only makes sense for an untrained model"):
        label_setup("mnist", "convnet", trained_steps=5, num_classes=50)


def test_reproduce_labels_rows():
    out = reproduce_labels("mnist", "convnet", methods=("idlg", "geng"), batch_sizes=(1, 8), trials=2,
                           device="cpu", progress=False)
    rows = {(r["method"], r["batch_size"]): r for r in out["rows"]}
    assert set(rows) == {("idlg", 1), ("geng", 1), ("geng", 8)}
    assert rows[("idlg", 1)]["instance_accuracy"] == 1.0 and rows[("idlg", 1)]["exact_batch_rate"] == 1.0
    keys = {"method", "batch_size", "duplicates", "trained_steps", "local_steps", "instance_accuracy",
            "exact_batch_rate"}
    assert all(set(r) == keys for r in out["rows"])
