"""Byte-level BPE (GPT-2, RoBERTa, LLaMA-3, SmolLM2) against Hugging Face `tokenizers`.

No download: each oracle is trained here by `tokenizers` itself on the corpus below, saved
as tokenizer.json, and read back by npplm.load_tokenizer. Four real-shaped configurations:
GPT-2 (ByteLevel with its regex), RoBERTa (ByteLevel with a prefix space, <s> A </s>),
LLaMA-3 (Split on LLaMA-3's regex, then ByteLevel without regex, ignore_merges, a BOS
template) and SmolLM2 (Digits, then ByteLevel). Compared id for id on the corpus and on
hypothesis text; decoded text, and decode's defaults against transformers'; our trainer's
vocabulary and merges against BpeTrainer's. (Letters and digits on every code point:
test_unicode.py.)
"""

import importlib.util
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npplm import load_tokenizer
from npplm.tokenizers import TokenizerFormatError
from npplm.tokenizers.byte_level_bpe import (
    BYTE_ALPHABET,
    LLAMA3_PATTERN,
    ByteLevel,
    ByteLevelBPETokenizer,
    ByteLevelBPETrainer,
    Digits,
    Split,
    bytes_to_unicode,
    from_byte_level,
    gpt2_pre_tokenizer,
    llama3_pre_tokenizer,
    to_byte_level,
    train_byte_level_bpe,
)
from tests.tokenizers.parity import CORPUS, SPECIAL_TEXT, TRAIN, assert_decode_like_transformers

HAVE_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
needs_oracle = pytest.mark.skipif(not HAVE_TOKENIZERS, reason="needs tokenizers")

SPECIALS = ["<|endoftext|>", "<s>", "</s>", "<pad>", "<|begin_of_text|>"]
VOCAB_SIZE = 600


# --- the oracle --------------------------------------------------------------------------


def _hf_pre_tokenizer(config):
    from tokenizers import Regex, pre_tokenizers

    if config == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    if config == "roberta":
        return pre_tokenizers.ByteLevel(add_prefix_space=True)
    if config == "llama3":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    assert config == "smollm2"
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False)])


def _our_pre_tokenizer(config):
    return {"gpt2": gpt2_pre_tokenizer(), "roberta": gpt2_pre_tokenizer(add_prefix_space=True),
            "llama3": llama3_pre_tokenizer(),
            "smollm2": (Digits(individual_digits=True), ByteLevel())}[config]


def _train_hf(config, vocab_size=VOCAB_SIZE, min_frequency=2):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _hf_pre_tokenizer(config)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAIN, trainer)
    if config == "roberta":
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 1))
    elif config == "llama3":
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1",
                                          special_tokens=[(bos, tok.token_to_id(bos))])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


@pytest.fixture(scope="module", params=["gpt2", "roberta", "llama3", "smollm2"])
def pair_of(request, tmp_path_factory):
    """(config, tokenizers' Tokenizer, ours loaded from its tokenizer.json)."""
    if not HAVE_TOKENIZERS:
        pytest.skip("needs tokenizers")
    from tokenizers import Tokenizer

    config = request.param
    directory = tmp_path_factory.mktemp(config)
    data = json.loads(_train_hf(config).to_str())
    if config == "llama3":
        data["model"]["ignore_merges"] = True
    (directory / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    theirs = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return config, theirs, load_tokenizer(directory)


# --- parity --------------------------------------------------------------------------------


@needs_oracle
def test_corpus_ids_match(pair_of):
    config, theirs, ours = pair_of
    assert isinstance(ours, ByteLevelBPETokenizer)
    for text in CORPUS:
        expected = theirs.encode(text)
        got = ours.encode(text)
        assert got.ids == expected.ids, (config, text)
        assert got.token_type_ids == expected.type_ids
        plain = theirs.encode(text, add_special_tokens=False)
        assert ours.encode(text, add_special_tokens=False).ids == plain.ids
        assert ours.tokenize(text) == plain.tokens
    for a, b in zip(CORPUS, CORPUS[1:]):
        expected = theirs.encode(a, b)
        got = ours.encode(a, b)
        assert (got.ids, got.token_type_ids) == (expected.ids, expected.type_ids), (a, b)


@needs_oracle
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40) | st.text(st.sampled_from("ab 1\n\t'sé😀€.<|"), max_size=30))
def test_hypothesis_ids_match(pair_of, text):
    _, theirs, ours = pair_of
    assert ours.encode(text).ids == theirs.encode(text).ids


