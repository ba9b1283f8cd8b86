"""Masked LM: the 15% selection and the 80/10/10 split within binomial bounds, labels only
where selected, special tokens and padding never touched, static against dynamic masks, the
three encoder families training on the batches, and refused input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npplm.models.albert import AlbertConfig, AlbertForMaskedLM
from npplm.models.bert import BertConfig, BertForMaskedLM
from npplm.models.roberta import RobertaConfig, RobertaForMaskedLM
from npplm.objectives import LABEL_PAD_ID, MaskedLMCollator
from tests.objectives.binomial import assert_binomial

V = 100
PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = np.array([PAD, CLS, SEP, MASK])
NON_SPECIAL = V - len(SPECIAL)  # the vocabulary random replacements come from


def collator(**overrides):
    return MaskedLMCollator(V, mask_id=MASK, pad_id=PAD, special_ids=[CLS, SEP], **overrides)


def bert_blocks(rng, B, T):
    """B packed blocks `[CLS] x .. [SEP] y .. [SEP]`, some ending in [PAD]s, as (B, T)."""
    blocks = rng.integers(len(SPECIAL), V, size=(B, T))
    blocks[:, 0] = CLS
    blocks[:, T // 3] = SEP
    blocks[:, -1] = SEP
    for b in range(0, B, 4):  # every fourth block is a partly filled last block
        blocks[b, T - 1 - b % 17:] = PAD
    return blocks


def selected(batch):
    return batch["labels"] != LABEL_PAD_ID


def test_selection_rate_and_the_80_10_10_split_are_binomial():
    rng = np.random.default_rng(0)
    blocks = bert_blocks(rng, 64, 256)
    batch = collator()(list(blocks), rng)
    chosen = selected(batch)
    candidates = ~np.isin(blocks, SPECIAL)
    n = int(candidates.sum())
    assert_binomial(int(chosen.sum()), n, 0.15, "selected tokens")

    # Of the S selected: [MASK] with p 0.8; a random non-special id with p 0.1, which is
    # another id with p 0.1 (1 - 1/V') and the original with p 0.1 / V'; else unchanged.
    s = int(chosen.sum())
    inputs, original = batch["input_ids"][chosen], blocks[chosen]
    assert_binomial(int((inputs == MASK).sum()), s, 0.8, "[MASK] replacements")
    changed = (inputs != MASK) & (inputs != original)
    assert_binomial(int(changed.sum()), s, 0.1 * (1 - 1 / NON_SPECIAL), "random replacements")
    assert_binomial(int((inputs == original).sum()), s, 0.1 + 0.1 / NON_SPECIAL, "unchanged")


def test_random_replacements_are_uniform_over_the_non_special_vocabulary():
    rng = np.random.default_rng(1)
    blocks = bert_blocks(rng, 64, 256)
    batch = collator(mask_replace_prob=0.0, random_replace_prob=1.0)(list(blocks), rng)
    drawn = batch["input_ids"][selected(batch)]  # every selected token is a random draw
    assert not np.isin(drawn, SPECIAL).any()
    counts = np.bincount(drawn, minlength=V)[len(SPECIAL):]
    for value, count in enumerate(counts):
        assert_binomial(int(count), len(drawn), 1 / NON_SPECIAL, f"draws of id {value + 4}")


def test_labels_hold_the_original_exactly_where_selected_and_nothing_else_changes():
    rng = np.random.default_rng(2)
    blocks = bert_blocks(rng, 16, 64)
    batch = collator()(list(blocks), rng)
    chosen = selected(batch)
    np.testing.assert_array_equal(batch["labels"][chosen], blocks[chosen])
    np.testing.assert_array_equal(batch["input_ids"][~chosen], blocks[~chosen])
    np.testing.assert_array_equal(batch["attention_mask"], (blocks != PAD).astype(int))
    np.testing.assert_array_equal(batch["token_type_ids"], np.zeros_like(blocks))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert all(a.dtype == np.int64 and a.shape == blocks.shape for a in batch.values())


@st.composite
def masking_cases(draw):
    """Rows of random length mixing special ids, padding and text, random probabilities."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 40))
        row = rng.integers(len(SPECIAL), V, size=n)
        special_at = rng.random(n) < draw(st.floats(0.0, 1.0))
        row[special_at] = rng.choice([PAD, CLS, SEP], size=int(special_at.sum()))
        rows.append(row)
    rows[0] = np.append(rows[0], 50)  # one non-special token, so the batch can be masked
    mask_p = draw(st.floats(0.0, 1.0))
    return dict(rows=rows, seed=seed, mlm_probability=draw(st.floats(0.01, 1.0)),
                mask_replace_prob=mask_p,
                random_replace_prob=draw(st.floats(0.0, 1.0 - mask_p)))


