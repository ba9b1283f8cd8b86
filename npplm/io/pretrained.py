"""A Hugging Face checkpoint folder: `config.json` and the weights, never a pickle.

The weights are `model.safetensors`, or shards listed in `model.safetensors.index.json`
(its "weight_map" names each key's file). Which model class a folder holds is the models'
business (npplm.from_pretrained reads `architectures` from the config); this file only
reads and writes the folder.
"""

import json
import pathlib

from npplm.io.files import PICKLE_SUFFIXES, CheckpointError, refuse_pickle, write_json
from npplm.io.safetensors import read_safetensors, write_safetensors


def read_weights(directory):
    """{key: array} of every weight in a checkpoint folder, sharded or not."""
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
    """The folder's config.json as a dict."""
    path = pathlib.Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def write_pretrained(directory, config, state):
    """Write config.json (a dict) and model.safetensors ({key: array}) into `directory`."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(state, directory / "model.safetensors")
    write_json(config, directory / "config.json")
