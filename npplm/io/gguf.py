"""GGUF, llama.cpp's single-file format: metadata and tensors, dequantised to float32.

Format: GGUF v3, https://github.com/ggml-org/ggml/blob/master/docs/gguf.md. One
little-endian file holds everything a model needs:

    magic "GGUF", version (u32), tensor count (u64), metadata count (u64)
    metadata     key/value pairs: a string key ("llama.block_count"), a type tag, a value
                 (integers, floats, bools, strings, or arrays of them). The model's
                 hyperparameters live under "<architecture>.", the tokenizer's vocabulary,
                 merges, special ids and chat template under "tokenizer."
    tensor infos name, number of dims, dims in ggml order (fastest-varying first, so a
                 PyTorch (out, in) matrix is listed as [in, out]), type tag, data offset
    padding      to `general.alignment` (32 bytes by default)
    tensor data  each tensor at its offset, rows stored one after the other

We parse the header with the `gguf` package's GGUFReader (it memory-maps the file) and
turn the raw bytes into float32 ourselves, here in NumPy. Types understood:

    F32, F16   plain IEEE floats
    Q8_0       blocks of 32 weights, 34 bytes:  d (fp16) | q[32] (int8)       w = d q
    Q4_0       blocks of 32 weights, 18 bytes:  d (fp16) | 16 bytes of nibbles
               w = d (q - 8), q in 0..15
    Q4_1       blocks of 32 weights, 20 bytes:  d (fp16) | m (fp16) | 16 bytes of nibbles
               w = d q + m,   q in 0..15
    In both 4-bit formats byte i of the block holds weight i in its low nibble and weight
    i + 16 in its high nibble. Blocks run along a row (the `in` axis), never across rows.
Others (the K-quants, IQ-quants, BF16, ...) raise CheckpointError naming the type.

Tensor names stay llama.cpp's ("blk.3.attn_q.weight"); the family that reads the file maps
them to its own keys (LLaMA: `LlamaForCausalLM.from_gguf` in npplm/models/llama.py, which
also undoes llama.cpp's rotary row order).
"""

import pathlib

import numpy as np

from npplm.io.files import CheckpointError

BLOCK = 32  # weights per block in Q8_0, Q4_0 and Q4_1


# --- dequantisation -----------------------------------------------------------------------


def _blocks(raw, block_bytes, name):
    """Raw bytes (any shape, uint8) -> (n_blocks, block_bytes)."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if raw.size % block_bytes:
        raise CheckpointError(f"tensor {name!r}: {raw.size} bytes is not a whole number of "
                              f"{block_bytes}-byte blocks")
    return raw.reshape(-1, block_bytes)


def _fp16(blocks, start):
    """The little-endian float16 at byte `start` of every block, as (n_blocks, 1) float32."""
    return blocks[:, start:start + 2].copy().view("<f2").astype(np.float32)


def _nibbles(qs):
    """(n_blocks, 16) bytes -> (n_blocks, 32) values 0..15: low nibbles are weights 0..15,
    high nibbles weights 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)


def dequantize_q8_0(raw, name="?"):
    """Q8_0 -> float32, flat: w = d * q with q int8, one fp16 scale d per 32 weights."""
    b = _blocks(raw, 2 + BLOCK, name)  # (N, 34)
    d = _fp16(b, 0)  # (N, 1)
    q = b[:, 2:].view(np.int8).astype(np.float32)  # (N, 32)
    return (d * q).reshape(-1)


