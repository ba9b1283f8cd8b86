"""Every Numba kernel equals the reference it replaces (gpu/numba_cpu/)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpu.numba_cpu import activations as kernels
from npplm.layers import activations as reference

FORMS = [
    ("gelu", reference.gelu_reference, reference.gelu_grad_reference,
     kernels.gelu_forward, kernels.gelu_backward),
    ("gelu_tanh", reference.gelu_tanh_reference, reference.gelu_tanh_grad_reference,
     kernels.gelu_tanh_forward, kernels.gelu_tanh_backward),
    ("silu", reference.silu_reference, reference.silu_grad_reference,
     kernels.silu_forward, kernels.silu_backward),
]


def test_rational_erf_is_within_a_few_float32_ulps_of_libm_everywhere():
    z = np.linspace(-7, 7, 200_001)
    ours = np.array([kernels.erf32.py_func(np.float32(v)) for v in z[::50]], dtype=np.float64)
    exact = np.array([math.erf(v) for v in np.float32(z[::50])])
    # The formula is within 6.5e-8 of erf; evaluating it in float32 adds a few ulps of
    # rounding (an ulp is 6e-8 just below 1).
    assert np.abs(ours - exact).max() < 5e-7


@pytest.mark.parametrize("name, ref_fwd, ref_bwd, fwd, bwd", FORMS, ids=[f[0] for f in FORMS])
@given(x=hnp.arrays(np.float32, st.integers(1, 3000),
                    elements=st.floats(-12, 12, width=32)))
def test_kernel_equals_reference(name, ref_fwd, ref_bwd, fwd, bwd, x):
    g = np.linspace(-2, 2, x.size, dtype=np.float32)
    out, grad = fwd(x), bwd(g, x)
    assert out.dtype == np.float32 and grad.dtype == np.float32
    # Against the reference in float64: in float32 the reference's own 1 + tanh(u) cancels
    # for x below about -5 (10x off at x = -5.375), where the kernel's sigmoid form is exact.
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    np.testing.assert_allclose(out, ref_fwd(x64), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(grad, ref_bwd(g64, x64), rtol=2e-6, atol=2e-6)


def test_primitives_dispatch_to_the_kernel_only_for_large_float32_arrays():
    big = np.zeros(kernels.MIN_SIZE, dtype=np.float32)
    assert kernels.applies(big)
    assert not kernels.applies(big[: kernels.MIN_SIZE - 1])
    assert not kernels.applies(big.astype(np.float64))  # gradient checks stay exact
    assert not kernels.applies(big, big.reshape(2, -1)[:, ::2].ravel()[:1])  # shapes differ


@pytest.mark.parametrize("name, ref_fwd, ref_bwd, fwd, bwd", FORMS, ids=[f[0] for f in FORMS])
def test_nan_stays_nan(name, ref_fwd, ref_bwd, fwd, bwd):
    x = np.array([np.nan, 1.0], dtype=np.float32)
    assert np.isnan(fwd(x)[0]) and np.isnan(bwd(np.ones_like(x), x)[0])
