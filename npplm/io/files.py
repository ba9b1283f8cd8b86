"""What every file format shares: the error it raises, no pickles, atomic writes.

A write goes to a temporary file in the destination's folder, then `os.replace` renames it
over the real name: a crash leaves either the old file or the new one, never half of one.
The temporary file is created 0600 by `tempfile`; before the rename it is given the mode a
plain `open(path, "w")` would have had (0666 less the umask), so that saved checkpoints
are as readable as any other file the user writes.
"""

import contextlib
import json
import os
import pathlib
import tempfile

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, truncated, or does not fit the model."""


def refuse_pickle(path):
    """Raise CheckpointError for a file whose suffix says it is a pickle."""
    path = pathlib.Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle checkpoint; npplm never loads pickles (they can run arbitrary "
            "code). Convert it to safetensors first, e.g. with transformers: "
            "AutoModel.from_pretrained(folder).save_pretrained(folder, "
            "safe_serialization=True), or with torch (weights_only=True) and "
            "safetensors.torch.save_file")


def _umask():
    mask = os.umask(0)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path`, on an error
    it is removed and `path` is left as it was."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(obj, path):
    """Write JSON atomically, keys sorted, two-space indents."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
