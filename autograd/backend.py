"""The array backend: NumPy on the CPU, or CuPy on a CUDA GPU (or, for tests, strict).

`NPPLM_BACKEND=numpy|cupy|strict` is read once, when this module is first imported (numpy
by default). Everything else follows from it: new Tensors are created on that backend, and
every primitive computes with the array module of its *inputs* (`array_module(x)`), so one
body of code serves all; there is never a per-device copy of an op.

`strict` (autograd/strict.py) is NumPy wearing CuPy's rules: its arrays refuse to mix
with host arrays as CuPy's do, so a CPU test run finds what would fail on a GPU.

CuPy is imported only when asked for, so `import npplm` works on a machine with neither
CuPy nor a CUDA driver.
"""

import contextlib
import os
import sys

import numpy

BACKENDS = ("numpy", "cupy", "strict")


class BackendError(RuntimeError):
    """The requested backend is unknown or cannot run on this machine."""


def _load_cupy():
    try:
        import cupy
    except ImportError as e:
        raise BackendError(
            "NPPLM_BACKEND='cupy' but CuPy is not installed "
            f"({e}); install it with: pip install 'npplm[gpu]'. "
            "Available here: NPPLM_BACKEND=numpy"
        ) from None
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError when there is no driver
        raise BackendError(
            f"NPPLM_BACKEND='cupy' but no CUDA device is usable ({e}). "
            "Available here: NPPLM_BACKEND=numpy"
        ) from None
    if n_devices == 0:
        raise BackendError(
            "NPPLM_BACKEND='cupy' but CUDA reports 0 devices. Available here: NPPLM_BACKEND=numpy"
        )
    return cupy


def _select(name):
    """Return the array module for a backend name, or raise BackendError naming it."""
    name = name.strip().lower()
    if name == "numpy":
        return numpy
    if name == "cupy":
        return _load_cupy()
    if name == "strict":
        from autograd.strict import strict

        return strict
    raise BackendError(
        f"unknown NPPLM_BACKEND={name!r}; valid choices: {', '.join(BACKENDS)}"
    )


BACKEND = os.environ.get("NPPLM_BACKEND", "numpy").strip().lower() or "numpy"
xp = _select(BACKEND)  # the active array module: new Tensors from lists and scalars live here


@contextlib.contextmanager
def selected(name):
    """Within the block, new Tensors are made on backend `name` (numpy, cupy, strict): for
    tests that run one body of code on several backends in one process. `autograd.xp` and
    `autograd.BACKEND`, copied at import, keep the backend chosen by NPPLM_BACKEND."""
    global xp, BACKEND
    before = xp, BACKEND
    xp, BACKEND = _select(name), name
    try:
        yield xp
    finally:
        xp, BACKEND = before


def _is_cupy(a):
    # If CuPy was never imported, no CuPy array can exist: a dict lookup, then done.
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(a, cupy.ndarray)


def _is_strict(a):
    strict = sys.modules.get("autograd.strict")  # likewise: no module, no such array
    return strict is not None and isinstance(a, strict.DeviceArray)


def array_module(*arrays):
    """The array module (numpy, cupy or strict) that the given arrays belong to."""
    strict = sys.modules.get("autograd.strict")
    if strict is not None and any(isinstance(a, strict.DeviceArray) for a in arrays):
        return strict.strict
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return numpy
    return cupy.get_array_module(*arrays)


def is_device_array(a):
    """Whether `a` lives on the device (a CuPy array, or a strict backend's)."""
    return _is_cupy(a) or _is_strict(a)


def to_numpy(a):
    """A NumPy copy (or view) of an array of any backend: the explicit transfer."""
    if _is_cupy(a) or _is_strict(a):
        return a.get()
    return numpy.asarray(a)


def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices (unbuffered), in place."""
    if _is_cupy(target):
        import cupyx

        cupyx.scatter_add(target, index, values)
    elif _is_strict(target):
        from autograd.strict import strict

        strict.add.at(target, index, values)
    else:
        numpy.add.at(target, index, values)


_numba_erf = None


def erf(x):
    """The error function, elementwise, keeping the dtype.

    NumPy has no erf, so on the CPU it is a Numba ufunc over `math.erf` (compiled on first
    use); on the GPU it is CuPy's.
    """
    global _numba_erf
    if _is_cupy(x):
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)
    if _is_strict(x):
        return type(x)(erf(x.get()))  # cupyx's erf, played on the host
    if _numba_erf is None:
        import math

        import numba

        @numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
        def _erf(v):
            return math.erf(v)

        _numba_erf = _erf
    return _numba_erf(x)
