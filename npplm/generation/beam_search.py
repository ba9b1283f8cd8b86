"""Beam search: keep the num_beams likeliest partial sequences of each input, not just one.

Reference: Hugging Face transformers' `GenerationMixin._beam_search` (generation/utils.py,
5.x), whose sequences and scores we match (tests/models/test_t5_generation.py). Theirs is
vectorised over the batch with -1e9 standing in for "not allowed"; the bookkeeping here is
written per input, with one `BeamHypotheses` list of finished sequences each (the form of
transformers' releases before 4.50), which says the same thing more plainly.

Greedy decoding commits to the likeliest token at every step, so a likelier sequence whose
first token came second is never seen. Beam search keeps N = num_beams partial sequences
(beams) per input, each with a score s: the sum of its tokens' log-probabilities. A step:

  1. Every beam proposes every token v: N x V candidates scored s + log p(v | beam).
  2. The 2N best candidates are ranked. Twice N, so that N remain to carry on even if N
     of them end here (with several eos ids, (1 + number of eos ids) x N). Within one
     beam s is a constant, so only that beam's own 2N likeliest tokens can be among the
     2N best: those are found first (a partition of each row of V logits), and only
     N x 2N candidates are scored, not N x V (a vocabulary of 32,128 for T5).
  3. A candidate *ends* when its token is an eos id, or when it reaches max_new_tokens.
     An ending candidate ranked among the first N becomes a finished hypothesis, scored
     with the length penalty alpha (`length_penalty`):
         score = s / length ** alpha        length: its new tokens, the eos included
     Log-probabilities are negative, so the plain sum (alpha = 0) favours short outputs;
     alpha > 0 divides a longer sum by more, favouring longer ones, alpha < 0 shorter ones.
     (Wu et al., "Google's Neural Machine Translation System", arXiv:1609.08144, section
     7, use ((5 + length) / 6) ** alpha; Hugging Face, and so we, use length ** alpha.)
  4. The N best candidates that do not end are the next step's beams, best first.

Each input keeps its N best hypotheses. When is an input *done* (its hypotheses final)?
  early_stopping=True     as soon as it holds N hypotheses.
  early_stopping=False    when it holds N and its best running beam, scored as if it
                          ended now (s / current length ** alpha), does not beat the worst
                          of them. A heuristic: with alpha > 0 a longer continuation of
                          that beam could still score higher.
  early_stopping="never"  the same test, but for alpha > 0 the running beam is scored at
                          the longest length allowed, max_new_tokens. That is an upper
                          bound on any continuation (s only falls as tokens are added), so
                          this is exact, textbook beam search.
A done input's beams still run, batched with the others, but its hypotheses no longer
change. The search stops when every input is done, or after max_new_tokens steps.

The model is reached through one function, so that any decoder can be searched:
    step(None, None)   -> (B N, V) logits of the first new token; row b N + j is beam j of
                          input b, and all N rows of an input hold the same prompt
    step(tokens, rows) -> (B N, V) logits of the next token, after row i has been made to
                          continue the sequence of row rows[i] (reorder the cache: beam i
                          may extend another beam's prefix, always one of the same input)
                          and tokens[i] has been appended to it
"""

from dataclasses import dataclass

import numpy as np

EARLY_STOPPING = (True, False, "never")


class BeamHypotheses:
    """The finished hypotheses of one input: at most num_beams, best (highest score) first.

    A hypothesis is (score, tokens): tokens (length,) int64 are its new tokens, eos
    included; score = sum of their log-probabilities / length ** length_penalty.
    """

    def __init__(self, num_beams, length_penalty):
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.hypotheses = []  # [(score, tokens)], sorted best first

    def __len__(self):
        return len(self.hypotheses)

    @property
    def is_full(self):
        return len(self.hypotheses) == self.num_beams

    @property
    def worst_score(self):
        return self.hypotheses[-1][0]

    def score(self, sum_logprobs, length):
        """The length-penalised score: sum_logprobs / length ** alpha."""
        return sum_logprobs / length ** self.length_penalty

    def add(self, tokens, sum_logprobs):
        """Keep `tokens` if it is among the num_beams best so far; drop the worst if full.
        The sort is stable: of two equal scores, the earlier hypothesis stays ahead."""
        self.hypotheses.append((self.score(sum_logprobs, len(tokens)), tokens))
        self.hypotheses.sort(key=lambda h: -h[0])
        del self.hypotheses[self.num_beams:]


@dataclass
class BeamSearchOutput:
    """The result of `beam_search`, r = num_return_sequences rows per input."""

    sequences: np.ndarray  # (B r, n) new tokens, each input's best first, then pad_token_id
    scores: np.ndarray  # (B r,) their length-penalised scores, float64


def top_tokens(logits, k):
    """Each row's k likeliest tokens and their log-probabilities: (R, V) -> 2 x (R, k).

    log p = logit - logsumexp(row). The sum of exponentials runs in the logits' dtype
    (float32 for our models, as transformers computes its log-softmax); the k values kept
    are float64, so that scores summed over many steps lose nothing more."""
    logits = np.asarray(logits)
    top = np.argpartition(-logits, k - 1, axis=-1)[:, :k]  # (R, k), in no order
    peak = logits.max(axis=-1, keepdims=True)  # (R, 1)
    log_z = np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True))  # (R, 1)
    kept = np.take_along_axis(logits, top, axis=-1).astype(np.float64)  # (R, k)
    return top, kept - peak.astype(np.float64) - log_z.astype(np.float64)


