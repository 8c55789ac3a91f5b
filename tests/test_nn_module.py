"""Module and Parameter: registration, naming, modes, state dicts."""

import numpy
import pytest

from predtext import nn
from predtext.nn import Module, Parameter


class Block(Module):
    def __init__(self, dtype=numpy.float32):
        super().__init__()
        self.dtype = nn.check_dtype(dtype)
        self.encoder = nn.Linear(3, 4, dtype=dtype)
        self.scale = Parameter(numpy.ones(4, dtype=self.dtype))
        self.decoder = nn.Sequential(nn.Linear(4, 5, dtype=dtype), nn.Dropout(0.1),
                                     nn.Linear(5, 2, bias=False, dtype=dtype))


def test_parameter_grad_starts_at_zero_with_same_shape_and_dtype():
    param = Parameter(numpy.arange(6, dtype=numpy.float64).reshape(2, 3))
    assert param.grad.shape == (2, 3)
    assert param.grad.dtype == numpy.float64
    assert not param.grad.any()
    assert param.grad is not param.data
    param.grad += 1
    param.zero_grad()
    assert not param.grad.any()


def test_parameters_are_named_recursively_own_parameters_first():
    names = [name for name, _ in Block().named_parameters()]
    assert names == ["scale", "encoder.weight", "encoder.bias",
                     "decoder.0.weight", "decoder.0.bias", "decoder.2.weight"]


def test_names_match_torch_for_the_same_structure():
    torch = pytest.importorskip("torch")

    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(3, 4)
            self.scale = torch.nn.Parameter(torch.ones(4))
            self.decoder = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Dropout(0.1),
                                               torch.nn.Linear(5, 2, bias=False))

    ours = [(name, tuple(p.shape)) for name, p in Block().named_parameters()]
    theirs = [(name, tuple(p.shape)) for name, p in TorchBlock().named_parameters()]
    assert ours == theirs
    assert [name for name, _ in Block().named_modules()] == [
        name for name, _ in TorchBlock().named_modules()]


def test_reassigning_an_attribute_replaces_or_unregisters_it():
    block = Block()
    block.scale = Parameter(numpy.zeros(4, dtype=numpy.float32))
    names = [name for name, _ in block.named_parameters()]
    assert names.count("scale") == 1
    block.scale = None
    assert "scale" not in dict(block.named_parameters())
    del block.encoder
    assert not any(name.startswith("encoder") for name, _ in block.named_parameters())


def test_shared_parameter_is_listed_once_under_its_first_name():
    block = Block()
    block.tied = block.scale
    block.decoder[2].weight = block.decoder[0].weight.__class__(
        numpy.zeros((2, 5), dtype=numpy.float32))
    block.decoder.append(block.encoder)  # a shared submodule, too
    names = [name for name, _ in block.named_parameters()]
    assert names.count("scale") == 1 and "tied" not in names
    assert not any(name.startswith("decoder.3") for name in names)
    params = list(block.parameters())
    assert len(params) == len({id(p) for p in params})


def test_assigning_before_init_raises():
    class Forgetful(Module):
        def __init__(self):
            self.weight = Parameter(numpy.zeros(2))

    with pytest.raises(AttributeError, match="super"):
        Forgetful()


def test_train_and_eval_reach_every_submodule():
    block = Block()
    assert all(m.training for m in block.modules())
    assert block.eval() is block
    assert not any(m.training for m in block.modules())
    block.train()
    assert all(m.training for m in block.modules())


def test_zero_grad_clears_every_parameter():
    block = Block()
    for param in block.parameters():
        param.grad += 3
    block.zero_grad()
    assert not any(param.grad.any() for param in block.parameters())


def test_call_runs_forward():
    layer = nn.Linear(3, 2)
    x = numpy.ones((4, 3), dtype=numpy.float32)
    numpy.testing.assert_array_equal(layer(x), layer.forward(x))


def test_base_module_has_no_forward():
    with pytest.raises(NotImplementedError):
        Module()(1)
    with pytest.raises(NotImplementedError):
        Module().begin_update(1)


