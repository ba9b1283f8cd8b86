"""The AdamW and gradient-norm kernels (gpu/numba_cpu/optim.py) equal their references in
npplm.training.optim: the update bit for bit, the norm to float64 rounding, and neither
depends on the number of threads."""

import math
from unittest import mock

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from autograd import Tensor
from gpu.numba_cpu import optim as kernels
from npplm.training import AdamW, clip_grad_norm
from npplm.training.optim import adamw_update_reference, sum_of_squares_reference
from tests.tolerances import assert_close

no_kernels = mock.patch.object(kernels, "applies", lambda *arrays: False)


def arrays(shape, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def gradients(shape, seed, steps):
    """A gradient a step, each of its own magnitude, 1e-4 to 10."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * 10 ** rng.uniform(-4, 1)).astype(np.float32)
            for _ in range(steps)]


hyperparameters = dict(
    lr=st.floats(1e-6, 1e-1), b1=st.floats(0.0, 0.99), b2=st.floats(0.5, 0.9999),
    eps=st.sampled_from([1e-12, 1e-8, 1e-6, 1e-3]), wd=st.sampled_from([0.0, 0.01, 0.1, 0.3]),
    t0=st.integers(1, 10_000),
)


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=40), seed=st.integers(0, 2**16),
       **hyperparameters)
def test_adamw_kernel_equals_the_reference_bit_for_bit(shape, seed, lr, b1, b2, eps, wd, t0):
    # Three steps in a row from t0 (the bias corrections differ at each), moments starting
    # from a previous state, on odd sizes: the kernel itself takes any size.
    p, m = arrays(shape, seed), arrays(shape, seed + 1, 0.1)
    v = arrays(shape, seed + 2, 0.1) ** 2
    ours, theirs = (p, m, v), (p.copy(), m.copy(), v.copy())
    for t, g in enumerate(gradients(shape, seed + 3, 3), start=t0):
        kernels.adamw_update(*ours[:1], g, *ours[1:], lr, (b1, b2), eps, wd, t)
        adamw_update_reference(*theirs[:1], g, *theirs[1:], lr, (b1, b2), eps, wd, t)
    for a, b in zip(ours, theirs):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)


@given(size=st.one_of(st.integers(1, 3000), st.integers(kernels.CHUNK - 3, 4 * kernels.CHUNK)),
       seed=st.integers(0, 2**16), scale=st.sampled_from([1e-20, 1e-3, 1.0, 1e15]))
def test_sum_of_squares_kernel_equals_the_reference(size, seed, scale):
    # Sizes around and over a chunk; scales whose squares underflow or overflow float32.
    g = arrays(size, seed, scale)
    ours = kernels.sum_of_squares(g)
    assert isinstance(ours, float)
    assert math.isclose(ours, sum_of_squares_reference(g), rel_tol=1e-12)


def test_nan_and_inf_gradients_reach_the_norm():
    # The trainer stops on a non-finite norm, before the update.
    for bad, expected in ((np.nan, math.isnan), (np.inf, math.isinf)):
        g = arrays(3 * kernels.CHUNK + 5, 0)
        g[2 * kernels.CHUNK + 1] = bad
        assert kernels.applies(g) and expected(kernels.sum_of_squares(g))
        p = Tensor(arrays(g.shape, 1), requires_grad=True)
        p.grad = g
        with np.errstate(invalid="ignore"):  # an inf norm scales by 0: inf * 0 = nan
            assert expected(clip_grad_norm([p], 1.0))


def test_nan_gradient_makes_the_same_nans_as_the_reference():
    g = arrays(100, 0)
    g[7] = np.nan
    ours, theirs = ([arrays(100, 1), np.zeros(100, np.float32), np.zeros(100, np.float32)]
                    for _ in range(2))
    kernels.adamw_update(ours[0], g, *ours[1:], 1e-3, (0.9, 0.95), 1e-8, 0.1, 1)
    adamw_update_reference(theirs[0], g, *theirs[1:], 1e-3, (0.9, 0.95), 1e-8, 0.1, 1)
    for a, b in zip(ours, theirs):
        assert np.isnan(a[7]) and np.isfinite(np.delete(a, 7)).all()
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="Numba has a single thread")
def test_results_do_not_depend_on_the_number_of_threads():
    g = arrays(10 * kernels.CHUNK + 123, 0)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            p, m, v = arrays(g.shape, 1), np.zeros_like(g), np.zeros_like(g)
            for t in (1, 2):
                kernels.adamw_update(p, g, m, v, 1e-3, (0.9, 0.95), 1e-8, 0.1, t)
            results.append((kernels.sum_of_squares(g), p, m, v))
    finally:
        numba.set_num_threads(before)
    (norm1, *state1), (norm2, *state2) = results
    assert norm1 == norm2  # bit for bit, not merely close
    for a, b in zip(state1, state2):
        np.testing.assert_array_equal(a, b)


def test_dispatch_only_for_large_contiguous_float32_numpy_arrays():
    big = np.zeros((4, kernels.MIN_SIZE // 4), dtype=np.float32)
    assert kernels.applies(big, big, big, big)
    assert not kernels.applies(big[:, :-1])  # small
    assert not kernels.applies(big.astype(np.float64))  # the exact tests against torch
    assert not kernels.applies(big, big.T.copy())  # shapes differ
    assert not kernels.applies(big, np.asfortranarray(big))  # not C-contiguous


def model_like():
    """Parameters as a model has them: a matrix and a vector large enough for the kernel, a
    bias too small for it, and a matrix whose gradient is Fortran-ordered (the reference)."""
    shapes = [(128, 160), (kernels.MIN_SIZE,), (37,), (160, 128)]
    params = [Tensor(arrays(s, i), requires_grad=True) for i, s in enumerate(shapes)]
    groups = [{"params": params[:2] + params[3:], "weight_decay": 0.1},
              {"params": params[2:3], "weight_decay": 0.0}]
    return params, groups


def train(use_kernels, steps=3):
    """Clip and step `steps` times; returns the norms, the parameters, the optimizer and
    the shapes the kernel updated."""
    params, groups = model_like()
    opt = AdamW(groups, lr=1e-2, betas=(0.9, 0.95))
    norms, updated = [], []
    for t in range(steps):
        for i, p in enumerate(params):
            g = gradients(p.shape, 10 * t + i, 1)[0] * np.float32(30)
            p.grad = np.asfortranarray(g) if p.shape == (160, 128) else g
        moments = [dict(s) for s in opt.state]
        with mock.patch.object(kernels, "adamw_update", wraps=kernels.adamw_update) as spy:
            if use_kernels:
                norms.append(clip_grad_norm(params, 1.0))
                opt.step()
            else:
                with no_kernels:
                    norms.append(clip_grad_norm(params, 1.0))
                    opt.step()
        updated += [call.args[0].shape for call in spy.call_args_list]
        # The moments are updated in place: they stay the arrays a checkpoint saves.
        for before, after in zip(moments, opt.state):
            assert all(after[k] is a for k, a in before.items())
    return norms, params, opt, updated


def test_adamw_and_clipping_dispatch_and_equal_the_reference_path():
    norms, params, opt, updated = train(use_kernels=True)
    norms_ref, params_ref, opt_ref, updated_ref = train(use_kernels=False)
    assert updated == [(128, 160), (kernels.MIN_SIZE,)] * 3 and updated_ref == []
    assert min(norms) > 1.0  # so that every step scaled the gradients
    # The norms differ by float64 rounding; the scales, rounded to float32, agree, and so
    # does every parameter and moment after three steps, bit for bit.
    assert_close(np.array(norms), np.array(norms_ref), "exact64")
    for p, p_ref in zip(params, params_ref):
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p.data, p_ref.data)
    for state, state_ref in zip(opt.state, opt_ref.state):
        for k in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(state[k], state_ref[k])


def test_ten_float32_steps_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = [(300, 97), (128, 256), (kernels.MIN_SIZE + 1,)]
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ours = [Tensor(v.copy(), requires_grad=True) for v in values]
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    settings = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt, topt = AdamW(ours, **settings), torch.optim.AdamW(theirs, **settings)
    assert all(kernels.applies(p.data) for p in ours)
    for _ in range(10):
        for p, tp in zip(ours, theirs):
            g = (rng.standard_normal(p.shape) * 10 ** rng.uniform(-3, 1)).astype(np.float32)
            p.grad, tp.grad = g, torch.tensor(g.copy())
        opt.step()
        topt.step()
    for i, (p, tp) in enumerate(zip(ours, theirs)):
        assert p.dtype == np.float32
        # Measured: at most 2.4e-7 apart (one float32 ulp at |p| in [2, 4)) after ten
        # steps; torch rounds m's lerp and v's addcmul in other places.
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=0, atol=5e-7)
        for k in ("exp_avg", "exp_avg_sq"):
            assert_close(opt.state[i][k], topt.state[tp][k].numpy(), "float32")
