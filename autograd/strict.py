"""NPPLM_BACKEND=strict: NumPy dressed as a GPU, to test on a CPU that code runs on CuPy.

A testing aid, not a device. CuPy keeps its arrays on the GPU and refuses to mix them with
host (NumPy) arrays behind the programmer's back; code that works on NumPy can therefore
fail on its first CuPy run. This backend's arrays (`DeviceArray`) hold a NumPy array and
follow CuPy's rules where they matter:

    device op host array, xp.f(host array)     TypeError: Unsupported type numpy.ndarray
    np.asarray(device), np.f(device, host)     TypeError: Implicit conversion to a NumPy
                                               array is not allowed
    host[device], operator.index(device)       TypeError (an implicit transfer)
    float(x), int(x), bool(x), x.item() of more than one element   TypeError / ValueError
    a reduction (x.sum()), device[i]           a 0-d device array, not a Python number

What is allowed, as in CuPy: Python and NumPy scalars in any operation; explicit transfers
(`xp.asarray(host)`, `x.get()`, `xp.asnumpy(x)`, `autograd.to_numpy(x)`); host integer
or boolean arrays as indices of a device array, and as values assigned into one (CuPy
copies them over); float(x) of one element (an implicit sync CuPy allows).

`strict` (a StrictModule) is the array module, as `cupy` is CuPy's: `strict.zeros(...)`,
`strict.exp(x)`, `strict.random`, ... forward to NumPy, unwrapping device arrays, refusing
host arrays, and wrapping what comes back. Every operation goes through a Python wrapper,
so it is slow; nothing of it is imported unless NPPLM_BACKEND=strict or a test asks.
"""

import numbers
import types

import numpy

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
            "construct a NumPy array explicitly.")  # CuPy's words


class DeviceArray:
    """A NumPy array that behaves like a cupy.ndarray (see the module docstring)."""

    __slots__ = ("_host",)
    __array_priority__ = 100  # below Tensor's 1000: tensor + device array is a Tensor op

    def __init__(self, host):
        self._host = host if isinstance(host, numpy.ndarray) else numpy.asarray(host)

    # -- explicit transfers ------------------------------------------------------------------
    def get(self):
        """A NumPy copy on the host (cupy.ndarray.get)."""
        return self._host.copy()

    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    # -- NumPy's protocols: np.exp(x), np.concatenate([x, y]) --------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if any(_is_host_array(a) for a in (*inputs, *kwargs.get("out", ()))):
            raise TypeError(f"{ufunc.__name__}: {_UNSUPPORTED} (mixed with a device array)")
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(o) for o in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs)))

    def __array_function__(self, func, types_, args, kwargs):
        if _has_host_array((args, kwargs)):
            raise TypeError(f"numpy.{func.__name__}: {IMPLICIT}")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    # -- attributes and methods --------------------------------------------------------------
    shape = property(lambda self: self._host.shape)
    dtype = property(lambda self: self._host.dtype)
    ndim = property(lambda self: self._host.ndim)
    size = property(lambda self: self._host.size)
    itemsize = property(lambda self: self._host.itemsize)
    nbytes = property(lambda self: self._host.nbytes)
    strides = property(lambda self: self._host.strides)
    T = property(lambda self: DeviceArray(self._host.T))

    def __getattr__(self, name):  # reshape, astype, sum, argmax, copy, fill, ...
        if name == "_host" or name.startswith("__"):  # no __array_interface__ & co: those
            raise AttributeError(name)                # would hand NumPy the host memory
        method = getattr(self._host, name)
        if not callable(method):
            return _wrap(method)  # .real, .imag

        def call(*args, **kwargs):
            if _has_host_array((args, kwargs)):
                raise TypeError(f"ndarray.{name}: {_UNSUPPORTED}")
            return _wrap(method(*_unwrap(args), **_unwrap(kwargs)))

        return call

    def item(self):
        return self._host.item()  # one element only: NumPy raises ValueError otherwise

    def tolist(self):
        return self._host.tolist()

    # -- conversions: one element only, as CuPy -----------------------------------------------
    def _one(self, kind):
        if self._host.size != 1:
            raise TypeError(f"only size-1 device arrays can be converted to {kind} (an "
                            f"implicit transfer of {self._host.size} elements)")
        return self._host.reshape(())

    def __float__(self):
        return float(self._one("float"))

    def __int__(self):
        return int(self._one("int"))

    def __complex__(self):
        return complex(self._one("complex"))

    def __bool__(self):
        if self._host.size != 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        return bool(self._host.reshape(()))

    def __index__(self):
        raise TypeError("a device array is not an index on the host (an implicit "
                        "transfer): use int(x) or x.get()")

    def __len__(self):
        return len(self._host)

    def __iter__(self):
        return (DeviceArray(row) for row in self._host)

    def __repr__(self):
        return f"device_{self._host!r}"

    __hash__ = None

    # -- indexing -----------------------------------------------------------------------------
    def __getitem__(self, key):
        return _wrap(self._host[_index(key)])

    def __setitem__(self, key, value):
        self._host[_index(key)] = value._host if isinstance(value, DeviceArray) else value


def _operand(other):
    """The NumPy value of an operator's other operand, or None when it is not one of ours
    (a Tensor: its reflected operator runs instead). A host array is refused."""
    if isinstance(other, DeviceArray):
        return other._host
    if _is_host_array(other):
        raise TypeError(_UNSUPPORTED)
    if isinstance(other, (numbers.Number, numpy.generic, numpy.ndarray)):
        return other  # a Python or NumPy scalar, or a 0-d array
    return None


