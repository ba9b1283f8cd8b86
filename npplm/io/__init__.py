"""File formats: arrays and metadata in and out. Nothing here knows a model class.

    files.py        CheckpointError, pickles refused, atomic writes (write_json)
    safetensors.py  one .safetensors file: {name: array}, float16 / bfloat16 widened
    pretrained.py   a Hugging Face checkpoint folder: config.json and its weights,
                    in one file or in shards
    gguf.py         llama.cpp's single-file format: metadata and tensors, block-quantised
                    types read as bytes (npplm/quantization/formats.py), written atomically

Each model family owns its own key map (npplm/models/): `LlamaForCausalLM.from_gguf` turns
GGUF's tensor names into LLaMA's, `npplm.from_pretrained` picks the class a folder's
config.json names.
"""

from npplm.io.files import CheckpointError, refuse_pickle, write_json
from npplm.io.pretrained import read_config, read_weights, write_pretrained
from npplm.io.safetensors import read_safetensors, write_safetensors

__all__ = ["CheckpointError", "read_config", "read_safetensors", "read_weights",
           "refuse_pickle", "write_json", "write_pretrained", "write_safetensors"]
