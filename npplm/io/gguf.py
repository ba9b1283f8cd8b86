"""GGUF, llama.cpp's single-file format: metadata and tensors, read and written.

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
write with its GGUFWriter. The tensor types, their block layouts, and the conversions
between bytes, integer codes and float32 live in npplm/quantization/formats.py: F32, F16,
BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K. `tensor_bytes` hands out a tensor's raw blocks
(for kernels that compute on them), `tensor_to_float32` dequantises. Other types (Q5_K,
the IQ-quants, ...) raise CheckpointError naming the type.

Tensor names stay llama.cpp's ("blk.3.attn_q.weight"); the family that reads the file maps
them to its own keys (LLaMA: `LlamaForCausalLM.from_gguf` in npplm/models/llama.py, which
also undoes llama.cpp's rotary row order).
"""

import math
import pathlib
import typing

import numpy as np

from npplm.io.files import CheckpointError, atomic_path
from npplm.quantization import formats

# --- tensors ------------------------------------------------------------------------------


def tensor_bytes(tensor, path="?"):
    """A GGUFReader tensor -> (kind, raw, shape): its type name ("Q4_K", "F32", ...), its
    bytes as uint8 (rows, row_bytes), and its shape (rows, cols) in NumPy order. No
    dequantisation: `formats.unpack(raw, kind, shape)` or `formats.dequantize` read it.

    GGUF lists dims fastest-first ([in, out]); NumPy's shape is the reverse ((out, in)).
    A tensor of other than two dims keeps its dims: raw is then (*shape[:-1], row_bytes).
    """
    kind = tensor.tensor_type.name
    shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml [in, out] -> (out, in)
    if kind not in formats.FORMATS:
        raise CheckpointError(f"{path}: tensor {tensor.name!r} has quantisation type {kind}, "
                              f"which npplm does not read (supported: "
                              f"{', '.join(formats.FORMATS)})")
    try:
        per_row = formats.row_bytes(kind, shape[-1])
    except ValueError as e:
        raise CheckpointError(f"{path}: tensor {tensor.name!r}: {e}") from None
    need = math.prod(shape[:-1]) * per_row
    raw = np.ascontiguousarray(tensor.data).reshape(-1).view(np.uint8)  # F32/F16: as bytes
    if raw.size != need:
        raise CheckpointError(f"{path}: tensor {tensor.name!r} holds {raw.size} bytes, its "
                              f"shape {shape} as {kind} needs {need} (truncated file?)")
    return kind, raw.reshape(*shape[:-1], per_row), shape


def tensor_to_float32(tensor, path="?"):
    """A GGUFReader tensor -> float32 array in NumPy (row-major) order, dequantised."""
    kind, raw, shape = tensor_bytes(tensor, path)
    return formats.dequantize(raw, kind, shape)


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


class _Stored(typing.NamedTuple):
    """A tensor's entry in the file's table and its bytes in a memory map: what
    `tensor_bytes` reads of a GGUFReader tensor, without the reader."""

    name: str
    tensor_type: object  # gguf.GGMLQuantizationType
    shape: tuple  # ggml order, fastest-varying first
    data: np.ndarray  # uint8 bytes, a slice of the memory map


def read_tensors(path):
    """(metadata, tensor names, an iterator of (name, kind, raw, shape)): a GGUF file's
    tensors one at a time, as `tensor_bytes` gives them, for a loader that turns each into
    what it keeps before it reads the next (npplm/models/llama.py `read_gguf`).

    GGUFReader parses every metadata entry into NumPy objects, a tokenizer's 100K strings
    and merges included: about 150 MB for SmolLM2's vocabulary, some of which the heap
    keeps after they are freed. So the reader gives its table of tensors and is dropped
    before any tensor is read; the bytes come from a memory map of the file.
    """
    reader = open_reader(path)
    meta = read_metadata(reader)
    table = [(t.name, t.tensor_type, tuple(int(n) for n in t.shape), int(t.data_offset),
              int(t.n_bytes)) for t in reader.tensors]
    del reader

    def tensors():
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
        for name, tensor_type, shape, offset, n in table:
            stored = _Stored(name, tensor_type, shape, mapped[offset:offset + n])
            yield (name, *tensor_bytes(stored, path))

    return meta, [entry[0] for entry in table], tensors()


def tokenizer_metadata(path):
    """The tokenizer of a GGUF file as a dict: every `tokenizer.ggml.*` key (model, pre,
    tokens, token_type, merges, bos/eos/unknown/padding_token_id, add_bos_token, ...) and
    `tokenizer.chat_template` (a Jinja string) when present, under their GGUF key names."""
    reader = open_reader(path)
    return {k: _value(f) for k, f in reader.fields.items() if k.startswith("tokenizer.")}


# --- writing ------------------------------------------------------------------------------

# NumPy scalar and array dtypes -> GGUFValueType names: a NumPy value keeps its own width.
_NUMPY_VALUE_TYPES = {"uint8": "UINT8", "int8": "INT8", "uint16": "UINT16", "int16": "INT16",
                      "uint32": "UINT32", "int32": "INT32", "uint64": "UINT64",
                      "int64": "INT64", "float32": "FLOAT32", "float64": "FLOAT64",
                      "bool": "BOOL"}