def _binary(ufunc, reflected=False):
    def op(self, other):
        value = _operand(other)
        if value is None:
            return NotImplemented
        a, b = (value, self._host) if reflected else (self._host, value)
        return _wrap(ufunc(a, b))

    return op


def _inplace(ufunc):
    def op(self, other):
        value = _operand(other)
        if value is None:
            return NotImplemented
        ufunc(self._host, value, out=self._host)
        return self

    return op


for _name, _ufunc in (("add", numpy.add), ("sub", numpy.subtract), ("mul", numpy.multiply),
                      ("truediv", numpy.true_divide), ("floordiv", numpy.floor_divide),
                      ("mod", numpy.remainder), ("pow", numpy.power), ("matmul", numpy.matmul),
                      ("and", numpy.bitwise_and), ("or", numpy.bitwise_or),
                      ("xor", numpy.bitwise_xor), ("lshift", numpy.left_shift),
                      ("rshift", numpy.right_shift)):
    setattr(DeviceArray, f"__{_name}__", _binary(_ufunc))
    setattr(DeviceArray, f"__r{_name}__", _binary(_ufunc, reflected=True))
    setattr(DeviceArray, f"__i{_name}__", _inplace(_ufunc))
for _name, _ufunc in (("eq", numpy.equal), ("ne", numpy.not_equal), ("lt", numpy.less),
                      ("le", numpy.less_equal), ("gt", numpy.greater),
                      ("ge", numpy.greater_equal)):
    setattr(DeviceArray, f"__{_name}__", _binary(_ufunc))
for _name, _ufunc in (("neg", numpy.negative), ("pos", numpy.positive), ("abs", numpy.abs),
                      ("invert", numpy.invert)):
    setattr(DeviceArray, f"__{_name}__", lambda self, u=_ufunc: _wrap(u(self._host)))

_UNSUPPORTED = "Unsupported type <class 'numpy.ndarray'>"  # what CuPy says of a host array


def _is_host_array(a):
    """A NumPy array of one element or more: what CuPy will not take implicitly (0-d
    arrays pass, as NumPy scalars do)."""
    return isinstance(a, numpy.ndarray) and a.ndim > 0


def _has_host_array(obj):
    if _is_host_array(obj):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_has_host_array(o) for o in obj)
    if isinstance(obj, dict):
        return any(_has_host_array(o) for o in obj.values())
    return False


def _unwrap(obj):
    """DeviceArrays -> their NumPy arrays, inside lists, tuples and dicts too."""
    if isinstance(obj, DeviceArray):
        return obj._host
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj):
    """NumPy arrays (and NumPy scalars: CuPy returns 0-d arrays) -> DeviceArrays."""
    if isinstance(obj, (numpy.ndarray, numpy.generic)):
        return DeviceArray(numpy.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _index(key):
    """An index of a device array: device parts unwrapped, host index arrays allowed."""
    if isinstance(key, tuple):
        return tuple(_unwrap(k) for k in key)
    return _unwrap(key)


class _Ufunc:
    """A NumPy ufunc on device arrays: called, or through .at / .reduce / .outer."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _device_call(self._ufunc, self.__name__)(*args, **kwargs)

    def __getattr__(self, name):
        return _device_call(getattr(self._ufunc, name), f"{self.__name__}.{name}")


def _device_call(func, name):
    """func on device arrays: host arrays refused, results wrapped."""
    def call(*args, **kwargs):
        if _has_host_array((args, kwargs)):
            raise TypeError(f"{name}: {_UNSUPPORTED}")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    call.__name__ = name
    return call


class StrictModule:
    """The array module of DeviceArrays, as `cupy` is CuPy's (see the module docstring)."""

    ndarray = DeviceArray

    def __init__(self, namespace=numpy):
        self._numpy = namespace
        self.__name__ = "strict" + namespace.__name__.removeprefix("numpy")

    # Explicit transfers: host -> device, device -> host.
    def asarray(self, a, dtype=None, **kwargs):
        if isinstance(a, DeviceArray) and (dtype is None or a.dtype == dtype) and not kwargs:
            return a
        return DeviceArray(numpy.array(_unwrap(a), dtype=dtype, **kwargs))  # a transfer: a copy

    def array(self, a, dtype=None, **kwargs):
        return DeviceArray(numpy.array(_unwrap(a), dtype=dtype, **kwargs))

    def ascontiguousarray(self, a, dtype=None):
        return DeviceArray(numpy.ascontiguousarray(_unwrap(a), dtype=dtype))

    def asnumpy(self, a):
        return a.get() if isinstance(a, DeviceArray) else numpy.asarray(a)

    def get_array_module(self, *arrays):
        return self if any(isinstance(a, DeviceArray) for a in arrays) else numpy

    def __getattr__(self, name):
        attr = getattr(self._numpy, name)
        if isinstance(attr, types.ModuleType):
            return StrictModule(attr)  # strict.random, strict.linalg
        if isinstance(attr, numpy.ufunc):
            return _Ufunc(attr)
        if isinstance(attr, type) or not callable(attr) or isinstance(attr, numbers.Number):
            return attr  # dtypes (strict.float32), constants (strict.inf, strict.newaxis)
        return _device_call(attr, f"{self.__name__}.{name}")

    def __repr__(self):
        return f"<array module {self.__name__!r}: NumPy with CuPy's rules (a test backend)>"


strict = StrictModule()
