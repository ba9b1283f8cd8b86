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
spaces (GPT-1's), WordPiece glues "##" pieces (BERT's, and a BPE's with a "##" prefix).
"""

from dataclasses import dataclass

import npplm.tokenizers.normalizers as normalizers
import npplm.tokenizers.pre_tokenizers as pre_tokenizers


@dataclass(frozen=True)
class Replace:
    """Replace `pattern` (a string; a regex with regex=True) by `content` in every token."""

    pattern: str
    content: str
    regex: bool = False

    def __post_init__(self):
        rewrite = normalizers.Replace(self.pattern, self.content, self.regex)
        object.__setattr__(self, "_rewrite", rewrite)

    def __call__(self, tokens):
        return [self._rewrite(t) for t in tokens]

    def to_json(self):
        return {"type": "Replace", "pattern": normalizers.pattern_json(self.pattern, self.regex),
                "content": self.content}

    @classmethod
    def from_json(cls, entry):
        pattern, is_regex = normalizers.pattern_from_json(entry["pattern"])
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
        # The same fields as the pre-tokenizer's, read (and checked) the same way.
        step = pre_tokenizers.Metaspace.from_json(entry)
        return cls(step.replacement, step.prepend_scheme, step.split)


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
    """"##" pieces glued to the piece before, the others after a space (BERT's decoder).

    cleanup: then delete the space in " .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's",
    " 've", " 're", and turn " do not" into " don't", in each token, as tokenizers does
    (so " ' " and " do not", which span tokens, never match).

        ["un", "##aff", "##able", ",", "he", "said", "."] -> "unaffable, he said."
    """

    prefix: str = "##"
    cleanup: bool = True

    _CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                 (" n't", "n't"), (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"),
                 (" 've", "'ve"), (" 're", "'re"))

    def __call__(self, tokens):
        out = []
        for i, token in enumerate(tokens):
            if i:
                token = (token[len(self.prefix):] if token.startswith(self.prefix)
                         else " " + token)
            if self.cleanup:
                for dirty, clean in self._CLEANUPS:
                    token = token.replace(dirty, clean)
            out.append(token)
        return out

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
