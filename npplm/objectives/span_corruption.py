"""T5's pre-training objective, span corruption, as a data collator.

Paper: Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer" (arXiv:1910.10683), section 3.1.4 and the span-length study of 3.3.4. The
reference we follow step for step is `span_corruption` of the original `t5` library
(t5/data/preprocessors.py): its mask, `random_spans_noise_mask`, then
`noise_span_to_unique_sentinel` on the inputs and `nonnoise_span_to_unique_sentinel` on the
targets. Hugging Face's `run_t5_mlm_flax.py` ports it to NumPy.

Some tokens of the input are "noise". Each maximal run of noise tokens (a span) is replaced in
the encoder input by one sentinel; in the decoder target each maximal run of kept tokens is,
so the target lists every sentinel followed by the span it replaced:

    original  Thank you for inviting me to your party last week
    inputs    Thank you <extra_id_0> me to your party last <extra_id_1>
    targets   <extra_id_0> for inviting <extra_id_1> week

T5's mask always begins with kept tokens and ends with noise (see below), so the targets
end with the last span: no sentinel follows it. The paper's Figure 2 ends with one
("<X> for inviting <Y> last <Z>") because its mask ends on the kept word "week", a mask
T5's `random_spans_noise_mask` never draws; `apply_noise_mask` on that mask gives the
figure, as T5's code would. Sentinels are numbered in order of appearance, 0, 1, 2, ...;
T5's tokenizer gives `<extra_id_i>` the id `vocab_size - 1 - i` (see `t5_sentinel_ids`).

How many tokens are noise, and in how many spans (`span_counts`), for a sequence of length L:

    noise tokens  N = round(float32(L) * float32(noise_density)), clamped to [1, L - 1]
    spans         k = round(float32(N) / float32(mean_span_length)), clamped to [1, L - N]

computed in float32 and rounded half to even, as T5 does
(`tf.round(tf.cast(length, tf.float32) * noise_density)`, and the same cast for the spans).
float64 arithmetic rounds differently at some lengths: at L = 190 and density 0.15 the
float32 product is 28.500002, so N = 29, where the float64 product 28.5 rounds to 28
(Hugging Face's port and T5's own `random_spans_helper`, which sizes the inputs, compute in
float64 and say 28). The lower clamps keep the objective non-trivial; the upper ones keep a
kept token before every span (T5 does not clamp k from above, and breaks when k > L - N;
Hugging Face clamps with min(N, L - N)).

Where the spans go (`random_spans_noise_mask`): the N noise tokens are cut into k non-empty
segments uniformly at random, the L - N kept tokens likewise, and the segments alternate,
kept first:  kept_0 noise_0 kept_1 noise_1 ... kept_{k-1} noise_{k-1}.

Without `random_roll` the mask therefore always keeps token 0 and always corrupts token L - 1
(T5's default, and what its `span_corruption` uses; with one span, only the tail is ever
masked). `random_roll=True` (T5's option of the same name) rotates the mask by a uniform
offset, which makes every position noise with the same probability N / L; a span may then
wrap around the end and become two, so the span count is k or k + 1, and the mask may end on
kept tokens (the targets then close with a sentinel) or begin with noise.

The one departure from T5's code: when a mask begins with noise (only with `random_roll`),
T5's targets, which number the runs of kept tokens, would start with the first span's
tokens and no sentinel, and give every later span the sentinel of the span before it, out of
step with the inputs. We head every span with the sentinel that replaced it in the inputs.
On every mask that begins with a kept token, ours and T5's targets are the same.

Lengths (with k the actual number of spans, and e = 1 when an EOS id is given, else 0):

    len(inputs)  = L - N + k + e
    len(targets) = N + k + e            (+1, a closing sentinel, when the mask ends on kept
                                         tokens: only with random_roll)

`corrupted_lengths` returns these for the default (roll-free) mask; at the defaults they are
T5's `random_spans_helper` lengths wherever float32 and float64 agree on N.
"""

