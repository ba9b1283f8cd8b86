"""Beam search on toy models whose answers can be worked out by hand.

A toy model here is a bigram table: the log-probability of the next token depends only on
the last one, so `step` needs no cache (tokens in, table rows out). Parity with
transformers on real models is in tests/models/test_t5_generation.py.
"""

import numpy as np
import pytest

from npplm.generation import stream_tokens
from npplm.generation.beam_search import BeamHypotheses, beam_search

EOS = 1


class Bigram:
    """step() for a table of next-token logits (V, V); input b starts from token starts[b]."""

    def __init__(self, logits, starts, num_beams):
        self.logits, self.starts, self.num_beams = np.asarray(logits), starts, num_beams
        self.calls = 0

    def __call__(self, tokens, rows=None):
        self.calls += 1
        if tokens is None:
            tokens = np.repeat(self.starts, self.num_beams)  # (B N,): every beam, the prompt
        return self.logits[tokens]  # (B N, V)


def random_table(seed, V=12, eos_logit=0.0):
    logits = np.random.default_rng(seed).normal(0.0, 2.0, (V, V))
    logits[:, EOS] += eos_logit
    return logits


def sequence_logprob(table, start, tokens):
    logprobs = table - np.log(np.exp(table).sum(axis=1, keepdims=True))  # (V, V), float64
    previous = np.r_[start, tokens[:-1]]
    return logprobs[previous, tokens].sum()


def test_beam_search_finds_what_greedy_misses():
    # From the start token 0, "2" is likeliest (0.5) but leads nowhere certain (every
    # continuation 0.125); "3" (0.4) is followed by eos with probability 0.9.
    # Greedy: 2, then the first of eight equal tokens, p = 0.5 x 0.125 = 0.0625.
    # Beam search with 2 beams keeps "3" too and finds 3 eos, p = 0.4 x 0.9 = 0.36.
    probs = np.full((8, 8), 1 / 8)
    probs[0] = [0.02, 0.02, 0.5, 0.4, 0.02, 0.02, 0.02, 0.0]
    probs[3] = [0.0, 0.9, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01]
    with np.errstate(divide="ignore"):
        table = np.log(probs)
    greedy = np.stack(list(stream_tokens(Bigram(table, [0], 1), 1, 2, temperature=0,
                                         eos_token_id=EOS)), axis=1)
    assert greedy.tolist() == [[2, 0]]
    out = beam_search(Bigram(table, [0], 2), 1, 2, max_new_tokens=2, eos_token_id=EOS,
                      length_penalty=0.0)
    assert out.sequences.tolist() == [[3, EOS]]
    assert out.scores[0] == pytest.approx(np.log(0.36))


@pytest.mark.parametrize("seed", range(4))
def test_one_beam_with_early_stopping_is_greedy(seed):
    table = random_table(seed, eos_logit=1.0)
    starts = np.array([0, 4, 7])
    greedy = np.stack(list(stream_tokens(Bigram(table, starts, 1), 3, 15, temperature=0,
                                         eos_token_id=EOS, pad_token_id=0)), axis=1)
    out = beam_search(Bigram(table, starts, 1), 3, 1, 15, EOS, pad_token_id=0,
                      early_stopping=True)
    np.testing.assert_array_equal(out.sequences, greedy[:, :out.sequences.shape[1]])
    assert (greedy[:, out.sequences.shape[1]:] == 0).all()  # greedy only padded after


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.5, -1.0])
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_returned_hypotheses_are_scored_and_ordered_as_documented(length_penalty,
                                                                   early_stopping):
    table = random_table(1, eos_logit=2.0)
    starts = np.array([0, 5])
    out = beam_search(Bigram(table, starts, 3), 2, 3, 10, EOS, pad_token_id=0,
                      length_penalty=length_penalty, early_stopping=early_stopping,
                      num_return_sequences=3)
    assert out.sequences.shape[0] == 6
    for i, row in enumerate(out.sequences):
        ends = np.flatnonzero(row == EOS)
        length = ends[0] + 1 if ends.size else 10  # ended by eos, or by the length limit
        assert (row[length:] == 0).all()  # padding after the end
        want = sequence_logprob(table, starts[i // 3], row[:length]) / length ** length_penalty
        assert out.scores[i] == pytest.approx(want, rel=1e-12)
    for b in range(2):
        assert (np.diff(out.scores[3 * b:3 * b + 3]) <= 0).all()  # each input's best first


def test_early_stopping_decides_when_the_search_stops():
    # True stops as soon as N hypotheses are in; False also waits while a running beam
    # could still win now; "never" (length_penalty > 0) while it could at the longest
    # length. With length_penalty 0, "never" and False are the same test.
    def calls(early_stopping, length_penalty):
        step = Bigram(random_table(0, eos_logit=3.0), np.array([0, 3, 6]), 3)
        beam_search(step, 3, 3, 30, EOS, early_stopping=early_stopping,
                    length_penalty=length_penalty)
        return step.calls

    assert calls(True, 1.0) < calls(False, 1.0) < calls("never", 1.0) < 30
    assert calls(False, 0.0) == calls("never", 0.0)
    step = Bigram(random_table(2, eos_logit=-50.0), np.array([0]), 2)  # eos never likely
    out = beam_search(step, 1, 2, 7, EOS, early_stopping=True)
    assert step.calls == 7 and out.sequences.shape == (1, 7)  # ended by the length limit


def test_hypotheses_keep_the_best_num_beams():
    hyps = BeamHypotheses(2, length_penalty=1.0)
    hyps.add(np.array([5, 1]), -4.0)  # score -2.0
    hyps.add(np.array([5, 6, 1]), -3.0)  # -1.0
    assert hyps.is_full and hyps.worst_score == -2.0
    hyps.add(np.array([1]), -3.0)  # -3.0: worse than both, dropped
    assert hyps.is_full and [h[0] for h in hyps.hypotheses] == [-1.0, -2.0]


def test_nothing_to_generate_and_bad_arguments():
    step = Bigram(random_table(0), np.array([0, 1]), 2)
    out = beam_search(step, 2, 2, 0, EOS)
    assert out.sequences.shape == (2, 0) and step.calls == 0
    with pytest.raises(ValueError, match="num_beams=0 must be a positive integer"):
        beam_search(step, 2, 0, 5, EOS)
    with pytest.raises(ValueError, match="early_stopping=1 must be one of"):
        beam_search(step, 2, 2, 5, EOS, early_stopping=1)
    with pytest.raises(ValueError, match="max_new_tokens=-2"):
        beam_search(step, 2, 2, -2, EOS)
    with pytest.raises(ValueError, match="ranks 14 candidates a step, but the vocabulary "
                                         "has only 12 tokens"):
        beam_search(Bigram(random_table(0), np.array([0]), 7), 1, 7, 5, EOS)