def _int_type(values, unsigned_first):
    """The GGUF integer type that holds all of `values`: 32 bits where they fit (unsigned
    first for scalars, signed first for arrays, as the converter does), else 64."""
    lo, hi = min(values), max(values)
    fits = {"UINT32": 0 <= lo and hi < 2**32, "INT32": -2**31 <= lo and hi < 2**31,
            "INT64": -2**63 <= lo and hi < 2**63, "UINT64": 0 <= lo and hi < 2**64}
    order = ["UINT32", "INT32"] if unsigned_first else ["INT32", "UINT32"]
    for name in order + ["INT64", "UINT64"]:
        if fits[name]:
            return name
    raise ValueError(f"integers from {lo} to {hi} do not fit one 64-bit GGUF type")


def _scalar_type(value):
    """The GGUFValueType name of one Python or NumPy scalar, None if it has none."""
    if isinstance(value, np.generic):
        return _NUMPY_VALUE_TYPES.get(value.dtype.name)
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return "BOOL"
    if isinstance(value, int):
        return _int_type([value], unsigned_first=True)
    if isinstance(value, float):
        return "FLOAT32"
    if isinstance(value, str):
        return "STRING"
    return None


def _typed(key, value):
    """A metadata value -> (value, GGUFValueType, element type or None), typed as llama.cpp's
    convert_hf_to_gguf.py types them: a Python int as UINT32 (add_uint32: token ids, sizes;
    INT32 if negative, 64 bits if too large), a float as FLOAT32, a bool as BOOL, a str as
    STRING; a list (add_array) of ints as INT32 (token types), of floats as FLOAT32 (token
    scores), of strs as STRING (tokens, merges). NumPy scalars and 1-D arrays keep their
    dtype, for any other choice."""
    from gguf import GGUFValueType

    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.name not in _NUMPY_VALUE_TYPES:
            raise ValueError(f"metadata {key!r}: a {value.ndim}-D {value.dtype} array has no "
                             f"GGUF type (1-D arrays of bool, ints or floats do)")
        element = GGUFValueType[_NUMPY_VALUE_TYPES[value.dtype.name]]
        return value.tolist(), GGUFValueType.ARRAY, element
    if isinstance(value, (list, tuple)):
        kinds = {type(v) for v in value}
        if len(kinds) != 1 or not kinds <= {bool, int, float, str}:
            raise ValueError(f"metadata {key!r}: a list must hold one of bool, int, float or "
                             f"str, it holds {sorted(k.__name__ for k in kinds)}")
        if kinds == {int}:
            element = _int_type(value, unsigned_first=False)
        else:
            element = _scalar_type(value[0])
        return list(value), GGUFValueType.ARRAY, GGUFValueType[element]
    name = _scalar_type(value)
    if name is None:
        raise ValueError(f"metadata {key!r}: {type(value).__name__} has no GGUF type")
    return (value.item() if isinstance(value, np.generic) else value), GGUFValueType[name], None


def _tensor_raw(name, kind, data, shape):
    """A tensor to write -> its bytes (*shape[:-1], row_bytes): uint8 data are taken as
    its raw blocks, float data are quantised to `kind` here (`formats.quantize`)."""
    shape = tuple(int(n) for n in shape)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        if data.size != math.prod(shape):
            raise ValueError(f"tensor {name!r}: {data.size} values for shape {shape}")
        data = formats.quantize(data.reshape(shape), kind)
    per_row = formats.row_bytes(kind, shape[-1])
    if data.size != math.prod(shape[:-1]) * per_row:
        raise ValueError(f"tensor {name!r}: {data.size} bytes, its shape {shape} as {kind} "
                         f"needs {math.prod(shape[:-1]) * per_row}")
    return data.reshape(*shape[:-1], per_row)


def write(path, arch, metadata, tensors):
    """Write a GGUF file, atomically (a temporary file beside `path`, then os.replace).

    arch: the architecture ("llama"), written as general.architecture. metadata: {key:
    value}, typed as `_typed` says; general.quantization_version = 2 is added when absent,
    as llama.cpp's converter always writes it; an empty list is left out, as GGUFWriter's
    add_array does. tensors: {name: (kind, data, shape)}, in file order: kind a
    formats.FORMATS name, shape in NumPy order ((out, in) for a matrix), data either the
    raw blocks (uint8 (rows, row_bytes), as `tensor_bytes` gives them) or float weights,
    which are quantised to `kind` here. Bad input -> CheckpointError naming the path.
    """
    from gguf import GGMLQuantizationType, GGUFWriter

    path = pathlib.Path(path)
    meta = dict(metadata)
    if meta.pop("general.architecture", arch) != arch:
        raise CheckpointError(f"{path}: metadata general.architecture is "
                              f"{metadata['general.architecture']!r}, arch is {arch!r}")
    meta.setdefault("general.quantization_version", 2)
    try:
        typed = {k: _typed(k, v) for k, v in meta.items()
                 if not (isinstance(v, (list, tuple, np.ndarray)) and len(v) == 0)}
        raws = {name: (kind, _tensor_raw(name, kind, data, shape))
                for name, (kind, data, shape) in tensors.items()}
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    with atomic_path(path) as tmp:
        writer = GGUFWriter(tmp, arch)
        try:
            for key, (value, vtype, element) in typed.items():
                writer.add_key_value(key, value, vtype, sub_type=element)
            for name, (kind, raw) in raws.items():
                # uint8 data with raw_dtype: the writer reads the byte shape back to
                # weights itself (gguf.quants.quant_shape_from_byte_shape)
                ggml_type = GGMLQuantizationType(formats.FORMATS[kind].ggml_type)
                writer.add_tensor(name, raw, raw_dtype=ggml_type)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
