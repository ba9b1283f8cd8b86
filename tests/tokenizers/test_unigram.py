"""The Unigram model (T5, ALBERT) and its trainer against Hugging Face `tokenizers`.

No download: each oracle is trained here by `tokenizers`' UnigramTrainer on parity.TRAIN,
saved as tokenizer.json and read by both libraries. Three configurations:
  t5             WhitespaceSplit + Metaspace, "$A </s>" template, Metaspace decoder
  albert         Replace + NFKC + Lowercase normalizer, "[CLS] $A [SEP]" and
                 "[CLS] $A [SEP] $B [SEP]" with token_type_ids 1 for B
  unigram_bytes  t5 with byte_fallback and the 256 "<0x..>" pieces
Compared id for id on the corpus and hypothesis text, decoded text and padded batches.
Training: exact parity is not reachable (see UnigramTrainer), so we check the same pieces,
scores equal to rounding outside the penalized characters, and the same segmentations on
nearly every word; and the seed step against tokenizers' own unit test.
"""

import importlib.util
import json
import math
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npplm import load_tokenizer
from npplm.tokenizers import TokenizerFormatError
from npplm.tokenizers.bpe import BYTE_FALLBACK_TOKENS
from npplm.tokenizers.pipeline import train_unigram
from npplm.tokenizers.pre_tokenizers import Metaspace, WhitespaceSplit, pre_tokenize
from npplm.tokenizers.unigram import (
    Unigram,
    UnigramTrainer,
    digamma,
    json_float,
    log_sum_exp,
    seed_pieces,
    stable_float,
)
from tests.tokenizers.parity import (
    CORPUS,
    SPECIAL_TEXT,
    TRAIN,
    assert_decode_like_transformers,
    assert_same_batch,
    assert_same_ids,
    load_both,
)
from tests.tolerances import assert_close

HAVE_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
needs_oracle = pytest.mark.skipif(not HAVE_TOKENIZERS, reason="needs tokenizers")
T5_SPECIALS = ["<pad>", "</s>", "<unk>"]
T5_WORDS = (WhitespaceSplit(), Metaspace())


def _train_hf(config, vocab_size=500, texts=TRAIN):
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from tokenizers import pre_tokenizers as pre

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre.Sequence([pre.WhitespaceSplit(), pre.Metaspace()])
    tok.decoder = decoders.Metaspace()
    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]"] if config == "albert" else T5_SPECIALS
    if config == "albert":
        tok.normalizer = normalizers.Sequence([normalizers.Replace("``", '"'),
                                               normalizers.NFKC(), normalizers.Lowercase()])
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    if config == "albert":
        ids = [(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=ids)
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    data = json.loads(tok.to_str())
    if config == "unigram_bytes":
        data["model"]["byte_fallback"] = True
        low = min(score for _, score in data["model"]["vocab"])
        data["model"]["vocab"] += [[t, low - 1.0] for t in BYTE_FALLBACK_TOKENS]
    return data


@pytest.fixture(scope="module", params=["t5", "albert", "unigram_bytes"])
def pair_of(request, tmp_path_factory):
    if not HAVE_TOKENIZERS:
        pytest.skip("needs tokenizers")
    theirs, ours = load_both(_train_hf(request.param), tmp_path_factory.mktemp(request.param))
    return request.param, theirs, ours


# --- parity --------------------------------------------------------------------------------


@needs_oracle
def test_corpus_ids_match(pair_of):
    config, theirs, ours = pair_of
    assert isinstance(ours.model, Unigram) and ours.vocab_size == theirs.get_vocab_size()
    assert_same_ids(theirs, ours, CORPUS)
    if config == "albert":  # [CLS] A [SEP] B [SEP], B's part with type id 1
        encoding = ours.encode("a b", "c")
        assert encoding.token_type_ids[-1] == 1 and encoding.token_type_ids[0] == 0


@needs_oracle
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40) | st.lists(st.sampled_from(
    [*"ab xy\n\t'é😀.▁\x00", "aaaa", "yyyyyyy", "</s>", "<unk>", "[CLS]"]),
    max_size=20).map("".join))
def test_hypothesis_ids_match(pair_of, text):
    _, theirs, ours = pair_of
    expected = theirs.encode(text)
    assert ours.encode(text).ids == expected.ids
    for skip in (True, False):
        assert ours.decode(expected.ids, skip) == theirs.decode(expected.ids, skip)


