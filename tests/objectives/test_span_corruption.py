"""T5 span corruption: reconstruction, sentinel order, T5's targets (no closing sentinel after
its mask), noise counts in T5's float32 arithmetic and their spread, the collator."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npplm.objectives.span_corruption import (
    LABEL_PAD_ID,
    SpanCorruptionCollator,
    apply_noise_mask,
    corrupted_lengths,
    random_segmentation,
    random_spans_noise_mask,
    span_corruption,
    span_counts,
    t5_sentinel_ids,
)

VOCAB = 10_000
SENTINELS = np.array(t5_sentinel_ids(VOCAB, count=300))  # <extra_id_0> = 9999, ...
EOS = 1


def to_float32(x):
    """The float32 nearest the rational x > 0, ties to even: IEEE rounding of a normal
    number, done exactly with fractions (independent of NumPy's float32 arithmetic)."""
    x = Fraction(x)
    e = math.floor(math.log2(x))  # then corrected, in case log2 rounded across a power of 2
    while x >= Fraction(2) ** (e + 1):
        e += 1
    while x < Fraction(2) ** e:
        e -= 1
    ulp = Fraction(2) ** (e - 23)  # 24 significant bits
    return round(x / ulp) * ulp  # round() of a Fraction: half to even


def expected_counts(length, density, mean_span):
    """T5's counts, written out independently of the module: TensorFlow casts the length
    and the Python floats to float32, multiplies (divides) in float32, and tf.round rounds
    half to even; then our clamps."""
    n = round(to_float32(length * to_float32(density)))
    n = min(max(n, 1), length - 1)
    k = round(to_float32(Fraction(n) / to_float32(mean_span)))
    k = min(max(k, 1), length - n)
    return n, k


def t5_unique_sentinel(tokens, noise, sentinels):
    """T5's noise_span_to_unique_sentinel restated: the first token of each run of `noise`
    becomes the next sentinel, the run's later tokens are dropped. T5's targets are this on
    the kept tokens (nonnoise_span_to_unique_sentinel: noise = ~mask)."""
    after_noise = np.concatenate([[False], noise[:-1]])
    first = noise & ~after_noise
    out = np.where(first, sentinels[np.cumsum(first) - 1], tokens)
    return out[~(noise & after_noise)]


def spans_of_targets(targets):
    """{sentinel id: the tokens after it, up to the next sentinel}."""
    spans, head = {}, None
    for t in targets:
        if t in SENTINELS:
            head = int(t)
            spans[head] = []
        else:
            spans[head].append(int(t))
    return spans


def reconstruct(inputs, targets):
    spans = spans_of_targets(targets)
    out = []
    for t in inputs:
        out.extend(spans[int(t)] if t in SENTINELS else [int(t)])
    return out


@st.composite
def corruption_cases(draw):
    length = draw(st.integers(2, 120))
    tokens = draw(st.lists(st.integers(2, VOCAB - 400), min_size=length, max_size=length))
    return dict(
        tokens=np.array(tokens),
        seed=draw(st.integers(0, 2**32 - 1)),
        density=draw(st.floats(0.01, 0.99)),
        mean_span=draw(st.floats(1.0, 10.0)),
        eos=draw(st.booleans()),
        roll=draw(st.booleans()),
    )


def corrupt(case):
    return span_corruption(case["tokens"], case["seed"], case["density"], case["mean_span"],
                           sentinel_ids=SENTINELS, eos_id=EOS if case["eos"] else None,
                           random_roll=case["roll"])


@given(corruption_cases())
def test_filling_sentinels_with_their_spans_gives_back_the_original(case):
    inputs, targets = corrupt(case)
    assert inputs.dtype == targets.dtype == np.int64
    if case["eos"]:
        assert inputs[-1] == targets[-1] == EOS
        inputs, targets = inputs[:-1], targets[:-1]
    assert reconstruct(inputs, targets) == case["tokens"].tolist()


@given(corruption_cases())
def test_sentinels_are_numbered_in_order_and_never_adjacent(case):
    inputs, targets = corrupt(case)
    in_sentinels = inputs[np.isin(inputs, SENTINELS)]
    target_sentinels = targets[np.isin(targets, SENTINELS)]
    k = len(in_sentinels)
    np.testing.assert_array_equal(in_sentinels, SENTINELS[:k])
    # One sentinel per span; a closing one only after a rolled mask that ends on kept tokens.
    closing = int(targets[-1 - case["eos"]] in SENTINELS)
    assert closing == 0 or case["roll"]
    np.testing.assert_array_equal(target_sentinels, SENTINELS[:k + closing])
    is_sentinel = np.isin(inputs, SENTINELS)
    assert not (is_sentinel[1:] & is_sentinel[:-1]).any(), "two spans touch in the input"
    # Every span in the targets is non-empty: a sentinel never follows a sentinel there either.
    is_sentinel = np.isin(targets, SENTINELS)[:-1 - case["eos"]]
    assert not (is_sentinel[1:] & is_sentinel[:-1]).any()


@given(corruption_cases())
def test_noise_token_and_span_counts_follow_the_paper(case):
    length = len(case["tokens"])
    n, k = expected_counts(length, case["density"], case["mean_span"])
    assert span_counts(length, case["density"], case["mean_span"]) == (n, k)
    mask = random_spans_noise_mask(length, np.random.default_rng(case["seed"]),
                                   case["density"], case["mean_span"], case["roll"])
    assert mask.shape == (length,) and mask.dtype == bool
    assert mask.sum() == n
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    if case["roll"]:
        assert starts.sum() in (k, k + 1)  # a span wrapping round the end is cut in two
    else:
        assert starts.sum() == k
        assert not mask[0] and mask[-1]  # kept first, noise last: T5's layout

    inputs, targets = corrupt(case)
    e = int(case["eos"])
    spans = int(np.isin(inputs, SENTINELS).sum())
    closing = int(case["roll"] and targets[-1 - e] in SENTINELS)
    assert len(inputs) == length - n + spans + e
    assert len(targets) == n + spans + closing + e
    if not case["roll"]:
        assert (len(inputs), len(targets)) == corrupted_lengths(
            length, case["density"], case["mean_span"], eos=case["eos"])


def test_defaults_match_t5_counts():
    # T5's random_spans_helper(inputs_length=512) at the defaults (as Hugging Face's
    # run_t5_mlm_flax): 568 raw tokens, 85 noise tokens in 28 spans, inputs 512 =
    # 568 - 85 + 28 + EOS and targets 114 = 85 + 28 + EOS.
    assert span_counts(568) == (85, 28)
    assert corrupted_lengths(568, eos=True) == (512, 114)
    assert span_counts(512) == (77, 26)


@pytest.mark.parametrize("density", [0.15, 0.3])
def test_noise_count_rounds_the_float32_product_as_t5_does(density):
    lengths = range(2, 2000)
    in_float64 = {n: min(max(round(n * density), 1), n - 1) for n in lengths}
    differ = [n for n in lengths if expected_counts(n, density, 3.0)[0] != in_float64[n]]
    assert len(differ) >= 10, "too few lengths where float32 and float64 disagree"
    for n in lengths:
        assert span_counts(n, density) == expected_counts(n, density, 3.0), n
    rng = np.random.default_rng(4)
    for n in differ[:5]:  # the mask and the lengths follow the float32 count too
        mask = random_spans_noise_mask(n, rng, density)
        assert mask.sum() == expected_counts(n, density, 3.0)[0] != in_float64[n]
        assert corrupted_lengths(n, density)[1] == int(mask.sum()) + span_counts(n, density)[1]


@pytest.mark.parametrize("mean_span", [1.2, 2.4, 4.8])
def test_span_count_rounds_the_float32_quotient_as_t5_does(mean_span):
    # L = 2N at density 0.5 gives exactly N noise tokens; k = round(N / mean_span).
    noise = range(1, 1000)
    in_float64 = {n: min(max(round(n / mean_span), 1), n) for n in noise}
    differ = [n for n in noise if expected_counts(2 * n, 0.5, mean_span)[1] != in_float64[n]]
    assert len(differ) >= 5, "too few counts where float32 and float64 disagree"
    for n in noise:
        assert span_counts(2 * n, 0.5, mean_span) == expected_counts(2 * n, 0.5, mean_span)


def test_float32_rounding_at_190_tokens():
    # float32(0.15) = 5033165 / 2^25; times 190 it is 28.50000113, more than half a float32
    # ulp (2^-19 / 2 = 9.5e-7) above 28.5, so T5's float32 product is 28.5 + 2^-19 and
    # rounds to 29 noise tokens (9.67 -> 10 spans). In float64, 190 * 0.15 is 28.5 -> 28.
    assert round(190 * 0.15) == 28
    assert span_counts(190) == (29, 10)


def test_rolled_mask_corrupts_every_position_equally_often():
    """With random_roll each position is noise with probability N / L, independently per
    draw, so each position's count over many draws is Binomial(draws, N / L)."""
    length, draws = 20, 4000
    n, _ = span_counts(length)
    rng = np.random.default_rng(0)
    counts = sum(random_spans_noise_mask(length, rng, random_roll=True).astype(int)
                 for _ in range(draws))
    p = n / length
    mean, sd = draws * p, np.sqrt(draws * p * (1 - p))
    assert np.all(np.abs(counts - mean) < 5 * sd), counts  # 5 sd: ~1e-5 failure chance in all


def test_unrolled_mask_spreads_noise_over_the_interior():
    """Without the roll position 0 is never noise and L-1 always is (T5's documented bias);
    the total is exact, and the middle positions are all reached."""
    length, draws = 30, 2000
    rng = np.random.default_rng(1)
    counts = sum(random_spans_noise_mask(length, rng, 0.3, 3.0).astype(int)
                 for _ in range(draws))
    assert counts[0] == 0 and counts[-1] == draws
    assert counts.sum() == draws * span_counts(length, 0.3, 3.0)[0]
    assert (counts[1:-1] > 0).all()


def test_random_segmentation_is_uniform_over_compositions():
    # 5 items into 3 non-empty segments: C(4, 2) = 6 compositions, each 1/6.
    rng = np.random.default_rng(2)
    draws = 6000
    seen = {}
    for _ in range(draws):
        lengths = random_segmentation(5, 3, rng)
        assert lengths.sum() == 5 and (lengths >= 1).all()
        seen[tuple(lengths)] = seen.get(tuple(lengths), 0) + 1
    assert len(seen) == 6
    sd = np.sqrt(draws * (1 / 6) * (5 / 6))
    assert all(abs(c - draws / 6) < 5 * sd for c in seen.values()), seen


def test_targets_are_t5s_mirror_image_when_the_mask_begins_kept():
    # T5's targets: nonnoise_span_to_unique_sentinel, a sentinel for each run of kept tokens.
    rng = np.random.default_rng(5)
    for _ in range(500):
        length = int(rng.integers(2, 40))
        mask = rng.random(length) < rng.random()
        mask[0] = False  # every mask T5's span_corruption draws begins with a kept token
        tokens = rng.integers(2, VOCAB - 400, size=length)
        inputs, targets = apply_noise_mask(tokens, mask, SENTINELS)
        np.testing.assert_array_equal(inputs, t5_unique_sentinel(tokens, mask, SENTINELS))
        np.testing.assert_array_equal(targets, t5_unique_sentinel(tokens, ~mask, SENTINELS))


def test_a_mask_beginning_with_noise_keeps_the_sentinels_in_step():
    # The departure: T5's targets would be "a <X> d" (its <X> numbers the kept run b c),
    # out of step with the inputs "<X> b c <Y> e"; ours head each span with its own.
    a, b, c, d, e = 2, 3, 4, 5, 6
    x, y = SENTINELS[:2]
    tokens, mask = [a, b, c, d, e], np.array([True, False, False, True, False])
    inputs, targets = apply_noise_mask(tokens, mask, SENTINELS)
    assert inputs.tolist() == [x, b, c, y, e]
    assert targets.tolist() == [x, a, y, d, SENTINELS[2]]
    assert t5_unique_sentinel(np.array(tokens), ~mask, SENTINELS).tolist() == [a, x, d, y]


def test_t5s_mask_leaves_no_closing_sentinel():
    # The objective as T5 trains it: the mask ends on noise, so the targets end with the
    # last span ("week"); compare the paper's Figure 2 below, whose mask ends on "week" kept.
    words = "Thank you for inviting me to your party last week".split()
    t = {w: i + 2 for i, w in enumerate(words)}
    mask = [w in ("for", "inviting", "week") for w in words]
    x, y = SENTINELS[:2]
    inputs, targets = apply_noise_mask([t[w] for w in words], mask, SENTINELS, eos_id=EOS)
    assert inputs.tolist() == [t["Thank"], t["you"], x, t["me"], t["to"], t["your"],
                               t["party"], t["last"], y, EOS]
    assert targets.tolist() == [x, t["for"], t["inviting"], y, t["week"], EOS]


def test_the_papers_figure_2_example():
    words = "Thank you for inviting me to your party last week".split()
    vocab = {w: i + 2 for i, w in enumerate(words)}
    tokens = [vocab[w] for w in words]
    mask = [w in ("for", "inviting", "last") for w in words]
    x, y, z = SENTINELS[:3]
    inputs, targets = apply_noise_mask(tokens, mask, SENTINELS, eos_id=EOS)
    t = vocab
    assert inputs.tolist() == [t["Thank"], t["you"], x, t["me"], t["to"], t["your"],
                               t["party"], y, t["week"], EOS]
    assert targets.tolist() == [x, t["for"], t["inviting"], y, t["last"], z, EOS]


@given(st.integers(0, 2**32 - 1), st.booleans())
def test_a_seed_fixes_the_result(seed, roll):
    tokens = np.arange(2, 200)
    a = span_corruption(tokens, seed, sentinel_ids=SENTINELS, random_roll=roll)
    b = span_corruption(tokens, np.random.default_rng(seed), sentinel_ids=SENTINELS,
                        random_roll=roll)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_different_seeds_give_different_corruptions():
    tokens = np.arange(2, 200)
    results = {tuple(span_corruption(tokens, s, sentinel_ids=SENTINELS)[0]) for s in range(10)}
    assert len(results) > 1


def test_collator_pads_inputs_and_labels():
    sequences = [np.arange(2, 40), np.arange(2, 7), [5, 6]]
    collate = SpanCorruptionCollator(SENTINELS, pad_id=0, eos_id=EOS)
    batch = collate(sequences, np.random.default_rng(3))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(a.dtype == np.int64 for a in batch.values())

    rng = np.random.default_rng(3)  # the same draws, one sequence at a time
    pairs = [span_corruption(s, rng, sentinel_ids=SENTINELS, eos_id=EOS) for s in sequences]
    width = max(len(i) for i, _ in pairs)
    label_width = max(len(t) for _, t in pairs)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, width)
    assert batch["labels"].shape == (3, label_width)
    for row, (inputs, targets) in enumerate(pairs):
        n, m = len(inputs), len(targets)
        np.testing.assert_array_equal(batch["input_ids"][row, :n], inputs)
        assert (batch["input_ids"][row, n:] == 0).all()
        assert (batch["attention_mask"][row, :n] == 1).all()
        assert (batch["attention_mask"][row, n:] == 0).all()
        np.testing.assert_array_equal(batch["labels"][row, :m], targets)
        assert (batch["labels"][row, m:] == LABEL_PAD_ID).all()


