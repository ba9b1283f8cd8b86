"""Character-level byte pair encoding: the merges of GPT-1, and of LLaMA-1/2 with byte fallback.

Papers: Sennrich, Haddow & Birch, "Neural Machine Translation of Rare Words with Subword
Units" (arXiv:1508.07909), after Gage's 1994 compression algorithm; GPT-1 (Radford et al.,
"Improving Language Understanding by Generative Pre-Training", 2018) used it on lowercased
words with an end-of-word marker "</w>"; SentencePiece (Kudo & Richardson,
arXiv:1808.06226) runs it on text whose spaces are "▁", with `<0x..>` byte pieces for
characters outside the vocabulary: the tokenizer of LLaMA-1/2 (arXiv:2302.13971). The
implementation we match id for id is Hugging Face `tokenizers`' "BPE" model and its
BpeTrainer.

A word is spelled in characters, each looked up in the vocabulary:

    "lower" -> l o w e r</w>        (end_of_word_suffix "</w>": the last one is marked)
    "lower" -> l ##o ##w ##e ##r    (continuing_subword_prefix "##", as WordPiece spells)

A character with no entry becomes, in order of preference, its UTF-8 bytes as "<0xE4>"
pieces (byte_fallback), the unknown token (consecutive unknowns fused into one when
fuse_unk), or nothing. Then (BPE.segment) the merges are applied in rank order: the pair of
adjacent symbols with the lowest rank (the earliest line of the merges list), leftmost
first, is merged, and the pairs it forms with its neighbours become candidates, until no
adjacent pair has a rank. A heap of (rank, position) holds the candidates, as in tokenizers.

Training (BPETrainer) repeatedly merges the most frequent adjacent pair; its docstring
gives the algorithm and the tie-break. Byte-level BPE (byte_level_bpe.py) is this trainer on
words spelled in bytes.
"""

import heapq
from collections import Counter
from dataclasses import dataclass


def byte_fallback_token(byte):
    """The piece that stands for one byte: 0xE4 -> "<0xE4>" (SentencePiece's spelling)."""
    return f"<0x{byte:02X}>"


BYTE_FALLBACK_TOKENS = tuple(byte_fallback_token(b) for b in range(256))


