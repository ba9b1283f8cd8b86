"""GLM's autoregressive blank infilling, and its [gMASK] variant, as a data collator.

Paper: Du, Qian, Liu, Ding, Qiu, Yang and Tang, "GLM: General Language Model Pretraining
with Autoregressive Blank Infilling" (ACL 2022), arXiv:2103.10360: section 2.1 (the
objective, "Autoregressive Blank Infilling", and its document-level variant under
"Multi-Task Pretraining") and section 2.2 (2D positional encoding, the attention mask).
Reference implementation: THUDM's GLM, `ConstructBlockStrategy` in `blocklm_utils.py`
(`sample_spans`, `sample_span_in_document`, `make_block_data`, and the generation branch of
`construct_blocks`). We follow the paper; where the paper is silent and THUDM's choice would
change what the model is taught, an option gives THUDM's choice; the differences that remain
are listed at the end, each with its reason.

The layout of one example (Part A, Part B, 2D positions, targets) is built by
`npplm.models.glm.blank_infilling_inputs`, whose docstring draws it; this module decides
which spans to blank and batches the result. For x = x1 .. x6 and spans {x3}, {x5 x6}:

    input_ids    x1 x2 [M] x4 [M] | [S] x5 x6 [S] x3 | pad        Part A | Part B | padding
    labels        -  -   -  -   - |  x5 x6 [E] x3 [E] |  -         -100 shown as -
    positions     0  1   2  3   4 |  4  4  4  2  2    |  0
    block pos.    0  0   0  0   0 |  1  2  3  1  2    |  0
    attention_mask = sep = 5 (the length of Part A)

Which spans (section 2.1, "the 15% ratio is critical for good performance on downstream NLU
tasks"), among the m = n - keep_first - keep_last tokens that may be blanked (m = n by
default; see "Reserved ends"):
  - span lengths are drawn from Poisson(lambda = 3), repeatedly, until the spans cover at
    least 15% of the tokens (mask_ratio): ceil(0.15 m) tokens or more. A blank holds at least
    one token, so a zero draw is excluded: the lengths follow the zero-truncated Poisson,
    P(l) = lambda^l e^-lambda / (l! (1 - e^-lambda)), l >= 1, of mean
    lambda / (1 - e^-lambda) ~ 3.157. A length is also capped by the room left, so that every
    span fits; for m in the hundreds the cap never binds.
  - the spans are shuffled and placed uniformly at random among all the ways to lay them
    out with at least one unmasked token between two spans (THUDM keeps the same gap).
  - Part B holds the spans in a random order (the paper's permutation, so that the model
    learns the spans' dependencies in every order), each as [S] + span, with the span +
    [E] as targets.

Reserved ends (keep_first, keep_last; both 0 by default). THUDM's samples are
[CLS] text ... and its `sample_span_in_document` never blanks the [CLS] nor the sample's
last token (an end-of-document token, or the last token of a cut document). Ours carry
neither: GLM's tokenizer template adds no special token (npplm.tokenizers.templates.GLM)
and the trainer packs GLM's blocks without a separator (npplm.training.recipe,
make_examples), so the first and last tokens of an example are ordinary text. THUDM
blanks its own first text token (the one after [CLS]), and its last one too when an
end-of-document token follows it. For examples built as THUDM's are, keep_first=1,
keep_last=1 keeps the [MASK] spans off the first and the last token, as THUDM does.

[gMASK], the document-level objective (section 2.1, "Multi-Task Pretraining"): "a single
span whose length is sampled from a uniform distribution over 50%-100% of the original
length". We draw the length l uniformly among the integers
ceil(0.5 n) .. n - keep_first - max(keep_last, 1), so that at least one unreserved token
is left to condition on (n - 1 by default; n - 2 with THUDM's reserved ends, THUDM's own
bound). With probability gmask_tail_prob the span is the tail (n - l, n), which is how GLM
generates long text (section 2.3 appends the mask to the given context); otherwise it sits
at a uniform position inside the reserved ends. Part A is the rest and one [gMASK]. With
gmask_prob = p each example takes [gMASK] with probability p and [MASK] spans otherwise
(GLM-Large's "GLM_Doc" mixes the two objectives; GLM-130B used 70% [gMASK], with its own
[MASK] rule, which is not reproduced here). The default, 0, is the paper's base objective.

A span that reaches the end of the example ends with an [E] target by default, as every
blank does. With gmask_tail_eop=False it has none, as in THUDM's tail branch: Part B is
[S] and the span but its last token, the targets are the span alone. For x1 .. x6 and the
tail {x3 .. x6}:

    input_ids    x1 x2 [G] | [S] x3 x4 x5 x6          x1 x2 [G] | [S] x3 x4 x5
    labels        -  -   - |  x3 x4 x5 x6 [E]          -  -   - |  x3 x4 x5 x6
    positions     0  1   2 |  2  2  2  2  2            0  1   2 |  2  2  2  2
    block pos.    0  0   0 |  1  2  3  4  5            0  0   0 |  1  2  3  4
                  gmask_tail_eop=True (default)       gmask_tail_eop=False (THUDM)

Why both: an example's end is usually where a block was cut, not where the text ends, and
an [E] there teaches the model to stop at a cut; THUDM stops the tail without [E] and lets
its end-of-document token, when the sample holds one, teach where text ends. Our default
keeps the [E] because `glm.fill_blank` and `npplm generate` write a [gMASK] blank until
[E], and the trainer's "gmask" objective trains for that; a model trained with
gmask_tail_eop=False writes a tail until max_new_tokens.

THUDM's generation branch, exactly (`construct_blocks`, mode "gpt"): it is chosen per batch,
with probability 1 - bert_prob - gap_sentence_prob (0 for GLM-Base and GLM-Large, 0.2 for
GLM-10B). One length is drawn for the batch, uniform on int(gpt_min_ratio * shortest) ..
longest - 2 (randint, both ends included; gpt_min_ratio 0.5, 0.25 for GLM-10B), and each
row takes g = min(that, len - 2). A row holding more than one document (an end-of-document
token before its last token) takes the tail; any other row takes it with probability
gpt_infill_prob = 0.5 (despite the name, the chance of the tail, not of infilling). The
tail: Part A is the first len - g tokens ([CLS] included) and the generation mask ([gMASK]
under --task-mask, as GLM-10B trained; [MASK] otherwise), Part B is [sop] and the last g
tokens but the last one, the targets are those g tokens with no [eop], and the positions
and block positions are those of the right-hand table above. Otherwise the g tokens form
one span placed uniformly between the [CLS] and the last token (`generate_blank_data`),
laid out as any blank, with [eop]. Settings that reproduce these choices here, on examples
that begin with [CLS]: keep_first=1, keep_last=1, gmask_tail_prob=0.5, gmask_tail_eop=False.

The attention (section 2.2): Part A attends to all of Part A and none of Part B; Part B
attends to Part A and causally to itself. `GLMModel` takes it as one integer per row,
attention_mask = sep (B,): query i sees key j iff j < sep or j <= i. Padding sits at the end,
after Part B, so a real query i never sees a padding key j (j > i and j >= sep): the (B,)
form expresses padding exactly, and padding's labels are -100. Padding queries see real
keys, which changes nothing real. (tests/objectives check both on the model.)

What an example is: a 1-D array of token ids of plain text, e.g. a packed block from the
trainer, at least keep_first + keep_last + 1 long and 2 (keep_first + max(keep_last, 1) + 1
with [gMASK]); it must not contain [MASK], [gMASK], [S] or [E]. A row of n tokens becomes
n + 2k tokens with k [MASK] spans (Part A n - covered + k, Part B covered + k), n + 2 with
[gMASK] (n + 1 for a tail without [E]). Positions are < n and block positions <= n, so n
must be below the model's max_sequence_length (`from_config` sets max_length to that).

Calling the collator on B examples returns a dict of int64 arrays, keyed by the keyword
arguments of GLMForConditionalGeneration:
    input_ids       (B, T)     Part A, Part B, then pad_id
    position_ids    (B, 2, T)  positions and block positions, 0 on padding
    attention_mask  (B,)       sep, each row's Part A length
    labels          (B, T)     -100 on Part A and padding; span + [E] on Part B (not shifted)

Differences from THUDM's code, and why:
  1. Reserved ends are off by default (keep_first = keep_last = 0; THUDM 1 and 1): our
     examples hold no [CLS] and no end token (see "Reserved ends"), and on them THUDM's
     rule would protect two ordinary text tokens. THUDM blanks its own first text token
     freely; the last token of a cut sample it protects, we treat as text like any other.
  2. Documents: THUDM cuts a sample at its end-of-document tokens, never blanks those nor a
     document's [CLS], gives each document but the longest spans of up to int(0.15 length)
     tokens and the longest the rest, and always puts a multi-document row's [gMASK] at the tail.
     We take an example as one stretch of text: the trainer's GLM blocks hold no
     separators to cut at.
  3. "15%": THUDM covers at least int(0.15 len) tokens, len counting its [CLS]; we cover at
     least ceil(0.15 m) of the m tokens that may be blanked, the paper's "at least 15%"
     read literally.
  4. Span lengths: THUDM draws from the same pmf cut at 39 (1 .. 39); we cut only at the
     room left (and, for the arithmetic, far in the tail: `_zero_truncated_poisson`).
     When THUDM's drawn spans do not fit, the row is left out of the batch; we redraw.
  5. Span places: THUDM sorts independent uniform draws (`sample_spans`), which is close
     to uniform over the layouts but not exactly; we draw the layout uniformly.
  6. [gMASK] at the tail always by default (gmask_tail_prob = 1; THUDM 0.5): the tail is
     how GLM generates (fill_blank, `npplm generate`), and the default keeps the trainer's
     "gmask" objective as it was. gmask_tail_prob=0.5 gives THUDM's mix.
  7. [E] after a [gMASK] tail by default (gmask_tail_eop = True; THUDM has none): see the
     tables above for why, and gmask_tail_eop=False for THUDM's layout.
  8. Which objective, and the [gMASK] length: THUDM picks the objective per batch and one
     generation length per batch, int(0.5 shortest) .. longest - 2, cut per row to
     len - 2; we pick both per example, ceil(0.5 n) .. n - keep_first - max(keep_last, 1).
     Per-example draws mix the objectives within a batch at the same expected rates.
  9. The generation mask is always [gMASK] (THUDM: [MASK] unless --task-mask).
  10. Not reproduced: the gap-sentence objective ([sMASK], 30% of GLM-10B's batches),
     block_mask_prob (GLM-10B replaces 10% of Part B's inputs by [dBLOCK]), short_seq_prob,
     context_mask_ratio, sentinel tokens, random positions, the encoder-decoder variant and
     the data's own per-token loss mask.
"""

