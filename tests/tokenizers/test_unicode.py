"""npplm/tokenizers/unicode.py against Hugging Face `tokenizers` on every code point.

Each character class we correct (BERT's clean-up, CJK, accents, lowercasing and split; NFD;
StripAccents' combining marks; Oniguruma's \\p{L} and \\p{N}; Rust regex's \\w) is checked
by running the stage that uses it on one text holding all 1.1M code points, in both
libraries: a character classed differently changes the output. When a new Python or
`regex` release moves a table, these tests name the first code point that differs, and the
lists in unicode.py are updated from it.
"""

import importlib.util
import unicodedata

import pytest

from npplm.tokenizers.byte_level_bpe import Split
from npplm.tokenizers.normalizers import BertNormalizer, StripAccents
from npplm.tokenizers.pre_tokenizers import BertPreTokenizer, Whitespace
from npplm.tokenizers.unicode import lowercase, nfd, parse_ranges

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None,
                                reason="needs tokenizers")

# Every code point but the surrogates, which a Python str may hold and Rust's may not.
ALL = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
EVERY_CODE_POINT = "".join(ALL)
needs_python_unicode_14 = pytest.mark.skipif(
    unicodedata.unidata_version != "14.0.0",
    reason="the character tables correct Python's Unicode 14.0 to tokenizers'; run this on "
           "Python 3.11 and update the tables from its failures")


def first_difference(mine, theirs):
    i = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b),
             min(len(mine), len(theirs)))
    return f"first difference at {i}: {mine[i - 5:i + 5]!r} != {theirs[i - 5:i + 5]!r}"


@needs_python_unicode_14
@pytest.mark.parametrize("lowercase, strip, clean", [(True, None, True), (False, True, False),
                                                     (True, False, False)])
def test_bert_normalizer_classifies_every_code_point_as_tokenizers(lowercase, strip, clean):
    """Clean-up (control, whitespace), CJK, accents (after NFD) and lowercasing."""
    from tokenizers import normalizers as hf

    mine = BertNormalizer(clean_text=clean, strip_accents=strip,
                          lowercase=lowercase)(EVERY_CODE_POINT)
    theirs = hf.BertNormalizer(clean_text=clean, strip_accents=strip,
                               lowercase=lowercase).normalize_str(EVERY_CODE_POINT)
    assert mine == theirs, first_difference(mine, theirs)


@needs_python_unicode_14
def test_bert_split_classifies_every_code_point_as_tokenizers():
    """Whitespace and punctuation: a character classed differently moves a word boundary."""
    from tokenizers import pre_tokenizers as hf

    theirs = [w for w, _ in hf.BertPreTokenizer().pre_tokenize_str(EVERY_CODE_POINT)]
    assert BertPreTokenizer()(EVERY_CODE_POINT) == theirs


@needs_python_unicode_14
def test_nfd_reorders_every_combining_mark_as_tokenizers():
    """NFD reorders combining marks by class: each mark after and before another one."""
    from tokenizers import normalizers as hf

    marks = [c for c in ALL if unicodedata.combining(c)]
    text = "x".join([*(c + "\u0334" for c in marks), *("\u0301" + c for c in marks)])
    mine, theirs = nfd(text), hf.NFD().normalize_str(text)
    assert mine == theirs, first_difference(mine, theirs)


@needs_python_unicode_14
def test_strip_accents_deletes_the_combining_marks_of_tokenizers():
    from tokenizers import normalizers as hf

    text = "a".join(ALL)
    assert StripAccents()(text) == hf.StripAccents().normalize_str(text)
    text = "Cre\u0300me bru\u0302le\u0301e \u0e19\u0e49\u0e33"
    assert StripAccents()(text) == "Creme brulee \u0e19\u0e33"


@pytest.mark.parametrize("cls", [r"\p{L}", r"\p{N}"])
def test_letters_and_digits_are_oniguruma_s(cls):
    """Our corrected \\p{L} / \\p{N} hold exactly the code points tokenizers' regex does."""
    from tokenizers import Regex
    from tokenizers import pre_tokenizers as hf

    theirs = hf.Split(Regex(f"[^{cls}]+"), behavior="removed")
    expected = "".join(w for w, _ in theirs.pre_tokenize_str(EVERY_CODE_POINT))
    assert "".join(Split(f"[^{cls}]+", "removed")(EVERY_CODE_POINT)) == expected


def test_word_characters_are_rust_regex_s():
    """Whitespace's \\w+|[^\\w\\s]+: a character classed differently (word, other, space)
    would move a boundary between runs."""
    from tokenizers import pre_tokenizers as hf

    theirs = [w for w, _ in hf.Whitespace().pre_tokenize_str(EVERY_CODE_POINT)]
    assert Whitespace()(EVERY_CODE_POINT) == theirs


def test_lowercase_is_per_character_as_rust():
    assert lowercase("ΟΔΥΣΣΕΥΣ") == "οδυσσευσ"           # no final "ς": Rust maps "Σ" alone
    assert lowercase("\ua7cb \U00010d50") == "\u0264 \U00010d70"  # newer than Python 3.11's


def test_ranges_are_parsed_inclusive():
    assert parse_ranges("0890-0891 08E2\n 110CD") == [(0x890, 0x891), (0x8E2, 0x8E2),
                                                       (0x110CD, 0x110CD)]
