"""GLM blank infilling: Part A never sees Part B nor padding, Part B is causal, positions and
labels give back the original, the spans cover at least 15%, their lengths follow the
zero-truncated Poisson(3), placements and [gMASK] tails are uniform, THUDM's options (reserved
ends, [gMASK] placed inside, a tail without [E]) give THUDM's layouts, GLM trains on the
batches, and refused input."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npplm.models.glm import GLMConfig, GLMForConditionalGeneration, blank_infilling_mask
from npplm.objectives import (
    BlankInfillingCollator,
    blank_spans,
    gmask_span,
    place_spans,
    span_lengths,
)
from tests.objectives.binomial import assert_binomial, assert_mean
from tests.tolerances import assert_close

V = 1000
PAD, MASK, GMASK, SOP, EOP = 0, 996, 997, 998, 999


def collator(**overrides):
    return BlankInfillingCollator(V, mask_id=MASK, sop_id=SOP, eop_id=EOP, gmask_id=GMASK,
                                  pad_id=PAD, **overrides)


# The options that reproduce THUDM's blocklm_utils.py on examples that begin with [CLS].
THUDM = dict(keep_first=1, keep_last=1, gmask_tail_prob=0.5, gmask_tail_eop=False)


def decode(batch, b):
    """Rebuild row b's original text from Part A and Part B, checking the layout as we go.

    Returns (text, spans as (start, end) in the text, the blank token of the row, the
    row's length without padding, the spans whose targets end without [E])."""
    ids, labels = batch["input_ids"][b], batch["labels"][b]
    pos, block = batch["position_ids"][b]
    sep = int(batch["attention_mask"][b])
    part_a = ids[:sep]
    assert (labels[:sep] == -100).all() and (block[:sep] == 0).all()
    np.testing.assert_array_equal(pos[:sep], np.arange(sep))
    real = int(np.flatnonzero(labels != -100)[-1]) + 1  # the rest is padding
    # Part B: spans opened by [S] at block position 1, each read up to its [E] target, or
    # to the last target for a tail without [E].
    fills, open_spans, t = {}, [], sep
    while t < real:
        assert ids[t] == SOP
        span_pos, length = int(pos[t]), 0
        while t + length < real and labels[t + length] != EOP:
            length += 1
        eop = int(t + length < real)  # 1: closed by [E], which takes one more step
        span = labels[t:t + length]
        # Teacher forcing: input t + 1 is target t; the span sits at its blank's position.
        np.testing.assert_array_equal(ids[t + 1:t + length + eop], span[:length - 1 + eop])
        np.testing.assert_array_equal(pos[t:t + length + eop], span_pos)
        np.testing.assert_array_equal(block[t:t + length + eop], np.arange(1, length + 1 + eop))
        assert length >= 1 and span_pos not in fills
        fills[span_pos] = span
        if not eop:
            open_spans.append(span_pos)
        t += length + eop
    assert (ids[real:] == PAD).all() and (labels[real:] == -100).all()
    assert (batch["position_ids"][b][:, real:] == 0).all()
    blanks = np.flatnonzero(np.isin(part_a, [MASK, GMASK]))
    assert sorted(fills) == blanks.tolist(), "one Part B span per blank of Part A"
    text, spans, open_text_spans = [], [], []
    for i, token in enumerate(part_a):
        if i in fills:
            spans.append((len(text), len(text) + len(fills[i])))
            if i in open_spans:
                open_text_spans.append(spans[-1])
            text.extend(fills[i].tolist())
        else:
            text.append(int(token))
    kinds = set(part_a[blanks].tolist())
    assert len(kinds) == 1, "a row mixes [MASK] and [gMASK]"
    return np.array(text), spans, kinds.pop(), real, open_text_spans


@st.composite
def infilling_cases(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    lengths = draw(st.lists(st.integers(5, 120), min_size=1, max_size=4))
    options = dict(gmask_prob=draw(st.sampled_from([0.0, 0.5, 1.0])),
                   keep_first=draw(st.integers(0, 2)), keep_last=draw(st.integers(0, 2)),
                   gmask_tail_prob=draw(st.sampled_from([0.0, 0.5, 1.0])),
                   gmask_tail_eop=draw(st.booleans()))
    return seed, lengths, options


@given(infilling_cases())
def test_layout_gives_back_the_text_and_the_mask_separates_the_parts(case):
    seed, lengths, options = case
    kf, kl = options["keep_first"], options["keep_last"]
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, MASK, size=n) for n in lengths]
    batch = collator(**options)(rows, rng)
    B, T = batch["input_ids"].shape
    assert batch["position_ids"].shape == (B, 2, T) and batch["attention_mask"].shape == (B,)
    allowed = blank_infilling_mask(batch["attention_mask"], T)  # (B, T, S) as the model does
    for b, row in enumerate(rows):
        n = len(row)
        text, spans, blank, real, open_spans = decode(batch, b)
        np.testing.assert_array_equal(text, row)
        ends = [0] + [e for _, e in sorted(spans)]
        starts = [s for s, _ in sorted(spans)] + [n + 1]
        if blank == MASK:
            assert options["gmask_prob"] < 1.0 and not open_spans
            covered = sum(e - s for s, e in spans)
            assert covered >= math.ceil(0.15 * (n - kf - kl) - 1e-9), "less than 15% covered"
            assert all(s > e for s, e in zip(starts[1:-1], ends[1:-1])), "no gap between spans"
            assert all(kf <= s and e <= n - kl for s, e in spans), "a reserved end blanked"
            assert real == n + 2 * len(spans)
        else:
            assert options["gmask_prob"] > 0.0 and len(spans) == 1
            start, end = spans[0]
            high = n - kf - max(kl, 1)
            assert min(math.ceil(n / 2), high) <= end - start <= high, "not a long span"
            if end == n:  # a tail: at least one unreserved token of prefix
                assert options["gmask_tail_prob"] > 0.0 or kl == 0
                assert start >= kf + 1
                assert open_spans == ([] if options["gmask_tail_eop"] else [(start, end)])
            else:  # placed inside the reserved ends, closed by [E]
                assert options["gmask_tail_prob"] < 1.0 and kf <= start and end <= n - kl
                assert not open_spans
            assert real == n + 2 - len(open_spans)
        # The attention of this row, region by region.
        sep = int(batch["attention_mask"][b])
        a, part_b, pad = slice(0, sep), slice(sep, real), slice(real, T)
        mask = allowed[b]
        assert mask[a, a].all(), "Part A is bidirectional"
        assert not mask[a, sep:].any(), "Part A sees Part B or padding"
        assert mask[part_b, a].all(), "Part B sees all of Part A"
        np.testing.assert_array_equal(mask[part_b, part_b],
                                      np.tri(real - sep, dtype=bool))  # causal in Part B
        assert not mask[:real, pad].any(), "a real token sees padding"


