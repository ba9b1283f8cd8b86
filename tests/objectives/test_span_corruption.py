"""T5 span corruption: reconstruction, sentinel order, noise counts and spread, the collator."""

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


def expected_counts(length, density, mean_span):
    """The paper's counts, written out independently of the module."""
    n = min(max(round(length * density), 1), length - 1)
    k = min(max(round(n / mean_span), 1), length - n)
    return n, k


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
    np.testing.assert_array_equal(target_sentinels, SENTINELS[:k + 1])  # plus the final one
    assert targets[-1 - case["eos"]] == SENTINELS[k]
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
    assert len(inputs) == length - n + spans + e
    assert len(targets) == n + spans + 1 + e
    if not case["roll"]:
        assert (len(inputs), len(targets)) == corrupted_lengths(
            length, case["density"], case["mean_span"], eos=case["eos"])


def test_defaults_match_t5_counts():
    # Hugging Face's run_t5_mlm_flax turns 568 raw tokens into 512 inputs at the defaults:
    # 85 noise tokens in 28 spans. Its targets have 114 = 85 + 28 + EOS; ours one more, the
    # final sentinel of the paper's Figure 2.
    assert span_counts(568) == (85, 28)
    assert corrupted_lengths(568, eos=True) == (512, 115)
    assert span_counts(512) == (77, 26)


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
    # 100 tokens at 50% in spans of 1: 50 spans, needing 51 sentinels.
    with pytest.raises(ValueError, match="50 noise spans need 51 sentinel ids.*only 10"):
        span_corruption(np.arange(2, 102), 0, 0.5, 1.0, sentinel_ids=SENTINELS[:10])
    # Exactly enough is fine.
    inputs, _ = span_corruption(np.arange(2, 102), 0, 0.5, 1.0, sentinel_ids=SENTINELS[:51])
    assert np.isin(inputs, SENTINELS).sum() == 50
