"""One .safetensors file: {name: array} in and out, float16 and bfloat16 widened to float32.

The format: an 8-byte little-endian header length N, N bytes of JSON giving each tensor's
dtype, shape and [begin, end) byte offsets, then the raw data. We read and write it with
the `safetensors` library, except bfloat16, which NumPy cannot hold: its 16 bits are the
top half of a float32, so it is read here directly and widened by a shift.
"""

import json
import pathlib
import struct

import numpy as np

from npplm.io.files import CheckpointError, atomic_path, refuse_pickle

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    """{name: array} from one .safetensors file; float16 and bfloat16 become float32."""
    path = pathlib.Path(path)
    refuse_pickle(path)
    if not path.is_file():
        raise CheckpointError(f"no such weights file: {path}")
    header = read_header(path)
    out = {}
    from safetensors import safe_open

    names = [n for n in header if n != "__metadata__"]
    plain = [n for n in names if header[n]["dtype"] != "BF16"]
    try:
        with safe_open(str(path), framework="numpy") as f:
            for name in plain:
                out[name] = f.get_tensor(name)
    except Exception as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    bf16 = [n for n in names if header[n]["dtype"] == "BF16"]
    if bf16:
        data_start = 8 + struct.unpack("<Q", path.open("rb").read(8))[0]
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        for name in bf16:
            begin, end = header[name]["data_offsets"]
            bits = np.frombuffer(raw[data_start + begin:data_start + end], dtype="<u2")
            out[name] = (bits.astype(np.uint32) << 16).view(np.float32).reshape(
                header[name]["shape"])
    return {n: (a.astype(np.float32) if a.dtype == np.float16 else a) for n, a in out.items()}


def read_header(path):
    """The JSON header of a .safetensors file, checked against the file's size."""
    path = pathlib.Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path} is truncated: {size} bytes, not even a header")
        n = struct.unpack("<Q", raw)[0]
        if 8 + n > size:
            raise CheckpointError(f"{path} is truncated: its header claims {n} bytes but the "
                                  f"file has {size}")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise CheckpointError(f"{path} has a malformed safetensors header: {e}") from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
              default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path} is truncated: the tensors need {8 + n + end} bytes, "
                              f"the file has {size}")
    for name, t in header.items():
        if name != "__metadata__" and t["dtype"] not in DTYPES and t["dtype"] != "BF16":
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {t['dtype']}")
    return header


def write_safetensors(state, path, metadata=None):
    """Write {name: array} atomically (a temporary file in the same folder, then a rename)."""
    from safetensors.numpy import save_file

    path = pathlib.Path(path)
    refuse_pickle(path)
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp,
                  metadata=metadata or {"format": "pt"})
