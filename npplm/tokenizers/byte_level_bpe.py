"""Byte-level BPE: the tokenizer of GPT-2, RoBERTa, LLaMA-3, SmolLM2 and Qwen2.

Papers: byte pair encoding for words, Sennrich, Haddow & Birch, "Neural Machine Translation
of Rare Words with Subword Units" (arXiv:1508.07909), after Gage's 1994 compression
algorithm; on bytes, Radford et al., "Language Models are Unsupervised Multitask Learners"
(GPT-2, 2019), whose `encoder.py` is the reference design. The implementation we match id
for id is Hugging Face `tokenizers` (Rust) reading a `tokenizer.json` with a "BPE" model
and a "ByteLevel" pre-tokenizer and decoder.

Encoding one text goes through four steps:

  1. added tokens   "<|endoftext|>", "<s>", ... are cut out of the raw text first (the same
                    matching as every tokenizer's: added_tokens.split_on_added). Where the
                    tokenizer has a normalizer (Qwen2: NFC, so "e\u0301" is spelled "é"),
                    each remaining piece is normalized, and the added tokens marked
                    normalized=True are cut from it (as pipeline.Tokenizer does).
  2. pre-tokenize   cut each remaining piece into "words" with a regex, so merges never
                    cross a word boundary (GPT-2: letters, digits, punctuation runs, each
                    with at most one leading space; LLaMA-3's regex also caps digit runs at
                    3). Optional extra steps: Split (any regex) and Digits, in order.
  3. bytes          spell each word in the bytes of its UTF-8 encoding, each byte written
                    as one printable character (`bytes_to_unicode`: " " is "Ġ", "\\n" is
                    "Ċ"). 256 symbols cover every text: there is never an unknown token.
  4. merge          (BytePairEncoding.segment) repeatedly merge the adjacent pair with the
                    lowest rank (the earliest line of the merges list), every occurrence of
                    it left to right, until no adjacent pair has a rank. "Ġlower" ->
                    Ġ l o w e r -> Ġ lo w e r -> Ġ low e r -> Ġlow e r -> Ġlow er.
    then the template (LLaMA-3's "<|begin_of_text|> $A", RoBERTa's "<s> $A </s>").

Decoding maps each token's characters back to bytes and decodes the bytes as UTF-8, with
U+FFFD for invalid sequences (a prefix of a multi-byte character cut by max_length).

A word's ids are cached (base.WordCache: word -> ids), so step 4 is paid once per distinct
word.

Training (`ByteLevelBPETrainer`) is character-level BPE training (npplm/tokenizers/bpe.py)
on words spelled in byte characters.
"""

import functools
import itertools
from collections import Counter
from dataclasses import dataclass

from npplm.tokenizers.added_tokens import AddedToken, added_token_pattern, split_on_added
from npplm.tokenizers.base import BaseTokenizer, WordCache
from npplm.tokenizers.bpe import BPETrainer, merge_pair
from npplm.tokenizers.normalizers import normalize
from npplm.tokenizers.templates import Template
from npplm.tokenizers.unicode import onig_compatible

# --- Step 3: bytes as printable characters -------------------------------------------------


@functools.cache
def bytes_to_unicode():
    """{byte: character}: each of the 256 bytes as one printable, non-space character.

    GPT-2's table. Bytes that are already printable Latin-1 characters ("!".."~",
    "¡".."¬", "®".."ÿ") stand for themselves; the 68 others (controls, space, soft hyphen)
    are moved, in order, to U+0100 and up: 0x00 -> "Ā", 0x20 " " -> "Ġ", 0x0A "\\n" -> "Ċ".
    The BPE then works on strings without whitespace or control characters, and a merges
    file stays one "a b" pair per line.
    """
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in kept}
    moved = (b for b in range(256) if b not in table)
    for n, b in enumerate(moved):
        table[b] = chr(256 + n)
    return dict(sorted(table.items()))


_BYTE_TO_CHAR = str.maketrans({chr(b): c for b, c in bytes_to_unicode().items()})
_CHAR_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}
BYTE_ALPHABET = tuple(bytes_to_unicode().values())


def to_byte_level(text):
    """A text as its UTF-8 bytes, one character per byte: "é " -> "Ã©Ġ"."""
    # latin-1 turns each byte into the code point of the same value; then the table.
    return text.encode("utf-8").decode("latin-1").translate(_BYTE_TO_CHAR)


