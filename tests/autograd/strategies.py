"""A hypothesis strategy for every registered primitive: its inputs and static parameters.

Each strategy draws a `Case(args, params)`: positional inputs (float64 arrays, or integer
and boolean arrays that are not differentiated) and keyword parameters. A float input that
the op treats as a constant (its VJP returns None for it, such as RoPE's cos and sin
tables) is named in `constants`, by position: the tests pass it as a raw array and check
the gradients of the other inputs only. Inputs are kept
small (finite differences cost two evaluations per element) and inside each op's domain:
away from kinks (relu, abs, clip), ties (max, maximum) and poles (div, log).

A new primitive needs an entry in STRATEGIES; test_registry_has_a_strategy_for_every_primitive
fails until it has one.
"""

from typing import NamedTuple

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


class Case(NamedTuple):
    args: tuple
    params: dict
    constants: tuple = ()  # positions in args of float inputs that get no gradient


def floats(lo=-3.0, hi=3.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                     width=64)


def array(draw, shape, lo=-3.0, hi=3.0):
    return draw(hnp.arrays(np.float64, shape, elements=floats(lo, hi)))


def away_from(x, points, margin=0.05):
    """Push elements that sit within `margin` of any of `points` out of the way."""
    x = np.array(x, dtype=np.float64)
    for p in points:
        close = np.abs(x - p) < margin
        x[close] = p + np.where(x[close] >= p, 2 * margin, -2 * margin)
    return x


small_shape = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)
nonscalar_shape = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)


def broadcast_pair(lo=-3.0, hi=3.0):
    @st.composite
    def strategy(draw):
        shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
        x, y = (array(draw, s, lo, hi) for s in shapes.input_shapes)
        return x, y

    return strategy()


def binary(lo=-3.0, hi=3.0):
    return broadcast_pair(lo, hi).map(lambda xy: Case(xy, {}))


def unary(lo=-3.0, hi=3.0, avoid=()):
    @st.composite
    def strategy(draw):
        x = array(draw, draw(small_shape), lo, hi)
        return Case((away_from(x, avoid) if avoid else x,), {})

    return strategy()


@st.composite
def div_case(draw):
    x, y = draw(broadcast_pair())
    return Case((x, away_from(y, [0.0], margin=0.3)), {})


@st.composite
def pow_case(draw):
    # Both base and exponent differentiable: d/dy needs log(x), so x > 0.
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
    x = array(draw, shapes.input_shapes[0], 0.5, 2.0)
    y = array(draw, shapes.input_shapes[1], -2.0, 2.0)
    return Case((x, y), {})


@st.composite
def min_max_case(draw):
    x, y = draw(broadcast_pair())
    gap = np.abs(np.broadcast_arrays(x, y)[0] - np.broadcast_arrays(x, y)[1])
    assume(gap.min(initial=1.0) > 1e-2)  # no ties: finite differences cannot see a kink
    return Case((x, y), {})


@st.composite
def where_case(draw):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3))
    condition = draw(hnp.arrays(np.bool_, shapes.input_shapes[0]))
    x = array(draw, shapes.input_shapes[1])
    y = array(draw, shapes.input_shapes[2])
    return Case((condition, x, y), {})


@st.composite
def clip_case(draw):
    x = array(draw, draw(small_shape))
    lo = draw(st.none() | st.sampled_from([-1.5, -0.5]))
    hi = draw(st.none() | st.sampled_from([0.5, 1.5]))
    return Case((away_from(x, [b for b in (lo, hi) if b is not None]),), dict(lo=lo, hi=hi))


@st.composite
def astype_case(draw):
    return Case((array(draw, draw(small_shape)),), dict(dtype=np.dtype(np.float64)))


