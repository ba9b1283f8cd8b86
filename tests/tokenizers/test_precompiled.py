"""SentencePiece's compiled normalizer ("Precompiled") against its two references.

No download: SentencePiece trains tiny Unigram models here (once per module, in a tmp dir)
with the rules nmt_nfkc, nfkc_cf and nmt_nfkc_cf, and transformers' slow->fast converters
turn the nmt_nfkc model into a T5-style and an ALBERT-style tokenizer.json, as the real
files were made. Checked:
  - the normalizer alone, on the corpus and hypothesis text: Precompiled(blob) against
    tokenizers.normalizers.Precompiled (tokenizers' rule) and Precompiled.longest_match
    against sentencepiece's own normalizer (SentencePiece's rule);
  - whole tokenizers, id for id against tokenizers.Tokenizer.from_file, and saved back;
  - the darts-clone unit layout on a trie built by hand; malformed blobs.
StripAccents (ALBERT's files) is checked on every code point in test_unicode.py.
"""

import base64
import importlib.util
import json
import struct
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npplm import load_tokenizer
from npplm.tokenizers import TokenizerFormatError
from npplm.tokenizers.normalizers import FROM_JSON, Precompiled
from npplm.tokenizers.precompiled import DoubleArray
from tests.tokenizers.parity import CORPUS, TRAIN, assert_same_batch

needs_tokenizers = pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None,
                                      reason="needs tokenizers")

# What SentencePiece's rules rewrite, and the clusters where the two matching rules differ.
EXTRA = [
    "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３！？ ｶﾀｶﾅ ｶﾞｷﾞ ﾊﾟ",
    "ligatures ﬁ ﬂ ﬀ ﬃ Ǆ ǆ Ĳ ŉ ㍿ ㎏ ㏄ ℡ ™ ℃ № ½ ¼ ⅞ x² H₂O",
    "circled ①②③⑳ ⓐⓑ Ⓐ ㉑ ㊿ parenthesized ⑴ ⒜ roman Ⅰ Ⅱ Ⅻ ⅻ",
    "compatibility ﹏ ﹐ ︵ ︶ ｟ ｠ ＂ ＇ ＼ ～ ￥ ￦ ㄱ ㅏ ﾡ",
    "accents é e\u0301 ñ n\u0303 Å A\u030a ǖ u\u0308\u0304 ệ e\u0323\u0302 Ａ\u0301 ①\u0301",
    "CJK 漢字 かな カナ 한글 豈 兀 ⺀ ⼀ 〇 ㈱ ㋿",
    "emoji 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇺🇳 ❤️ #️⃣ ©️",
    "control \x01\x02\x07\x08\x1b\x7f\x80\x9f tabs\t\tnewline\n\r\ncr\r vt\x0b ff\x0c nel\x85",
    "spaces\u00a0\u2000\u2002\u2009\u200a\u202f\u205f\u3000 zero\u200b\u200c\u200d\u2060"
    "\ufeff soft\u00ad hyphen",
    "   leading and trailing   ",
    "multiple     internal    spaces",
    "Greek ΆΈΉ ά ΐ ς Σ, Cyrillic Ё й, Turkish İı, German ß ẞ, Armenian և, ǅ ǈ ǋ",
    "math 𝐀𝐁𝐂 𝒜 𝔸 𝕒 𝟎𝟏 ℌ ℍ ℕ ∮ ∯ ≠ ≮ <\u0338 =\u0338 ``quoted'' text",
    "Hangul jamo \u1100\u1161\u11a8 각 \u1112\u1161\u11ab",
    "Devanagari क़ ख़ क्ष Tamil கொ Thai ำ น้ำ",
]
TEXTS = CORPUS + EXTRA
RULES = ["nmt_nfkc", "nfkc_cf", "nmt_nfkc_cf"]

# Hypothesis text: any text, or pieces that build clusters across rules (marks after keys,
# "\r\n", ZWJ and flag sequences, half-width kana with voicing marks, jamo).
PIECES = [*"aA ①Ａｶﾞ\u0301\u0338\u0308\r\n\t\x00\x01\u200d\u3000ﬁ👩🇫🇷ᄀ\u1161\u11a8<é", "ab"]
TEXT = st.text(max_size=30) | st.lists(st.sampled_from(PIECES), max_size=15).map("".join)


