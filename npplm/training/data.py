"""Training data: documents in, fixed-length blocks out, served in a reproducible order.

The pipeline, in the order the trainer runs it:

    documents   texts: every text file under --data, or the standard library's source
    split       a train / validation split by whole documents (no document in both)
    tokenize    each document to ids with the run's tokenizer
    pack        the documents of each split, joined by a separator token, cut into blocks
                of block_size tokens (the last, shorter piece is dropped)
    serve       blocks in a fresh random order every epoch, B at a time (BlockOrder)

Packing is GPT-2's and RoBERTa's ("FULL-SENTENCES": contiguous text that may cross
document boundaries, a separator marking each boundary) rather than one padded document
per row: no compute is spent on padding, and every block has the same number of tokens
to score, which is what makes gradient accumulation exact (see trainer.py).

The default corpus, used when no --data is given, is one every Python installation has:
the standard library's own `.py` files, read in sorted order. Its exact content depends
on the Python version, so two machines with the same Python get the same corpus.
"""

import pathlib
import sysconfig

import numpy as np

# Files read from a --data folder: plain text and source code, not binaries.
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".json", ".csv", ".tsv", ".html", ".xml",
                 ".c", ".h", ".js", ".ts", ".java", ".go", ".rs", ".tex", ".yaml", ".yml")


class DataError(ValueError):
    """The training data is missing, empty, or too small for the run."""


def first_chars(texts, max_chars=None):
    """The texts (any iterable, read lazily) up to max_chars characters in all: the last
    one cut, blank ones skipped, none read after the limit (None: every text)."""
    docs, total = [], 0
    for text in texts:
        if max_chars is not None:
            text = text[:max(0, max_chars - total)]
        if text.strip():
            docs.append(text)
            total += len(text)
        if max_chars is not None and total >= max_chars:
            break
    return docs


def stdlib_documents(max_chars=None):
    """The standard library's top-level .py files, sorted by name: one document each.

    `max_chars` stops reading once that many characters are collected (the last document
    is cut), which keeps quick runs quick.
    """
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    docs = first_chars((path.read_text(encoding="utf-8", errors="replace")
                        for path in sorted(root.glob("*.py"))), max_chars)
    if not docs:
        raise DataError(f"no .py files found in the standard library folder {root}")
    return docs


def read_documents(path, max_chars=None):
    """Documents from `path`: a text file is one document; a folder gives one document per
    text file under it (suffixes in TEXT_SUFFIXES, sorted by path, recursively)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"--data {path}: the folder holds no text files (looked for "
                            f"{', '.join(TEXT_SUFFIXES)})")
    else:
        files = [path]
    docs = first_chars((_read_text(file) for file in files), max_chars)
    if not docs:
        raise DataError(f"--data {path} is empty: no document has any text")
    return docs


def _read_text(file):
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"--data {file} is not UTF-8 text: {e}") from None


def split_documents(docs, val_fraction=0.1, seed=0, min_val_docs=1):
    """(train, validation) documents: a seeded shuffle, then documents go to validation
    until they hold `val_fraction` of the characters and number at least `min_val_docs`
    (NSP needs two: its negatives come from another document). With a single document,
    its last `val_fraction` of characters (cut at a line break) is the validation
    document."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must lie strictly between 0 and 1")
    if len(docs) == 1:
        text = docs[0]
        cut = text.rfind("\n", 0, int(len(text) * (1 - val_fraction))) + 1
        cut = cut or int(len(text) * (1 - val_fraction))
        return [text[:cut]], [text[cut:]]
    order = np.random.default_rng(seed).permutation(len(docs))
    target = val_fraction * sum(len(d) for d in docs)
    val, size = [], 0
    for i in order:
        if (size >= target and len(val) >= min_val_docs) or len(val) == len(docs) - 1:
            break
        val.append(int(i))
        size += len(docs[i])
    chosen = set(val)
    return ([d for i, d in enumerate(docs) if i not in chosen],
            [docs[i] for i in sorted(chosen)])


def tokenize_documents(tokenizer, docs, add_special_tokens=False):
    """Each document to a 1-D int64 array of ids; add_special_tokens: with the tokenizer's
    template (LLaMA's <s> before each document), else none."""
    return [np.asarray(tokenizer.encode(d, add_special_tokens=add_special_tokens).ids,
                       dtype=np.int64) for d in docs]


def join(documents, separator_id=None):
    """The documents (1-D id arrays) as one stream, `separator_id` after each."""
    parts = []
    for doc in documents:
        parts.append(doc)
        if separator_id is not None:
            parts.append(np.array([separator_id], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def pack(documents, block_size, separator_id=None, what="corpus"):
    """Join the documents (1-D id arrays), `separator_id` after each, and cut the stream
    into (N, block_size) blocks; the remainder shorter than a block is dropped.

    Raises DataError when the documents do not fill a single block.
    """
    if block_size < 2:
        raise ValueError(f"block_size={block_size} must be at least 2")
    stream = join(documents, separator_id)
    n = len(stream) // block_size
    if n == 0:
        raise DataError(f"the {what} has {len(stream)} tokens, fewer than one block of "
                        f"block_size={block_size}: give more text or a smaller --block-size")
    return stream[:n * block_size].reshape(n, block_size)  # (N, T)


class BlockOrder:
    """Which examples each batch holds: a fresh seeded permutation every epoch.

    The order is a pure function of (seed, position): `position` counts the examples
    served so far, so a resumed run that knows its position serves the same examples the
    uninterrupted run would have. Epoch e's order is permutation(N) drawn from
    default_rng([seed, e]); a batch that crosses an epoch boundary takes the end of one
    epoch and the start of the next.
    """

    def __init__(self, n_examples, seed=0):
        if n_examples < 1:
            raise DataError("there are no training examples")
        self.n, self.seed = n_examples, seed
        self._epoch, self._order = None, None

    def order(self, epoch):
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._order

    def indices(self, position, count):
        """The indices of examples position .. position + count - 1 of the stream."""
        out = np.empty(count, dtype=np.int64)
        for k in range(count):
            epoch, offset = divmod(position + k, self.n)
            out[k] = self.order(epoch)[offset]
        return out
