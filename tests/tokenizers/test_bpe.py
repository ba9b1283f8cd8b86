"""Character-level BPE (GPT-1 style) and SentencePiece-style BPE with byte fallback (LLaMA-1/2)
against Hugging Face `tokenizers`.

No download: each oracle is trained here by `tokenizers` (BpeTrainer) on parity.TRAIN,
saved as tokenizer.json and read by both libraries. Five configurations:
  gpt1          BertNormalizer (lowercase), BertPreTokenizer, BPE with "</w>" word ends,
                unknown token, BPEDecoder (openai-gpt's tokenizer.json layout)
  whitespace    Whitespace pre-tokenizer, plain BPE with an unknown token, no decoder
  prefix        Whitespace, BPE with "##" continuing-subword prefix, WordPiece decoder
  llama2        Prepend("▁") + Replace(" ", "▁") normalizer, no pre-tokenizer, BPE with
                byte fallback and fused unknowns, "<s> $A" template, Replace / ByteFallback /
                Fuse / Strip decoder (LLaMA-2's tokenizer.json layout)
  llama2_first  the same with Metaspace(prepend_scheme="first", split=False) instead of the
                normalizer (the layout of newer LLaMA-2 conversions)
Compared id for id (and token_type_ids, tokens, decoded text, padded batches) on the corpus
and on hypothesis text; our BPETrainer's vocabulary and merges against BpeTrainer's.
"""

import importlib.util
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from npplm import load_tokenizer
from npplm.tokenizers import TokenizerFormatError
from npplm.tokenizers.bpe import BPE, BYTE_FALLBACK_TOKENS, BPETrainer
from npplm.tokenizers.pipeline import Tokenizer, train_bpe, train_sentencepiece_bpe
from npplm.tokenizers.pre_tokenizers import Metaspace, Whitespace
from npplm.tokenizers.wordpiece import BasicTokenizer
from tests.tokenizers.parity import (
    CORPUS,
    SPECIAL_TEXT,
    TRAIN,
    assert_decode_like_transformers,
    assert_same_batch,
    assert_same_ids,
    load_both,
)

HAVE_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
needs_oracle = pytest.mark.skipif(not HAVE_TOKENIZERS, reason="needs tokenizers")
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
CONFIGS = ["gpt1", "whitespace", "prefix", "llama2", "llama2_first"]
SUFFIX = {"gpt1": {"end_of_word_suffix": "</w>"}, "prefix": {"continuing_subword_prefix": "##"}}


def _train_hf(config, vocab_size=600):
    """tokenizers' tokenizer.json for one configuration, trained on TRAIN."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    if config in ("gpt1", "whitespace", "prefix"):
        options = SUFFIX.get(config, {})
        tok = HFTokenizer(models.BPE(unk_token="<unk>", **options))
        if config == "gpt1":
            tok.normalizer = normalizers.BertNormalizer(lowercase=True)
            tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tok.decoder = decoders.BPEDecoder(suffix="</w>")
        else:
            tok.pre_tokenizer = pre_tokenizers.Whitespace()
        if config == "prefix":
            tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                      special_tokens=SPECIALS, show_progress=False, **options)
        tok.train_from_iterator(TRAIN, trainer)
        return json.loads(tok.to_str())
    # LLaMA-2: the byte pieces are ordinary vocabulary entries right after the specials.
    tok = HFTokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")  # words, to train
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + 200, min_frequency=2,
                                  special_tokens=SPECIALS[:3] + list(BYTE_FALLBACK_TOKENS),
                                  show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    data = json.loads(tok.to_str())
    data["added_tokens"] = data["added_tokens"][:3]
    chain = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                               decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    data["decoder"] = json.loads(chain.__getstate__())
    if config == "llama2":
        data["pre_tokenizer"] = None
    else:
        data["normalizer"] = None
        data["pre_tokenizer"] = json.loads(pre_tokenizers.Metaspace(
            prepend_scheme="first", split=False).__getstate__())
    template = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s>:1 $B:1",
                                             special_tokens=[("<s>", 1)])
    data["post_processor"] = json.loads(template.__getstate__())
    return data


@pytest.fixture(scope="module", params=CONFIGS)
def pair_of(request, tmp_path_factory):
    """(config, tokenizers' Tokenizer, ours) loaded from the same tokenizer.json."""
    if not HAVE_TOKENIZERS:
        pytest.skip("needs tokenizers")
    data = _train_hf(request.param)
    theirs, ours = load_both(data, tmp_path_factory.mktemp(request.param))
    return request.param, theirs, ours


# --- parity --------------------------------------------------------------------------------


@needs_oracle
def test_corpus_ids_match(pair_of):
    config, theirs, ours = pair_of
    assert isinstance(ours, Tokenizer) and isinstance(ours.model, BPE)
    assert ours.vocab_size == theirs.get_vocab_size()
    assert_same_ids(theirs, ours, CORPUS)


TRICKY = "ab 1\n\t'sé😀€.<>s/▁\x00"


@needs_oracle
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40) | st.lists(st.sampled_from([*TRICKY, "<s>", "</s>", "<unk>"]),
                                            max_size=30).map("".join))
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
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(
            ids, skip_special_tokens=skip)