# --- SentencePiece models, trained once ------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{rule: path of a tiny SentencePiece Unigram model normalizing with that rule}."""
    spm = pytest.importorskip("sentencepiece")
    directory = tmp_path_factory.mktemp("spm")
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in TRAIN + EXTRA * 3 if t.strip()),
                      encoding="utf-8")
    paths = {}
    for rule in RULES:
        prefix = directory / rule
        # T5's layout of special pieces: <pad> 0, </s> 1, <unk> 2, no <s>; ALBERT's pieces
        # [CLS] [SEP] [MASK] as control symbols.
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(prefix), vocab_size=600, model_type="unigram",
            normalization_rule_name=rule, character_coverage=1.0, hard_vocab_limit=False,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, control_symbols="[CLS],[SEP],[MASK]",
            minloglevel=2, num_threads=1)
        paths[rule] = prefix.with_suffix(".model")
    return paths


def _proto(path):
    pytest.importorskip("google.protobuf")
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


@pytest.fixture(scope="module")
def blobs(models):
    return {rule: _proto(path).normalizer_spec.precompiled_charsmap
            for rule, path in models.items()}


@pytest.fixture(scope="module")
def references(models, blobs):
    """{rule: (ours, tokenizers' Precompiled, sentencepiece's normalizer)}."""
    import sentencepiece as spm
    from tokenizers import normalizers as hf

    # SentencePiece's normalizer without its whitespace handling: the rules alone.
    return {rule: (Precompiled(blobs[rule]), hf.Precompiled(blobs[rule]),
                   spm.SentencePieceNormalizer(model_file=str(models[rule]),
                                               add_dummy_prefix=False,
                                               escape_whitespaces=False,
                                               remove_extra_whitespaces=False))
            for rule in RULES}


# --- the normalizer alone --------------------------------------------------------------------


@needs_tokenizers
@pytest.mark.parametrize("rule", RULES)
def test_normalizer_matches_tokenizers_and_sentencepiece(references, rule):
    ours, theirs, sentencepiece = references[rule]
    changed = 0
    for text in TEXTS:
        assert ours(text) == theirs.normalize_str(text), text
        assert ours.longest_match(text) == sentencepiece.normalize(text), text
        changed += ours(text) != text
    assert changed > len(EXTRA) // 2  # the rules did rewrite most of the extra texts


@needs_tokenizers
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_hypothesis_text_matches(references, text):
    for ours, theirs, sentencepiece in references.values():
        assert ours(text) == theirs.normalize_str(text)
        assert ours.longest_match(text) == sentencepiece.normalize(text)


def test_known_rewrites_and_where_the_two_rules_differ(blobs):
    nmt_nfkc = Precompiled(blobs["nmt_nfkc"])
    assert nmt_nfkc("ﬁ ①  Ｈｅｌｌｏ\x01\u3000ｶ㍿") == "fi 1  Hello カ株式会社"
    assert Precompiled(blobs["nfkc_cf"])("HeLLo Ｗ") == "hello w"
    # One cluster: tokenizers replaces it by the shortest key it starts with, SentencePiece
    # takes the longest key at each position.
    for text, tokenizers_rule, sentencepiece_rule in [
            ("①\u0301", "1", "1\u0301"), ("Ａ\u0301", "A", "\u00c1"), ("\r\n", " ", "  "),
            ("ｶﾞ", "\u30ab\u3099", "\u30ac")]:  # 6 bytes: tokenizers maps each char
        assert nmt_nfkc(text) == tokenizers_rule
        assert nmt_nfkc.longest_match(text) == sentencepiece_rule


def test_json_round_trip_and_repr(blobs):
    step = Precompiled(blobs["nmt_nfkc"])
    entry = json.loads(json.dumps(step.to_json()))
    assert FROM_JSON[entry["type"]](entry) == step
    assert repr(step) == f"Precompiled(<{len(blobs['nmt_nfkc'])}-byte charsmap>)"


# --- the darts-clone layout, by hand ---------------------------------------------------------


