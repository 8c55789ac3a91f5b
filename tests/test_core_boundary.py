"""The boundary of the compiled core.

Every entry point of predtext._core either runs, giving finite outputs of the right shapes,
or raises ValueError/TypeError whose message names the argument at fault; nothing Python
code can pass may crash the interpreter or touch memory out of bounds.  Hypothesis starts
from a valid call and corrupts a few of its arguments (dtype, shape, strides, writability,
Python type, presence, lengths, cell); explicit tests pin each error message.
scripts/sanitize.sh runs this file against an ASan/UBSan build, where an out-of-bounds
access that would pass silently here aborts the run.

The cases at the end of the file that could crash the interpreter run in a subprocess.
"""

import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import predtext
from predtext import _core

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
FLOATS = [np.float32, np.float64]
# Dtypes no entry point accepts for its arrays.
BAD_DTYPES = [np.float16, np.int32, np.int64, np.bool_, np.object_, np.complex64,
              np.complex128]
# Small sizes keep an example cheap: the boundary, not the arithmetic, is under test.
SIZE = st.integers(1, 6)
ALL = "any argument"  # blame for a corruption that other arguments are checked against

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def names(message, candidates):
    """True when the message names one of the candidate arguments as a whole word."""
    return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", message) for n in candidates)


def run_or_named_error(call, blame, arg_names):
    """Run call(), which may succeed or raise a ValueError/TypeError naming an argument in
    blame (any of arg_names when blame is ALL; an empty blame means it must succeed).  Any
    other exception propagates and fails the test.  Returns the result, None on error."""
    try:
        return call()
    except (ValueError, TypeError) as e:
        candidates = arg_names if blame is ALL else blame
        assert candidates, f"a valid call raised {type(e).__name__}: {e}"
        assert names(str(e), candidates), (
            f"{type(e).__name__}({str(e)!r}) names none of {sorted(candidates)}")
        return None


def finite(*arrays):
    return all(a is None or np.isfinite(a).all() for a in arrays)


# ---- corrupting one argument --------------------------------------------------------

def strided(a):
    """Same shape and values, every other element of a twice-as-wide buffer."""
    return np.repeat(a, 2, axis=-1)[..., ::2]


def transposed(a):
    """Same shape and values laid out with the first and last axes swapped."""
    return np.ascontiguousarray(np.swapaxes(a, 0, -1)).swapaxes(0, -1)


