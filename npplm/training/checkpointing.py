"""Training checkpoints: everything a killed run needs to continue exactly where it stopped.

A run folder holds numbered checkpoints and a pointer to the newest:

    run/checkpoints/step-000400/
        config.json, model.safetensors   the model (save_pretrained: npplm.from_pretrained
                                         loads it, and transformers too but for GLM)
        tokenizer.json, ...              the run's tokenizer, so that the folder alone is
                                         enough for npplm generate / eval
        optimizer.safetensors            the optimizer's per-parameter arrays (Adam moments)
        trainer_state.json               step, data position, RNG states, optimizer settings
                                         and step count, the run's settings
    run/checkpoints/latest.json          {"step": 400, "path": "step-000400"}

What "exactly" takes, item by item:
    model weights and optimizer moments   the arrays (safetensors)
    schedule position                     the step: the schedule is a function of it
    data position                         examples served so far: BlockOrder is a function
                                          of (seed, position)
    batch randomness (masks, spans)       drawn from default_rng([seed, step, micro]): a
                                          function of the step again
    dropout                               each Dropout module's generator state, saved as
                                          it stood at the start of the step being saved

Atomicity: a checkpoint is written into `step-000400.tmp-<pid>/` and renamed to
`step-000400/` once complete (a rename within one folder is atomic on POSIX), and only
then is latest.json replaced (itself written to a temporary file and renamed). A run killed
at any instant leaves either the previous checkpoint as latest, or the new one, never half
of one; stale `.tmp-*` folders are ignored and removed by the next save.
"""

import dataclasses
import json
import os
import pathlib
import shutil

import numpy as np

from npplm.io import (
    CheckpointError,
    read_config,
    read_safetensors,
    read_weights,
    write_json,
    write_safetensors,
)
from npplm.layers import Dropout

LATEST = "latest.json"


def checkpoint_name(step):
    return f"step-{step:06d}"


def dropout_modules(model):
    """(name, Dropout) for every dropout of the model, in a fixed order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Dropout)]


def rng_states(model):
    """{module name: its generator's state (a JSON-able dict)} for every Dropout."""
    return {name: m.rng.bit_generator.state for name, m in dropout_modules(model)}


def set_rng_states(model, states):
    modules = dict(dropout_modules(model))
    if set(states) != set(modules):
        raise CheckpointError(f"the checkpoint's dropout modules {sorted(states)} are not "
                              f"the model's {sorted(modules)}")
    for name, state in states.items():
        modules[name].rng.bit_generator.state = state


def load_model_weights(model, directory):
    """Load the weights save_pretrained wrote into `model`, after checking it is the same
    model: a checkpoint of another architecture or config raises CheckpointError naming
    the difference."""
    directory = pathlib.Path(directory)
    saved = read_config(directory)
    names = saved.get("architectures") or []
    if names and names[0] != type(model).__name__:
        raise CheckpointError(f"{directory} is a checkpoint of {names[0]}, not of "
                              f"{type(model).__name__}")
    own = model.config.to_hf()
    # A field the checkpoint lacks was added to the config class after it was written: it
    # holds the field's default (GLM's deepnorm_constants, position_encoding, ...).
    defaults = {f.name: f.default for f in dataclasses.fields(model.config)
                if f.default is not dataclasses.MISSING}
    # model_type only names the family, which the architecture has checked (and GLM's
    # changed from "glm" to "npplm-glm": older GLM runs still resume).
    differ = sorted(k for k in (set(own) | set(saved)) - {"architectures", "model_type"}
                    if _plain(saved.get(k, defaults.get(k))) != _plain(own.get(k)))
    if differ:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, model {own.get(k)!r}"
                           for k in differ[:6])
        raise CheckpointError(f"{directory} is a checkpoint of another model ({detail})")
    model.load_weights(read_weights(directory))


def _plain(value):
    """Tuples and lists compare equal once through JSON."""
    return json.loads(json.dumps(value))


def save_checkpoint(run_dir, step, model, optimizer, state, keep=2, tokenizer=None,
                    extra=None, replace=False):
    """Write checkpoint `step` atomically, point latest.json at it, keep the newest `keep`.

    `state` is the JSON part (trainer_state.json): the trainer gives step, position, RNG
    states and its settings. extra(folder), when given, writes more into the checkpoint's
    folder before it is complete (RLHF's critic). replace=True writes it even where
    checkpoint `step` exists (a spike rewind moves its data position): the new one is
    complete before the old one is moved aside. Returns the checkpoint's folder.
    """
    folder = pathlib.Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / checkpoint_name(step)
    for stale in folder.glob("*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if replace or not final.exists():
        tmp = folder / f"{checkpoint_name(step)}.tmp-{os.getpid()}"
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save(tmp)
        write_safetensors(optimizer.state_arrays(), tmp / "optimizer.safetensors",
                          metadata={"format": "npplm-optimizer"})
        write_json({**state, "optimizer": optimizer.state_meta()}, tmp / "trainer_state.json")
        if extra is not None:
            extra(tmp)
        if final.exists():  # replace: the old one aside (a .tmp- name), the new one in
            old = folder / f"{checkpoint_name(step)}.tmp-old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    write_json({"step": step, "path": final.name}, folder / LATEST)
    steps = checkpoint_steps(run_dir)
    for old in steps[:-keep] if keep else []:
        if old != step:
            shutil.rmtree(folder / checkpoint_name(old), ignore_errors=True)
    return final


def checkpoint_steps(run_dir):
    """The steps of a run's complete checkpoints, in order."""
    folder = pathlib.Path(run_dir) / "checkpoints"
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("step-*")
                  if p.is_dir() and ".tmp-" not in p.name)


def latest_checkpoint(run_dir):
    """The folder of the newest complete checkpoint of a run, or None."""
    folder = pathlib.Path(run_dir) / "checkpoints"
    pointer = folder / LATEST
    if pointer.is_file():
        try:
            path = folder / json.loads(pointer.read_text())["path"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{pointer} is malformed: {e}") from None
        if path.is_dir():
            return path
    complete = sorted(p for p in folder.glob("step-*") if p.is_dir() and ".tmp-" not in p.name)
    return complete[-1] if complete else None


def check_same_run(path, saved, config, keys):
    """CheckpointError when checkpoint `path`, trained with the settings `saved` (a dict),
    differs from `config` in one of `keys`: resuming would not continue the same run."""
    for key in keys:
        if saved.get(key) != getattr(config, key):
            raise CheckpointError(f"{path} was trained with {key}={saved.get(key)!r}, this run "
                                  f"asks for {getattr(config, key)!r}: resuming would not "
                                  "continue the same run")


def load_checkpoint(path, model, optimizer):
    """Restore model weights, optimizer state and dropout generators from checkpoint
    `path`; return its trainer_state.json."""
    path = pathlib.Path(path)
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a training checkpoint: no trainer_state.json")
    try:
        state = json.loads(state_file.read_text())
    except ValueError as e:
        raise CheckpointError(f"{state_file} is not valid JSON: {e}") from None
    load_model_weights(model, path)
    arrays = read_safetensors(path / "optimizer.safetensors")
    try:
        optimizer.load_state({k: np.asarray(v) for k, v in arrays.items()}, state["optimizer"])
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    set_rng_states(model, state["rng"])
    return state
