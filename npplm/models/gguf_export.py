"""Write a LLaMA-family model to one GGUF file: llama.cpp's format, quantised by us.

The inverse of llama.py's `read_gguf`, and what llama.cpp's convert_hf_to_gguf.py followed
by `llama-quantize --pure` produce: one file holding the hyperparameters, the tokenizer
(npplm/tokenizers/gguf_vocab.py), the chat template and every weight, its matrices in one
block format (npplm/quantization/formats.py). `npplm chat --model FILE.gguf`, llama.cpp
and transformers (`from_pretrained(folder, gguf_file=name)`) read the result.

    write_gguf(model, tokenizer, path, kind="Q8_0") -> ExportSummary

The families, a table by class (any other class: ValueError naming the supported ones):

    LlamaForCausalLM   architecture "llama": q_proj and k_proj rows permuted to llama.cpp's
                       rotary order (llama.permute_rotary; llama.py's docstring derives it)
    Qwen2ForCausalLM   architecture "qwen2": rows as Hugging Face stores them (llama.cpp
                       rotates Qwen2's halves as Hugging Face does: qwen2.py's docstring),
                       and the q, k, v biases blk.N.attn_{q,k,v}.bias

Tensor names are llama.py's key map read backwards (GGUF_TOP_KEYS, GGUF_LAYER_KEYS):
model.layers.3.mlp.up_proj.weight -> blk.3.ffn_up.weight. A tied LM head is written once,
as token_embd.weight, and no output.weight (its absence is what tells every reader it is
tied).

Types, tensor by tensor:
  - 1-D tensors (the RMSNorm gains, Qwen2's biases) stay F32, as llama.cpp keeps them.
  - Every matrix, the embedding and the LM head included, is stored as `kind`: one type
    for all, as `llama-quantize --pure` does (without --pure, llama.cpp keeps the output
    matrix at Q6_K and mixes types across layers; we do not).
  - The fallback. A block never spans two rows, so a row length (the matrix's C, its
    input width) must be a whole number of blocks: 32 weights for Q8_0, Q4_0 and Q4_1,
    256 for the K-quants. A matrix whose width does not allow `kind` is stored as:
        Q4_K -> Q4_1    (llama.cpp falls back to Q5_0, which npplm does not implement;
                         Q4_1 is the nearest type we have, 5 bits per weight)
        Q6_K -> Q8_0    (as llama.cpp)
    and, when even that width is not a whole number of 32-weight blocks, F16 (as
    llama.cpp). SmolLM2's width 576 = 2.25 x 256, so its Q4_K file is Q4_1 throughout
    but its MLP's down projection (width 1536 = 6 x 256); the summary lists each fallback.

The metadata: general.architecture, general.name, general.file_type (llama.cpp's
LlamaFileType number for `kind`: Q8_0 7, Q4_0 2, Q4_1 3, Q4_K 14 (Q4_K_S, the all-Q4_K
mix), Q6_K 18), general.quantization_version 2; and under "{arch}.": vocab_size,
context_length, embedding_length, block_count, feed_forward_length, attention.head_count,
attention.head_count_kv, attention.key_length, attention.value_length (D),
attention.layer_norm_rms_epsilon, rope.freq_base and rope.dimension_count (D: transformers
reads LLaMA's head dim there). Refused (ValueError): rope scaling (LLaMA-3.1's "llama3",
which llama.cpp stores as a rope_freqs tensor our reader refuses). The tokenizer's entries
come from gguf_vocab.to_gguf, its bos and eos ids from the tokenizer's roles (GGUF has one
of each, and every reader takes them from there), or, for a tokenizer naming no such
token, from the model's config.

The model must be float32 (loaded with dequantize=True): a model whose layers are already
block-quantised (QuantizedLinear, from a GGUF file loaded for inference) is refused with
a message saying so, rather than silently re-quantising the dequantised blocks. Loading a
GGUF file with dequantize=True and writing it again is allowed: each block is quantised a
second time, which adds the new type's error to the old one (`npplm quantize` says so).
"""

