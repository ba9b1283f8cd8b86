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
    BertPreTokenizer()  BERT's split (whitespace, each punctuation mark alone); GPT-1's
    Split, Digits       regex splits (defined in byte_level_bpe.py)

Metaspace's prepend_scheme "first" puts "▁" only before the piece that starts the text:
not after an added token, nor after leading whitespace cut by an earlier step. A piece is
taken to start its parent when it is the first one cut from it and a prefix of it.
"""

import re
from dataclasses import dataclass

import regex

from npplm.tokenizers.byte_level_bpe import Digits, Split, _set
from npplm.tokenizers.wordpiece import _WHITESPACE_CHARS, BasicTokenizer

# tokenizers' Whitespace pre-tokenizer runs \w+|[^\w\s]+ with Rust's regex crate, whose
# Unicode tables are older than those of the `regex` package: these code points, assigned
# since, are word characters to us and not to it (found by comparing every code point with
# tokenizers 0.23; tests/tokenizers/test_pipeline.py repeats it).
_WORD_AFTER_RUST = """
    0558 058B-058C 05C8-05C9 088F 0B53-0B54 0C5C 0CDC 1ACF-1AF0 208F 209D-209F A7CE-A7CF
    A7D2 A7D4 A7DD A7E2 A7F1 AB6C-AB6D 107BB-107BF 10940-10959 10EC5-10EC7 10ECB-10ECF
    10ED9-10EEE 10EF0-10EFB 11B0A 11B60-11B67 11DB0-11DDB 11DE0-11DE9 11DF0-11DF1 1246F
    12475-1247F 12550-12686 16EA0-16EB8 16EBB-16ED3 16FF2-16FF6 187F8-187FF 18CD6-18CDA
    18D09-18D20 18D80-18DF2 18E00-19191 191A0-191D2 1B123-1B128 1B168 1D127-1D128
    1D250-1D252 1D25B-1D25C 1D25F 1D280-1D281 1D6A6 1DF1F-1DF24 1DF2B-1DF81 1DF90-1DF96
    1DFCD-1DFFF 1E6C0-1E6DE 1E6E0-1E6F5 1E6FE-1E6FF 2B73A-2B73F 2B81E 2CEA2-2CEAD
    323B0-33479 3D000-3FC3F
"""


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
_non_whitespace_runs = re.compile(f"[^{re.escape(_WHITESPACE_CHARS)}]+").findall


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


_WORD = f"[\\w--[{_set(_WORD_AFTER_RUST)}]]"
_whitespace_words = regex.compile(f"{_WORD}+|[^{_WORD}\\s]+", regex.VERSION1).findall


@dataclass(frozen=True)
class BertPreTokenizer:
    """BERT's split: on whitespace, and each punctuation character on its own."""

    def __call__(self, piece):
        return _BERT_SPLIT(piece)

    def to_json(self):
        return {"type": "BertPreTokenizer"}

    @classmethod
    def from_json(cls, entry):
        return cls()


_BERT_SPLIT = BasicTokenizer().split


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