@pytest.mark.parametrize("options", [{}, THUDM], ids=["npplm", "thudm"])
def test_padding_cannot_reach_a_real_position_in_the_model(options):
    config = GLMConfig.tiny()
    model = GLMForConditionalGeneration(config, seed=0).eval()
    collate = BlankInfillingCollator.from_config(config, gmask_prob=0.5, **options)
    rng = np.random.default_rng(1)
    rows = [rng.integers(1, 44, size=n) for n in (30, 12, 20)]
    batch = collate(rows, rng)
    logits = model(**batch).logits.numpy()
    real_len = (batch["labels"] != -100)[:, ::-1].argmax(axis=1)  # from the end
    real = batch["input_ids"].shape[1] - real_len  # one past the last scored position
    for b in range(len(rows)):
        # Row b alone, without padding, gives the same logits on its real positions.
        alone = {k: v[b:b + 1] for k, v in batch.items()}
        alone = {"input_ids": alone["input_ids"][:, :real[b]],
                 "position_ids": alone["position_ids"][:, :, :real[b]],
                 "attention_mask": alone["attention_mask"],
                 "labels": alone["labels"][:, :real[b]]}
        assert_close(model(**alone).logits.numpy()[0], logits[b, :real[b]], kind="model32")
    # Other padding ids and padding positions change nothing real either.
    noisy = {k: v.copy() for k, v in batch.items()}
    for b in range(len(rows)):
        noisy["input_ids"][b, real[b]:] = 7
        noisy["position_ids"][b, :, real[b]:] = 5
    changed = model(**noisy).logits.numpy()
    for b in range(len(rows)):
        assert_close(changed[b, :real[b]], logits[b, :real[b]], kind="model32")