class BPE:
    """A word in characters, then merges in rank order: the "BPE" model of a tokenizer.json.

    vocab                      token -> id
    merges                     [(a, b), ...]; rank = position. The result a + b (a + b
                               without its prefix, with a continuing_subword_prefix) must
                               be in the vocabulary. A pair listed twice keeps its last
                               rank, as in tokenizers
    unk_token                  stands for a character with no entry (None: it is dropped)
    fuse_unk                   consecutive unknown characters give one unk_token
    byte_fallback              a character with no entry becomes its UTF-8 bytes, "<0x..>"
                               pieces, when they are all in the vocabulary
    continuing_subword_prefix  spelled before every character but a word's first
    end_of_word_suffix         spelled after a word's last character
    ignore_merges              a word that is itself in the vocabulary is one token

    segment(word) -> ids. Example, merges [("l", "o"), ("lo", "w"), ("e", "r</w>")]:
    "lower" -> l o w e r</w> -> lo w e r</w> -> low e r</w> -> low er</w>.
    """

    def __init__(self, vocab, merges, *, unk_token=None, fuse_unk=False, byte_fallback=False,
                 continuing_subword_prefix=None, end_of_word_suffix=None, ignore_merges=False):
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        if unk_token is not None and unk_token not in self.vocab:
            raise ValueError(f"the unknown token {unk_token!r} is not in the vocabulary")
        self.unk_token = unk_token
        self.fuse_unk = bool(fuse_unk)
        self.byte_fallback = bool(byte_fallback)
        self.continuing_subword_prefix = continuing_subword_prefix or None
        self.end_of_word_suffix = end_of_word_suffix or None
        self.ignore_merges = bool(ignore_merges)
        prefix = self.continuing_subword_prefix or ""
        # (id of a, id of b) -> (rank, id of the merged token)
        self._merge_of = {}
        for rank, (a, b) in enumerate(self.merges):
            merged = a + b.removeprefix(prefix) if prefix else a + b
            missing = next((t for t in (a, b, merged) if t not in self.vocab), None)
            if missing is not None:
                raise ValueError(f"merge {rank} ({a!r}, {b!r}): {missing!r} is not in the "
                                 "vocabulary")
            self._merge_of[self.vocab[a], self.vocab[b]] = (rank, self.vocab[merged])
        self._byte_ids = [self.vocab.get(t) for t in BYTE_FALLBACK_TOKENS]

    def spell(self, word):
        """The ids of a word's characters, before any merge (prefix, suffix, unknowns)."""
        vocab, prefix, suffix = self.vocab, self.continuing_subword_prefix, self.end_of_word_suffix
        unk_id = None if self.unk_token is None else vocab[self.unk_token]
        ids, pending_unk = [], False
        last = len(word) - 1
        for i, c in enumerate(word):
            symbol = c
            if i and prefix:
                symbol = prefix + symbol
            if i == last and suffix:
                symbol += suffix
            token_id = vocab.get(symbol)
            if token_id is not None:
                if pending_unk:
                    ids.append(unk_id)
                    pending_unk = False
                ids.append(token_id)
                continue
            if self.byte_fallback:
                # tokenizers spells the whole symbol, prefix and suffix included, in bytes,
                # and leaves a pending unknown to be emitted after them.
                byte_ids = [self._byte_ids[b] for b in symbol.encode("utf-8")]
                if None not in byte_ids:
                    ids.extend(byte_ids)
                    continue
            if unk_id is not None:
                if pending_unk and not self.fuse_unk:
                    ids.append(unk_id)
                pending_unk = True
        if pending_unk:
            ids.append(unk_id)
        return ids

    def segment(self, word):
        """The ids of one word: spelled, then merged in rank order."""
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        return self.merge(self.spell(word))

    def merge(self, ids):
        """Apply the merges to a list of symbol ids (tokenizers' Word::merge_all).

        The candidates are (rank, position of the left symbol, merged id). A popped candidate
        is stale when its left symbol was merged away or its pair changed since; otherwise
        the two symbols become one and the pairs with its new neighbours are pushed.
        """
        merge_of = self._merge_of
        n = len(ids)
        if n < 2:
            return list(ids)
        ids = list(ids)
        nxt = [*range(1, n), -1]     # the linked list of live symbols
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = [(merge_of[pair][0], i, merge_of[pair][1])
                for i, pair in enumerate(zip(ids, ids[1:])) if pair in merge_of]
        heapq.heapify(heap)
        while heap:
            rank, i, new = heapq.heappop(heap)
            j = nxt[i]
            if not alive[i] or j < 0 or merge_of.get((ids[i], ids[j]), (0, -1))[1] != new:
                continue
            ids[i] = new
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prv[nxt[j]] = i
            for left, right, at in ((prv[i], i, prv[i]), (i, nxt[i], i)):
                if left >= 0 and right >= 0 and (ids[left], ids[right]) in merge_of:
                    r, m = merge_of[ids[left], ids[right]]
                    heapq.heappush(heap, (r, at, m))
        return [t for t, keep in zip(ids, alive) if keep]

    def to_json(self):
        """The "model" entry of a tokenizer.json."""
        return {"type": "BPE", "dropout": None, "unk_token": self.unk_token,
                "continuing_subword_prefix": self.continuing_subword_prefix,
                "end_of_word_suffix": self.end_of_word_suffix, "fuse_unk": self.fuse_unk,
                "byte_fallback": self.byte_fallback, "ignore_merges": self.ignore_merges,
                "vocab": dict(sorted(self.vocab.items(), key=lambda kv: kv[1])),
                "merges": [list(m) for m in self.merges]}


# --- Training --------------------------------------------------------------------------------