def from_byte_level(tokens):
    """The text of byte-level tokens (tokenizers' ByteLevel decoder).

    A token whose characters are not all in the table (an added token such as
    "<|end of text|>" with a space) stands for its own UTF-8 bytes, as in tokenizers.
    Invalid UTF-8 becomes U+FFFD, one per maximal invalid subsequence (Rust's
    from_utf8_lossy and Python's errors="replace" agree on this).
    """
    out = bytearray()
    for token in tokens:
        try:
            out.extend(_CHAR_TO_BYTE[c] for c in token)
        except KeyError:
            out.extend(token.encode("utf-8"))
    return out.decode("utf-8", errors="replace")


# --- Step 2: pre-tokenization --------------------------------------------------------------

# GPT-2's regex (encoder.py), also tokenizers' ByteLevel(use_regex=True) and RoBERTa's:
# English contractions; letters, digits, or other non-space characters, each run with at
# most one leading space; then whitespace, leaving one space before a following word.
GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
# LLaMA-3's (tiktoken's cl100k_base): contractions in any case; a letter run may take one
# leading non-letter, non-digit (not a newline); digits in runs of at most 3; punctuation
# takes trailing newlines; newline runs stand apart from other whitespace.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


# tokenizers runs these regexes with Oniguruma, whose Unicode tables are older than those of
# the `regex` package: unicode.onig_compatible compiles them with Oniguruma's \p{L}, \p{N}.


@dataclass(frozen=True)
class Split:
    """Cut a piece on the matches of a regex (tokenizers' Split pre-tokenizer).

    behavior "isolated": the matches and the text between them are all pieces;
    "removed": only the text between the matches is kept. Empty pieces are dropped.
    """

    pattern: str
    behavior: str = "isolated"

    def __post_init__(self):
        if self.behavior not in ("isolated", "removed"):
            raise ValueError(f"Split behavior {self.behavior!r}: use 'isolated' or 'removed'")
        object.__setattr__(self, "_regex", onig_compatible(self.pattern))

    def __call__(self, piece):
        out, done = [], 0
        for match in self._regex.finditer(piece):
            start, stop = match.span()
            if start == stop:
                continue
            if done < start:
                out.append(piece[done:start])
            if self.behavior == "isolated":
                out.append(piece[start:stop])
            done = stop
        if done < len(piece):
            out.append(piece[done:])
        return out


@dataclass(frozen=True)
class Digits:
    """Put digits apart: each one alone, or runs of them (tokenizers' Digits, SmolLM2).

    A digit is Rust's char::is_numeric, the Unicode categories Nd, Nl and No (\\p{N}).
    """

    individual_digits: bool = False

    def __call__(self, piece):
        # Rust's is_numeric (Unicode 16 in tokenizers 0.23) lacks the same new digits.
        return Split(r"\p{N}" if self.individual_digits else r"\p{N}+")(piece)


@dataclass(frozen=True)
class ByteLevel:
    """tokenizers' ByteLevel pre-tokenizer: a prefix space, GPT-2's regex, then bytes.

    add_prefix_space   put " " before a piece that does not start with one, so a first
                       word is spelled like the same word mid-sentence (RoBERTa)
    use_regex          cut with GPT2_PATTERN (False when a Split before it did the cutting,
                       as in LLaMA-3's tokenizer.json)
    The byte mapping (step 3) happens inside the cached word lookup, so __call__ only cuts.
    """

    add_prefix_space: bool = False
    use_regex: bool = True

    def __call__(self, piece):
        if self.add_prefix_space and not piece.startswith(" "):
            piece = " " + piece
        return _gpt2_split(piece) if self.use_regex else [piece]


_gpt2_split = onig_compatible(GPT2_PATTERN).findall  # GPT2_PATTERN matches every character


def gpt2_pre_tokenizer(add_prefix_space=False):
    """GPT-2's (add_prefix_space=False) and RoBERTa's (True) pre-tokenization."""
    return (ByteLevel(add_prefix_space=add_prefix_space),)


def llama3_pre_tokenizer():
    """LLaMA-3's pre-tokenization, as its tokenizer.json writes it."""
    return (Split(LLAMA3_PATTERN), ByteLevel(use_regex=False))


def pre_tokenize(steps, text):
    """The words of a text: each step cuts every piece the previous one produced."""
    pieces = [text]
    for step in steps:
        pieces = [word for piece in pieces for word in step(piece)]
    return pieces


# --- Step 4: merges ------------------------------------------------------------------------