import collections
import dataclasses
import pathlib

import numpy as np

from npplm.io import gguf
from npplm.models.llama import GGUF_LAYER_KEYS, GGUF_TOP_KEYS, LlamaForCausalLM, permute_rotary
from npplm.models.qwen2 import GGUF_LAYOUT as QWEN2_LAYOUT
from npplm.models.qwen2 import Qwen2ForCausalLM
from npplm.quantization import formats
from npplm.quantization.linear import QuantizedEmbedding, QuantizedLinear
from npplm.tokenizers.gguf_vocab import to_gguf

# The families: class -> (architecture name, whether q/k rows are permuted).
FAMILIES = {
    LlamaForCausalLM: ("llama", True),
    Qwen2ForCausalLM: (QWEN2_LAYOUT["arch"], QWEN2_LAYOUT["permuted"]),
}
# The types `kind` may name, and llama.cpp's general.file_type for a file of each.
FILE_TYPES = {"Q8_0": 7, "Q4_0": 2, "Q4_1": 3, "Q4_K": 14, "Q6_K": 18}
# A matrix whose width is not whole blocks of `kind`: the type it gets instead (then F16).
FALLBACK = {"Q4_K": "Q4_1", "Q6_K": "Q8_0"}

# Hugging Face key -> GGUF name: llama.py's map read backwards.
_TOP_NAMES = {f"{hf}.weight": f"{name}.weight" for name, hf in GGUF_TOP_KEYS.items()}
_LAYER_NAMES = {hf: name for name, hf in GGUF_LAYER_KEYS.items()}


@dataclasses.dataclass
class ExportSummary:
    """What write_gguf wrote."""

    path: pathlib.Path
    arch: str  # "llama" or "qwen2"
    kind: str  # the type asked for ("Q4_K")
    types: dict  # {type name: number of tensors written as it}
    fallbacks: list  # [(tensor name, type used instead of kind)]
    nbytes: int  # the file's size

    def line(self):
        """One line: "wrote F.gguf: llama Q4_K, 19 tensors (Q4_K 10, Q4_1 4, F32 5), 3.2
        MB; width not a multiple of 256: 4 matrices as Q4_1"."""
        counts = ", ".join(f"{t} {n}" for t, n in self.types.items())
        text = (f"wrote {self.path}: {self.arch} {self.kind}, {sum(self.types.values())} "
                f"tensors ({counts}), {self.nbytes / 1e6:.1f} MB")
        if self.fallbacks:
            used = collections.Counter(t for _, t in self.fallbacks)
            block = formats.FORMATS[self.kind].block
            text += (f"; width not a multiple of {block}: " + ", ".join(
                f"{n} {'matrix' if n == 1 else 'matrices'} as {t}" for t, n in used.items()))
        return text


def gguf_name(key):
    """Hugging Face key -> GGUF tensor name ("model.layers.3.self_attn.q_proj.bias" ->
    "blk.3.attn_q.bias"); KeyError for a key outside the map."""
    if key in _TOP_NAMES:
        return _TOP_NAMES[key]
    parts = key.split(".")  # model, layers, N, module..., weight|bias
    if parts[:2] != ["model", "layers"] or len(parts) < 5:
        raise KeyError(key)
    module = _LAYER_NAMES[".".join(parts[3:-1])]
    return f"blk.{parts[2]}.{module}.{parts[-1]}"


def tensor_type(kind, shape):
    """The type a tensor of `shape` is written as for a file of `kind` (module docstring):
    F32 for 1-D, else kind, its FALLBACK, or F16, whichever first takes whole blocks."""
    if len(shape) == 1:
        return "F32"
    for candidate in (kind, FALLBACK.get(kind), "F16"):
        if candidate is not None and shape[-1] % formats.FORMATS[candidate].block == 0:
            return candidate
    raise AssertionError("F16 takes any width")


def _family(model):
    if type(model) not in FAMILIES:
        supported = ", ".join(cls.__name__ for cls in FAMILIES)
        raise ValueError(f"cannot write a {type(model).__name__} to GGUF: npplm writes "
                         f"{supported}")
    return FAMILIES[type(model)]


