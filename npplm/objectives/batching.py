"""What every collator checks before it draws a random number, and right-padding.

The objectives' collators all take "examples" (1-D arrays of token ids) and return a batch of
int64 arrays. The checks are shared so that the same mistake reads the same way whichever
objective caught it, and they run before any randomness is drawn, so a refused batch leaves
nothing half-done.
"""

import numbers

import numpy as np

LABEL_PAD_ID = -100  # labels the cross-entropy ignores, as in PyTorch and Hugging Face


def check_probability(name, value, low_open=False, high_open=False):
    """`value` as a float, or ValueError naming `name` and the value when it is not a
    probability: in [0, 1], with the ends excluded where `low_open` / `high_open`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    low_ok = value > 0.0 if low_open else value >= 0.0
    high_ok = value < 1.0 if high_open else value <= 1.0
    if not (low_ok and high_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_positive_int(name, value, minimum=1):
    """`value` as an int, or an error naming `name` when it is not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_token_id(name, value, vocab_size):
    """`value` as an int, or an error naming `name` when it is not an id in [0, vocab_size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer token id, got {value!r}")
    if not 0 <= value < vocab_size:
        raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab_size})")
    return int(value)


def check_examples(examples, vocab_size, max_length=None, min_length=1):
    """The batch as a list of 1-D int64 arrays, each of min_length..max_length ids in [0, V).

    Errors name the example (its index in the batch) and the offending value.
    """
    if isinstance(examples, np.ndarray) and examples.ndim == 2:
        examples = list(examples)  # a (B, T) array of equal-length examples is fine too
    if len(examples) == 0:
        raise ValueError("cannot collate an empty batch (0 examples)")
    rows = []
    for i, example in enumerate(examples):
        row = np.asarray(example)
        if row.ndim != 1:
            raise ValueError(f"example {i} must be a 1-D array of token ids, got shape "
                             f"{row.shape}")
        if row.size == 0:
            raise ValueError(f"example {i} is empty (0 tokens)")
        if not np.issubdtype(row.dtype, np.integer):
            raise TypeError(f"example {i} must hold integer token ids, got dtype {row.dtype}")
        if row.size < min_length:
            raise ValueError(f"example {i} has {row.size} token(s); this objective needs at "
                             f"least {min_length}")
        if max_length is not None and row.size > max_length:
            raise ValueError(f"example {i} has {row.size} tokens, more than max_length="
                             f"{max_length}; split the text into blocks of at most "
                             f"{max_length} before collating")
        bad = (row < 0) | (row >= vocab_size)
        if bad.any():
            raise ValueError(f"example {i} holds token id {int(row[bad][0])}, outside the "
                             f"vocabulary [0, {vocab_size})")
        rows.append(row.astype(np.int64))
    return rows


def pad_rows(rows, value):
    """Stack 1-D rows into a (B, T) int64 array, T the longest row, right-padded with value."""
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out