def unaligned(a):
    """Same shape and values at an address one byte past the dtype's alignment."""
    if a.dtype.hasobject:  # object arrays cannot be viewed from bytes
        return a
    buf = np.zeros(a.nbytes + a.itemsize, np.uint8)
    b = buf[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
    b[...] = a
    return b


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def reshaped(a, data):
    """An array of a wrong shape (same dtype): a dimension off by one or zero, one too
    many or too few dimensions."""
    shape = list(a.shape)
    how = data.draw(st.sampled_from(["resize", "zero", "extra", "fewer"]))
    if how in ("resize", "zero") and shape:
        k = data.draw(st.integers(0, len(shape) - 1))
        shape[k] = 0 if how == "zero" else max(0, shape[k] + data.draw(st.sampled_from([-1, 1])))
    elif how == "extra" or not shape:
        shape.insert(data.draw(st.integers(0, len(shape))), data.draw(st.integers(1, 2)))
    else:
        shape = shape[:-2] + [int(np.prod(shape[-2:]))]
    return np.full(shape, 0.25, a.dtype)


def corrupt(name, value, nominal, dtype, sources, data):
    """Return (new value, blame) for one random corruption of argument `name`.

    nominal: the array the argument would be if present (None values get one before
    being corrupted).  sources: arguments the shim reads sizes or the dtype from, which
    every other argument is then checked against, so a wrong one may be reported there.
    """
    kinds = ["dtype", "shape", "layout", "readonly", "pytype", "float"]
    if value is None:
        kinds.append("present")
    kind = data.draw(st.sampled_from(kinds), label=f"{name} corruption")
    # Start from the array the argument should be, also after an earlier corruption made
    # it something else.
    a = value if isinstance(value, np.ndarray) else nominal
    if kind == "present":
        return nominal, {name}
    if kind == "dtype":
        # Output buffers hold np.empty's garbage, and an earlier corruption may have made
        # the array complex: the cast's own warnings are not what is tested.
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            return a.astype(data.draw(st.sampled_from(BAD_DTYPES))), {name}
    if kind == "float":  # the other accepted float dtype, not the call's
        other = np.float64 if dtype == np.float32 else np.float32
        # np.empty's garbage may not fit the other type, and an earlier corruption may have
        # made the array complex.
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            return a.astype(other), (ALL if name in sources else {name})
    if kind == "shape":
        return reshaped(a, data), (ALL if name in sources else {name})
    if kind == "layout":
        if a.ndim == 0:
            return a, {name}
        how = data.draw(st.sampled_from([np.asfortranarray, strided, transposed, unaligned,
                                         lambda v: v[::-1]]))
        return how(a), {name}
    if kind == "readonly":
        return readonly(a), {name}
    junk = data.draw(st.sampled_from(["list", None, 1.5, 3, "abc", b"x", ()]))
    return (a.tolist() if junk == "list" else junk), {name}


LENGTH_CASES = ["zero", "negative", "too_long", "huge", "wrong_count", "float", "bool",
                "int64", "uint8", "list", "2d", "scalar", "uint64_huge", "str"]


def corrupt_lengths(T, B, data):
    """Lengths that are wrong in value, count or dtype, or right in an unusual dtype."""
    base = np.full(B, T, np.int64)  # all full length: valid unless T is 0
    case = data.draw(st.sampled_from(LENGTH_CASES), label="lengths corruption")
    k = data.draw(st.integers(0, max(0, B - 1)))
    if case in ("zero", "negative", "too_long", "huge") and B:
        bad = {"zero": 0, "negative": -1, "too_long": T + 1, "huge": 2**31}[case]
        base = base.copy()
        base[k] = bad
        return base
    if case == "wrong_count":
        return np.ones(B + (1 if B == 0 else data.draw(st.sampled_from([-1, 1]))), np.int64)
    if case == "float":
        return base.astype(np.float64)
    if case == "bool":
        return base > 0
    if case == "uint8":
        return base.astype(np.uint8)
    if case == "list":
        return base.tolist()
    if case == "2d":
        return base[None]
    if case == "scalar":
        return T
    if case == "uint64_huge":
        return np.full(B, 2**64 - 1, np.uint64)
    if case == "str":
        return "lengths"
    return base  # int64


def corrupt_cell(cell, data):
    """(new cell, blame): a different valid cell shifts every weight shape."""
    new = data.draw(st.one_of(st.sampled_from(CELLS), st.text(max_size=8),
                              st.sampled_from([None, 3, b"lstm", ["lstm"], "LSTM", "lstm "])),
                    label="cell")
    if new == cell:
        return cell, set()
    return new, (ALL if new in CELLS else {"cell"})


def apply_corruptions(args, nominal, dtype, sources, data, protected=()):
    """Corrupt up to two random arguments of args in place; return the union of blame."""
    blame = set()
    targets = [n for n in args if n not in protected]
    for _ in range(data.draw(st.integers(0, 2), label="corruptions")):
        name = data.draw(st.sampled_from(targets), label="argument")
        if name == "cell":
            args["cell"], b = corrupt_cell(args["cell"], data)
        elif name == "lengths":
            args["lengths"], b = corrupt_lengths(nominal["T"], nominal["B"], data), {"lengths"}
        else:
            args[name], b = corrupt(name, args[name], nominal[name], dtype, sources, data)
        blame = ALL if (b is ALL or blame is ALL) else blame | b
    return blame


def layer(cell, dtype, T, B, I, H, rng, bias=True, peephole=False, lengths=False):
    """Valid sequence_forward arguments, plus the nominal shape of every optional one."""
    G = _core.gate_count(cell)

    def arr(*shape):
        return rng.uniform(-0.5, 0.5, shape).astype(dtype)

    lstm = cell == "lstm"
    args = {"cell": cell, "x": arr(T, B, I), "w_ih": arr(G * H, I), "w_hh": arr(G * H, H),
            "b_ih": arr(G * H) if bias else None, "b_hh": arr(G * H) if bias else None,
            "h0": arr(B, H), "c0": arr(B, H) if lstm else None,
            "lengths": rng.integers(1, T + 1, B) if lengths else None,
            "peephole": arr(3, H) if lstm and peephole else None}
    nominal = {"T": T, "B": B, "b_ih": arr(G * H), "b_hh": arr(G * H), "c0": arr(B, H),
               "peephole": arr(3, H), "h0": arr(B, H)}
    return args, nominal


def layer_strategy():
    return st.tuples(st.sampled_from(CELLS), st.sampled_from(FLOATS), SIZE, SIZE, SIZE,
                     SIZE, st.booleans(), st.booleans(), st.booleans(),
                     st.integers(0, 2**32 - 1))


def forward(args, training=False):
    a = dict(args)
    return _core.sequence_forward(a.pop("cell"), a.pop("x"), a.pop("w_ih"), a.pop("w_hh"),
                                  training=training, **a)


FORWARD_ARGS = ["cell", "x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0", "lengths",
                "peephole"]


def check_forward_result(args, result, training):
    out, h_n, c_n, cache = result
    T, B = args["x"].shape[:2]
    H = args["w_hh"].shape[1]
    assert out.shape == (T, B, H) and h_n.shape == (B, H)
    assert out.dtype == args["x"].dtype
    assert (c_n is not None) == (args["cell"] == "lstm")
    assert c_n is None or c_n.shape == (B, H)
    assert (cache is not None) == training
    assert finite(out, h_n, c_n)


# ---- fuzzing each entry point -------------------------------------------------------

@FUZZ
@given(layer_strategy(), st.data())
def test_sequence_forward_fuzz(spec, data):
    cell, dtype, T, B, I, H, bias, peep, use_lengths, seed = spec
    args, nominal = layer(cell, dtype, T, B, I, H, np.random.default_rng(seed), bias, peep,
                          use_lengths)
    nominal.update({k: v for k, v in args.items() if v is not None and k not in nominal})
    blame = apply_corruptions(args, nominal, dtype, {"x", "w_hh"}, data)
    training = data.draw(st.booleans(), label="training")
    result = run_or_named_error(lambda: forward(args, training), blame, FORWARD_ARGS)
    if result is not None:
        check_forward_result(args, result, training)


BACKWARD_ARGS = ["cache", "d_out", "d_hn", "d_cn", "grad_w_ih", "grad_w_hh", "grad_b_ih",
                 "grad_b_hh", "grad_peephole"]


def backward_args(args, cache, rng, dtype):
    """Valid sequence_backward arguments for a forward over args."""
    T, B, _ = args["x"].shape
    H = args["w_hh"].shape[1]

    def arr(*shape):
        return rng.uniform(-0.5, 0.5, shape).astype(dtype)

    lstm = args["cell"] == "lstm"
    grads = {"grad_" + k: (None if args[k] is None else np.zeros_like(args[k]))
             for k in ("w_ih", "w_hh", "b_ih", "b_hh", "peephole")}
    return {"cache": cache, "d_out": arr(T, B, H), "d_hn": arr(B, H),
            "d_cn": arr(B, H) if lstm else None, **grads}


@FUZZ
@given(layer_strategy(), st.data())
def test_sequence_backward_fuzz(spec, data):
    cell, dtype, T, B, I, H, bias, peep, use_lengths, seed = spec
    rng = np.random.default_rng(seed)
    args, _ = layer(cell, dtype, T, B, I, H, rng, bias, peep, use_lengths)
    cache = forward(args, training=True)[3]
    bargs = backward_args(args, cache, rng, dtype)
    G = _core.gate_count(cell)
    nominal = {"d_hn": np.zeros((B, H), dtype), "d_cn": np.zeros((B, H), dtype),
               "grad_b_ih": np.zeros(G * H, dtype), "grad_b_hh": np.zeros(G * H, dtype),
               "grad_peephole": np.zeros((3, H), dtype)}
    nominal.update({k: v for k, v in bargs.items() if v is not None and k not in nominal})

    blame = set()
    if data.draw(st.booleans(), label="replace cache"):
        # A cache that is not one, or one of another layer: other cell, sizes, dtype,
        # biases or peepholes than the buffers were made for.
        other = data.draw(st.sampled_from(["none", "dict", "tuple", "blank", "other"]))
        if other == "other":
            c, d, T2, B2, I2, H2, bias2, peep2, len2, seed2 = data.draw(
                layer_strategy(), label="other layer")
            oargs, _ = layer(c, d, T2, B2, I2, H2, np.random.default_rng(seed2), bias2, peep2,
                             len2)
            bargs["cache"] = forward(oargs, training=True)[3]
            blame = ALL
        else:
            bargs["cache"] = {"none": None, "dict": {}, "tuple": (1, 2),
                              "blank": _core.SequenceCache()}[other]
            blame = {"cache"}
    more = apply_corruptions(bargs, nominal, dtype, set(), data, protected=("cache",))
    blame = ALL if (blame is ALL or more is ALL) else blame | more

    def call():
        b = dict(bargs)
        return _core.sequence_backward(b.pop("cache"), b.pop("d_out"), b.pop("d_hn"),
                                       b.pop("d_cn"), **b)

    result = run_or_named_error(call, blame, BACKWARD_ARGS)
    if result is not None:
        c = bargs["cache"]
        dx, dh0, dc0 = result
        assert dx.shape == (c.T, c.B, c.n_in) and dh0.shape == (c.B, c.H)
        assert (dc0 is not None) == (c.cell == "lstm")
        grads = [v for k, v in bargs.items() if k.startswith("grad_")]
        assert finite(dx, dh0, dc0, *grads)


STEP_ARGS = ["cell", "x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh", "h_out", "c_out", "work",
             "peephole"]


@FUZZ
@given(layer_strategy(), st.data())
def test_cell_step_fuzz(spec, data):
    cell, dtype, _, B, I, H, bias, peep, _, seed = spec
    rng = np.random.default_rng(seed)
    seq, _ = layer(cell, dtype, 1, B, I, H, rng, bias, peep)
    lstm = cell == "lstm"
    args = {"cell": cell, "x": seq["x"][0], "h": seq["h0"], "c": seq["c0"],
            "w_ih": seq["w_ih"], "w_hh": seq["w_hh"], "b_ih": seq["b_ih"],
            "b_hh": seq["b_hh"], "h_out": np.empty((B, H), dtype),
            "c_out": np.empty((B, H), dtype) if lstm else None,
            "work": np.empty(_core.step_workspace_shape(cell, B, H), dtype),
            "peephole": seq["peephole"]}
    G = _core.gate_count(cell)
    nominal = {"c": np.zeros((B, H), dtype), "c_out": np.zeros((B, H), dtype),
               "b_ih": np.zeros(G * H, dtype), "b_hh": np.zeros(G * H, dtype),
               "peephole": np.zeros((3, H), dtype)}
    nominal.update({k: v for k, v in args.items() if v is not None and k not in nominal})

    blame = set()
    if data.draw(st.booleans(), label="in place"):
        # Documented: the state may be updated in place.
        args["h_out"] = args["h"] = args["h"].copy()
        blame = {"h", "h_out"}
        if lstm:
            args["c_out"] = args["c"] = args["c"].copy()
            blame |= {"c", "c_out"}
    more = apply_corruptions(args, nominal, dtype, {"x", "w_hh"}, data)
    blame = ALL if more is ALL else (more | blame if more else set())

    def call():
        a = dict(args)
        return _core.cell_step(a.pop("cell"), *(a.pop(k) for k in STEP_ARGS[1:-1]), **a)

    run_or_named_error(call, blame, STEP_ARGS)
    if not blame:  # the uncorrupted call must have succeeded
        assert finite(args["h_out"], args["c_out"])


NETWORK_LAYER_ARGS = ["w_ih", "w_hh", "b_ih", "b_hh", "peephole"]


def corrupt_ids(ids, V, data):
    """Token ids wrong in value, count or type, or right in an unusual integer type."""
    case = data.draw(st.sampled_from(["too_big", "negative", "wrong_count", "float", "bool",
                                      "int32", "uint8", "list", "2d", "uint64_huge", "str",
                                      "huge_int"]), label="token_ids corruption")
    if case in ("too_big", "negative"):
        bad = ids.copy()
        bad[data.draw(st.integers(0, len(ids) - 1))] = V if case == "too_big" else -1
        return bad, True
    bad = {"wrong_count": lambda: np.ones(len(ids) + 1, np.int64), "float": lambda: ids * 1.0,
           "bool": lambda: ids > 0, "2d": lambda: ids[None], "str": lambda: "ids",
           "uint64_huge": lambda: np.full(len(ids), 2**64 - 1, np.uint64),
           "huge_int": lambda: [2**70] * len(ids)}.get(case)
    if bad is not None:
        return bad(), True
    return {"int32": ids.astype(np.int32), "uint8": ids.astype(np.uint8),
            "list": ids.tolist()}[case], False


@FUZZ
@given(st.sampled_from(CELLS), st.sampled_from(FLOATS), SIZE, SIZE, SIZE, SIZE,
       st.integers(1, 3), st.booleans(), st.booleans(), st.booleans(),
       st.integers(0, 2**32 - 1), st.data())
def test_network_step_fuzz(cell, dtype, B, E, H, V, L, bias, peep, decoder_bias, seed, data):
    rng = np.random.default_rng(seed)
    G, lstm = _core.gate_count(cell), cell == "lstm"

    def arr(*shape):
        return rng.uniform(-0.5, 0.5, shape).astype(dtype)

    # Flat names for the corruptions ("w_ih1"), the names the errors use ("layers[1].w_ih").
    args = {"cell": cell, "embedding": arr(V, E), "decoder_weight": arr(V, H),
            "decoder_bias": arr(V) if decoder_bias else None, "h": arr(L, B, H),
            "c": arr(L, B, H) if lstm else None, "log_probs": np.empty((B, V), dtype)}
    nominal = {"decoder_bias": arr(V), "c": arr(L, B, H)}
    message_name = {}
    for k in range(L):
        inputs = E if k == 0 else H
        layer = {"w_ih": arr(G * H, inputs), "w_hh": arr(G * H, H),
                 "b_ih": arr(G * H) if bias else None, "b_hh": arr(G * H) if bias else None,
                 "peephole": arr(3, H) if lstm and peep else None}
        nominal_layer = {"b_ih": arr(G * H), "b_hh": arr(G * H), "peephole": arr(3, H)}
        for kind in NETWORK_LAYER_ARGS:
            args[f"{kind}{k}"] = layer[kind]
            nominal[f"{kind}{k}"] = nominal_layer.get(kind, layer[kind])
            message_name[f"{kind}{k}"] = f"layers[{k}].{kind}"
    nominal.update({k: v for k, v in args.items() if v is not None and k not in nominal})
    more = apply_corruptions(args, nominal, dtype, {"embedding", "w_hh0", "decoder_weight"},
                             data)
    blame = more if more is ALL else {message_name.get(n, n) for n in more}
    ids = rng.integers(0, V, B)
    if data.draw(st.booleans(), label="corrupt token_ids"):
        ids, wrong = corrupt_ids(ids, V, data)
        if wrong and blame is not ALL:
            blame = blame | {"token_ids"}
    batch = B
    if data.draw(st.integers(0, 9), label="corrupt batch") == 0:
        batch = data.draw(count(high=8), label="batch")
        if not (type(batch) is int and batch == B):     # 2.0 == 2, yet not an int
            blame = ALL

    def call():
        layers = [tuple(args[f"{kind}{k}"] for kind in NETWORK_LAYER_ARGS) for k in range(L)]
        step = _core.NetworkStep(args["cell"], args["embedding"], layers, args["decoder_weight"],
                                 args["decoder_bias"], batch)
        return step(ids, args["h"], args["c"], args["log_probs"])

    names_used = (["cell", "embedding", "layers", "decoder_weight", "decoder_bias", "batch",
                   "token_ids", "h", "c", "log_probs"] + list(message_name.values()))
    result = run_or_named_error(call, blame, names_used)
    if not blame:     # the uncorrupted call must have succeeded
        assert result is args["log_probs"] and finite(args["h"], args["c"], result)
        np.testing.assert_allclose(np.exp(result.astype(np.float64)).sum(axis=1), 1.0, rtol=1e-4)


def reference_reverse(x, lengths):
    T, B = x.shape[:2]
    out = np.zeros_like(x)
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        out[:n, b] = x[:n, b][::-1]
    return out


@FUZZ
@given(st.sampled_from(FLOATS), st.integers(0, 6), st.integers(0, 6), st.integers(0, 6),
       st.booleans(), st.booleans(), st.integers(0, 2**32 - 1), st.data())
def test_reverse_sequences_fuzz(dtype, T, B, F, use_lengths, use_out, seed, data):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (T, B, F)).astype(dtype)
    lengths = rng.integers(1, T + 1, B) if use_lengths and T else None
    args = {"x": x, "lengths": lengths, "out": np.empty_like(x) if use_out else None}
    nominal = {"T": T, "B": B, "x": x, "out": np.empty_like(x)}
    blame = set()
    if data.draw(st.booleans(), label="overlapping out") and x.size:
        # out over the same memory as x, exactly or shifted by one element.
        shift = data.draw(st.integers(0, 1))
        buf = np.zeros(x.size + 1, dtype)
        args["x"] = buf[:x.size].reshape(x.shape)
        args["out"] = buf[shift:shift + x.size].reshape(x.shape)
        blame = {"out"}
    more = apply_corruptions(args, nominal, dtype, {"x"}, data)
    blame = ALL if more is ALL else blame | more
    result = run_or_named_error(
        lambda: _core.reverse_sequences(args["x"], args["lengths"], args["out"]),
        blame, ["x", "lengths", "out"])
    if result is not None:
        assert result.shape == args["x"].shape and result.dtype == args["x"].dtype
        if args["out"] is not None:
            assert result is args["out"]
        np.testing.assert_array_equal(result, reference_reverse(args["x"], args["lengths"]))


