"""The Unigram language model tokenizer of SentencePiece: T5's and ALBERT's.

Paper: Kudo, "Subword Regularization: Improving Neural Network Translation Models with
Multiple Subword Candidates" (arXiv:1804.10959), section 3; the library is SentencePiece
(Kudo & Richardson, arXiv:1808.06226). T5 (arXiv:1910.10683) and ALBERT (arXiv:1909.11942)
ship Unigram vocabularies. The implementation we match id for id is Hugging Face
`tokenizers`' "Unigram" model and its UnigramTrainer, a port of SentencePiece's.

The model. Every piece x of the vocabulary has a log-probability score(x); a word's
segmentation x_1 ... x_k is scored by sum_i score(x_i), the log-probability of drawing those
pieces independently. Encoding takes the best segmentation, found by Viterbi over the
lattice of all vocabulary pieces that occur in the word (position t is reached from
position s by the piece word[s:t]):

    best[0] = 0,   best[t] = max over pieces word[s:t] of  best[s] + score(word[s:t])

A character that is no piece on its own gets the unknown token, scored min(score) - 10, so
that every word has a segmentation; consecutive unknowns are fused into one (or, with
byte_fallback, spelled as "<0x..>" byte pieces). Ties go to the segmentation found first:
the smallest start s for each end t. Spaces are "▁" (the Metaspace pre-tokenizer), so
"▁Hello▁world" is one word or two, and decoding turns "▁" back into spaces.

Scores are read from a tokenizer.json as tokenizers reads them (json_float: serde_json's
parsing, which can land one unit in the last place away from the correctly rounded
value), since a tie between two segmentations can turn on that unit.

Training (UnigramTrainer) starts from a large seed vocabulary and alternates EM steps,
which re-estimate the scores, with pruning, which drops the pieces whose loss costs the
corpus likelihood least; its docstring gives the steps.
"""

import math
import re
from collections import Counter
from dataclasses import dataclass

from npplm.tokenizers.bpe import BYTE_FALLBACK_TOKENS

UNK_PENALTY = 10.0  # the unknown token scores min(score) - 10 (SentencePiece's kUnkPenalty)