@needs_oracle
def test_decode_keeps_special_tokens_unless_asked_as_transformers(pair_of):
    theirs, ours = pair_of[-2:]
    assert_decode_like_transformers(ours, theirs, theirs.encode(*SPECIAL_TEXT).ids)


@needs_oracle
def test_a_token_matched_after_normalization_is_named_by_its_normalized_form(tmp_path):
    data = _train_hf("gpt1")  # BERT's lowercasing normalizer
    data["added_tokens"].append({"id": len(data["model"]["vocab"]), "content": "New York",
                                 "single_word": False, "lstrip": False, "rstrip": False,
                                 "normalized": True, "special": False})
    theirs, ours = load_both(data, tmp_path)
    ids = theirs.encode("I love New York, NEW YORK!").ids
    assert ours.encode("I love New York, NEW YORK!").ids == ids
    assert ours.convert_ids_to_tokens(ids) == [theirs.id_to_token(i) for i in ids]
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False)
    assert "new york" in ours.decode(ids)


@needs_oracle
def test_padded_truncated_batches_match(pair_of):
    _, theirs, ours = pair_of
    assert_same_batch(theirs, ours, CORPUS[:8], max_length=12)


# --- training --------------------------------------------------------------------------------


def _our_words(config):
    if config == "gpt1":
        basic = BasicTokenizer()
        return [w for text in TRAIN for w in basic(text)]
    if config in ("whitespace", "prefix"):
        return [w for text in TRAIN for w in Whitespace()(text)]
    cut = Metaspace(prepend_scheme="never")
    return [w for text in TRAIN for w in cut("▁" + text.replace(" ", "▁"))]


def _our_training(config, vocab_size=600):
    from collections import Counter

    specials = SPECIALS if config not in ("llama2",) else SPECIALS[:3] + list(
        BYTE_FALLBACK_TOKENS)
    trainer = BPETrainer(vocab_size=vocab_size + (200 if config == "llama2" else 0),
                         min_frequency=2, special_tokens=tuple(specials),
                         **SUFFIX.get(config, {}))
    return trainer.train(Counter(_our_words(config)))


def _merges_of(data):
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
            for m in data["model"]["merges"]]


@needs_oracle
@pytest.mark.parametrize("config", ["whitespace", "llama2"])
def test_trainer_equals_bpe_trainer(config):
    """Same vocabulary (token -> id) and merges, in order, as tokenizers' BpeTrainer."""
    data = _train_hf(config)
    vocab, merges = _our_training(config)
    assert merges == _merges_of(data)
    assert vocab == data["model"]["vocab"]


