"""Rotary position embeddings: the rotation's properties, LLaMA-3 scaling, gradients, and
equality with Hugging Face's `apply_rotary_pos_emb` and frequency functions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autograd import Tensor, concatenate, gradcheck
from npplm.layers.rotary import apply_rotary, rope_cos_sin, rope_frequencies, rotate_half
from tests.tolerances import assert_close

LLAMA31 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
               original_max_position_embeddings=8192)


def rotated(x, positions, theta=10000.0, scaling=None):
    cos, sin = rope_cos_sin(np.asarray(positions), rope_frequencies(x.shape[-1], theta, scaling),
                            np.float64)
    return apply_rotary(Tensor(x), cos, sin).numpy()


def test_rotate_half_is_multiplication_by_i():
    x = np.arange(8.0).reshape(1, 1, 1, 8)
    np.testing.assert_array_equal(rotate_half(Tensor(x)).numpy().ravel(),
                                  [-4, -5, -6, -7, 0, 1, 2, 3])
    # Twice is a half turn: -x.
    np.testing.assert_array_equal(rotate_half(rotate_half(Tensor(x))).numpy(), -x)


def test_position_zero_is_the_identity():
    x = np.random.default_rng(0).standard_normal((2, 3, 1, 16))
    assert_close(rotated(x, [0]), x, "exact64")


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**16), scaled=st.booleans())
def test_rotation_preserves_norms(seed, scaled):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 5, 16)) * 3
    positions = rng.integers(0, 100000, 5)
    y = rotated(x, positions, scaling=LLAMA31 if scaled else None)
    assert_close(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), "float64")
    # Each pair (x_j, x_{j + D/2}) keeps its own norm: it is rotated in its own plane.
    pairs = lambda a: np.hypot(a[..., :8], a[..., 8:])  # noqa: E731
    assert_close(pairs(y), pairs(x), "float64")


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**16), m=st.integers(0, 5000), n=st.integers(0, 5000),
       shift=st.integers(-5000, 5000), theta=st.sampled_from([10000.0, 500000.0]))
def test_scores_depend_on_relative_position_only(seed, m, n, shift, theta):
    # <rope(q, m), rope(k, n)> = <q, rope(k, n - m)>: the same after shifting both.
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, 1, 1, 1, 32))
    shift = max(shift, -min(m, n))  # positions stay >= 0
    score = (rotated(q, [m], theta) * rotated(k, [n], theta)).sum()
    shifted = (rotated(q, [m + shift], theta) * rotated(k, [n + shift], theta)).sum()
    assert math.isclose(score, shifted, rel_tol=1e-9, abs_tol=1e-9)


def test_llama3_scaling_keeps_short_and_stretches_long_wavelengths():
    w = rope_frequencies(128, 500000.0)
    scaled = rope_frequencies(128, 500000.0, LLAMA31)
    wavelength = 2 * np.pi / w
    short, long = wavelength < 8192 / 4, wavelength > 8192 / 1
    assert short.sum() > 10 and long.sum() > 10 and (~short & ~long).sum() > 0
    np.testing.assert_array_equal(scaled[short], w[short])
    assert_close(scaled[long], w[long] / 8, "exact64")
    between = ~short & ~long  # blended: between w / 8 and w, decreasing with wavelength
    assert np.all(scaled[between] < w[between]) and np.all(scaled[between] > w[between] / 8)
    assert np.all(np.diff(scaled) < 0)
    with pytest.raises(ValueError, match="rope_type 'yarn' is not implemented"):
        rope_frequencies(128, scaling={"rope_type": "yarn"})
    with pytest.raises(ValueError, match="head_dim=7 must be even"):
        rope_frequencies(7)


def test_gradient_flows_through_the_rotation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 3, 8))
    cos, sin = rope_cos_sin(np.array([[0, 5, 9], [3, 4, 700]]), rope_frequencies(8), np.float64)
    assert gradcheck(lambda t: apply_rotary(t, cos, sin), x)
    # The transpose of a rotation is the inverse rotation: dL/dx = rope^-1(g).
    g = rng.standard_normal(x.shape)
    t = Tensor(x, requires_grad=True)
    apply_rotary(t, cos, sin).backward(g)
    assert_close(t.grad, apply_rotary(Tensor(g), cos, -sin).numpy(), "exact64")


@pytest.mark.parametrize("positions", [np.array([0, 5, 9]), np.array([[0, 5, 9], [3, 4, 700]])],
                         ids=["(T, D) table", "(B, T, D) tables"])
def test_fused_primitive_equals_the_composite(positions):
    # The fused node against x * cos + rotate_half(x) * sin built from engine primitives
    # (what apply_rotary was before it was fused), forward and gradient, float64.
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((2, 2, 2, 3, 8))
    cos, sin = rope_cos_sin(positions, rope_frequencies(8), np.float64)
    c, s = (cos[:, None], sin[:, None]) if cos.ndim == 3 else (cos, sin)
    results = []
    for rope in (lambda t: apply_rotary(t, cos, sin),
                 lambda t: t * Tensor(c) + concatenate(-t[..., 4:], t[..., :4], axis=-1)
                 * Tensor(s)):
        t = Tensor(x, requires_grad=True)
        out = rope(t)
        out.backward(g)
        results.append((out.numpy(), t.grad))
    assert_close(results[0][0], results[1][0], "exact64")
    assert_close(results[0][1], results[1][1], "exact64")


def test_tables_get_no_gradient():
    # cos and sin are constants of the positions: even passed as Tensors that ask for a
    # gradient, they get none (their VJP is None), while x gets its own.
    cos, sin = rope_cos_sin(np.arange(3), rope_frequencies(8), np.float64)
    x, tc, ts = (Tensor(a, requires_grad=True) for a in (np.ones((1, 1, 3, 8)), cos, sin))
    apply_rotary(x, tc, ts).sum().backward()
    assert tc.grad is None and ts.grad is None and x.grad is not None


# --- against transformers --------------------------------------------------------------------

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("scaling", [None, LLAMA31], ids=["default", "llama3"])
def test_frequencies_and_rotation_equal_transformers(scaling):
    from transformers.models.llama import modeling_llama

    rope = {"rope_type": "default", **(scaling or {}), "rope_theta": 500000.0}
    config = transformers.LlamaConfig(hidden_size=256, num_attention_heads=2,
                                      max_position_embeddings=131072, rope_parameters=rope)
    hf_rope = modeling_llama.LlamaRotaryEmbedding(config)
    w = rope_frequencies(128, 500000.0, scaling)
    # Hugging Face computes the frequencies in float32, we in float64.
    assert_close(w, hf_rope.inv_freq.numpy().astype(np.float64), "float32")

    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 2, 3, 5, 128))
    positions = np.array([[0, 1, 2, 3, 4], [7, 100, 4000, 9000, 100000]])
    hf_cos, hf_sin = hf_rope(torch.zeros(1, dtype=torch.float64), torch.tensor(positions))
    cos, sin = rope_cos_sin(positions, w, np.float64)
    # Angles up to 1e5 rad, computed by HF in float32: sin/cos agree to ~1e-2 there, so
    # compare the tables at small positions only, and the rotation on identical tables.
    assert_close(cos[0], hf_cos[0].numpy(), "float32")
    assert_close(sin[0], hf_sin[0].numpy(), "float32")
    hf_q, hf_k = modeling_llama.apply_rotary_pos_emb(torch.tensor(q), torch.tensor(k),
                                                     torch.tensor(cos), torch.tensor(sin))
    assert_close(apply_rotary(Tensor(q), cos, sin), hf_q.numpy(), "exact64")
    assert_close(apply_rotary(Tensor(k), cos, sin), hf_k.numpy(), "exact64")