class BytePairEncoding:
    """Segment one byte-level word by applying merges in rank order.

    vocab          token -> id; holds the 256 byte characters and every merge result
    merges         [(a, b), ...]: a + b is a token; rank = position in the list
    ignore_merges  a word that is itself in the vocabulary is one token, unmerged
                   (LLaMA-3 sets it: the vocabulary has tokens no merge sequence builds)

    segment(word): start from the word's characters; while some adjacent pair (a, b) has a
    rank, take the lowest-ranked one and merge all its occurrences, left to right. A
    character missing from the vocabulary (a vocabulary trained without the full byte
    alphabet) is dropped, as tokenizers does when there is no unknown token.

    tokenizers merges one occurrence at a time from a heap of (rank, position); the result
    is the same, since merging the lowest rank first never creates a pair of lower rank
    than the one being merged in a vocabulary built by training.
    """

    def __init__(self, vocab, merges, ignore_merges=False):
        self.vocab = vocab
        self.merges = [tuple(m) for m in merges]
        self.ranks = {}
        for rank, (a, b) in enumerate(self.merges):
            if a not in vocab or b not in vocab or a + b not in vocab:
                missing = next(t for t in (a, b, a + b) if t not in vocab)
                raise ValueError(f"merge {rank} ({a!r}, {b!r}): {missing!r} is not in the "
                                 "vocabulary")
            self.ranks.setdefault((a, b), rank)  # a repeated merge keeps its first rank
        self.ignore_merges = ignore_merges

    def segment(self, word):
        """The tokens of one byte-level word."""
        if self.ignore_merges and word in self.vocab:
            return [word]
        symbols = [c for c in word if c in self.vocab]
        ranks = self.ranks
        while len(symbols) > 1:
            pairs = zip(symbols, symbols[1:])
            best = min(pairs, key=lambda pair: ranks.get(pair, len(ranks)))
            if best not in ranks:
                break
            symbols = merge_pair(symbols, *best)
        return symbols


# --- The tokenizer -------------------------------------------------------------------------


class ByteLevelBPETokenizer(BaseTokenizer):
    """Byte-level BPE: added tokens, normalizer, pre-tokenization, bytes, merges, template.

    chat_template is set by loaders that find one (GGUF metadata, tokenizer_config.json);
    apply_chat_template (base.py) renders it.

    vocab, merges, ignore_merges   see BytePairEncoding
    normalizer       normalizer steps (normalizers.py), applied in order to the text between
                     added tokens (default: none; Qwen2: NFC)
    pre_tokenizer    the steps of step 2 (Split, Digits, ByteLevel), applied in order; the
                     last must be a ByteLevel. Default: GPT-2's, gpt2_pre_tokenizer()
    added_tokens     AddedTokens cut from the text first (default: none)
    single, pair     templates as in WordPieceTokenizer; default: no special tokens
    pad_token        the token padding fills batches with (None: id 0, as in tokenizers)
    model_max_length what truncation=True cuts to when no max_length is given
    roles            {role: token} for bos_token, eos_token, unk_token, sep_token,
                     cls_token, mask_token (base.SPECIAL_TOKEN_ROLES); the others are None

    The public interface is BaseTokenizer's (base.py): encode(text, pair) -> Encoding;
    encode_batch(texts) (or calling the tokenizer) -> {"input_ids", "attention_mask",
    "token_type_ids"} int64 (B, T) arrays; decode(ids, skip_special_tokens=False) (special
    tokens kept by default, as in transformers); tokenize(text); save(path), and
    npplm.load_tokenizer.
    """

    def __init__(self, vocab, merges, *, normalizer=(), pre_tokenizer=None, added_tokens=(),
                 single=None, pair=None, pad_token=None, model_max_length=1024,
                 ignore_merges=False, roles=None):
        self.normalizer = tuple(normalizer)
        self._set_vocabulary(vocab, added_tokens, single, pair, pad_token, model_max_length,
                             normalize=self._normalize if self.normalizer else None,
                             roles=roles)
        self.model = BytePairEncoding(self.vocab, merges, ignore_merges)
        self.pre_tokenizer = tuple(gpt2_pre_tokenizer() if pre_tokenizer is None
                                   else pre_tokenizer)
        if not self.pre_tokenizer or not isinstance(self.pre_tokenizer[-1], ByteLevel):
            raise ValueError("the last pre-tokenizer step must be a ByteLevel")
        # The added tokens marked normalized=True are matched in the normalized text (late);
        # without a normalizer that is the raw text, and one pattern matches them all.
        late = [t for t in self.added_tokens if t.normalized and self.normalizer]
        self._raw_added = added_token_pattern([t for t in self.added_tokens if t not in late])
        self._normalized_added = added_token_pattern(late, self._normalize)
        self._word_ids = WordCache(self._ids_of_word)

    @property
    def merges(self):
        return self.model.merges

    def _normalize(self, text):
        return normalize(self.normalizer, text)

    def _ids_of_word(self, word):
        """Steps 3 and 4 for one pre-tokenized word (raw text): its ids."""
        vocab = self.vocab
        return tuple(vocab[token] for token in self.model.segment(to_byte_level(word)))

    def _encode_one(self, text):
        """Steps 1 to 4: the ids of one text, without special tokens."""
        word_ids = self._word_ids.__getitem__
        chain = itertools.chain.from_iterable
        ids = []
        for piece, token in split_on_added(text, self._raw_added):
            if token is not None:
                ids.append(token.id)
                continue
            for part, late in split_on_added(self._normalize(piece), self._normalized_added):
                if late is not None:
                    ids.append(late.id)
                elif part:
                    ids.extend(chain(map(word_ids, pre_tokenize(self.pre_tokenizer, part))))
        return ids

    def _text_of(self, tokens):
        return from_byte_level(tokens)

    # -- saving -----------------------------------------------------------------------------

    def to_tokenizer_json(self):
        """This tokenizer as a Hugging Face tokenizer.json dictionary."""
        def step(s):
            if isinstance(s, ByteLevel):
                return {"type": "ByteLevel", "add_prefix_space": s.add_prefix_space,
                        "trim_offsets": True, "use_regex": s.use_regex}
            if isinstance(s, Digits):
                return {"type": "Digits", "individual_digits": s.individual_digits}
            return {"type": "Split", "pattern": {"Regex": s.pattern},
                    "behavior": s.behavior.capitalize(), "invert": False}

        steps = [step(s) for s in self.pre_tokenizer]
        forms = [s.to_json() for s in self.normalizer]
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": self._added_tokens_json(),
            "normalizer": (None if not forms else forms[0] if len(forms) == 1 else
                           {"type": "Sequence", "normalizers": forms}),
            "pre_tokenizer": steps[0] if len(steps) == 1 else {"type": "Sequence",
                                                              "pretokenizers": steps},
            "post_processor": self._post_processor_json(),
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": self.model.ignore_merges,
                      "vocab": dict(sorted(self.vocab.items(), key=lambda kv: kv[1])),
                      "merges": [list(m) for m in self.model.merges]},
        }

    def __repr__(self):
        return (f"ByteLevelBPETokenizer(vocab_size={self.vocab_size}, "
                f"merges={len(self.model.merges)}, normalizer={self.normalizer!r}, "
                f"pre_tokenizer={self.pre_tokenizer!r}, "
                f"added_tokens={[t.content for t in self.added_tokens]})")


