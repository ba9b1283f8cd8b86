"""Decoders: how a list of tokens becomes text again, as tokenizer.json describes it.

tokenizers decodes in a chain: each decoder maps the list of token strings to a new list,
and the last list is joined with no separator (a tokenizer without a decoder joins its
tokens with spaces). Each step is a frozen dataclass whose __call__ maps the list, with
to_json() and a FROM_JSON entry. LLaMA-1/2's chain, on ["▁Hi", "<0xE4>", "<0xB8>",
"<0x96>"]:

    Replace("▁", " ")   [" Hi", "<0xE4>", "<0xB8>", "<0x96>"]
    ByteFallback()      [" Hi", "世"]          (a run of byte pieces decoded as UTF-8)
    Fuse()              [" Hi世"]
    Strip(" ", 1, 0)    ["Hi世"]                (the space the normalizer prepended)

Metaspace turns "▁" into spaces (T5's single decoder), BPEDecoder "</w>" suffixes into
spaces (GPT-1's), WordPiece glues "##" pieces.
"""

from dataclasses import dataclass

from npplm.tokenizers.normalizers import _pattern_from_json, _pattern_json
from npplm.tokenizers.wordpiece import WordPieceDecoder


@dataclass(frozen=True)
class Replace:
    """Replace `pattern` (a string; a regex with regex=True) by `content` in every token."""

    pattern: str
    content: str
    regex: bool = False

    def __post_init__(self):
        from npplm.tokenizers.normalizers import Replace as Rewrite

        object.__setattr__(self, "_rewrite", Rewrite(self.pattern, self.content, self.regex))

    def __call__(self, tokens):
        return [self._rewrite(t) for t in tokens]

    def to_json(self):
        return {"type": "Replace", "pattern": _pattern_json(self.pattern, self.regex),
                "content": self.content}

    @classmethod
    def from_json(cls, entry):
        pattern, is_regex = _pattern_from_json(entry["pattern"])
        return cls(pattern, entry["content"], is_regex)


def _byte_of(token):
    """The byte a "<0xHH>" piece stands for, or None (tokenizers accepts either case)."""
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return int(token[3:5], 16)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class ByteFallback:
    """Decode each run of "<0x..>" pieces as UTF-8: the text when the run is valid, else
    one U+FFFD per piece (tokenizers does not decode the valid part of a bad run)."""

    def __call__(self, tokens):
        out, run = [], []
        for token in [*tokens, None]:
            byte = None if token is None else _byte_of(token)
            if byte is not None:
                run.append(byte)
                continue
            if run:
                try:
                    out.append(bytes(run).decode("utf-8"))
                except UnicodeDecodeError:
                    out.extend("\ufffd" * len(run))
                run = []
            if token is not None:
                out.append(token)
        return out

    def to_json(self):
        return {"type": "ByteFallback"}

    @classmethod
    def from_json(cls, entry):
        return cls()


@dataclass(frozen=True)
class Fuse:
    """Join all tokens into one."""

    def __call__(self, tokens):
        return ["".join(tokens)]

    def to_json(self):
        return {"type": "Fuse"}

    @classmethod
    def from_json(cls, entry):
        return cls()


@dataclass(frozen=True)
class Strip:
    """Remove up to `start` leading and `stop` trailing `content` characters of each token."""

    content: str = " "
    start: int = 0
    stop: int = 0

    def __call__(self, tokens):
        out = []
        for token in tokens:
            head = 0
            while head < min(self.start, len(token)) and token[head] == self.content:
                head += 1
            tail = len(token)
            while (len(token) - tail < self.stop and tail > head
                   and token[tail - 1] == self.content):
                tail -= 1
            out.append(token[head:tail])
        return out

    def to_json(self):
        return {"type": "Strip", "content": self.content, "start": self.start,
                "stop": self.stop}

    @classmethod
    def from_json(cls, entry):
        return cls(entry.get("content", " "), entry.get("start", 0), entry.get("stop", 0))


@dataclass(frozen=True)
class Metaspace:
    """"▁" back to spaces; with a prepend scheme other than "never", the first token loses
    its "▁" characters (tokenizers drops all of them there, not only the leading one)."""

    replacement: str = "▁"
    prepend_scheme: str = "always"
    split: bool = True

    def __call__(self, tokens):
        drop_first = self.prepend_scheme != "never"
        return [t.replace(self.replacement, "" if i == 0 and drop_first else " ")
                for i, t in enumerate(tokens)]

    def to_json(self):
        return {"type": "Metaspace", "replacement": self.replacement,
                "prepend_scheme": self.prepend_scheme, "split": self.split}

    @classmethod
    def from_json(cls, entry):
        scheme = entry.get("prepend_scheme")
        if scheme is None:
            scheme = "always" if entry.get("add_prefix_space", True) else "never"
        return cls(entry.get("replacement", "▁"), scheme, entry.get("split", True))


@dataclass(frozen=True)
class BPEDecoder:
    """The end-of-word `suffix` ("</w>") becomes a space, and nothing on the last token."""

    suffix: str = "</w>"

    def __call__(self, tokens):
        last = len(tokens) - 1
        return [t.replace(self.suffix, "" if i == last else " ") for i, t in enumerate(tokens)]

    def to_json(self):
        return {"type": "BPEDecoder", "suffix": self.suffix}

    @classmethod
    def from_json(cls, entry):
        return cls(entry.get("suffix", "</w>"))


@dataclass(frozen=True)
class WordPiece:
    """"##" pieces glued to the one before, a space before the others, then the clean-up
    of wordpiece.WordPieceDecoder (a BPE with a "##" continuing-subword prefix uses it)."""

    prefix: str = "##"
    cleanup: bool = True

    def __call__(self, tokens):
        return [WordPieceDecoder(self.prefix, self.cleanup).decode(tokens)] if tokens else []

    def to_json(self):
        return {"type": "WordPiece", "prefix": self.prefix, "cleanup": self.cleanup}

    @classmethod
    def from_json(cls, entry):
        return cls(entry.get("prefix", "##"), entry.get("cleanup", True))


FROM_JSON = {"Replace": Replace.from_json, "ByteFallback": ByteFallback.from_json,
             "Fuse": Fuse.from_json, "Strip": Strip.from_json,
             "Metaspace": Metaspace.from_json, "BPEDecoder": BPEDecoder.from_json,
             "WordPiece": WordPiece.from_json}


def decode(steps, tokens):
    """The text of a list of tokens: the chain of steps, then joined; None: joined by " "."""
    if steps is None:
        return " ".join(tokens)
    for step in steps:
        tokens = step(tokens)
    return "".join(tokens)
