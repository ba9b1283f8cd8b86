"""BERT's tokenizer: a basic tokenizer, then greedy longest-match-first WordPiece.

Papers: WordPiece, Schuster & Nakajima, "Japanese and Korean Voice Search" (ICASSP 2012);
its use for translation, Wu et al., "Google's Neural Machine Translation System"
(arXiv:1609.08144); and BERT, Devlin et al. (arXiv:1810.04805), whose `tokenization.py`
defines the pipeline below. The reference we match id for id is Hugging Face `tokenizers`
(the Rust library behind BertTokenizerFast) reading a `tokenizer.json`.

Encoding one text goes through five steps:

  1. added tokens   "[MASK]", "[SEP]", ... are cut out of the raw text first, so "a[MASK]b"
                    keeps "[MASK]" whole however the later steps would split it.
  2. normalize      (BasicTokenizer.normalize) delete control characters, NUL and U+FFFD;
                    map whitespace to " "; put spaces around CJK ideographs; for an uncased
                    vocabulary strip accents (NFD, then drop nonspacing marks) and lowercase.
  3. split          (BasicTokenizer.split) cut on whitespace (dropped) and punctuation (kept,
                    one character per word). "Don't!" -> "don", "'", "t", "!".
  4. WordPiece      (WordPiece.tokenize) each word, greedily: the longest vocabulary entry
                    that prefixes the word, then the longest "##"-entry that prefixes the
                    rest, and so on. A word that cannot be covered, or longer than
                    `max_input_chars_per_word`, becomes the single token "[UNK]".
                    "unaffable" -> "un", "##aff", "##able".
  5. template       [CLS] A [SEP] for one text, [CLS] A [SEP] B [SEP] for a pair, with
                    token_type_ids 0 for A's part and 1 for B's.

Decoding glues "##" pieces to the piece before, puts a space before every other piece, and
(`cleanup`) removes the space before . , ! ? and a few English contractions, as HF does.

A word's ids are cached (word -> ids). Running text repeats its words (the MB of English
docstrings in benchmarks/side_by_side_tokenizers.py has 7.4k distinct words in 233k), so
step 4 is mostly a dict lookup and the cost is steps 2 and 3, done with str methods and
regexes rather than a loop over characters.

Training (`WordPieceTrainer`) builds a vocabulary from a corpus by likelihood-scored merges;
its docstring gives the algorithm and how it differs from HF's trainer.

Character classes. BERT defines its classes by Unicode category (punctuation = P*, accents
= Mn, control = C*). tokenizers takes them from Rust crates frozen at Unicode 8.0 (general
categories) and 9.0 (normalization), and Rust's own lowercase table is current (Unicode 17);
Python 3.11's `unicodedata` is Unicode 14.0. Our classes are Python's corrected by the short
lists of code points below on which the versions disagree, found by comparing every code
point with tokenizers 0.23 (the tests repeat that comparison). One difference is kept as is
from the reference: unassigned code points (category Cn) are not deleted as "control".
"""

import functools
import heapq
import itertools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from npplm.tokenizers.base import BaseTokenizer, Encoding, truncate_longest_first  # noqa: F401

# --- Character classes, as tokenizers 0.23 draws them ----------------------------------------
# Code points written as hex ranges "START-END" or single "CP", relative to Unicode 14.0.


def _parse_ranges(text):
    """"0890-0891 08E2" -> [(0x890, 0x891), (0x8E2, 0x8E2)]."""
    out = []
    for item in text.split():
        start, _, end = item.partition("-")
        out.append((int(start, 16), int(end or start, 16)))
    return out


