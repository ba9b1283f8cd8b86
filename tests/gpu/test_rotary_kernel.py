"""The RoPE kernel (gpu/numba_cpu/rotary.py) equals its reference, bit for bit, and runs."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor
from gpu.numba_cpu import rotary as kernels
from npplm.layers.rotary import (
    apply_rotary,
    rope_cos_sin,
    rope_frequencies,
    rotary_grad_reference,
    rotary_reference,
)
from tests.gpu.spies import spy_on
from tests.tolerances import assert_close

TABLES = ["shared (T, D)", "per sequence (B, T, D)", "one sequence (1, T, D)"]
LAYOUTS = ["contiguous", "projection", "every other row", "reversed"]


def laid_out(a, layout):
    """`a` (B, H, T, D) with the same values in another memory layout."""
    B, H, T, D = a.shape
    if layout == "projection":  # LLaMA's q and k: (B, T, H D) -> (B, T, H, D) -> (B, H, T, D)
        flat = np.ascontiguousarray(a.transpose(0, 2, 1, 3)).reshape(B, T, H * D)
        return flat.reshape(B, T, H, D).transpose(0, 2, 1, 3)
    if layout == "every other row":  # a stride of two rows along T
        wide = np.zeros((B, H, 2 * T, D), dtype=a.dtype)
        wide[:, :, ::2] = a
        return wide[:, :, ::2]
    if layout == "reversed":  # negative strides, the last axis included
        return np.ascontiguousarray(a[::-1, :, :, ::-1])[::-1, :, :, ::-1]
    return a


def tables(b, t, d, kind, rng):
    """Arbitrary cos and sin tables, not a real rotation's: the two halves differ, so a
    kernel that mixes up j and j + D/2 in a table fails."""
    shape = {"shared (T, D)": (t, d), "per sequence (B, T, D)": (b, t, d),
             "one sequence (1, T, D)": (1, t, d)}[kind]
    return (rng.standard_normal(shape, dtype=np.float32) for _ in range(2))


@given(b=st.integers(1, 3), h=st.integers(1, 3), t=st.integers(1, 9), half=st.integers(1, 9),
       kind=st.sampled_from(TABLES), layout=st.sampled_from(LAYOUTS),
       seed=st.integers(0, 2**16))
def test_kernel_equals_reference_forward_and_vjp(b, h, t, half, kind, layout, seed):
    # The same two products and one sum per element, in the same order, no fused
    # multiply-add: equal bit for bit, whatever the strides of x and g.
    rng = np.random.default_rng(seed)
    d = 2 * half
    x, g = (rng.standard_normal((b, h, t, d), dtype=np.float32) for _ in range(2))
    cos, sin = tables(b, t, d, kind, rng)
    xs, gs = laid_out(x, layout), laid_out(g, layout)
    out, dx = kernels.rotary_forward(xs, cos, sin), kernels.rotary_backward(gs, cos, sin)
    assert out.dtype == np.float32 and dx.dtype == np.float32
    assert out.flags.c_contiguous and dx.flags.c_contiguous
    np.testing.assert_array_equal(out, rotary_reference(x, cos, sin))
    np.testing.assert_array_equal(dx, rotary_grad_reference(g, cos, sin))


def test_vjp_reference_is_the_transpose_of_the_forward():
    # <rope(x), g> = <x, dx> for every x and g: the VJP is the forward's transpose (in
    # float64, on arbitrary tables, and for a real rotation the inverse rotation).
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((2, 2, 2, 3, 8))
    for cos, sin in (rng.standard_normal((2, 2, 3, 8)),
                     rope_cos_sin(np.array([[0, 5, 9], [3, 4, 700]]), rope_frequencies(8),
                                  np.float64)):
        lhs = (rotary_reference(x, cos, sin) * g).sum()
        assert np.isclose(lhs, (x * rotary_grad_reference(g, cos, sin)).sum(), rtol=1e-12)
    assert_close(rotary_grad_reference(g, cos, sin), rotary_reference(g, cos, -sin), "exact64")


def test_nan_stays_nan():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 3, 8), dtype=np.float32)
    cos, sin = tables(1, 3, 8, "shared (T, D)", rng)
    x[0, 1, 2, 1] = np.nan  # pair (1, 5) of one row
    for out in (kernels.rotary_forward(x, cos, sin), kernels.rotary_backward(x, cos, sin)):
        assert np.isnan(out[0, 1, 2, [1, 5]]).all()
        assert np.isfinite(np.delete(out.reshape(-1, 8), [1, 5], axis=1)).all()
        assert np.isfinite(out[0, :1]).all() and np.isfinite(out[0, 1, :2]).all()


def test_dispatch_only_for_large_float32_arrays_with_tables_that_fit():
    B, H, T, D = 2, 4, kernels.MIN_SIZE // 512, 64  # B H T D = MIN_SIZE
    x = np.zeros((B, H, T, D), dtype=np.float32)
    cos = np.zeros((T, D), dtype=np.float32)
    per_sequence = np.zeros((B, T, D), dtype=np.float32)
    assert kernels.applies(x, cos, cos)
    assert kernels.applies(x, per_sequence, per_sequence)
    assert kernels.applies(x, per_sequence[:1], per_sequence[:1])
    assert kernels.applies(x.transpose(0, 2, 1, 3).copy().transpose(0, 2, 1, 3), cos, cos)
    assert not kernels.applies(x[:, :, :-1], cos[:-1], cos[:-1])  # too small
    assert not kernels.applies(x.astype(np.float64), cos.astype(np.float64),
                               cos.astype(np.float64))  # float64: gradient checks
    assert not kernels.applies(x, cos.astype(np.float64), cos)
    assert not kernels.applies(x, cos, per_sequence)  # tables of different shapes
    assert not kernels.applies(x, cos[:, :-2], cos[:, :-2])  # wrong D
    assert not kernels.applies(x[..., :63], cos[:, :63], cos[:, :63])  # odd D
    assert not kernels.applies(x, cos[None, None], cos[None, None])  # a 4D table
    assert not kernels.applies(x.reshape(B * H, T, D), cos, cos)  # not (B, H, T, D)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the kernel's forward and backward calls."""
    return spy_on(monkeypatch, kernels, ("rotary_forward", "rotary_backward"))


