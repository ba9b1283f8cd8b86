"""Pre-tokenizers: how a normalized text is cut into the words a model segments one by one.

Merges (BPE) and Viterbi paths (Unigram) never cross a word boundary, so this step decides
what a token can span. Each step is a frozen dataclass, callable on one piece of text and
returning its pieces, with to_json() and a from_json entry in FROM_JSON.

    Metaspace()         " " -> "▁", "▁" put before the text, then cut before each "▁":
                        "Hey you" -> "▁Hey", "▁you" (SentencePiece's view of spaces; T5,
                        ALBERT; LLaMA-2's newer files with split=False)
    WhitespaceSplit()   cut on whitespace, dropped: "Hey  you" -> "Hey", "you"
    Whitespace()        runs of word characters or of other non-space characters:
                        "Hey, you!" -> "Hey", ",", "you", "!"
    BertPreTokenizer()  BERT's split: on whitespace, each punctuation mark alone:
                        "Don't!" -> "Don", "'", "t", "!" (BERT's tokenizer, GPT-1's BPE)
    Split, Digits       regex splits (defined in byte_level_bpe.py)

Metaspace's prepend_scheme "first" puts "▁" only before the piece that starts the text:
not after an added token, nor after leading whitespace cut by an earlier step. A piece is
taken to start its parent when it is the first one cut from it and a prefix of it.
"""

import functools
import re
from dataclasses import dataclass

import regex

from npplm.tokenizers.byte_level_bpe import Digits, Split
from npplm.tokenizers.unicode import RUST_WORD, WHITESPACE, character_classes


@dataclass(frozen=True)
class Metaspace:
    """Spaces as `replacement` ("▁"), one prepended, then (split) a cut before each "▁".

    prepend_scheme  "always": put "▁" before every piece not starting with one; "first":
                    only before the piece that starts the text; "never"
    split           cut before every "▁" (the "▁" starts the next piece); False keeps one
    """

    replacement: str = "▁"
    prepend_scheme: str = "always"
    split: bool = True
    uses_start = True  # called with at_start (see the module docstring)

    def __post_init__(self):
        if self.prepend_scheme not in ("always", "first", "never"):
            raise ValueError(f"prepend_scheme {self.prepend_scheme!r}: use 'always', 'first' "
                             "or 'never'")
        if len(self.replacement) != 1:
            raise ValueError(f"replacement {self.replacement!r} must be one character")

    def __call__(self, piece, at_start=True):
        if not piece:
            return []
        r = self.replacement
        prepend = self.prepend_scheme == "always" or (self.prepend_scheme == "first"
                                                       and at_start)
        if r not in piece and " " not in piece:  # the common word (after WhitespaceSplit)
            return [r + piece if prepend else piece]
        piece = piece.replace(" ", r)
        if prepend and not piece.startswith(r):
            piece = r + piece
        if not self.split:
            return [piece]
        first, *rest = piece.split(r)  # "▁Hey▁▁you" -> "", "Hey", "", "you"
        return ([first] if first else []) + [r + part for part in rest]

    def to_json(self):
        return {"type": "Metaspace", "replacement": self.replacement,
                "prepend_scheme": self.prepend_scheme, "split": self.split}

    @classmethod
    def from_json(cls, entry):
        scheme = entry.get("prepend_scheme")
        if scheme is None:  # files written before tokenizers 0.19
            scheme = "always" if entry.get("add_prefix_space", True) else "never"
        return cls(entry.get("replacement", "▁"), scheme, entry.get("split", True))


@dataclass(frozen=True)
class WhitespaceSplit:
    """Cut on whitespace (Rust's char::is_whitespace), dropping it."""

    def __call__(self, piece):
        return _non_whitespace_runs(piece)

    def to_json(self):
        return {"type": "WhitespaceSplit"}

    @classmethod
    def from_json(cls, entry):
        return cls()


# (str.split() would also cut on U+001C..U+001F, which Rust does not count as whitespace.)
_non_whitespace_runs = re.compile(f"[^{WHITESPACE}]+").findall


@dataclass(frozen=True)
class Whitespace:
    """Runs of word characters, or of other non-space characters: \\w+|[^\\w\\s]+."""

    def __call__(self, piece):
        return _whitespace_words(piece)

    def to_json(self):
        return {"type": "Whitespace"}

    @classmethod
    def from_json(cls, entry):
        return cls()


# \w as Rust's regex crate draws it (unicode.RUST_WORD), in tokenizers' pattern \w+|[^\w\s]+.
_whitespace_words = regex.compile(f"{RUST_WORD}+|[^{RUST_WORD}\\s]+", regex.VERSION1).findall


@dataclass(frozen=True)
class BertPreTokenizer:
    """BERT's split: cut on whitespace (dropped) and around punctuation (each punctuation
    character a word of its own). "don't!" -> "don", "'", "t", "!".

    BERT's `tokenization.py` (BasicTokenizer._run_split_on_punc, whitespace_tokenize);
    punctuation is Unicode's P* plus every ASCII printable that is not a letter or digit
    ("$", "+", "^"), as tokenizers 0.23 draws it (unicode.character_classes()).
    """

    def __call__(self, piece):
        if piece.isascii():  # the common case skips the big tables
            return _ascii_bert_words(piece)
        return _bert_words()(piece)

    def to_json(self):
        return {"type": "BertPreTokenizer"}

    @classmethod
    def from_json(cls, entry):
        return cls()


# Runs of characters that are neither whitespace nor punctuation, or one punctuation mark.
_ascii_bert_words = re.compile(r"[^\t-\r !-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]").findall


@functools.cache
def _bert_words():
    punctuation = character_classes().punctuation
    return re.compile(f"[^{WHITESPACE}{punctuation}]+|[{punctuation}]").findall


def _split_json(step):
    return {"type": "Split", "pattern": {"Regex": step.pattern},
            "behavior": step.behavior.capitalize(), "invert": False}


def _split_from_json(entry):
    behavior = entry.get("behavior", "Isolated")
    if entry.get("invert", False) or behavior not in ("Isolated", "Removed"):
        raise ValueError(f"Split with behavior {behavior!r} and invert="
                         f"{entry.get('invert', False)} is not supported (Isolated or "
                         "Removed, not inverted)")
    pattern = entry["pattern"]
    text = pattern["Regex"] if "Regex" in pattern else regex.escape(pattern["String"])
    return Split(text, behavior.lower())


def to_json(step):
    """The tokenizer.json entry of one pre-tokenizer step."""
    if isinstance(step, Split):
        return _split_json(step)
    if isinstance(step, Digits):
        return {"type": "Digits", "individual_digits": step.individual_digits}
    return step.to_json()


FROM_JSON = {"Metaspace": Metaspace.from_json, "WhitespaceSplit": WhitespaceSplit.from_json,
             "Whitespace": Whitespace.from_json, "BertPreTokenizer": BertPreTokenizer.from_json,
             "Split": _split_from_json,
             "Digits": lambda e: Digits(individual_digits=e.get("individual_digits", False))}


def pre_tokenize(steps, text, at_start=True):
    """The words of a text: each step cuts every piece the previous one produced.

    at_start: whether the text starts the original text (for Metaspace's "first" scheme);
    after each step only the first piece can, if it is a prefix of the first input piece.
    """
    pieces = [text]
    for step in steps:
        uses_start = getattr(step, "uses_start", False)
        cut = []
        for i, piece in enumerate(pieces):
            words = step(piece, at_start and i == 0) if uses_start else step(piece)
            if i == 0:
                at_start = at_start and bool(words) and piece.startswith(words[0])
            cut.extend(words)
        pieces = cut
    return pieces
