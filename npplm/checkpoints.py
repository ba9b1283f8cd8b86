"""Hugging Face-style checkpoints: safetensors in and out, never pickle.

A checkpoint directory holds `config.json` and the weights, either `model.safetensors` or
shards listed in `model.safetensors.index.json`. Weights stored as float16 or bfloat16 are
widened to float32 on load (NumPy has no bfloat16: its 16 bits are the top half of a
float32, so widening is a shift). Saving writes through a temporary file and a rename, so
a crash never leaves half a checkpoint under the real name.

`PreTrainedModel` is the base of every model class that can be saved and loaded. A family
sets three class attributes:
    config_class       its frozen config dataclass, with `from_hf(dict)` and `to_hf()`
    base_model_prefix  the attribute holding the backbone in task heads ("bert", ...),
                       added to or stripped from keys when a head loads a bare backbone
                       checkpoint or the other way round, as transformers does
    ignore_on_load     regexes of checkpoint keys that are not weights (buffers such as
                       `embeddings.position_ids`)
Parameter names mirror the family's checkpoint keys, so loading is an identity map.
"""

import json
import os
import pathlib
import re
import struct
import tempfile

import numpy as np

from npplm.module import Module

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, truncated, or does not fit the model."""


# --- safetensors -------------------------------------------------------------------------

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def refuse_pickle(path):
    path = pathlib.Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle checkpoint; npplm never loads pickles (they can run arbitrary "
            "code). Convert it to safetensors first, e.g. with transformers: "
            "AutoModel.from_pretrained(folder).save_pretrained(folder, "
            "safe_serialization=True), or with torch (weights_only=True) and "
            "safetensors.torch.save_file")


def read_safetensors(path):
    """{name: array} from one .safetensors file; float16 and bfloat16 become float32.

    The format: an 8-byte little-endian header length N, N bytes of JSON giving each
    tensor's dtype, shape and [begin, end) byte offsets, then the raw data. We read it with
    the `safetensors` library, except bfloat16, which NumPy cannot hold, read here directly.
    """
    path = pathlib.Path(path)
    refuse_pickle(path)
    if not path.is_file():
        raise CheckpointError(f"no such weights file: {path}")
    header = _read_header(path)
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


def _read_header(path):
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
        if name != "__metadata__" and t["dtype"] not in _DTYPES and t["dtype"] != "BF16":
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {t['dtype']}")
    return header


def write_safetensors(state, path, metadata=None):
    """Write {name: array} atomically: a temporary file in the same folder, then a rename."""
    from safetensors.numpy import save_file

    path = pathlib.Path(path)
    refuse_pickle(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp,
                  metadata=metadata or {"format": "pt"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(obj, path):
    """Write JSON atomically (temporary file, then rename)."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_weights(directory):
    """All weights of a checkpoint directory, sharded or not."""
    directory = pathlib.Path(directory)
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return read_safetensors(single)
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index} is malformed: {e}") from None
        state = {}
        for shard in shards:
            state.update(read_safetensors(directory / shard))
        return state
    if pickles:
        refuse_pickle(directory / pickles[0])
    raise CheckpointError(f"{directory} holds no model.safetensors nor "
                          "model.safetensors.index.json")


def read_config(directory):
    path = pathlib.Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


# --- the model base class ----------------------------------------------------------------


class PreTrainedModel(Module):
    """A Module with a config, loadable from and savable to Hugging Face directories."""

    config_class = None
    base_model_prefix = ""
    ignore_on_load = ()

    def load_weights(self, state):
        """Load {checkpoint key: array}, adapting the backbone prefix; errors name keys."""
        state = {k: v for k, v in state.items()
                 if not any(re.search(p, k) for p in self.ignore_on_load)}
        own = dict(self._all_named_parameters())
        prefix = self.base_model_prefix + "." if self.base_model_prefix else ""
        if prefix:
            has_prefix = any(k.startswith(prefix) for k in own)
            ckpt_prefix = any(k.startswith(prefix) for k in state)
            if has_prefix and not ckpt_prefix:  # a head loading a bare backbone checkpoint
                state = {prefix + k: v for k, v in state.items()}
            elif ckpt_prefix and not has_prefix:  # a backbone loading a head's checkpoint
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        # A tied parameter needs one of its names in the checkpoint, not all of them.
        loaded = {id(own[k]) for k in own if k in state}
        missing = sorted(k for k, p in own.items() if k not in state and id(p) not in loaded)
        unexpected = sorted(k for k in state if k not in own)
        if missing or unexpected:
            raise CheckpointError(f"checkpoint does not fit {type(self).__name__}: missing "
                                  f"keys {missing}, unexpected keys {unexpected}")
        for k, p in own.items():
            if k in state:
                value = state[k]
                if tuple(value.shape) != p.shape:
                    raise CheckpointError(f"{k!r} has shape {tuple(value.shape)} in the "
                                          f"checkpoint but {p.shape} in the model")
        self.load_state_dict({k: v for k, v in state.items()}, strict=False)
        return self

    def save_pretrained(self, directory):
        """Write config.json and model.safetensors (tied weights once), loadable by HF."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_hf()
        config["architectures"] = [type(self).__name__]
        write_safetensors(self.state_dict(remove_duplicates=True),
                          directory / "model.safetensors")
        write_json(config, directory / "config.json")

    @classmethod
    def from_pretrained(cls, directory):
        """Build this class from a checkpoint directory's config and load its weights."""
        config = cls.config_class.from_hf(read_config(directory))
        model = cls(config)
        return model.load_weights(read_weights(directory)).eval()


def from_pretrained(path):
    """Load any supported checkpoint directory, as the class its config.json names.

    A path ending in .gguf is a llama.cpp file instead, read by npplm.gguf.load_gguf.

    `architectures[0]` picks the class (BertForMaskedLM, ...); without it, the base model
    of `model_type`. A pickle file, a missing config or weights, or keys that do not fit
    raise CheckpointError naming what is wrong.
    """
    from npplm.models import ARCHITECTURES, BASE_MODELS

    path = pathlib.Path(path)
    refuse_pickle(path)
    if path.suffix == ".gguf":  # one llama.cpp file: weights, config and tokenizer together
        from npplm.gguf import load_gguf

        return load_gguf(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory")
    config = read_config(path)
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name].from_pretrained(path)
    model_type = config.get("model_type")
    if model_type in BASE_MODELS:
        return BASE_MODELS[model_type].from_pretrained(path)
    raise CheckpointError(f"{path}: unsupported model (architectures {names}, model_type "
                          f"{model_type!r}); supported architectures: "
                          f"{', '.join(sorted(ARCHITECTURES))}")
