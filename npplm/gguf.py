"""GGUF: llama.cpp's single-file checkpoints, read into npplm's LLaMA.

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

Tensor names (llama.cpp) -> Hugging Face keys (npplm.models.llama):
    token_embd            model.embed_tokens          output_norm   model.norm
    output                lm_head (absent: tied to token_embd)
    blk.N.attn_norm       model.layers.N.input_layernorm
    blk.N.attn_q/k/v      model.layers.N.self_attn.q_proj/k_proj/v_proj
    blk.N.attn_output     model.layers.N.self_attn.o_proj
    blk.N.ffn_norm        model.layers.N.post_attention_layernorm
    blk.N.ffn_gate/up/down  model.layers.N.mlp.gate_proj/up_proj/down_proj

The rotary permutation. Hugging Face's LLaMA rotates the pairs (x[j], x[j + D/2]) of each
head (`rotate_half`); llama.cpp rotates adjacent pairs (x[2j], x[2j + 1]). So its converter
(convert_hf_to_gguf.py, `LlamaModel.permute`) reorders the rows of q_proj and k_proj,
head by head, so that HF row h D + i D/2 + j (half i in {0, 1}, j < D/2) lands on GGUF
row h D + 2 j + i:

    w.reshape(n, 2, D/2, C).swapaxes(1, 2).reshape(n D, C)       (n = H for q, K for k)

Reading back we apply the inverse, `unpermute_rotary`: view GGUF rows as (n, D/2, 2, C),
swap the same two axes back to (n, 2, D/2, C), flatten. (Swapping two axes is its own
inverse; only the reshape before the swap differs.) tests/models/test_gguf.py checks it
by exact round trip and by logits against transformers.

Not supported (CheckpointError): architectures other than "llama"; rope scaling stored
in the file (`llama.rope.scaling.type` other than none, a `rope_freqs` tensor: LLaMA-3.1);
per-layer head counts; any tensor name not listed above.
"""

import pathlib
import re

import numpy as np

from npplm.checkpoints import CheckpointError

BLOCK = 32  # weights per block in Q8_0, Q4_0 and Q4_1

# GGUF tensor name (after "blk.N.") -> Hugging Face key under "model.layers.N."
_LAYER_KEYS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_KEYS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
             "output": "lm_head"}


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


_DEQUANTIZERS = {"Q8_0": dequantize_q8_0, "Q4_0": dequantize_q4_0, "Q4_1": dequantize_q4_1}


def tensor_to_float32(tensor, path="?"):
    """A GGUFReader tensor -> float32 array in NumPy (row-major) order.

    GGUF lists dims fastest-first ([in, out]); NumPy's shape is the reverse ((out, in)).
    """
    kind = tensor.tensor_type.name
    shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml [in, out] -> (out, in)
    if kind in ("F32", "F16"):
        data = np.asarray(tensor.data, dtype=np.float32)
    elif kind in _DEQUANTIZERS:
        data = _DEQUANTIZERS[kind](tensor.data, tensor.name)
    else:
        raise CheckpointError(f"{path}: tensor {tensor.name!r} has quantisation type {kind}, "
                              f"which npplm does not read (supported: F32, F16, "
                              f"{', '.join(_DEQUANTIZERS)})")
    if data.size != int(np.prod(shape)):
        raise CheckpointError(f"{path}: tensor {tensor.name!r} holds {data.size} values, its "
                              f"shape {shape} needs {int(np.prod(shape))} (truncated file?)")
    return data.reshape(shape)


