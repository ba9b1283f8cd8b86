"""gpu.device: answers without a GPU, and agrees with CuPy where there is one."""

import importlib.util

import numpy as np
import pytest

import gpu


def test_cuda_available_is_false_without_cupy():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    assert gpu.cuda_available() is False
    assert gpu.device_name() is None


def test_synchronize_is_a_no_op_for_numpy():
    assert gpu.synchronize(np) is None
    assert gpu.synchronize() is None


@pytest.mark.gpu
def test_a_cupy_tensor_stays_on_the_device_through_backward():
    if not gpu.cuda_available():
        pytest.skip("no CUDA device with CuPy here")
    import cupy

    from autograd import Tensor

    x = Tensor(cupy.arange(6, dtype=cupy.float32).reshape(2, 3), requires_grad=True)
    loss = (x @ x.T).tanh().sum()
    loss.backward()
    assert isinstance(x.grad, cupy.ndarray) and x.grad.dtype == cupy.float32
