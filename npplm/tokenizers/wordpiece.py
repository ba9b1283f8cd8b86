"""BERT's tokenizer: the WordPiece model (greedy longest-match-first), its trainer, and
WordPieceTokenizer, which assembles BERT's stages around them.

Papers: WordPiece, Schuster & Nakajima, "Japanese and Korean Voice Search" (ICASSP 2012);
its use for translation, Wu et al., "Google's Neural Machine Translation System"
(arXiv:1609.08144); and BERT, Devlin et al. (arXiv:1810.04805), whose `tokenization.py`
defines the pipeline below. The reference we match id for id is Hugging Face `tokenizers`
(the Rust library behind BertTokenizerFast) reading a `tokenizer.json`.

Encoding one text goes through five steps, each in the file that holds its kind:

  1. added tokens   "[MASK]", "[SEP]", ... are cut out of the raw text first, so "a[MASK]b"
                    keeps "[MASK]" whole however the later steps would split it
                    (added_tokens.py).
  2. normalize      (normalizers.BertNormalizer) delete control characters, NUL and U+FFFD;
                    map whitespace to " "; put spaces around CJK ideographs; for an uncased
                    vocabulary strip accents (NFD, then drop nonspacing marks) and lowercase.
  3. split          (pre_tokenizers.BertPreTokenizer) cut on whitespace (dropped) and
                    punctuation (kept, one character per word). "Don't!" -> "don", "'",
                    "t", "!". BasicTokenizer is steps 2 and 3, as BERT names them.
  4. WordPiece      (WordPiece.tokenize, here) each word, greedily: the longest vocabulary
                    entry that prefixes the word, then the longest "##"-entry that prefixes
                    the rest, and so on. A word that cannot be covered, or longer than
                    `max_input_chars_per_word`, becomes the single token "[UNK]".
                    "unaffable" -> "un", "##aff", "##able".
  5. template       [CLS] A [SEP] for one text, [CLS] A [SEP] B [SEP] for a pair, with
                    token_type_ids 0 for A's part and 1 for B's (base.py).

Decoding (decoders.WordPiece) glues "##" pieces to the piece before, puts a space before
every other piece, and (`cleanup`) removes the space before . , ! ? and a few English
contractions, as HF does.

A word's ids are cached (base.WordCache: word -> ids). Running text repeats its words (the
MB of English docstrings in benchmarks/side_by_side_tokenizers.py has 7.4k distinct words
in 233k), so step 4 is mostly a dict lookup and the cost is steps 2 and 3, done with str
methods and regexes rather than a loop over characters.

Training (`WordPieceTrainer`) builds a vocabulary from a corpus by likelihood-scored merges;
its docstring gives the algorithm and how it differs from HF's trainer.
"""

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass

import npplm.tokenizers.decoders as decoders
from npplm.tokenizers.added_tokens import AddedToken, added_token_pattern, split_on_added
from npplm.tokenizers.base import BaseTokenizer, WordCache
from npplm.tokenizers.bpe import merge_pair
from npplm.tokenizers.normalizers import BertNormalizer
from npplm.tokenizers.pre_tokenizers import BertPreTokenizer
from npplm.tokenizers.templates import BERT

# --- Steps 2 and 3 together: BERT's basic tokenizer ------------------------------------------