@given(masking_cases())
def test_special_tokens_and_padding_are_never_selected_or_planted(case):
    rows = case.pop("rows")
    rng = np.random.default_rng(case.pop("seed"))
    batch = collator(**case)(rows, rng)
    width = max(len(r) for r in rows)
    for b, row in enumerate(rows):
        n = len(row)
        special = np.isin(row, SPECIAL)
        labels, inputs = batch["labels"][b], batch["input_ids"][b]
        assert (labels[:n][special] == LABEL_PAD_ID).all(), "a special token was selected"
        assert (labels[n:] == LABEL_PAD_ID).all() and (inputs[n:] == PAD).all()
        np.testing.assert_array_equal(inputs[:n][special], row[special])
        # What replaced a selected token is [MASK] or a non-special id, never [CLS]/[SEP]/pad.
        replaced = inputs[:n][labels[:n] != LABEL_PAD_ID]
        assert not np.isin(replaced, [PAD, CLS, SEP]).any()
        # The floor: a row with something to mask has at least one selected token.
        assert (labels != LABEL_PAD_ID).any() == (~special).any()
        expected_mask = np.zeros(width, dtype=int)
        expected_mask[:n] = row != PAD
        np.testing.assert_array_equal(batch["attention_mask"][b], expected_mask)


def test_a_row_that_drew_nothing_gets_one_token_selected():
    rows = [np.arange(4, 30), np.array([CLS, SEP]), np.arange(30, 90)]
    batch = collator(mlm_probability=1e-12)(rows, np.random.default_rng(3))
    assert selected(batch).sum(axis=1).tolist() == [1, 0, 1]


def test_static_masks_depend_on_the_seed_and_index_only():
    rng = np.random.default_rng(4)
    examples = list(bert_blocks(rng, 8, 48))
    static = collator(static_seed=7)
    first = static(examples, np.random.default_rng(100), indices=range(8))
    # Served again later, in another order, in another batch, with another step's rng.
    order = [5, 2, 7, 0]
    again = static([examples[i] for i in order], np.random.default_rng(999), indices=order)
    for row, i in enumerate(order):
        for key in ("input_ids", "labels"):
            np.testing.assert_array_equal(again[key][row], first[key][i])
    # Another seed, or another index for the same tokens, gives another mask.
    other_seed = collator(static_seed=8)(examples, np.random.default_rng(100), indices=range(8))
    assert not np.array_equal(other_seed["labels"], first["labels"])
    shifted = static(examples, np.random.default_rng(100), indices=range(8, 16))
    assert not np.array_equal(shifted["labels"], first["labels"])


def test_dynamic_masks_change_every_serve_and_follow_the_rng():
    examples = list(bert_blocks(np.random.default_rng(5), 8, 48))
    dynamic = collator()
    rng = np.random.default_rng(6)
    a, b = dynamic(examples, rng), dynamic(examples, rng)  # the same examples served twice
    assert not np.array_equal(a["labels"], b["labels"])
    # The masks are a function of the rng alone: the same step's rng, the same batch.
    c = dynamic(examples, np.random.default_rng(6))
    np.testing.assert_array_equal(c["input_ids"], a["input_ids"])
    np.testing.assert_array_equal(c["labels"], a["labels"])
    # Indices are accepted (the trainer may always pass them) and change nothing.
    d = dynamic(examples, np.random.default_rng(6), indices=range(8))
    np.testing.assert_array_equal(d["labels"], a["labels"])


