"""The recurrent cells, described once: what every layer and backend needs to know of a cell.

A new cell is a row here, its row kernels in the compiled core's cell table
(``src/core/cells.h``, which a test checks against this one), and its formulas in the
array-API reference backend.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One recurrent cell.

    ``gates``: how many blocks of ``hidden_size`` rows ``weight_ih``/``weight_hh`` have, in
    torch's order (LSTM i, f, g, o; GRU r, z, n). ``has_cell_state``: the cell carries a
    ``c`` beside ``h`` (an LSTM). ``extra_parameters``: optional per-layer parameters beyond
    torch's four, as ``{name: rows}`` (their shape is ``(rows, hidden_size)``).
    ``forget_gate``: the gate block a language model's ``forget_bias`` goes into, or None.
    ``family`` and ``nonlinearity``: cells that differ only in their nonlinearity share a
    family name, which a language model's config gives as its ``cell`` beside a
    ``nonlinearity``; a cell without a family is named by its own name.
    """

    name: str
    gates: int
    has_cell_state: bool = False
    extra_parameters: tuple = ()
    forget_gate: int | None = None
    family: str | None = None
    nonlinearity: str | None = None

    def extra_rows(self, name):
        return dict(self.extra_parameters)[name]

    @property
    def model_name(self):
        """What a language model's config calls the cell (see ``family``)."""
        return self.family or self.name


# In the order a language model's config lists its choices.
CELLS = {
    # Peepholes weight c_{t-1} into the input and forget gates and c_t into the output gate.
    "lstm": Cell("lstm", gates=4, has_cell_state=True, extra_parameters=(("weight_ch", 3),),
                 forget_gate=1),
    "gru": Cell("gru", gates=3),
    "rnn_tanh": Cell("rnn_tanh", gates=1, family="rnn", nonlinearity="tanh"),
    "rnn_relu": Cell("rnn_relu", gates=1, family="rnn", nonlinearity="relu"),
}


def get_cell(name):
    """The :class:`Cell` called ``name``; a ValueError naming the known cells otherwise."""
    try:
        return CELLS[name]
    except (KeyError, TypeError):
        raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {name!r}") from None


def model_cells():
    """The names a language model's config takes for its ``cell``, in table order."""
    return tuple(dict.fromkeys(cell.model_name for cell in CELLS.values()))


def model_cell(name, nonlinearity=None):
    """The :class:`Cell` a model config's ``cell`` and ``nonlinearity`` name (the
    nonlinearity only tells apart cells of one family); a ValueError otherwise."""
    for cell in CELLS.values():
        if cell.model_name == name and cell.nonlinearity in (None, nonlinearity):
            return cell
    if name in model_cells():
        choices = [cell.nonlinearity for cell in CELLS.values() if cell.model_name == name]
        raise ValueError(f"nonlinearity: expected one of {choices} for cell={name!r}, "
                         f"got {nonlinearity!r}")
    raise ValueError(f"cell: expected one of {model_cells()}, got {name!r}")