from collections.abc import Sequence

import numpy as np

LABEL_PAD_ID = -100  # ignored by the cross-entropy loss, as in PyTorch and Hugging Face


def t5_sentinel_ids(vocab_size, count=100):
    """T5's sentinel ids: `<extra_id_i>` is `vocab_size - 1 - i`, for i in [0, count).

    T5's SentencePiece vocabulary has 32000 pieces plus 100 extra ids, vocab_size 32100, so
    `<extra_id_0>` is 32099 and `<extra_id_99>` is 32000.
    """
    if count < 1 or count > vocab_size:
        raise ValueError(f"count must be in [1, vocab_size={vocab_size}], got {count}")
    return [vocab_size - 1 - i for i in range(count)]


def span_counts(length, noise_density=0.15, mean_span_length=3.0):
    """(noise tokens N, spans k) for a sequence of `length` tokens; formulas in the module doc.

    Both are rounded from float32 arithmetic, as T5 does: np.rint rounds half to even, as
    tf.round does, and a float32 times (or over) a float32 stays float32 in NumPy.
    """
    _check_arguments(length, noise_density, mean_span_length)
    num_noise = int(np.rint(np.float32(length) * np.float32(noise_density)))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = int(np.rint(np.float32(num_noise) / np.float32(mean_span_length)))
    num_spans = min(max(num_spans, 1), length - num_noise)
    return num_noise, num_spans


def corrupted_lengths(length, noise_density=0.15, mean_span_length=3.0, eos=False):
    """(len(inputs), len(targets)) that `span_corruption` returns without `random_roll`.

    inputs = L - N + k (+1 EOS); targets = N + k (+1 EOS). See the module docstring.
    """
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    e = int(bool(eos))
    return length - num_noise + num_spans + e, num_noise + num_spans + e


def random_segmentation(num_items, num_segments, rng):
    """Lengths of a uniformly random cut of `num_items` items into `num_segments` non-empty runs.

    As T5's `_random_segmentation`: of the num_items - 1 gaps between items, choose
    num_segments - 1 to start a new segment, by shuffling an indicator vector. Returns an int64
    array of shape (num_segments,) summing to num_items.
    """
    if not 1 <= num_segments <= num_items:
        raise ValueError(f"need 1 <= num_segments <= num_items, got {num_segments} segments "
                         f"of {num_items} items")
    gap_starts_segment = np.arange(num_items - 1) < num_segments - 1
    gap_starts_segment = rng.permutation(gap_starts_segment)
    # Item 0 starts segment 0; item i + 1 starts a new one when gap i was chosen.
    first_in_segment = np.concatenate([[False], gap_starts_segment])
    segment_id = np.cumsum(first_in_segment)  # (num_items,)
    return np.bincount(segment_id, minlength=num_segments).astype(np.int64)


def random_spans_noise_mask(length, rng, noise_density=0.15, mean_span_length=3.0,
                            random_roll=False):
    """Boolean mask of shape (length,), True on noise tokens, laid out as T5 does.

    Exactly N = span_counts(...)[0] entries are True, in k = span_counts(...)[1] runs (k or
    k + 1 with `random_roll`); runs of kept and noise tokens alternate, kept first (before
    the roll).
    """
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    noise_lengths = random_segmentation(num_noise, num_spans, rng)  # (k,)
    kept_lengths = random_segmentation(length - num_noise, num_spans, rng)  # (k,)
    # (k, 2) -> (2k,): kept_0, noise_0, kept_1, noise_1, ...
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(2 * num_spans)
    is_noise = np.tile([False, True], num_spans)  # (2k,), the kind of each run
    mask = np.repeat(is_noise, interleaved)  # (length,)
    if random_roll:
        mask = np.roll(mask, rng.integers(length))
    return mask