def _unit(label=0, has_leaf=False, offset=0, extension=False):
    """An internal unit: label bits 0..7, has_leaf bit 8, extension bit 9, offset 10..31."""
    stored = offset >> 8 if extension else offset
    assert stored << (8 if extension else 0) == offset and stored < 1 << 22
    return label | has_leaf << 8 | extension << 9 | stored << 10


def _leaf(value):
    return 1 << 31 | value


def _hand_built_trie():
    """Units and strings of the keys "a" -> "A" and "ab" -> "B"."""
    units = [0] * 0x400  # four whole blocks of 256 units, as darts-clone allocates them
    units[0] = _unit(offset=0x100, extension=True)        # root: children at 0x100 ^ byte
    a = 0x100 ^ ord("a")                                    # 0x161
    units[a] = _unit(ord("a"), has_leaf=True, offset=a ^ 0x200)  # "a" ends here...
    units[0x200] = _leaf(0)                                 # ... value: strings[0:] = "A"
    b = 0x200 ^ ord("b")                                    # 0x262, a child of "a"
    units[b] = _unit(ord("b"), has_leaf=True, offset=b ^ 0x300)
    units[0x300] = _leaf(2)                                 # "ab" -> strings[2:] = "B"
    return units, b"A\0B\0"


def _blob(units, strings):
    return struct.pack(f"<I{len(units)}I", 4 * len(units), *units) + strings


def test_hand_built_trie_walks_as_darts_clone_lays_it_out():
    units, strings = _hand_built_trie()
    trie = DoubleArray(units)
    assert list(trie.prefixes(b"abc")) == [(1, 0), (2, 2)]
    assert list(trie.prefixes(b"xab", start=1)) == [(2, 0), (3, 2)]
    assert list(trie.prefixes(b"b")) == [] and list(trie.prefixes(b"a\0b")) == [(1, 0)]
    assert trie.one_byte_keys() == {ord("a")}
    step = Precompiled(_blob(units, strings))
    # "a" and "b" are separate clusters: tokenizers' rule never sees the key "ab".
    assert step("abc") == "Abc" and step.longest_match("abc") == "Bc"
    assert step("a\u0301b") == "Ab"          # "a" + acute: one cluster, shortest key "a"
    assert step.longest_match("a\u0301b") == "A\u0301b"


def test_corrupt_tries_are_reported_when_reached():
    units, strings = _hand_built_trie()
    units[0x300] = _leaf(50)                  # "ab" -> past the end of the strings
    step = Precompiled(_blob(units, strings))
    assert step("ab") == "Ab"
    with pytest.raises(ValueError, match="points at byte 50 of the 4-byte"):
        step.longest_match("ab")
    units, strings = _hand_built_trie()
    units[0x161] = _unit(ord("a"), offset=0x161 ^ 0x5000)  # "a"'s children: far away
    with pytest.raises(ValueError, match=r"points at unit \d+, past its 1024 units"):
        Precompiled(_blob(units, strings))("a\u0301")


# --- malformed blobs -------------------------------------------------------------------------