def _check_float(model):
    for name, module in model.named_modules():
        if isinstance(module, (QuantizedLinear, QuantizedEmbedding)):
            raise ValueError(f"the model's {name} is already block-quantised "
                             f"({module.weight.kind}): load it with dequantize=True to "
                             "write it again")


def metadata(model, arch, kind, name):
    """The general.* and {arch}.* metadata of a model (module docstring)."""
    c = model.config
    if c.rope_parameters is not None:
        raise ValueError(f"rope scaling {c.rope_parameters.get('rope_type')!r} cannot be "
                         "written: npplm's GGUF reader does not implement it")
    return {
        "general.type": "model",
        "general.name": name,
        "general.file_type": FILE_TYPES[kind],
        f"{arch}.vocab_size": c.vocab_size,
        f"{arch}.context_length": c.max_position_embeddings,
        f"{arch}.embedding_length": c.hidden_size,
        f"{arch}.block_count": c.num_hidden_layers,
        f"{arch}.feed_forward_length": c.intermediate_size,
        f"{arch}.attention.head_count": c.num_attention_heads,
        f"{arch}.attention.head_count_kv": c.num_key_value_heads,
        f"{arch}.attention.key_length": c.head_dim,
        f"{arch}.attention.value_length": c.head_dim,
        f"{arch}.attention.layer_norm_rms_epsilon": float(c.rms_norm_eps),
        f"{arch}.rope.freq_base": float(c.rope_theta),
        f"{arch}.rope.dimension_count": c.head_dim,
    }


def tensors(model, permuted, kind):
    """{GGUF name: (type, float32 array, shape)} of a model's weights, q/k rows permuted
    for llama.cpp when `permuted`, the LM head left out when tied."""
    c = model.config
    state = model.checkpoint_state()  # tied weights once
    if c.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    out = {}
    for key, value in state.items():
        w = np.asarray(value, dtype=np.float32)
        if permuted and key.endswith("q_proj.weight"):
            w = permute_rotary(w, c.num_attention_heads)  # HF halves -> adjacent pairs
        elif permuted and key.endswith("k_proj.weight"):
            w = permute_rotary(w, c.num_key_value_heads)
        out[gguf_name(key)] = (tensor_type(kind, w.shape), w, w.shape)
    return out


def write_gguf(model, tokenizer, path, kind="Q8_0", name=None):
    """Write `model` (LlamaForCausalLM or Qwen2ForCausalLM, float32) and its tokenizer to
    the GGUF file `path`, its matrices as `kind` ("Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K";
    lower case too), atomically. name: general.name (default: the file's stem).

    Returns an ExportSummary: the tensor count per type, the fallbacks (matrices whose
    width does not allow `kind`: module docstring), the file's size. ValueError for a
    family, a type, a tokenizer or a model state that cannot be written."""
    arch, permuted = _family(model)
    kind = str(kind).upper()
    if kind not in FILE_TYPES:
        raise ValueError(f"quantisation type {kind.lower()!r} is not written by npplm "
                         f"(types: {', '.join(k.lower() for k in FILE_TYPES)})")
    _check_float(model)
    path = pathlib.Path(path)
    meta = metadata(model, arch, kind, name or path.stem)
    meta.update(to_gguf(tokenizer, model.config.vocab_size))
    for role in ("bos", "eos"):  # a tokenizer naming no such token: the config's id
        config_id = getattr(model.config, f"{role}_token_id")
        if config_id is not None:
            meta.setdefault(f"tokenizer.ggml.{role}_token_id", config_id)
    weights = tensors(model, permuted, kind)
    gguf.write(path, arch, meta, weights)
    fallbacks = [(n, t) for n, (t, w, _) in weights.items() if w.ndim == 2 and t != kind]
    types = collections.Counter(t for t, _, _ in weights.values())
    return ExportSummary(path, arch, kind, dict(types), fallbacks, path.stat().st_size)
