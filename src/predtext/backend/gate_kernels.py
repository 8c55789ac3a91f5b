"""The gate math of one time step, written once, run as NumPy or as one CUDA kernel.

Each kernel below is a list of assignments ``name = expression`` over elementwise
arithmetic and a few functions (``sig``, ``tanh``, ``relu``, ``relu_grad``). The same text
is valid Python and, with a type and a semicolon per line, valid CUDA C++, so it is
compiled two ways:

* ``numpy_kernel(spec)``: a function that evaluates the lines with NumPy (broadcasting as
  an elementwise kernel does) and writes the outputs into the arrays it is given. The
  CuPy backend's array code runs with it on the CPU, which is how its tests check the
  GPU path against the compiled core without a GPU.
* ``cuda_source(spec)`` / ``cupy_kernel(spec)``: the body of a ``cupy.ElementwiseKernel``,
  one fused launch per step for the forward and one for the backward.

Inputs are ``(B, H)`` arrays, or views of a ``(B, G*H)`` gate array, or ``(H,)`` rows (a
peephole, a bias block) and the ``(B, 1)`` mask of valid steps, broadcast as usual. Masked
steps (past a sequence's length) keep the state and give zero output:
``h = m * h_new + (1 - m) * h_prev``, ``out = m * h_new``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy


@dataclass(frozen=True)
class KernelSpec:
    name: str
    inputs: tuple
    outputs: tuple
    body: str

    def lines(self):
        """``(target, expression)`` per assignment, in order."""
        result = []
        for line in self.body.strip().splitlines():
            target, expression = (part.strip() for part in line.split("=", 1))
            result.append((target, expression))
        return result


def _spec(name, inputs, outputs, body):
    return KernelSpec(name, tuple(inputs.split()), tuple(outputs.split()), body)


# -- the cells: forward and backward of one step ---------------------------------------------
# Forward inputs: x* are the input projection's gate blocks (biases already in, except GRU's
# hidden bias), r* the recurrent product's, hp/cp the previous state, m the mask.

_RNN_FORWARD = """
a = {act}(xa + ra)
h = m * a + (1 - m) * hp
out = m * a
"""
_RNN_BACKWARD = """
dH = m * (dh + dout)
da = dH * {grad}
dhp = (1 - m) * dh
"""

KERNELS = {
    "rnn_tanh_forward": _spec("rnn_tanh_forward", "xa ra hp m", "h out a",
                              _RNN_FORWARD.format(act="tanh")),
    "rnn_relu_forward": _spec("rnn_relu_forward", "xa ra hp m", "h out a",
                              _RNN_FORWARD.format(act="relu")),
    "rnn_tanh_backward": _spec("rnn_tanh_backward", "dh dout a m", "da dhp",
                               _RNN_BACKWARD.format(grad="(1 - a * a)")),
    "rnn_relu_backward": _spec("rnn_relu_backward", "dh dout a m", "da dhp",
                               _RNN_BACKWARD.format(grad="relu_grad(a)")),
    # Gate values are ai, af, ag, ao (CuPy reserves "i", the element index). Peepholes
    # weight c_{t-1} into the input and forget gates and c_t into the output gate (zero
    # rows without peepholes).
    "lstm_forward": _spec("lstm_forward", "xi xf xg xo ri rf rg ro hp cp pi pf po m",
                          "h c out ai af ag ao", """
ai = sig(xi + ri + pi * cp)
af = sig(xf + rf + pf * cp)
ag = tanh(xg + rg)
cn = af * cp + ai * ag
ao = sig(xo + ro + po * cn)
hn = ao * tanh(cn)
h = m * hn + (1 - m) * hp
c = m * cn + (1 - m) * cp
out = m * hn
"""),
    # c is the step's new cell state (for a masked step it is cp, and m zeroes its use).
    "lstm_backward": _spec("lstm_backward", "dh dc dout ai af ag ao cp c pi pf po m",
                           "d_i d_f d_g d_o dhp dcp", """
dH = m * (dh + dout)
tc = tanh(c)
d_o = dH * tc * ao * (1 - ao)
dC = m * dc + dH * ao * (1 - tc * tc) + d_o * po
d_i = dC * ag * ai * (1 - ai)
d_f = dC * cp * af * (1 - af)
d_g = dC * ai * (1 - ag * ag)
dcp = dC * af + d_i * pi + d_f * pf + (1 - m) * dc
dhp = (1 - m) * dh
"""),
    # GRU: b_hn sits inside the reset product, so the hidden bias comes in separately.
    "gru_forward": _spec("gru_forward", "xr xz xn rr rz rn br bz bn hp m",
                         "h out r z n hb", """
r = sig(xr + rr + br)
z = sig(xz + rz + bz)
hb = rn + bn
n = tanh(xn + r * hb)
hn = (1 - z) * n + z * hp
h = m * hn + (1 - m) * hp
out = m * hn
"""),
    "gru_backward": _spec("gru_backward", "dh dout r z n hb hp m",
                          "dxr dxz dxn dhr dhz dhn dhp", """