class Unigram:
    """A Unigram model: pieces with log-probability scores, encoded by Viterbi.

    pieces         [(token, score), ...]; the id of a token is its position
    unk_id         the id of the unknown token (None: an unknown character is an error)
    byte_fallback  an unknown run is spelled in "<0x..>" byte pieces when all are present

    segment(word) -> ids. Example, scores a b c d: 0, ab: 2, cd: 1, abc: 5, abcd: 10:
    "abcdacd" -> abcd, a, cd (10 + 0 + 1 beats every other segmentation).
    """

    def __init__(self, pieces, unk_id=None, byte_fallback=False):
        self.pieces = [(str(t), float(s)) for t, s in pieces]
        if not self.pieces:
            raise ValueError("a Unigram vocabulary needs at least one piece")
        if unk_id is not None and not 0 <= unk_id < len(self.pieces):
            raise ValueError(f"unk_id {unk_id} is outside the vocabulary of "
                             f"{len(self.pieces)} pieces")
        self.unk_id = unk_id
        self.byte_fallback = bool(byte_fallback)
        self.vocab = {t: i for i, (t, _) in enumerate(self.pieces)}  # a repeat keeps its last id
        self.scores = [s for _, s in self.pieces]
        # NaN scores (the trainer's placeholder unknown) take no part in the minimum.
        self.min_score = min((s for s in self.scores if not math.isnan(s)), default=math.inf)
        self.unk_score = self.min_score - UNK_PENALTY
        self.longest = max(len(t) for t, _ in self.pieces)
        self._byte_ids = [self.vocab.get(t) for t in BYTE_FALLBACK_TOKENS]

    def lattice(self, word):
        """The lattice's nodes [(start, end, id, score)], in tokenizers' insertion order.

        For each start, the pieces word[start:end] by increasing end; then the unknown
        token over one character when no piece covers that character alone.
        """
        vocab, scores, n = self.vocab, self.scores, len(word)
        nodes = []
        for start in range(n):
            single = False
            for end in range(start + 1, min(n, start + self.longest) + 1):
                token_id = vocab.get(word[start:end])
                if token_id is not None:
                    nodes.append((start, end, token_id, scores[token_id]))
                    single = single or end == start + 1
            if not single:
                if self.unk_id is None:
                    raise ValueError(f"{word[start]!r} is not in the vocabulary and the "
                                     "model has no unknown token")
                nodes.append((start, start + 1, self.unk_id, self.unk_score))
        return nodes

    @staticmethod
    def viterbi(n, nodes):
        """The best path through a lattice of a word of n characters: its nodes, in order.

        best[t] = max over nodes (s, t) of best[s] + score; on a tie the node met first.
        """
        best = [0.0] + [None] * n
        back = [None] * (n + 1)
        for node in nodes:  # grouped by start, in increasing start: best[start] is final
            start, end, _, score = node
            candidate = score + best[start]
            if back[end] is None or candidate > best[end]:
                best[end], back[end] = candidate, node
        path, end = [], n
        while end > 0:
            path.append(back[end])
            end = back[end][0]
        return path[::-1]

    def tokens(self, word):
        """The best segmentation as strings, unknown runs fused (tokenizers' encode)."""
        path = self.viterbi(len(word), self.lattice(word))
        out, unknown = [], ""
        for start, end, token_id, _ in path:
            if token_id == self.unk_id:
                unknown += word[start:end]
                continue
            if unknown:
                out.append(unknown)
                unknown = ""
            out.append(word[start:end])
        if unknown:
            out.append(unknown)
        return out

    def segment(self, word):
        """The ids of one word (its best segmentation)."""
        ids = []
        for token in self.tokens(word):
            token_id = self.vocab.get(token)
            if token_id is None:  # a fused unknown run
                if self.byte_fallback:
                    byte_ids = [self._byte_ids[b] for b in token.encode("utf-8")]
                    if None not in byte_ids:
                        ids.extend(byte_ids)
                        continue
                token_id = self.unk_id
            ids.append(token_id)
        return ids

    def to_json(self):
        """The "model" entry of a tokenizer.json."""
        return {"type": "Unigram", "unk_id": self.unk_id,
                "vocab": [[t, s] for t, s in self.pieces], "byte_fallback": self.byte_fallback}


# --- Scores in JSON ----------------------------------------------------------------------------

_POW10 = [float(f"1e{k}") for k in range(309)]
_NUMBER = re.compile(r"(-?)(\d+)(?:\.(\d*))?(?:[eE]([+-]?\d+))?")


def json_float(text):
    """A JSON number read as tokenizers reads it (serde_json without correct rounding).

    serde_json takes the digits as a 64-bit integer (digits past its range are dropped, the
    exponent adjusted for those of the integer part) and divides or multiplies it by a
    power of ten: (float(digits) / 10^k) rounds twice when the digits exceed 2^53, so a
    17-digit score can come out one unit in the last place away from Python's correctly
    rounded float(text). Unigram scores are compared in sums, and a Viterbi tie can turn on
    that unit: we read the scores as tokenizers does.
    """
    match = _NUMBER.fullmatch(text)
    if match is None:
        return float(text)
    sign, whole, fraction, exponent = match.groups()
    fraction, exponent = fraction or "", int(exponent or 0)
    significand = 0
    for i, digit in enumerate(whole + fraction):
        if significand * 10 + int(digit) >= 1 << 64:  # dropped; an integer digit scales
            exponent += max(len(whole) - i, 0)
            fraction = fraction[:max(i - len(whole), 0)]
            break
        significand = significand * 10 + int(digit)
    exponent -= len(fraction)
    value = float(significand)
    while True:
        if abs(exponent) < len(_POW10):
            value = value * _POW10[exponent] if exponent >= 0 else value / _POW10[-exponent]
            break
        if value == 0.0 or exponent > 0:
            return float(text)
        value /= 1e308
        exponent += 308
    return -value if sign else value


def stable_float(x):
    """x moved (by at most a unit or two in the last place) to a float that json_float reads
    back exactly from its repr, so a saved score is the same number to us and to tokenizers."""
    for _ in range(4):
        y = json_float(repr(x))
        if y == x:
            return x
        x = y
    return x


# --- Training --------------------------------------------------------------------------------