@needs_oracle
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decode_of_any_ids_matches(pair_of, data):
    _, theirs, ours = pair_of
    ids = data.draw(st.lists(st.integers(0, ours.vocab_size - 1), max_size=20))
    for skip in (True, False):
        assert ours.decode(ids, skip) == theirs.decode(ids, skip)


@needs_oracle
def test_decode_keeps_special_tokens_unless_asked_as_transformers(pair_of):
    theirs, ours = pair_of[-2:]
    assert_decode_like_transformers(ours, theirs, theirs.encode(*SPECIAL_TEXT).ids)


@needs_oracle
def test_padded_truncated_batches_match(pair_of):
    _, theirs, ours = pair_of
    assert_same_batch(theirs, ours, CORPUS[:8], max_length=10)


@needs_oracle
def test_scores_are_read_as_tokenizers_reads_them(tmp_path):
    """tokenizers reads a score, then writes back the float it holds: json_float agrees."""
    from tokenizers import Tokenizer, models

    rng = random.Random(0)
    scores = [-rng.uniform(0.0, 20.0) for _ in range(300)]
    tok = Tokenizer(models.Unigram([("<unk>", 0.0)] + [(f"t{i}", s) for i, s in
                                                         enumerate(scores)], 0, False))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    written = json.loads(path.read_text())["model"]["vocab"][1:]   # repr of its floats
    read_back = json.loads(Tokenizer.from_file(str(path)).to_str())["model"]["vocab"][1:]
    assert [json_float(repr(s)) for s, in ((w[1],) for w in written)] == [r[1] for r in
                                                                         read_back]
    assert any(json_float(repr(s)) != s for s in scores)  # the case that needs it occurs
    assert all(json_float(repr(stable_float(s))) == stable_float(s) for s in scores)


# --- the model -------------------------------------------------------------------------------


def test_viterbi_takes_the_best_segmentation():
    pieces = [("<unk>", 0.0), ("a", 0.0), ("b", 0.0), ("c", 0.0), ("d", 0.0), ("cd", 1.0),
              ("ab", 2.0), ("abc", 5.0), ("abcd", 10.0)]
    model = Unigram(pieces, unk_id=0)
    assert model.tokens("abcdacdxx") == ["abcd", "a", "cd", "xx"]  # unknowns fused
    assert model.segment("abcdacdxx") == [8, 1, 5, 0]
    assert model.unk_score == 0.0 - 10.0
    with pytest.raises(ValueError, match="'x' is not in the vocabulary"):
        Unigram(pieces[1:]).segment("ax")
    with pytest.raises(ValueError, match="unk_id 9 is outside"):
        Unigram(pieces, unk_id=9)


def test_byte_fallback_spells_unknown_runs_in_bytes():
    pieces = [("<unk>", 0.0), ("a", -1.0), *((t, -5.0) for t in BYTE_FALLBACK_TOKENS)]
    model = Unigram(pieces, unk_id=0, byte_fallback=True)
    assert model.segment("aé") == [1, 2 + 0xC3, 2 + 0xA9]


def test_digamma_and_log_sum_exp():
    assert_close(digamma(1.0), -0.5772156649015329, kind="float64")  # -Euler's gamma
    assert_close(digamma(0.25), -math.pi / 2 - 3 * math.log(2) - 0.5772156649015329,
                 kind="float64")
    assert_close(log_sum_exp(0.0, 0.0), math.log(2.0), kind="exact64")
    assert log_sum_exp(0.0, -60.0) == 0.0  # more than 50 nats below: dropped


# --- training --------------------------------------------------------------------------------


def test_seeds_equal_tokenizers_unit_test():
    """tokenizers' test_unigram_chars: characters by count, then substrings by freq x len."""
    seeds = seed_pieces({"This is a": 1, "こんにちは友達": 1})
    assert [p for p, _ in seeds] == ["s", "i", " ", "達", "友", "ん", "は", "に", "ち", "こ",
                                     "h", "a", "T", "is ", "s "]
    expected = [-2.5649493574615367] * 3 + [-3.258096538021482] * 10 + [
        -1.4663370687934272, -1.8718021769015916]
    assert_close([s for _, s in seeds], expected, kind="exact64")