dH = m * (dh + dout)
dn = dH * (1 - z) * (1 - n * n)
dz = dH * (hp - n) * z * (1 - z)
dr = dn * hb * r * (1 - r)
dxr = dr
dxz = dz
dxn = dn
dhr = dr
dhz = dz
dhn = dn * r
dhp = dH * z + (1 - m) * dh
"""),
}


# -- NumPy ---------------------------------------------------------------------------------

def _sig(x):
    return 1 / (1 + numpy.exp(-x))


def _relu(x):
    return numpy.maximum(x, 0)


def _relu_grad(x):
    return (x > 0).astype(x.dtype)


_NUMPY_FUNCTIONS = {"sig": _sig, "tanh": numpy.tanh, "relu": _relu, "relu_grad": _relu_grad,
                    "__builtins__": {}}


def numpy_kernel(spec):
    """``kernel(*inputs, *outputs)``: the lines evaluated with NumPy, written into the
    output arrays (which may be views of bigger arrays)."""
    code = [(target, compile(expression, f"<{spec.name}: {target}>", "eval"))
            for target, expression in spec.lines()]
    n_in = len(spec.inputs)

    def kernel(*arrays):
        if len(arrays) != n_in + len(spec.outputs):
            raise TypeError(f"{spec.name}: expected {n_in + len(spec.outputs)} arrays "
                            f"({', '.join(spec.inputs + spec.outputs)}), got {len(arrays)}")
        values = dict(zip(spec.inputs, arrays[:n_in]))
        for target, expression in code:
            values[target] = eval(expression, _NUMPY_FUNCTIONS, values)
        for name, out in zip(spec.outputs, arrays[n_in:]):
            out[...] = values[name]

    kernel.__name__ = spec.name
    return kernel


# -- CUDA ----------------------------------------------------------------------------------

CUDA_PREAMBLE = """
template <typename T> __device__ __forceinline__ T sig(T x) { return T(1) / (T(1) + exp(-x)); }
template <typename T> __device__ __forceinline__ T relu(T x) { return x > T(0) ? x : T(0); }
template <typename T> __device__ __forceinline__ T relu_grad(T x) {
  return x > T(0) ? T(1) : T(0);
}
"""

_NUMBER = re.compile(r"(?<![\w.])(\d+)(?![\w.])")


def cuda_source(spec):
    """The body of the ``ElementwiseKernel``: temporaries declared as ``T``, outputs
    assigned, integer literals written as ``T(n)`` so float32 stays float32."""
    lines = []
    for target, expression in spec.lines():
        expression = _NUMBER.sub(r"T(\1)", expression)
        declare = "" if target in spec.outputs else "T "
        lines.append(f"{declare}{target} = {expression};")
    return "\n".join(lines)


def cuda_parameters(spec):
    """``(in_params, out_params)`` as ``ElementwiseKernel`` takes them."""
    return (", ".join(f"T {name}" for name in spec.inputs),
            ", ".join(f"T {name}" for name in spec.outputs))


def cupy_kernel(spec, cupy):
    """The spec as a ``cupy.ElementwiseKernel`` (compiled on first launch)."""
    in_params, out_params = cuda_parameters(spec)
    return cupy.ElementwiseKernel(in_params, out_params, cuda_source(spec),
                                  f"predtext_{spec.name}", preamble=CUDA_PREAMBLE)


def standalone_cuda(specs, dtype="float"):
    """A translation unit ``nvcc`` can compile on its own, with every kernel of ``specs``
    (for the test that checks the generated source where ``nvcc`` is installed): each body
    in a plain elementwise loop, outputs as locals stored at the end (ElementwiseKernel
    binds them by reference)."""
    units = [CUDA_PREAMBLE]
    for spec in specs:
        params = ", ".join([f"const T *{n}_" for n in spec.inputs]
                           + [f"T *{n}_" for n in spec.outputs])
        lines = [f"const T {n} = {n}_[k];" for n in spec.inputs]
        lines += [f"T {n};" for n in spec.outputs]
        lines += cuda_source(spec).splitlines()
        lines += [f"{n}_[k] = {n};" for n in spec.outputs]
        types = [f"const {dtype} *"] * len(spec.inputs) + [f"{dtype} *"] * len(spec.outputs)
        body = "\n".join("  " + line for line in lines)
        units.append(f"template <typename T>\n"
                     f"__global__ void {spec.name}(int count_, {params}) {{\n"
                     f"  int k = blockIdx.x * blockDim.x + threadIdx.x;\n"
                     f"  if (k >= count_) return;\n{body}\n}}\n"
                     f"template __global__ void {spec.name}<{dtype}>(int, {', '.join(types)});\n")
    return "\n".join(units)