def log_sum_exp(x, y):
    """log(exp(x) + exp(y)), as SentencePiece computes it (the smaller term dropped when it
    is 50 nats below the larger)."""
    small, large = (y, x) if x > y else (x, y)
    if large > small + 50.0:
        return large
    return large + math.log(math.exp(small - large) + 1.0)


def digamma(x):
    """The digamma function psi(x) = d/dx log Gamma(x): recurrence up to 7, then the
    asymptotic series (SentencePiece's and tokenizers' approximation, term for term)."""
    result = 0.0
    while x < 7.0:
        result -= 1.0 / x
        x += 1.0
    x -= 0.5
    xx = 1.0 / x
    xx2 = xx * xx
    xx4 = xx2 * xx2
    return (result + math.log(x) + (1.0 / 24.0) * xx2 - 7.0 / 960.0 * xx4
            + (31.0 / 8064.0) * xx4 * xx2 - (127.0 / 30720.0) * xx4 * xx4)


def marginals(model, word, count, expected):
    """E step for one word: add count * P(node | word) to expected[id] for every node.

    Forward-backward over the lattice in log space: alpha[k] is the log of the summed
    probability of all paths from the word's start to node k's start, beta[k] from node
    k's end to the word's end, Z = log P(word) = alpha at the end; a node's posterior is
    exp(alpha + score + beta - Z). Returns count * Z. The order of the log-sum-exp terms is
    tokenizers' (nodes ending at a position by increasing start; nodes starting there as
    the lattice lists them), so the sums round the same way.
    """
    nodes = model.lattice(word)
    n = len(word)
    ends = [[] for _ in range(n + 1)]
    begins = [[] for _ in range(n + 1)]
    for k, (start, end, _, _) in enumerate(nodes):
        begins[start].append(k)
        ends[end].append(k)
    alpha = [0.0] * len(nodes)
    for pos in range(1, n):
        for r in begins[pos]:
            acc = None
            for l in ends[pos]:
                value = nodes[l][3] + alpha[l]
                acc = value if acc is None else log_sum_exp(acc, value)
            alpha[r] = acc
    z = None
    for l in ends[n]:
        value = nodes[l][3] + alpha[l]
        z = value if z is None else log_sum_exp(z, value)
    beta = [0.0] * len(nodes)
    for pos in range(n - 1, 0, -1):
        for l in ends[pos]:
            acc = None
            for r in begins[pos]:
                value = nodes[r][3] + beta[r]
                acc = value if acc is None else log_sum_exp(acc, value)
            beta[l] = acc
    for k, (_, _, token_id, score) in enumerate(nodes):
        expected[token_id] += count * math.exp(alpha[k] + score + beta[k] - z)
    return count * z


def seed_pieces(word_counts, max_piece_length=16, seed_size=1_000_000):
    """The seed vocabulary [(piece, log-probability)]: every character, then frequent
    substrings (SentencePiece's suffix-array seeds).

    Characters come first, by total count (ties: the larger code point first). Then the
    substrings of 2 to max_piece_length characters that are internal nodes of the suffix
    tree of all distinct words joined by "\\0": those occurring at least twice, followed by
    at least two different characters ("\\0" at a word's end). A substring's frequency
    counts its occurrences in that string, each distinct word once, whatever its count; its
    score is frequency x length, and they come by decreasing score (ties: the larger string
    first), up to seed_size pieces in all. The scores are then normalized to
    log-probabilities. A suffix array finds these nodes in linear time (tokenizers uses
    esaxx); counting the substrings of each word up to max_piece_length finds the same ones.
    """
    char_counts = Counter()
    occurrences = Counter()   # substring -> occurrences in the joined words
    follower = {}             # substring -> the character after its first occurrence
    branching = set()         # substrings followed by at least two different characters
    for word, count in word_counts.items():
        for c in word:
            if c != "\0":
                char_counts[c] += count
        for i in range(len(word)):
            for length in range(2, min(max_piece_length, len(word) - i) + 1):
                piece = word[i:i + length]
                if piece[-1] == "\0":
                    break  # every longer substring from i holds it too
                nxt = word[i + length] if i + length < len(word) else "\0"
                occurrences[piece] += 1
                first = follower.setdefault(piece, nxt)
                if first != nxt:
                    branching.add(piece)
    chars = sorted(((n, c) for c, n in char_counts.items()), reverse=True)
    substrings = sorted(((occurrences[p] * len(p), p) for p in branching
                         if occurrences[p] >= 2), reverse=True)
    seeds = [(c, float(n)) for n, c in chars]
    for score, piece in substrings:
        if len(seeds) >= seed_size:
            break
        seeds.append((piece, float(score)))
    total = math.log(sum(s for _, s in seeds))
    return [(piece, math.log(s) - total) for piece, s in seeds]