@st.composite
def matmul_case(draw):
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    a_shape = batch.input_shapes[0] + (m, k)
    b_shape = batch.input_shapes[1] + (k, n)
    layout = draw(st.sampled_from(["batched", "vector_left", "vector_right", "shared_weight"]))
    if layout == "vector_left":
        a_shape = (k,)
    elif layout == "vector_right":
        b_shape = (k,)
    elif layout == "shared_weight":  # (..., M, K) @ (K, N): the Linear-layer fast path
        a_shape = (draw(st.integers(1, 3)),) + a_shape[-2:]
        b_shape = (k, n)
    return Case((array(draw, a_shape), array(draw, b_shape)), {})


@st.composite
def axis_and_keepdims(draw, ndim):
    if ndim == 0:
        axis = None
    else:
        axis = draw(st.none() | st.integers(-ndim, ndim - 1)
                    | st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim,
                               unique=True).map(tuple))
    return dict(axis=axis, keepdims=draw(st.booleans()))


def reduction(separated=False):
    @st.composite
    def strategy(draw):
        shape = draw(small_shape)
        if separated:  # distinct values at least 0.1 apart: no ties for max to split
            ints = hnp.arrays(np.int64, shape, elements=st.integers(-30, 30), unique=True)
            x = draw(ints) / 10.0
        else:
            x = array(draw, shape)
        return Case((x,), draw(axis_and_keepdims(len(shape))))

    return strategy()


@st.composite
def var_case(draw):
    shape = draw(nonscalar_shape)
    params = draw(axis_and_keepdims(len(shape)))
    axes = range(len(shape)) if params["axis"] is None else np.atleast_1d(params["axis"])
    count = int(np.prod([shape[a] for a in axes]))
    params["ddof"] = draw(st.sampled_from([0, 1])) if count > 1 else 0
    return Case((array(draw, shape),), params)


@st.composite
def reshape_case(draw):
    shape = draw(small_shape)
    size = int(np.prod(shape))
    new = draw(st.sampled_from([(size,), (-1,), tuple(reversed(shape)), (1,) + shape,
                                shape + (-1,)]))
    return Case((array(draw, shape),), dict(shape=new))


@st.composite
def transpose_case(draw):
    shape = draw(small_shape)
    axes = draw(st.none() | st.permutations(range(len(shape))).map(tuple))
    return Case((array(draw, shape),), dict(axes=axes))


@st.composite
def broadcast_to_case(draw):
    target = draw(small_shape)
    keep = draw(st.integers(0, len(target)))  # drop leading axes, squash others to 1
    x_shape = tuple(n if draw(st.booleans()) else 1 for n in target[len(target) - keep:])
    return Case((array(draw, x_shape),), dict(shape=target))


@st.composite
def expand_dims_case(draw):
    shape = draw(small_shape)
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    return Case((array(draw, shape),), dict(axis=axis))


@st.composite
def squeeze_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=2))
    ones = [i for i, n in enumerate(shape) if n == 1]
    axis = draw(st.none() | st.sampled_from(ones)) if ones else None
    return Case((array(draw, shape),), dict(axis=axis))


@st.composite
def getitem_case(draw):
    shape = draw(nonscalar_shape)
    x = array(draw, shape)
    kind = draw(st.sampled_from(["slices", "int", "int_array", "bool_mask", "mixed"]))
    if kind == "slices":
        index = tuple(slice(draw(st.integers(0, n - 1)), None, draw(st.sampled_from([1, 2])))
                      for n in shape)
    elif kind == "int":
        index = draw(st.integers(-shape[0], shape[0] - 1))
    elif kind == "int_array":  # repeated indices must accumulate their gradients
        index = np.array(draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=6)))
    elif kind == "bool_mask":
        index = draw(hnp.arrays(np.bool_, shape))
    else:  # an integer array on the last axis, a slice before it
        idx = np.array(draw(st.lists(st.integers(0, shape[-1] - 1), min_size=1, max_size=4)))
        index = (Ellipsis, idx) if len(shape) == 1 else (slice(None, None, -1), Ellipsis, idx)
    return Case((x,), dict(index=index))


