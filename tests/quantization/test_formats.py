"""GGUF block formats (npplm.quantization.formats) against gguf-py, bit for bit.

The oracle is the `gguf` package's own NumPy decoders and encoders (gguf.quants): every
format's `dequantize` (and `unpack`'s scale * q + offset) must give its float32 bits on
any bytes, and our Q8_0 / Q4_0 / Q4_1 / BF16 quantisers its bytes on any weights. Q4_K and
Q6_K, which gguf-py cannot quantise, are checked by decoding our bytes with gguf-py and by
their error next to Q4_1's. The last section writes GGUF files (npplm.io.gguf.write) and
reads them back through GGUFReader and through our reader.
"""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npplm.io import CheckpointError
from npplm.io import gguf as gguf_io
from npplm.quantization import FORMATS, dequantize, quantize, row_bytes, unpack

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402  (after the importorskip)
from gguf.quants import quantize as gguf_quantize  # noqa: E402

Q = gguf.GGMLQuantizationType
BLOCK_KINDS = ["Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"]
CODE_RANGES = {"Q8_0": (-128, 127), "Q4_0": (-8, 7), "Q4_1": (0, 15), "Q4_K": (0, 15),
               "Q6_K": (-32, 31)}
SYMMETRIC = {"Q8_0", "Q4_0", "Q6_K"}


def assert_same_bits(ours, theirs):
    """Equal float32 bit patterns, NaN positions included (NaNs may differ in payload)."""
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape
    nan = np.isnan(ours)
    assert np.array_equal(nan, np.isnan(theirs))
    assert np.array_equal(ours[~nan].view(np.uint32), theirs[~nan].view(np.uint32))