@dataclass
class UnigramTrainer:
    """Learn a Unigram vocabulary from word counts: seeds, then EM with pruning.

    The algorithm (Kudo 2018, section 3.2, as SentencePiece and tokenizers run it):
      1. Seeds (seed_pieces): every character and the frequent substrings of the words,
         scored by log relative frequency. A placeholder unknown token is piece 0.
      2. EM, `n_sub_iterations` times. E step: the expected count of each piece, summed
         over the words (marginals). M step: drop pieces expected less than 0.5 times;
         score the others with a Bayesian (Dirichlet-process) estimate,
         score(x) = digamma(count(x)) - digamma(sum of counts), which favours sparse
         vocabularies more than the plain log(count / total).
      3. Stop when at most vocab_size x 1.1 pieces are left. Else prune: segment the
         words with Viterbi; for each piece, the loss of removing it is its share of the
         words times (its log-probability minus that of its second-best segmentation, the
         alternative its occurrences would fall back to); keep the characters and pieces
         without an alternative, then the pieces of largest loss, down to
         max(vocab_size x 1.1, shrinking_factor x current size). Back to 2.
      4. Finalize: every character of the corpus (a missing one scored just above the
         lowest score, 0.0001 apart in code point order), then the remaining pieces in the
         order the last step left them, up to vocab_size less the special tokens; sorted
         by decreasing score (stable); the special tokens first, with score 0, and the
         unknown token first of all when it is not among them.

    Faithful to tokenizers where it departs from the paper: a substring's seed frequency
    counts distinct words, not word counts; the alternative's log-probability is
    normalized with len(pieces) - 1 extra occurrences (tokenizers writes
    `alternatives.len()`, the number of pieces, where SentencePiece means the length of
    the alternative); a piece with an alternative but no Viterbi occurrence is dropped;
    when the characters alone exceed the budget in step 4, nothing is cut.

    Where it cannot be matched exactly. tokenizers walks the words in hash-map order, which
    changes from run to run, and sums the E step in per-thread chunks: the expected counts
    agree with ours to rounding (1e-16 relative), and a tie within rounding may then be
    decided differently. It also orders the characters of step 4 by hash, so which missing
    character gets which small penalty, and the ids among pieces of equal score, change from
    one of its runs to the next. How close we are: on parity.TRAIN (400 pieces) the same
    pieces, scores equal to about 1e-14 but for the penalized characters, and the same best
    segmentation of all but one of the corpus's words (tests/tokenizers/test_unigram.py);
    on 1 MB of standard-library docstrings (8000 pieces, benchmarks/side_by_side_bpe_unigram.py)
    the same 8000 pieces.
    """

    vocab_size: int = 8000
    n_sub_iterations: int = 2
    shrinking_factor: float = 0.75
    special_tokens: tuple = ()
    unk_token: str | None = None
    max_piece_length: int = 16
    seed_size: int = 1_000_000
    initial_alphabet: tuple = ()

    def train(self, word_counts):
        """(pieces [(token, score)], unk_id) learned from {word: count}."""
        word_counts = {w: c for w, c in word_counts.items() if w}
        specials = list(dict.fromkeys(self.special_tokens))
        need_unk = self.unk_token is not None and self.unk_token not in specials
        budget = self.vocab_size - len(specials) - need_unk
        if budget <= 0:
            raise ValueError(f"vocab_size={self.vocab_size} leaves no room beside the "
                             f"{len(specials) + need_unk} special tokens")
        pieces = [("<UNK>", math.nan), *seed_pieces(word_counts, self.max_piece_length,
                                                     self.seed_size)]
        desired = self.vocab_size * 11 // 10
        model = Unigram(pieces, unk_id=0)
        while True:
            for _ in range(self.n_sub_iterations):
                pieces = self._m_step(pieces, self._e_step(model, word_counts))
                model = Unigram(pieces, unk_id=0)
            if len(pieces) <= desired:
                break
            pieces = self._prune(model, pieces, word_counts)
            model = Unigram(pieces, unk_id=0)

        # 4. Finalize.
        required = sorted({c for w in word_counts for c in w} | set(self.initial_alphabet))
        existing = {t: s for t, s in model.pieces}
        final, inserted, penalty = [], {"<UNK>"}, 0.0
        for c in required:
            if c in existing:
                final.append((c, existing[c]))
            else:
                final.append((c, model.min_score + penalty))
                penalty += 0.0001
            inserted.add(c)
        for token, score in model.pieces:
            if token in inserted:
                continue
            inserted.add(token)
            final.append((token, 0.0 if math.isnan(score) else score))
            if len(final) == budget:
                break
        final.sort(key=lambda piece: -piece[1])
        head = [(t, 0.0) for t in specials]
        if need_unk:
            head.insert(0, (self.unk_token, 0.0))
        unk_id = None if self.unk_token is None else [t for t, _ in head].index(self.unk_token)
        return head + final, unk_id

    @staticmethod
    def _e_step(model, word_counts):
        expected = [0.0] * len(model.pieces)
        for word, count in word_counts.items():
            if math.isnan(marginals(model, word, count, expected)):
                raise ValueError(f"the likelihood of {word!r} is NaN (a piece scored NaN)")
        return expected

    @staticmethod
    def _m_step(pieces, expected):
        kept, total = [], 0.0
        for i, ((token, _), count) in enumerate(zip(pieces, expected)):
            if i == 0:  # the placeholder unknown token stays, unscored
                kept.append((token, math.nan))
            elif count >= 0.5:
                kept.append((token, count))
                total += count
        log_total = digamma(total)
        return [(t, digamma(c) - log_total) for t, c in kept]

    def _prune(self, model, pieces, word_counts):
        # Each piece's fallback: the second-best segmentation of the piece itself.
        always_keep = [True] * len(pieces)
        alternatives = [[] for _ in pieces]
        always_keep[0] = False
        for i, (token, _) in enumerate(pieces[1:], start=1):
            if len(token) == 1:
                continue  # a character has one segmentation: kept
            nodes = model.lattice(token)
            best = model.viterbi(len(token), nodes)
            if len(best) >= 2:  # the piece is not even its own best segmentation
                always_keep[i] = False
                continue
            others = [node for node in nodes if (node[0], node[1]) != (0, len(token))]
            alternatives[i] = [node[2] for node in model.viterbi(len(token), others)]

        # How often each piece is on the words' Viterbi paths, and in which words.
        freq = [0.0] * len(pieces)
        inverted = [[] for _ in pieces]
        total_count = 0.0
        counts = list(word_counts.values())
        for w, (word, count) in enumerate(word_counts.items()):
            total_count += count
            for node in model.viterbi(len(word), model.lattice(word)):
                freq[node[2]] += count
                inverted[node[2]].append(w)
        total = sum(freq)
        log_total = math.log(total)

        kept, candidates = [pieces[0]], []
        for i, (token, score) in enumerate(pieces[1:], start=1):
            if freq[i] == 0.0 and not always_keep[i]:
                continue  # on no Viterbi path: safe to remove
            if not alternatives[i]:
                kept.append((token, score))
                continue
            share = sum(float(counts[w]) for w in inverted[i])
            if share == 0.0:
                continue
            share /= total_count
            log_p = math.log(freq[i]) - log_total
            # tokenizers' normalizer: len(alternatives) is the number of pieces (see above).
            log_total_alt = math.log(total + freq[i] * (len(alternatives) - 1))
            log_p_alt = 0.0
            for a in alternatives[i]:
                log_p_alt += math.log(freq[a] + freq[i]) - log_total_alt
            candidates.append((i, share * (log_p - log_p_alt)))
        size = max(self.vocab_size * 11 // 10, int(len(pieces) * self.shrinking_factor))
        candidates.sort(key=lambda c: -c[1])  # stable: equal losses keep their order
        for i, _ in candidates:
            if len(kept) == size:
                break
            kept.append(pieces[i])
        return kept
