"""Added tokens: the tokens every tokenizer cuts out of the text before anything else.

"[MASK]", "<|endoftext|>", "<s>" ... are matched whole in the text first, so "a[MASK]b" keeps
"[MASK]" however the normalizer and pre-tokenizer would have split it; only the pieces of
text between them go through the rest of the pipeline. The reference is Hugging Face
`tokenizers`' AddedVocabulary (tokenizer.json's "added_tokens"), which we match id for id.

    AddedToken                           one token and its matching options
    added_token_pattern(tokens)          one regex for a set of tokens (an AddedTokenPattern)
    split_on_added(text, pattern)        [(piece, AddedToken or None)] covering the text

A tokenizer keeps two patterns: the tokens matched in the raw text, and those marked
normalized=True, matched in each piece of text after normalization.
"""

import re
import unicodedata
from dataclasses import dataclass
from typing import NamedTuple

from npplm.tokenizers.unicode import WHITESPACE_CHARS


@dataclass(frozen=True)
class AddedToken:
    """A token matched in the text before normalization (tokenizers' `added_tokens`).

    special      dropped by decode(skip_special_tokens=True)
    normalized   matched in the normalized text instead of the raw one
    single_word  only matched when not inside a word
    lstrip       the match swallows whitespace on its left; rstrip: on its right
    """

    content: str
    id: int
    special: bool = True
    normalized: bool = False
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False


class AddedTokenPattern(NamedTuple):
    """A regex matching any of a set of added tokens, and content -> AddedToken."""

    regex: re.Pattern
    by_content: dict


def added_token_pattern(tokens, normalize=None):
    """The AddedTokenPattern of `tokens`, or None when there is no token to match.

    normalize: match each token as normalize(content) (the tokens matched after
    normalization, in normalized text).
    """
    by_content = {}
    for t in tokens:
        content = normalize(t.content) if normalize else t.content
        if content:
            by_content.setdefault(content, t)
    if not by_content:
        return None
    # A regex alternation takes the first alternative that matches, not the longest: the
    # longer tokens go first, so that "<|end|>x" is preferred to "<|end|>".
    alternatives = sorted(by_content, key=len, reverse=True)
    return AddedTokenPattern(re.compile("|".join(map(re.escape, alternatives))), by_content)


def split_on_added(text, pattern):
    """[(piece, AddedToken or None)] covering text, as tokenizers' AddedVocabulary splits.

    pattern: an AddedTokenPattern, or None (no added tokens: the whole text, untouched).
    The leftmost, then longest, match wins. A single_word token is skipped when a word
    character touches it; lstrip / rstrip tokens take the whitespace beside them.
    """
    if pattern is None:
        return [(text, None)]
    out, done = [], 0
    for match in pattern.regex.finditer(text):
        token = pattern.by_content[match.group()]
        start, stop = match.span()
        if token.single_word and ((start > 0 and _is_word_char(text[start - 1]))
                                  or (stop < len(text) and _is_word_char(text[stop]))):
            continue
        if token.lstrip:
            start = max(len(text[:start].rstrip(WHITESPACE_CHARS)), done)
        if token.rstrip:
            stop = len(text) - len(text[stop:].lstrip(WHITESPACE_CHARS))
        if done < start:
            out.append((text[done:start], None))
        out.append((text[start:stop], token))
        done = stop
    if done < len(text) or not out:
        out.append((text[done:], None))
    return out


def _is_word_char(c):
    """Rust regex's \\w: letters, marks, decimal digits, connector punctuation, joiners."""
    category = unicodedata.category(c)
    return category[0] in "LM" or category in ("Nd", "Nl", "Pc") or c in "\u200c\u200d"
