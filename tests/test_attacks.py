"""leaklib.attacks: the batched DLG/iDLG engine."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from leaklib import metrics
from leaklib.attacks import STUCK, _split_head, _split_matching_loss, reconstruct, trial_seed
from leaklib.data import load_dataset
from leaklib.gradients import fedsgd_gradients
from leaklib.models import convnet, lenet


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", 16, seed=0, source="bundled", verbose=False)


def _trials(x, y, n, seed0=100, dtype=torch.float32):
    models = [lenet(1, 10, 28, seed=seed0 + i).to(dtype) for i in range(n)]
    grads = [fedsgd_gradients(m, x[i : i + 1].to(dtype), y[i : i + 1]) for i, m in enumerate(models)]
    return models, grads


@pytest.mark.parametrize("builder, B", [(lenet, 1), (lenet, 3), (convnet, 2)])
def test_closed_form_head_equals_autograd_matching_loss(builder, B):
    torch.manual_seed(0)
    model = builder(1, 10, 28, seed=1).double()
    x, y = torch.rand(B, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (B,))
    target = dict(zip([n for n, _ in model.named_parameters()], fedsgd_gradients(model, x, y), strict=True))
    dummy = torch.randn(B, 1, 28, 28, dtype=torch.float64)
    soft = F.softmax(torch.randn(B, 10, dtype=torch.float64), -1)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def inner(p):
        out = functional_call(model, (p, {}), (dummy,))
        return -(soft * F.log_softmax(out, -1)).sum(-1).mean()

    g = grad(inner)(params)
    direct = sum(((g[n] - target[n]) ** 2).sum() for n in g)
    body, w, b = _split_head(model, (1, 28, 28))
    closed = _split_matching_loss(body, params, {}, dummy, soft, target, w, b)
    assert torch.allclose(closed, direct, rtol=1e-10)


def test_idlg_recovers_one_mnist_image(mnist):
    x, y = mnist
    models, grads = _trials(x, y, 1)
    result = reconstruct(models, grads, (1, 28, 28), method="idlg", iterations=100, progress=False)
    assert result.labels.tolist() == [[int(y[0])]]
    assert float(metrics.mse(result.dummy_x[:, 0], x[:1])[0]) < 1e-4
    assert bool(result.converged[0]) and int(result.restarts[0]) == 0


def test_a_trial_does_not_depend_on_its_batch_mates(mnist):
    """The same trial alone and inside a batch of 16 gives the same reconstruction."""
    x, y = mnist
    models, grads = _trials(x, y, 16, dtype=torch.float64)
    seeds = [trial_seed(5, i) for i in range(16)]
    # a few steps: batched and single convolutions round differently (~1e-15) and L-BFGS amplifies that
    kw = dict(image_shape=(1, 28, 28), method="idlg", iterations=3, progress=False, dtype=torch.float64)
    together = reconstruct(models, grads, seeds=seeds, **kw)
    for i in (0, 7):
        torch.manual_seed(123)  # the global RNG state must not matter either
        alone = reconstruct([models[i]], [grads[i]], seeds=[seeds[i]], **kw)
        assert torch.allclose(alone.dummy_x[0], together.dummy_x[i], atol=1e-7)
        assert torch.allclose(alone.loss[0], together.loss[i], rtol=1e-7)


def test_dlg_labels_are_read_after_optimisation(mnist):
    x, y = mnist
    models, grads = _trials(x, y, 4)
    result = reconstruct(models, grads, (1, 28, 28), method="dlg", iterations=40, progress=False)
    assert torch.equal(result.labels, result.dummy_label.argmax(-1))
    good = result.converged
    assert good.sum() >= 2
    assert torch.equal(result.labels[good, 0], y[:4][good])


def test_snapshots_history_and_early_stop(mnist):
    x, y = mnist
    models, grads = _trials(x, y, 2)
    seen = []
    # polish=0: the snapshots are of the L-BFGS phase, so only without a polish is the last one the result
    result = reconstruct(models, grads, (1, 28, 28), iterations=40, snapshot_at=(0, 5, 40), progress=False,
                         polish=0, callback=lambda step, dx, loss: seen.append(step))
    assert set(result.snapshots) == {0, 5, 40} and result.snapshots[5].shape == (2, 1, 1, 28, 28)
    assert seen[:3] == [1, 2, 3]
    first = result.loss_history[:, 0]
    assert (first > 1e-3).all()  # a random start is far from the target
    for t in range(2):
        if result.converged[t]:
            s = int(result.steps[t])
            assert result.loss_history[t, s] < 1e-6 and torch.isnan(result.loss_history[t, s + 1 :]).all()
            assert torch.equal(result.snapshots[40][t], result.dummy_x[t])


def test_non_finite_trials_are_restarted_and_reported(mnist):
    x, y = mnist
    models, grads = _trials(x, y, 2)
    # trial 0's target overflows float32 whatever the start: it restarts until max_restarts and is reported
    grads[0] = [torch.full_like(grads[0][0], 1e30), *grads[0][1:]]
    with pytest.warns(RuntimeWarning, match="1 of 2 trials still had a non-finite loss"):
        result = reconstruct(models, grads, (1, 28, 28), iterations=30, max_restarts=3, progress=False)
    assert result.restarts.tolist() == [3, 0]
    assert not result.converged[0] and not torch.isfinite(result.loss[0])
    assert bool(result.converged[1])  # its batch-mate is unaffected


def test_polish_finishes_a_trial_that_lbfgs_leaves_short():
    """A confident model (small ||G||): on the papers' absolute loss, L-BFGS reaches the loss tolerance with the
    image still off (MSE ~1e-3); the Gauss-Newton polish brings it below 1e-6. Trial 12 of
    `make_trials("mnist", 64, seed=0)`."""
    from leaklib.experiments import make_trials

    data = make_trials("mnist", 64, seed=0)
    args = ([data.models[12]], [data.target_grads[12]], data.image_shape)
    kw = dict(seeds=[trial_seed(0, 12)], iterations=100, scale_to=None, progress=False)
    plain = reconstruct(*args, polish=0, **kw)
    polished = reconstruct(*args, **kw)
    assert bool(plain.converged[0]) and float(metrics.mse(plain.dummy_x[:, 0], data.x[12])[0]) > 1e-4
    assert not bool(plain.polished[0])
    assert bool(polished.polished[0]) and float(polished.loss[0]) < 1e-2 * float(plain.loss[0])
    assert float(metrics.mse(polished.dummy_x[:, 0], data.x[12])[0]) < 1e-6  # one step: ~5e-8
    assert torch.allclose(polished.loss_history, plain.loss_history, rtol=0, atol=0, equal_nan=True)  # same L-BFGS
    skipped = reconstruct(*args, polish_above=0.5, **kw)  # its loss is below 0.5 ||G||^2: not polished
    assert not bool(skipped.polished[0]) and torch.equal(skipped.dummy_x, plain.dummy_x)


def test_polish_damps_steps_that_would_raise_the_loss(monkeypatch):
    """Levenberg-Marquardt: far from the image (the private image + 1.5 N(0, 1) noise) a plain Gauss-Newton step
    raises the loss and the polish stops there; steps damped until they help reach the image. (From the point where
    L-BFGS leaves trial 1 of the CIFAR-100 stand-in, MSE 7e-3, it takes about six of them.)"""
    from leaklib import attacks
    from leaklib.experiments import make_trials

    data = make_trials("mnist", 4, seed=0)
    rows = torch.tensor([1, 2, 3])
    start = data.x + 1.5 * torch.randn(data.x.shape, generator=torch.Generator().manual_seed(1))
    norms = torch.stack([sum((g.double() ** 2).sum() for g in data.target_grads[i]) for i in rows.tolist()])
    args = (data.models, data.target_grads, data.y, start, rows, _split_head(data.models[0], data.image_shape),
            data.image_shape, 20, torch.device("cpu"), torch.float32, 1e-12 * norms)

    def mse(x):
        return metrics.mse(x.float(), data.x[rows]).flatten(1).mean(1)

    x, loss, better = attacks._polish(*args)
    # each start lies in a different basin; all three reach their image here (MSE ~5e-13), allow one miss
    assert int((mse(x) < 1e-10).sum()) >= 2 and better.all()
    monkeypatch.setattr(attacks, "LM_TRIES", 1)  # undamped Gauss-Newton only
    x, loss, better = attacks._polish(*args)
    assert (mse(x) > 1e-2).all()


@pytest.mark.parametrize("trial, trials", [(12, 64), (62, 100)])
def test_scaled_loss_lets_lbfgs_finish_confident_models(trial, trials):
    """||G||^2 of 0.2 (trial 12 of 64) and 6e-5 (trial 62 of 100): on the absolute loss L-BFGS stops far from the
    image (trial 62 never moves: its gradient is below L-BFGS's tolerance from the start); scaled, it gets there."""
    from leaklib.experiments import make_trials

    data = make_trials("mnist", trials, seed=0)
    args = ([data.models[trial]], [data.target_grads[trial]], data.image_shape)
    kw = dict(seeds=[trial_seed(0, trial)], iterations=100, polish=0, progress=False)
    absolute = reconstruct(*args, scale_to=None, **kw)
    scaled = reconstruct(*args, **kw)
    assert float(metrics.mse(absolute.dummy_x[:, 0], data.x[trial])[0]) > 1e-4
    # below iDLG's strictest threshold (3e-7 with one torch thread and 6e-5 with two, for trial 62: where L-BFGS
    # stops in float32 depends on the order of the sums); with the defaults' Gauss-Newton finish, far below it
    assert float(metrics.mse(scaled.dummy_x[:, 0], data.x[trial])[0]) < 1e-4
    assert float(scaled.loss[0]) < 1e-3 * float(absolute.loss[0])  # both reported unscaled
    finished = reconstruct(*args, **{**kw, "polish": "auto"})
    assert float(metrics.mse(finished.dummy_x[:, 0], data.x[trial])[0]) < 1e-6


def test_no_tf32_convolutions_during_an_attack(mnist):
    """cuDNN may use TF32 for float32 convolutions on recent GPUs; the engine turns it off and restores it."""
    x, y = mnist
    models, grads = _trials(x, y, 1)
    before = torch.backends.cudnn.allow_tf32
    seen = []
    reconstruct(models, grads, (1, 28, 28), iterations=1, progress=False,
                callback=lambda *_: seen.append(torch.backends.cudnn.allow_tf32))
    assert seen == [False] and torch.backends.cudnn.allow_tf32 == before


def test_polish_is_refused_where_it_does_not_apply(mnist):
    x, y = mnist
    models, grads = _trials(x, y, 1)
    with pytest.raises(ValueError, match="polish=1 needs one image per trial .* got method='dlg'"):
        reconstruct(models, grads, (1, 28, 28), method="dlg", polish=1, iterations=1, progress=False)
    assert not reconstruct(models, grads, (1, 28, 28), method="dlg", iterations=1, progress=False).polished.any()


def test_patience_leaves_trials_near_their_solution_alone(mnist):
    """Only trials still far from their target (loss >= near * ||G||^2) are restarted for patience."""
    x, y = mnist
    models, grads = _trials(x, y, 4)
    # 3 steps: the patience check runs once, on the loss after step 1 (the loss is not monotone, so a later check
    # could find a trial that was near then far again); STUCK's check (two steps after the start) needs a step left
    assert STUCK["idlg"][0] == 3
    kw = dict(iterations=3, patience=2, polish=0, progress=False)
    norms = torch.tensor([sum(float((g.double() ** 2).sum()) for g in gs) for gs in grads])
    lenient = reconstruct(models, grads, (1, 28, 28), near=0.5, **kw)
    strict = reconstruct(models, grads, (1, 28, 28), near=1e-30, **kw)
    near_at_1 = lenient.loss_history[:, 1] < 0.5 * norms
    assert near_at_1.any() and not near_at_1.all()
    assert (lenient.restarts[near_at_1] == 0).all() and (lenient.restarts[~near_at_1] == 1).all()
    assert (~strict.converged).any() and (strict.restarts[~strict.converged] >= 1).all()  # the old rule


def test_a_stuck_trial_restarts_after_two_steps():
    """Trial 16 of `make_trials("mnist", 32, seed=0)`: its first L-BFGS steps throw the dummy out and it sits at
    ~||G||^2; without restarts it never moves, with them it restarts after STUCK's steps and converges."""
    steps, share = STUCK["idlg"]
    from leaklib.experiments import make_trials

    data = make_trials("mnist", 32, seed=0)
    args = ([data.models[16]], [data.target_grads[16]], data.image_shape)
    kw = dict(seeds=[trial_seed(0, 16)], iterations=80, polish=0, progress=False)
    norm = sum(float((g.double() ** 2).sum()) for g in data.target_grads[16])
    stuck = reconstruct(*args, patience=None, **kw)
    assert int(stuck.restarts[0]) == 0 and float(stuck.loss[0]) > share * norm
    restarted = reconstruct(*args, **kw)
    assert int(restarted.restarts[0]) == 1 and bool(restarted.converged[0])
    before = restarted.loss_history[0, :steps]
    assert torch.equal(before, stuck.loss_history[0, :steps]) and (before > share * norm).all()
    assert float(metrics.mse(restarted.dummy_x[:, 0], data.x[16])[0]) < 1e-4


def test_dlg_gives_a_start_four_steps_before_calling_it_stuck(monkeypatch):
    """DLG optimises its label too, and its good starts come down more slowly: trial 49 of `make_trials("mnist", 64)`
    (in float64, so that the path does not depend on the number of threads) is at 0.15 ||G||^2 after two steps and
    below 0.1 after three. iDLG's check (after two steps) would restart it."""
    from leaklib import attacks
    from leaklib.experiments import make_trials

    data = make_trials("mnist", 64, seed=0)
    args = ([data.models[49]], [data.target_grads[49]], data.image_shape)
    kw = dict(method="dlg", seeds=[trial_seed(0, 49)], iterations=6, dtype=torch.float64, progress=False)
    norm = sum(float((g.double() ** 2).sum()) for g in data.target_grads[49])
    result = reconstruct(*args, **kw)
    assert float(result.loss_history[0, 2]) > STUCK["dlg"][1] * norm > float(result.loss_history[0, 3])
    assert int(result.restarts[0]) == 0
    monkeypatch.setattr(attacks, "STUCK", {**STUCK, "dlg": STUCK["idlg"]})
    assert int(reconstruct(*args, **kw).restarts[0]) == 1


def test_a_stuck_trial_without_restarts_left_stops_on_its_plateau():
    """Trial 16 again, allowed no restart: it sits at ~||G||^2 and stops PLATEAU steps after its start instead of
    running out its budget; the papers' protocol (patience=None) runs it to the end."""
    from leaklib.attacks import PLATEAU
    from leaklib.experiments import make_trials

    data = make_trials("mnist", 32, seed=0)
    args = ([data.models[16]], [data.target_grads[16]], data.image_shape)
    kw = dict(seeds=[trial_seed(0, 16)], iterations=60, polish=0, max_restarts=0, progress=False)
    norm = sum(float((g.double() ** 2).sum()) for g in data.target_grads[16])
    kept_on = reconstruct(*args, patience=None, **kw)
    stopped = reconstruct(*args, **kw)
    assert int(kept_on.steps[0]) == 60 and int(stopped.steps[0]) == PLATEAU
    assert int(stopped.restarts[0]) == 0 and not bool(stopped.converged[0])
    assert float(stopped.loss[0]) > 0.1 * norm
    assert torch.equal(stopped.loss_history[0, : PLATEAU + 1], kept_on.loss_history[0, : PLATEAU + 1])
    assert torch.isnan(stopped.loss_history[0, PLATEAU + 1 :]).all()
    assert torch.equal(stopped.loss[0], stopped.loss_history[0, PLATEAU])


def test_a_trial_thrown_out_near_its_solution_stops_with_its_best_point(monkeypatch):
    """Trial 35 of `make_trials("mnist", 256, seed=0)`: L-BFGS takes it to ~2e-9 ||G||^2 by step 43, then one step
    throws it back to ~||G||^2 (seen with one and with two torch threads). It stops there with the best point of its
    start; under the old rule (THROWN = inf) it was restarted later from scratch and had not converged again by
    step 50."""
    from leaklib import attacks
    from leaklib.experiments import make_trials

    data = make_trials("mnist", 256, seed=0)
    args = ([data.models[35]], [data.target_grads[35]], data.image_shape)
    kw = dict(seeds=[trial_seed(0, 35)], iterations=50, polish=0, progress=False)
    norm = sum(float((g.double() ** 2).sum()) for g in data.target_grads[35])
    kept = reconstruct(*args, **kw)
    steps = int(kept.steps[0])
    seen = kept.loss_history[0, : steps + 1]
    assert int(kept.restarts[0]) == 0 and steps < 50
    assert float(seen[-1]) > attacks.THROWN * float(seen[:-1].min())  # the step that threw it out
    assert float(kept.loss[0]) == float(seen.min()) < 1e-8 * norm
    assert float(metrics.mse(kept.dummy_x[:, 0], data.x[35])[0]) < 1e-5
    monkeypatch.setattr(attacks, "THROWN", float("inf"))
    restarted = reconstruct(*args, **kw)
    assert int(restarted.restarts[0]) >= 1
    assert float(metrics.mse(restarted.dummy_x[:, 0], data.x[35])[0]) > 1e-4


def test_patience_restarts_stuck_trials(mnist):
    x, y = mnist
    models, grads = _trials(x, y, 3)
    result = reconstruct(models, grads, (1, 28, 28), iterations=10, patience=3, stall_loss=0.0, progress=False)
    assert (result.restarts >= 3).all()  # restarted at steps 3, 6, 9


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(method="gradinversion"), ValueError, "method='gradinversion'"),
        (dict(image_shape=(28, 28)), ValueError, r"image_shape must be \(C, H, W\)"),
        (dict(iterations=0), ValueError, "iterations must be a positive int"),
        (dict(batch_size=2), ValueError, "needs labels"),
        (dict(labels=torch.tensor([[11]])), ValueError, r"labels must lie in \[0, 10\)"),
        (dict(snapshot_at=(500,)), ValueError, "snapshot_at"),
        (dict(polish=-1), ValueError, "polish must be 'auto' or a number of Gauss-Newton iterations >= 0; got -1"),
        (dict(near=2.0), ValueError, r"near must be a number in \(0, 1\)"),
        (dict(scale_to=0), ValueError, "scale_to must be a positive number or None; got 0"),
        (dict(polish_above=-1e-9), ValueError, r"polish_above must be 'auto' or a number in \[0, 1\)"),
    ],
)
def test_bad_input(mnist, kwargs, error, message):
    x, y = mnist
    models, grads = _trials(x, y, 1)
    kw = dict(image_shape=(1, 28, 28), iterations=1, progress=False) | kwargs
    with pytest.raises(error, match=message):
        reconstruct(models, grads, **kw)