def _write(tmp_path, normalizer):
    data = {"version": "1.0", "added_tokens": [], "normalizer": normalizer,
            "pre_tokenizer": {"type": "Metaspace"}, "post_processor": None, "decoder": None,
            "model": {"type": "Unigram", "unk_id": 0,
                      "vocab": [["<unk>", 0.0], ["▁A", -1.0], ["b", -1.0], ["▁", -2.0]]}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize("charsmap, message", [
    ("", "holds 0 bytes; it starts with a 4-byte trie size"),
    ("not base64!", "precompiled_charsmap is not valid base64"),
    ("QUJD", "holds 3 bytes"),
    (base64.b64encode(_blob(*_hand_built_trie())[:-600]).decode(),
     "trie size 4096 bytes exceeds the 3500 bytes that follow it"),
    (base64.b64encode(struct.pack("<I", 6) + bytes(8)).decode(), "trie size 6 is not a multiple"),
    (base64.b64encode(struct.pack("<I", 0) + b"a\0").decode(), "the trie is empty"),
    (base64.b64encode(struct.pack("<II", 4, 0) + b"\xff\0").decode(), "strings are not UTF-8"),
    (12, "must be a base64 string, not int"),
])
def test_malformed_blobs_are_reported(tmp_path, charsmap, message):
    _write(tmp_path, {"type": "Sequence", "normalizers": [
        {"type": "Precompiled", "precompiled_charsmap": charsmap}]})
    with pytest.raises(TokenizerFormatError, match=f"normalizer Precompiled: .*{message}"):
        load_tokenizer(tmp_path)


def test_a_well_formed_blob_loads(tmp_path):
    charsmap = base64.b64encode(_blob(*_hand_built_trie())).decode()
    _write(tmp_path, {"type": "Precompiled", "precompiled_charsmap": charsmap})
    assert load_tokenizer(tmp_path).tokenize("ab a") == ["▁A", "b", "▁A"]


# --- whole tokenizers: T5 and ALBERT files, as transformers converts them ---------------------


def _convert(model_path, layout):
    """tokenizer.json (a dict) of a SentencePiece model, by transformers' T5 or ALBERT
    converter; the slow tokenizer it reads is stood in for by the few attributes it uses."""
    pytest.importorskip("transformers")
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import AlbertConverter, T5Converter

    proto = _proto(model_path)
    ids = {p.piece: i for i, p in enumerate(proto.pieces)}
    slow = SimpleNamespace(vocab_file=str(model_path), convert_tokens_to_ids=ids.__getitem__,
                           _extra_ids=3, keep_accents=False, do_lower_case=True)
    converter = T5Converter if layout == "t5" else AlbertConverter
    tokenizer = converter(slow).converted()
    if layout == "t5":  # T5Tokenizer adds its sentinels as special tokens
        tokenizer.add_special_tokens([AddedToken(f"<extra_id_{i}>", special=True)
                                      for i in range(3)])
    return json.loads(tokenizer.to_str())


@pytest.fixture(scope="module", params=["t5", "albert"])
def converted(request, models, tmp_path_factory):
    from tokenizers import Tokenizer

    data = _convert(models["nmt_nfkc"], request.param)
    kinds = [n["type"] for n in data["normalizer"]["normalizers"]]
    assert "Precompiled" in kinds and (request.param == "t5") != ("StripAccents" in kinds)
    directory = tmp_path_factory.mktemp(request.param)
    (directory / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False),
                                              encoding="utf-8")
    return Tokenizer.from_file(str(directory / "tokenizer.json")), load_tokenizer(directory)


def _assert_same_ids(theirs, ours, texts):
    """parity.assert_same_ids, except that tokenizers' Unigram spells an unknown piece as the
    text it covers and we as the unknown token: tokens are compared with the unknown
    piece's spelling set aside."""
    unk = ours.model.unk_id
    for text in texts:
        expected, got = theirs.encode(text), ours.encode(text)
        assert (got.ids, got.token_type_ids) == (expected.ids, expected.type_ids), text
        plain = theirs.encode(text, add_special_tokens=False)
        assert [t if i != unk else None for t, i in zip(ours.tokenize(text), plain.ids)] == [
            t if i != unk else None for t, i in zip(plain.tokens, plain.ids)], text
    for a, b in zip(texts, texts[1:]):
        expected, got = theirs.encode(a, b), ours.encode(a, b)
        assert (got.ids, got.token_type_ids) == (expected.ids, expected.type_ids), (a, b)


@needs_tokenizers
def test_converted_tokenizers_give_the_same_ids(converted):
    theirs, ours = converted
    _assert_same_ids(theirs, ours, TEXTS + ["<extra_id_1> fill [MASK] me</s>"])
    assert_same_batch(theirs, ours, TEXTS, max_length=12)


@needs_tokenizers
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_converted_tokenizers_match_on_hypothesis_text(converted, text):
    theirs, ours = converted
    expected = theirs.encode(text)
    assert ours.encode(text).ids == expected.ids
    assert ours.decode(expected.ids, skip_special_tokens=True) == theirs.decode(expected.ids)


@needs_tokenizers
def test_saved_tokenizer_keeps_the_charsmap(converted, tmp_path):
    from tokenizers import Tokenizer

    _, ours = converted
    ours.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again == ours
    _assert_same_ids(Tokenizer.from_file(str(tmp_path / "tokenizer.json")), again, TEXTS)