def span_corruption(tokens, rng, noise_density=0.15, mean_span_length=3.0, *, sentinel_ids,
                    eos_id=None, random_roll=False):
    """Corrupt one sequence: returns (inputs, targets), int64 arrays of shape (L-N+k+e,) and
    (N+k+e,) (one more in the targets when a rolled mask ends on kept tokens).

    tokens: 1-D sequence of L >= 2 token ids, none of them a sentinel.
    rng: a `numpy.random.Generator` (or a seed for `numpy.random.default_rng`).
    sentinel_ids: ids of `<extra_id_0>`, `<extra_id_1>`, ... in that order (a list, or
        `t5_sentinel_ids(vocab_size)`); at least k are needed (k + 1 with random_roll).
    eos_id: appended to both inputs and targets when given, as T5 does.

    inputs: the tokens with span j replaced by sentinel_ids[j]. targets: for each span j,
    sentinel_ids[j] then the span's tokens; then EOS. See `apply_noise_mask`.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    if tokens.size == 0:
        raise ValueError("tokens is empty: span corruption needs at least 2 tokens")
    tokens = tokens.astype(np.int64)
    sentinels = _check_sentinels(sentinel_ids)
    _check_not_sentinel(tokens, sentinels, "token")  # fail before drawing any randomness
    rng = np.random.default_rng(rng)

    mask = random_spans_noise_mask(len(tokens), rng, noise_density, mean_span_length,
                                   random_roll)  # (L,)
    return apply_noise_mask(tokens, mask, sentinels, eos_id)


def apply_noise_mask(tokens, mask, sentinel_ids, eos_id=None):
    """(inputs, targets) for a given noise mask: T5's `noise_span_to_unique_sentinel` on
    the inputs, and on the targets its mirror image, `nonnoise_span_to_unique_sentinel`.

    tokens: (L,) int ids; mask: (L,) bool, True on noise. Inputs: each noise span replaced
    by its sentinel, sentinel_ids[j] for the j-th span. Targets: each span headed by the
    same sentinel, then, if the mask ends on kept tokens, sentinel_ids[k] for that last run
    of kept tokens (T5 gives every run of kept tokens a sentinel). With T5's mask (kept
    first, noise last) the targets are "<X> span_0 <Y> span_1 ..." and nothing after the
    last span; with the paper's Figure 2 mask, "Thank you [for inviting] me to your party
    [last] week" gives inputs "Thank you <X> me to your party <Y> week" and targets
    "<X> for inviting <Y> last <Z>". A mask that begins with noise is where we depart from
    T5, whose target sentinels would then be out of step (module docstring).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tokens.shape:
        raise ValueError(f"mask shape {mask.shape} differs from tokens shape {tokens.shape}")
    sentinels = _check_sentinels(sentinel_ids)
    _check_not_sentinel(tokens, sentinels, "token")
    if eos_id is not None:
        _check_not_sentinel(np.array([eos_id]), sentinels, "eos_id")
    # A span starts where noise follows a kept token (or the sequence start).
    span_start = mask & ~np.concatenate([[False], mask[:-1]])  # (L,)
    num_spans = int(span_start.sum())
    closing = int(mask.size > 0 and not mask[-1])  # a last run of kept tokens: one more
    if num_spans + closing > len(sentinels):
        raise ValueError(f"{num_spans} noise spans need {num_spans + closing} sentinel ids "
                         f"(one per span{' and a closing one' if closing else ''}), but only "
                         f"{len(sentinels)} were given")
    span_index = np.cumsum(span_start) - 1  # (L,), which span each noise token is in

    # Inputs: kept tokens, and one sentinel where each span starts; other noise tokens dropped.
    inputs = np.where(span_start, sentinels[span_index], tokens)[~mask | span_start]
    # Targets: the mirror image, each noise span headed by its sentinel.
    heads = sentinels[span_index[span_start]]  # (k,)
    noise = tokens[mask]  # (N,)
    # Insert heads[j] before the first token of span j; positions counted in `noise`.
    targets = np.insert(noise, np.flatnonzero(span_start[mask]), heads)
    targets = np.concatenate([targets, sentinels[num_spans:num_spans + closing]])
    if eos_id is not None:
        inputs = np.append(inputs, np.int64(eos_id))
        targets = np.append(targets, np.int64(eos_id))
    return inputs.astype(np.int64), targets.astype(np.int64)


