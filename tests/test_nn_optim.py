"""Optimizers follow torch.optim's trajectories; state dicts round-trip."""

import numpy
import pytest

from predtext import nn
from predtext.nn import Parameter

STEPS = 20

# (class name in both predtext.nn and torch.optim, keyword arguments shared by both)
CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.005, centered=True)),
    ("RMSprop", dict(lr=0.005, centered=True, momentum=0.9, eps=1e-6)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.1)),
    ("Adam", dict(lr=0.02, amsgrad=True, eps=1e-6)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, weight_decay=0.3, amsgrad=True)),
]


def initial_arrays():
    rng = numpy.random.default_rng(0)
    return [rng.normal(size=(3, 4)), rng.normal(size=(4,))]


def noise_for_step(step):
    rng = numpy.random.default_rng(100 + step)
    return [rng.normal(size=(3, 4)), rng.normal(size=(4,))]


def gradient(step, arrays):
    """A gradient that depends on the current weights, so trajectories must agree step by step."""
    return [numpy.tanh(2 * w) + 0.5 * noise for w, noise in zip(arrays, noise_for_step(step))]


def our_groups(params, kwargs):
    # Two groups, the second with its own learning rate, to exercise param_groups.
    return [{"params": [params[0]]}, {"params": [params[1]], "lr": kwargs["lr"] * 0.5}]


def run_ours(name, kwargs, steps=STEPS, extra_grad=None, **our_only):
    params = [Parameter(a.copy()) for a in initial_arrays()]
    optimizer = getattr(nn, name)(our_groups(params, kwargs), **kwargs, **our_only)
    trajectory = []
    for step in range(steps):
        optimizer.zero_grad()
        for param, grad in zip(params, gradient(step, [p.data for p in params])):
            param.grad += grad
        optimizer.step()
        trajectory.append([p.data.copy() for p in params])
    return trajectory


def run_torch(name, kwargs, steps=STEPS, grad_transform=None):
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.tensor(a)) for a in initial_arrays()]
    optimizer = getattr(torch.optim, name)(our_groups(params, kwargs), **kwargs)
    trajectory = []
    for step in range(steps):
        arrays = [p.detach().numpy().copy() for p in params]
        grads = gradient(step, arrays)
        if grad_transform is not None:
            grads = [grad_transform(g, w) for g, w in zip(grads, arrays)]
        for param, grad in zip(params, grads):
            param.grad = torch.tensor(grad)
        optimizer.step()
        trajectory.append([p.detach().numpy().copy() for p in params])
    return trajectory


def assert_same_trajectory(ours, theirs):
    for step, (our_arrays, their_arrays) in enumerate(zip(ours, theirs)):
        for our_array, their_array in zip(our_arrays, their_arrays):
            numpy.testing.assert_allclose(our_array, their_array, rtol=1e-6, atol=1e-12,
                                          err_msg=f"step {step}")


@pytest.mark.parametrize("name, kwargs", CONFIGS,
                         ids=[f"{n}-{'-'.join(sorted(k))}" for n, k in CONFIGS])
def test_follows_torch_trajectory(name, kwargs):
    theirs = run_torch(name, kwargs)
    ours = run_ours(name, kwargs)
    assert not numpy.allclose(ours[-1][0], initial_arrays()[0])  # it did move
    assert_same_trajectory(ours, theirs)


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01)),
])
def test_l1_penalty_adds_sign_of_weights_to_gradient(name, kwargs):
    l1 = 0.3
    theirs = run_torch(name, kwargs, grad_transform=lambda g, w: g + l1 * numpy.sign(w))
    ours = run_ours(name, kwargs, l1=l1)
    assert_same_trajectory(ours, theirs)


def test_step_leaves_gradients_untouched():
    param = Parameter(numpy.ones(3))
    param.grad[...] = 2.0
    nn.Adam([param], lr=0.1, weight_decay=0.5, l1=0.1).step()
    numpy.testing.assert_array_equal(param.grad, 2.0)


def test_schedule_style_lr_change_takes_effect():
    param = Parameter(numpy.zeros(2))
    optimizer = nn.SGD([param], lr=1.0)
    param.grad[...] = 1.0
    optimizer.param_groups[0]["lr"] = 0.25
    optimizer.step()
    numpy.testing.assert_allclose(param.data, -0.25)


def test_parameters_without_requires_grad_are_skipped():
    frozen = Parameter(numpy.ones(2), requires_grad=False)
    frozen.grad[...] = 1.0
    nn.SGD([frozen], lr=1.0).step()
    numpy.testing.assert_array_equal(frozen.data, 1.0)


def test_float32_parameters_stay_float32():
    param = Parameter(numpy.ones(4, dtype=numpy.float32))
    param.grad[...] = 0.5
    optimizer = nn.Adam([param], amsgrad=True)
    optimizer.step()
    assert param.data.dtype == numpy.float32
    assert all(v.dtype == numpy.float32 for v in optimizer.state[param].values()
               if hasattr(v, "dtype"))