@pytest.fixture
def small_kernel_size(monkeypatch):
    """Let the kernel take arrays of 16K elements (MIN_SIZE is 128K), to test the wiring
    on small models."""
    monkeypatch.setattr(kernels, "MIN_SIZE", 1 << 14)


@pytest.mark.parametrize("kind", TABLES[:2])
def test_primitive_runs_the_kernel_and_keeps_float32(kind, kernel_calls, small_kernel_size):
    # Through the engine, on a strided q as LLaMA makes it: the kernel both ways, float32
    # in and out, the same numbers as the float64 reference up to float32 rounding.
    rng = np.random.default_rng(0)
    B, H, T, D = 2, 4, 40, 64
    x = laid_out(rng.standard_normal((B, H, T, D), dtype=np.float32), "projection")
    positions = np.arange(T) if kind == TABLES[0] else np.stack([np.arange(T), np.arange(T) + 7])
    cos, sin = rope_cos_sin(positions, rope_frequencies(D), np.float32)
    g = rng.standard_normal((B, H, T, D), dtype=np.float32)
    t = Tensor(x, requires_grad=True)
    out = apply_rotary(t, cos, sin)
    out.backward(g)
    assert kernel_calls == ["rotary_forward", "rotary_backward"]
    assert out.dtype == np.float32 and t.grad.dtype == np.float32
    c64, s64 = cos.astype(np.float64), sin.astype(np.float64)
    assert_close(out, rotary_reference(x.astype(np.float64), c64, s64), "float32")
    assert_close(t.grad, rotary_grad_reference(g.astype(np.float64), c64, s64), "float32")


def test_reference_runs_where_the_kernel_does_not_apply(kernel_calls, small_kernel_size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 40, 64))  # float64
    cos, sin = rope_cos_sin(np.arange(40), rope_frequencies(64), np.float64)
    t = Tensor(x, requires_grad=True)
    apply_rotary(t, cos, sin).backward(np.ones_like(x))
    apply_rotary(Tensor(x[:, :1, :4].astype(np.float32)), cos[:4].astype(np.float32),
                 sin[:4].astype(np.float32))  # float32, small
    assert kernel_calls == []


def test_llama_training_step_runs_the_kernel_on_q_and_k(kernel_calls, small_kernel_size,
                                                        monkeypatch):
    # A LLaMA whose q and k reach the lowered MIN_SIZE (MHA: K = H), left-padded (one
    # table per sequence); loss and gradients equal those of the reference path.
    from npplm.models.llama import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.tiny(hidden_size=128, num_key_value_heads=4)  # H = K = 4, D = 32
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (2, 64))
    mask = np.ones((2, 64), dtype=np.int64)
    mask[1, :5] = 0
    results = []
    for use_kernel in (True, False):
        if not use_kernel:
            monkeypatch.setattr(kernels, "applies", lambda *arrays: False)
        model = LlamaForCausalLM(config, seed=0)
        loss = model(ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        results.append((loss, [p.grad for p in model.parameters()]))
    n = 2 * config.num_hidden_layers  # q and k of every layer
    assert kernel_calls == ["rotary_forward"] * n + ["rotary_backward"] * n
    (loss, grads), (ref_loss, ref_grads) = results
    assert_close(loss, ref_loss, "model32")
    scale = max(float(np.abs(gr).max()) for gr in ref_grads)
    for ours, theirs in zip(grads, ref_grads):
        assert_close(ours, theirs, "model_grad32", scale=scale)
