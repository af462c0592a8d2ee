"""leaklib.defenses: each transform against its definition, DP-SGD against a hand-written reference, bad strengths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from leaklib.data import load_dataset
from leaklib.defenses import (
    Defense,
    apply_defenses,
    client_gradients,
    gaussian_noise,
    laplacian_noise,
    parse_defenses,
    prune,
    round_precision,
    train_under_defense,
)
from leaklib.gradients import fedsgd_gradients
from leaklib.models import build_model


def _update(seed: int = 0, sizes=((40, 50), (50,), (7, 3, 5, 5))) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) * (k + 1) for k, s in enumerate(sizes)]


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", 200, seed=0, source="bundled", verbose=False)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_prune_zeroes_the_smallest_fraction_of_each_layer(p):
    update = _update()
    before = [g.clone() for g in update]
    out = prune(update, p)
    for g, o in zip(update, out, strict=True):
        n = g.numel()
        zeroed = o == 0
        assert int(zeroed.sum()) == math.floor(p * n)  # exactly floor(p * n) per layer (no entry of g is 0)
        assert torch.equal(o[~zeroed], g[~zeroed])  # the rest untouched
        if 0 < int(zeroed.sum()) < n:
            assert float(g[zeroed].abs().max()) <= float(g[~zeroed].abs().min())  # the smallest ones went
    assert all(torch.equal(a, b) for a, b in zip(update, before, strict=True)), "the input was modified"


def test_prune_breaks_ties_to_exactly_the_fraction():
    g = torch.ones(10)
    assert int((prune([g], 0.35)[0] == 0).sum()) == 3
    assert int((prune([torch.arange(1.0, 101.0)], 0.29)[0] == 0).sum()) == 29  # 0.29 * 100 = 28.999... in floats


@pytest.mark.parametrize("variance", [1e-4, 1e-2, 0.5])
def test_gaussian_noise_has_the_given_variance(variance):
    g = torch.linspace(-1, 1, 400_000)
    noise = gaussian_noise([g], variance, generator=torch.Generator().manual_seed(1))[0] - g
    assert abs(float(noise.mean())) < 5 * math.sqrt(variance / g.numel())
    assert float(noise.var()) == pytest.approx(variance, rel=0.02)
    kurtosis = float((noise**4).mean() / noise.var() ** 2)
    assert kurtosis == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("variance", [1e-4, 1e-2, 0.5])
def test_laplacian_noise_has_the_given_variance_and_laplace_tails(variance):
    g = torch.zeros(400_000)
    noise = laplacian_noise([g], variance, generator=torch.Generator().manual_seed(2))[0]
    assert float(noise.var()) == pytest.approx(variance, rel=0.03)
    b = math.sqrt(variance / 2)
    assert float(noise.abs().mean()) == pytest.approx(b, rel=0.02)  # E|X| = b for Laplace(0, b)
    kurtosis = float((noise**4).mean() / noise.var() ** 2)
    assert kurtosis == pytest.approx(6.0, rel=0.1)  # Laplace 6, Gaussian 3


def test_noise_is_seeded_and_zero_variance_is_the_identity():
    update = _update()
    a = apply_defenses(update, "gauss:1e-2+lap:1e-3", seed=5)
    b = apply_defenses(update, "gauss:1e-2+lap:1e-3", seed=5)
    c = apply_defenses(update, "gauss:1e-2+lap:1e-3", seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    assert all(torch.equal(x, y) for x, y in zip(apply_defenses(update, "gauss:0+lap:0"), update, strict=True))


@pytest.mark.parametrize(("spec", "dtype", "rel"), [("fp16", torch.float16, 2**-11), ("bf16", torch.bfloat16, 2**-8)])
def test_precision_rounds_to_the_format_and_back(spec, dtype, rel):
    update = [g * 1e-2 for g in _update()]
    out = apply_defenses(update, spec)
    for g, o in zip(update, out, strict=True):
        assert o.dtype == g.dtype
        assert torch.equal(o, g.to(dtype).to(g.dtype))
        assert torch.equal(o.to(dtype).to(g.dtype), o)  # already representable: a fixed point
        normal = g.abs() > 1e-4  # away from half precision's subnormals
        assert float(((o - g).abs() / g.abs())[normal].max()) <= rel
    assert not all(torch.equal(o, g) for g, o in zip(update, out, strict=True))
    with pytest.raises(ValueError, match="dtype"):
        round_precision(update, torch.float64)


def test_specs_parse_chain_and_print_back():
    chain = parse_defenses("prune:0.3+gauss:1e-2+fp16")
    assert [d.kind for d in chain] == ["prune", "gauss", "fp16"]
    assert [str(d) for d in chain] == ["prune:0.3", "gauss:0.01", "fp16"]
    assert str(parse_defenses("dpsgd:1.5:0.5")[0]) == "dpsgd:1.5:0.5"
    assert parse_defenses("dpsgd:2")[0].clip == 1.0
    assert parse_defenses(Defense("none")) == (Defense("none"),)
    for d in (*chain, Defense("dpsgd", 1.5, 0.5), Defense("none"), Defense("bf16")):
        assert parse_defenses(str(d)) == (d,)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("prune:1.5", r"p \(the pruned fraction\) must lie in \[0, 1\]; got 1.5"),
        ("prune:-0.1", r"must lie in \[0, 1\]"),
        ("gauss:-1e-2", r"variance must be >= 0.*-0.01"),
        ("lap:-1", "variance must be >= 0"),
        ("gauss", "needs|takes a noise variance"),
        ("prune:abc", "must be a number"),
        ("fp16:3", "takes no strength"),
        ("blur:1", "unknown defense 'blur'.*valid: none, prune"),
        ("dpsgd:-1", "sigma"),
        ("dpsgd:1:0", r"clip .* must be > 0"),
        ("prune:0.3+dpsgd:1", "must come first"),
        ("gauss:nan", "finite"),
    ],
)
def test_bad_strengths_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_defenses(spec)


def test_bad_arguments_to_the_functions():
    with pytest.raises(ValueError, match=r"pruned fraction"):
        prune(_update(), 2)
    with pytest.raises(ValueError, match="variance must be >= 0"):
        gaussian_noise(_update(), -1e-4)
    with pytest.raises(ValueError, match="variance must be >= 0"):
        laplacian_noise(_update(), -1e-4)
    with pytest.raises(ValueError, match="kind must be one of"):
        Defense("noise", 0.1)
    with pytest.raises(ValueError, match="takes no strength"):
        Defense("fp16", 0.5)
    with pytest.raises(TypeError, match="defenses must be"):
        parse_defenses(0.3)
    with pytest.raises(ValueError, match="empty chain"):
        parse_defenses([])
    with pytest.raises(ValueError, match="client_gradients"):
        apply_defenses(_update(), "dpsgd:1")


def _reference_dp(model, x, y, clip):
    """DP-SGD without noise, by hand: each sample's gradient clipped to norm ``clip``, then averaged."""
    total = None
    for i in range(len(y)):
        g = fedsgd_gradients(model, x[i : i + 1], y[i : i + 1])
        norm = torch.sqrt(sum((t.double() ** 2).sum() for t in g))
        scale = min(1.0, clip / (float(norm) + 1e-6))
        g = [t * scale for t in g]
        total = g if total is None else [a + b for a, b in zip(total, g, strict=True)]
    return [t / len(y) for t in total]