@pytest.mark.parametrize("options", [{}, THUDM], ids=["npplm", "thudm"])
def test_a_batch_trains_glm(options):
    config = GLMConfig.tiny()
    model = GLMForConditionalGeneration(config, seed=0).eval()
    collate = BlankInfillingCollator.from_config(config, gmask_prob=0.3, **options)
    rng = np.random.default_rng(2)
    batch = collate([rng.integers(1, 44, size=n) for n in (31, 24, 16, 8)], rng)
    before = model(**batch).loss
    assert np.isfinite(before.item()) and before.shape == ()
    before.backward()
    for p in model.parameters():
        p.data -= 0.05 * p.grad
    assert model(**batch).loss.item() < before.item()


def zero_truncated_poisson(lam):
    """pmf (as a function), mean and variance of Poisson(lam) conditioned on >= 1."""
    z = 1 - math.exp(-lam)
    mean = lam / z
    return (lambda k: lam ** k * math.exp(-lam) / math.factorial(k) / z,
            mean, mean * (1 + lam - mean))


def test_span_lengths_follow_the_zero_truncated_poisson():
    rng = np.random.default_rng(3)
    lengths = np.concatenate([span_lengths(512, rng) for _ in range(450)])
    pmf, mean, variance = zero_truncated_poisson(3.0)
    assert lengths.min() >= 1 and len(lengths) > 10_000
    # The iid draws of each set are stopped once 15% is covered: by Wald's identity the
    # pooled mean is still the draws' mean, ~3.157, and each length's count is binomial.
    assert_mean(int(lengths.sum()), len(lengths), mean, variance, "mean span length")
    for k in range(1, 9):
        assert_binomial(int((lengths == k).sum()), len(lengths), pmf(k), f"spans of length {k}")


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 64, 199])
def test_spans_cover_at_least_15_percent_without_touching(n):
    rng = np.random.default_rng(n)
    for _ in range(30):
        spans = blank_spans(n, rng)
        covered = sum(e - s for s, e in spans)
        assert covered >= math.ceil(round(0.15 * n, 9))
        assert all(0 <= s < e <= n for s, e in spans)
        assert all(e < s2 for (_, e), (s2, _) in zip(spans, spans[1:])), "spans touch"
    assert span_lengths(20, rng).sum() >= 3  # 0.15 * 20 is 3, not 3.0000000000000004 -> 4


def test_spans_are_placed_uniformly_among_the_layouts():
    # Spans of lengths 2 then 1 in 7 tokens, a gap between them: m = 7 - 3 - 1 = 3 free
    # tokens in 3 gaps, C(3 + 2, 2) = 10 layouts, each with probability 1/10.
    rng = np.random.default_rng(4)
    draws = 5000
    counts = {}
    for _ in range(draws):
        layout = tuple(place_spans([2, 1], 7, rng))
        counts[layout] = counts.get(layout, 0) + 1
    assert len(counts) == 10
    for layout, count in counts.items():
        (s1, e1), (s2, e2) = layout
        assert e1 - s1 == 2 and e2 - s2 == 1 and s2 > e1 and e2 <= 7
        assert_binomial(count, draws, 0.1, f"layout {layout}")


def test_gmask_tail_lengths_are_uniform_from_half_to_all_but_one():
    rng = np.random.default_rng(5)
    draws, n = 5000, 20
    tails = [n - gmask_span(n, rng)[0] for _ in range(draws)]
    counts = np.bincount(tails, minlength=n + 1)
    assert counts[:10].sum() == 0 and counts[n] == 0  # 10 .. 19 only
    for length in range(10, 20):
        assert_binomial(int(counts[length]), draws, 0.1, f"tails of {length}")


def test_gmask_tail_without_eop_is_thudms_layout():
    """THUDM's tail branch (blocklm_utils.py, construct_blocks, mode "gpt"), written out
    from its description: for a division d and g = n - d tail tokens, the inputs are
    text[:d] [gMASK] [sop] text[d:n-1], the targets text[d:] (no [eop]), the positions
    0 .. d then d, the block positions 0 on Part A then 1 .. g, and sep = d + 1."""
    collate = collator(gmask_prob=1.0, gmask_tail_eop=False)
    rng = np.random.default_rng(9)
    divisions = set()
    for _ in range(200):
        text = rng.integers(1, MASK, size=11)
        out = collate.infill(text, rng)
        (d, end), = out["spans"]
        n, g = len(text), len(text) - d
        assert end == n
        divisions.add(d)
        np.testing.assert_array_equal(
            out["input_ids"], np.concatenate([text[:d], [GMASK, SOP], text[d:-1]]))
        np.testing.assert_array_equal(out["labels"], np.concatenate([np.full(d + 1, -100),
                                                                     text[d:]]))
        positions = np.arange(d + g + 1)
        positions[d + 1:] = d
        np.testing.assert_array_equal(out["position_ids"][0], positions)
        np.testing.assert_array_equal(out["position_ids"][1],
                                      np.concatenate([np.zeros(d + 1), np.arange(1, g + 1)]))
        assert out["sep"] == d + 1
    assert divisions == set(range(1, 6)), "tails of 6 .. 10 of 11 tokens"
    # The default keeps the [E]: one more step, whose input is the tail's last token.
    out = collator(gmask_prob=1.0).infill(text, np.random.default_rng(10))
    (d, _), = out["spans"]
    assert out["input_ids"][-1] == text[-1] and out["labels"][-1] == EOP
    assert len(out["input_ids"]) == len(text) + 2