def count(high=1000):
    """A size or count argument: mostly small ints, sometimes huge or not an int at all."""
    return st.one_of(st.integers(-3, high),
                     st.sampled_from([2**31, 2**63, 1.5, 2.0, "2", None, True, np.int64(3),
                                      np.float32(2), [2]]))


@FUZZ
@given(st.data())
def test_small_entry_points_fuzz(data):
    cell, blame = corrupt_cell(data.draw(st.sampled_from(CELLS)), data)
    run_or_named_error(lambda: _core.gate_count(cell), blame, ["cell"])
    batch, hidden = data.draw(count()), data.draw(count())
    for name, value in (("batch", batch), ("hidden", hidden)):
        if not (type(value) is int and 1 <= value <= 1000):
            blame = ALL if blame is ALL else blame | {name}
    shape = run_or_named_error(lambda: _core.step_workspace_shape(cell, batch, hidden),
                               blame, ["cell", "batch", "hidden"])
    if shape is not None:
        assert shape[0] == batch and shape[1] >= hidden

    before = _core.get_num_threads()
    n = data.draw(count(high=3))
    try:
        run_or_named_error(lambda: _core.set_num_threads(n),
                           set() if type(n) is int and 1 <= n <= 3 else {"n"}, ["n"])
    finally:
        _core.set_num_threads(before)