@pytest.mark.parametrize("make", [
    lambda p: nn.SGD(p, lr=-1.0),
    lambda p: nn.SGD(p, lr=0.1, nesterov=True),
    lambda p: nn.SGD(p, lr=0.1, momentum=-0.5),
    lambda p: nn.Adam(p, betas=(0.9, 1.0)),
    lambda p: nn.RMSprop(p, eps=-1.0),
    lambda p: nn.AdamW(p, weight_decay=-0.1),
    lambda p: nn.Adam(p, l1=-0.1),
    lambda p: nn.SGD([], lr=0.1),
])
def test_bad_hyperparameters_raise(make):
    with pytest.raises(ValueError):
        make([Parameter(numpy.zeros(2))])


def test_rejects_non_parameters():
    with pytest.raises(TypeError, match="params"):
        nn.SGD([numpy.zeros(2)], lr=0.1)


def make_model_and_optimizer(name, kwargs):
    params = [Parameter(a.copy()) for a in initial_arrays()]
    return params, getattr(nn, name)(our_groups(params, kwargs), **kwargs)


def run_steps(params, optimizer, steps):
    for step in steps:
        optimizer.zero_grad()
        for param, grad in zip(params, gradient(step, [p.data for p in params])):
            param.grad += grad
        optimizer.step()


def as_checkpoint(state):
    """What a checkpoint without pickle keeps: string indices, lists for tuples, plain values."""
    return {
        "state": {str(index): dict(entries) for index, entries in state["state"].items()},
        "param_groups": [{key: (list(value) if isinstance(value, tuple) else value)
                          for key, value in group.items()} for group in state["param_groups"]],
    }


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
])
def test_state_dict_resumes_the_same_trajectory(name, kwargs):
    params, optimizer = make_model_and_optimizer(name, kwargs)
    run_steps(params, optimizer, range(5))
    saved_arrays = [p.data.copy() for p in params]
    saved_state = as_checkpoint(optimizer.state_dict())
    run_steps(params, optimizer, range(5, 10))

    resumed, fresh = make_model_and_optimizer(name, dict(kwargs, lr=123.0))
    for param, array in zip(resumed, saved_arrays):
        param.data[...] = array
    fresh.load_state_dict(saved_state)
    assert fresh.param_groups[1]["lr"] == kwargs["lr"] * 0.5  # hyperparameters restored
    run_steps(resumed, fresh, range(5, 10))
    for ours, expected in zip(resumed, params):
        numpy.testing.assert_allclose(ours.data, expected.data, rtol=1e-12)


def test_state_dict_holds_copies_and_plain_values():
    params, optimizer = make_model_and_optimizer("Adam", dict(lr=0.01))
    run_steps(params, optimizer, range(2))
    state = optimizer.state_dict()
    assert state["param_groups"][0]["params"] == [0]
    entry = state["state"][1]
    assert entry["step"] == 2 and isinstance(entry["step"], int)
    entry["exp_avg"][...] = 99.0
    assert not (optimizer.state[params[1]]["exp_avg"] == 99.0).any()


def test_loads_a_torch_optimizer_state():
    torch = pytest.importorskip("torch")
    kwargs = dict(lr=0.01, betas=(0.8, 0.9))
    torch_params = [torch.nn.Parameter(torch.tensor(a)) for a in initial_arrays()]
    torch_optimizer = torch.optim.Adam(our_groups(torch_params, kwargs), **kwargs)
    for step in range(4):
        grads = gradient(step, [p.detach().numpy() for p in torch_params])
        for param, grad in zip(torch_params, grads):
            param.grad = torch.tensor(grad)
        torch_optimizer.step()

    params, optimizer = make_model_and_optimizer("Adam", dict(lr=0.5))
    for param, torch_param in zip(params, torch_params):
        param.data[...] = torch_param.detach().numpy()
    optimizer.load_state_dict(torch_optimizer.state_dict())
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)

    for step in range(4, 8):
        grads = gradient(step, [p.detach().numpy() for p in torch_params])
        for param, grad in zip(torch_params, grads):
            param.grad = torch.tensor(grad)
        torch_optimizer.step()
    run_steps(params, optimizer, range(4, 8))
    for param, torch_param in zip(params, torch_params):
        numpy.testing.assert_allclose(param.data, torch_param.detach().numpy(), rtol=1e-6)


def test_load_state_dict_rejects_mismatches_without_changing_state():
    params, optimizer = make_model_and_optimizer("SGD", dict(lr=0.1, momentum=0.9))
    run_steps(params, optimizer, range(2))
    state = optimizer.state_dict()
    before = optimizer.state_dict()

    wrong_shape = optimizer.state_dict()
    wrong_shape["state"][0]["momentum_buffer"] = numpy.zeros((2, 2))
    with pytest.raises(ValueError, match="momentum_buffer"):
        optimizer.load_state_dict(wrong_shape)

    one_group = dict(state, param_groups=state["param_groups"][:1])
    with pytest.raises(ValueError, match="groups"):
        optimizer.load_state_dict(one_group)

    with pytest.raises(ValueError, match="state_dict"):
        optimizer.load_state_dict({"weights": []})

    after = optimizer.state_dict()
    for index in before["state"]:
        numpy.testing.assert_array_equal(after["state"][index]["momentum_buffer"],
                                         before["state"][index]["momentum_buffer"])
