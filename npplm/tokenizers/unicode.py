"""Unicode as tokenizers 0.23 sees it: the character classes, NFD and lowercasing we match.

A tokenizer classes characters (whitespace, punctuation, control, accents, letters) and
every class depends on the version of Unicode the tables came from. Hugging Face
`tokenizers` takes them from Rust crates at several versions:

    general categories (BERT's normalizer and split)   Unicode 8.0
    normalization (NFD) and combining marks             Unicode 9.0
    Oniguruma's \\p{L} and \\p{N} (Split, Replace, ByteLevel regexes), Rust regex's \\w
                                                        older than the `regex` package's
    char::to_lowercase                                  current (Unicode 17)

while Python 3.11's `unicodedata` is Unicode 14.0 and the `regex` package Unicode 17. Our
classes are Python's (or `regex`'s) corrected by the short lists of code points below on
which the versions disagree, found by comparing every code point with tokenizers 0.23;
tests/tokenizers/test_unicode.py repeats each comparison. One difference is kept as is from
the reference: unassigned code points (category Cn) are not deleted as "control".

Classes are given as regex character-class bodies, what goes between "[" and "]": the
normalizers and pre-tokenizers compile the patterns they need from them.

    WHITESPACE, WHITESPACE_CHARS   Rust's char::is_whitespace (a class body; the characters)
    CJK                            the CJK ideograph blocks BERT puts spaces around
    character_classes()            control, punctuation, nonspacing (BERT's accents),
                                   combining_mark (StripAccents), drawn from Python's
                                   general categories once (about 0.2 s)
    nfd(text), lowercase(text)     NFD and per-character lowercasing, as tokenizers does them
    ONIG_LETTER, ONIG_DIGIT, RUST_WORD, onig_compatible(pattern)
                                   \\p{L}, \\p{N} and \\w in the `regex` package's syntax
"""

import functools
import itertools
import re
import unicodedata
from typing import NamedTuple

import regex


def parse_ranges(text):
    """Code points written as hex "START-END" or "CP": "0890-0891 08E2" -> [(0x890, 0x891),
    (0x8E2, 0x8E2)]."""
    out = []
    for item in text.split():
        start, _, end = item.partition("-")
        out.append((int(start, 16), int(end or start, 16)))
    return out


def char_class(ranges):
    """The regex character-class body of (first, last) code point ranges (re and regex)."""
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


# --- Tables fixed by the reference (no general category involved) ----------------------------

# Rust's char::is_whitespace (the White_Space property); \t \n \r count as whitespace too.
_WHITESPACE = parse_ranges("0009-000D 0020 0085 00A0 1680 2000-200A 2028-2029 202F 205F 3000")
WHITESPACE = char_class(_WHITESPACE)
WHITESPACE_CHARS = "".join(chr(cp) for a, b in _WHITESPACE for cp in range(a, b + 1))
# The CJK Unified Ideographs blocks BERT isolates (not Hangul, Hiragana or Katakana).
CJK = char_class(parse_ranges("""
    4E00-9FFF 3400-4DBF 20000-2A6DF 2A700-2B73F 2B740-2B81F 2B920-2CEAF F900-FAFF 2F800-2FA1F
"""))
# BERT treats every ASCII non-alphanumeric printable character as punctuation ($, +, ^ ...).
_ASCII_PUNCTUATION = parse_ranges("0021-002F 003A-0040 005B-0060 007B-007E")

# --- Corrections to Python's Unicode 14.0, relative to tokenizers' Unicode 8.0 and 9.0 -------