class BasicTokenizer:
    """BERT's basic tokenizer: normalize the text, then split it into words.

    The two stages of a tokenizer.json under the name BERT's `tokenization.py` gives them:
    `normalizer`, a normalizers.BertNormalizer, and `pre_tokenizer`, a
    pre_tokenizers.BertPreTokenizer. The trainer splits its corpus with one, and
    WordPieceTokenizer takes its settings from one.

    lowercase             lowercase the text (an "uncased" vocabulary)
    strip_accents         NFD-decompose and drop nonspacing marks (é -> e); None: follow
                          `lowercase`, as BERT and tokenizers do
    clean_text            delete control characters, NUL and U+FFFD; whitespace -> " "
    handle_chinese_chars  put spaces around CJK ideographs, so each is a word

    normalize("Crème  brûlée\\t!") == "creme  brulee !"
    split("creme  brulee !") == ["creme", "brulee", "!"]
    """

    def __init__(self, lowercase=True, strip_accents=None, clean_text=True,
                 handle_chinese_chars=True):
        self.normalizer = BertNormalizer(clean_text=clean_text,
                                         handle_chinese_chars=handle_chinese_chars,
                                         strip_accents=strip_accents, lowercase=lowercase)
        self.pre_tokenizer = BertPreTokenizer()

    def __repr__(self):
        n = self.normalizer
        return (f"BasicTokenizer(lowercase={n.lowercase}, strip_accents={n.strip_accents}, "
                f"clean_text={n.clean_text}, handle_chinese_chars={n.handle_chinese_chars})")

    def normalize(self, text):
        """Step 2: the normalized text (the same string tokenizers' BertNormalizer gives)."""
        return self.normalizer(text)

    def split(self, normalized):
        """Step 3: words of a normalized text, cut on whitespace and around punctuation."""
        return self.pre_tokenizer(normalized)

    def __call__(self, text):
        """The words of a raw text: split(normalize(text))."""
        return self.pre_tokenizer(self.normalizer(text))


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


# --- The tokenizer: steps 1 to 5 -------------------------------------------------------------