@needs_oracle
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decode_matches(pair_of, data):
    _, theirs, ours = pair_of
    ids = data.draw(st.lists(st.integers(0, ours.vocab_size - 1), max_size=20))
    for skip in (True, False):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(
            ids, skip_special_tokens=skip)


@needs_oracle
def test_decode_keeps_special_tokens_unless_asked_as_transformers(pair_of):
    theirs, ours = pair_of[-2:]
    assert_decode_like_transformers(ours, theirs, theirs.encode(*SPECIAL_TEXT).ids)


@needs_oracle
def test_batch_arrays_match(pair_of):
    _, theirs, ours = pair_of
    batch = ours.encode_batch(CORPUS[:6], truncation=True, max_length=12)
    assert batch["input_ids"].dtype == np.int64 and batch["input_ids"].shape[0] == 6
    theirs.enable_truncation(12)
    theirs.enable_padding(pad_id=0)
    try:
        expected = theirs.encode_batch(CORPUS[:6])
    finally:
        theirs.no_truncation()
        theirs.no_padding()
    np.testing.assert_array_equal(batch["input_ids"], [e.ids for e in expected])
    np.testing.assert_array_equal(batch["attention_mask"], [e.attention_mask for e in expected])


@needs_oracle
def test_tokenizers_byte_level_bpe_implementation(tmp_path):
    """tokenizers' own ByteLevelBPETokenizer class (its GPT-2 recipe), saved and reloaded."""
    from tokenizers import ByteLevelBPETokenizer as HFByteLevel

    theirs = HFByteLevel(add_prefix_space=False)
    theirs.train_from_iterator(TRAIN, vocab_size=500, min_frequency=2, show_progress=False,
                               special_tokens=["<|endoftext|>"])
    theirs.save(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(tmp_path)
    for text in CORPUS:
        assert ours.encode(text).ids == theirs.encode(text).ids, text


@needs_oracle
@pytest.mark.parametrize("config", ["gpt2", "llama3", "smollm2"])
def test_trainer_matches_bpe_trainer(config):
    """Same vocabulary (token -> id) and merges, in order, as tokenizers' BpeTrainer."""
    data = json.loads(_train_hf(config).to_str())
    expected_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                       for m in data["model"]["merges"]]
    trainer = ByteLevelBPETrainer(vocab_size=VOCAB_SIZE, min_frequency=2,
                                  special_tokens=tuple(SPECIALS))
    vocab, merges = trainer.train(TRAIN, _our_pre_tokenizer(config))
    assert merges == expected_merges
    assert vocab == data["model"]["vocab"]


# --- properties ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    return {name: train_byte_level_bpe(TRAIN, 500, special_tokens=["<|endoftext|>"],
                                       pre_tokenizer=steps)
            for name, steps in (("gpt2", gpt2_pre_tokenizer()),
                                ("llama3", llama3_pre_tokenizer()))}


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=60))
def test_decode_encode_round_trip(trained, text):
    for tok in trained.values():
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text
        assert tok.encode(text).ids == ids  # deterministic (second time from the cache)
        assert all(0 <= i < tok.vocab_size for i in ids)


def test_merges_are_in_the_vocabulary(trained):
    for tok in trained.values():
        assert set(BYTE_ALPHABET) <= set(tok.vocab)
        for a, b in tok.merges:
            assert a in tok.vocab and b in tok.vocab and a + b in tok.vocab


def test_bytes_to_unicode_is_gpt2s_table():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā"
    assert table[ord("a")] == "a" and table[0xAD] == "Ń"
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert to_byte_level("é \n") == "Ã©ĠĊ" and from_byte_level(["Ã©", "ĠĊ"]) == "é \n"
    assert from_byte_level(["Ã"]) == "\ufffd"  # a cut multi-byte character


