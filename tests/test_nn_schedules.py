"""Learning-rate schedules: torch's sequences, the warmup-cosine shape, state dicts."""

import math

import numpy
import pytest

from predtext import nn
from predtext.nn import Parameter


def two_group_optimizer(make, lrs=(0.1, 0.03)):
    groups = [{"params": [Parameter(numpy.zeros(2))], "lr": lrs[0]},
              {"params": [Parameter(numpy.zeros(3))], "lr": lrs[1]}]
    return make(groups)


def torch_two_group_optimizer(torch, lrs=(0.1, 0.03)):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lrs[0]},
              {"params": [torch.nn.Parameter(torch.zeros(3))], "lr": lrs[1]}]
    return torch.optim.SGD(groups, lr=1.0)


def lrs_of(optimizer):
    return [group["lr"] for group in optimizer.param_groups]


@pytest.mark.parametrize("step_size, gamma", [(3, 0.5), (1, 0.9), (7, 0.1)])
def test_step_lr_follows_torch(step_size, gamma):
    torch = pytest.importorskip("torch")
    theirs_optimizer = torch_two_group_optimizer(torch)
    theirs = torch.optim.lr_scheduler.StepLR(theirs_optimizer, step_size=step_size, gamma=gamma)
    ours_optimizer = two_group_optimizer(lambda g: nn.SGD(g, lr=1.0))
    ours = nn.StepLR(ours_optimizer, step_size=step_size, gamma=gamma)
    for _ in range(25):
        numpy.testing.assert_allclose(lrs_of(ours_optimizer), lrs_of(theirs_optimizer), rtol=1e-12)
        numpy.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12)
        theirs_optimizer.step()
        theirs.step()
        ours.step()


def test_step_lr_rejects_bad_step_size():
    with pytest.raises(ValueError, match="step_size"):
        nn.StepLR(nn.SGD([Parameter(numpy.zeros(1))], lr=0.1), step_size=0)


def metric_sequence():
    # Improves, stalls, wobbles within the threshold, improves again, stalls for long.
    return [5.0, 4.0, 4.0, 4.1, 3.9996, 4.0, 4.2, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0,
            2.9999, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5]


@pytest.mark.parametrize("options", [
    dict(mode="min", patience=2),
    dict(mode="min", patience=1, factor=0.5, threshold=0.01, threshold_mode="abs", cooldown=2),
    dict(mode="max", patience=0, factor=0.5, min_lr=[0.01, 0.02]),
    dict(mode="max", patience=2, threshold_mode="abs", threshold=0.5, eps=0.02),
    dict(mode="min", patience=0, factor=0.2, min_lr=0.001, cooldown=1),
])
def test_reduce_on_plateau_follows_torch(options):
    torch = pytest.importorskip("torch")
    theirs_optimizer = torch_two_group_optimizer(torch)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_optimizer, **options)
    ours_optimizer = two_group_optimizer(lambda g: nn.SGD(g, lr=1.0))
    ours = nn.ReduceLROnPlateau(ours_optimizer, **options)
    seen = set()
    for metric in metric_sequence():
        theirs.step(metric)
        ours.step(metric)
        numpy.testing.assert_allclose(lrs_of(ours_optimizer), lrs_of(theirs_optimizer), rtol=1e-12)
        assert ours.num_bad_epochs == theirs.num_bad_epochs
        seen.add(tuple(lrs_of(ours_optimizer)))
    assert len(seen) > 1  # the sequence did trigger reductions


def test_reduce_on_plateau_argument_checks():
    optimizer = two_group_optimizer(lambda g: nn.SGD(g, lr=1.0))
    with pytest.raises(ValueError, match="factor"):
        nn.ReduceLROnPlateau(optimizer, factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        nn.ReduceLROnPlateau(optimizer, mode="lowest")
    with pytest.raises(ValueError, match="min_lr"):
        nn.ReduceLROnPlateau(optimizer, min_lr=[0.0])
    with pytest.raises(TypeError, match="optimizer"):
        nn.ReduceLROnPlateau(object())


def test_cosine_with_warmup_shape():
    optimizer = two_group_optimizer(lambda g: nn.SGD(g, lr=1.0), lrs=(1.0, 0.5))
    schedule = nn.CosineWithWarmup(optimizer, warmup_steps=4, total_steps=12, min_lr=0.1)
    lrs = []
    for _ in range(15):
        lrs.append(lrs_of(optimizer)[0])
        schedule.step()
    # Warmup: a quarter more of the base rate each step, starting above zero.
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # Cosine: the full rate at the start of the decay, halfway at its middle, min_lr at the end.
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[8] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lrs[6] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert lrs[12:] == pytest.approx([0.1, 0.1, 0.1])
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    # The second group is scaled by its own base rate.
    assert schedule.get_last_lr()[1] == pytest.approx(0.1)


def test_cosine_with_warmup_argument_checks():
    optimizer = nn.SGD([Parameter(numpy.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="total_steps"):
        nn.CosineWithWarmup(optimizer, warmup_steps=10, total_steps=5)
    with pytest.raises(ValueError, match="warmup_steps"):
        nn.CosineWithWarmup(optimizer, warmup_steps=-1, total_steps=5)


@pytest.mark.parametrize("make_schedule", [
    lambda opt: nn.StepLR(opt, step_size=2, gamma=0.5),
    lambda opt: nn.CosineWithWarmup(opt, warmup_steps=3, total_steps=10),
])
def test_schedule_state_dict_resumes(make_schedule):
    optimizer = two_group_optimizer(lambda g: nn.SGD(g, lr=1.0))
    schedule = make_schedule(optimizer)
    for _ in range(5):
        schedule.step()
    saved_optimizer, saved_schedule = optimizer.state_dict(), schedule.state_dict()
    assert "optimizer" not in saved_schedule
    expected = []
    for _ in range(5):
        schedule.step()
        expected.append(lrs_of(optimizer))

    resumed_optimizer = two_group_optimizer(lambda g: nn.SGD(g, lr=1.0), lrs=(7.0, 7.0))
    resumed_optimizer.load_state_dict(saved_optimizer)
    resumed = make_schedule(resumed_optimizer)
    resumed.load_state_dict(saved_schedule)
    got = []
    for _ in range(5):
        resumed.step()
        got.append(lrs_of(resumed_optimizer))
    numpy.testing.assert_allclose(got, expected, rtol=1e-12)


def test_plateau_state_dict_resumes():
    optimizer = two_group_optimizer(lambda g: nn.SGD(g, lr=1.0))
    schedule = nn.ReduceLROnPlateau(optimizer, patience=1)
    for metric in [3.0, 2.0, 2.0]:
        schedule.step(metric)
    saved = schedule.state_dict()
    resumed = nn.ReduceLROnPlateau(two_group_optimizer(lambda g: nn.SGD(g, lr=1.0)), patience=1)
    resumed.load_state_dict(saved)
    assert resumed.best == 2.0 and resumed.num_bad_epochs == 1
    resumed.step(2.0)  # the second bad step in a row exceeds patience=1
    assert lrs_of(resumed.optimizer) == pytest.approx([0.01, 0.003])
