"""Run folders: what `npplm train` writes, how a model inside one is named, and its lock.

A run folder is an npplm run when it holds `run.json` (the recipe and the train config,
written before anything else of the run); everything else in it the run wrote:

    run/run.json          {"recipe": {...}, "train_config": {...}}
    run/tokenizer/        the tokenizer the run trained (or was given)
    run/checkpoints/      numbered checkpoints and latest.json (checkpointing.py)
    run/metrics.jsonl, run/loss.png
    run/.lock             while a process trains in it: that process's pid

Three rules keep a folder safe from a typo:
  - `clear` empties a folder only when it is an npplm run; a folder with other files
    is refused, never emptied, whatever the flags.
  - the caller validates every argument (and builds the run in memory) before `clear`.
  - `RunLock` is held for the whole run: a second process is refused with the holder's
    pid. The lock is an flock on `.lock`, so it dies with its process (a kill -9 leaves
    no stale lock); the pid in the file is only for the message.

`resolve_model(path)` turns the one way every command names a model into a path that
`npplm.from_pretrained` and `npplm.load_tokenizer` read: a run folder (its newest
checkpoint), a checkpoint folder, a Hugging Face folder, or a .gguf file.
`load_model(path)` loads the model and its tokenizer from there; `resolve_tokenizer(path)`
does the same naming for `npplm train --tokenizer`.

`claimed(path, request)` holds a folder for a run by these rules (pretrain.py and the
alignment stages use it).
"""

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import shutil

from npplm.io import CheckpointError, write_json
from npplm.training.checkpointing import latest_checkpoint

RUN_FILE = "run.json"
LOCK_FILE = ".lock"


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (another run's, not a run, locked)."""


def is_run(path):
    """Whether `path` is an npplm run folder (it holds run.json)."""
    return (pathlib.Path(path) / RUN_FILE).is_file()


def read_recipe(path):
    """run.json of a run folder: {"recipe": ..., "train_config": ...}."""
    file = pathlib.Path(path) / RUN_FILE
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path} is not an npplm run folder: it has no {RUN_FILE}") \
            from None
    except ValueError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None


def check_usable(path, overwrite=False):
    """Refuse a --out folder that is neither absent, empty, nor an npplm run: nothing
    in a folder npplm did not make is ever touched. Returns whether it holds a run."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out {path} is a file, not a folder")
    if is_run(path):
        return True
    others = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE) \
        if path.is_dir() else []
    if others:
        flag = " (--overwrite only ever replaces an npplm run)" if overwrite else ""
        raise RunFolderError(f"--out {path} holds files that are not an npplm run "
                             f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}): "
                             f"choose another folder{flag}")
    return False


def clear(path):
    """Remove everything an npplm run wrote in `path`, keeping the folder and its lock.

    Refuses (RunFolderError) unless `path` holds run.json: only runs are ever cleared."""
    path = pathlib.Path(path)
    if not is_run(path):
        raise RunFolderError(f"{path} is not an npplm run folder (no {RUN_FILE}): "
                             "it is not removed")
    (path / RUN_FILE).unlink()  # first: a clear killed halfway leaves no half run
    for entry in path.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class RunLock:
    """An exclusive lock on a run folder for as long as the `with` block runs.

        with RunLock("runs/gpt-default"):   # RunFolderError if another process holds it
            ...

    Creates the folder if needed (and removes it again on exit when the block left it
    empty and this lock created it: nothing is left behind by a run that did not start).
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.file = self.path / LOCK_FILE
        self._fd = None
        self._made_folder = False

    def __enter__(self):
        if not self.path.exists():
            self.path.mkdir(parents=True)
            self._made_folder = True
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RunFolderError(f"{self.path} is in use by another npplm process "
                                     f"(pid {self._holder()}); wait for it, or choose "
                                     "another --out") from None
            # The holder before us may have unlinked the file between our open and our
            # lock: then we hold a lock on a file nobody else can see. Try again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _holder(self):
        try:
            return self.file.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def __exit__(self, *exc):
        self.file.unlink(missing_ok=True)  # before the unlock: see the retry in __enter__
        os.close(self._fd)
        self._fd = None
        if self._made_folder and not any(self.path.iterdir()):
            self.path.rmdir()
        return False


