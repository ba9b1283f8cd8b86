"""The attention kernel (gpu/numba_cpu/attention.py), causal and an encoder's, equals its
reference, and runs."""

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor
from gpu.numba_cpu import attention as kernels
from npplm.layers.attention import (
    attention,
    causal_attention_grad_reference,
    causal_attention_reference,
)
from npplm.layers.masks import CausalMask, PaddingMask, causal_bias
from tests.gpu.spies import spy_on
from tests.tolerances import assert_close

PADDING = ["none", "left", "right", "random", "a row of nothing"]


def inputs(b, h, t, s, d, padding, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, h, t, d), dtype=np.float32)
    k, v = (rng.standard_normal((b, h, s, d), dtype=np.float32) for _ in range(2))
    keep = np.ones((b, s), dtype=bool)
    if padding == "left":  # as a batch of prompts for generation: early rows read nothing
        keep[0, : s // 2] = False
    elif padding == "right":
        keep[-1, s - s // 3:] = False
    elif padding == "random":
        keep = rng.random((b, s)) > 0.4
    elif padding == "a row of nothing":
        keep[0] = False
    return q, k, v, keep


@given(b=st.integers(1, 2), h=st.integers(1, 3), t=st.integers(1, 19),
       cached=st.integers(-2, 6), d=st.integers(1, 17), padding=st.sampled_from(PADDING),
       causal=st.booleans(), seed=st.integers(0, 2**16))
def test_kernel_equals_reference_forward_and_vjp(b, h, t, cached, d, padding, causal, seed):
    # T from 1 to 19 (ROWS = 4 divides some, not others); S = T + cached keys, S < T too
    # (the first queries then read nothing); D odd and even; causal or an encoder's.
    s = max(t + cached, 1)
    q, k, v, keep = inputs(b, h, t, s, d, padding, seed)
    check_against_the_reference(q, k, v, keep, causal, seed)


def check_against_the_reference(q, k, v, keep, causal, seed):
    """The kernel's out, lse and (dq, dk, dv) against the dense reference's, float32 kept."""
    scale = q.shape[-1] ** -0.5
    out, lse = kernels.attention_forward(q, k, v, keep, scale, causal)
    ref_out, ref_lse = causal_attention_reference(q, k, v, keep, scale, causal)
    assert out.dtype == np.float32 and lse.dtype == np.float32
    assert_close(out, ref_out, kind="float32")
    assert_close(lse, ref_lse, kind="float32")
    rng = np.random.default_rng(seed + 1)
    g = rng.standard_normal(out.shape, dtype=np.float32)
    g_lse = rng.standard_normal(lse.shape, dtype=np.float32)
    grads = kernels.attention_backward(g, g_lse, q, k, v, keep, out, lse, scale, causal)
    expected = causal_attention_grad_reference(g, g_lse, q, k, v, keep, scale, causal)
    for name, ours, theirs in zip("qkv", grads, expected):
        assert ours.dtype == np.float32, name
        assert_close(ours, theirs, kind="grad")


@pytest.mark.parametrize("t, cached, d, causal, padding", [
    (70, 0, 80, True, "random"),  # three backward blocks of BLOCK rows, the last partial;
    (70, 5, 64, False, "left"),  # head dims over one tile and two; keys over several
    (37, 60, 130, True, "none"),
    (100, -30, 16, True, "right"),
    (33, 40, 64, False, "a row of nothing"),
])
def test_kernel_equals_reference_across_blocks_and_tiles(t, cached, d, causal, padding):
    # Larger than the hypothesis test draws: T over BLOCK, S over WIDTH, D over WIDTH.
    assert t > kernels.BLOCK and (t + cached > kernels.WIDTH or d > kernels.WIDTH)
    q, k, v, keep = inputs(2, 3, t, t + cached, d, padding, seed=t + d)
    check_against_the_reference(q, k, v, keep, causal, seed=t)


def test_q_k_v_split_from_one_projection_are_read_in_place(monkeypatch):
    # GPT-2's c_attn: q, k, v are strided views of one (B, T, 3, H, D) array, not copied
    rng = np.random.default_rng(7)
    qkv = rng.standard_normal((2, 40, 3, 4, 16), dtype=np.float32)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    assert kernels.rows_by_token(q).base is not None  # a view of qkv
    assert np.shares_memory(kernels.rows_by_token(q), qkv)
    check_against_the_reference(q, k, v, np.ones((2, 40), dtype=bool), True, seed=7)


@given(m=st.integers(1, 4), n=st.integers(1, kernels.WIDTH), K=st.integers(0, 70),
       accumulate=st.booleans(), columns=st.booleans(), seed=st.integers(0, 2**16))
def test_matmul_tile_is_the_product_it_names(m, n, K, accumulate, columns, seed):
    # c_r[:n] (+)= sum_k a_r[k] b[k, :n] for r < m; rows r >= m and columns >= n untouched
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((4, K + 3), dtype=np.float32)
    a_rows = np.ascontiguousarray(a.T).T if columns else a  # strided rows: a's columns
    b = rng.standard_normal((K + 3, kernels.WIDTH + 5), dtype=np.float32)
    c = rng.standard_normal((4, kernels.WIDTH + 5), dtype=np.float32)
    got = c.copy()
    tile_once(a_rows, b, got, m, n, K, accumulate)
    expected = c.astype(np.float64)
    product = a[:, :K].astype(np.float64) @ b[:K, :n].astype(np.float64)
    expected[:m, :n] = product[:m] + (c[:m, :n] if accumulate else 0)
    bound = 1e-5 * (1 + np.abs(a[:, :K]).astype(np.float64) @ np.abs(b[:K, :n]))
    assert np.all(np.abs(got[:m, :n] - expected[:m, :n]) <= bound[:m])
    np.testing.assert_array_equal(got[m:], c[m:])
    np.testing.assert_array_equal(got[:, n:], c[:, n:])


def test_matmul_tile_takes_float32_only():
    a, b, c = (np.zeros((4, 8)) for _ in range(3))  # float64
    with pytest.raises(numba.core.errors.TypingError):
        tile_once(a, b, c, 4, 8, 8, False)


@numba.njit
def tile_once(a, b, c, m, n, K, accumulate):
    kernels.matmul_tile(a[0], a[1], a[2], a[3], b, c[0], c[1], c[2], c[3], m, n, K,
                        accumulate)


@numba.njit(fastmath=kernels.FLAGS)
def exp_in_a_loop(x):
    # exp32 as the kernel uses it: inlined into a loop that LLVM vectorises, same flags
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = kernels.exp32(x[i])
    return out


def test_exp32_is_within_a_few_float32_ulps_of_exp():
    x = np.concatenate([np.linspace(-87, 0, 200_001, dtype=np.float32),
                        np.float32([1e-7, 0.5, 10.0])])
    exact = np.exp(x.astype(np.float64))
    # 6e-8 in the written order; LLVM may regroup it under the kernel's flags (3e-7)
    assert np.max(np.abs(exp_in_a_loop(x) - exact) / exact) < 5e-7  # NumPy's: 2e-7
    edge = exp_in_a_loop(np.float32([-np.inf, -100.0, np.nan]))
    assert edge[0] == 0 and edge[1] == 0 and np.isnan(edge[2])


def test_nan_stays_nan():
    q, k, v, keep = inputs(1, 1, 5, 5, 4, "none", 0)
    q[0, 0, 2, 1] = np.nan
    out, lse = kernels.attention_forward(q, k, v, keep, 0.5)
    assert np.isnan(out[0, 0, 2]).all() and np.isnan(lse[0, 0, 2])
    assert np.isfinite(out[0, 0, :2]).all()  # earlier rows never read row 2


@pytest.mark.parametrize("padding", ["none", "left"])
@pytest.mark.parametrize("mask", [CausalMask, PaddingMask])
def test_layer_path_equals_the_composite_with_a_dense_bias(padding, mask):
    # attention(..., CausalMask / PaddingMask) against attention(..., bias=the dense bias),
    # through the engine: values and the gradients of q, k and v, float32, a KV-cache
    # offset of 3 (causal).
    q, k, v, keep = inputs(2, 3, 16, 19, 8, padding, 0)  # 16 rows: the kernel's path
    g = np.random.default_rng(1).standard_normal(q.shape).astype(np.float32)
    results = []
    dense = causal_bias(keep, 16, 19, np.float32, causal=mask is CausalMask)
    for bias in (mask(keep), dense):
        tq, tk, tv = (Tensor(a, requires_grad=True) for a in (q, k, v))
        out = attention(tq, tk, tv, bias=bias)
        out.backward(g)
        results.append((out, tq.grad, tk.grad, tv.grad))
    assert results[0][0].dtype == np.float32
    assert_close(results[0][0], results[1][0], kind="float32")
    for ours, theirs in zip(results[0][1:], results[1][1:]):
        assert_close(ours, theirs, kind="grad")


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the kernel's forward and backward calls."""
    return spy_on(monkeypatch, kernels, ("attention_forward", "attention_backward"))


def test_gpt2_training_step_runs_the_kernel_both_ways(kernel_calls):
    from npplm.models.gpt import GPT2LMHeadModel, GPTConfig

    config = GPTConfig.tiny()
    model = GPT2LMHeadModel(config, seed=0)
    T = kernels.MIN_QUERIES  # fewer query rows (decoding) take the reference
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (2, T))
    mask = np.ones((2, T), dtype=np.int64)
    mask[1, :2] = 0  # left padding
    model.eval()  # attention dropout off
    model(ids, attention_mask=mask, labels=ids).loss.backward()
    assert kernel_calls.count("attention_forward") == config.n_layer
    assert kernel_calls.count("attention_backward") == config.n_layer


def test_reference_runs_where_the_kernel_does_not_apply(kernel_calls):
    q, k, v, keep = inputs(1, 2, 5, 5, 4, "none", 0)
    attention(Tensor(q.astype(np.float64)), Tensor(k.astype(np.float64)),
              Tensor(v.astype(np.float64)), bias=CausalMask())  # float64: gradient checks
    assert not kernels.applies(q, k[:, :1], v, keep)  # grouped keys must be repeated first
    assert not kernels.applies(q, k, v, keep.astype(np.int64))
    one = inputs(1, 2, 1, 40, 4, "none", 0)  # decoding: one query row against 40 keys
    assert not kernels.applies(*one)
    assert kernel_calls == []


def test_attention_dropout_in_training_takes_the_composite_path(kernel_calls):
    from npplm.layers import Dropout

    q, k, v, keep = inputs(1, 2, 16, 16, 4, "none", 0)
    drop = Dropout(0.5, seed=0)
    out = attention(Tensor(q), Tensor(k), Tensor(v), bias=CausalMask(keep), dropout=drop)
    assert kernel_calls == []
    drop.training = False  # eval: dropout is the identity, the kernel runs
    plain = attention(Tensor(q), Tensor(k), Tensor(v), bias=CausalMask(keep), dropout=drop)
    assert kernel_calls == ["attention_forward"]
    assert not np.allclose(out.numpy(), plain.numpy())  # the dropout was real


def test_masks_check_their_shape():
    with pytest.raises(ValueError, match=r"CausalMask: keep has shape \(2, 5\).*\(2, 6\)"):
        CausalMask(np.ones((2, 5))).keys(2, 6)
    with pytest.raises(ValueError, match=r"PaddingMask: keep has shape \(2, 5\)"):
        PaddingMask(np.ones((2, 5))).keys(2, 6)


def test_bert_forward_and_backward_run_the_kernel_both_ways(kernel_calls):
    from npplm.models.bert import BertConfig, BertModel

    config = BertConfig.tiny()
    model = BertModel(config, seed=0).eval()  # attention dropout off
    T = kernels.MIN_QUERIES
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (2, T))
    mask = np.ones((2, T), dtype=np.int64)
    mask[1, -5:] = 0  # right padding
    (model(ids, attention_mask=mask).last_hidden_state ** 2).sum().backward()
    assert kernel_calls.count("attention_forward") == config.num_hidden_layers
    assert kernel_calls.count("attention_backward") == config.num_hidden_layers