@pytest.mark.parametrize("dtype", [numpy.int32, "float16", numpy.complex64, "nonsense", None])
def test_unsupported_dtype_raises_type_error_naming_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        nn.Linear(2, 2, dtype=dtype)


def test_float64_is_accepted_everywhere():
    block = Block(dtype=numpy.float64)
    assert all(param.dtype == numpy.float64 for param in block.parameters())


def test_state_dict_holds_copies():
    block = Block()
    state = block.state_dict()
    assert list(state) == [name for name, _ in block.named_parameters()]
    state["scale"][...] = 7
    assert not (block.scale.data == 7).any()


def test_state_dict_round_trip_between_modules():
    source, target = Block(), Block()
    target.load_state_dict(source.state_dict())
    for (name, a), (_, b) in zip(source.named_parameters(), target.named_parameters()):
        numpy.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_load_copies_in_place_and_casts_to_parameter_dtype():
    block = Block()
    weight_array = block.encoder.weight.data
    state = {name: numpy.full(value.shape, 0.5, dtype=numpy.float64)
             for name, value in block.state_dict().items()}
    block.load_state_dict(state)
    assert block.encoder.weight.data is weight_array  # same array, updated in place
    assert block.encoder.weight.dtype == numpy.float32
    assert (weight_array == 0.5).all()


def test_loads_a_torch_state_dict_unchanged():
    torch = pytest.importorskip("torch")
    torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    ours = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.0), nn.Linear(4, 2))
    ours.load_state_dict(torch_model.state_dict())
    ours.eval()
    x = numpy.random.default_rng(0).normal(size=(5, 3)).astype(numpy.float32)
    hidden = numpy.tanh(ours[0](x))
    expected = torch_model(torch.from_numpy(x)).detach().numpy()
    numpy.testing.assert_allclose(ours[2](hidden), expected, rtol=1e-5, atol=1e-6)


def test_loads_a_safetensors_file(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    source, target = Block(), Block()
    path = tmp_path / "model.safetensors"
    safetensors_numpy.save_file(dict(source.state_dict()), str(path))
    target.load_state_dict(safetensors_numpy.load_file(str(path)))
    numpy.testing.assert_array_equal(target.decoder[0].weight.data, source.decoder[0].weight.data)


def test_missing_key_is_named():
    block = Block()
    state = block.state_dict()
    del state["decoder.0.bias"]
    with pytest.raises(ValueError, match=r"missing.*decoder\.0\.bias"):
        block.load_state_dict(state)


def test_unexpected_key_is_named():
    block = Block()
    state = block.state_dict()
    state["decoder.9.weight"] = numpy.zeros(3)
    with pytest.raises(ValueError, match=r"unexpected.*decoder\.9\.weight"):
        block.load_state_dict(state)


def test_shape_mismatch_names_key_and_both_shapes():
    block = Block()
    state = block.state_dict()
    state["encoder.weight"] = numpy.zeros((4, 7), dtype=numpy.float32)
    with pytest.raises(ValueError) as caught:
        block.load_state_dict(state)
    message = str(caught.value)
    assert "encoder.weight" in message
    assert "(4, 3)" in message and "(4, 7)" in message


def test_failed_load_changes_nothing():
    block = Block()
    before = block.state_dict()
    state = {name: numpy.zeros_like(value) for name, value in before.items()}
    state["scale"] = numpy.zeros(9, dtype=numpy.float32)
    with pytest.raises(ValueError):
        block.load_state_dict(state)
    for name, value in block.state_dict().items():
        numpy.testing.assert_array_equal(value, before[name])


def test_non_strict_load_reports_keys_but_still_checks_shapes():
    block = Block()
    state = block.state_dict()
    del state["scale"]
    state["extra"] = numpy.zeros(1)
    result = block.load_state_dict(state, strict=False)
    assert result.missing_keys == ["scale"]
    assert result.unexpected_keys == ["extra"]
    state["encoder.bias"] = numpy.zeros(5)
    with pytest.raises(ValueError, match="encoder.bias"):
        block.load_state_dict(state, strict=False)


def test_load_rejects_non_mapping():
    with pytest.raises(TypeError, match="state_dict"):
        Block().load_state_dict([1, 2, 3])