def random_bytes(kind, rows, cols, seed):
    """Any bytes at all: fp16 scales include infinities and NaNs (1 in 32 of them)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (rows, row_bytes(kind, cols)), dtype=np.uint8)


shapes = st.tuples(st.sampled_from(list(FORMATS)), st.integers(1, 4), st.integers(1, 3),
                   st.integers(0, 2**32 - 1))  # kind, rows, blocks per row, seed


def test_the_table_is_gguf_packages():
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.ggml_type == Q[name].value
        assert (fmt.block, fmt.nbytes) == gguf.GGML_QUANT_SIZES[Q[name]]
    assert set(FORMATS) >= {"F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"}
    assert row_bytes(Q.Q4_K, 512) == row_bytes(FORMATS["Q4_K"], 512) == 2 * 144


# --- decoding -------------------------------------------------------------------------------


@settings(deadline=None)
@given(shapes)
def test_dequantize_equals_gguf_on_any_bytes(case):
    kind, rows, blocks, seed = case
    cols = blocks * FORMATS[kind].block
    raw = random_bytes(kind, rows, cols, seed)
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 in the random scales
        ours = dequantize(raw, kind, (rows, cols))
        theirs = gguf_dequantize(raw, Q[kind]).reshape(rows, cols)
        flat = dequantize(raw.reshape(-1), kind, (rows, cols))  # flat bytes read the same
    assert_same_bits(ours, theirs)
    assert_same_bits(flat, theirs)


@settings(deadline=None)
@given(shapes.filter(lambda case: case[0] in BLOCK_KINDS))
def test_unpack_is_dequantize(case):
    """scale * q (+ offset), per element in float32 in that order, is dequantize exactly;
    the codes lie in the documented range and the scales have one entry per group."""
    kind, rows, blocks, seed = case
    cols = blocks * FORMATS[kind].block
    raw = random_bytes(kind, rows, cols, seed)
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 in the random scales
        q, scale, offset, group = unpack(raw, kind, (rows, cols))
    assert group == FORMATS[kind].group == {"Q6_K": 16}.get(kind, 32)
    assert q.dtype == np.int8 and q.shape == (rows, cols)
    lo, hi = CODE_RANGES[kind]
    assert lo <= q.min() and q.max() <= hi
    assert scale.dtype == np.float32 and scale.shape == (rows, cols // group)
    assert (offset is None) == (kind in SYMMETRIC)
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.repeat(scale, group, axis=1) * q.astype(np.float32)
        if offset is not None:
            assert offset.dtype == np.float32 and offset.shape == scale.shape
            w = w + np.repeat(offset, group, axis=1)
        assert_same_bits(w, dequantize(raw, kind, (rows, cols)))


def test_codes_cover_their_range():
    """Enough random blocks reach both ends of every code range (nothing is clipped)."""
    for kind in BLOCK_KINDS:
        q = unpack(random_bytes(kind, 8, 1024, 0), kind, (8, 1024)).q
        assert (q.min(), q.max()) == CODE_RANGES[kind], kind


def test_block_formats_by_hand():
    """One block of each 32-weight type written byte by byte: scales, minimum, nibbles."""
    d, m = np.float16(0.5).tobytes(), np.float16(-1.0).tobytes()
    nibbles = bytes(i | ((15 - i) << 4) for i in range(16))  # low 0..15, high 15..0
    q = np.concatenate([np.arange(16), 15 - np.arange(16)]).astype(np.float32)
    assert np.array_equal(dequantize(d + m + nibbles, "Q4_1", (32,)), 0.5 * q - 1.0)
    assert np.array_equal(dequantize(d + nibbles, "Q4_0", (32,)), 0.5 * (q - 8))
    q8 = np.arange(-16, 16, dtype=np.int8)
    assert np.array_equal(dequantize(d + q8.tobytes(), "Q8_0", (1, 32)),
                          0.5 * q8.astype(np.float32)[None])


def test_q4_k_scales_by_hand():
    """A Q4_K super-block spelled from the docstring's layout: 6-bit scales and minimums
    split into low 4 bits and high 2 bits for sub-blocks 4..7, runs of two nibbles."""
    sc = np.array([1, 17, 33, 63, 5, 21, 40, 62])
    m = np.array([0, 2, 63, 16, 48, 15, 31, 7])
    scales = [sc[j] | (sc[j + 4] >> 4) << 6 for j in range(4)]
    scales += [m[j] | (m[j + 4] >> 4) << 6 for j in range(4)]
    scales += [(sc[j + 4] & 15) | (m[j + 4] & 15) << 4 for j in range(4)]
    codes = np.random.default_rng(0).integers(0, 16, (8, 32))  # (sub-block, weight)
    runs = [codes[2 * c] | codes[2 * c + 1] << 4 for c in range(4)]  # (4, 32)
    raw = (np.float16(0.5).tobytes() + np.float16(0.25).tobytes() + bytes(scales)
           + np.concatenate(runs).astype(np.uint8).tobytes())
    want = 0.5 * sc[:, None] * codes - 0.25 * m[:, None]  # exact in float32
    assert np.array_equal(dequantize(raw, "Q4_K", (256,)), want.reshape(-1))
    got = unpack(raw, "Q4_K", (1, 256))
    assert np.array_equal(got.q, codes.reshape(1, 256))
    assert np.array_equal(got.scale, 0.5 * sc[None]) and np.array_equal(got.offset,
                                                                       -0.25 * m[None])


# --- encoding -------------------------------------------------------------------------------


def awkward_rows(cols):
    """Weights that stress a quantiser: Gaussians at several scales, an outlier in some
    rows, an all-zero row, constant rows of either sign, all-positive and all-negative
    rows, and rows whose scaled values fall exactly on halves (rounding ties)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((12, cols)) * rng.uniform(0.01, 3, (12, 1))
    w[1, 5] = 40.0
    w[2, cols - 1] = -25.0
    w[3] = 0.0
    w[4], w[5] = 0.75, -1.5
    w[6], w[7] = np.abs(w[6]), -np.abs(w[7])
    ties = np.arange(cols) % 32 - 15.5  # halves
    w[8] = np.where(np.arange(cols) % 32 == 0, 127, ties)  # Q8_0: d = 1, x * 1/d = k + .5
    w[9] = np.where(np.arange(cols) % 32 == 0, -8, ties % 15 - 7)  # Q4_0: d = 1
    w[10] = np.where(np.arange(cols) % 32 == 0, 15, np.abs(ties) % 15)  # Q4_1: d = 1
    w[10, 1::32] = 0
    w[11] = 1e-3 * w[11]
    return w.astype(np.float32)


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1", "F16", "BF16", "F32"])
def test_quantize_equals_gguf(kind):
    w = awkward_rows(256)
    theirs = gguf_quantize(w, Q[kind]).view(np.uint8).reshape(12, -1)
    assert np.array_equal(quantize(w, kind), theirs)
    assert quantize(w, kind).shape == (12, row_bytes(kind, 256))


@settings(deadline=None)
@given(st.sampled_from(["Q8_0", "Q4_0", "Q4_1", "BF16"]), st.integers(1, 5),
       st.integers(1, 4), st.floats(1e-4, 1e3), st.integers(0, 2**32 - 1))