def test_mismatched_gradients_name_the_parameter(mnist):
    x, y = mnist
    models, grads = _trials(x, y, 2)
    bad = [grads[0], [*grads[1][:3], torch.zeros(7), *grads[1][4:]]]
    with pytest.raises(ValueError, match=r"target_grads\[1\]\[3\] has shape \(7,\).*'body.2.bias'"):
        reconstruct(models, bad, (1, 28, 28), iterations=1, progress=False)
    with pytest.raises(ValueError, match="one gradient per trial"):
        reconstruct(models, grads[:1], (1, 28, 28), iterations=1, progress=False)


# ------------------------------------------------------------------------------------------ batches and FedAvg


def test_client_update_equals_fedavg_update(mnist):
    """The differentiable simulation of the client's local steps is exactly gradients.fedavg_update, over lr."""
    from leaklib.attacks import _client_update
    from leaklib.gradients import fedavg_update

    x, y = mnist
    model = lenet(1, 10, 28, seed=4).double()
    x6, y6 = x[:6].double(), y[:6]
    params = {n: p.detach() for n, p in model.named_parameters()}
    for steps, bs in ((1, 6), (3, 6), (4, 4)):
        expected = fedavg_update(model, x6, y6, local_steps=steps, lr=0.3, batch_size=bs)
        got = _client_update(model, params, {}, x6, F.one_hot(y6, 10).double(), steps, 0.3, bs)
        for e, g in zip(expected, got.values(), strict=True):
            assert torch.allclose(e / 0.3, g, rtol=1e-9, atol=1e-12)