@needs_oracle
def test_trainer_agrees_with_unigram_trainer():
    """Same pieces as tokenizers; scores equal to rounding but for the characters the last
    step penalizes (hash order there); the same best segmentation of (nearly) every word."""
    data = _train_hf("t5", vocab_size=400, texts=TRAIN * 2)
    theirs = dict(data["model"]["vocab"])
    words = Counter(w for text in TRAIN * 2 for w in pre_tokenize(T5_WORDS, text))
    pieces, unk_id = UnigramTrainer(vocab_size=400, special_tokens=tuple(T5_SPECIALS),
                                    unk_token="<unk>").train(words)
    ours = dict(pieces)
    assert [t for t, _ in pieces[:3]] == T5_SPECIALS and unk_id == 2
    assert set(ours) == set(theirs) and len(pieces) == 400
    multi = sorted(t for t in ours if len(t) > 1)
    assert_close([ours[t] for t in multi], [theirs[t] for t in multi], kind="exact64")
    # A character missing from the last model gets min score + k * 1e-4, k in hash order.
    chars = [t for t in ours if len(t) == 1]
    assert all(abs(ours[t] - theirs[t]) <= 1e-4 * len(chars) for t in chars)
    model_theirs, model_ours = Unigram(data["model"]["vocab"], 2), Unigram(pieces, unk_id)
    test_words = [w for text in CORPUS for w in pre_tokenize(T5_WORDS, text)]
    same = sum(model_theirs.tokens(w) == model_ours.tokens(w) for w in test_words)
    assert same >= 0.97 * len(test_words)


@pytest.fixture(scope="module")
def trained():
    return train_unigram(TRAIN, 300)


def test_trained_tokenizer_covers_its_corpus_and_round_trips(trained):
    unk = trained.token_to_id("<unk>")
    for text in TRAIN[:20]:
        if any(t in text for t in T5_SPECIALS):
            continue  # special tokens in the text are skipped when decoding
        ids = trained.encode(text).ids
        assert ids[-1] == trained.token_to_id("</s>")  # T5: EOS after the text, no BOS
        assert unk not in ids
        # Metaspace: single spaces
        assert trained.decode(ids, skip_special_tokens=True) == " ".join(text.split())
    assert train_unigram(TRAIN, 300) == trained  # deterministic


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=40))
def test_encoding_is_deterministic_and_in_the_vocabulary(trained, text):
    ids = trained.encode(text).ids
    assert trained.encode(text).ids == ids
    assert all(0 <= i < trained.vocab_size for i in ids)


def test_save_and_load_round_trip(trained, tmp_path):
    trained.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again == trained and again.pad_token == "<pad>"
    for text in CORPUS:
        assert again.encode(text) == trained.encode(text)


@needs_oracle
def test_tokenizers_reads_what_we_save(trained, tmp_path):
    from tokenizers import Tokenizer

    trained.save(tmp_path)
    assert_same_ids(Tokenizer.from_file(str(tmp_path / "tokenizer.json")), trained, CORPUS)


# --- errors --------------------------------------------------------------------------------


def test_malformed_unigram_json_is_reported(trained, tmp_path):
    def write(change):
        data = trained.to_tokenizer_json()
        change(data)
        (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")

    write(lambda d: d["model"].update(vocab={"a": 1}))
    with pytest.raises(TokenizerFormatError, match=r"list of \[token, score\] pairs"):
        load_tokenizer(tmp_path)
    write(lambda d: d["model"].update(unk_id=10_000))
    with pytest.raises(TokenizerFormatError, match="unk_id 10000 is outside"):
        load_tokenizer(tmp_path)
    write(lambda d: d.update(normalizer={"type": "Precompiled", "precompiled_charsmap": ""}))
    with pytest.raises(TokenizerFormatError, match="Precompiled: precompiled_charsmap holds 0"):
        load_tokenizer(tmp_path)
    write(lambda d: d.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "UnicodeScripts"}]}))
    with pytest.raises(TokenizerFormatError, match="pre_tokenizer type 'UnicodeScripts'"):
        load_tokenizer(tmp_path)
    with pytest.raises(IndexError, match="token id -3"):
        trained.decode([-3])
