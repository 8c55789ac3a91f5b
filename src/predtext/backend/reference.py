"""A slow reference of every cell's forward and backward, in array-API operations only.

It is the oracle the fast backends are checked against (no torch needed): each step is the
cell's textbook equations on whole ``(B, H)`` arrays, and the backward is their chain rule
written out step by step, with none of the fast paths' fusing, blocking or buffer reuse. It
uses only functions of the Python array API standard (``matmul``, ``tanh``, ``exp``,
``where``, ``concat``, ``sum``, ``zeros``...), so the same code runs on NumPy and on CuPy:
the first thing a GPU backend is compared with on its own device.

``ReferenceOps`` offers it as a backend ("reference"), so a whole model can run on it.
Gate order and parameters are PyTorch's (LSTM i, f, g, o; GRU r, z, n with ``b_hn``
inside the reset product); the LSTM's optional peepholes weight ``c_{t-1}`` into i and f
and ``c_t`` into o. A recurrent dropout mask ``(B, H)`` multiplies ``h_{t-1}`` where it
enters the recurrent product ``W_hh h_{t-1}``, and only there (a GRU's carry
``z * h_{t-1}`` takes the state unmasked, as Keras's ``recurrent_dropout`` does).
"""

from __future__ import annotations

import numpy

from predtext.backend.cells import get_cell
from predtext.backend.ops import Ops


def namespace(array):
    """The array API namespace of ``array`` (NumPy 2 and CuPy arrays say which it is)."""
    method = getattr(array, "__array_namespace__", None)
    return numpy if method is None else method()


def _concat(xp, arrays, axis):
    return (xp.concat if hasattr(xp, "concat") else xp.concatenate)(arrays, axis=axis)


def _sigmoid(xp, a):
    return 1 / (1 + xp.exp(-a))


def _split(a, parts):
    size = a.shape[-1] // parts
    return [a[..., k * size:(k + 1) * size] for k in range(parts)]


class ReferenceCache:
    """What ``forward(training=True)`` keeps: the inputs and every step's values."""

    def __init__(self, **values):
        self.__dict__.update(values)


def forward(cell, x_tbi, w_ih, w_hh, b_ih=None, b_hh=None, h0_bh=None, c0_bh=None,
            lengths=None, peephole=None, reverse=False, training=False, recurrent_mask=None):
    """One layer over whole sequences: ``(out_tbh, h_n, c_n or None, cache or None)``.

    ``reverse`` runs each sequence from its last valid step to its first (outputs stay at
    their own time positions). Steps past a sequence's length give zero output and leave
    its state unchanged. ``recurrent_mask`` ``(B, H)``: recurrent dropout (module doc).
    """
    spec = get_cell(cell)
    xp = namespace(x_tbi)
    T, B = x_tbi.shape[:2]
    H = w_hh.shape[1]
    dtype = x_tbi.dtype
    h = xp.zeros((B, H), dtype=dtype) if h0_bh is None else h0_bh
    c = None
    if spec.has_cell_state:
        c = xp.zeros((B, H), dtype=dtype) if c0_bh is None else c0_bh
    masks = _masks(xp, T, B, lengths, dtype)
    outs = [None] * T
    steps = []
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        x_t, m = x_tbi[t], masks[t]
        gx = xp.matmul(x_t, w_ih.T) + (0 if b_ih is None else b_ih)
        h_in = h if recurrent_mask is None else h * recurrent_mask
        gh = xp.matmul(h_in, w_hh.T) + (0 if b_hh is None else b_hh)
        values = _STEP[spec.name](xp, gx, gh, h, c, peephole)
        h_new, c_new = values["h"], values.get("c")
        steps.append(dict(values, t=t, x=x_t, h_prev=h, h_in=h_in, c_prev=c, m=m, gh=gh))
        outs[t] = m * h_new
        h = m * h_new + (1 - m) * h
        if c is not None:
            c = m * c_new + (1 - m) * c
    out = xp.stack(outs)
    cache = None
    if training:
        cache = ReferenceCache(cell=spec.name, steps=steps, w_ih=w_ih, w_hh=w_hh,
                               has_bias=b_ih is not None, peephole=peephole, shape=(T, B, H),
                               n_in=x_tbi.shape[2], dtype=dtype, xp=xp,
                               recurrent_mask=recurrent_mask)
    return out, h, c, cache


