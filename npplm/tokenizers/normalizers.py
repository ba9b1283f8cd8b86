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
    BertNormalizer(...)    BERT's clean-up, CJK spacing, accents and case (wordpiece.py),
                           as GPT-1's character-level BPE uses it

Python's unicodedata (Unicode 14.0 in Python 3.11) and the Rust crates of `tokenizers`
(Unicode 15 and 16) may normalize characters assigned since 14.0 differently.
"""

import functools
import re
import unicodedata
from dataclasses import dataclass

from npplm.tokenizers.byte_level_bpe import onig_compatible
from npplm.tokenizers.precompiled import Precompiled
from npplm.tokenizers.wordpiece import (
    _NEWER_LOWERCASE,
    _WHITESPACE_CHARS,
    BasicTokenizer,
    _char_class,
    _parse_ranges,
)


def _pattern_json(pattern, is_regex):
    return {"Regex": pattern} if is_regex else {"String": pattern}


def _pattern_from_json(entry):
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
        return {"type": "Replace", "pattern": _pattern_json(self.pattern, self.regex),
                "content": self.content}

    @classmethod
    def from_json(cls, entry):
        pattern, is_regex = _pattern_from_json(entry["pattern"])
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
        text = text.replace("\u03a3", "\u03c3").lower()
        return text.translate(_NEWER_LOWERCASE) if not text.isascii() else text

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
            text = text.lstrip(_WHITESPACE_CHARS)
        if self.right:
            text = text.rstrip(_WHITESPACE_CHARS)
        return text

    def to_json(self):
        return {"type": "Strip", "strip_left": self.left, "strip_right": self.right}

    @classmethod
    def from_json(cls, entry):
        return cls(entry.get("strip_left", True), entry.get("strip_right", True))


# Combining marks (General_Category M: Mn, Mc, Me) as tokenizers' StripAccents draws them:
# from a Rust crate frozen at Unicode 9.0. Relative to Python 3.11's Unicode 14.0, these
# became marks after 9.0, so tokenizers keeps them ...
_MARKS_AFTER_9 = _parse_ranges("""
    07FD 0898-089F 08CA-08D3 09FE 0AFA-0AFF 0B55 0C04 0C3C 0D00 0D3B-0D3C 0D81 0EBA 1715
    180F 1ABF-1ACE 1CF7 1DF6-1DFA A82C A8FF 10D24-10D27 10EAB-10EAC 10F46-10F50 10F82-10F85
    11070 11073-11074 110C2 11145-11146 111C9 111CE-111CF 1133B 1145E 1182C-1183A
    11930-11935 11937-11938 1193B-1193E 11940 11942-11943 119D1-119D7 119DA-119E0 119E4
    11A01-11A0A 11A33-11A39 11A3B-11A3E 11A47 11A51-11A5B 11A8A-11A99 11D31-11D36 11D3A
    11D3C-11D3D 11D3F-11D45 11D47 11D8A-11D8E 11D90-11D91 11D93-11D97 11EF3-11EF6 16F4F
    16F7F-16F87 16FE4 16FF0-16FF1 1CF00-1CF2D 1CF30-1CF46 1E130-1E136 1E2AE 1E2EC-1E2EF
""")
# ... and these two Vedic signs were marks (Mc) in 9.0 and are letters now.
_MARKS_IN_9 = _parse_ranges("1CF2-1CF3")


@functools.cache
def _combining_marks():
    """The regex of the characters StripAccents deletes (built once: ~0.2 s)."""
    marks = bytearray(0x110000)
    for cp in range(0x110000):
        if unicodedata.category(chr(cp))[0] == "M":
            marks[cp] = 1
    for ranges, flag in ((_MARKS_AFTER_9, 0), (_MARKS_IN_9, 1)):
        for a, b in ranges:
            marks[a:b + 1] = bytes([flag]) * (b - a + 1)
    runs = [(m.start(), m.end() - 1) for m in re.finditer(b"\x01+", marks)]
    return re.compile(f"[{_char_class(runs)}]+")


@dataclass(frozen=True)
class StripAccents:
    """Delete every combining mark ("e\u0301" -> "e"; NFKD first splits "é" into those).

    Marks are General_Category M (Mn, Mc and Me), not only BERT's nonspacing Mn: Thai's
    "ำ" loses its vowel sign after NFKD too, as in tokenizers.
    """

    def __call__(self, text):
        return text if text.isascii() else _combining_marks().sub("", text)

    def to_json(self):
        return {"type": "StripAccents"}

    @classmethod
    def from_json(cls, entry):
        return cls()


@dataclass(frozen=True)
class BertNormalizer:
    """BERT's normalization (npplm.tokenizers.wordpiece.BasicTokenizer.normalize)."""

    clean_text: bool = True
    handle_chinese_chars: bool = True
    strip_accents: bool | None = None
    lowercase: bool = True

    def __post_init__(self):
        object.__setattr__(self, "_basic", BasicTokenizer(
            lowercase=self.lowercase, strip_accents=self.strip_accents,
            clean_text=self.clean_text, handle_chinese_chars=self.handle_chinese_chars))

    def __call__(self, text):
        return self._basic.normalize(text)

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
