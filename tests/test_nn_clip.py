"""Gradient clipping against torch, and the non-finite case."""

import math

import numpy
import pytest

from predtext import nn
from predtext.nn import Parameter


def make_params(scale=1.0, seed=0):
    rng = numpy.random.default_rng(seed)
    params = [Parameter(numpy.zeros((3, 4))), Parameter(numpy.zeros(5)), Parameter(numpy.zeros(()))]
    for param in params:
        param.grad[...] = scale * rng.normal(size=param.shape)
    return params


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    torch = pytest.importorskip("torch")
    params = make_params()
    torch_params = [torch.nn.Parameter(torch.tensor(p.data)) for p in params]
    for torch_param, param in zip(torch_params, params):
        torch_param.grad = torch.tensor(param.grad)
    expected_norm = torch.nn.utils.clip_grad_norm_(torch_params, max_norm, norm_type=norm_type)
    norm = nn.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    assert isinstance(norm, float)
    assert norm == pytest.approx(float(expected_norm), rel=1e-12)
    for param, torch_param in zip(params, torch_params):
        numpy.testing.assert_allclose(param.grad, torch_param.grad.numpy(), rtol=1e-12)


def test_clipped_gradients_have_the_requested_norm():
    params = make_params(scale=10.0)
    before = [p.grad.copy() for p in params]
    nn.clip_grad_norm_(params, 1.0)
    assert nn.total_grad_norm(params) == pytest.approx(1.0, rel=1e-5)
    # Direction is kept: every gradient is scaled by the same factor.
    ratios = [p.grad.ravel()[0] / b.ravel()[0] for p, b in zip(params, before)]
    assert max(ratios) == pytest.approx(min(ratios))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_norm_leaves_gradients_untouched(bad):
    params = make_params(scale=10.0)
    params[1].grad[2] = bad
    before = [p.grad.copy() for p in params]
    norm = nn.clip_grad_norm_(params, 1.0)
    assert not math.isfinite(norm)
    for param, grad in zip(params, before):
        numpy.testing.assert_array_equal(param.grad, grad)
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)


def test_clip_grad_norm_accepts_a_single_parameter_and_empty_lists():
    param = make_params(scale=10.0)[0]
    assert nn.clip_grad_norm_(param, 1.0) > 1.0
    assert nn.total_grad_norm([param]) == pytest.approx(1.0, rel=1e-5)
    assert nn.clip_grad_norm_([], 1.0) == 0.0


def test_clip_grad_norm_argument_checks():
    with pytest.raises(ValueError, match="norm_type"):
        nn.clip_grad_norm_(make_params(), 1.0, norm_type=0)
    with pytest.raises(ValueError, match="max_norm"):
        nn.clip_grad_norm_(make_params(), -1.0)
    with pytest.raises(TypeError, match="params"):
        nn.clip_grad_norm_([numpy.zeros(3)], 1.0)


def test_clip_grad_value_matches_torch():
    torch = pytest.importorskip("torch")
    params = make_params(scale=2.0)
    torch_params = [torch.nn.Parameter(torch.tensor(p.data)) for p in params]
    for torch_param, param in zip(torch_params, params):
        torch_param.grad = torch.tensor(param.grad)
    torch.nn.utils.clip_grad_value_(torch_params, 0.7)
    nn.clip_grad_value_(params, 0.7)
    for param, torch_param in zip(params, torch_params):
        numpy.testing.assert_array_equal(param.grad, torch_param.grad.numpy())
    assert max(numpy.abs(p.grad).max() for p in params) == 0.7