def backward(cache, d_out_tbh, d_hn=None, d_cn=None):
    """The gradients of one ``forward(training=True)``: a dict with ``dx``, ``dh0``,
    ``dc0`` (or None), ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh`` (None without biases) and
    ``peephole`` (None without). ``d_out`` past a sequence's length is ignored."""
    xp = cache.xp
    T, B, H = cache.shape
    dtype = cache.dtype
    dh = xp.zeros((B, H), dtype=dtype) if d_hn is None else d_hn
    lstm = cache.cell == "lstm"
    dc = (xp.zeros((B, H), dtype=dtype) if d_cn is None else d_cn) if lstm else None
    grads = {"w_ih": xp.zeros(cache.w_ih.shape, dtype=dtype),
             "w_hh": xp.zeros(cache.w_hh.shape, dtype=dtype),
             "b_ih": None, "b_hh": None, "peephole": None}
    if cache.has_bias:
        grads["b_ih"] = xp.zeros((cache.w_hh.shape[0],), dtype=dtype)
        grads["b_hh"] = xp.zeros((cache.w_hh.shape[0],), dtype=dtype)
    if cache.peephole is not None:
        grads["peephole"] = xp.zeros(cache.peephole.shape, dtype=dtype)
    dxs = [None] * T
    for step in reversed(cache.steps):
        m = step["m"]
        # Through the masked update h_t = m * h_new + (1 - m) * h_{t-1}, out_t = m * h_new.
        dh_new = m * (dh + d_out_tbh[step["t"]])
        dc_new = None if dc is None else m * dc
        dgx, dgh, dh_prev, dc_prev, dpeep = _BACK[cache.cell](xp, step, dh_new, dc_new,
                                                              cache.peephole)
        grads["w_ih"] = grads["w_ih"] + xp.matmul(dgx.T, step["x"])
        grads["w_hh"] = grads["w_hh"] + xp.matmul(dgh.T, step["h_in"])
        if cache.has_bias:
            grads["b_ih"] = grads["b_ih"] + xp.sum(dgx, axis=0)
            grads["b_hh"] = grads["b_hh"] + xp.sum(dgh, axis=0)
        if dpeep is not None:
            grads["peephole"] = grads["peephole"] + dpeep
        dxs[step["t"]] = xp.matmul(dgx, cache.w_ih)
        dh_in = xp.matmul(dgh, cache.w_hh)
        if cache.recurrent_mask is not None:
            dh_in = dh_in * cache.recurrent_mask
        dh = dh_prev + dh_in + (1 - m) * dh
        if dc is not None:
            dc = dc_prev + (1 - m) * dc
    grads.update(dx=xp.stack(dxs), dh0=dh, dc0=dc)
    return grads


def _masks(xp, T, B, lengths, dtype):
    """``(T, B, 1)`` ones where a step is within its sequence's length, zeros past it."""
    if lengths is None:
        return xp.ones((T, B, 1), dtype=dtype)
    n = xp.asarray(numpy.asarray(lengths).astype(numpy.int64)) if xp is not numpy \
        else numpy.asarray(lengths).astype(numpy.int64)
    t = xp.arange(T)[:, None]
    return xp.asarray(t < n[None, :], dtype=dtype)[:, :, None]


# -- one step of each cell, and its chain rule ------------------------------------------------


def _rnn_step(act):
    def step(xp, gx, gh, h, c, peephole):
        a = gx + gh
        return {"h": xp.tanh(a) if act == "tanh" else xp.where(a > 0, a, 0 * a)}
    return step


def _rnn_back(act):
    def back(xp, s, dh_new, dc_new, peephole):
        h = s["h"]
        da = dh_new * (1 - h * h) if act == "tanh" else xp.where(h > 0, dh_new, 0 * dh_new)
        return da, da, 0 * dh_new, None, None
    return back


def _lstm_step(xp, gx, gh, h, c, peephole):
    ai, af, ag, ao = _split(gx + gh, 4)
    pi, pf, po = (0, 0, 0) if peephole is None else (peephole[0], peephole[1], peephole[2])
    i = _sigmoid(xp, ai + pi * c)
    f = _sigmoid(xp, af + pf * c)
    g = xp.tanh(ag)
    c_new = f * c + i * g
    o = _sigmoid(xp, ao + po * c_new)
    return {"h": o * xp.tanh(c_new), "c": c_new, "i": i, "f": f, "g": g, "o": o}


