"""NSP and SOP: balanced labels within binomial bounds, negatives that are never the true next
text, swaps of the same two consecutive runs, BERT's truncation rule, the [CLS] A [SEP] B
[SEP] layout with masking, BERT and ALBERT pre-training on the batches, and refused input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npplm.models.albert import AlbertConfig, AlbertForPreTraining
from npplm.models.bert import BertConfig, BertForPreTraining
from npplm.objectives import (
    LABEL_PAD_ID,
    MaskedLMCollator,
    NextSentenceCollator,
    SentenceOrderCollator,
    SentencePair,
    nsp_examples,
    sop_examples,
    truncate_pair,
)
from tests.objectives.binomial import assert_binomial

FIRST_ID = 10  # ids below are left for special tokens


def corpus(rng, n_docs, max_segments=8, max_segment_length=12):
    """Documents whose every token id is unique, with a map id -> (document, position) to
    tell where any run of text came from, and the positions where segments start."""
    docs, where, starts, next_id = [], {}, set(), FIRST_ID
    for d in range(n_docs):
        doc, position = [], 0
        for _ in range(rng.integers(1, max_segments + 1)):
            n = int(rng.integers(1, max_segment_length + 1))
            doc.append(np.arange(next_id, next_id + n))
            for i in range(n):
                where[next_id + i] = (d, position + i)
            starts.add((d, position))
            next_id += n
            position += n
        docs.append(doc)
    return docs, where, starts


def locate(run, where):
    """(document, first position, last position) of a run of unique ids, asserting that it
    is one contiguous piece of one document."""
    places = [where[int(t)] for t in run]
    doc = places[0][0]
    assert all(d == doc for d, _ in places), "a run mixes documents"
    positions = [p for _, p in places]
    assert positions == list(range(positions[0], positions[0] + len(run))), "not contiguous"
    return doc, positions[0], positions[-1]


MAX_LENGTH = 40
BUDGET = MAX_LENGTH - 3


def test_nsp_labels_are_balanced_and_negatives_come_from_another_document():
    rng = np.random.default_rng(0)
    docs, where, starts = corpus(rng, 300)
    pairs = nsp_examples(docs, rng, MAX_LENGTH)
    labels = np.array([p.label for p in pairs])
    # Each label is a fresh fair coin. (How many pairs a document yields depends on earlier
    # coins, through the put-back; the count of 1s minus n/2 is then a martingale at a
    # stopping time, with the same mean 0 and variance E[n] / 4 as a binomial's.)
    assert_binomial(int(labels.sum()), len(labels), 0.5, "NSP negatives")
    untruncated = 0
    for pair in pairs:
        assert pair.task == "nsp" and len(pair.first) + len(pair.second) <= BUDGET
        doc_a, a_start, a_end = locate(pair.first, where)
        doc_b, b_start, b_end = locate(pair.second, where)
        if pair.label == 1:
            assert doc_b != doc_a, "a negative taken from A's own document"
            continue
        assert doc_b == doc_a and b_start > a_end, "a positive that does not follow A"
        if len(pair.first) + len(pair.second) < BUDGET:  # nothing was cut
            untruncated += 1
            assert b_start == a_end + 1, "the true next text skips tokens"
            assert (doc_a, a_start) in starts and (doc_a, b_start) in starts, \
                "A and B are whole segments"
    assert untruncated > 50  # the adjacency checks above did run


def test_nsp_negatives_come_uniformly_from_the_other_documents():
    rng = np.random.default_rng(6)
    docs, where, _ = corpus(rng, 3, max_segments=40)
    sources = np.zeros((3, 3), dtype=int)  # [A's document, B's document] over negatives
    for _ in range(20):
        for pair in nsp_examples(docs, rng, MAX_LENGTH):
            if pair.label == 1:
                sources[where[int(pair.first[0])][0], where[int(pair.second[0])][0]] += 1
    assert np.diagonal(sources).sum() == 0, "a negative from A's own document"
    for d in range(3):
        other = [e for e in range(3) if e != d]
        assert_binomial(int(sources[d, other[0]]), int(sources[d].sum()), 0.5,
                        f"negatives of document {d} from document {other[0]}")


def test_nsp_puts_the_unused_segments_of_a_negative_back():
    """After a positive the next A starts where B ended; after a negative, B's segments go
    back and the next A starts where A ended (BERT's `i -= num_unused_segments`)."""
    rng = np.random.default_rng(7)
    docs, where, _ = corpus(rng, 40, max_segments=8, max_segment_length=4)
    pairs = nsp_examples(docs, rng, 1000)  # nothing is ever cut
    previous = {}  # document -> where its next pair must start
    for pair in pairs:
        doc, a_start, a_end = locate(pair.first, where)
        assert a_start == previous.get(doc, 0)
        previous[doc] = a_end + 1 if pair.label == 1 else locate(pair.second, where)[2] + 1
    assert sum(p.label for p in pairs) > 20


def test_sop_swaps_the_same_two_consecutive_runs():
    rng = np.random.default_rng(1)
    docs, where, starts = corpus(rng, 300)
    pairs = sop_examples(docs, rng, MAX_LENGTH)
    labels = np.array([p.label for p in pairs])
    assert_binomial(int(labels.sum()), len(labels), 0.5, "SOP swaps")
    checked = 0
    for pair in pairs:
        assert pair.task == "sop"
        doc_a, a_start, a_end = locate(pair.first, where)
        doc_b, b_start, b_end = locate(pair.second, where)
        assert doc_a == doc_b, "SOP's two runs come from one document"
        earlier, later = ((a_start, a_end), (b_start, b_end)) if pair.label == 0 else \
            ((b_start, b_end), (a_start, a_end))
        assert later[0] > earlier[1], "label 0 must be in order, label 1 swapped"
        if len(pair.first) + len(pair.second) < BUDGET:
            checked += 1
            assert later[0] == earlier[1] + 1, "the two runs are not consecutive"
    assert checked > 50


def test_pairs_come_from_chunks_of_whole_segments_and_use_each_document():
    rng = np.random.default_rng(2)
    docs = [[np.full(3, 10 + 10 * d + s) for s in range(4)] for d in range(3)]
    for pair in sop_examples(docs, rng, 200):  # a budget larger than any document
        # The whole document is one chunk: A and B together are its four segments.
        assert sorted(np.concatenate([pair.first, pair.second]).tolist()) == \
            sorted(np.concatenate(docs[(pair.first[0] - 10) // 10]).tolist())


@st.composite
def truncation_cases(draw):
    a = draw(st.integers(1, 30))
    b = draw(st.integers(1, 30))
    return a, b, draw(st.integers(2, 70)), draw(st.one_of(st.none(), st.integers(0, 2**16)))


@given(truncation_cases())
def test_truncation_cuts_the_longer_part_one_token_at_a_time(case):
    a, b, max_tokens, seed = case
    first, second = np.arange(a), np.arange(100, 100 + b)
    rng = None if seed is None else np.random.default_rng(seed)
    x, y = truncate_pair(first, second, max_tokens, rng)
    # Expected lengths, by the rule: while too long, shorten the longer (the second on a tie).
    la, lb = a, b
    while la + lb > max_tokens:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    assert (len(x), len(y)) == (la, lb)
    for cut, whole in ((x, first), (y, second)):
        start = int(cut[0] - whole[0])
        np.testing.assert_array_equal(cut, whole[start:start + len(cut)])  # contiguous
        if rng is None:
            assert start == 0  # without an rng only the back is cut


def test_truncation_cuts_the_front_and_the_back_equally_often():
    rng = np.random.default_rng(3)
    fronts = sum(int(truncate_pair(np.arange(20), np.arange(1), 20, rng)[0][0] == 1)
                 for _ in range(2000))
    assert_binomial(fronts, 2000, 0.5, "cuts from the front")


V = 1000
PAD, CLS, SEP, MASK = 0, 1, 2, 3


def masking(**overrides):
    return MaskedLMCollator(V, mask_id=MASK, pad_id=PAD, special_ids=[CLS, SEP], **overrides)


def test_collator_lays_out_cls_a_sep_b_sep_and_masks_only_the_text():
    rng = np.random.default_rng(4)
    docs, _, _ = corpus(rng, 20, max_segment_length=6)
    pairs = nsp_examples(docs, rng, 24)
    collate = NextSentenceCollator(masking(), cls_id=CLS, sep_id=SEP, max_length=24)
    batch = collate(pairs, rng)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels",
                          "next_sentence_label"}
    np.testing.assert_array_equal(batch["next_sentence_label"], [p.label for p in pairs])
    chosen = batch["labels"] != LABEL_PAD_ID
    original = np.where(chosen, batch["labels"], batch["input_ids"])  # masks undone
    for b, pair in enumerate(pairs):
        a, s = len(pair.first), len(pair.second)
        n = a + s + 3
        expected = np.concatenate([[CLS], pair.first, [SEP], pair.second, [SEP]])
        np.testing.assert_array_equal(original[b, :n], expected)
        assert (batch["input_ids"][b, n:] == PAD).all()
        np.testing.assert_array_equal(batch["token_type_ids"][b],
                                      [0] * (a + 2) + [1] * (s + 1) + [0] * (original.shape[1]
                                                                             - n))
        np.testing.assert_array_equal(batch["attention_mask"][b, :n], 1)
        assert (batch["attention_mask"][b, n:] == 0).all()
        assert not chosen[b, [0, a + 1, n - 1]].any(), "[CLS] or [SEP] was masked"
        assert not chosen[b, n:].any()


def test_collator_cuts_an_overlong_pair_from_the_back_and_masks_statically():
    pair = SentencePair(np.arange(10, 30), np.arange(40, 45), 1, "sop")
    collate = SentenceOrderCollator(masking(static_seed=3), cls_id=CLS, sep_id=SEP,
                                    max_length=16)
    assert collate.static_seed == 3
    a = collate([pair], np.random.default_rng(0), indices=[12])
    b = collate([pair], np.random.default_rng(1), indices=[12])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    original = np.where(a["labels"] != LABEL_PAD_ID, a["labels"], a["input_ids"])[0]
    # 13 tokens of text: the longer A cut to 8 from its back, B whole.
    np.testing.assert_array_equal(original, np.r_[CLS, np.arange(10, 18), SEP,
                                                  np.arange(40, 45), SEP])
    assert a["sentence_order_label"].tolist() == [1]


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_a_batch_trains_the_pretraining_model(task):
    if task == "nsp":
        config, model_class, build, collator_class = (BertConfig.tiny(), BertForPreTraining,
                                                      nsp_examples, NextSentenceCollator)
        pad, cls_id, sep, mask = 0, 1, 2, 3
        max_length = config.max_position_embeddings
    else:
        config, model_class, build, collator_class = (AlbertConfig.tiny(),
                                                      AlbertForPreTraining, sop_examples,
                                                      SentenceOrderCollator)
        pad, cls_id, sep, mask = 0, 2, 3, 4
        max_length = 32
    rng = np.random.default_rng(5)
    docs = [[rng.integers(5, config.vocab_size, size=rng.integers(2, 9))
             for _ in range(rng.integers(2, 6))] for _ in range(6)]
    pairs = build(docs, rng, max_length)[:6]
    collate = collator_class(MaskedLMCollator(config.vocab_size, mask_id=mask, pad_id=pad,
                                              special_ids=[cls_id, sep]),
                             cls_id=cls_id, sep_id=sep, max_length=max_length)
    batch = collate(pairs, rng)
    model = model_class(config, seed=0).eval()
    before = model(**batch).loss
    assert np.isfinite(before.item()) and before.shape == ()
    before.backward()
    for p in model.parameters():
        p.data -= 0.1 * p.grad
    assert model(**batch).loss.item() < before.item()


def test_refused_corpora_name_the_problem():
    rng = np.random.default_rng(0)
    one_document = [[np.arange(10, 15), np.arange(15, 20)]]
    with pytest.raises(ValueError, match="corpus has 1 document; give at least 2"):
        nsp_examples(one_document, rng, 32)
    assert len(sop_examples(one_document, rng, 32)) == 1  # SOP needs no other document
    single_segments = [[np.arange(10, 15)], [np.arange(15, 20)]]
    for build in (nsp_examples, sop_examples):
        with pytest.raises(ValueError, match="no document has two segments"):
            build(single_segments, rng, 32)
        with pytest.raises(ValueError, match="max_length must be >= 5, got 4"):
            build(one_document * 2, rng, 4)
        with pytest.raises(ValueError, match="documents is empty"):
            build([], rng, 32)
        with pytest.raises(ValueError, match="document 1 must be a non-empty list"):
            build([one_document[0], []], rng, 32)
        with pytest.raises(ValueError, match="document 0, segment 1 must be a non-empty"):
            build([[np.arange(10, 12), np.array([], dtype=int)]], rng, 32)
        with pytest.raises(TypeError, match="segment 0 must hold integer token ids"):
            build([[np.array([1.5, 2.0]), np.arange(3)]], rng, 32)
    with pytest.raises(ValueError, match="random_next_prob must be in \\[0, 1\\], got 1.5"):
        nsp_examples(one_document * 2, rng, 32, random_next_prob=1.5)
    with pytest.raises(ValueError, match="swap_prob must be in \\[0, 1\\], got -0.5"):
        sop_examples(one_document, rng, 32, swap_prob=-0.5)


def test_refused_collators_and_pairs_name_the_problem():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="cls_id=5 is not among the masking collator's"):
        NextSentenceCollator(masking(), cls_id=5, sep_id=SEP)
    with pytest.raises(ValueError, match="sep_id=1000 is outside the vocabulary"):
        NextSentenceCollator(masking(), cls_id=CLS, sep_id=1000)
    with pytest.raises(ValueError, match="max_length must be >= 5, got 3"):
        NextSentenceCollator(masking(), cls_id=CLS, sep_id=SEP, max_length=3)
    with pytest.raises(TypeError, match="masking must be a MaskedLMCollator"):
        NextSentenceCollator(None, cls_id=CLS, sep_id=SEP)
    collate = NextSentenceCollator(masking(), cls_id=CLS, sep_id=SEP, max_length=16)
    good = SentencePair(np.arange(10, 14), np.arange(20, 23), 0, "nsp")
    with pytest.raises(ValueError, match="empty batch"):
        collate([], rng)
    with pytest.raises(ValueError, match="example 1 is a 'sop' pair but this collator does "
                                         "'nsp'"):
        collate([good, SentencePair(good.first, good.second, 0, "sop")], rng)
    with pytest.raises(TypeError, match="example 0 must be a SentencePair"):
        collate([np.arange(10, 14)], rng)
    with pytest.raises(ValueError, match="example 0 has label 2"):
        collate([SentencePair(good.first, good.second, 2, "nsp")], rng)
    with pytest.raises(ValueError, match="example 0: second must be a non-empty 1-D array"):
        collate([SentencePair(good.first, np.array([], dtype=int), 0, "nsp")], rng)
    with pytest.raises(ValueError, match="holds token id 1000, outside the vocabulary"):
        collate([SentencePair(np.array([1000]), good.second, 0, "nsp")], rng)