@FUZZ
@given(st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.bool_]),
       st.lists(st.integers(0, 5), max_size=3), st.booleans(), st.integers(0, 2**32 - 1))
def test_elementwise_helpers_fuzz(dtype, shape, noncontig, seed):
    x = np.random.default_rng(seed).uniform(-100, 100, shape).astype(dtype)
    if noncontig and x.ndim:
        x = strided(x)
    for fn, lo in ((_core.sigmoid_f32, 0.0), (_core.tanh_f32, -1.0)):
        y = fn(x)
        # np.ascontiguousarray makes a 0-d input 1-d.
        assert y.shape == np.atleast_1d(x).shape and y.dtype == np.float32
        assert np.isfinite(y).all() and (y >= lo).all() and (y <= 1.0).all()


# ---- every error message ------------------------------------------------------------

def valid(cell="lstm", dtype=np.float32, T=4, B=3, I=3, H=2, bias=True, peephole=False):
    args, _ = layer(cell, dtype, T, B, I, H, np.random.default_rng(0), bias, peephole)
    return args


def fwd(base="lstm", **over):
    args = valid(base)
    args.update(over)
    return lambda: forward(args)


LSTM = valid("lstm")
F64 = valid("lstm", np.float64)

FORWARD_ERRORS = [
    (fwd(cell=3), TypeError, "Argument 'cell' has incorrect type"),
    (fwd(cell="lstmx"), ValueError, r"cell: expected one of \['gru', 'lstm', 'rnn_relu', "
                                    r"'rnn_tanh'\], got 'lstmx'"),
    (fwd(x=[[[1.0]]]), TypeError, "x: expected a numpy.ndarray, got list"),
    (fwd(x=LSTM["x"].astype(np.int32)), TypeError,
     "x: expected dtype float32 or float64, got int32"),
    (fwd(x=LSTM["x"][0]), ValueError, r"x: expected 3 dimensions \(T, B, input\)"),
    (fwd(w_hh=LSTM["w_hh"][:-1]), ValueError, r"w_hh: expected shape \(4\*hidden, hidden\)"),
    (fwd(w_hh=None), TypeError, "w_hh: expected a numpy.ndarray, got NoneType"),
    (fwd(x=LSTM["x"][:0]), ValueError,
     "x: expected T, B, input and hidden sizes >= 1, got T=0"),
    (fwd(w_ih=LSTM["w_ih"][:, :2].copy()), ValueError, r"w_ih: expected shape \(8, 3\)"),
    (fwd(w_ih=F64["w_ih"]), TypeError, "w_ih: expected dtype float32, got float64"),
    (fwd(w_ih=np.asfortranarray(LSTM["w_ih"])), ValueError,
     "w_ih: expected a C-contiguous array"),
    (fwd(w_ih=unaligned(LSTM["w_ih"])), ValueError, "w_ih: expected an aligned array"),
    (fwd(w_hh=strided(LSTM["w_hh"])), ValueError, "w_hh: expected a C-contiguous array"),
    (fwd(b_hh=None), ValueError, "b_ih, b_hh: expected both or neither"),
    (fwd(b_ih=LSTM["b_ih"][:-1].copy()), ValueError, r"b_ih: expected shape \(8,\)"),
    (fwd(h0=LSTM["h0"][:1].copy()), ValueError, r"h0: expected shape \(3, 2\)"),
    (fwd(c0=LSTM["c0"].T.copy()), ValueError, r"c0: expected shape \(3, 2\)"),
    (fwd(c0=LSTM["c0"].astype(np.float16)), TypeError, "c0: expected dtype float32"),
    (fwd("gru", c0=LSTM["c0"]), ValueError, "c0: only an LSTM has a cell state"),
    (fwd("gru", peephole=np.zeros((3, 2), np.float32)), ValueError,
     "peephole: only an LSTM has peephole weights"),
    (fwd(peephole=np.zeros((4, 2), np.float32)), ValueError,
     r"peephole: expected shape \(3, 2\)"),
    (fwd(lengths=[1.0, 2.0, 3.0]), TypeError, "lengths: expected integers, got dtype float64"),
    (fwd(lengths=[1, 2]), ValueError, r"lengths: expected shape \(3,\), got \(2,\)"),
    (fwd(lengths=[1, 0, 3]), ValueError, r"lengths: expected values in \[1, 4\]"),
    (fwd(lengths=[1, 5, 3]), ValueError, r"lengths: expected values in \[1, 4\]"),
    (fwd(lengths=np.array([1, 2**40, 3])), ValueError, r"lengths: expected values in"),
]


