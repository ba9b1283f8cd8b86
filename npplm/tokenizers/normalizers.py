"""Normalizers: the text rewrites a tokenizer.json applies before cutting it into words.

Each is a small frozen dataclass, a callable str -> str, with to_json() giving its
tokenizer.json entry; FROM_JSON maps a "type" to the class that reads it. The ones
SentencePiece vocabularies need:

    Prepend("▁")           "Hello world" -> "▁Hello world"   (LLaMA-1/2: a leading space)
    Replace(" ", "▁")      "▁Hello world" -> "▁Hello▁world"  (spaces as "▁")
    NFKC() / NFC / NFD / NFKD   Unicode normalization forms
    Precompiled(blob)      SentencePiece's compiled rules (nmt_nfkc: NFKC plus a few of its
                           own), the normalizer of real T5 / ALBERT / XLNet files; it lives
                           in precompiled.py with the double-array trie it reads
    Lowercase(), Strip()   per-character lowercasing; trimming whitespace
    StripAccents()         delete combining marks (ALBERT: after NFKD, "é" -> "e")
    BertNormalizer(...)    BERT's: delete control characters, spaces around CJK ideographs,
                           strip accents, lowercase (BERT's tokenizer, and GPT-1's BPE)

The character classes they use (whitespace, accents, control, CJK, lowercasing) are those
of tokenizers 0.23, in unicode.py. Python's NFC / NFKC tables (Unicode 14.0 in Python
3.11) and those of tokenizers' Rust crates may still normalize characters assigned since
14.0 differently.
"""

import functools
import re
import unicodedata
from dataclasses import dataclass

from npplm.tokenizers.precompiled import Precompiled
from npplm.tokenizers.unicode import (
    CJK,
    WHITESPACE,
    WHITESPACE_CHARS,
    character_classes,
    lowercase,
    nfd,
    onig_compatible,
)


def pattern_json(pattern, is_regex):
    """tokenizer.json's spelling of a pattern: {"Regex": ...} or {"String": ...}."""
    return {"Regex": pattern} if is_regex else {"String": pattern}


def pattern_from_json(entry):
    """(pattern, is_regex) of a tokenizer.json {"String": ...} or {"Regex": ...}."""
    if "Regex" in entry:
        return entry["Regex"], True
    return entry["String"], False


@dataclass(frozen=True)
class Prepend:
    """Put `prepend` before a non-empty text (even one that already starts with it)."""

    prepend: str = "▁"

    def __call__(self, text):
        return self.prepend + text if text else text

    def to_json(self):
        return {"type": "Prepend", "prepend": self.prepend}

    @classmethod
    def from_json(cls, entry):
        return cls(entry["prepend"])


@dataclass(frozen=True)
class Replace:
    """Replace every match of a string (or, with regex=True, an Oniguruma-style regex),
    left to right and without overlaps, by `content`."""

    pattern: str
    content: str
    regex: bool = False

    def __post_init__(self):
        object.__setattr__(self, "_regex", onig_compatible(self.pattern) if self.regex else None)

    def __call__(self, text):
        if self._regex is None:
            return text.replace(self.pattern, self.content)
        return self._regex.sub(lambda _: self.content, text)

    def to_json(self):
        return {"type": "Replace", "pattern": pattern_json(self.pattern, self.regex),
                "content": self.content}

    @classmethod
    def from_json(cls, entry):
        pattern, is_regex = pattern_from_json(entry["pattern"])
        return cls(pattern, entry["content"], is_regex)


@dataclass(frozen=True)
class UnicodeForm:
    """One of the four Unicode normalization forms: "NFC", "NFD", "NFKC" or "NFKD"."""

    form: str = "NFKC"

    def __post_init__(self):
        if self.form not in ("NFC", "NFD", "NFKC", "NFKD"):
            raise ValueError(f"Unicode form {self.form!r}: use NFC, NFD, NFKC or NFKD")

    def __call__(self, text):
        return unicodedata.normalize(self.form, text)

    def to_json(self):
        return {"type": self.form}

    @classmethod
    def from_json(cls, entry):
        return cls(entry["type"])


@dataclass(frozen=True)
class Lowercase:
    """Lowercase each character on its own, as Rust does (a final "Σ" becomes "σ")."""

    def __call__(self, text):
        return lowercase(text)

    def to_json(self):
        return {"type": "Lowercase"}

    @classmethod
    def from_json(cls, entry):
        return cls()