@pytest.mark.parametrize("keep_first, keep_last", [(0, 0), (1, 1), (2, 1), (0, 3)])
def test_reserved_ends_are_never_blanked_and_their_neighbours_are(keep_first, keep_last):
    n, draws = 12, 3000
    rng = np.random.default_rng(11)
    covered = np.zeros(n, dtype=np.int64)
    for _ in range(draws):
        for s, e in blank_spans(n, rng, keep_first=keep_first, keep_last=keep_last):
            covered[s:e] += 1
    inside = slice(keep_first, n - keep_last)
    assert covered[:keep_first].sum() == 0 and covered[n - keep_last:].sum() == 0
    assert (covered[inside] > 0).all(), covered  # the first and last free tokens included
    # Coverage counts the free tokens: at least ceil(0.15 m) of m = n - keep_first - keep_last.
    m = n - keep_first - keep_last
    assert covered.sum() >= draws * math.ceil(0.15 * m)


def test_a_placed_gmask_span_is_uniform_inside_the_reserved_ends():
    # THUDM's non-tail branch at its reserved ends: 20 tokens, [CLS] and the last kept, the
    # length uniform on int(0.5 * 20) = 10 .. 20 - 2 = 18, the start uniform on the places
    # left: for length 10, starts 1 .. 9.
    rng = np.random.default_rng(12)
    draws, n = 20000, 20
    spans = [gmask_span(n, rng, tail_prob=0.0, keep_first=1, keep_last=1) for _ in range(draws)]
    lengths = np.array([e - s for s, e in spans])
    assert min(s for s, _ in spans) == 1 and max(e for _, e in spans) == n - 1
    for length in range(10, 19):
        assert_binomial(int((lengths == length).sum()), draws, 1 / 9, f"spans of {length}")
    starts = np.array([s for s, e in spans if e - s == 10])
    for start in range(1, 10):
        assert_binomial(int((starts == start).sum()), len(starts), 1 / 9, f"start {start}")


def test_gmask_tail_prob_mixes_tails_and_placed_spans():
    rng = np.random.default_rng(13)
    collate = collator(gmask_prob=1.0, **THUDM)
    draws, n = 2000, 30
    tails = 0
    for _ in range(draws):
        out = collate.infill(rng.integers(1, MASK, size=n), rng)
        (s, e), = out["spans"]
        if e == n:  # THUDM's tail: no [E], a prefix of [CLS] and one token at least
            tails += 1
            assert s >= 2 and EOP not in out["labels"]
        else:  # placed between the first and the last token, closed by [E]
            assert 1 <= s and e <= n - 1 and out["labels"][-1] == EOP
    assert_binomial(tails, draws, 0.5, "[gMASK] tails")


def test_part_b_order_is_random():
    rng = np.random.default_rng(6)
    collate = collator()
    in_text_order, two_span_rows = 0, 0
    for _ in range(600):
        out = collate.infill(rng.integers(1, MASK, size=30), rng)
        if len(out["spans"]) == 2:
            two_span_rows += 1
            in_text_order += out["spans"][0] < out["spans"][1]
    assert two_span_rows > 100
    assert_binomial(in_text_order, two_span_rows, 0.5, "two-span rows in text order")


def test_gmask_prob_mixes_the_two_objectives():
    rng = np.random.default_rng(7)
    collate = collator(gmask_prob=0.7)
    rows = [rng.integers(1, MASK, size=40) for _ in range(500)]
    batch = collate(rows, rng)
    with_gmask = int((batch["input_ids"] == GMASK).any(axis=1).sum())
    assert_binomial(with_gmask, len(rows), 0.7, "[gMASK] rows")