def differences(stored, request):
    """The keys of `request` whose value differs in a stored request (keys it lacks: equal)."""
    def plain(value):
        return json.loads(json.dumps(value))

    return sorted(k for k in request if k in stored and plain(stored[k]) != plain(request[k]))


class Claim:
    """A run folder held for one run (see `claimed`): whether it resumes a run, and
    `commit(record)`, which replaces a run being overwritten and writes run.json."""

    def __init__(self, path, key, replace, resuming, log):
        self.path, self.key, self.log = path, key, log
        self.replace, self.resuming = replace, resuming

    def commit(self, record):
        """Everything is built: clear the run being replaced, then write run.json (record:
        a dict holding the request under `key`)."""
        if self.replace:
            clear(self.path)
            self.log(f"removed the previous run in {self.path} (--overwrite)")
        write_json(record, self.path / RUN_FILE)


@contextlib.contextmanager
def claimed(path, request, *, key="recipe", overwrite=False, log=print):
    """Hold the run folder `path` for a run asked for by `request` (a JSON-able dict):

        with claimed(out, request) as claim:
            ... build everything in memory (claim.resuming: reuse what the folder holds)
            claim.commit({"recipe": request, ...})   # only now is anything removed/written
            ... train

    Refuses (RunFolderError) a folder that is not absent, empty or an npplm run; one locked
    by another process; and one holding a run asked for differently (run.json[key] differs
    in a key of `request`), unless overwrite, when that run is replaced at commit."""
    path = pathlib.Path(path)
    check_usable(path, overwrite)
    with RunLock(path):
        replace = resuming = False
        if is_run(path):
            differ = differences(read_recipe(path).get(key, {}), request)
            if overwrite:
                replace = True
            elif differ:
                raise RunFolderError(f"{path} holds another run (it differs in "
                                     f"{', '.join(differ)}): pass --out for a new folder, or "
                                     "--overwrite to replace it")
            else:
                resuming = True
        yield Claim(path, key, replace, resuming, log)


def resolve_model(path):
    """The folder or file that holds the model `path` names, for npplm.from_pretrained.

        a run folder (has checkpoints/)  -> its newest complete checkpoint
        a checkpoint or Hugging Face folder (has config.json), a .gguf file -> itself

    Raises FileNotFoundError / CheckpointError naming what is missing."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--model {path}: no such file or folder")
    if path.is_file():
        if path.suffix != ".gguf":
            raise CheckpointError(f"--model {path} is a file but not a .gguf file: name a "
                                  "run folder, a checkpoint folder or a .gguf file")
        return path
    if (path / "checkpoints").is_dir():
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise CheckpointError(f"--model {path} is a run folder without any complete "
                                  "checkpoint yet")
        return checkpoint
    if not (path / "config.json").is_file():
        what = "a run folder that has not saved a checkpoint yet" if is_run(path) else \
            "neither a run folder (checkpoints/) nor a model folder (config.json)"
        raise CheckpointError(f"--model {path} is {what}")
    return path


def load_model(path, log=None, dequantize=False):
    """(model, tokenizer) of the model `path` names (resolve_model: a run folder, a
    checkpoint or Hugging Face folder, a GGUF file); log(message) says which is loaded.
    A GGUF file's quantised weights stay quantised (inference) unless dequantize=True
    (training: the alignment stages)."""
    from npplm.models import from_pretrained
    from npplm.tokenizers import load_tokenizer

    location = resolve_model(path)
    if log is not None:
        log(f"loading {location} ...")
    return from_pretrained(location, dequantize=dequantize), load_tokenizer(location)


def resolve_tokenizer(path):
    """The folder or file holding the tokenizer `path` names: a run folder's tokenizer/,
    else `path` itself (a checkpoint or Hugging Face folder, a tokenizer.json, a .gguf)."""
    path = pathlib.Path(path)
    if is_run(path) and (path / "tokenizer").is_dir():
        return path / "tokenizer"
    return path


def run_of(checkpoint):
    """The run folder a checkpoint belongs to (run/checkpoints/step-N), or None."""
    checkpoint = pathlib.Path(checkpoint)
    run = checkpoint.parent.parent
    if checkpoint.parent.name == "checkpoints" and is_run(run):
        return run
    return None