@dataclass(frozen=True)
class Strip:
    """Trim whitespace (Rust's White_Space characters) on the left and/or the right."""

    left: bool = True
    right: bool = True

    def __call__(self, text):
        if self.left:
            text = text.lstrip(WHITESPACE_CHARS)
        if self.right:
            text = text.rstrip(WHITESPACE_CHARS)
        return text

    def to_json(self):
        return {"type": "Strip", "strip_left": self.left, "strip_right": self.right}

    @classmethod
    def from_json(cls, entry):
        return cls(entry.get("strip_left", True), entry.get("strip_right", True))


@functools.cache
def _combining_marks():
    return re.compile(f"[{character_classes().combining_mark}]+")


@dataclass(frozen=True)
class StripAccents:
    """Delete every combining mark ("e\u0301" -> "e"; NFKD first splits "é" into those).

    Marks are General_Category M (Mn, Mc and Me), not only BERT's nonspacing Mn: Thai's
    "ำ" loses its vowel sign after NFKD too, as in tokenizers (whose marks are Unicode
    9.0's: unicode.character_classes().combining_mark).
    """

    def __call__(self, text):
        return text if text.isascii() else _combining_marks().sub("", text)

    def to_json(self):
        return {"type": "StripAccents"}

    @classmethod
    def from_json(cls, entry):
        return cls()


# ASCII text (the common case) skips the big tables: BERT's clean-up cut to ASCII deletes
# the control characters and turns \t \n \r into spaces.
_ASCII_CLEAN = {cp: None for cp in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]}
_ASCII_CLEAN.update({0x09: " ", 0x0A: " ", 0x0D: " "})
_BERT_WHITESPACE = re.compile(f"[{WHITESPACE}]")
_BERT_CJK = re.compile(f"[{CJK}]")


@functools.cache
def _bert_deleted():
    """(control characters, nonspacing marks): what BERT's normalizer deletes."""
    classes = character_classes()
    return re.compile(f"[{classes.control}]+"), re.compile(f"[{classes.nonspacing}]+")


@dataclass(frozen=True)
class BertNormalizer:
    """BERT's normalization, as tokenizers' BertNormalizer does it.

    clean_text            delete control characters, NUL and U+FFFD; whitespace -> " "
    handle_chinese_chars  put spaces around CJK ideographs, so each is a word
    strip_accents         NFD-decompose and drop nonspacing marks (é -> e); None: follow
                          `lowercase`, as BERT and tokenizers do
    lowercase             lowercase the text (an "uncased" vocabulary)

    BertNormalizer()("Crème  brûlée\\t!") == "creme  brulee !"

    The order is tokenizers': clean, CJK, strip accents, lowercase (BERT's tokenization.py
    lowercases first). Lowercasing is per character, as in Rust, so a word-final "Σ"
    becomes "σ", not the "ς" Python's str.lower() gives. The reference is BERT's
    `tokenization.py` (BasicTokenizer: _clean_text, _tokenize_chinese_chars,
    _run_strip_accents), arXiv:1810.04805.
    """

    clean_text: bool = True
    handle_chinese_chars: bool = True
    strip_accents: bool | None = None   # kept as given, for saving
    lowercase: bool = True

    def __post_init__(self):
        for name in ("clean_text", "handle_chinese_chars", "lowercase"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        strip = self.lowercase if self.strip_accents is None else bool(self.strip_accents)
        object.__setattr__(self, "_strip", strip)

    def __call__(self, text):
        if text.isascii():  # no CJK, no accents, and str.lower() is per character
            if self.clean_text:
                text = text.translate(_ASCII_CLEAN)
            return text.lower() if self.lowercase else text
        if self.clean_text:
            control, _ = _bert_deleted()
            text = _BERT_WHITESPACE.sub(" ", control.sub("", text))
        if self.handle_chinese_chars:
            text = _BERT_CJK.sub(r" \g<0> ", text)
        if self._strip:
            _, nonspacing = _bert_deleted()
            text = nonspacing.sub("", nfd(text))
        if self.lowercase:
            text = lowercase(text)
        return text

    def to_json(self):
        return {"type": "BertNormalizer", "clean_text": self.clean_text,
                "handle_chinese_chars": self.handle_chinese_chars,
                "strip_accents": self.strip_accents, "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, entry):
        return cls(entry.get("clean_text", True), entry.get("handle_chinese_chars", True),
                   entry.get("strip_accents"), entry.get("lowercase", True))


FROM_JSON = {"Prepend": Prepend.from_json, "Replace": Replace.from_json,
             **{form: UnicodeForm.from_json for form in ("NFC", "NFD", "NFKC", "NFKD")},
             "Lowercase": Lowercase.from_json, "Strip": Strip.from_json,
             "StripAccents": StripAccents.from_json, "Precompiled": Precompiled.from_json,
             "BertNormalizer": BertNormalizer.from_json}


def normalize(steps, text):
    """Apply the normalizers in order."""
    for step in steps:
        text = step(text)
    return text
