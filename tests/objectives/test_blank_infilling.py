"""GLM blank infilling: Part A never sees Part B nor padding, Part B is causal, positions and
labels give back the original, the spans cover at least 15%, their lengths follow the
zero-truncated Poisson(3), placements and [gMASK] tails are uniform, GLM trains on the
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


def decode(batch, b):
    """Rebuild row b's original text from Part A and Part B, checking the layout as we go.

    Returns (text, spans as (start, end) in the text, the blank token of the row)."""
    ids, labels = batch["input_ids"][b], batch["labels"][b]
    pos, block = batch["position_ids"][b]
    sep = int(batch["attention_mask"][b])
    part_a = ids[:sep]
    assert (labels[:sep] == -100).all() and (block[:sep] == 0).all()
    np.testing.assert_array_equal(pos[:sep], np.arange(sep))
    # Part B: spans opened by [S] at block position 1, each read up to its [E] target.
    fills, t = {}, sep
    while t < len(ids) and ids[t] == SOP:
        span_pos, length = int(pos[t]), 0
        while labels[t + length] != EOP:
            length += 1
        span = labels[t:t + length]
        # Teacher forcing: input t + 1 is target t; the span sits at its blank's position.
        np.testing.assert_array_equal(ids[t + 1:t + length + 1], span)
        np.testing.assert_array_equal(pos[t:t + length + 1], span_pos)
        np.testing.assert_array_equal(block[t:t + length + 1], np.arange(1, length + 2))
        assert length >= 1 and span_pos not in fills
        fills[span_pos] = span
        t += length + 1
    real = t  # the rest is padding
    assert (ids[real:] == PAD).all() and (labels[real:] == -100).all()
    assert (batch["position_ids"][b][:, real:] == 0).all()
    blanks = np.flatnonzero(np.isin(part_a, [MASK, GMASK]))
    assert sorted(fills) == blanks.tolist(), "one Part B span per blank of Part A"
    text, spans = [], []
    for i, token in enumerate(part_a):
        if i in fills:
            spans.append((len(text), len(text) + len(fills[i])))
            text.extend(fills[i].tolist())
        else:
            text.append(int(token))
    kinds = set(part_a[blanks].tolist())
    assert len(kinds) == 1, "a row mixes [MASK] and [gMASK]"
    return np.array(text), spans, kinds.pop(), real


@st.composite
def infilling_cases(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    lengths = draw(st.lists(st.integers(2, 120), min_size=1, max_size=4))
    return seed, lengths, draw(st.sampled_from([0.0, 0.5, 1.0]))


@given(infilling_cases())
def test_layout_gives_back_the_text_and_the_mask_separates_the_parts(case):
    seed, lengths, gmask_prob = case
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, MASK, size=n) for n in lengths]
    batch = collator(gmask_prob=gmask_prob)(rows, rng)
    B, T = batch["input_ids"].shape
    assert batch["position_ids"].shape == (B, 2, T) and batch["attention_mask"].shape == (B,)
    allowed = blank_infilling_mask(batch["attention_mask"], T)  # (B, T, S) as the model does
    for b, row in enumerate(rows):
        n = len(row)
        text, spans, blank, real = decode(batch, b)
        np.testing.assert_array_equal(text, row)
        ends = [0] + [e for _, e in sorted(spans)]
        starts = [s for s, _ in sorted(spans)] + [n + 1]
        if blank == MASK:
            assert gmask_prob < 1.0
            covered = sum(e - s for s, e in spans)
            assert covered >= math.ceil(0.15 * n - 1e-9), "less than 15% covered"
            assert all(s > e for s, e in zip(starts[1:-1], ends[1:-1])), "no gap between spans"
            assert real == n + 2 * len(spans)
        else:
            assert gmask_prob > 0.0 and len(spans) == 1
            start, end = spans[0]
            assert end == n and math.ceil(n / 2) <= end - start <= n - 1, "not a long tail"
            assert real == n + 2
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


def test_padding_cannot_reach_a_real_position_in_the_model():
    config = GLMConfig.tiny()
    model = GLMForConditionalGeneration(config, seed=0).eval()
    collate = BlankInfillingCollator.from_config(config, gmask_prob=0.5)
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


def test_a_batch_trains_glm():
    config = GLMConfig.tiny()
    model = GLMForConditionalGeneration(config, seed=0).eval()
    collate = BlankInfillingCollator.from_config(config, gmask_prob=0.3)
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
    # Covering 40 of 40 tokens takes one span of 40, a draw of probability ~1e-30.
    with pytest.raises(ValueError, match="could not place spans covering 40 of 40 tokens"):
        span_lengths(40, rng, mask_ratio=0.99)


@pytest.mark.parametrize("name, value, message", [
    ("mask_ratio", 0.0, "mask_ratio must be in \\(0, 1\\), got 0.0"),
    ("mask_ratio", 1.0, "mask_ratio must be in \\(0, 1\\), got 1.0"),
    ("gmask_prob", 1.2, "gmask_prob must be in \\[0, 1\\], got 1.2"),
    ("gmask_min_ratio", -0.5, "gmask_min_ratio must be in \\(0, 1\\], got -0.5"),
])
def test_probabilities_outside_their_range_are_refused(name, value, message):
    with pytest.raises(ValueError, match=message):
        collator(**{name: value})