def test_fedavg_with_one_step_has_the_fedsgd_matching_loss(mnist):
    from leaklib.attacks import reconstruct_batch
    from leaklib.gradients import fedavg_update

    x, y = mnist
    model = lenet(1, 10, 28, seed=5).double()
    labels = y[None, :3]
    kw = dict(iterations=1, progress=False, dtype=torch.float64, seed=3)
    sgd = reconstruct_batch([model], [fedsgd_gradients(model, x[:3].double(), y[:3])], (1, 28, 28), labels, **kw)
    avg = reconstruct_batch([model], [fedavg_update(model, x[:3].double(), y[:3], local_steps=1, lr=0.1)],
                            (1, 28, 28), labels, update="fedavg", local_steps=1, local_lr=0.1, **kw)
    assert torch.allclose(sgd.loss_history[:, 0], avg.loss_history[:, 0], rtol=1e-9)


def test_a_batch_of_four_comes_back_from_its_gradient(mnist):
    """Four MNIST digits from one FedSGD gradient with their true labels, matched by Hungarian assignment."""
    from leaklib.attacks import reconstruct_batch

    x, y = mnist
    model = lenet(1, 10, 28, seed=0)
    grads = fedsgd_gradients(model, x[:4], y[:4])
    result = reconstruct_batch([model], [grads], (1, 28, 28), y[None, :4], iterations=80, progress=False)
    order = metrics.match_batch(result.dummy_x[0], x[:4])
    assert float(metrics.mse(result.dummy_x[0][order], x[:4]).mean()) < 1e-3
    assert result.dummy_x.shape == (1, 4, 1, 28, 28)


