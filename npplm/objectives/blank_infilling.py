"""GLM's autoregressive blank infilling, and its [gMASK] variant, as a data collator.

Paper: Du, Qian, Liu, Ding, Qiu, Yang and Tang, "GLM: General Language Model Pretraining
with Autoregressive Blank Infilling" (ACL 2022), arXiv:2103.10360: section 2.1 (the
objective, "Autoregressive Blank Infilling", and its document-level variant under
"Multi-Task Pretraining") and section 2.2 (2D positional encoding, the attention mask).
Reference implementation: THUDM's GLM, `ConstructBlockStrategy` in `blocklm_utils.py`
(`sample_spans`, `make_block_data`); we follow the paper and say where the code differs.

The layout of one example (Part A, Part B, 2D positions, targets) is built by
`npplm.models.glm.blank_infilling_inputs`, whose docstring draws it; this module decides
which spans to blank and batches the result. For x = x1 .. x6 and spans {x3}, {x5 x6}:

    input_ids    x1 x2 [M] x4 [M] | [S] x5 x6 [S] x3 | pad        Part A | Part B | padding
    labels        -  -   -  -   - |  x5 x6 [E] x3 [E] |  -         -100 shown as -
    positions     0  1   2  3   4 |  4  4  4  2  2    |  0
    block pos.    0  0   0  0   0 |  1  2  3  1  2    |  0
    attention_mask = sep = 5 (the length of Part A)

Which spans (section 2.1, "the 15% ratio is critical for good performance on downstream NLU
tasks"):
  - span lengths are drawn from Poisson(lambda = 3), repeatedly, until the spans cover at
    least 15% of the tokens (mask_ratio): ceil(0.15 n) tokens or more. A blank holds at least
    one token, so a zero draw is excluded: the lengths follow the zero-truncated Poisson,
    P(l) = lambda^l e^-lambda / (l! (1 - e^-lambda)), l >= 1, of mean
    lambda / (1 - e^-lambda) ~ 3.157 (THUDM draws from the same pmf over 1..39). A length is
    also capped by the room left, so that every span fits; for n in the hundreds the cap
    never binds.
  - the spans are shuffled and placed uniformly at random among all the ways to lay them
    out with at least one unmasked token between two spans (THUDM keeps the same gap; its
    `sample_spans` sorts independent draws, which is close to uniform but not exactly).
    THUDM counts "15%" as int(0.15 n) tokens; we take the paper's "at least 15%" literally.
  - Part B holds the spans in a random order (the paper's permutation, so that the model
    learns the spans' dependencies in every order), each as [S] + span, with the span +
    [E] as targets.
[gMASK], the document-level objective (section 2.1, "Multi-Task Pretraining"): "a single
span whose length is sampled from a uniform distribution over 50%-100% of the original
length". We draw the length uniformly among the integers ceil(0.5 n) .. n - 1 and blank
the tail of the sequence with it, so that at least one token of prefix is left to condition
on (THUDM's generation mode keeps a prefix too). Part A is the prefix and one [gMASK]. With
gmask_prob = p each example takes [gMASK] with probability p and [MASK] spans otherwise
(GLM-Large's "GLM_Doc" mixes the two objectives; GLM-130B used 70% [gMASK], with its own
[MASK] rule, which is not reproduced here). The default, 0, is the paper's base objective.

The attention (section 2.2): Part A attends to all of Part A and none of Part B; Part B
attends to Part A and causally to itself. `GLMModel` takes it as one integer per row,
attention_mask = sep (B,): query i sees key j iff j < sep or j <= i. Padding sits at the end,
after Part B, so a real query i never sees a padding key j (j > i and j >= sep): the (B,)
form expresses padding exactly, and padding's labels are -100. Padding queries see real
keys, which changes nothing real. (tests/objectives check both on the model.)

What an example is: a 1-D array of at least 2 token ids of plain text, e.g. a packed block
from the trainer; it must not contain [MASK], [gMASK], [S] or [E]. Spans may cover any of
its tokens. A row of n tokens becomes n + 2k tokens with k [MASK] spans (Part A n - covered
+ k, Part B covered + k), n + 2 with [gMASK]. Positions are < n and block positions <= n, so
n must be below the model's max_sequence_length (`from_config` sets max_length to that).

Calling the collator on B examples returns a dict of int64 arrays, keyed by the keyword
arguments of GLMForConditionalGeneration:
    input_ids       (B, T)     Part A, Part B, then pad_id
    position_ids    (B, 2, T)  positions and block positions, 0 on padding
    attention_mask  (B,)       sep, each row's Part A length
    labels          (B, T)     -100 on Part A and padding; span + [E] on Part B (not shifted)
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


def blank_spans(num_tokens, rng, mask_ratio=0.15, poisson_lambda=3.0):
    """GLM's [MASK] spans for a sequence of num_tokens: lengths from `span_lengths`,
    shuffled, placed by `place_spans`. Returns (start, end) pairs in text order."""
    lengths = span_lengths(num_tokens, rng, mask_ratio, poisson_lambda)
    return place_spans(rng.permutation(lengths), num_tokens, rng)


def gmask_span(num_tokens, rng, min_ratio=0.5):
    """GLM's [gMASK] span: the tail (num_tokens - l, num_tokens), l uniform on
    ceil(min_ratio * num_tokens) .. num_tokens - 1 (at least one token of prefix left)."""
    num_tokens = check_positive_int("num_tokens", num_tokens, minimum=2)
    min_ratio = check_probability("gmask_min_ratio", min_ratio, low_open=True)
    low = min(math.ceil(round(min_ratio * num_tokens, 9)), num_tokens - 1)
    length = int(rng.integers(low, num_tokens))  # uniform on low .. num_tokens - 1
    return (num_tokens - length, num_tokens)


class BlankInfillingCollator:
    """GLM pre-training batches for GLMForConditionalGeneration (see the module docstring).

    vocab_size                 V; every id must be in [0, V)
    mask_id, sop_id, eop_id    [MASK], [S] (start of a span in Part B), [E] (its last target)
    gmask_id                   [gMASK]; needed when gmask_prob > 0
    pad_id                     written into padding (never attended to by a real token)
    mask_ratio                 the least share of tokens the [MASK] spans cover; GLM: 0.15
    poisson_lambda             the Poisson mean of span lengths; GLM: 3
    gmask_prob                 the chance an example takes one [gMASK] tail instead; 0 (GLM's
                               base objective), 1 (document-level only), or a mix
    gmask_min_ratio            the shortest [gMASK] tail as a share of the example; GLM: 0.5
    max_length                 the longest example accepted (None: no limit)

    collator(examples, rng) -> dict; every draw comes from `rng`.
    """

    def __init__(self, vocab_size, mask_id, sop_id, eop_id, gmask_id=None, pad_id=0, *,
                 mask_ratio=0.15, poisson_lambda=3.0, gmask_prob=0.0, gmask_min_ratio=0.5,
                 max_length=None):
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
        if max_length is not None:
            max_length = check_positive_int("max_length", max_length, minimum=2)
        self.max_length = max_length

    @classmethod
    def from_config(cls, config, **overrides):
        """The collator for a GLMConfig: its vocabulary and special ids, and max_length
        max_sequence_length - 1 so that every position and block position has a row."""
        kwargs = dict(vocab_size=config.vocab_size, mask_id=config.mask_token_id,
                      sop_id=config.sop_token_id, eop_id=config.eop_token_id,
                      gmask_id=config.gmask_token_id, pad_id=config.pad_token_id,
                      max_length=config.max_sequence_length - 1)
        return cls(**{**kwargs, **overrides})

    def __call__(self, examples, rng):
        rows = check_examples(examples, self.vocab_size, self.max_length, min_length=2)
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
        if self.gmask_prob > 0 and rng.random() < self.gmask_prob:
            spans, mask_id = [gmask_span(n, rng, self.gmask_min_ratio)], self.gmask_id
        else:
            spans = blank_spans(n, rng, self.mask_ratio, self.poisson_lambda)
            spans = [spans[j] for j in rng.permutation(len(spans))]  # Part B's random order
            mask_id = self.mask_id
        out = blank_infilling_inputs(tokens, spans, mask_token_id=mask_id,
                                     sop_token_id=self.sop_id, eop_token_id=self.eop_id)
        out["spans"] = spans
        return out


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
