"""Cross-entropy and squared-error losses: values, gradients, reductions, errors."""

import numpy
import pytest
from gradcheck import numeric_gradient

from predtext import nn
from predtext.nn import mse_loss, softmax_cross_entropy


def reference_cross_entropy(logits, targets):
    """Textbook per-row -log softmax(logits)[target], computed naively in float64."""
    probs = numpy.exp(logits) / numpy.exp(logits).sum(axis=-1, keepdims=True)
    return -numpy.log(probs[numpy.arange(len(targets)), targets])


def test_cross_entropy_matches_the_definition():
    rng = numpy.random.default_rng(0)
    logits = rng.normal(size=(6, 5))
    targets = rng.integers(0, 5, size=6)
    loss, _ = softmax_cross_entropy(logits, targets)
    assert loss == pytest.approx(reference_cross_entropy(logits, targets).mean(), rel=1e-12)
    losses, _ = softmax_cross_entropy(logits, targets, reduction="none")
    numpy.testing.assert_allclose(losses, reference_cross_entropy(logits, targets), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradient_matches_finite_differences(reduction):
    rng = numpy.random.default_rng(1)
    logits = rng.normal(size=(5, 4))
    targets = numpy.array([0, 3, -100, 1, 3])
    _, d_logits = softmax_cross_entropy(logits, targets, reduction=reduction)

    def loss():
        value, _ = softmax_cross_entropy(logits, targets, reduction=reduction)
        return float(numpy.sum(value))

    numpy.testing.assert_allclose(d_logits, numeric_gradient(loss, logits), rtol=1e-6, atol=1e-9)
    assert not d_logits[2].any()  # the ignored row gets no gradient


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch_with_ignore_index(reduction):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(2)
    logits = rng.normal(size=(8, 7)) * 3
    targets = rng.integers(0, 7, size=8)
    targets[[1, 5]] = 4  # pick a class id to ignore that also occurs as a real class
    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(targets),
                                               ignore_index=4, reduction=reduction)
    loss_t.sum().backward()
    loss, d_logits = softmax_cross_entropy(logits, targets, ignore_index=4, reduction=reduction)
    numpy.testing.assert_allclose(loss, loss_t.detach().numpy(), rtol=1e-12)
    numpy.testing.assert_allclose(d_logits, logits_t.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_cross_entropy_accepts_time_major_leading_axes():
    rng = numpy.random.default_rng(3)
    logits_tbv = rng.normal(size=(3, 2, 5))
    targets_tb = rng.integers(0, 5, size=(3, 2))
    loss, d_logits = softmax_cross_entropy(logits_tbv, targets_tb)
    flat_loss, flat_d = softmax_cross_entropy(logits_tbv.reshape(6, 5), targets_tb.reshape(6))
    assert loss == pytest.approx(flat_loss, rel=1e-14)
    assert d_logits.shape == (3, 2, 5)
    numpy.testing.assert_allclose(d_logits.reshape(6, 5), flat_d)
    losses, _ = softmax_cross_entropy(logits_tbv, targets_tb, reduction="none")
    assert losses.shape == (3, 2)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = numpy.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]], dtype=numpy.float32)
    loss, d_logits = softmax_cross_entropy(logits, numpy.array([1, 0]), reduction="none")
    assert numpy.isfinite(loss).all() and numpy.isfinite(d_logits).all()
    numpy.testing.assert_allclose(loss, [1e4, numpy.log(2)], rtol=1e-6)
    assert d_logits.dtype == numpy.float32


def test_cross_entropy_all_ignored_is_nan_with_zero_gradient():
    loss, d_logits = softmax_cross_entropy(numpy.ones((2, 3)), numpy.array([-100, -100]))
    assert numpy.isnan(loss)
    assert not d_logits.any()


@pytest.mark.parametrize("bad", [3, -1, 7])
def test_cross_entropy_rejects_out_of_range_targets(bad):
    with pytest.raises(ValueError, match="targets"):
        softmax_cross_entropy(numpy.zeros((2, 3)), numpy.array([0, bad]))


def test_cross_entropy_argument_checks():
    with pytest.raises(ValueError, match="targets"):
        softmax_cross_entropy(numpy.zeros((2, 3)), numpy.array([0, 1, 2]))
    with pytest.raises(TypeError, match="targets"):
        softmax_cross_entropy(numpy.zeros((2, 3)), numpy.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="reduction"):
        softmax_cross_entropy(numpy.zeros((2, 3)), numpy.array([0, 1]), reduction="avg")


def test_cross_entropy_module_scales_gradient_by_upstream():
    rng = numpy.random.default_rng(4)
    logits = rng.normal(size=(4, 3))
    targets = numpy.array([2, 0, 1, 1])
    criterion = nn.CrossEntropyLoss()
    loss, backprop = criterion.begin_update(logits, targets)
    assert loss == pytest.approx(criterion(logits, targets))
    _, d_expected = softmax_cross_entropy(logits, targets)
    numpy.testing.assert_allclose(backprop(), d_expected)
    numpy.testing.assert_allclose(backprop(0.5), 0.5 * d_expected)


def test_cross_entropy_module_none_reduction_takes_per_target_weights():
    logits = numpy.random.default_rng(5).normal(size=(3, 4))
    targets = numpy.array([0, 1, 2])
    criterion = nn.CrossEntropyLoss(reduction="none")
    _, backprop = criterion.begin_update(logits, targets)
    weights = numpy.array([1.0, 0.0, 2.0])
    d_logits = backprop(weights)
    _, per_row = softmax_cross_entropy(logits, targets, reduction="none")
    numpy.testing.assert_allclose(d_logits, per_row * weights[:, None])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_torch(reduction):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(6)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    x_t = torch.tensor(x, requires_grad=True)
    loss_t = torch.nn.functional.mse_loss(x_t, torch.from_numpy(y), reduction=reduction)
    loss_t.sum().backward()
    loss, d_x = mse_loss(x, y, reduction=reduction)
    numpy.testing.assert_allclose(loss, loss_t.detach().numpy(), rtol=1e-12)
    numpy.testing.assert_allclose(d_x, x_t.grad.numpy(), rtol=1e-12)


def test_mse_gradient_matches_finite_differences():
    rng = numpy.random.default_rng(7)
    x, y = rng.normal(size=(5,)), rng.normal(size=(5,))
    _, d_x = mse_loss(x, y)
    numpy.testing.assert_allclose(d_x, numeric_gradient(lambda: mse_loss(x, y)[0], x), rtol=1e-6)


def test_mse_module_and_shape_check():
    criterion = nn.MSELoss(reduction="sum")
    loss, backprop = criterion.begin_update(numpy.array([1.0, 2.0]), numpy.array([0.0, 0.0]))
    assert loss == pytest.approx(5.0)
    numpy.testing.assert_allclose(backprop(2.0), [4.0, 8.0])
    with pytest.raises(ValueError, match="target"):
        mse_loss(numpy.zeros(3), numpy.zeros(4))