class SpanCorruptionCollator:
    """Span-corrupt a batch of sequences and pad it into T5 encoder-decoder training arrays.

    Calling it on B sequences returns a dict of int64 arrays:
      input_ids       (B, T)  corrupted inputs, right-padded with pad_id
      attention_mask  (B, T)  1 on real tokens, 0 on padding
      labels          (B, S)  targets, right-padded with label_pad_id (-100, which the loss
                              ignores); T5 feeds the decoder these shifted right by one
    T and S are the longest inputs and targets in the batch (or `pad_to_multiple_of` more).
    """

    def __init__(self, sentinel_ids, pad_id=0, eos_id=None, noise_density=0.15,
                 mean_span_length=3.0, label_pad_id=LABEL_PAD_ID, random_roll=False,
                 pad_to_multiple_of=None):
        self.sentinel_ids = _check_sentinels(sentinel_ids)
        _check_not_sentinel(np.array([pad_id]), self.sentinel_ids, "pad_id")
        if eos_id is not None:
            _check_not_sentinel(np.array([eos_id]), self.sentinel_ids, "eos_id")
        _check_arguments(2, noise_density, mean_span_length)
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        self.pad_id = pad_id
        self.eos_id = eos_id
        self.noise_density = noise_density
        self.mean_span_length = mean_span_length
        self.label_pad_id = label_pad_id
        self.random_roll = random_roll
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, sequences, rng):
        if len(sequences) == 0:
            raise ValueError("cannot collate an empty batch (0 sequences)")
        rng = np.random.default_rng(rng)
        pairs = [span_corruption(seq, rng, self.noise_density, self.mean_span_length,
                                 sentinel_ids=self.sentinel_ids, eos_id=self.eos_id,
                                 random_roll=self.random_roll) for seq in sequences]
        inputs = [p[0] for p in pairs]
        targets = [p[1] for p in pairs]
        input_ids = self._pad(inputs, self.pad_id)  # (B, T)
        attention_mask = self._pad([np.ones_like(x) for x in inputs], 0)  # (B, T)
        labels = self._pad(targets, self.label_pad_id)  # (B, S)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _pad(self, rows, value):
        width = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        out = np.full((len(rows), width), value, dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, :len(row)] = row
        return out


def _check_arguments(length, noise_density, mean_span_length):
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens (one noise, one kept), "
                         f"got length {length}")
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
    if not mean_span_length > 0:
        raise ValueError(f"mean_span_length must be > 0, got {mean_span_length}")


def _check_sentinels(sentinel_ids):
    if isinstance(sentinel_ids, (str, bytes)) or not isinstance(sentinel_ids,
                                                                 Sequence | np.ndarray):
        raise TypeError(f"sentinel_ids must be a sequence of ints, e.g. "
                        f"t5_sentinel_ids(vocab_size); got {sentinel_ids!r}")
    sentinels = np.asarray(sentinel_ids, dtype=np.int64).reshape(-1)
    if sentinels.size == 0:
        raise ValueError("sentinel_ids is empty; at least one is needed (one per span)")
    if (sentinels < 0).any():
        raise ValueError(f"sentinel ids must be >= 0, got {int(sentinels.min())}")
    values, counts = np.unique(sentinels, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"sentinel id {int(values[counts > 1][0])} is repeated")
    return sentinels


def _check_not_sentinel(ids, sentinels, what):
    clash = np.isin(ids, sentinels)
    if clash.any():
        value = int(ids[clash][0])
        index = int(np.flatnonzero(sentinels == value)[0])
        raise ValueError(f"{what} {value} is also sentinel <extra_id_{index}>; sentinels "
                         f"must not occur in the text or as pad/eos ids")
