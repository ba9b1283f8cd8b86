"""Perplexity of a causal language model on a long text, with a sliding window.

    PPL = exp( -(1/N) sum_i log p(x_i | x_<i) )

the exponential of the mean negative log-likelihood per token: the number of equally
likely tokens the model is, on average, as unsure as. A model that knows nothing about a
V-token vocabulary scores V; one that is always certain and right scores 1.

A model sees at most `window` tokens (its context), but the text is longer. Cutting the
text into disjoint windows would score the first tokens of every window with almost no
context and overstate the perplexity. The sliding window (Hugging Face's "Perplexity of
fixed-length models" recipe) moves a window of `window` tokens forward `stride` tokens at a
time and scores only the tokens not scored before, each with at least window - stride
tokens of context:

    window 1: tokens 0 .. W-1, scores 1 .. W-1    (token 0 has no context: never scored)
    window k: tokens b .. b+W-1 with b = (k-1) stride, scores the last `stride` of them

stride = window gives disjoint windows (fast, pessimistic); stride = 1 gives every token a
full context (exact, W times slower). Each scored token is scored exactly once, so the
result is a true per-token mean whatever the stride.
"""

import math

import numpy as np

from autograd import no_grad, to_numpy
from npplm.layers import log_softmax


def _window_starts(n, window, stride):
    """Begin offsets b of the windows and, for each, the first position it scores."""
    starts, first_scored = [0], [1]
    end = min(window, n)
    while end < n:
        b = min(end + stride, n) - window
        starts.append(b)
        first_scored.append(end)
        end = b + window
    return starts, first_scored


def perplexity(model, ids, window, stride=None, batch_size=8):
    """(perplexity, mean NLL in nats, tokens scored) of the 1-D `ids` under a causal LM.

    model   a causal LM whose forward(input_ids) returns logits (B, T, V), position t
            predicting token t + 1 (GPT, LLaMA)
    window  tokens per forward pass, at most the model's context
    stride  how far the window moves (default window // 2)
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    stride = window // 2 if stride is None else stride
    if not 1 <= stride <= window:
        raise ValueError(f"stride={stride} must lie in [1, window={window}]")
    if len(ids) < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {len(ids)}")
    window = min(window, len(ids))
    starts, first = _window_starts(len(ids), window, stride)
    total, count = 0.0, 0
    model.eval()
    with no_grad():
        for lo in range(0, len(starts), batch_size):
            rows = starts[lo:lo + batch_size]
            x = np.stack([ids[b:b + window] for b in rows])  # (B, W)
            logp = to_numpy(log_softmax(model(x).logits, axis=-1).data)  # (B, W, V)
            for r, (b, f) in enumerate(zip(rows, first[lo:lo + batch_size])):
                # Scored tokens: absolute positions f .. b+W-1, predicted from position - 1.
                targets = np.arange(f, b + window)
                nll = -logp[r, targets - b - 1, ids[targets]].astype(np.float64)
                total += float(nll.sum())
                count += len(targets)
    mean = total / count
    return math.exp(mean), mean, count