def bwd(cell="lstm", bias=True, peephole=False, **over):
    args = valid(cell, bias=bias, peephole=peephole)
    cache = forward(args, training=True)[3]
    b = backward_args(args, cache, np.random.default_rng(1), np.float32)
    b.update(over)
    return lambda: _core.sequence_backward(b.pop("cache"), b.pop("d_out"), b.pop("d_hn"),
                                           b.pop("d_cn"), **b)


BACKWARD_ERRORS = [
    (bwd(cache=None), TypeError, "cache: expected the cache of a training-mode"),
    (bwd(cache=forward(LSTM)[3]), TypeError, "cache: expected the cache of a training-mode"),
    (bwd(cache={}), TypeError, "Argument 'cache' has incorrect type"),
    (bwd(cache=_core.SequenceCache()), TypeError, "cache: expected the cache of a training-mode"),
    (bwd(d_out=np.zeros((4, 3, 3), np.float32)), ValueError,
     r"d_out: expected shape \(4, 3, 2\)"),
    (bwd(d_out=np.zeros((4, 3, 2))), TypeError, "d_out: expected dtype float32, got float64"),
    (bwd(d_hn=np.zeros((3, 2), np.float32).T), ValueError, r"d_hn: expected shape \(3, 2\)"),
    (bwd(d_hn=np.zeros((3, 2), np.float32, order="F")), ValueError,
     "d_hn: expected a C-contiguous array"),
    (bwd("gru", d_cn=np.zeros((3, 2), np.float32)), ValueError,
     "d_cn: only an LSTM has a cell state"),
    (bwd(grad_w_ih=readonly(np.zeros((8, 3), np.float32))), ValueError,
     "grad_w_ih: expected a writable array"),
    (bwd(grad_w_hh=np.zeros((8, 3), np.float32)), ValueError,
     r"grad_w_hh: expected shape \(8, 2\)"),
    (bwd(grad_b_ih=None), ValueError, "grad_b_ih, grad_b_hh: the layer has biases"),
    (bwd(bias=False, grad_b_hh=np.zeros(8, np.float32)), ValueError,
     "grad_b_ih, grad_b_hh: the layer has no biases"),
    (bwd(grad_b_hh=np.zeros(8, np.int32)), TypeError, "grad_b_hh: expected dtype float32"),
    (bwd(peephole=True, grad_peephole=None), ValueError,
     "grad_peephole: the layer has peephole weights"),
    (bwd(grad_peephole=np.zeros((3, 2), np.float32)), ValueError,
     "grad_peephole: the layer has no peephole weights"),
    (bwd(peephole=True, grad_peephole=np.zeros((2, 3), np.float32)), ValueError,
     r"grad_peephole: expected shape \(3, 2\)"),
]