import math

import numpy as np

from npplm.layers import IGNORE_INDEX
from npplm.models.glm import blank_infilling_inputs
from npplm.objectives.batching import (
    check_examples,
    check_positive_int,
    check_probability,
    check_token_id,
    pad_rows,
)

# Redraws of a whole set of spans that got stuck (no room for another span before reaching
# the coverage) before giving up; only a mask_ratio near 1 on a short sequence gets stuck.
MAX_SPAN_ATTEMPTS = 100


def span_lengths(num_tokens, rng, mask_ratio=0.15, poisson_lambda=3.0):
    """Zero-truncated Poisson(poisson_lambda) lengths, drawn until they cover at least
    ceil(mask_ratio * num_tokens) tokens. Each length is capped by the room left so that
    all of them, with one token between spans, fit in num_tokens. Returns an int64 array
    in the order drawn."""
    num_tokens = check_positive_int("num_tokens", num_tokens)
    mask_ratio = check_probability("mask_ratio", mask_ratio, low_open=True, high_open=True)
    if not poisson_lambda > 0:
        raise ValueError(f"poisson_lambda must be > 0, got {poisson_lambda}")
    # round() first so that 0.15 * 20 = 3.0000000000000004 counts as 3, not 4.
    target = math.ceil(round(mask_ratio * num_tokens, 9))
    for _ in range(MAX_SPAN_ATTEMPTS):
        lengths, covered = [], 0
        while covered < target:
            # With k spans placed, one more of length l needs covered + l + k <= num_tokens
            # (k gaps between k + 1 spans).
            room = num_tokens - covered - len(lengths)
            if room < 1:
                break  # stuck: start over
            lengths.append(_zero_truncated_poisson(poisson_lambda, room, rng))
            covered += lengths[-1]
        if covered >= target:
            return np.array(lengths, dtype=np.int64)
    raise ValueError(f"could not place spans covering {target} of {num_tokens} tokens with "
                     f"a gap between spans in {MAX_SPAN_ATTEMPTS} attempts; lower mask_ratio "
                     f"({mask_ratio}) or use longer examples")