FAMILIES = {
    # model class, tiny config, (mask, pad, other special ids), block layout
    "bert": (BertForMaskedLM, BertConfig.tiny(), (3, 0, [1, 2])),
    "roberta": (RobertaForMaskedLM, RobertaConfig.tiny(), (3, 1, [0, 2])),  # <s>=0 <pad>=1
    "albert": (AlbertForMaskedLM, AlbertConfig.tiny(), (4, 0, [2, 3])),  # [CLS]=2 [SEP]=3
}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_trains_the_model(family):
    cls, config, (mask, pad, (start, end)) = FAMILIES[family]
    rng = np.random.default_rng(7)
    examples = []
    for n in (24, 24, 17, 9):
        block = rng.integers(5, config.vocab_size, size=n)
        block[0], block[-1] = start, end
        examples.append(block)
    collate = MaskedLMCollator(config.vocab_size, mask_id=mask, pad_id=pad,
                               special_ids=[start, end], token_type_ids=family != "roberta")
    batch = collate(examples, rng)
    model = cls(config, seed=0).eval()
    before = model(**batch).loss
    assert np.isfinite(before.item()) and before.shape == ()
    before.backward()
    for p in model.parameters():
        p.data -= 0.1 * p.grad
    assert model(**batch).loss.item() < before.item()


def test_refused_arguments_name_the_value():
    with pytest.raises(ValueError, match="special id=100 is outside the vocabulary \\[0, 100\\)"):
        MaskedLMCollator(V, mask_id=MASK, pad_id=PAD, special_ids=[CLS, 100])
    with pytest.raises(ValueError, match="mask_id=-1 is outside the vocabulary"):
        MaskedLMCollator(V, mask_id=-1, pad_id=PAD)
    with pytest.raises(ValueError, match="pad_id=250 is outside the vocabulary"):
        MaskedLMCollator(V, mask_id=MASK, pad_id=250)
    with pytest.raises(ValueError, match="must differ"):
        MaskedLMCollator(V, mask_id=MASK, pad_id=MASK)
    with pytest.raises(TypeError, match="write \\[1\\]"):
        MaskedLMCollator(V, mask_id=MASK, pad_id=PAD, special_ids=1)
    with pytest.raises(ValueError, match="every id of the vocabulary of 3 is special"):
        MaskedLMCollator(3, mask_id=1, pad_id=0, special_ids=[2])
    with pytest.raises(ValueError, match="static_seed must be >= 0, got -1"):
        collator(static_seed=-1)


@pytest.mark.parametrize("name, value, message", [
    ("mlm_probability", 0.0, "mlm_probability must be in \\(0, 1\\], got 0.0"),
    ("mlm_probability", 1.5, "mlm_probability must be in \\(0, 1\\], got 1.5"),
    ("mask_replace_prob", -0.1, "mask_replace_prob must be in \\[0, 1\\], got -0.1"),
    ("random_replace_prob", 2.0, "random_replace_prob must be in \\[0, 1\\], got 2.0"),
    ("mask_replace_prob", 0.95, "0.95 \\+ 0.1 = 1.05 exceeds 1"),
])
def test_probabilities_outside_their_range_are_refused(name, value, message):
    with pytest.raises(ValueError, match=message):
        collator(**{name: value})


def test_refused_batches_name_the_example():
    collate = collator(max_length=8)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="empty batch"):
        collate([], rng)
    with pytest.raises(ValueError, match="example 1 is empty"):
        collate([np.arange(4, 8), np.array([], dtype=int)], rng)
    with pytest.raises(ValueError, match="example 0 has 9 tokens, more than max_length=8"):
        collate([np.arange(4, 13)], rng)
    with pytest.raises(ValueError, match="example 0 holds token id 100, outside"):
        collate([np.array([4, 100])], rng)
    with pytest.raises(TypeError, match="integer token ids, got dtype float64"):
        collate([np.array([4.0, 5.0])], rng)
    with pytest.raises(ValueError, match="1-D array of token ids, got shape \\(2, 2\\)"):
        collate([np.ones((2, 2), dtype=int)], rng)
    with pytest.raises(ValueError, match="no token of the batch can be masked"):
        collate([np.array([CLS, SEP]), np.array([CLS, PAD, PAD])], rng)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        collate([np.arange(4, 8)], 0)
    static = collator(static_seed=1)
    with pytest.raises(ValueError, match="needs the examples' identities"):
        static([np.arange(4, 8)], rng)
    with pytest.raises(ValueError, match="indices has 2 entries for 1 examples"):
        static([np.arange(4, 8)], rng, indices=[0, 1])
    with pytest.raises(ValueError, match="non-negative integer, got -3"):
        static([np.arange(4, 8)], rng, indices=[-3])
