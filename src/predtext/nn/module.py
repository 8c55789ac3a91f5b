"""Parameters and the Module base class.

A ``Module`` behaves like ``torch.nn.Module`` where users can see it (attribute
registration, dotted parameter names, ``train()``/``eval()``, state dicts), but there is
no autograd. Training goes through ``begin_update``, which runs the forward pass and
returns ``(output, backprop)``; ``backprop(d_output)`` adds this call's parameter
gradients into each ``Parameter.grad`` and returns the gradient with respect to the input.
"""

from collections import OrderedDict, namedtuple

import numpy

from predtext.backend import get_ops, ops_for_device

#: Floating-point dtypes a module may hold its parameters in.
SUPPORTED_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def check_dtype(dtype):
    """Return ``dtype`` as a ``numpy.dtype``, or raise TypeError naming ``dtype``.

    Only float32 (the default) and float64 (for gradient checks) are supported.
    """
    try:
        resolved = None if dtype is None else numpy.dtype(dtype)
    except TypeError:
        resolved = None
    # Compare explicitly: numpy treats ``dtype == None`` as a comparison with float64.
    if resolved is None or not any(resolved == ok for ok in SUPPORTED_DTYPES):
        raise TypeError(f"dtype: expected numpy.float32 or numpy.float64, got {dtype!r}")
    return resolved


class Parameter:
    """A trainable array and its gradient accumulator.

    ``data`` holds the values; ``grad`` has the same shape and dtype and starts at zero.
    Backprop callables add into ``grad``; optimizers read it and ``zero_grad()`` clears it.
    Optimizers skip parameters whose ``requires_grad`` is False.
    """

    def __init__(self, data, requires_grad=True, name=None):
        if not hasattr(data, "shape") or not hasattr(data, "dtype"):
            data = numpy.asarray(data, dtype=numpy.float32)
        self.data = data
        # copy + fill works for NumPy and CuPy arrays alike.
        self.grad = data.copy()
        self.grad.fill(0)
        self.requires_grad = bool(requires_grad)
        self.name = name

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def zero_grad(self):
        self.grad[...] = 0

    def __repr__(self):
        label = f" {self.name!r}" if self.name else ""
        return f"Parameter{label}(shape={tuple(self.shape)}, dtype={self.dtype})"