def _is_greedy(words, merges, prefix=""):
    """Whether each merge joins a pair of the highest count at its step (any tie-break)."""
    from collections import Counter

    from npplm.tokenizers.bpe import merge_pair

    for a, b in merges:
        counts = Counter(p for w, c in words.items() for p in zip(w, w[1:]) for _ in range(c))
        if not counts or counts[a, b] < max(counts.values()):
            return False
        merged = a + b.removeprefix(prefix)
        words = Counter({tuple(merge_pair(list(w), a, b, merged)): c for w, c in words.items()})
    return True


@needs_oracle
@pytest.mark.parametrize("config", ["gpt1", "prefix"])
def test_trainer_with_prefix_or_suffix_is_greedy_like_bpe_trainer(config):
    """With "</w>" or "##" forms, tokenizers' ids for them follow hash order (see
    BPETrainer), so ties may break differently: both runs must be greedy, of one length."""
    from collections import Counter

    data = _train_hf(config, vocab_size=300)
    vocab, merges = _our_training(config, vocab_size=300)
    trainer = BPETrainer(**SUFFIX[config])
    known = set(vocab)
    words = Counter(tuple(trainer.spell(w, known)) for w in _our_words(config))
    prefix = SUFFIX[config].get("continuing_subword_prefix", "")
    assert len(vocab) == len(data["model"]["vocab"]) and len(merges) == len(_merges_of(data))
    assert _is_greedy(words, merges, prefix)
    assert _is_greedy(words, _merges_of(data), prefix)


def test_merges_apply_in_rank_order():
    vocab = {t: i for i, t in enumerate(["<unk>", "l", "o", "w", "e", "r</w>", "lo", "low",
                                         "er</w>", "ow"])}
    model = BPE(vocab, [("l", "o"), ("lo", "w"), ("e", "r</w>"), ("o", "w")],
                unk_token="<unk>", end_of_word_suffix="</w>")
    # l o w e r</w> -> lo w e r</w> -> low e r</w> -> low er</w>; "ow" (rank 3) never forms.
    assert model.segment("lower") == [vocab["low"], vocab["er</w>"]]
    assert model.segment("xlower") == [vocab["<unk>"], vocab["low"], vocab["er</w>"]]
    abc = BPE({"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4}, [("b", "c"), ("a", "b")])
    assert abc.segment("abc") == [0, 4]  # the lower rank first, not the leftmost pair


def test_unknowns_fuse_and_bytes_fall_back():
    vocab = {"<unk>": 0, "a": 1, "<0xC3>": 2, "<0xA9>": 3}
    assert BPE(vocab, [], unk_token="<unk>").segment("axyb") == [1, 0, 0, 0]
    assert BPE(vocab, [], unk_token="<unk>", fuse_unk=True).segment("axyb") == [1, 0]
    fallback = BPE(vocab, [], unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    assert fallback.segment("aéx") == [1, 2, 3, 0]
    assert BPE(vocab, []).segment("axa") == [1, 1]  # no unknown token: dropped
    with pytest.raises(ValueError, match="merge 0 .*'b' is not in the vocabulary"):
        BPE(vocab, [("a", "b")])
    with pytest.raises(ValueError, match="unknown token '<u>'"):
        BPE(vocab, [], unk_token="<u>")


# --- recipes, properties, saving ----------------------------------------------------------


@pytest.fixture(scope="module")
def recipes():
    return {"gpt1": train_bpe(TRAIN, 400),
            "llama2": train_sentencepiece_bpe(TRAIN, 600)}


def test_recipes_lay_out_the_vocabulary(recipes):
    llama = recipes["llama2"]
    assert [llama.id_to_token(i) for i in range(5)] == ["<unk>", "<s>", "</s>", "<0x00>",
                                                       "<0x01>"]
    ids = llama.encode("Hi there").ids
    assert ids[0] == llama.token_to_id("<s>") and llama.token_to_id("</s>") not in ids
    assert llama.convert_ids_to_tokens(ids[1:2])[0].startswith("▁")
    assert llama.decode(ids, skip_special_tokens=True) == "Hi there"
    assert llama.decode(ids) == "<s> Hi there"  # special tokens are kept by default
    gpt1 = recipes["gpt1"]
    assert gpt1.tokenize("the quick fox")[-1].endswith("</w>")
    assert gpt1.decode(gpt1.encode("The quick fox!").ids) == "the quick fox !"


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=50))
def test_byte_fallback_round_trip_and_determinism(recipes, text):
    """With byte fallback there is no unknown: decode(encode(s)) == s (no "▁" in s)."""
    assume("▁" not in text and not any(t in text for t in ("<s>", "</s>", "<unk>")))
    tok = recipes["llama2"]
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text
    assert tok.encode(text, add_special_tokens=False).ids == ids
    assert all(0 <= i < tok.vocab_size for i in ids)


def test_merges_are_in_the_vocabulary(recipes):
    for tok in recipes.values():
        prefix = tok.model.continuing_subword_prefix or ""
        for a, b in tok.model.merges:
            assert {a, b, a + b.removeprefix(prefix)} <= set(tok.vocab)


def test_save_and_load_round_trip(recipes, tmp_path):
    for name, tok in recipes.items():
        tok.save(tmp_path / name)
        again = load_tokenizer(tmp_path / name)
        assert again == tok
        for text in CORPUS:
            assert again.encode(text) == tok.encode(text)


@needs_oracle
def test_tokenizers_reads_what_we_save(recipes, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    for name, tok in recipes.items():
        tok.save(tmp_path / name)
        theirs = HFTokenizer.from_file(str(tmp_path / name / "tokenizer.json"))
        assert_same_ids(theirs, tok, CORPUS)


def test_cutting_lines_at_spaces_changes_no_ids(recipes):
    """The LLaMA layout encodes whole lines; cutting them before each "▁word" (for the word
    cache) must give the ids of the uncut line."""
    tok = recipes["llama2"]
    assert tok._cut("▁a▁b▁▁c") == ["▁a", "▁b", "▁▁c"]  # the cut is in use
    for text in CORPUS:
        if not any(t in text for t in ("<s>", "</s>", "<unk>")):
            line = "▁" + text.replace(" ", "▁") if text else ""
            assert tok.encode(text, add_special_tokens=False).ids == tok.model.segment(line)


# --- errors --------------------------------------------------------------------------------


def _saved(recipes, tmp_path):
    recipes["llama2"].save(tmp_path)
    return json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))