@st.composite
def concatenate_case(draw):
    shape = draw(nonscalar_shape)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        s = list(shape)
        s[axis] = draw(st.integers(1, 3))
        parts.append(array(draw, tuple(s)))
    return Case(tuple(parts), dict(axis=axis))


@st.composite
def stack_case(draw):
    shape = draw(small_shape)
    n = draw(st.integers(1, 3))
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    return Case(tuple(array(draw, shape) for _ in range(n)), dict(axis=axis))


@st.composite
def split_case(draw):
    shape = draw(nonscalar_shape)
    axis = draw(st.integers(0, len(shape) - 1))
    size = shape[axis]
    if draw(st.booleans()):
        sections = draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
    else:
        sections = sorted(draw(st.lists(st.integers(0, size), max_size=3)))
    return Case((array(draw, shape),), dict(sections=sections, axis=axis))


@st.composite
def pad_case(draw):
    shape = draw(nonscalar_shape)
    width = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in shape)
    value = draw(st.sampled_from([0.0, -1.5]))
    return Case((array(draw, shape),), dict(pad_width=width, value=value))


@st.composite
def softmax_case(draw):
    shape = draw(nonscalar_shape)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return Case((array(draw, shape),), dict(axis=axis))


@st.composite
def cross_entropy_case(draw):
    batch = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=3))
    n_classes = draw(st.integers(2, 5))
    logits = array(draw, batch + (n_classes,))
    targets = draw(hnp.arrays(np.int64, batch, elements=st.integers(0, n_classes - 1)))
    ignore = draw(hnp.arrays(np.bool_, batch))
    ignore.flat[0] = False  # at least one counted position, so the mean is defined
    targets = np.where(ignore, -100, targets)
    params = dict(label_smoothing=draw(st.sampled_from([0.0, 0.1])),
                  reduction=draw(st.sampled_from(["mean", "sum", "none"])))
    return Case((logits, targets), params)


@st.composite
def dropout_case(draw):
    shape = draw(small_shape)
    keep = draw(hnp.arrays(np.bool_, shape))
    return Case((array(draw, shape), keep), dict(p=draw(st.sampled_from([0.1, 0.5]))))


@st.composite
def norm_case(draw, with_bias):
    shape = draw(nonscalar_shape)
    c = shape[-1:]
    x = array(draw, shape)
    if shape[-1] > 1:  # a constant row has variance ~0: the norm's gradient blows up there
        assume(np.all(x.std(axis=-1) > 0.1))
    args = (x, array(draw, c)) + ((array(draw, c),) if with_bias else ())
    return Case(args, dict(eps=draw(st.sampled_from([1e-5, 1e-2]))))


@st.composite
def causal_attention_case(draw):
    # q (B, H, T, D), k and v (B, H, S, D) after S - T cached keys, keep (B, S) padding.
    # Every row keeps key 0 (S >= T): a row with no key gets a uniform softmax only because
    # the mask's minimum swallows its scores in rounding, which finite differences see as
    # flat while the VJP (rightly, for the math) does not.
    b, h, t, d = (draw(st.integers(1, n)) for n in (2, 2, 3, 3))
    s = t + draw(st.integers(0, 2))
    keep = draw(hnp.arrays(np.bool_, (b, s)))
    keep[:, 0] = True
    q, k, v = array(draw, (b, h, t, d)), array(draw, (b, h, s, d)), array(draw, (b, h, s, d))
    return Case((q, k, v, keep), dict(scale=draw(st.sampled_from([1.0, d ** -0.5]))))


@st.composite
def rotary_case(draw):
    # x (B, H, T, D), D even; cos and sin (T, D) or (B, T, D) (one table per sequence,
    # broadcast over heads), passed as constants. Any values, not only a real cos/sin
    # pair: the op is linear in x for every table, and the VJP must hold for each.
    b, h, t = (draw(st.integers(1, n)) for n in (2, 2, 3))
    d = 2 * draw(st.integers(1, 3))
    table = (b, t, d) if draw(st.booleans()) else (t, d)
    x, cos, sin = array(draw, (b, h, t, d)), array(draw, table), array(draw, table)
    return Case((x, cos, sin), {}, constants=(1, 2))


