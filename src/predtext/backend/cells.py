"""The recurrent cells, described once: what every layer and backend needs to know of a cell.

A new cell is a row here, its row kernels in the compiled core's cell table
(``src/core/cells.h``), and its formulas in the array-API reference backend.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One recurrent cell.

    ``gates``: how many blocks of ``hidden_size`` rows ``weight_ih``/``weight_hh`` have, in
    torch's order (LSTM i, f, g, o; GRU r, z, n). ``has_cell_state``: the cell carries a
    ``c`` beside ``h`` (an LSTM). ``extra_parameters``: optional per-layer parameters beyond
    torch's four, as ``{name: rows}`` (their shape is ``(rows, hidden_size)``).
    """

    name: str
    gates: int
    has_cell_state: bool = False
    extra_parameters: tuple = ()

    def extra_rows(self, name):
        return dict(self.extra_parameters)[name]


CELLS = {
    "rnn_tanh": Cell("rnn_tanh", gates=1),
    "rnn_relu": Cell("rnn_relu", gates=1),
    # Peepholes weight c_{t-1} into the input and forget gates and c_t into the output gate.
    "lstm": Cell("lstm", gates=4, has_cell_state=True, extra_parameters=(("weight_ch", 3),)),
    "gru": Cell("gru", gates=3),
}


def get_cell(name):
    """The :class:`Cell` called ``name``; a ValueError naming the known cells otherwise."""
    try:
        return CELLS[name]
    except (KeyError, TypeError):
        raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {name!r}") from None