def _write(tmp_path, data):
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")


def test_decode_out_of_range_names_the_id(recipes):
    tok = recipes["llama2"]
    with pytest.raises(IndexError, match=f"token id {tok.vocab_size} is out of range"):
        tok.decode([1, tok.vocab_size])


@pytest.mark.parametrize("stage, key", [("normalizer", "normalizers"),
                                        ("decoder", "decoders")])
def test_unknown_stage_types_are_named(recipes, tmp_path, stage, key):
    data = _saved(recipes, tmp_path)
    data[stage][key][1] = {"type": "Mystery"}
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match=f"{stage} type 'Mystery' is not supported"):
        load_tokenizer(tmp_path)


def test_malformed_bpe_pipelines_are_reported(recipes, tmp_path):
    data = _saved(recipes, tmp_path)
    data["model"]["merges"][2] = ["not", "there"]
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match="merge 2 .*'not' is not in the vocabulary"):
        load_tokenizer(tmp_path)
    data = _saved(recipes, tmp_path)
    data["model"]["dropout"] = 0.1
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match="dropout = 0.1"):
        load_tokenizer(tmp_path)
    data = _saved(recipes, tmp_path)
    data["model"]["unk_token"] = "<nope>"
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match="unknown token '<nope>'"):
        load_tokenizer(tmp_path)
    data = _saved(recipes, tmp_path)
    data["pre_tokenizer"] = {"type": "Metaspace", "prepend_scheme": "sometimes"}
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match="prepend_scheme 'sometimes'"):
        load_tokenizer(tmp_path)
    data = _saved(recipes, tmp_path)
    data["model"]["type"] = "WordLevel"
    _write(tmp_path, data)
    with pytest.raises(TokenizerFormatError, match="model type 'WordLevel' is not supported"):
        load_tokenizer(tmp_path)
