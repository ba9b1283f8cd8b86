"""The strict backend (autograd/strict.py): NumPy with CuPy's rules. Every implicit mix of a
device array with a host array raises as CuPy would; explicit transfers and scalars work;
and its numbers are NumPy's."""

import os
import subprocess
import sys

import numpy as np
import pytest

from autograd import Tensor, backend, to_numpy
from autograd.strict import DeviceArray, strict

HOST = np.arange(6.0, dtype=np.float32).reshape(2, 3)


@pytest.fixture
def x():
    return strict.asarray(HOST)


@pytest.mark.parametrize("mix", [
    lambda x: x + HOST,                        # device op host
    lambda x: HOST * x,                        # host op device
    lambda x: np.asarray(x),                   # an implicit transfer to the host
    lambda x: np.array([x[0, 0], 1.0]),        # ... inside a list
    lambda x: strict.exp(HOST),                # the device module given a host array
    lambda x: strict.concatenate([x, HOST]),
    lambda x: strict.where(HOST > 2, x, 0.0),
    lambda x: np.concatenate([x, HOST]),       # NumPy given both
    lambda x: np.arange(3)[strict.asarray(np.array([1]))],  # host indexed by device
    lambda x: float(x),                        # more than one element
    lambda x: int(x.sum(axis=0)),
    lambda x: x.sum(axis=0).__index__(),
], ids=["device+host", "host*device", "np.asarray", "np.array(list)", "xp.exp(host)",
        "xp.concatenate", "xp.where", "np.concatenate", "host[device]", "float", "int",
        "index"])
def test_an_implicit_mix_raises_as_cupy_does(x, mix):
    with pytest.raises((TypeError, ValueError)):
        mix(x)


def test_bool_of_many_elements_raises(x):
    with pytest.raises(ValueError, match="ambiguous"):
        bool(x > 1)


def test_explicit_transfers_and_scalars_work(x):
    assert isinstance(x, DeviceArray) and isinstance(strict.asarray(x), DeviceArray)
    for host in (x.get(), strict.asnumpy(x), to_numpy(x)):
        assert type(host) is np.ndarray
        np.testing.assert_array_equal(host, HOST)
    y = (x * 2 + np.float32(1)) / 3  # Python and NumPy scalars
    assert isinstance(y, DeviceArray) and y.dtype == np.float32
    np.testing.assert_allclose(y.get(), (HOST * 2 + 1) / 3)
    assert float(x.sum()) == 15.0 and isinstance(x.sum(), DeviceArray)  # 0-d, as CuPy
    assert x[np.array([1])].shape == (1, 3)  # a host index array is copied over
    x[0] = HOST[1]  # and so is a host value
    assert x.get()[0].tolist() == [3.0, 4.0, 5.0]


def test_its_numbers_are_numpys(x):
    for op in (lambda a, m: m.exp(a) @ a.T, lambda a, m: m.cumsum(a, axis=1).max(axis=0),
               lambda a, m: m.where(a > 2, a, -a)[..., None].swapaxes(0, 2)):
        np.testing.assert_array_equal(to_numpy(op(x, strict)), op(HOST, np))


def test_a_tensor_op_mixing_device_and_host_raises():
    with backend.selected("strict"):
        device = Tensor(HOST, requires_grad=True)
    assert isinstance(device.data, DeviceArray)
    host = Tensor(HOST)  # made under NumPy
    with pytest.raises(TypeError, match="Unsupported type"):
        (device * host).sum()
    (device * 2).sum().backward()  # alone it runs, gradients on the device
    assert isinstance(device.grad, DeviceArray)


def test_strict_costs_nothing_when_not_selected():
    code = "import sys, npplm, npplm.training; print('autograd.strict' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_npplm_backend_strict_selects_it_for_the_process():
    code = ("import numpy as np, npplm\n"
            "from npplm.models.gpt import GPT2LMHeadModel, GPTConfig\n"
            "m = GPT2LMHeadModel(GPTConfig.tiny(), seed=0)\n"
            "print(npplm.BACKEND, type(m.lm_head.weight.data).__name__,"
            " m.generate(np.array([[1, 2, 3]]), 3, temperature=0).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ,
                                          "NPPLM_BACKEND": "strict"})
    assert out.stdout.startswith("strict DeviceArray [[1, 2, 3, ")