@st.composite
def embedding_case(draw):
    # a (V, C) table and integer ids of any shape, repeated ids included: their
    # gradients must add up in the row they read
    V, C = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4))
    ids = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, V - 1)))
    return Case((array(draw, (V, C)), ids), {})


@st.composite
def linear_case(draw):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    args = (array(draw, batch + (n_in,)), array(draw, (n_out, n_in)))
    if draw(st.booleans()):
        args += (array(draw, (n_out,)),)
    return Case(args, {})


@st.composite
def quantized_linear_case(draw):
    # The weight is a static parameter (frozen, kept in integer blocks): a random 4- or
    # 8-bit PackedWeight; only x (and the bias) are differentiated, through W dequantised.
    from npplm.quantization.linear import PackedWeight

    kind = draw(st.sampled_from(["Q4_0", "Q4_1", "Q8_0", "Q6_K"]))
    group = 16 if kind == "Q6_K" else 32
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    n_in, n_out = 32 * draw(st.integers(1, 2)), draw(st.integers(1, 5))
    low, high = {"Q4_0": (-8, 8), "Q4_1": (0, 16), "Q8_0": (-128, 128), "Q6_K": (-32, 32)}[kind]
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    q = rng.integers(low, high, (n_out, n_in)).astype(np.int8)
    scale = (rng.random((n_out, n_in // group)) * 0.1).astype(np.float16).astype(np.float32)
    offset = -8 * scale if kind == "Q4_1" else None
    weight = PackedWeight.pack(kind, q, scale, offset, group)
    args = (array(draw, batch + (n_in,)),)
    if draw(st.booleans()):
        args += (array(draw, (n_out,)),)
    return Case(args, dict(weight=weight))


STRATEGIES = {
    "add": binary(),
    "sub": binary(),
    "mul": binary(),
    "div": div_case(),
    "neg": unary(),
    "pow": pow_case(),
    "exp": unary(),
    "log": unary(0.1, 5.0),
    "sqrt": unary(0.1, 5.0),
    "tanh": unary(),
    "sigmoid": unary(-6.0, 6.0),
    "relu": unary(avoid=[0.0]),
    "erf": unary(),
    "abs": unary(avoid=[0.0]),
    "maximum": min_max_case(),
    "minimum": min_max_case(),
    "where": where_case(),
    "clip": clip_case(),
    "astype": astype_case(),
    "matmul": matmul_case(),
    "sum": reduction(),
    "mean": reduction(),
    "max": reduction(separated=True),
    "var": var_case(),
    "logsumexp": reduction(),
    "reshape": reshape_case(),
    "transpose": transpose_case(),
    "broadcast_to": broadcast_to_case(),
    "expand_dims": expand_dims_case(),
    "squeeze": squeeze_case(),
    "getitem": getitem_case(),
    "concatenate": concatenate_case(),
    "stack": stack_case(),
    "split": split_case(),
    "pad": pad_case(),
    "softmax": softmax_case(),
    "log_softmax": softmax_case(),
    "cross_entropy": cross_entropy_case(),
    "dropout": dropout_case(),
    # npplm.layers
    "gelu": unary(),
    "gelu_tanh": unary(),
    "silu": unary(-6.0, 6.0),
    "linear": linear_case(),
    "embedding": embedding_case(),
    "quantized_linear": quantized_linear_case(),
    "causal_attention": causal_attention_case(),
    "apply_rotary": rotary_case(),
    "layer_norm": norm_case(with_bias=True),
    "rms_norm": norm_case(with_bias=False),
    # grad_scale's VJP is alpha times the true derivative by design (GLM's gradient
    # shrink), so finite differences can only confirm it at alpha = 1; other alphas are
    # checked exactly in tests/models/test_glm.py and against torch in test_torch_parity.
    "grad_scale": unary().map(lambda c: Case(c.args, dict(alpha=1.0))),
}