# Format characters (Cf) assigned after Unicode 8.0: not deleted by tokenizers' clean-up.
_FORMAT_AFTER_8 = _parse_ranges("0890-0891 08E2 110CD 13430-13438")
# Punctuation (P*) assigned after Unicode 8.0, so not split off by tokenizers ...
_PUNCTUATION_AFTER_8 = _parse_ranges("""
    061D 09FD 0A76 0C77 0C84 1B7D-1B7E 2E43-2E4F 2E52-2E5D 10EAD 10F55-10F59 10F86-10F89
    1144B-1144F 1145A-1145B 1145D 11660-1166C 116B9 1183B 11944-11946 119E2 11A3F-11A46
    11A9A-11A9C 11A9E-11AA2 11C41-11C45 11C70-11C71 11EF7-11EF8 11FFF 12FF1-12FF2
    16E97-16E9A 16FE2 1E95E-1E95F
""")
# ... and two characters that were punctuation in 8.0 and are not any more.
_PUNCTUATION_IN_8 = _parse_ranges("166D 111C9")
# Nonspacing marks (Mn) that tokenizers does not strip as accents: assigned after 8.0 ...
_NONSPACING_AFTER_8 = _parse_ranges("""
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
_NONSPACING_IN_8 = _parse_ranges("1734")
# Combining marks whose combining class tokenizers' NFD (Unicode 9.0) does not know, so it
# never reorders them, plus U+11938, which it does not decompose. Each acts as a barrier:
# we normalize the text between them and leave them as they are.
_NFD_BARRIERS = _parse_ranges("""
    07FD 0898-089F 08CA-08D3 09FE 0C3C 0D3B-0D3C 0EBA 1715 1ABF-1ACE 1DF6-1DFA A82C
    10D24-10D27 10EAB-10EAC 10F46-10F50 10F82-10F85 11070 1133B 1145E 11839-1183A 11938
    1193D-1193E 11943 119E0 11A34 11A47 11A99 11D42 11D44-11D45 11D97 16FF0-16FF1
    1E130-1E136 1E2AE 1E2EC-1E2EF
""")
# Lowercase mappings Rust knows and Python 3.11 does not (letters added after Unicode 14.0).
_NEWER_LOWERCASE = {
    0x1C89: 0x1C8A, 0xA7CB: 0x0264, 0xA7CC: 0xA7CD, 0xA7CE: 0xA7CF, 0xA7D2: 0xA7D3,
    0xA7D4: 0xA7D5, 0xA7DA: 0xA7DB, 0xA7DC: 0x019B,
    **{cp: cp + 0x20 for cp in range(0x10D50, 0x10D66)},   # Garay
    **{cp: cp + 0x1B for cp in range(0x16EA0, 0x16EB9)},   # Beria Erfe
}
# Rust's char::is_whitespace (the White_Space property); \t \n \r count as whitespace too.
_WHITESPACE = _parse_ranges("0009-000D 0020 0085 00A0 1680 2000-200A 2028-2029 202F 205F 3000")
# The CJK Unified Ideographs blocks BERT isolates (not Hangul, Hiragana or Katakana).
_CJK = _parse_ranges("""
    4E00-9FFF 3400-4DBF 20000-2A6DF 2A700-2B73F 2B740-2B81F 2B920-2CEAF F900-FAFF 2F800-2FA1F
""")
# BERT treats every ASCII non-alphanumeric printable character as punctuation ($, +, ^ ...).
_ASCII_PUNCTUATION = _parse_ranges("0021-002F 003A-0040 005B-0060 007B-007E")


def _char_class(ranges):
    """A regex character class body for the given code point ranges."""
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


class _CharacterClasses(NamedTuple):
    control: re.Pattern         # deleted by clean_text
    whitespace: re.Pattern      # mapped to " " by clean_text, and split on
    cjk: re.Pattern             # surrounded by spaces
    nonspacing: re.Pattern      # deleted after NFD by strip_accents
    nfd_barrier: re.Pattern     # splits the text for NFD
    newer_upper: re.Pattern     # has a lowercase Python does not know
    word: re.Pattern            # the pre-tokenizer: runs of word characters, or one punct


@functools.cache
def _character_classes():
    """Build the character-class regexes once: one pass of unicodedata over all code points.

    Takes about 0.2 s, the first time a BasicTokenizer normalizes non-ASCII text.
    """
    categories = [unicodedata.category(chr(cp)) for cp in range(0x110000)]
    runs = []  # (first, last, category)
    start = 0
    for category, group in itertools.groupby(categories):
        n = sum(1 for _ in group)
        runs.append((start, start + n - 1, category))
        start += n

    def mask(wanted, add=(), remove=()):
        m = bytearray(0x110000)
        for a, b, category in runs:
            if category in wanted:
                m[a:b + 1] = b"\x01" * (b - a + 1)
        for a, b in add:
            m[a:b + 1] = b"\x01" * (b - a + 1)
        for a, b in remove:
            m[a:b + 1] = bytes(b - a + 1)
        return [(r.start(), r.end() - 1) for r in re.finditer(b"\x01+", m)]

    control = mask({"Cc", "Cf", "Co", "Cs"}, add=[(0xFFFD, 0xFFFD)],
                   remove=[(0x9, 0xA), (0xD, 0xD), *_FORMAT_AFTER_8])
    punctuation = mask({"Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps"},
                       add=_ASCII_PUNCTUATION + _PUNCTUATION_IN_8, remove=_PUNCTUATION_AFTER_8)
    nonspacing = mask({"Mn"}, add=_NONSPACING_IN_8, remove=_NONSPACING_AFTER_8)
    ws, punct = _char_class(_WHITESPACE), _char_class(punctuation)
    return _CharacterClasses(
        control=re.compile(f"[{_char_class(control)}]+"),
        whitespace=re.compile(f"[{ws}]"),
        cjk=re.compile(f"[{_char_class(_CJK)}]"),
        nonspacing=re.compile(f"[{_char_class(nonspacing)}]+"),
        nfd_barrier=re.compile(f"([{_char_class(_NFD_BARRIERS)}])"),
        newer_upper=re.compile(f"[{_char_class((cp, cp) for cp in _NEWER_LOWERCASE)}]"),
        word=re.compile(f"[^{ws}{punct}]+|[{punct}]"),
    )


# ASCII text (the common case) skips the big tables: these are the same classes cut to ASCII.
_ASCII_CLEAN = {cp: None for cp in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]}
_ASCII_CLEAN.update({0x09: " ", 0x0A: " ", 0x0D: " "})
_ASCII_WORD = re.compile(r"[^\t-\r !-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]")


# --- Steps 2 and 3: the basic tokenizer ------------------------------------------------------


class BasicTokenizer:
    """BERT's basic tokenizer: normalize the text, then split it into words.

    lowercase             lowercase the text (an "uncased" vocabulary)
    strip_accents         NFD-decompose and drop nonspacing marks (é -> e); None: follow
                          `lowercase`, as BERT and tokenizers do
    clean_text            delete control characters, NUL and U+FFFD; whitespace -> " "
    handle_chinese_chars  put spaces around CJK ideographs, so each is a word

    normalize("Crème  brûlée\\t!") == "creme  brulee !"
    split("creme  brulee !") == ["creme", "brulee", "!"]

    The order is tokenizers': clean, CJK, strip accents, lowercase (BERT's tokenization.py
    lowercases first). Lowercasing is per character, as in Rust, so a word-final "Σ" becomes
    "σ", not the "ς" Python's str.lower() gives.
    """

    def __init__(self, lowercase=True, strip_accents=None, clean_text=True,
                 handle_chinese_chars=True):
        self.lowercase = bool(lowercase)
        self.strip_accents = strip_accents          # kept as given, for saving
        self.clean_text = bool(clean_text)
        self.handle_chinese_chars = bool(handle_chinese_chars)
        self._strip = self.lowercase if strip_accents is None else bool(strip_accents)

    def __repr__(self):
        return (f"BasicTokenizer(lowercase={self.lowercase}, strip_accents={self.strip_accents},"
                f" clean_text={self.clean_text}, "
                f"handle_chinese_chars={self.handle_chinese_chars})")

    def normalize(self, text):
        """Step 2: the normalized text (the same string tokenizers' BertNormalizer gives)."""
        if text.isascii():  # no CJK, no accents, and str.lower() is per character
            if self.clean_text:
                text = text.translate(_ASCII_CLEAN)
            return text.lower() if self.lowercase else text
        classes = _character_classes()
        if self.clean_text:
            text = classes.whitespace.sub(" ", classes.control.sub("", text))
        if self.handle_chinese_chars:
            text = classes.cjk.sub(r" \g<0> ", text)
        if self._strip:
            text = classes.nonspacing.sub("", _nfd(text, classes.nfd_barrier))
        if self.lowercase:
            # Python lowercases a word-final capital sigma to "ς"; Rust, per character, to "σ".
            text = text.replace("\u03a3", "\u03c3").lower()
            if classes.newer_upper.search(text):
                text = text.translate(_NEWER_LOWERCASE)
        return text

    def split(self, normalized):
        """Step 3: words of a normalized text, cut on whitespace and around punctuation."""
        if normalized.isascii():
            return _ASCII_WORD.findall(normalized)
        return _character_classes().word.findall(normalized)

    def __call__(self, text):
        """The words of a raw text: split(normalize(text))."""
        return self.split(self.normalize(text))


def _nfd(text, barriers):
    """Unicode NFD, as tokenizers' Unicode 9.0 tables do it (see the `_NFD_BARRIERS` note)."""
    if not barriers.search(text):
        return unicodedata.normalize("NFD", text)
    parts = barriers.split(text)  # the barriers land at the odd indices
    return "".join(p if i % 2 else unicodedata.normalize("NFD", p) for i, p in enumerate(parts))


# --- Step 4: WordPiece ---------------------------------------------------------------------


class WordPiece:
    """Greedy longest-match-first segmentation of one word into vocabulary pieces.

    For a word w, from start = 0: take the longest w[start:end] in the vocabulary (written
    "##" + w[start:end] when start > 0, a piece that continues a word), then repeat from
    end. If at some start no piece matches, the whole word is `unk_token`: BERT never emits
    a partial segmentation. Words longer than `max_input_chars_per_word` characters are
    `unk_token` without trying.

        vocab {"un", "##aff", "##able", ...}:  "unaffable" -> ["un", "##aff", "##able"]

    Greedy is not the segmentation with the fewest pieces (vocab {"a", "abc", "##bcd",
    "##d"}: "abcd" -> "abc", "##d", not "a", "##bcd") but it is what BERT was trained with.
    The search for `end` starts at most `longest` characters after `start` (the longest
    vocabulary entry), which changes nothing but the time taken.
    """

    def __init__(self, vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                 max_input_chars_per_word=100):
        if unk_token not in vocab:
            raise ValueError(f"the unknown token {unk_token!r} is not in the vocabulary")
        self.vocab = vocab
        self.unk_token = unk_token
        self.continuing_subword_prefix = continuing_subword_prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        self.longest = max(map(len, vocab))

    def tokenize(self, word):
        """The pieces of one word (a list of vocabulary entries)."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces = []
        start = 0
        while start < len(word):
            piece = self._longest_piece(word, start)
            if piece is None:
                return [self.unk_token]
            pieces.append(piece)
            start += len(piece) - (len(self.continuing_subword_prefix) if start else 0)
        return pieces

    def _longest_piece(self, word, start):
        """The longest vocabulary entry matching word[start:...], or None."""
        prefix = self.continuing_subword_prefix if start else ""
        for end in range(min(len(word), start + self.longest - len(prefix)), start, -1):
            piece = prefix + word[start:end]
            if piece in self.vocab:
                return piece
        return None


class _WordIds(dict):
    """word -> tuple of ids, filled on first sight (dict.__missing__); emptied when full."""

    def __init__(self, word_to_ids, capacity=1 << 20):
        super().__init__()
        self.word_to_ids = word_to_ids
        self.capacity = capacity

    def __missing__(self, word):
        if len(self) >= self.capacity:
            self.clear()
        ids = self[word] = self.word_to_ids(word)
        return ids


# --- Steps 1 and 5, and the tokenizer ------------------------------------------------------


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


@dataclass(frozen=True)
class WordPieceDecoder:
    """How ids go back to text: "##" pieces glued to the piece before, others after a space.

    cleanup: then delete the space in " .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's",
    " 've", " 're", and turn " do not" into " don't" (tokenizers applies these per piece).
    """

    prefix: str = "##"
    cleanup: bool = True

    _CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                 (" n't", "n't"), (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"),
                 (" 've", "'ve"), (" 're", "'re"))

    def decode(self, tokens):
        out = []
        for i, token in enumerate(tokens):
            if i:
                token = (token[len(self.prefix):] if token.startswith(self.prefix)
                         else " " + token)
            if self.cleanup:
                for dirty, clean in self._CLEANUPS:
                    token = token.replace(dirty, clean)
            out.append(token)
        return "".join(out)


# A template item: ("$A" | "$B" | a special token, token_type_id).
BERT_SINGLE = (("[CLS]", 0), ("$A", 0), ("[SEP]", 0))
BERT_PAIR = (("[CLS]", 0), ("$A", 0), ("[SEP]", 0), ("$B", 1), ("[SEP]", 1))


class WordPieceTokenizer(BaseTokenizer):
    """BERT's tokenizer: added tokens, BasicTokenizer, WordPiece, [CLS]/[SEP] template.

    vocab                  token -> id (the model's vocabulary: vocab.txt, one per line)
    basic                  the BasicTokenizer (default: BERT uncased)
    unk_token, continuing_subword_prefix, max_input_chars_per_word: see WordPiece
    added_tokens           AddedTokens cut from the text first; default: the special tokens
                           among [PAD] [UNK] [CLS] [SEP] [MASK] present in `vocab`
    single, pair           the templates, tuples of ("$A" | "$B" | token, type id); default
                           BERT's, or none (no special tokens) without [CLS] and [SEP]
    pad_token              the token right-padding fills batches with
    decoder                a WordPieceDecoder, or None to join tokens with spaces
    model_max_length       what truncation=True cuts to when no max_length is given

    encode(text, pair) -> Encoding(ids, token_type_ids); encode_batch(texts) (or calling
    the tokenizer) -> {"input_ids", "attention_mask", "token_type_ids"}: int64 (B, T) arrays;
    decode(ids) -> str; tokenize(text) -> pieces; save(path), and npplm.load_tokenizer.
    """

    def __init__(self, vocab, *, basic=None, unk_token="[UNK]", continuing_subword_prefix="##",
                 max_input_chars_per_word=100, added_tokens=None, single=None, pair=None,
                 pad_token="[PAD]", decoder=WordPieceDecoder(), model_max_length=512):
        vocab = dict(vocab)
        if added_tokens is None:
            added_tokens = [AddedToken(t, vocab[t]) for t in
                            ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab]
        has_bert_specials = "[CLS]" in vocab and "[SEP]" in vocab
        if single is None and has_bert_specials:
            single = BERT_SINGLE
        if pair is None and has_bert_specials:
            pair = BERT_PAIR
        self._set_vocabulary(vocab, added_tokens, single, pair, pad_token, model_max_length)
        self.basic = basic if basic is not None else BasicTokenizer()
        self.model = WordPiece(self.vocab, unk_token, continuing_subword_prefix,
                               max_input_chars_per_word)
        self.decoder = decoder
        self._raw_added = _added_token_pattern([t for t in added_tokens if not t.normalized])
        self._normalized_added = _added_token_pattern(
            [t for t in added_tokens if t.normalized], self.basic.normalize)
        self._word_ids = _WordIds(self._ids_of_word)
        # tokenizers decodes an added token matched after normalization as its normalized
        # form ("New York" -> "new york" for an uncased vocabulary).
        self._decoded_form = {t.id: self.basic.normalize(t.content)
                              for t in self.added_tokens if t.normalized}

    # -- encoding ---------------------------------------------------------------------------

    def _ids_of_word(self, word):
        return tuple(self.vocab[piece] for piece in self.model.tokenize(word))

    def _segments(self, text):
        """Step 1: [(piece of text, AddedToken or None)], added tokens cut out of the text.

        Raw-matched tokens are cut from the raw text; each other piece is then normalized
        and cut again by the tokens matched after normalization (if any).
        """
        out = []
        for piece, token in _split_on_added(text, *self._raw_added):
            if token is not None:
                out.append((piece, token))
            elif self._normalized_added is None:
                out.append((self.basic.normalize(piece), None))
            else:
                out.extend(_split_on_added(self.basic.normalize(piece), *self._normalized_added))
        return out

    def _encode_one(self, text):
        """Steps 1 to 4: the ids of one text, without special tokens."""
        if self._raw_added is None and self._normalized_added is None:  # no added tokens
            words = self.basic(text)
            return list(itertools.chain.from_iterable(map(self._word_ids.__getitem__, words)))
        ids = []
        split, word_ids = self.basic.split, self._word_ids.__getitem__
        for piece, token in self._segments(text):
            if token is not None:
                ids.append(token.id)
            else:
                ids.extend(itertools.chain.from_iterable(map(word_ids, split(piece))))
        return ids

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens=True):
        """The text of a sequence of ids (a list or a 1-D array).

        Out-of-range ids raise IndexError (tokenizers drops them silently). Special tokens
        are skipped by id; tokenizers compares strings, and so keeps a special token that
        is matched after normalization when normalizing changes it.
        """
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        tokens = [self._decoded_form.get(i) or self.id_to_token(i) for i in ids
                  if not (skip_special_tokens and i in self._special_ids)]
        return " ".join(tokens) if self.decoder is None else self.decoder.decode(tokens)

    # -- saving -----------------------------------------------------------------------------

    def to_tokenizer_json(self):
        """This tokenizer as a Hugging Face tokenizer.json dictionary."""
        basic = self.basic
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": self._added_tokens_json(),
            "normalizer": {"type": "BertNormalizer", "clean_text": basic.clean_text,
                           "handle_chinese_chars": basic.handle_chinese_chars,
                           "strip_accents": basic.strip_accents,
                           "lowercase": basic.lowercase},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": self._post_processor_json(),
            "decoder": None if self.decoder is None else {
                "type": "WordPiece", "prefix": self.decoder.prefix,
                "cleanup": self.decoder.cleanup},
            "model": {"type": "WordPiece", "unk_token": self.model.unk_token,
                      "continuing_subword_prefix": self.model.continuing_subword_prefix,
                      "max_input_chars_per_word": self.model.max_input_chars_per_word,
                      "vocab": dict(sorted(self.vocab.items(), key=lambda kv: kv[1]))},
        }

    def _files(self):
        """tokenizer.json, vocab.txt (BertTokenizer's file) and tokenizer_config.json."""
        by_id = sorted(self.vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ValueError("vocab.txt needs ids 0..n-1 without gaps")
        if any("\n" in token for token, _ in by_id):
            raise ValueError("vocab.txt cannot hold a token containing a newline")
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.basic.lowercase,
                  "strip_accents": self.basic.strip_accents,
                  "tokenize_chinese_chars": self.basic.handle_chinese_chars,
                  "model_max_length": self.model_max_length,
                  "clean_up_tokenization_spaces": bool(self.decoder and self.decoder.cleanup)}
        for key, token in (("unk_token", self.model.unk_token), ("pad_token", self.pad_token),
                           ("cls_token", "[CLS]"), ("sep_token", "[SEP]"),
                           ("mask_token", "[MASK]")):
            if token is not None and self.token_to_id(token) is not None:
                config[key] = token
        return {"tokenizer.json": self.to_tokenizer_json(),
                "vocab.txt": "".join(token + "\n" for token, _ in by_id),
                "tokenizer_config.json": config}

    def __repr__(self):
        return (f"WordPieceTokenizer(vocab_size={self.vocab_size}, {self.basic!r}, "
                f"added_tokens={[t.content for t in self.added_tokens]})")


def _added_token_pattern(tokens, normalize=None):
    """(regex matching any token, the longest first; content -> AddedToken), or None."""
    if not tokens:
        return None
    by_content = {}
    for t in tokens:
        content = normalize(t.content) if normalize else t.content
        if content:
            by_content.setdefault(content, t)
    alternatives = sorted(by_content, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, alternatives))), by_content


def _split_on_added(text, pattern=None, by_content=None):
    """[(piece, AddedToken or None)] covering text, as tokenizers' AddedVocabulary splits.

    The leftmost, then longest, match wins. A single_word token is skipped when a word
    character touches it; lstrip / rstrip tokens take the whitespace beside them.
    """
    if pattern is None:
        return [(text, None)]
    out, done = [], 0
    for match in pattern.finditer(text):
        token = by_content[match.group()]
        start, stop = match.span()
        if token.single_word and ((start > 0 and _is_word_char(text[start - 1]))
                                  or (stop < len(text) and _is_word_char(text[stop]))):
            continue
        if token.lstrip:
            start = max(len(text[:start].rstrip(_WHITESPACE_CHARS)), done)
        if token.rstrip:
            stop = len(text) - len(text[stop:].lstrip(_WHITESPACE_CHARS))
        if done < start:
            out.append((text[done:start], None))
        out.append((text[start:stop], token))
        done = stop
    if done < len(text) or not out:
        out.append((text[done:], None))
    return out


_WHITESPACE_CHARS = "".join(chr(cp) for a, b in _WHITESPACE for cp in range(a, b + 1))


def _is_word_char(c):
    """Rust regex's \\w: letters, marks, decimal digits, connector punctuation, joiners."""
    category = unicodedata.category(c)
    return category[0] in "LM" or category in ("Nd", "Nl", "Pc") or c in "\u200c\u200d"


# --- Training --------------------------------------------------------------------------------


@dataclass
class WordPieceTrainer:
    """Learn a WordPiece vocabulary from a corpus by likelihood-scored merges.

    The algorithm (Schuster & Nakajima 2012; as taught in Hugging Face's course):
      1. Split the corpus into words with the BasicTokenizer and count them.
      2. Spell each word in characters, every one but the first with the "##" prefix:
         "hugs" -> h ##u ##g ##s. The vocabulary starts as the special tokens, then every
         character c and "##c" (the `limit_alphabet` most frequent characters, if set).
      3. Repeat until the vocabulary has `vocab_size` entries: over all adjacent symbol
         pairs (a, b) in all words, weighted by word count, pick the pair with the best score

              score(a, b) = count(ab) / (count(a) * count(b))

         and merge it everywhere: "h" + "##u" -> "hu", "##g" + "##s" -> "##gs". The score
         ranks pairs by pointwise mutual information (log score = PMI - log N): a pair
         whose parts seldom appear apart beats a merely frequent one ("th" is frequent, but
         so are "t" and "h" on their own). Schuster & Nakajima pick the merge that most
         raises the training data's likelihood under the language model; this ratio is the
         cheap stand-in Hugging Face's course teaches, and we follow it. Pairs seen fewer than
         `min_frequency` times are never merged; ties go to the more frequent pair, then to
         the alphabetically first. Training stops early when no pair is left; the special
         tokens and the alphabet are kept even when they alone exceed `vocab_size`.
    Each merge updates the counts in the words containing the pair, and pushes the pairs
    whose score changed (those touching a, b or ab) onto a heap whose stale entries are
    skipped when popped, so a merge does not rescan the corpus.

    Differences from HF's WordPieceTrainer: HF runs its BPE trainer, which merges the most
    frequent pair (score = count(ab)), and renames the result with "##" prefixes; the
    vocabularies therefore differ. Its alphabet holds each character once, in the form
    seen; ours holds both c and ##c, so any word of known characters can be encoded.
    """

    vocab_size: int = 30522
    min_frequency: int = 2
    special_tokens: tuple = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    limit_alphabet: int | None = None
    continuing_subword_prefix: str = "##"

    def train(self, texts, basic=None):
        """The vocabulary (a list of tokens, in id order) learned from an iterable of texts."""
        basic = basic if basic is not None else BasicTokenizer()
        prefix = self.continuing_subword_prefix
        word_counts = Counter(word for text in texts for word in basic(text))

        char_counts = Counter()
        for word, count in word_counts.items():
            for c in word:
                char_counts[c] += count
        alphabet = sorted(c for c, _ in char_counts.most_common(self.limit_alphabet))
        vocab = list(dict.fromkeys([*self.special_tokens, *alphabet,
                                    *(prefix + c for c in alphabet)]))

        # Words as lists of symbol strings; words with characters outside the alphabet are
        # left out (they would encode as [UNK] anyway).
        known = set(alphabet)
        words = [[w[0], *(prefix + c for c in w[1:])] for w in word_counts
                 if set(w) <= known]
        counts = [word_counts[w] for w in word_counts if set(w) <= known]

        symbol_count = Counter()           # symbol -> occurrences in the corpus
        pair_count = Counter()             # (a, b) -> occurrences
        pair_words = {}                    # (a, b) -> indices of words that may contain it
        pairs_with = {}                    # symbol -> pairs that may contain it
        for i, (symbols, count) in enumerate(zip(words, counts)):
            for s in symbols:
                symbol_count[s] += count
            for pair in zip(symbols, symbols[1:]):
                pair_count[pair] += count
                pair_words.setdefault(pair, set()).add(i)
                for s in pair:
                    pairs_with.setdefault(s, set()).add(pair)

        def score(pair):
            return pair_count[pair] / (symbol_count[pair[0]] * symbol_count[pair[1]])

        def push(pairs):
            for pair in pairs:
                if pair_count[pair] >= self.min_frequency:
                    heapq.heappush(heap, (-score(pair), -pair_count[pair], pair))

        heap = []
        push(pair_count)
        in_vocab = set(vocab)
        while len(vocab) < self.vocab_size and heap:
            neg_score, neg_count, pair = heapq.heappop(heap)
            if pair_count[pair] < self.min_frequency or (neg_score, neg_count) != (
                    -score(pair), -pair_count[pair]):
                continue  # stale: the pair was merged away or its score changed since
            a, b = pair
            merged = a + b[len(prefix):]
            if merged not in in_vocab:
                in_vocab.add(merged)
                vocab.append(merged)
            changed = set(pairs_with.get(a, ())) | set(pairs_with.get(b, ()))
            for i in pair_words.pop(pair):
                old = words[i]
                new = _merge_pair(old, a, b, merged)
                if len(new) == len(old):
                    continue  # a stale index: this word no longer holds the pair
                count = counts[i]
                for p in zip(old, old[1:]):
                    pair_count[p] -= count
                    changed.add(p)
                for s in old:
                    symbol_count[s] -= count
                for s in new:
                    symbol_count[s] += count
                for p in zip(new, new[1:]):
                    pair_count[p] += count
                    pair_words.setdefault(p, set()).add(i)
                    for s in p:
                        pairs_with.setdefault(s, set()).add(p)
                    changed.add(p)
                words[i] = new
            # `merged` may have existed already (from another pair): its count rose.
            push(changed | pairs_with.get(merged, set()))
        return vocab


def _merge_pair(symbols, a, b, merged):
    """symbols with every adjacent (a, b), left to right, replaced by `merged`."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def train_wordpiece(texts, vocab_size=30522, *, lowercase=True, strip_accents=None,
                    min_frequency=2, special_tokens=("[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                     "[MASK]"), limit_alphabet=None):
    """A WordPieceTokenizer whose vocabulary is learned from `texts` (see WordPieceTrainer)."""
    basic = BasicTokenizer(lowercase=lowercase, strip_accents=strip_accents)
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                               special_tokens=tuple(special_tokens),
                               limit_alphabet=limit_alphabet)
    vocab = trainer.train(texts, basic)
    return WordPieceTokenizer({token: i for i, token in enumerate(vocab)}, basic=basic)