def best_first(scores, k):
    """Indices of the k highest scores, highest first; ties: the lower index first."""
    top = np.argpartition(-scores, k - 1)[:k]  # the k best, in no order
    return top[np.lexsort((top, -scores[top]))]


def beam_search(step, batch_size, num_beams, max_new_tokens, eos_token_id=None,
                pad_token_id=0, length_penalty=1.0, early_stopping=False,
                num_return_sequences=1):
    """Search N = num_beams beams per input for up to max_new_tokens new tokens.

    step                  the model, as described in the module docstring
    eos_token_id          an id or a list of ids that end a hypothesis; None: only the
                          length limit ends one
    pad_token_id          fills the returned rows after a hypothesis ends
    length_penalty        alpha in score = sum of log-probs / length ** alpha
    early_stopping        True, False or "never": when an input is done (module docstring)
    num_return_sequences  r <= N: how many hypotheses to return per input
    Returns BeamSearchOutput(sequences (B r, n), scores (B r,)), n the longest returned
    hypothesis (so n <= max_new_tokens), as transformers crops its output.
    """
    N, B = num_beams, batch_size
    if not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"num_beams={N!r} must be a positive integer")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a non-negative integer")
    if not (isinstance(early_stopping, bool) or early_stopping == "never"):
        raise ValueError(f"early_stopping={early_stopping!r} must be one of {EARLY_STOPPING}")
    if not isinstance(num_return_sequences, (int, np.integer)) or \
            not 1 <= num_return_sequences <= N:
        raise ValueError(f"num_return_sequences={num_return_sequences!r} must be in "
                         f"[1, num_beams={N}]")
    eos = (np.array([], dtype=np.int64) if eos_token_id is None
           else np.atleast_1d(np.asarray(eos_token_id, dtype=np.int64)))
    n_keep = max(2, 1 + eos.size) * N  # candidates ranked per step (2N with one eos id)
    finished = [BeamHypotheses(N, length_penalty) for _ in range(B)]
    if max_new_tokens == 0:
        return _collect(finished, B, num_return_sequences, pad_token_id)

    # Every beam of an input starts from the same prompt: at the first step only beam 0
    # may propose, or the N beams would be N copies of one.
    scores = np.tile(np.r_[0.0, np.full(N - 1, -np.inf)], B)  # (B N,) sum of log-probs
    tokens = np.zeros((B * N, 0), dtype=np.int64)  # (B N, t) each beam's new tokens
    improvable = np.ones(B, dtype=bool)  # might a running beam still beat a hypothesis?
    logits = step(None, None)
    for length in range(1, max_new_tokens + 1):  # the length of this step's candidates
        V = np.shape(logits)[1]
        if V < n_keep:
            raise ValueError(f"beam search ranks {n_keep} candidates a step, but the vocabulary "
                             f"has only {V} tokens; use num_beams <= {V // (n_keep // N)}")
        top, logprobs = top_tokens(logits, n_keep)  # (B N, 2N) each
        # (B N, 2N) -> (B, N 2N): candidate j of input b extends beam j // 2N
        candidates = (scores[:, None] + logprobs).reshape(B, N * n_keep)
        proposed = top.reshape(B, N * n_keep)
        last = length == max_new_tokens
        rows, next_tokens, next_scores = [], [], []
        for b in range(B):
            # An input accepts new hypotheses unless it is done (early_stopping=True and
            # full, or no running beam could do better: both decided before this step).
            accepting = improvable[b] and not (early_stopping is True and finished[b].is_full)
            kept = []
            for rank, index in enumerate(best_first(candidates[b], n_keep)):
                beam, token = int(index) // n_keep, int(proposed[b, index])
                row, score = b * N + beam, candidates[b, index]
                if last or token in eos:
                    if accepting and rank < N:  # only the first N ranks become hypotheses
                        finished[b].add(np.append(tokens[row], token), score)
                elif len(kept) < N:
                    kept.append((row, token, score))
            if last:
                continue
            rows += [row for row, _, _ in kept]
            next_tokens += [token for _, token, _ in kept]
            next_scores += [score for _, _, score in kept]
            # May the best running beam (kept[0]) still beat the worst hypothesis?
            if improvable[b] and finished[b].is_full:
                bound = (max_new_tokens if early_stopping == "never" and length_penalty > 0
                         else length)
                improvable[b] = finished[b].score(kept[0][2], bound) > finished[b].worst_score
        full = np.array([f.is_full for f in finished])
        done = ~improvable | (full if early_stopping is True else False)  # (B,)
        if last or done.all():
            break
        rows, next_tokens = np.array(rows), np.array(next_tokens, dtype=np.int64)
        scores = np.array(next_scores)  # (B N,)
        tokens = np.concatenate([tokens[rows], next_tokens[:, None]], axis=1)  # (B N, t+1)
        logits = step(next_tokens, rows)
    return _collect(finished, B, num_return_sequences, pad_token_id)


def _collect(finished, batch_size, r, pad_token_id):
    """The r best hypotheses of every input, right-padded to the longest of them."""
    best = [h for f in finished for h in f.hypotheses[:r]]
    if len(best) < batch_size * r:  # only with max_new_tokens = 0: nothing was generated
        return BeamSearchOutput(np.zeros((batch_size * r, 0), dtype=np.int64),
                                np.zeros(batch_size * r))
    n = max(len(tokens) for _, tokens in best)
    sequences = np.full((len(best), n), pad_token_id, dtype=np.int64)
    for i, (_, tokens) in enumerate(best):
        sequences[i, :len(tokens)] = tokens
    return BeamSearchOutput(sequences, np.array([score for score, _ in best]))
