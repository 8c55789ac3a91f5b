"""predtext.backend: the Ops interface, the registry of backends, device errors."""

import subprocess
import sys
import textwrap

import numpy
import pytest

from predtext import _core, backend
from predtext.backend import (
    BackendUnavailable,
    NumpyOps,
    Ops,
    available_backends,
    get_ops,
    ops_for_device,
    ops_of,
    register_backend,
)


def test_the_cpu_backend_is_one_shared_ops_object():
    assert isinstance(get_ops(), NumpyOps) and get_ops("cpu") is get_ops()
    assert isinstance(get_ops(), Ops) and get_ops().device == "cpu"
    assert ops_for_device("cpu") is get_ops() and ops_for_device(get_ops()) is get_ops()


@pytest.mark.parametrize("name", ["gpu", "", None, 3])
def test_a_backend_nobody_registered_is_a_clear_error(name):
    with pytest.raises(ValueError, match="backend"):
        get_ops(name)


def test_importing_predtext_imports_no_gpu_library():
    code = ("import sys, predtext, predtext.nn, predtext.lm, predtext.backend as b; "
            "b.available_backends(); "
            "print(sorted(m for m in ('cupy', 'torch', 'numba', 'jax') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


class _TinyOps(NumpyOps):
    name = "tiny"


def test_a_registered_backend_is_made_once_and_listed(monkeypatch):
    made = []
    monkeypatch.setattr(backend, "_factories", dict(backend._factories))
    monkeypatch.setattr(backend, "_instances", dict(backend._instances))

    def factory():
        made.append(1)
        return _TinyOps()

    register_backend("tiny", factory)
    assert "tiny" in available_backends()
    assert get_ops("tiny") is get_ops("tiny") and len(made) == 1
    register_backend("bad", lambda: object())
    with pytest.raises(TypeError, match="not a predtext.backend.Ops"):
        get_ops("bad")
    with pytest.raises(TypeError, match="factory"):
        register_backend("x", 3)
    with pytest.raises(ValueError, match="name"):
        register_backend("", factory)


def test_an_installed_package_registers_a_backend_by_entry_point(tmp_path, monkeypatch):
    # A real (if tiny) installed distribution: a dist-info folder on sys.path.
    (tmp_path / "tinyops_pkg.py").write_text(textwrap.dedent("""
        from predtext.backend import NumpyOps
        class PluginOps(NumpyOps):
            name = "plugin"
        """))
    info = tmp_path / "tinyops_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyops-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[predtext.backends]\nplugin = tinyops_pkg:PluginOps\n"
        "missing = no_such_module_here:Ops\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(backend, "_factories", dict(backend._factories))
    monkeypatch.setattr(backend, "_instances", dict(backend._instances))
    monkeypatch.setattr(backend, "_entry_points_loaded", False)
    assert {"plugin", "missing"} <= set(available_backends())
    assert type(get_ops("plugin")).__name__ == "PluginOps"
    with pytest.raises(BackendUnavailable, match="no_such_module_here"):
        get_ops("missing")


def test_check_device_names_where_each_array_is():
    ops = get_ops()
    a = numpy.zeros(3)
    assert ops.check_device("x", a) is a

    class DeviceArray:          # what a GPU library's array shows without being imported
        __cuda_array_interface__ = {  # noqa: RUF012
            "shape": (3,), "typestr": "<f4", "data": (0, False),
            "version": 3}
        device = "<CUDA Device 0>"

    with pytest.raises(TypeError, match=r"x: is on a CUDA device .*on cpu"):
        ops.check_device("x", DeviceArray())
    assert ops_of(a) is ops and ops_of(DeviceArray()) is ops   # nobody owns it: the CPU's


def test_the_base_interface_states_the_recurrent_methods():
    base = Ops()
    for call in (lambda: base.rnn_forward("lstm", None, None, None),
                 lambda: base.rnn_backward(None, None, grad_w_ih=None, grad_w_hh=None),
                 lambda: base.network_step("lstm", None, [], None, None, 1),
                 lambda: base.cell_step("gru", *[None] * 10)):
        with pytest.raises(NotImplementedError, match="abstract"):
            call()
    assert base.step_workspace_shape("gru", 2, 5) == _core.step_workspace_shape("gru", 2, 5)
    assert base.step_workspace_shape("lstm", 2, 5) == _core.step_workspace_shape("lstm", 2, 5)


def test_the_array_api_defaults_match_the_compiled_core():
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(6, 4, 3))
    lengths = numpy.array([6, 1, 3, 5], dtype=numpy.int32)
    base, cpu = Ops(), get_ops()
    numpy.testing.assert_array_equal(base.reverse_sequences(x, lengths),
                                     cpu.reverse_sequences(x, lengths))
    numpy.testing.assert_array_equal(base.reverse_sequences(x), cpu.reverse_sequences(x))
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    numpy.testing.assert_allclose(base.matmul(a, b, trans_b=True), cpu.matmul(a, b, trans_b=True))
    table = numpy.zeros((4, 2))
    base.scatter_add(table, numpy.array([1, 1, 3]), numpy.ones((3, 2)))
    numpy.testing.assert_array_equal(table[:, 0], [0, 2, 0, 1])


# -- layers go through their module's ops ------------------------------------------------


class _FakeCudaArray:
    """What a GPU library's array shows to code that does not import the library."""

    __cuda_array_interface__ = {  # noqa: RUF012
        "shape": (2, 3), "typestr": "<f4", "data": (0, False),
        "version": 3}
    shape, dtype, device = (2, 3), numpy.dtype(numpy.float32), "<CUDA Device 0>"


def test_a_cpu_module_refuses_a_gpu_array_naming_both_devices():
    from predtext import nn

    for layer, argument in ((nn.Linear(3, 2), "input"), (nn.LSTM(3, 4), "input"),
                            (nn.Dropout(0.5), "input")):
        with pytest.raises(TypeError, match=rf"{argument}: is on a CUDA device .* on cpu"):
            layer(_FakeCudaArray())
    with pytest.raises(TypeError, match="logits_nv: is on a CUDA device"):
        nn.softmax_cross_entropy(_FakeCudaArray(), numpy.zeros(2, dtype=numpy.int64))


class _OtherOps(NumpyOps):
    """A second backend over the same arrays: moving to it must swap every module's ops."""

    name = "other-test"
    device = "other"


def test_module_to_moves_every_parameter_once_and_state_dicts_stay_numpy():
    from predtext.lm.model import LanguageModel

    model = LanguageModel(vocab_size=11, embed_size=6, hidden_size=6, num_layers=2,
                          tie_weights=True, seed=3)
    before = model.state_dict()
    other = _OtherOps()
    assert model.to(other) is model and model.device == "other"
    assert all(module.ops is other for module in model.modules())
    assert model.decoder.weight is model.embedding.weight       # still tied
    after = model.state_dict()
    assert all(type(value) is numpy.ndarray for value in after.values())
    for name in before:
        numpy.testing.assert_array_equal(before[name], after[name])
    assert model.to("cpu").device == "cpu" and model.ops is get_ops()