@pytest.mark.parametrize("clip", [0.5, 1e6])
def test_dpsgd_gradient_is_the_clipped_per_sample_mean(mnist, clip):
    x, y = mnist.x[:4], mnist.y[:4]
    model = build_model("lenet", "mnist", seed=0)
    out = client_gradients(model, x, y, Defense("dpsgd", 0.0, clip))
    ref = _reference_dp(model, x, y, clip)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    if clip == 1e6:  # a bound nobody reaches: the plain FedSGD gradient
        for a, b in zip(out, fedsgd_gradients(model, x, y), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dpsgd_noise_has_std_sigma_clip_over_batch(mnist):
    x, y = mnist.x[:4], mnist.y[:4]
    model = build_model("lenet", "mnist", seed=0)
    clean = client_gradients(model, x, y, "dpsgd:0:0.5")
    noisy = client_gradients(model, x, y, "dpsgd:2:0.5", seed=3)
    diff = torch.cat([(a - b).flatten() for a, b in zip(noisy, clean, strict=True)])
    assert float(diff.std()) == pytest.approx(2 * 0.5 / 4, rel=0.05)
    again = client_gradients(model, x, y, "dpsgd:2:0.5", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(noisy, again, strict=True))


def test_client_gradients_chain_applies_in_order(mnist):
    x, y = mnist.x[:1], mnist.y[:1]
    model = build_model("lenet", "mnist", seed=0)
    plain = fedsgd_gradients(model, x, y)
    assert all(torch.equal(a, b) for a, b in zip(client_gradients(model, x, y, "none"), plain, strict=True))
    pruned = client_gradients(model, x, y, "prune:0.5+fp16")
    expected = [g.half().float() for g in prune(plain, 0.5)]
    assert all(torch.equal(a, b) for a, b in zip(pruned, expected, strict=True))


def test_training_under_defenses(mnist):
    x, y = mnist.x, mnist.y
    accs = {}
    for spec in ("none", "gauss:1.0"):
        model = build_model("lenet", "mnist", seed=0)
        out = train_under_defense(model, x, y, spec, epochs=2, lr=0.01, batch_size=32, seed=0)
        assert out["epsilon"] is None and out["model"] is model
        with torch.no_grad():
            accs[spec] = float(F.cross_entropy(model(x), y))
    assert accs["gauss:1.0"] > accs["none"]  # noise of variance 1 on every step hurts training
    eps = {}
    for sigma in (0.5, 2.0):
        model = build_model("lenet", "mnist", seed=0)
        out = train_under_defense(model, x, y, f"dpsgd:{sigma}", epochs=1, lr=0.01, batch_size=32, seed=0)
        eps[sigma] = out["epsilon"]
        assert all(getattr(p, "grad_sample", None) is None for p in model.parameters())
    assert math.isfinite(eps[2.0]) and 0 < eps[2.0] < eps[0.5]  # more noise, less privacy spent
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        train_under_defense(build_model("lenet", "mnist"), x, y, "none", epochs=0)


def test_defense_attack_rows_and_the_undefended_row_is_the_plain_attack():
    from leaklib.attacks import reconstruct, trial_seed
    from leaklib.experiments import defense_attack, make_trials

    # float64 and a few steps: batched and single convolutions round differently and L-BFGS amplifies that
    out = defense_attack("mnist", ["none", "prune:0.9", "gauss:1e-2"], trials=2, iterations=3, seed=3,
                         device="cpu", progress=False, dtype=torch.float64)
    assert [r["defense"] for r in out["rows"]] == ["none", "prune:0.9", "gauss:1e-2"]
    for row in out["rows"]:
        assert set(row["fidelity"]) == {"0.01", "0.001", "0.0001"} and 0 <= row["label_accuracy"] <= 1
    # the "none" row is exactly the attack run alone: the defended trials in its batch change nothing
    data = make_trials("mnist", 2, seed=3)
    alone = reconstruct(data.models, data.target_grads, data.image_shape, iterations=3, patience=None, polish=0,
                        seeds=[trial_seed(3, t) for t in range(2)], device="cpu", progress=False, dtype=torch.float64)
    assert torch.allclose(out["reconstructions"]["none"], alone.dummy_x, atol=1e-7)
    assert not torch.allclose(out["reconstructions"]["prune:0.9"], alone.dummy_x)


def test_defense_attack_rejects_bad_specs_before_any_work():
    from leaklib.experiments import defense_attack, defense_utility

    with pytest.raises(ValueError, match=r"pruned fraction.*got 1.2"):
        defense_attack("mnist", ["none", "prune:1.2"], trials=1, iterations=1, progress=False)
    with pytest.raises(ValueError, match="non-empty list"):
        defense_attack("mnist", "prune:0.3", trials=1, iterations=1, progress=False)
    with pytest.raises(ValueError, match="test_fraction"):
        defense_utility("mnist", ["none"], test_fraction=1.5, progress=False)


def test_defense_explorer_runs_on_click():
    pytest.importorskip("ipywidgets")
    from leaklib.widgets import defense_explorer

    box = defense_explorer(trials=1, iterations=2, device="cpu")
    kind, strength = box.children[0].children
    run = box.children[2].children[1]
    status = box.children[3]
    kind.value = "gauss"
    assert strength.value == "0.001" and not strength.disabled
    run.click()
    assert status.value.startswith("gauss:0.001:"), status.value
    kind.value = "fp16"
    assert strength.disabled


def test_defense_figures():
    import matplotlib

    matplotlib.use("Agg")
    from leaklib.plot import plot_defense_grid, plot_privacy_utility

    rows = [{"defense": "none", "ssim_median": 0.99, "test_accuracy": 0.7},
            {"defense": "prune:0.3", "ssim_median": 0.7, "test_accuracy": 0.7},
            {"defense": "prune:0.9", "ssim_median": 0.2, "test_accuracy": 0.4},
            {"defense": "dpsgd:1:10", "ssim_median": 0.1, "test_accuracy": 0.6}]
    fig = plot_privacy_utility(rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["none", "prune", "dpsgd"]
    assert {t.get_text() for t in ax.texts} == {"none", "0.3", "0.9", "1:10"}
    with pytest.raises(ValueError, match="test_accuracy"):
        plot_privacy_utility([{"defense": "none", "ssim_median": 1.0}])
    x = torch.rand(3, 1, 1, 28, 28)
    fig = plot_defense_grid(x, {"none": x, "prune:0.3": x * 0.5})
    assert len(fig.axes) == 9 and [fig.axes[i].get_title() for i in range(3)] == ["private", "none", "prune:0.3"]