def test_known_segmentation():
    vocab = {c: i for i, c in enumerate(BYTE_ALPHABET)}
    merges = [("l", "o"), ("lo", "w"), ("Ġ", "low"), ("e", "r")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = ByteLevelBPETokenizer(vocab, merges)
    assert tok.tokenize("lower lowest") == ["low", "er", "Ġlow", "e", "s", "t"]
    assert tok.decode(tok.encode("lower lowest").ids) == "lower lowest"


def test_save_and_load_round_trip(trained, tmp_path):
    for name, tok in trained.items():
        tok.save(tmp_path / name)
        again = load_tokenizer(tmp_path / name)
        assert again == tok
        assert again.encode(CORPUS[0]).ids == tok.encode(CORPUS[0]).ids


@needs_oracle
def test_saved_file_is_read_by_tokenizers(trained, tmp_path):
    from tokenizers import Tokenizer

    for name, tok in trained.items():
        tok.save(tmp_path / name)
        theirs = Tokenizer.from_file(str(tmp_path / name / "tokenizer.json"))
        for text in CORPUS:
            assert tok.encode(text).ids == theirs.encode(text).ids, (name, text)


def test_split_and_digits_steps():
    assert Split(r"\d", "isolated")("a1b22") == ["a", "1", "b", "2", "2"]
    assert Split(r"\d", "removed")("a1b22") == ["a", "b"]
    assert Digits(individual_digits=False)("ab٣٤5 12x") == ["ab", "٣٤5", " ", "12", "x"]
    assert Digits(individual_digits=True)("a12") == ["a", "1", "2"]


# --- errors --------------------------------------------------------------------------------


def test_decode_out_of_range_names_the_id(trained):
    tok = trained["gpt2"]
    with pytest.raises(IndexError, match=f"token id {tok.vocab_size} is out of range for a "
                                         f"vocabulary of {tok.vocab_size} ids"):
        tok.decode([1, tok.vocab_size])
    with pytest.raises(IndexError, match="token id -1"):
        tok.decode([-1])


def _saved(trained, tmp_path):
    trained["llama3"].save(tmp_path)
    return json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))


def _write(tmp_path, data):
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))


def test_unknown_model_and_stage_types_are_named(trained, tmp_path):
    data = _saved(trained, tmp_path)
    data["model"]["type"] = "WordLevel"
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match="model type 'WordLevel' is not supported"):
        load_tokenizer(tmp_path)
    for stage, value in (("decoder", "Metaspace"), ("normalizer", "Mystery"),
                         ("post_processor", "Mystery")):
        data = _saved(trained, tmp_path)
        data[stage] = {"type": value}
        _write(tmp_path, data)
        with pytest.raises(TokenizerFormatError, match=f"{stage} type '{value}' is not"):
            load_tokenizer(tmp_path)
    data = _saved(trained, tmp_path)
    data["pre_tokenizer"] = {"type": "Metaspace"}
    _write(tmp_path, data)
    # Without a ByteLevel pre-tokenizer it is a pipeline, for which a ByteLevel decoder is
    # no known stage.
    with pytest.raises(TokenizerFormatError, match="decoder type 'ByteLevel' is not supported"):
        load_tokenizer(tmp_path)
    data = _saved(trained, tmp_path)
    data["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithNext"
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match="Split MergedWithNext"):
        load_tokenizer(tmp_path)


def test_malformed_bpe_json_is_reported(trained, tmp_path):
    data = _saved(trained, tmp_path)
    data["model"]["merges"][3] = ["not", "there"]
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match="merge 3 .*'not' is not in the vocabulary"):
        load_tokenizer(tmp_path)
    data = _saved(trained, tmp_path)
    data["model"]["merges"][0] = "a b c"
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match=r"merges\[0\] = 'a b c'"):
        load_tokenizer(tmp_path)
    data = _saved(trained, tmp_path)
    del data["model"]["vocab"]
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match="malformed tokenizer.json: KeyError"):
        load_tokenizer(tmp_path)
    data = _saved(trained, tmp_path)
    data["model"]["byte_fallback"] = True
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match="byte_fallback = True"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(TokenizerFormatError, match="not valid JSON"):
        load_tokenizer(tmp_path)