# Format characters (Cf) assigned after Unicode 8.0: not deleted by BERT's clean-up.
_FORMAT_AFTER_8 = parse_ranges("0890-0891 08E2 110CD 13430-13438")
# Punctuation (P*) assigned after Unicode 8.0, so not split off by BERT's split ...
_PUNCTUATION_AFTER_8 = parse_ranges("""
    061D 09FD 0A76 0C77 0C84 1B7D-1B7E 2E43-2E4F 2E52-2E5D 10EAD 10F55-10F59 10F86-10F89
    1144B-1144F 1145A-1145B 1145D 11660-1166C 116B9 1183B 11944-11946 119E2 11A3F-11A46
    11A9A-11A9C 11A9E-11AA2 11C41-11C45 11C70-11C71 11EF7-11EF8 11FFF 12FF1-12FF2
    16E97-16E9A 16FE2 1E95E-1E95F
""")
# ... and two characters that were punctuation in 8.0 and are not any more.
_PUNCTUATION_IN_8 = parse_ranges("166D 111C9")
# Nonspacing marks (Mn) that BERT's strip_accents keeps: assigned after 8.0 ...
_NONSPACING_AFTER_8 = parse_ranges("""
    07FD 0898-089F 08CA-08E1 09FE 0AFA-0AFF 0B55 0C04 0C3C 0D00 0D3B-0D3C 0D81 0EBA 180F
    1885-1886 1ABF-1ACE 1DF6-1DFB A82C A8C5 A8FF A9BD 10D24-10D27 10EAB-10EAC 10F46-10F50
    10F82-10F85 11070 11073-11074 110C2 111C9 111CF 1123E 1133B 11438-1143F 11442-11444
    11446 1145E 1182F-11837 11839-1183A 1193B-1193C 1193E 11943 119D4-119D7 119DA-119DB
    119E0 11A01-11A0A 11A33-11A38 11A3B-11A3E 11A47 11A51-11A56 11A59-11A5B 11A8A-11A96
    11A98-11A99 11C30-11C36 11C38-11C3D 11C3F 11C92-11CA7 11CAA-11CB0 11CB2-11CB3
    11CB5-11CB6 11D31-11D36 11D3A 11D3C-11D3D 11D3F-11D45 11D47 11D90-11D91 11D95 11D97
    11EF3-11EF4 16F4F 16FE4 1CF00-1CF2D 1CF30-1CF46 1E000-1E006 1E008-1E018 1E01B-1E021
    1E023-1E024 1E026-1E02A 1E130-1E136 1E2AE 1E2EC-1E2EF 1E944-1E94A
""")
# ... and one that was a nonspacing mark in 8.0 (HANUNOO SIGN PAMUDPOD, now Mc).
_NONSPACING_IN_8 = parse_ranges("1734")
# Combining marks (M: Mn, Mc, Me) that became marks after 9.0, so StripAccents keeps them ...
_MARKS_AFTER_9 = parse_ranges("""
    07FD 0898-089F 08CA-08D3 09FE 0AFA-0AFF 0B55 0C04 0C3C 0D00 0D3B-0D3C 0D81 0EBA 1715
    180F 1ABF-1ACE 1CF7 1DF6-1DFA A82C A8FF 10D24-10D27 10EAB-10EAC 10F46-10F50 10F82-10F85
    11070 11073-11074 110C2 11145-11146 111C9 111CE-111CF 1133B 1145E 1182C-1183A
    11930-11935 11937-11938 1193B-1193E 11940 11942-11943 119D1-119D7 119DA-119E0 119E4
    11A01-11A0A 11A33-11A39 11A3B-11A3E 11A47 11A51-11A5B 11A8A-11A99 11D31-11D36 11D3A
    11D3C-11D3D 11D3F-11D45 11D47 11D8A-11D8E 11D90-11D91 11D93-11D97 11EF3-11EF6 16F4F
    16F7F-16F87 16FE4 16FF0-16FF1 1CF00-1CF2D 1CF30-1CF46 1E130-1E136 1E2AE 1E2EC-1E2EF
""")
# ... and these two Vedic signs were marks (Mc) in 9.0 and are letters now.
_MARKS_IN_9 = parse_ranges("1CF2-1CF3")
# Combining marks whose combining class tokenizers' NFD (Unicode 9.0) does not know, so it
# never reorders them, plus U+11938, which it does not decompose. Each acts as a barrier:
# nfd() normalizes the text between them and leaves them as they are.
_NFD_BARRIER = re.compile("([" + char_class(parse_ranges("""
    07FD 0898-089F 08CA-08D3 09FE 0C3C 0D3B-0D3C 0EBA 1715 1ABF-1ACE 1DF6-1DFA A82C
    10D24-10D27 10EAB-10EAC 10F46-10F50 10F82-10F85 11070 1133B 1145E 11839-1183A 11938
    1193D-1193E 11943 119E0 11A34 11A47 11A99 11D42 11D44-11D45 11D97 16FF0-16FF1
    1E130-1E136 1E2AE 1E2EC-1E2EF
""")) + "])")
# Lowercase mappings Rust knows and Python 3.11 does not (letters added after Unicode 14.0).
NEWER_LOWERCASE = {
    0x1C89: 0x1C8A, 0xA7CB: 0x0264, 0xA7CC: 0xA7CD, 0xA7CE: 0xA7CF, 0xA7D2: 0xA7D3,
    0xA7D4: 0xA7D5, 0xA7DA: 0xA7DB, 0xA7DC: 0x019B,
    **{cp: cp + 0x20 for cp in range(0x10D50, 0x10D66)},   # Garay
    **{cp: cp + 0x1B for cp in range(0x16EA0, 0x16EB9)},   # Beria Erfe
}
_NEWER_UPPER = re.compile(f"[{char_class((cp, cp) for cp in NEWER_LOWERCASE)}]")


class CharacterClasses(NamedTuple):
    """The classes drawn from general categories, as regex class bodies."""

    control: str         # deleted by BERT's clean-up: C* but Cn, \t \n \r; plus U+FFFD
    punctuation: str     # split off by BERT: P*, and ASCII's other printable characters
    nonspacing: str      # deleted after NFD by BERT's strip_accents: Mn
    combining_mark: str  # deleted by StripAccents: M (Mn, Mc, Me)