def test_collator_pads_to_a_multiple():
    collate = SpanCorruptionCollator(SENTINELS, eos_id=EOS, pad_to_multiple_of=8)
    batch = collate([np.arange(2, 30)], 0)
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["labels"].shape[1] % 8 == 0


@pytest.mark.parametrize("density", [0.0, 1.0, -0.1, 1.5])
def test_density_outside_the_open_unit_interval_is_refused(density):
    with pytest.raises(ValueError, match=f"noise_density must be in \\(0, 1\\), got {density}"):
        span_corruption(np.arange(2, 12), 0, density, sentinel_ids=SENTINELS)
    with pytest.raises(ValueError, match="noise_density"):
        SpanCorruptionCollator(SENTINELS, noise_density=density)


def test_errors_name_the_offending_value():
    tokens = np.arange(2, 30)
    with pytest.raises(ValueError, match="empty"):
        span_corruption([], 0, sentinel_ids=SENTINELS)
    with pytest.raises(ValueError, match="got length 1"):
        span_corruption([5], 0, sentinel_ids=SENTINELS)
    with pytest.raises(ValueError, match="mean_span_length must be > 0, got 0"):
        span_corruption(tokens, 0, mean_span_length=0, sentinel_ids=SENTINELS)
    with pytest.raises(ValueError, match="token 9999 is also sentinel <extra_id_0>"):
        span_corruption([2, 9999, 3], 0, sentinel_ids=SENTINELS)
    with pytest.raises(ValueError, match="eos_id 9998 is also sentinel <extra_id_1>"):
        span_corruption(tokens, 0, sentinel_ids=SENTINELS, eos_id=9998)
    with pytest.raises(ValueError, match="pad_id 9999 is also sentinel <extra_id_0>"):
        SpanCorruptionCollator(SENTINELS, pad_id=9999)
    with pytest.raises(ValueError, match="sentinel id 7 is repeated"):
        span_corruption(tokens, 0, sentinel_ids=[9, 7, 7])
    with pytest.raises(ValueError, match="must be >= 0, got -1"):
        span_corruption(tokens, 0, sentinel_ids=[100, -1])
    with pytest.raises(TypeError, match="sentinel_ids"):
        span_corruption(tokens, 0, sentinel_ids=100)
    with pytest.raises(ValueError, match="1-D"):
        span_corruption(np.ones((2, 3), dtype=int), 0, sentinel_ids=SENTINELS)
    with pytest.raises(ValueError, match="integer ids, got dtype float64"):
        span_corruption([1.0, 2.0], 0, sentinel_ids=SENTINELS)
    with pytest.raises(ValueError, match="0 sequences"):
        SpanCorruptionCollator(SENTINELS)([], 0)


def test_too_few_sentinels_is_refused_with_the_numbers():
    # 100 tokens at 50% in spans of 1: 50 spans, needing 50 sentinels.
    with pytest.raises(ValueError, match="50 noise spans need 50 sentinel ids \\(one per "
                       "span\\), but only 49"):
        span_corruption(np.arange(2, 102), 0, 0.5, 1.0, sentinel_ids=SENTINELS[:49])
    # Exactly enough is fine.
    inputs, targets = span_corruption(np.arange(2, 102), 0, 0.5, 1.0,
                                      sentinel_ids=SENTINELS[:50])
    assert np.isin(inputs, SENTINELS).sum() == np.isin(targets, SENTINELS).sum() == 50
    # A mask ending on kept tokens needs one more, for the closing sentinel.
    with pytest.raises(ValueError, match="1 noise spans need 2 sentinel ids \\(one per span "
                       "and a closing one\\), but only 1"):
        apply_noise_mask([2, 3, 4], [False, True, False], SENTINELS[:1])
