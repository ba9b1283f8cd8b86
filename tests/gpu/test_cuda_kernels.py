"""The Numba CUDA kernels of gpu/numba_cuda/ against their float64 references.

On a machine with a CUDA device and CuPy the kernels run there on CuPy arrays; elsewhere
on Numba's CUDA simulator (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1), which executes
the same kernel code, block by block, in Python threads: slow, so the shapes are small,
but each row is still longer than a block (THREADS) and so walked in strides and reduced
over several rounds. The attention kernel has its own file, test_cuda_attention.py.
"""

import numpy as np
import pytest

from gpu import cuda_available
from gpu.numba_cuda import THREADS, float32_cupy, normalization, rotary
from gpu.numba_cuda import softmax as cuda_softmax
from npplm.layers import log_softmax, losses, softmax
from npplm.layers.normalization import (
    layer_norm_grad_reference,
    layer_norm_reference,
    rms_norm_grad_reference,
    rms_norm_reference,
)
from npplm.layers.rotary import rotary_grad_reference, rotary_reference
from npplm.layers.softmax import log_softmax_vjp, softmax_vjp
from tests.tolerances import assert_close

ON_DEVICE = cuda_available()


def device(a):
    """a where the kernels run: a CuPy array on a GPU, the NumPy array itself simulated."""
    if ON_DEVICE:
        import cupy

        return cupy.asarray(a)
    return a


def host(a):
    return a.get() if ON_DEVICE else a


def f64(a):
    return np.asarray(a, dtype=np.float64)


def random(shape, seed, spread=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * spread).astype(np.float32)


# Rows longer than a block, a row shorter than one, and a leading batch axis.
SHAPES = [(3, 2 * THREADS + 5), (2, 3), (2, 2, THREADS + 1)]


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_and_log_softmax_equal_the_reference(shape):
    x, g = random(shape, 0), random(shape, 1, 1.0)
    y = host(cuda_softmax.softmax_forward(device(x)))
    ly = host(cuda_softmax.log_softmax_forward(device(x)))
    assert y.dtype == ly.dtype == np.float32 and y.shape == ly.shape == shape
    assert_close(y, softmax.fun(f64(x)), "float32")
    assert_close(ly, log_softmax.fun(f64(x)), "float32")

    dx = host(cuda_softmax.softmax_backward(device(g), device(y)))
    assert_close(dx, softmax_vjp(f64(g), f64(y), f64(x))[0], "float32")
    dlx = host(cuda_softmax.log_softmax_backward(device(g), device(ly)))
    assert_close(dlx, log_softmax_vjp(f64(g), f64(ly), f64(x))[0], "float32")


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_equals_the_reference(eps):
    n, c = 4, 2 * THREADS + 3
    x = random((n, c), 2)
    targets = np.array([0, c - 1, 7, 3])
    weight = np.array([0.25, 0.0, 1.0, 0.5], dtype=np.float32)  # 0: an ignored position
    loss = host(cuda_softmax.cross_entropy_forward(device(x), device(targets), eps))
    assert loss.dtype == np.float32 and loss.shape == (n,)
    assert_close(loss, losses.cross_entropy_reference(f64(x), targets, eps), "float32")
    grad = host(cuda_softmax.cross_entropy_backward(device(x), device(targets),
                                                    device(weight), eps))
    want = losses.cross_entropy_grad_reference(f64(x), targets, f64(weight), eps)
    assert grad.dtype == np.float32
    assert_close(grad, want, "float32")


def test_a_nan_makes_its_row_nan_and_leaves_the_others():
    x = random((2, THREADS + 3), 3)
    x[1, 5] = np.nan
    y = host(cuda_softmax.softmax_forward(device(x)))
    assert np.isnan(y[1]).all() and np.isfinite(y[0]).all()


@pytest.mark.parametrize("shape", [(3, 2 * THREADS + 5), (2, 2, 7)])
def test_rms_norm_equals_the_reference(shape):
    x, g = random(shape, 4), random(shape, 5, 1.0)
    w = random(shape[-1:], 6, 1.0)
    y = host(normalization.rms_norm_forward(device(x), device(w), 1e-6))
    assert y.dtype == np.float32 and y.shape == shape
    assert_close(y, rms_norm_reference(f64(x), f64(w), 1e-6), "float32")
    dx, dw = (host(a) for a in normalization.rms_norm_backward(device(g), device(x),
                                                             device(w), 1e-6))
    want_dx, want_dw = rms_norm_grad_reference(f64(g), f64(x), f64(w), 1e-6)
    assert dx.shape == shape and dw.shape == w.shape and dx.dtype == dw.dtype == np.float32
    assert_close(dx, want_dx, "float32")
    assert_close(dw, want_dw, "float32")


@pytest.mark.parametrize("shape", [(3, 2 * THREADS + 5), (2, 2, 7)])
def test_layer_norm_equals_the_reference(shape):
    x, g = random(shape, 10) + 2.0, random(shape, 11, 1.0)  # an offset for the mean to remove
    w, b = random(shape[-1:], 12, 1.0), random(shape[-1:], 13, 1.0)
    y = host(normalization.layer_norm_forward(device(x), device(w), device(b), 1e-5))
    assert y.dtype == np.float32 and y.shape == shape
    assert_close(y, layer_norm_reference(f64(x), f64(w), f64(b), 1e-5), "float32")
    dx, dw, db = (host(a) for a in normalization.layer_norm_backward(device(g), device(x),
                                                                   device(w), 1e-5))
    want = layer_norm_grad_reference(f64(g), f64(x), f64(w), 1e-5)
    for got, expected in zip((dx, dw, db), want, strict=True):
        assert got.dtype == np.float32
        assert_close(got, expected, "float32")


@pytest.mark.parametrize("per_sequence", [False, True])
def test_rotary_equals_the_reference_on_a_strided_view(per_sequence):
    B, H, T, D = 2, 3, 4, 6
    # q as LLaMA makes it: a (B, T, H D) projection viewed as (B, H, T, D).
    q = random((B, T, H * D), 7, 1.0).reshape(B, T, H, D).transpose(0, 2, 1, 3)
    g = random((B, H, T, D), 8, 1.0)
    angles = np.random.default_rng(9).uniform(-3, 3, ((B if per_sequence else 1), T, D // 2))
    angles = np.concatenate([angles, angles], axis=-1)
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    if not per_sequence:
        cos, sin = cos[0], sin[0]  # (T, D), shared by the batch
    y = host(rotary.rotary_forward(device(q), device(cos), device(sin)))
    assert y.dtype == np.float32 and y.shape == (B, H, T, D)
    assert_close(y, rotary_reference(f64(q), f64(cos), f64(sin)), "float32")
    dx = host(rotary.rotary_backward(device(g), device(cos), device(sin)))
    assert_close(dx, rotary_grad_reference(f64(g), f64(cos), f64(sin)), "float32")


def test_applies_only_to_float32_cupy_arrays():
    x = np.zeros((4, 4), np.float32)
    assert not float32_cupy(x)  # NumPy arrays take gpu/numba_cpu/ or the reference
    assert not float32_cupy(None)  # nothing that is not a CuPy array
    assert not cuda_softmax.applies(-1, x) and not normalization.applies(x, x[0])
    if ON_DEVICE:
        import cupy

        c = cupy.asarray(x)
        assert float32_cupy(c, None) and cuda_softmax.applies(-1, c)
        assert not cuda_softmax.applies(0, c)
        assert not float32_cupy(cupy.asarray(x, dtype=np.float64))
        assert not float32_cupy(c, x)
        assert rotary.applies(c[None, None], c, c) and not rotary.applies(c[:, :3], c, c)