def test_quantize_equals_gguf_on_drawn_weights(kind, rows, blocks, spread, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, 32 * blocks)) * spread).astype(np.float32)
    theirs = gguf_quantize(w, Q[kind]).view(np.uint8).reshape(rows, -1)
    assert np.array_equal(quantize(w, kind), theirs)


def rms(a, b):
    return float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.mark.parametrize("kind", ["Q4_K", "Q6_K"])
def test_our_k_quants_decode_with_gguf(kind):
    """Our bytes are valid llama.cpp blocks: gguf-py decodes them to our dequantize."""
    w = awkward_rows(512)
    raw = quantize(w, kind)
    assert raw.dtype == np.uint8 and raw.shape == (12, row_bytes(kind, 512))
    ours = dequantize(raw, kind, w.shape)
    assert_same_bits(ours, gguf_dequantize(raw, Q[kind]))
    assert np.array_equal(ours[3], np.zeros(512))  # the zero row stays zero
    assert np.allclose(ours[4], 0.75, rtol=1e-3) and np.allclose(ours[5], -1.5, rtol=1e-3)
    q = unpack(raw, kind, w.shape).q
    lo, hi = CODE_RANGES[kind]
    assert lo <= q.min() and q.max() <= hi
    # No weight moves by more than a row's largest magnitude over 15 (Q4_K: a sub-block's
    # code step is at most twice that, and rounding moves half a step) or over 31 (Q6_K);
    # measured: up to 0.89 and 0.67 of these bounds.
    bound = np.abs(w).max(axis=1) / (15 if kind == "Q4_K" else 31)
    assert (np.abs(ours - w).max(axis=1) <= bound).all()


def test_k_quant_errors_next_to_q4_1():
    """On Gaussian weights our Q4_K's RMS error is below Q4_1's (measured: 0.91 of it,
    with 4.5 bits per weight to Q4_1's 5); Q6_K's is 0.26 of Q4_K's, Q8_0's 0.29 of
    Q6_K's."""
    w = np.random.default_rng(3).standard_normal((64, 1024)).astype(np.float32)
    err = {k: rms(dequantize(quantize(w, k), k, w.shape), w) for k in
           ["Q4_1", "Q4_K", "Q6_K", "Q8_0"]}
    assert err["Q4_K"] <= 0.95 * err["Q4_1"]
    assert err["Q6_K"] <= 0.3 * err["Q4_K"]
    assert err["Q8_0"] <= 0.35 * err["Q6_K"]


def test_quantize_keeps_leading_dims():
    w = np.random.default_rng(4).standard_normal((2, 3, 256)).astype(np.float32)
    for kind in BLOCK_KINDS:
        raw = quantize(w, kind)
        assert raw.shape == (2, 3, row_bytes(kind, 256))
        assert dequantize(raw, kind, w.shape).shape == w.shape
        assert unpack(raw, kind, w.shape).q.shape == w.shape


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="is 36 bytes, got 35"):
        dequantize(np.zeros(35, np.uint8), "Q4_0", (1, 64))
    with pytest.raises(ValueError, match="100 columns is not a whole number of Q4_0 blocks"):
        dequantize(np.zeros(54, np.uint8), "Q4_0", (1, 100))
    with pytest.raises(ValueError, match=r"shape \(2, 96\).*Q4_K.*cols % 256 == 0"):
        unpack(np.zeros(144, np.uint8), "Q4_K", (2, 96))
    with pytest.raises(ValueError, match=r"shape \(4, 48\).*Q6_K"):
        quantize(np.zeros((4, 48), np.float32), "Q6_K")
    with pytest.raises(ValueError, match="row of 33 weights.*Q8_0"):
        row_bytes("Q8_0", 33)
    with pytest.raises(ValueError, match="unknown tensor type 'Q5_0'"):
        row_bytes("Q5_0", 32)
    with pytest.raises(ValueError, match="F16 is a plain float type"):
        unpack(np.zeros(64, np.uint8), "F16", (1, 32))
    with pytest.raises(ValueError, match="must be uint8 bytes, got float32"):
        dequantize(np.zeros(9, np.float32), "Q8_0", (1, 32))
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize(np.full((1, 32), np.nan, np.float32), "Q4_1")


# --- GGUF files: npplm.io.gguf.write, tensor_bytes, read ------------------------------------