def step(cell="lstm", **over):
    seq = valid(cell)
    B, H = seq["h0"].shape
    lstm = cell == "lstm"
    args = {"x": seq["x"][0], "h": seq["h0"], "c": seq["c0"], "w_ih": seq["w_ih"],
            "w_hh": seq["w_hh"], "b_ih": seq["b_ih"], "b_hh": seq["b_hh"],
            "h_out": np.empty((B, H), np.float32),
            "c_out": np.empty((B, H), np.float32) if lstm else None,
            "work": np.empty(_core.step_workspace_shape(cell, B, H), np.float32),
            "peephole": None}
    args.update(over)
    return lambda: _core.cell_step(cell, **args)


STEP_ERRORS = [
    (step(x=LSTM["x"]), ValueError, r"x: expected 2 dimensions \(B, input\)"),
    (step(x=LSTM["x"][0].astype(np.bool_)), TypeError, "x: expected dtype float32 or float64"),
    (step(h=np.zeros((3, 3), np.float32)), ValueError, r"h: expected shape \(3, 2\)"),
    (step(h_out=readonly(np.zeros((3, 2), np.float32))), ValueError,
     "h_out: expected a writable array"),
    (step(h_out=np.zeros((3, 2), np.float32, order="F")[::-1]), ValueError,
     "h_out: expected a C-contiguous array"),
    (step(c=None), ValueError, "c, c_out: an LSTM step needs the cell state"),
    (step(c_out=np.zeros((3, 2))), TypeError, "c_out: expected dtype float32, got float64"),
    (step("gru", c=np.zeros((3, 2), np.float32)), ValueError,
     "c, c_out: only an LSTM has a cell state"),
    (step("rnn_tanh", peephole=np.zeros((3, 2), np.float32)), ValueError,
     "peephole: only an LSTM has peephole weights"),
    (step("gru", work=np.empty((3, 6), np.float32)), ValueError,
     r"work: expected shape \(3, 12\)"),
    (step(work=readonly(np.empty((3, 8), np.float32))), ValueError,
     "work: expected a writable array"),
    (step(b_ih=None), ValueError, "b_ih, b_hh: expected both or neither"),
]