def test_adam_cosine_and_tv_run_per_trial(mnist):
    """Adam keeps per-trial state too: a trial alone and in a batch of 3 agree; cosine and TV are finite."""
    from leaklib.attacks import reconstruct_batch, total_variation

    x, y = mnist
    models = [lenet(1, 10, 28, seed=10 + i).double() for i in range(3)]
    grads = [fedsgd_gradients(m, x[2 * i : 2 * i + 2].double(), y[2 * i : 2 * i + 2]) for i, m in enumerate(models)]
    labels = y[:6].reshape(3, 2)
    kw = dict(iterations=5, progress=False, optimizer="adam", distance="cosine", tv=0.01, dtype=torch.float64,
              seeds=[1, 2, 3])
    together = reconstruct_batch(models, grads, (1, 28, 28), labels, **kw)
    alone = reconstruct_batch(models[1:2], grads[1:2], (1, 28, 28), labels[1:2], **kw | {"seeds": [2]})
    assert torch.allclose(alone.dummy_x[0], together.dummy_x[1], atol=1e-9)
    assert bool(torch.isfinite(together.loss).all()) and bool((together.loss_history[:, 0] <= 2.5).all())
    flat = torch.ones(1, 1, 4, 4)
    steps = torch.zeros(1, 1, 4, 4)
    steps[..., 2:] = 1.0  # one vertical edge of height 1: horizontal differences 4 of 12 are 1
    assert float(total_variation(flat)) == 0.0 and float(total_variation(steps)) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(update="fedavg"), "needs local_lr"),
        (dict(update="fedavg", local_lr=-1.0), "needs local_lr"),
        (dict(local_steps=3), "describe a FedAvg client"),
        (dict(update="fedavg", local_lr=0.1, local_batch_size=5), r"local_batch_size must be an int in \[1, "),
        (dict(distance="l1"), "distance='l1'"),
        (dict(optimizer="sgd"), "optimizer='sgd'"),
        (dict(tv=-1.0), "tv must be a non-negative number"),
        (dict(patience=0), "patience must be a positive int"),
    ],
)
def test_batch_bad_input(mnist, kwargs, message):
    from leaklib.attacks import reconstruct_batch

    x, y = mnist
    model = lenet(1, 10, 28, seed=0)
    grads = fedsgd_gradients(model, x[:2], y[:2])
    with pytest.raises(ValueError, match=message):
        reconstruct_batch([model], [grads], (1, 28, 28), y[None, :2], iterations=1, progress=False, **kwargs)


def test_batch_reconstruction_pipeline_checks_its_arguments():
    from leaklib.experiments import batch_reconstruction

    with pytest.raises(ValueError, match="batch_labels='twins' is not valid"):
        batch_reconstruction("mnist", 1, 4, batch_labels="twins")
    with pytest.raises(ValueError, match=r"wrong_labels must be an int in \[0, batch_size=4\]"):
        batch_reconstruction("mnist", 1, 4, wrong_labels=5)
    with pytest.raises(ValueError, match="batch_labels='unique' with batch_size=11 needs 11 classes"):
        batch_reconstruction("mnist", 1, 11)