def test_a_seed_fixes_the_batch():
    rows = [np.arange(1, 40), np.arange(50, 70)]
    a = collator(gmask_prob=0.5)(rows, np.random.default_rng(8))
    b = collator(gmask_prob=0.5)(rows, np.random.default_rng(8))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_refused_input_names_the_value():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="example 1 holds mask_id=996 at position 2"):
        collator()([np.arange(1, 9), np.array([5, 6, MASK, 7])], rng)
    with pytest.raises(ValueError, match="example 0 holds eop_id=999 at position 0"):
        collator()([np.array([EOP, 6])], rng)
    with pytest.raises(ValueError, match="example 0 has 1 token\\(s\\)"):
        collator()([np.array([5])], rng)
    with pytest.raises(ValueError, match="empty batch"):
        collator()([], rng)
    with pytest.raises(ValueError, match="example 0 has 9 tokens, more than max_length=8"):
        collator(max_length=8)([np.arange(1, 10)], rng)
    with pytest.raises(ValueError, match="holds token id 1000, outside the vocabulary"):
        collator()([np.array([5, 1000])], rng)
    with pytest.raises(ValueError, match="sop_id=1000 is outside the vocabulary"):
        BlankInfillingCollator(V, mask_id=MASK, sop_id=1000, eop_id=EOP)
    with pytest.raises(ValueError, match="gmask_prob=0.5 needs gmask_id"):
        BlankInfillingCollator(V, mask_id=MASK, sop_id=SOP, eop_id=EOP, gmask_prob=0.5)
    with pytest.raises(ValueError, match="the special ids must differ"):
        BlankInfillingCollator(V, mask_id=MASK, sop_id=MASK, eop_id=EOP)
    with pytest.raises(ValueError, match="poisson_lambda must be > 0, got 0"):
        collator(poisson_lambda=0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        collator()([np.arange(1, 9)], 3)
    with pytest.raises(ValueError, match="example 0 has 2 token\\(s\\); this objective needs "
                       "at least 3"):
        collator(keep_first=1, keep_last=1)([np.array([5, 6])], rng)
    with pytest.raises(ValueError, match="example 0 has 3 token\\(s\\); this objective needs "
                       "at least 4"):
        collator(keep_first=2, gmask_prob=0.5)([np.array([5, 6, 7])], rng)
    with pytest.raises(ValueError, match="keep_first must be >= 0, got -1"):
        collator(keep_first=-1)
    with pytest.raises(TypeError, match="gmask_tail_eop must be True or False, got 'no'"):
        collator(gmask_tail_eop="no")
    with pytest.raises(ValueError, match="3 tokens leave none to blank between keep_first=2 "
                       "and keep_last=1"):
        blank_spans(3, rng, keep_first=2, keep_last=1)
    with pytest.raises(ValueError, match="2 tokens leave none for a \\[gMASK\\] span with "
                       "keep_first=1"):
        gmask_span(2, rng, keep_first=1)
    # THUDM's shortest sample, [CLS] x1 x2: g = len - 2 = 1, the tail x2 or the middle x1.
    assert gmask_span(3, rng, keep_first=1, keep_last=1) == (2, 3)
    assert gmask_span(3, rng, tail_prob=0.0, keep_first=1, keep_last=1) == (1, 2)
    # Covering 40 of 40 tokens takes one span of 40, a draw of probability ~1e-30.
    with pytest.raises(ValueError, match="could not place spans covering 40 of 40 tokens"):
        span_lengths(40, rng, mask_ratio=0.99)


@pytest.mark.parametrize("name, value, message", [
    ("mask_ratio", 0.0, "mask_ratio must be in \\(0, 1\\), got 0.0"),
    ("mask_ratio", 1.0, "mask_ratio must be in \\(0, 1\\), got 1.0"),
    ("gmask_prob", 1.2, "gmask_prob must be in \\[0, 1\\], got 1.2"),
    ("gmask_min_ratio", -0.5, "gmask_min_ratio must be in \\(0, 1\\], got -0.5"),
    ("gmask_tail_prob", 1.5, "gmask_tail_prob must be in \\[0, 1\\], got 1.5"),
])
def test_probabilities_outside_their_range_are_refused(name, value, message):
    with pytest.raises(ValueError, match=message):
        collator(**{name: value})