X = np.zeros((4, 3, 2), np.float32)
OTHER_ERRORS = [
    (lambda: _core.reverse_sequences(X[0]), ValueError, r"x: expected 3 dimensions \(T, B, F\)"),
    (lambda: _core.reverse_sequences(X.tolist()), TypeError, "x: expected a numpy.ndarray"),
    (lambda: _core.reverse_sequences(X, [1, 2, 5]), ValueError, r"lengths: expected values in"),
    (lambda: _core.reverse_sequences(X, out=X), ValueError, "out: must not overlap x"),
    (lambda: _core.reverse_sequences(X, out=np.empty((4, 3, 2))), TypeError,
     "out: expected dtype float32"),
    (lambda: _core.reverse_sequences(X, out=readonly(X)), ValueError,
     "out: expected a writable array"),
    (lambda: _core.gate_count("GRU"), ValueError, "cell: expected one of"),
    (lambda: _core.gate_count(None), TypeError, "cell: expected a str, got NoneType"),
    (lambda: _core.step_workspace_shape("gru", 0, 4), ValueError,
     "batch: expected an int >= 1, got 0"),
    (lambda: _core.step_workspace_shape("rnn", 1, 4), ValueError, "cell: expected one of"),
    (lambda: _core.set_num_threads(0), ValueError, "n: expected an int >= 1, got 0"),
]


@pytest.mark.parametrize(
    "call,error,message",
    FORWARD_ERRORS + BACKWARD_ERRORS + STEP_ERRORS + OTHER_ERRORS,
    ids=[f"forward-{k}" for k in range(len(FORWARD_ERRORS))]
    + [f"backward-{k}" for k in range(len(BACKWARD_ERRORS))]
    + [f"step-{k}" for k in range(len(STEP_ERRORS))]
    + [f"other-{k}" for k in range(len(OTHER_ERRORS))])
def test_error_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---- valid unusual inputs -----------------------------------------------------------

@pytest.mark.parametrize("lengths", [[4, 1, 2], np.array([4, 1, 2], np.uint8),
                                     np.array([4, 1, 2], np.int64), (4, 1, 2)],
                         ids=["list", "uint8", "int64", "tuple"])
def test_lengths_in_any_integer_dtype(lengths):
    expected = forward({**LSTM, "lengths": np.array([4, 1, 2], np.int32)})
    got = forward({**LSTM, "lengths": lengths})
    for e, g in zip(expected[:3], got[:3]):
        np.testing.assert_array_equal(e, g)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("cell", CELLS)
def test_cell_step_in_place_matches_separate_buffers(cell, dtype, threads):
    # H = 20 gives several threads their own slices of units (slices are 8 wide).
    B, I, H = 3, 4, 20
    rng = np.random.default_rng(0)
    seq, _ = layer(cell, dtype, 1, B, I, H, rng, peephole=cell == "lstm")
    lstm = cell == "lstm"
    work = np.empty(_core.step_workspace_shape(cell, B, H), dtype)
    h, c = seq["h0"], seq["c0"]
    h_out = np.empty_like(h)
    c_out = np.empty_like(c) if lstm else None
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(threads)
        params = (seq["w_ih"], seq["w_hh"], seq["b_ih"], seq["b_hh"])
        _core.cell_step(cell, seq["x"][0], h, c, *params, h_out, c_out, work,
                        peephole=seq["peephole"])
        h2 = h.copy()
        c2 = c.copy() if lstm else None
        _core.cell_step(cell, seq["x"][0], h2, c2, *params, h2, c2, work,
                        peephole=seq["peephole"])
    finally:
        _core.set_num_threads(before)
    np.testing.assert_array_equal(h2, h_out)
    if lstm:
        np.testing.assert_array_equal(c2, c_out)