def place_spans(lengths, num_tokens, rng):
    """(start, end) of spans of the given lengths, in that order along the text, placed
    uniformly among all layouts with at least one token between consecutive spans.

    Stars and bars: the num_tokens - sum(lengths) unmasked tokens fall into k + 1 gaps, the
    k - 1 inner ones non-empty. Remove one token from each inner gap and the layouts are the
    compositions of m = num_tokens - sum(lengths) - (k - 1) tokens into k + 1 gaps >= 0,
    i.e. the choices of k bar positions among m + k slots.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    k = len(lengths)
    m = num_tokens - int(lengths.sum()) - (k - 1)
    if k == 0 or m < 0:
        raise ValueError(f"spans of lengths {lengths.tolist()} with gaps do not fit in "
                         f"{num_tokens} tokens")
    bars = np.sort(rng.choice(m + k, size=k, replace=False))  # (k,) distinct slots
    before = bars - np.arange(k)  # (k,) free tokens before each span, non-decreasing
    # span j starts after `before[j]` free tokens, the j earlier spans and their j gaps.
    starts = before + np.concatenate([[0], np.cumsum(lengths[:-1] + 1)])
    return [(int(s), int(s + n)) for s, n in zip(starts, lengths)]


def blank_spans(num_tokens, rng, mask_ratio=0.15, poisson_lambda=3.0, *, keep_first=0,
                keep_last=0):
    """GLM's [MASK] spans for a sequence of num_tokens: lengths from `span_lengths` over the
    m = num_tokens - keep_first - keep_last tokens between the reserved ends, shuffled,
    placed among those m tokens by `place_spans`. Returns (start, end) pairs in text order,
    indices into the whole sequence."""
    num_tokens = check_positive_int("num_tokens", num_tokens)
    keep_first, keep_last = _check_reserved_ends(keep_first, keep_last)
    free = num_tokens - keep_first - keep_last
    if free < 1:
        raise ValueError(f"{num_tokens} tokens leave none to blank between keep_first="
                         f"{keep_first} and keep_last={keep_last}")
    lengths = span_lengths(free, rng, mask_ratio, poisson_lambda)
    return [(s + keep_first, e + keep_first)
            for s, e in place_spans(rng.permutation(lengths), free, rng)]


def gmask_span(num_tokens, rng, min_ratio=0.5, *, tail_prob=1.0, keep_first=0, keep_last=0):
    """GLM's [gMASK] span, (start, end). Its length l is uniform on
    ceil(min_ratio * num_tokens) .. num_tokens - keep_first - max(keep_last, 1) (at least
    one unreserved token left). With probability tail_prob it is the tail
    (num_tokens - l, num_tokens); otherwise its start is uniform on
    keep_first .. num_tokens - keep_last - l. The length is drawn first, then the place
    (THUDM's order); tail_prob 1 or 0 draws no number for the choice."""
    num_tokens = check_positive_int("num_tokens", num_tokens, minimum=2)
    min_ratio = check_probability("gmask_min_ratio", min_ratio, low_open=True)
    tail_prob = check_probability("gmask_tail_prob", tail_prob)
    keep_first, keep_last = _check_reserved_ends(keep_first, keep_last)
    high = num_tokens - keep_first - max(keep_last, 1)
    if high < 1:
        raise ValueError(f"{num_tokens} tokens leave none for a [gMASK] span with keep_first="
                         f"{keep_first} and keep_last={keep_last}")
    low = min(math.ceil(round(min_ratio * num_tokens, 9)), high)
    length = int(rng.integers(low, high + 1))  # uniform on low .. high
    tail = tail_prob == 1.0 or (tail_prob > 0.0 and rng.random() < tail_prob)
    if tail:
        return (num_tokens - length, num_tokens)
    start = int(rng.integers(keep_first, num_tokens - keep_last - length + 1))
    return (start, start + length)


class BlankInfillingCollator:
    """GLM pre-training batches for GLMForConditionalGeneration (see the module docstring).

    vocab_size                 V; every id must be in [0, V)
    mask_id, sop_id, eop_id    [MASK], [S] (start of a span in Part B), [E] (its last target)
    gmask_id                   [gMASK]; needed when gmask_prob > 0
    pad_id                     written into padding (never attended to by a real token)
    mask_ratio                 the least share of tokens the [MASK] spans cover; GLM: 0.15
    poisson_lambda             the Poisson mean of span lengths; GLM: 3
    gmask_prob                 the chance an example takes one [gMASK] span instead; 0 (GLM's
                               base objective), 1 (document-level only), or a mix
    gmask_min_ratio            the shortest [gMASK] span as a share of the example; GLM: 0.5
    gmask_tail_prob            the chance a [gMASK] span is the example's tail, else it is
                               placed uniformly inside the reserved ends; 1 (default), THUDM 0.5
    gmask_tail_eop             whether a [gMASK] span reaching the end of the example ends
                               with an [E] target; True (default), THUDM False
    keep_first, keep_last      how many tokens at the start and at the end of every example
                               no [MASK] span covers (a [gMASK] tail covers the last ones); 0
                               (default), THUDM 1 and 1 (its [CLS] and its last token)
    gmask_count_on             a [gMASK] span's Part B positions count on from the mask
                               (p + 1, p + 2, ...) instead of staying at p: GLM-130B's
                               one-row RoPE positions (glm.blank_infilling_inputs, count_on);
                               `from_config` turns it on for position_encoding="rotary"
    max_length                 the longest example accepted (None: no limit)

    THUDM's choices, on examples that begin with [CLS]: keep_first=1, keep_last=1,
    gmask_tail_prob=0.5, gmask_tail_eop=False (see the module docstring).

    collator(examples, rng) -> dict; every draw comes from `rng`.
    """

    def __init__(self, vocab_size, mask_id, sop_id, eop_id, gmask_id=None, pad_id=0, *,
                 mask_ratio=0.15, poisson_lambda=3.0, gmask_prob=0.0, gmask_min_ratio=0.5,
                 gmask_tail_prob=1.0, gmask_tail_eop=True, keep_first=0, keep_last=0,
                 gmask_count_on=False, max_length=None):
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        V = self.vocab_size
        self.mask_id = check_token_id("mask_id", mask_id, V)
        self.sop_id = check_token_id("sop_id", sop_id, V)
        self.eop_id = check_token_id("eop_id", eop_id, V)
        self.gmask_id = None if gmask_id is None else check_token_id("gmask_id", gmask_id, V)
        self.pad_id = check_token_id("pad_id", pad_id, V)
        named = {"mask_id": self.mask_id, "sop_id": self.sop_id, "eop_id": self.eop_id}
        if self.gmask_id is not None:
            named["gmask_id"] = self.gmask_id
        if len(set(named.values())) < len(named):
            raise ValueError(f"the special ids must differ, got {named}")
        self.special_ids = named
        self.mask_ratio = check_probability("mask_ratio", mask_ratio, low_open=True,
                                            high_open=True)
        if not poisson_lambda > 0:
            raise ValueError(f"poisson_lambda must be > 0, got {poisson_lambda}")
        self.poisson_lambda = float(poisson_lambda)
        self.gmask_prob = check_probability("gmask_prob", gmask_prob)
        if self.gmask_prob > 0 and self.gmask_id is None:
            raise ValueError(f"gmask_prob={gmask_prob} needs gmask_id, the [gMASK] token")
        self.gmask_min_ratio = check_probability("gmask_min_ratio", gmask_min_ratio,
                                                 low_open=True)
        self.gmask_tail_prob = check_probability("gmask_tail_prob", gmask_tail_prob)
        if not isinstance(gmask_tail_eop, bool):
            raise TypeError(f"gmask_tail_eop must be True or False, got {gmask_tail_eop!r}")
        self.gmask_tail_eop = gmask_tail_eop
        if not isinstance(gmask_count_on, bool):
            raise TypeError(f"gmask_count_on must be True or False, got {gmask_count_on!r}")
        self.gmask_count_on = gmask_count_on
        self.keep_first, self.keep_last = _check_reserved_ends(keep_first, keep_last)
        # The shortest example with a token to blank: between the reserved ends for [MASK]
        # spans, and one unreserved token besides the span for [gMASK].
        self.min_length = max(2, self.keep_first + self.keep_last + 1)
        if self.gmask_prob > 0:
            self.min_length = max(self.min_length,
                                  self.keep_first + max(self.keep_last, 1) + 1)
        if max_length is not None:
            max_length = check_positive_int("max_length", max_length,
                                            minimum=self.min_length)
        self.max_length = max_length

    @classmethod
    def from_config(cls, config, **overrides):
        """The collator for a GLMConfig: its vocabulary and special ids, and max_length
        max_sequence_length - 1 so that every position and block position has a row
        (- 2 where [gMASK] positions count on, GLM-130B's one-row RoPE: up to n + 1)."""
        count_on = getattr(config, "position_encoding", "learned") == "rotary"
        kwargs = dict(vocab_size=config.vocab_size, mask_id=config.mask_token_id,
                      sop_id=config.sop_token_id, eop_id=config.eop_token_id,
                      gmask_id=config.gmask_token_id, pad_id=config.pad_token_id,
                      gmask_count_on=count_on,
                      max_length=config.max_sequence_length - 1 - count_on)
        return cls(**{**kwargs, **overrides})

    def __call__(self, examples, rng):
        rows = check_examples(examples, self.vocab_size, self.max_length,
                              min_length=self.min_length)
        for i, row in enumerate(rows):
            for name, value in self.special_ids.items():
                at = np.flatnonzero(row == value)
                if at.size:
                    raise ValueError(f"example {i} holds {name}={value} at position "
                                     f"{int(at[0])}; GLM's text must not contain its own "
                                     "[MASK], [gMASK], [S] or [E] tokens")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        parts = [self.infill(row, rng) for row in rows]
        B, T = len(parts), max(len(p["input_ids"]) for p in parts)
        position_ids = np.zeros((B, 2, T), dtype=np.int64)  # padding at position (0, 0)
        for b, p in enumerate(parts):
            position_ids[b, :, :p["position_ids"].shape[1]] = p["position_ids"]
        return {"input_ids": pad_rows([p["input_ids"] for p in parts], self.pad_id),  # (B, T)
                "position_ids": position_ids,  # (B, 2, T)
                "attention_mask": np.array([p["sep"] for p in parts], dtype=np.int64),  # (B,)
                "labels": pad_rows([p["labels"] for p in parts], IGNORE_INDEX)}  # (B, T)

    def infill(self, tokens, rng):
        """One example's blank-infilling layout: `blank_infilling_inputs`'s dict (input_ids,
        position_ids (2, T), labels, sep) plus `spans`, in Part B order."""
        n = len(tokens)
        ends = dict(keep_first=self.keep_first, keep_last=self.keep_last)
        gmask = self.gmask_prob > 0 and rng.random() < self.gmask_prob
        if gmask:
            spans = [gmask_span(n, rng, self.gmask_min_ratio, tail_prob=self.gmask_tail_prob,
                                **ends)]
            mask_id = self.gmask_id
        else:
            spans = blank_spans(n, rng, self.mask_ratio, self.poisson_lambda, **ends)
            spans = [spans[j] for j in rng.permutation(len(spans))]  # Part B's random order
            mask_id = self.mask_id
        out = blank_infilling_inputs(tokens, spans, mask_token_id=mask_id,
                                     sop_token_id=self.sop_id, eop_token_id=self.eop_id,
                                     count_on=gmask and self.gmask_count_on)
        if gmask and spans[0][1] == n and not self.gmask_tail_eop:
            # THUDM's tail: Part B ends with the [E] target and the input that predicts it
            # (the span's last token); drop that last step.
            out = {"input_ids": out["input_ids"][:-1],
                   "position_ids": out["position_ids"][:, :-1],  # (2, T) -> (2, T - 1)
                   "labels": out["labels"][:-1], "sep": out["sep"]}
        out["spans"] = spans
        return out


def _check_reserved_ends(keep_first, keep_last):
    return (check_positive_int("keep_first", keep_first, minimum=0),
            check_positive_int("keep_last", keep_last, minimum=0))


def _zero_truncated_poisson(lam, high, rng):
    """One draw from Poisson(lam) conditioned on 1 <= l <= high, from the exact pmf.

    The support is also cut at lam + t, t = 30 sqrt(lam) + 40, which keeps the pmf short
    when `high` is large: by the Chernoff bound P(X >= lam + t) <= exp(-t^2 / (2 (lam +
    t / 3))) < 1e-26 for every lam, far under float64's resolution of the total.
    """
    high = min(high, int(lam + 30 * math.sqrt(lam) + 40))
    k = np.arange(1, high + 1)  # (high,)
    log_pmf = k * math.log(lam) - np.cumsum(np.log(k))  # log(lam^k / k!), up to a constant
    p = np.exp(log_pmf - log_pmf.max())
    return int(rng.choice(k, p=p / p.sum()))