def some_tensors():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 512)).astype(np.float32)
    return w, {
        "blk.0.attn_q.weight": ("Q4_K", quantize(w, "Q4_K"), (4, 512)),
        "blk.0.ffn_down.weight": ("Q6_K", quantize(w, "Q6_K"), (4, 512)),
        "blk.0.attn_k.weight": ("Q8_0", w, (4, 512)),  # float weights: quantised on write
        "blk.0.attn_v.weight": ("Q4_1", quantize(w, "Q4_1"), (4, 512)),
        "blk.0.attn_norm.weight": ("F32", w[0], (512,)),
        "token_embd.weight": ("F16", w, (4, 512)),
    }


METADATA = {
    "general.name": "tiny", "llama.block_count": 1, "llama.rope.freq_base": 10000.0,
    "llama.use_parallel_residual": False, "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.tokens": ["a", "b", "<s>"], "tokenizer.ggml.token_type": [1, 1, 3],
    "tokenizer.ggml.scores": [0.0, -1.5, 0.0], "tokenizer.ggml.bos_token_id": 2,
    "llama.rope.dimension_count": np.uint64(8), "llama.counts": np.array([3, -4], np.int16),
}
TYPES = {  # the GGUF value types llama.cpp's converter gives these (NumPy values: theirs)
    "general.name": "STRING", "llama.block_count": "UINT32",
    "llama.rope.freq_base": "FLOAT32", "llama.use_parallel_residual": "BOOL",
    "tokenizer.ggml.model": "STRING", "tokenizer.ggml.tokens": "ARRAY STRING",
    "tokenizer.ggml.token_type": "ARRAY INT32", "tokenizer.ggml.scores": "ARRAY FLOAT32",
    "tokenizer.ggml.bos_token_id": "UINT32", "llama.rope.dimension_count": "UINT64",
    "llama.counts": "ARRAY INT16", "general.architecture": "STRING",
    "general.quantization_version": "UINT32",
}


def test_written_file_reads_back(tmp_path):
    w, tensors = some_tensors()
    path = tmp_path / "tiny.gguf"
    gguf_io.write(path, "llama", METADATA, tensors)
    assert os.listdir(tmp_path) == ["tiny.gguf"]  # no temporary file left behind

    reader = gguf.GGUFReader(path)  # the package's reader: same types, same bytes
    assert {k: " ".join(t.name for t in f.types) for k, f in reader.fields.items()
            if not k.startswith("GGUF.")} == TYPES
    assert reader.fields["llama.counts"].contents() == [3, -4]
    assert [t.name for t in reader.tensors] == list(tensors)
    for t in reader.tensors:
        kind, data, shape = tensors[t.name]
        want = quantize(data, kind) if data.dtype != np.uint8 else data
        assert t.tensor_type == Q[kind] and tuple(reversed(t.shape.tolist())) == shape
        assert np.array_equal(np.ascontiguousarray(t.data).reshape(-1).view(np.uint8),
                              want.reshape(-1))
        # ... and tensor_bytes hands back exactly those bytes, rows first
        got_kind, raw, got_shape = gguf_io.tensor_bytes(t, path)
        assert (got_kind, got_shape) == (kind, shape)
        assert raw.shape == (*shape[:-1], row_bytes(kind, shape[-1]))
        assert np.array_equal(raw, want.reshape(raw.shape))

    meta, got = gguf_io.read(path)  # ours: dequantised, tokenizer arrays as lengths
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == 1
    assert meta["tokenizer.ggml.tokens.length"] == 3
    assert meta["llama.rope.freq_base"] == 10000.0
    for name, (kind, data, shape) in tensors.items():
        raw = quantize(data, kind) if data.dtype != np.uint8 else data
        assert np.array_equal(got[name], dequantize(raw, kind, shape)), name
    assert np.array_equal(got["blk.0.attn_norm.weight"], w[0])
    assert np.array_equal(got["blk.0.attn_q.weight"],
                          gguf_dequantize(quantize(w, "Q4_K"), Q.Q4_K))


def test_failed_write_leaves_the_old_file(tmp_path):
    _, tensors = some_tensors()
    path = tmp_path / "tiny.gguf"
    gguf_io.write(path, "llama", METADATA, tensors)
    before = path.read_bytes()
    bad = dict(tensors, extra=("Q4_K", np.zeros(10, np.uint8), (1, 256)))
    with pytest.raises(CheckpointError, match="'extra'.*10 bytes"):
        gguf_io.write(path, "llama", METADATA, bad)
    with pytest.raises(CheckpointError, match="metadata 'x'.*dict"):
        gguf_io.write(path, "llama", {"x": {}}, tensors)
    with pytest.raises(CheckpointError, match="architecture is 'gpt2'"):
        gguf_io.write(path, "llama", {"general.architecture": "gpt2"}, tensors)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["tiny.gguf"]