def test_inputs_may_be_read_only():
    args = {k: (readonly(v) if isinstance(v, np.ndarray) else v) for k, v in LSTM.items()}
    expected = forward(LSTM)
    for e, g in zip(expected[:3], forward(args)[:3]):
        np.testing.assert_array_equal(e, g)


def test_reverse_sequences_handles_empty_arrays():
    for shape in [(0, 3, 2), (4, 0, 2), (4, 3, 0)]:
        x = np.zeros(shape, np.float64)
        assert _core.reverse_sequences(x).shape == shape


# ---- inputs that once reached the C code unchecked ----------------------------------

def run_isolated(code):
    """Run code in a fresh interpreter on this same build of the core.

    For inputs that used to crash the core: a regression must fail the test, not take the
    test run with it.  Under scripts/sanitize.sh the child's sanitizer report goes to its
    stderr, which the failure shows.
    """
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(predtext.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    for key in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        if key in env:
            env[key] = ":".join(o for o in env[key].split(":")
                                if not o.startswith("log_path="))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


def assert_isolated_ok(code):
    proc = run_isolated(code)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"exit status {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def test_forged_cache_is_rejected():
    assert_isolated_ok("""
        import numpy as np
        from predtext import _core
        x = np.zeros((3, 2, 2), np.float32)
        w_ih, w_hh = np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32)
        cache = _core.sequence_forward("lstm", x, w_ih, w_hh, training=True)[3]
        try:
            make, args, state = cache.__reduce_ex__(2)
            state = list(state)
            state[3] = 10**6  # T (the state lists the attributes by name: B, G, H, T, ...)
            forged = make(*args)
            forged.__setstate__(tuple(state))
            _core.sequence_backward(forged, np.zeros((10**6, 2, 1), np.float32),
                                    grad_w_ih=np.zeros_like(w_ih), grad_w_hh=np.zeros_like(w_hh))
        except (TypeError, ValueError, AttributeError) as e:
            print("ok")
        else:
            print("a forged T was accepted")
    """)


def test_ndarray_subclass_cannot_misreport_its_shape():
    assert_isolated_ok("""
        import numpy as np
        from predtext import _core

        class Liar(np.ndarray):
            @property
            def shape(self):
                return (100000, 4, 4)

        x = np.zeros((1, 4, 4), np.float32).view(Liar)
        w = np.zeros((4, 4), np.float32)
        try:
            out = _core.sequence_forward("rnn_tanh", x, w, w)[0]
        except (TypeError, ValueError):
            print("ok")
        else:
            print("ok" if out.shape[0] == 1 else f"ran over {out.shape[0]} steps")
    """)


def test_workspace_shape_does_not_overflow():
    assert_isolated_ok("""
        from predtext import _core
        try:
            shape = _core.step_workspace_shape("lstm", 1, 2**30)
        except ValueError as e:
            print("ok" if "hidden" in str(e) else e)
        else:
            print("ok" if shape == (1, 2**32) else f"got {shape}")
    """)


def test_cell_step_huge_hidden_size_is_rejected_before_use():
    # A zero-stride view: a (4 * 2**29, 2**29) w_hh that takes no memory.
    assert_isolated_ok("""
        import numpy as np
        from numpy.lib.stride_tricks import as_strided
        from predtext import _core
        H = 2**29
        w_hh = as_strided(np.zeros(1, np.float32), shape=(4 * H, H), strides=(0, 0))
        x = np.zeros((1, 1), np.float32)
        try:
            _core.cell_step("lstm", x, x, x, x, w_hh, None, None, x, x, x)
        except ValueError as e:
            print("ok" if "w_hh" in str(e) else e)
    """)


def huge_empty(shape):
    """A zero-size array with a dimension past 32 bits (it takes no memory)."""
    return np.zeros(shape, np.float32)


ARGUMENT_ERRORS = [
    # Sizes past 32 bits (a C int conversion would raise OverflowError).
    ("x", lambda: _core.sequence_forward("lstm", huge_empty((0, 2**31, 1)),
                                         np.zeros((4, 1), np.float32),
                                         np.zeros((4, 1), np.float32))),
    ("x", lambda: _core.reverse_sequences(huge_empty((2**31, 0, 1)))),
    ("batch", lambda: _core.step_workspace_shape("lstm", 2**31, 4)),
    ("n", lambda: _core.set_num_threads(2**31)),
    # Counts that are not ints (a C int parameter would truncate 1.5, and fail on "2"
    # without naming the argument).
    ("batch", lambda: _core.step_workspace_shape("lstm", "2", 4)),
    ("batch", lambda: _core.step_workspace_shape("lstm", 1.5, 4)),
    # Ragged lengths (np.asarray's own error names nothing).
    ("lengths", lambda: _core.reverse_sequences(X, [[1], [1, 2], [3]])),
    # Input to the elementwise helpers that is not numbers.
    ("x", lambda: _core.sigmoid_f32("abc")),
]


@pytest.mark.parametrize("name,call", ARGUMENT_ERRORS,
                         ids=[f"{n}-{k}" for k, (n, _) in enumerate(ARGUMENT_ERRORS)])
def test_error_names_the_argument(name, call):
    before = _core.get_num_threads()
    try:
        with pytest.raises((ValueError, TypeError), match=rf"(?<!\w){name}(?!\w)"):
            call()
    finally:
        _core.set_num_threads(before)