def unpermute_rotary(w, n_head):
    """Undo llama.cpp's q/k row permutation: (n D, C) in GGUF order -> Hugging Face order.

    GGUF row h D + 2 j + i holds HF row h D + i D/2 + j (see the module docstring).
    """
    rows, C = w.shape
    D = rows // n_head
    w = w.reshape(n_head, D // 2, 2, C)  # (n D, C) -> (n, D/2, 2, C): adjacent pairs
    return w.swapaxes(1, 2).reshape(rows, C)  # -> (n, 2, D/2, C): halves -> (n D, C)


def permute_rotary(w, n_head):
    """llama.cpp's converter permutation (HF order -> GGUF order), the inverse of the above.
    Used by the tests to write GGUF files as convert_hf_to_gguf.py does."""
    rows, C = w.shape
    D = rows // n_head
    w = w.reshape(n_head, 2, D // 2, C)  # (n D, C) -> (n, 2, D/2, C): halves
    return w.swapaxes(1, 2).reshape(rows, C)  # -> (n, D/2, 2, C): adjacent pairs


# --- the file -----------------------------------------------------------------------------


def open_gguf(path):
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
    tokenizer's long arrays (vocabulary, merges: slow to decode, and the model needs only
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


def tokenizer_metadata(path):
    """The tokenizer of a GGUF file as a dict: every `tokenizer.ggml.*` key (model, pre,
    tokens, token_type, merges, bos/eos/unknown/padding_token_id, add_bos_token, ...) and
    `tokenizer.chat_template` (a Jinja string) when present, under their GGUF key names."""
    reader = open_gguf(path)
    return {k: _value(f) for k, f in reader.fields.items() if k.startswith("tokenizer.")}


def config_from_metadata(meta, tensor_names, path="?"):
    """A LlamaConfig from GGUF metadata (and which tensors exist: a missing `output.weight`
    means the LM head is tied to the embedding)."""
    from npplm.models.llama import LlamaConfig

    arch = meta.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: general.architecture is {arch!r}; npplm reads GGUF "
                              "files of the 'llama' architecture only")
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling != "none" or "rope_freqs.weight" in tensor_names:
        raise CheckpointError(f"{path}: rope scaling in GGUF (type {scaling!r}, or a "
                              "rope_freqs tensor) is not implemented")

    def get(key, default=None):
        value = meta.get("llama." + key, default)
        if value is None:
            raise CheckpointError(f"{path}: metadata key 'llama.{key}' is missing")
        if isinstance(value, list):
            raise CheckpointError(f"{path}: llama.{key} is a per-layer list; not supported")
        return value

    vocab = meta.get("tokenizer.ggml.tokens.length") or get("vocab_size")
    heads = int(get("attention.head_count"))
    pad = meta.get("tokenizer.ggml.padding_token_id")
    kwargs = dict(
        vocab_size=int(vocab),
        hidden_size=int(get("embedding_length")),
        intermediate_size=int(get("feed_forward_length")),
        num_hidden_layers=int(get("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(get("attention.head_count_kv", heads)),
        head_dim=meta.get("llama.attention.key_length"),
        max_position_embeddings=int(get("context_length")),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=pad if pad is not None and pad < vocab else None,
        tie_word_embeddings="output.weight" not in tensor_names,
    )
    try:
        return LlamaConfig(**kwargs)
    except ValueError as e:
        raise CheckpointError(f"{path}: its metadata gives an invalid LlamaConfig: {e}") from None


def hf_key(name, path="?"):
    """GGUF tensor name -> Hugging Face key ("blk.3.attn_q.weight" ->
    "model.layers.3.self_attn.q_proj.weight")."""
    base, dot, suffix = name.rpartition(".")
    if suffix != "weight" or not dot:
        raise CheckpointError(f"{path}: unexpected tensor {name!r} (LLaMA has weights only)")
    if base in _TOP_KEYS:
        return _TOP_KEYS[base] + ".weight"
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if match is None or match.group(2) not in _LAYER_KEYS:
        raise CheckpointError(f"{path}: unexpected tensor {name!r} for the llama architecture")
    return f"model.layers.{match.group(1)}.{_LAYER_KEYS[match.group(2)]}.weight"


def read_gguf(path):
    """(LlamaConfig, {Hugging Face key: float32 array}) from a llama GGUF file, with q_proj
    and k_proj rows put back in Hugging Face's order."""
    reader = open_gguf(path)
    meta = read_metadata(reader)
    names = [t.name for t in reader.tensors]
    config = config_from_metadata(meta, names, path)
    state = {}
    for tensor in reader.tensors:
        key = hf_key(tensor.name, path)
        w = tensor_to_float32(tensor, path)
        if key.endswith("q_proj.weight"):
            w = unpermute_rotary(w, config.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            w = unpermute_rotary(w, config.num_key_value_heads)
        state[key] = w
    return config, state


def load_gguf(path):
    """A LlamaForCausalLM (eval mode, float32) from a llama-architecture GGUF file."""
    from npplm.models.llama import LlamaForCausalLM

    config, state = read_gguf(path)
    return LlamaForCausalLM(config).load_weights(state).eval()