# A template item: ("$A" | "$B" | a special token, token_type_id). "[CLS] $A [SEP]", and
# "[CLS] $A [SEP] $B:1 [SEP]:1" for a pair.
BERT_SINGLE, BERT_PAIR = BERT.single, BERT.pair
BERT_DECODER = decoders.WordPiece(prefix="##", cleanup=True)


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
    decoder                a decoders.WordPiece, or None to join tokens with spaces
    model_max_length       what truncation=True cuts to when no max_length is given
    roles                  {role: token} for bos_token, eos_token, unk_token, sep_token,
                           cls_token, mask_token (base.SPECIAL_TOKEN_ROLES); default: BERT's
                           unk_token, [CLS], [SEP] and [MASK], those in `vocab`

    encode(text, pair) -> Encoding(ids, token_type_ids); encode_batch(texts) (or calling
    the tokenizer) -> {"input_ids", "attention_mask", "token_type_ids"}: int64 (B, T) arrays;
    decode(ids, skip_special_tokens=False) -> str (special tokens kept by default, as in
    transformers); tokenize(text) -> pieces; save(path), and npplm.load_tokenizer.
    """

    def __init__(self, vocab, *, basic=None, unk_token="[UNK]", continuing_subword_prefix="##",
                 max_input_chars_per_word=100, added_tokens=None, single=None, pair=None,
                 pad_token="[PAD]", decoder=BERT_DECODER, model_max_length=512, roles=None):
        vocab = dict(vocab)
        if added_tokens is None:
            added_tokens = [AddedToken(t, vocab[t]) for t in
                            ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab]
        if roles is None:
            roles = {role: token for role, token in (
                ("unk_token", unk_token), ("cls_token", "[CLS]"), ("sep_token", "[SEP]"),
                ("mask_token", "[MASK]")) if token in vocab}
        has_bert_specials = "[CLS]" in vocab and "[SEP]" in vocab
        if single is None and has_bert_specials:
            single = BERT_SINGLE
        if pair is None and has_bert_specials:
            pair = BERT_PAIR
        self.basic = basic if basic is not None else BasicTokenizer()
        # The stages themselves, called directly on the hot path.
        self._normalizer, self._pre_tokenizer = self.basic.normalizer, self.basic.pre_tokenizer
        self._set_vocabulary(vocab, added_tokens, single, pair, pad_token, model_max_length,
                             normalize=self._normalizer, roles=roles)
        self.model = WordPiece(self.vocab, unk_token, continuing_subword_prefix,
                               max_input_chars_per_word)
        self.decoder = decoder
        self._raw_added = added_token_pattern([t for t in added_tokens if not t.normalized])
        self._normalized_added = added_token_pattern(
            [t for t in added_tokens if t.normalized], self._normalizer)
        self._word_ids = WordCache(self._ids_of_word)

    # -- encoding ---------------------------------------------------------------------------

    def _ids_of_word(self, word):
        return tuple(self.vocab[piece] for piece in self.model.tokenize(word))

    def _segments(self, text):
        """Steps 1 and 2: [(normalized piece of text, AddedToken or None)].

        Raw-matched tokens are cut from the raw text; each other piece is then normalized
        and cut again by the tokens matched after normalization (if any).
        """
        out = []
        for piece, token in split_on_added(text, self._raw_added):
            if token is not None:
                out.append((piece, token))
            else:
                out.extend(split_on_added(self._normalizer(piece), self._normalized_added))
        return out

    def _encode_one(self, text):
        """Steps 1 to 4: the ids of one text, without special tokens."""
        word_ids = self._word_ids.__getitem__
        chain = itertools.chain.from_iterable
        if self._raw_added is None and self._normalized_added is None:  # no added tokens
            return list(chain(map(word_ids, self._pre_tokenizer(self._normalizer(text)))))
        ids = []
        for piece, token in self._segments(text):
            if token is not None:
                ids.append(token.id)
            else:
                ids.extend(chain(map(word_ids, self._pre_tokenizer(piece))))
        return ids

    # -- decoding ---------------------------------------------------------------------------

    def _text_of(self, tokens):
        return " ".join(tokens) if self.decoder is None else "".join(self.decoder(tokens))

    # -- saving -----------------------------------------------------------------------------

    def to_tokenizer_json(self):
        """This tokenizer as a Hugging Face tokenizer.json dictionary."""
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": self._added_tokens_json(),
            "normalizer": self._normalizer.to_json(),
            "pre_tokenizer": self._pre_tokenizer.to_json(),
            "post_processor": self._post_processor_json(),
            "decoder": None if self.decoder is None else self.decoder.to_json(),
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
        normalizer = self._normalizer
        config = {**self._tokenizer_config(), "tokenizer_class": "BertTokenizer",
                  "do_lower_case": normalizer.lowercase,
                  "strip_accents": normalizer.strip_accents,
                  "tokenize_chinese_chars": normalizer.handle_chinese_chars,
                  "clean_up_tokenization_spaces": bool(self.decoder and self.decoder.cleanup)}
        return {"tokenizer.json": self.to_tokenizer_json(),
                "vocab.txt": "".join(token + "\n" for token, _ in by_id),
                "tokenizer_config.json": config}

    def __repr__(self):
        return (f"WordPieceTokenizer(vocab_size={self.vocab_size}, {self.basic!r}, "
                f"added_tokens={[t.content for t in self.added_tokens]})")


# --- Training --------------------------------------------------------------------------------


@dataclass
class WordPieceTrainer:
    """Learn a WordPiece vocabulary from a corpus by likelihood-scored merges.

    The algorithm (Schuster & Nakajima 2012; as taught in Hugging Face's course):
      1. Split the corpus into words with a BasicTokenizer and count them.
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
                new = merge_pair(old, a, b, merged)
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


def train_wordpiece(texts, vocab_size=30522, *, lowercase=True, strip_accents=None,
                    min_frequency=2, special_tokens=("[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                     "[MASK]"), limit_alphabet=None,
                    template=None):
    """A WordPieceTokenizer whose vocabulary is learned from `texts` (see WordPieceTrainer).

    template: the special tokens encode adds and their roles (templates.BERT); default:
    WordPieceTokenizer's, BERT's where the special tokens allow it.
    """
    basic = BasicTokenizer(lowercase=lowercase, strip_accents=strip_accents)
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                               special_tokens=tuple(special_tokens),
                               limit_alphabet=limit_alphabet)
    vocab = {token: i for i, token in enumerate(trainer.train(texts, basic))}
    if template is None:
        return WordPieceTokenizer(vocab, basic=basic)
    return WordPieceTokenizer(vocab, basic=basic, **template.arguments())
