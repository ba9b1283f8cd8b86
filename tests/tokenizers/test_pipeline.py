"""The stages of a tokenizer.json pipeline, one by one, against Hugging Face `tokenizers`:
normalizers (normalize_str), pre-tokenizers (pre_tokenize_str) and decoders (decode) on
hypothesis input, and the tokenizer.json of every stage read back to an equal step. (The
character classes of each stage, on every code point: test_unicode.py.)"""

import importlib.util
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npplm.tokenizers import decoders, normalizers, pre_tokenizers
from npplm.tokenizers.bpe import BYTE_FALLBACK_TOKENS

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None,
                                reason="needs tokenizers")

TEXT = st.text(max_size=30) | st.lists(st.sampled_from([*" ▁\t\nab,!éΣ²Ⓐ\u200d\x1c", "  "]),
                                       max_size=20).map("".join)


def _normalizer_pairs():
    from tokenizers import Regex
    from tokenizers import normalizers as hf

    return [(normalizers.Prepend("▁"), hf.Prepend("▁")),
            (normalizers.Replace(" ", "▁"), hf.Replace(" ", "▁")),
            (normalizers.Replace(r"\s+", " ", regex=True), hf.Replace(Regex(r"\s+"), " ")),
            (normalizers.Lowercase(), hf.Lowercase()),
            (normalizers.Strip(), hf.Strip()),
            (normalizers.Strip(right=False), hf.Strip(left=True, right=False))]


def _pre_tokenizer_pairs():
    from tokenizers import pre_tokenizers as hf

    return [(pre_tokenizers.Metaspace(), hf.Metaspace()),
            (pre_tokenizers.Metaspace(prepend_scheme="never"),
             hf.Metaspace(prepend_scheme="never")),
            (pre_tokenizers.Metaspace(prepend_scheme="first", split=False),
             hf.Metaspace(prepend_scheme="first", split=False)),
            (pre_tokenizers.WhitespaceSplit(), hf.WhitespaceSplit()),
            (pre_tokenizers.Whitespace(), hf.Whitespace())]


@settings(max_examples=60, deadline=None)
@given(text=TEXT)
def test_normalizers_and_pre_tokenizers_match(text):
    for ours, theirs in _normalizer_pairs():
        assert ours(text) == theirs.normalize_str(text), ours
    for ours, theirs in _pre_tokenizer_pairs():
        assert pre_tokenizers.pre_tokenize((ours,), text) == [
            w for w, _ in theirs.pre_tokenize_str(text)], ours


def _decoder_pairs():
    from tokenizers import decoders as hf

    return [(decoders.Metaspace(), hf.Metaspace()),
            (decoders.Metaspace(prepend_scheme="never"), hf.Metaspace(prepend_scheme="never")),
            (decoders.ByteFallback(), hf.ByteFallback()), (decoders.Fuse(), hf.Fuse()),
            (decoders.Strip(" ", 1, 0), hf.Strip(" ", 1, 0)),
            (decoders.Strip("a", 2, 1), hf.Strip("a", 2, 1)),
            (decoders.Replace("▁", " "), hf.Replace("▁", " ")),
            (decoders.BPEDecoder(), hf.BPEDecoder()),
            (decoders.WordPiece(), hf.WordPiece())]


@settings(max_examples=60, deadline=None)
@given(tokens=st.lists(st.sampled_from(["▁a", "a▁", "▁", "  a ", "aab", "##b", "b</w>",
                                        "<0xE4>", "<0xB8>", "<0x96>", "<0x41>", "<0xe4>",
                                        "<0xZZ>", "é"]), max_size=8))
def test_decoders_match(tokens):
    for ours, theirs in _decoder_pairs():
        assert decoders.decode((ours,), tokens) == theirs.decode(tokens), ours


def test_every_stage_reads_back_from_its_json():
    steps = [(normalizers.FROM_JSON, [normalizers.Prepend("▁"), normalizers.Replace("a", "b"),
                                      normalizers.UnicodeForm("NFKD"), normalizers.Lowercase(),
                                      normalizers.Strip(False, True),
                                      normalizers.BertNormalizer(lowercase=False)]),
             (pre_tokenizers.FROM_JSON, [pre_tokenizers.Metaspace("_", "first", False),
                                         pre_tokenizers.WhitespaceSplit(),
                                         pre_tokenizers.Whitespace(),
                                         pre_tokenizers.BertPreTokenizer()]),
             (decoders.FROM_JSON, [s for s, _ in [(decoders.Metaspace(), 0),
                                                  (decoders.Strip("x", 3, 2), 0),
                                                  (decoders.BPEDecoder("@@"), 0),
                                                  (decoders.WordPiece("##", False), 0)]])]
    for known, items in steps:
        for step in items:
            entry = json.loads(json.dumps(pre_tokenizers.to_json(step)))
            assert known[entry["type"]](entry) == step


def test_byte_pieces_are_sentencepieces_spelling():
    assert BYTE_FALLBACK_TOKENS[0] == "<0x00>" and BYTE_FALLBACK_TOKENS[0xE4] == "<0xE4>"