@functools.cache
def character_classes():
    """Draw the classes once: one pass of unicodedata over all code points (about 0.2 s, the
    first time non-ASCII text meets BERT's normalizer or split, or StripAccents)."""
    runs = []  # (first, last, category)
    start = 0
    categories = (unicodedata.category(chr(cp)) for cp in range(0x110000))
    for category, group in itertools.groupby(categories):
        n = sum(1 for _ in group)
        runs.append((start, start + n - 1, category))
        start += n

    def drawn(wanted, add=(), remove=()):
        """The class body of the categories `wanted`, then + add, then - remove."""
        m = bytearray(0x110000)
        for a, b, category in runs:
            if category in wanted:
                m[a:b + 1] = b"\x01" * (b - a + 1)
        for a, b in add:
            m[a:b + 1] = b"\x01" * (b - a + 1)
        for a, b in remove:
            m[a:b + 1] = bytes(b - a + 1)
        return char_class((r.start(), r.end() - 1) for r in re.finditer(b"\x01+", m))

    return CharacterClasses(
        control=drawn({"Cc", "Cf", "Co", "Cs"}, add=[(0xFFFD, 0xFFFD)],
                      remove=[(0x9, 0xA), (0xD, 0xD), *_FORMAT_AFTER_8]),
        punctuation=drawn({"Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps"},
                          add=_ASCII_PUNCTUATION + _PUNCTUATION_IN_8,
                          remove=_PUNCTUATION_AFTER_8),
        nonspacing=drawn({"Mn"}, add=_NONSPACING_IN_8, remove=_NONSPACING_AFTER_8),
        combining_mark=drawn({"Mn", "Mc", "Me"}, add=_MARKS_IN_9, remove=_MARKS_AFTER_9),
    )


def nfd(text):
    """Unicode NFD as tokenizers' Unicode 9.0 tables do it (see the `_NFD_BARRIER` note)."""
    if not _NFD_BARRIER.search(text):
        return unicodedata.normalize("NFD", text)
    parts = _NFD_BARRIER.split(text)  # the barriers land at the odd indices
    return "".join(p if i % 2 else unicodedata.normalize("NFD", p) for i, p in enumerate(parts))


def lowercase(text):
    """Lowercase each character on its own, as Rust's char::to_lowercase does.

    Python lowercases a word-final capital sigma to "ς", Rust (per character) to "σ"; and
    Rust knows the capitals of NEWER_LOWERCASE.
    """
    text = text.replace("\u03a3", "\u03c3").lower()
    if not text.isascii() and _NEWER_UPPER.search(text):
        text = text.translate(NEWER_LOWERCASE)
    return text


# --- Regex classes: Oniguruma's and Rust regex's, in the `regex` package ---------------------

# tokenizers runs its Split / Replace / ByteLevel regexes with Oniguruma and its Whitespace
# pre-tokenizer with Rust's regex crate, whose Unicode tables are older than those of the
# `regex` package (Unicode 17 in regex 2026.11): these code points, assigned since, are
# letters, digits or word characters to `regex` and not to them.
_LETTERS_AFTER_ONIG = """
    0558 058B-058C 088F 0C5C 0CDC 208F 209D-209F A7CE-A7CF A7D2 A7D4 A7DD A7E2 A7F1 AB6C-AB6D
    107BB-107BF 10940-10959 10EC5-10EC7 10ED9-10EEE 11B0A 11DB0-11DDB 11DF1 16EA0-16EB8
    16EBB-16ED3 16FF2-16FF3 187F8-187FF 18CD6-18CDA 18D09-18D20 18D80-18DF2 18E00-19191
    191A0-191D2 1B123-1B128 1B168 1D6A6 1DF1F-1DF24 1DF2B-1DF81 1DF90-1DF96 1DFCD-1DFFF
    1E6C0-1E6DE 1E6E0-1E6E2 1E6E4-1E6E5 1E6E7-1E6ED 1E6F0-1E6F4 1E6FE-1E6FF 2B73A-2B73F 2B81E
    2CEA2-2CEAD 323B0-33479 3D000-3FC3F
"""
_DIGITS_AFTER_ONIG = "11DE0-11DE9 1246F 12475-1247F 12550-12686 16FF4-16FF6"
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
# Set differences in the `regex` package's version 1 syntax, [A--[B]], valid both inside and
# outside a character class.
ONIG_LETTER = f"[\\p{{L}}--[{char_class(parse_ranges(_LETTERS_AFTER_ONIG))}]]"
ONIG_DIGIT = f"[\\p{{N}}--[{char_class(parse_ranges(_DIGITS_AFTER_ONIG))}]]"
RUST_WORD = f"[\\w--[{char_class(parse_ranges(_WORD_AFTER_RUST))}]]"


def onig_compatible(pattern):
    """Compile a tokenizers regex with \\p{L} and \\p{N} cut to Oniguruma's Unicode tables.

    A textual replacement: an escaped "\\\\p{L}" in a pattern would be rewritten too (no
    tokenizer we know writes one).
    """
    pattern = pattern.replace("\\p{L}", ONIG_LETTER).replace("\\p{N}", ONIG_DIGIT)
    return regex.compile(pattern, regex.VERSION1)