# --- Training --------------------------------------------------------------------------------


@dataclass
class ByteLevelBPETrainer:
    """Learn byte-level BPE merges from a corpus: character-level BPE on byte characters.

    1. Pre-tokenize the corpus (step 2) and count the words; spell each word in byte
       characters (step 3).
    2. Run npplm.tokenizers.bpe.BPETrainer on those words with the 256 byte characters as
       its initial alphabet, so that any text can be encoded: the vocabulary starts as the
       special tokens, then the 256 characters in code point order, and grows by merging the
       most frequent adjacent pair, ties going to the pair of smallest ids. Its docstring
       gives the algorithm. The vocabulary and merges equal those of tokenizers' BpeTrainer
       with ByteLevel.alphabet() as initial alphabet, id for id.
    """

    vocab_size: int = 50257
    min_frequency: int = 2
    special_tokens: tuple = ()

    def train(self, texts, pre_tokenizer=None):
        """(vocab: token -> id, merges: [(a, b), ...]) learned from an iterable of texts."""
        steps = tuple(gpt2_pre_tokenizer() if pre_tokenizer is None else pre_tokenizer)
        word_counts = Counter(to_byte_level(word) for text in texts
                              for word in pre_tokenize(steps, text))
        trainer = BPETrainer(vocab_size=self.vocab_size, min_frequency=self.min_frequency,
                             special_tokens=tuple(self.special_tokens),
                             initial_alphabet=BYTE_ALPHABET)
        return trainer.train(word_counts)


def train_byte_level_bpe(texts, vocab_size=50257, *, min_frequency=2, special_tokens=(),
                         pre_tokenizer=None, template=None):
    """A ByteLevelBPETokenizer whose vocabulary and merges are learned from `texts`.

    The special tokens get the first ids and are matched whole in the text. template: the
    special tokens encode adds and their roles (templates.py: GPT2, ROBERTA, GLM); None
    adds none and names no role.
    """
    template = Template() if template is None else template
    steps = tuple(gpt2_pre_tokenizer() if pre_tokenizer is None else pre_tokenizer)
    trainer = ByteLevelBPETrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=tuple(special_tokens))
    vocab, merges = trainer.train(texts, steps)
    added = [AddedToken(t, vocab[t]) for t in dict.fromkeys(special_tokens)]
    return ByteLevelBPETokenizer(vocab, merges, pre_tokenizer=steps, added_tokens=added,
                                 **template.arguments())