@dataclass
class BPETrainer:
    """Learn BPE merges from word counts: merge the most frequent adjacent pair, repeatedly.

    The algorithm (Sennrich et al. 2016):
      1. The vocabulary starts as the special tokens, then the alphabet: every character
         of the words (only the `limit_alphabet` most frequent, if set) and those of
         `initial_alphabet`, in code point order.
      2. Spell each word in the alphabet's characters (others are left out), with the
         prefix on all but the first and the suffix on the last; forms such as "r</w>" or
         "##r" are added to the vocabulary, in string order, after the alphabet.
      3. Until the vocabulary has `vocab_size` entries: count every adjacent pair (a, b)
         over all words, weighted by word count; take the most frequent; append the merge
         (a, b) and the token a + b (b without its prefix); replace (a, b) by a + b in every
         word, left to right. Stop early when the best pair occurs fewer than
         `min_frequency` times.
    Tie-break, deterministic and the same as tokenizers' BpeTrainer: among pairs of equal
    count, the smallest (id(a), id(b)), comparing ids (the earlier token of the vocabulary
    first), not strings.

    Where tokenizers differs. It adds the forms of step 2 in the order it meets them while
    walking a hash map of the words, which changes from run to run: with a prefix or a
    suffix its ids for those forms (and so, on a tie, its choice of merge) are not
    reproducible; the vocabulary as a set and, on the corpora of our tests, the merges are.
    With limit_alphabet, characters of equal count at the cut are dropped in no set order.
    Without prefix, suffix or limit, our vocabulary and merges equal its, id for id.

    The counts are kept up to date by merging only in the words that hold the pair and
    adjusting the counts of the pairs those words lose and gain. The best pair comes from a
    heap of (-count, id(a), id(b)) whose entries may be stale (a count that has since gone
    down): a popped entry whose count is out of date is pushed back with the right one.
    A token a + b already in the vocabulary (reached by another pair) keeps its id; its
    merge is still recorded. tokenizers does the same, but when such a pair existed before
    with a lower count it merges, on that step, only in the words where the count grew; we
    merge in all words. This needs a corpus built to produce it.
    """

    vocab_size: int = 30000
    min_frequency: int = 0
    special_tokens: tuple = ()
    limit_alphabet: int | None = None
    initial_alphabet: tuple = ()
    continuing_subword_prefix: str | None = None
    end_of_word_suffix: str | None = None

    def alphabet(self, word_counts):
        """Step 1's characters, in code point order."""
        char_counts = Counter()
        for word, count in word_counts.items():
            for c in word:
                char_counts[c] += count
        for c in self.initial_alphabet:  # always kept (unless the limit is below their number)
            char_counts[c] = float("inf")
        kept = list(char_counts)
        if self.limit_alphabet is not None and len(kept) > self.limit_alphabet:
            kept = sorted(kept, key=lambda c: (-char_counts[c], c))[:self.limit_alphabet]
        return sorted(kept)

    def spell(self, word, known):
        """Step 2: the symbols of one word (characters not `known` left out)."""
        prefix, suffix = self.continuing_subword_prefix, self.end_of_word_suffix
        last = len(word) - 1
        out = []
        for i, c in enumerate(word):
            if c in known:
                out.append((prefix if i and prefix else "") + c
                           + (suffix if i == last and suffix else ""))
        return out

    def train(self, word_counts):
        """(vocab: token -> id, merges: [(a, b), ...]) learned from {word: count}."""
        alphabet = self.alphabet(word_counts)
        tokens = list(dict.fromkeys([*self.special_tokens, *alphabet]))
        known = set(tokens)  # tokenizers spells a character found among these
        words = [self.spell(w, known) for w in word_counts]
        counts = list(word_counts.values())
        tokens += sorted({s for w in words for s in w} - set(tokens))
        ids = {token: i for i, token in enumerate(tokens)}
        prefix = self.continuing_subword_prefix or ""

        pair_count = Counter()   # (a, b) -> occurrences in the corpus
        pair_words = {}          # (a, b) -> indices of words that may hold it
        for i, (symbols, count) in enumerate(zip(words, counts)):
            for pair in zip(symbols, symbols[1:]):
                pair_count[pair] += count
                pair_words.setdefault(pair, set()).add(i)
        heap = [(-c, ids[a], ids[b], (a, b)) for (a, b), c in pair_count.items()]
        heapq.heapify(heap)

        merges = []
        while len(tokens) < self.vocab_size and heap:
            neg_count, _, _, pair = heapq.heappop(heap)
            if -neg_count != pair_count[pair]:  # stale: push back with the current count
                if pair_count[pair] > 0:
                    heapq.heappush(heap, (-pair_count[pair], ids[pair[0]], ids[pair[1]], pair))
                continue
            if -neg_count < max(self.min_frequency, 1):
                break
            a, b = pair
            merged = a + (b.removeprefix(prefix) if prefix else b)
            if merged not in ids:
                ids[merged] = len(tokens)
                tokens.append(merged)
            merges.append(pair)
            grown = set()
            for i in sorted(pair_words.pop(pair)):
                old = words[i]
                new = merge_pair(old, a, b, merged)
                if len(new) == len(old):
                    continue  # a stale index: this word no longer holds the pair
                for p in zip(old, old[1:]):
                    pair_count[p] -= counts[i]
                for p in zip(new, new[1:]):
                    pair_count[p] += counts[i]
                    pair_words.setdefault(p, set()).add(i)
                    if merged in p:
                        grown.add(p)
                words[i] = new
            for p in grown:  # the pairs a merge creates all hold the merged token
                if pair_count[p] > 0:
                    heapq.heappush(heap, (-pair_count[p], ids[p[0]], ids[p[1]], p))
        return ids, merges


def merge_pair(symbols, a, b, merged=None):
    """symbols with every adjacent (a, b), left to right, replaced by `merged` (a + b)."""
    merged = a + b if merged is None else merged
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out