#: What ``load_state_dict(strict=False)`` reports, as torch does.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def to_numpy_array(value):
    """Turn a state-dict value into a NumPy array without importing any framework.

    Torch tensors (anything with ``detach().cpu().numpy()``), CuPy arrays (``get()``),
    NumPy arrays and array-likes are accepted.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return numpy.asarray(value.detach().cpu().numpy())
    if hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):
        return numpy.asarray(value.get())
    return numpy.asarray(value)


class Module:
    """Base class of every layer, like ``torch.nn.Module``.

    Subclasses call ``super().__init__()`` first, then assign ``Parameter`` and ``Module``
    attributes; those are registered in assignment order. As in torch,
    ``named_parameters()`` (and the state dict) lists a module's own parameters first,
    then each submodule's, depth first. Subclasses implement:

    * ``forward(*args, **kwargs)``: the output, caching nothing; ``module(...)`` calls it.
      Layers whose behaviour depends on mode (dropout) read ``self.training``.
    * ``begin_update(*args, **kwargs)``: ``(output, backprop)`` for training, where
      ``backprop(d_output)`` accumulates parameter gradients and returns the input gradient.

    Array work goes through ``self.ops`` (``self.ops.xp`` is the array module) so that a
    GPU backend can replace the CPU one without touching the layers.
    """

    dtype = SUPPORTED_DTYPES[0]

    def __init__(self):
        # object.__setattr__ because our own __setattr__ relies on these registries.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "ops", get_ops())

    # -- registration ---------------------------------------------------------------

    def __setattr__(self, name, value):
        registries = self.__dict__.get("_parameters"), self.__dict__.get("_modules")
        if isinstance(value, (Parameter, Module)) and registries[0] is None:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() has run; "
                "call super().__init__() first in the subclass constructor"
            )
        if registries[0] is not None:
            parameters, modules = registries
            # A name belongs to at most one registry; reassigning moves or drops it.
            parameters.pop(name, None)
            modules.pop(name, None)
            if isinstance(value, Parameter):
                if value.name is None:
                    value.name = name
                parameters[name] = value
            elif isinstance(value, Module):
                modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register ``param`` under ``name`` (``None`` removes it), like torch."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"name: expected a non-empty string without '.', got {name!r}")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"param: expected a Parameter or None, got {type(param).__name__}")
        setattr(self, name, param)

    def add_module(self, name, module):
        """Register ``module`` under ``name``, like torch."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"name: expected a non-empty string without '.', got {name!r}")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"module: expected a Module or None, got {type(module).__name__}")
        setattr(self, name, module)

    # -- traversal -------------------------------------------------------------------

    def named_children(self):
        yield from self._modules.items()

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix=""):
        """Yield ``(dotted_name, module)`` for this module and all descendants, once each."""
        seen = set()

        def walk(module, module_prefix):
            if id(module) in seen:
                return
            seen.add(id(module))
            yield module_prefix, module
            for child_name, child in module._modules.items():
                child_prefix = f"{module_prefix}.{child_name}" if module_prefix else child_name
                yield from walk(child, child_prefix)

        yield from walk(self, prefix)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix="", recurse=True):
        """Yield ``(dotted_name, Parameter)`` named as torch names them.

        A parameter shared by two modules is yielded once, under its first name.
        """
        seen = set()
        module_items = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in module_items:
            for name, param in module._parameters.items():
                if id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_prefix}.{name}" if module_prefix else name), param

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    # -- modes and gradients ------------------------------------------------------------

    def train(self, mode=True):
        """Set training mode on this module and all descendants; returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        """Set inference mode (dropout off) on this module and all descendants."""
        return self.train(False)

    def zero_grad(self):
        for param in self.parameters():
            param.zero_grad()

    # -- devices ----------------------------------------------------------------------

    @property
    def device(self):
        """Where the parameters live: "cpu", or "cuda" after ``to("cuda")``."""
        return self.ops.device

    def to(self, device):
        """Move every parameter (values and gradients) to ``device`` ("cpu", "cuda", a
        backend name or an ``Ops``); this module and its descendants then run there.
        Returns self, as torch does. Optimizer state made before the move stays behind:
        make the optimizer after moving the model.
        """
        ops = ops_for_device(device)
        moved = set()
        for module in self.modules():
            for param in module._parameters.values():
                if id(param) in moved:      # a tied weight moves once
                    continue
                moved.add(id(param))
                source = module.ops
                param.data = ops.asarray(source.to_numpy(param.data))
                param.grad = ops.asarray(source.to_numpy(param.grad))
            object.__setattr__(module, "ops", ops)
        return self

    # -- state dicts ---------------------------------------------------------------------

    def state_dict(self):
        """An OrderedDict from dotted parameter name to a NumPy copy of its values."""
        return OrderedDict(
            (name, numpy.array(self.ops.to_numpy(param.data), copy=True))
            for name, param in self.named_parameters()
        )

    def load_state_dict(self, state_dict, strict=True):
        """Copy values from ``state_dict`` into the parameters, in place.

        Values may be NumPy arrays, torch tensors, or the plain dict a safetensors file
        loads into; they are cast to each parameter's dtype. Everything is checked before
        anything is copied, so a failed load leaves the module unchanged.

        Raises ValueError naming the keys when a shape differs, and (with ``strict``)
        when keys are missing or unexpected. Returns ``IncompatibleKeys``.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(
                "state_dict: expected a mapping of names to arrays, "
                f"got {type(state_dict).__name__}"
            )
        own = OrderedDict(self.named_parameters())
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]

        arrays = {}
        mismatched = []
        for name, param in own.items():
            if name not in state_dict:
                continue
            array = to_numpy_array(state_dict[name])
            if tuple(array.shape) != tuple(param.shape):
                mismatched.append(
                    f"{name}: expected shape {tuple(param.shape)}, got {tuple(array.shape)}"
                )
            arrays[name] = array

        problems = []
        if mismatched:
            problems.append("size mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ValueError(f"state_dict: {'; '.join(problems)}")

        for name, array in arrays.items():
            param = own[name]
            param.data[...] = self.ops.asarray(array, dtype=param.data.dtype)
        return IncompatibleKeys(missing, unexpected)

    # -- running --------------------------------------------------------------------------

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def begin_update(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement begin_update()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- display --------------------------------------------------------------------------

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        for name, child in self._modules.items():
            child_text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_text}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"
