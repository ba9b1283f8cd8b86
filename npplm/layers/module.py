"""`Module`: a container of parameters, found by walking attributes (as in PyTorch).

A parameter is a leaf Tensor with `requires_grad=True` stored as an attribute; a submodule
is a Module stored as an attribute, or inside a list or tuple attribute (then named by its
index, so `self.layer = [Block(), Block()]` gives `layer.0.…`, `layer.1.…`, the numbering
of Hugging Face checkpoints). Names are dotted attribute paths in definition order.

A parameter reachable under two names (a tied embedding, ALBERT's shared layer) is one
Tensor: `named_parameters()` reports it once, under the first name met; `state_dict()`
reports it under every name, as checkpoints do, unless `remove_duplicates=True`.
"""

import contextlib

import numpy as np

from autograd import Tensor, array_module, to_numpy

_drawing = True  # False inside `no_init()`


@contextlib.contextmanager
def no_init():
    """Build modules without drawing their initial weights, for a model whose weights are
    loaded next: `initial_weight` returns np.empty, whose pages the OS maps only when
    written, so a model swapped to quantised layers at load (npplm.quantization) never
    holds, even briefly, the float32 weights it will not use."""
    global _drawing
    _drawing, before = False, _drawing
    try:
        yield
    finally:
        _drawing = before


def initial_weight(rng, shape, std, dtype):
    """N(0, std^2) weights of `shape` drawn from rng (float64 draws, cast to dtype), or an
    uninitialised array inside `no_init()`."""
    if not _drawing:
        return np.empty(shape, dtype=dtype)
    return (rng.standard_normal(shape) * std).astype(dtype)


class Module:
    training = True
    gradient_checkpointing = False  # run_block replays this module's blocks in backward

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    # --- walking the tree ------------------------------------------------------------------
    def _children(self):
        """(name, value) for every attribute that is a parameter or holds submodules."""
        for name, value in vars(self).items():
            if isinstance(value, (Module, Tensor)):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every submodule, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, v) for n, v in module._children()
                        if isinstance(v, Module)]
            stack.extend(reversed(children))

    def _all_named_parameters(self, prefix=""):
        """Every (name, parameter) pair, tied parameters once per name they appear under."""
        for name, value in self._children():
            full = f"{prefix}{name}"
            if isinstance(value, Module):
                yield from value._all_named_parameters(full + ".")
            elif value.requires_grad and value._node is None:
                yield full, value

    def named_parameters(self):
        """(name, parameter) pairs; a tied parameter once, under the first name met."""
        seen = set()
        for name, p in self._all_named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    # --- state ---------------------------------------------------------------------------
    def state_dict(self, remove_duplicates=False):
        """{name: array} of every parameter (NumPy arrays, copies not taken)."""
        pairs = self.named_parameters() if remove_duplicates else self._all_named_parameters()
        return {name: p.numpy() for name, p in pairs}

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters, by name, casting to each parameter's dtype.

        strict=True: a missing or unexpected key is an error that lists them all. A shape
        mismatch always is, naming the key and both shapes. Returns (missing, unexpected).
        """
        own = dict(self._all_named_parameters())
        missing = sorted(k for k in own if k not in state)
        unexpected = sorted(k for k in state if k not in own)
        if strict and (missing or unexpected):
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        for name, p in own.items():
            if name not in state:
                continue
            value = to_numpy(state[name])
            if value.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {name!r} has shape "
                                 f"{value.shape} in the checkpoint but {p.shape} in the model")
            # A C-ordered copy on p's device: a transposed value (GPT's Conv1D weights) must
            # not leave a Fortran-ordered parameter behind, whose GEMMs would round
            # differently from a freshly built model's (and break exact resumption).
            p.data = array_module(p.data).array(value, dtype=p.dtype, order="C")
        return missing, unexpected

    # --- modes and gradients ---------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout active) for this module and all submodules."""
        for _, m in self.named_modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def gradient_checkpointing_enable(self, enable=True):
        """Keep only each block's input and recompute its activations in backward, in this
        module and every submodule (Hugging Face's method name; layers/checkpointing.py)."""
        for _, m in self.named_modules():
            m.gradient_checkpointing = enable
        return self

    def gradient_checkpointing_disable(self):
        return self.gradient_checkpointing_enable(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def astype(self, dtype):
        """Cast every floating parameter to `dtype`, in place (e.g. float64 for gradchecks)."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
        return self