def _lstm_back(xp, s, dh_new, dc_new, peephole):
    i, f, g, o, c_new, c_prev = s["i"], s["f"], s["g"], s["o"], s["c"], s["c_prev"]
    pi, pf, po = (0, 0, 0) if peephole is None else (peephole[0], peephole[1], peephole[2])
    tanh_c = xp.tanh(c_new)
    d_ao = dh_new * tanh_c * o * (1 - o)
    # c_new reaches the loss through h (by tanh), through the output gate's peephole, and
    # through the next step's cell (dc_new).
    d_c = dc_new + dh_new * o * (1 - tanh_c * tanh_c) + d_ao * po
    d_ai = d_c * g * i * (1 - i)
    d_af = d_c * c_prev * f * (1 - f)
    d_ag = d_c * i * (1 - g * g)
    d_gates = _concat(xp, [d_ai, d_af, d_ag, d_ao], axis=1)
    dc_prev = d_c * f + d_ai * pi + d_af * pf
    dpeep = None
    if peephole is not None:
        dpeep = xp.stack([xp.sum(d_ai * c_prev, axis=0), xp.sum(d_af * c_prev, axis=0),
                          xp.sum(d_ao * c_new, axis=0)])
    return d_gates, d_gates, 0 * dh_new, dc_prev, dpeep


def _gru_step(xp, gx, gh, h, c, peephole):
    xr, xz, xn = _split(gx, 3)
    hr, hz, hn = _split(gh, 3)
    r = _sigmoid(xp, xr + hr)
    z = _sigmoid(xp, xz + hz)
    n = xp.tanh(xn + r * hn)
    return {"h": (1 - z) * n + z * h, "r": r, "z": z, "n": n}


def _gru_back(xp, s, dh_new, dc_new, peephole):
    r, z, n, h_prev = s["r"], s["z"], s["n"], s["h_prev"]
    hn = _split(s["gh"], 3)[2]
    d_n = dh_new * (1 - z) * (1 - n * n)
    d_z = dh_new * (h_prev - n) * z * (1 - z)
    d_r = d_n * hn * r * (1 - r)
    dgx = _concat(xp, [d_r, d_z, d_n], axis=1)
    dgh = _concat(xp, [d_r, d_z, d_n * r], axis=1)
    return dgx, dgh, dh_new * z, None, None


_STEP = {"rnn_tanh": _rnn_step("tanh"), "rnn_relu": _rnn_step("relu"), "lstm": _lstm_step,
         "gru": _gru_step}
_BACK = {"rnn_tanh": _rnn_back("tanh"), "rnn_relu": _rnn_back("relu"), "lstm": _lstm_back,
         "gru": _gru_back}


class ReferenceOps(Ops):
    """The reference as a backend: slow, but every model runs on it (NumPy arrays)."""

    name = "reference"
    device = "cpu"
    xp = numpy

    def rnn_forward(self, cell, x_tbi, w_ih, w_hh, b_ih=None, b_hh=None, h0_bh=None,
                    c0_bh=None, lengths=None, peephole=None, training=False,
                    recurrent_mask=None):
        return forward(cell, x_tbi, w_ih, w_hh, b_ih, b_hh, h0_bh, c0_bh, lengths, peephole,
                       training=training, recurrent_mask=recurrent_mask)

    def rnn_backward(self, cache, d_out_tbh, d_hn_bh=None, d_cn_bh=None, *, grad_w_ih,
                     grad_w_hh, grad_b_ih=None, grad_b_hh=None, grad_peephole=None):
        grads = backward(cache, d_out_tbh, d_hn_bh, d_cn_bh)
        for buffer, key in ((grad_w_ih, "w_ih"), (grad_w_hh, "w_hh"), (grad_b_ih, "b_ih"),
                            (grad_b_hh, "b_hh"), (grad_peephole, "peephole")):
            if buffer is not None and grads[key] is not None:
                buffer += grads[key]
        return grads["dx"], grads["dh0"], grads["dc0"]

    def cell_step(self, cell, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, work,
                  peephole=None):
        _, h_n, c_n, _ = forward(cell, x[None], w_ih, w_hh, b_ih, b_hh, h, c, None, peephole)
        h_out[...] = h_n
        if c_out is not None:
            c_out[...] = c_n

    def network_step(self, cell, embedding, layers, decoder_weight, decoder_bias, batch):
        from predtext.backend.ops import NetworkStep

        return NetworkStep(self, cell, embedding, layers, decoder_weight, decoder_bias, batch)
