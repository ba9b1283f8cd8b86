"""The attention core against PyTorch's scaled_dot_product_attention, and its masks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor
from npplm.layers import attention, causal_mask, merge_heads, padding_mask, split_heads
from tests.tolerances import assert_close


def test_split_and_merge_heads_are_inverse():
    x = np.arange(2 * 3 * 8, dtype=np.float64).reshape(2, 3, 8)
    heads = split_heads(Tensor(x), 4)
    assert heads.shape == (2, 4, 3, 2)
    np.testing.assert_array_equal(heads.numpy()[:, 1, :, :], x[:, :, 2:4])
    np.testing.assert_array_equal(merge_heads(heads).numpy(), x)


def test_causal_mask_with_a_cached_prefix():
    # 2 new queries after 3 cached keys: query t sees keys 0 .. 3 + t
    m = causal_mask(2, 5)
    assert (m == 0).tolist() == [[True, True, True, True, False], [True] * 5]


def test_padding_mask_shape_is_checked():
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\).*\(2, 4\)"):
        padding_mask(np.ones((2, 3)), 2, 4)
    bias = padding_mask(np.array([[1, 1, 0]]), 1, 3)
    assert bias.shape == (1, 1, 1, 3) and bias[0, 0, 0, 2] == np.finfo(np.float32).min


def test_float16_masks_leave_room_for_negative_scores():
    # float16's minimum plus a score below -16 is -inf (and NumPy warns); half of it is not
    bias = padding_mask(np.array([[1, 0, 0]]), 1, 3, np.float16)
    assert bias.dtype == np.float16 and bias[0, 0, 0, 1] == np.float16(-32752)
    scores = np.array([[[[-3.0, -20.0, -1000.0]]]], np.float16)
    with np.errstate(over="raise"):
        masked = scores + bias
    assert np.isfinite(masked).all()
    out = attention(Tensor(np.full((1, 1, 1, 2), -20, np.float16)),  # scores -28
                      Tensor(np.ones((1, 1, 3, 2), np.float16)),
                      Tensor(np.arange(6, dtype=np.float16).reshape(1, 1, 3, 2)),
                      bias=padding_mask(np.zeros((1, 3)), 1, 3, np.float16))
    np.testing.assert_allclose(out.numpy(), [[[[2.0, 3.0]]]])  # no key: uniform, not nan


@given(b=st.integers(1, 2), h=st.integers(1, 3), t=st.integers(1, 4), s=st.integers(1, 4),
       d=st.integers(1, 4), causal=st.booleans(), seed=st.integers(0, 2**16))
def test_attention_matches_torch(b, h, t, s, d, causal, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(shape) for shape in [(b, h, t, d), (b, h, s, d),
                                                        (b, h, s, d)])
    keep = rng.random((b, s)) > 0.3
    keep[:, 0] = True  # at least one key per row
    bias = padding_mask(keep.astype(np.int64), b, s, dtype=np.float64)
    if causal:
        bias = bias + causal_mask(t, s, dtype=np.float64) * 0  # shape only, values below
        allowed = np.tril(np.ones((t, s), dtype=bool), k=s - t)[None, None] & keep[:, None,
                                                                                    None, :]
        allowed[..., 0] = True
        bias = np.where(allowed, 0.0, np.finfo(np.float64).min)
    tq, tk, tv = (Tensor(a, requires_grad=True) for a in (q, k, v))
    out = attention(tq, tk, tv, bias=bias)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    pq, pk, pv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(pq, pk, pv,
                                                           attn_mask=torch.tensor(bias))
    ref.backward(torch.tensor(g))
    assert_close(out, ref.detach().numpy(), kind="float64")
    for ours, theirs in ((tq, pq), (tk, pk), (tv, pv)):
        assert_close(ours.grad, theirs.grad.numpy(), kind="float64")
