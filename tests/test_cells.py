"""The cell tables: the layers' (predtext.backend.cells) and the compiled core's (cells.h)
describe the same cells, and the layers build what the table says."""

import numpy
import pytest

from predtext import _core, nn
from predtext.backend.cells import CELLS, get_cell, model_cell, model_cells
from predtext.lm.model import LanguageModel, check_config
from predtext.nn.rnn import RNNBase


def test_the_core_knows_the_same_cells_as_the_layers():
    core = _core.cell_table()
    assert sorted(core) == sorted(CELLS)
    for name, cell in CELLS.items():
        row = core[name]
        assert row["gates"] == cell.gates == _core.gate_count(name)
        assert row["cell_state"] == cell.has_cell_state
        # The kernels take at most one extra weight array per layer.
        assert len(cell.extra_parameters) <= 1
        assert row["extra_rows"] == sum(rows for _, rows in cell.extra_parameters)


def test_an_unknown_cell_is_a_value_error_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"cell: expected one of \['gru', 'lstm', 'rnn_relu'"):
        get_cell("lstmx")
    with pytest.raises(ValueError, match="cell: expected one of"):
        get_cell(["lstm"])


@pytest.mark.parametrize("name", sorted(CELLS))
def test_a_layer_of_each_cell_has_the_parameters_and_state_the_table_gives(name):
    cell = CELLS[name]
    peephole = bool(cell.extra_parameters)
    options = {"peephole": True} if peephole else {}
    layer = RNNBase.for_cell(name, 3, 5, num_layers=2, **options)
    assert layer.cell == name
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes["weight_ih_l0"] == (cell.gates * 5, 3)
    assert shapes["weight_hh_l1"] == (cell.gates * 5, 5)
    for extra, rows in cell.extra_parameters:
        assert shapes[f"{extra}_l1"] == (rows, 5)
    out, state = layer(numpy.zeros((4, 2, 3), numpy.float32))
    assert out.shape == (4, 2, 5)
    assert isinstance(state, tuple) == cell.has_cell_state


def test_for_cell_gives_the_torch_named_class():
    assert type(RNNBase.for_cell("lstm", 2, 3)) is nn.LSTM
    assert type(RNNBase.for_cell("gru", 2, 3)) is nn.GRU
    relu = RNNBase.for_cell("rnn_relu", 2, 3)
    assert type(relu) is nn.RNN and relu.nonlinearity == "relu" and relu.cell == "rnn_relu"


def test_peepholes_only_for_a_cell_with_extra_weights():
    with pytest.raises(ValueError, match="peephole: only an LSTM has peephole weights"):
        RNNBase("gru", 2, 3, peephole=True)


def test_a_model_config_names_a_cell_by_family_and_nonlinearity():
    assert model_cells() == ("lstm", "gru", "rnn")
    assert model_cell("rnn", "relu").name == "rnn_relu"
    assert model_cell("rnn", "tanh").name == "rnn_tanh"
    assert model_cell("lstm", "relu").name == "lstm"  # the nonlinearity is the RNN's only
    with pytest.raises(ValueError, match="nonlinearity: expected one of"):
        model_cell("rnn", "sigmoid")
    with pytest.raises(ValueError, match=r"cell: expected one of \('lstm', 'gru', 'rnn'\)"):
        check_config({"vocab_size": 5, "cell": "rnn_tanh"})


@pytest.mark.parametrize("name", model_cells())
def test_a_language_model_of_each_cell_runs_and_puts_its_forget_bias_where_the_table_says(name):
    model = LanguageModel(7, embed_size=4, hidden_size=6, num_layers=2, cell=name,
                          nonlinearity="relu", forget_bias=1.5, seed=0)
    cell = model_cell(name, "relu")
    assert model.rnn.cell == cell.name
    for k in range(2):
        bias = getattr(model.rnn, f"bias_ih_l{k}").data.reshape(cell.gates, 6)
        for gate in range(cell.gates):
            assert numpy.all(bias[gate] == 1.5) == (gate == cell.forget_gate)
    state = model.initial_state(2)
    assert (state.c is not None) == cell.has_cell_state
    log_probs, _ = model.step([1, 2], state)
    numpy.testing.assert_allclose(numpy.exp(log_probs).sum(axis=1), 1, rtol=1e-5)
