"""Normalizers: the text rewrites a tokenizer.json applies before cutting it into words.

Each is a small frozen dataclass, a callable str -> str, with to_json() giving its
tokenizer.json entry; FROM_JSON maps a "type" to the class that reads it. The ones
SentencePiece vocabularies need:

    Prepend("▁")           "Hello world" -> "▁Hello world"   (LLaMA-1/2: a leading space)
    Replace(" ", "▁")      "▁Hello world" -> "▁Hello▁world"  (spaces as "▁")
    NFKC() / NFC / NFD / NFKD   Unicode normalization forms (SentencePiece's default
                           nmt_nfkc is NFKC plus a few rules, shipped as a compiled
                           "Precompiled" table that we do not read)
    Lowercase(), Strip()   per-character lowercasing; trimming whitespace
    BertNormalizer(...)    BERT's clean-up, CJK spacing, accents and case (wordpiece.py),
                           as GPT-1's character-level BPE uses it

Python's unicodedata (Unicode 14.0 in Python 3.11) and the Rust crates of `tokenizers`
(Unicode 15 and 16) may normalize characters assigned since 14.0 differently.
"""

import unicodedata
from dataclasses import dataclass

from npplm.tokenizers.byte_level_bpe import onig_compatible
from npplm.tokenizers.wordpiece import _NEWER_LOWERCASE, _WHITESPACE_CHARS, BasicTokenizer


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
             "BertNormalizer": BertNormalizer.from_json}


def normalize(steps, text):
    """Apply the normalizers in order."""
    for step in steps:
        text = step(text)
    return text