def dequantize_q4_0(raw, name="?"):
    """Q4_0 -> float32, flat: w = d * (q - 8) with q in 0..15 (a symmetric 4-bit code)."""
    b = _blocks(raw, 2 + BLOCK // 2, name)  # (N, 18)
    d = _fp16(b, 0)  # (N, 1)
    return (d * (_nibbles(b[:, 2:]) - 8)).reshape(-1)  # (N, 32) -> flat


def dequantize_q4_1(raw, name="?"):
    """Q4_1 -> float32, flat: w = d * q + m with q in 0..15 (an affine 4-bit code)."""
    b = _blocks(raw, 4 + BLOCK // 2, name)  # (N, 20)
    d, m = _fp16(b, 0), _fp16(b, 2)  # (N, 1) each
    return (d * _nibbles(b[:, 4:]) + m).reshape(-1)  # (N, 32) -> flat


DEQUANTIZERS = {"Q8_0": dequantize_q8_0, "Q4_0": dequantize_q4_0, "Q4_1": dequantize_q4_1}


def tensor_to_float32(tensor, path="?"):
    """A GGUFReader tensor -> float32 array in NumPy (row-major) order.

    GGUF lists dims fastest-first ([in, out]); NumPy's shape is the reverse ((out, in)).
    """
    kind = tensor.tensor_type.name
    shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml [in, out] -> (out, in)
    if kind in ("F32", "F16"):
        data = np.asarray(tensor.data, dtype=np.float32)
    elif kind in DEQUANTIZERS:
        data = DEQUANTIZERS[kind](tensor.data, tensor.name)
    else:
        raise CheckpointError(f"{path}: tensor {tensor.name!r} has quantisation type {kind}, "
                              f"which npplm does not read (supported: F32, F16, "
                              f"{', '.join(DEQUANTIZERS)})")
    if data.size != int(np.prod(shape)):
        raise CheckpointError(f"{path}: tensor {tensor.name!r} holds {data.size} values, its "
                              f"shape {shape} needs {int(np.prod(shape))} (truncated file?)")
    return data.reshape(shape)


# --- the file -----------------------------------------------------------------------------


def open_reader(path):
    """A GGUFReader over `path`; a missing, truncated or malformed file -> CheckpointError."""
    from gguf import GGUFReader

    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such GGUF file: {path}")
    try:
        reader = GGUFReader(path)
    except Exception as e:  # the reader raises ValueError, KeyError, struct errors ...
        raise CheckpointError(f"{path} is not a readable GGUF file (truncated or malformed):"
                              f" {type(e).__name__}: {e}") from None
    size = path.stat().st_size
    for t in reader.tensors:  # the reader slices its memory map without checking the end
        if t.data_offset + t.n_bytes > size or t.data.nbytes != t.n_bytes:
            raise CheckpointError(f"{path} is truncated: tensor {t.name!r} needs bytes up to "
                                  f"{t.data_offset + t.n_bytes}, the file has {size}")
    return reader


def _value(field):
    """A metadata field as a Python value (str, int, float, bool, or a list of them)."""
    value = field.contents()
    return value.item() if hasattr(value, "item") else value


def read_metadata(reader):
    """{key: value} of the metadata entries, except the GGUF.* header fields and the
    tokenizer's long arrays (vocabulary, merges: slow to decode, and a model needs only
    their length, kept as "tokenizer.ggml.tokens.length")."""
    from gguf import GGUFValueType

    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key.startswith("tokenizer.") and field.types[0] == GGUFValueType.ARRAY:
            meta[key + ".length"] = len(field.data)  # one entry of field.data per element
            continue
        meta[key] = _value(field)
    return meta


def read(path):
    """(metadata, {tensor name: float32 array}) of a GGUF file, names as the file has them.

    Metadata as `read_metadata`; every tensor dequantised (`tensor_to_float32`).
    """
    reader = open_reader(path)
    tensors = {t.name: tensor_to_float32(t, path) for t in reader.tensors}
    return read_metadata(reader), tensors


def tokenizer_metadata(path):
    """The tokenizer of a GGUF file as a dict: every `tokenizer.ggml.*` key (model, pre,
    tokens, token_type, merges, bos/eos/unknown/padding_token_id, add_bos_token, ...) and
    `tokenizer.chat_template` (a Jinja string) when present, under their GGUF key names."""
    reader = open_reader(path)
    return {k: _value(f) for k, f in reader.fields.items() if k.startswith("tokenizer.")}
