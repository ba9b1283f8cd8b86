"""The token loop every family decodes through: logits in, one token per row out, until done.

Generating n tokens after a prompt of T takes one forward pass over the prompt (prefill),
which fills a KV cache with every layer's keys and values, then n - 1 passes of one token
each (decode), each attending over the cache instead of recomputing the prefix. The model
is reached through one function, `step`, so that the loop knows nothing of models:

    step(None) -> (B, V) logits of the first new token (the model has read its input)
    step(tokens) -> (B, V) logits of the next one, once `tokens` (B,) are appended

GPT and LLaMA (npplm.generation.generate.GenerationMixin), T5's decoder and GLM's blank
filling each build such a step and hand it to `stream_tokens`; beam search
(beam_search.py) takes a step of the same kind with a beam reordering added.

`choose_next` turns a step's logits into tokens: greedy at temperature 0, otherwise a draw
from softmax(logits / temperature) restricted to the top-k tokens and the top-p nucleus.
A row that emits an eos id is finished: it receives `pad_token_id` from then on, and the
loop stops once every row is finished (as Hugging Face's generate does).
"""

import math

import numpy as np


def check_sampling(temperature=1.0, top_k=None, top_p=None):
    """ValueError naming a sampling option that is not a number in its range; checked at
    every temperature (a top_p of 1.5 is a mistake even when greedy decoding ignores it)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) \
            or not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature={temperature} must be a finite number >= 0 (0: greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise ValueError(f"top_k={top_k} must be a positive integer")
    if top_p is not None and not (isinstance(top_p, (int, float, np.number))
                                  and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p={top_p} must be in (0, 1]")


def allowed_tokens(logits, temperature=1.0, top_k=None, top_p=None):
    """(..., V) bool: the tokens that sampling at these settings may draw, from logits
    (..., V): the top_k most likely, then, of those, the smallest set of most likely tokens
    whose probabilities add up to top_p (the nucleus, Holtzman et al., arXiv:1904.09751).
    All True without top_k and top_p. RLHF (npplm.alignment.ppo) scores its samples under
    the distribution restricted to this set, the one they were drawn from."""
    z = np.asarray(logits, dtype=np.float64) / (temperature or 1.0)  # (..., V)
    V = z.shape[-1]
    keep = np.ones(z.shape, dtype=bool)
    if top_k is not None and top_k < V:
        kth = np.partition(z, V - top_k, axis=-1)[..., V - top_k, None]  # (..., 1)
        keep = z >= kth
    if top_p is not None:
        probs = _softmax(np.where(keep, z, -np.inf))
        order = np.argsort(-probs, axis=-1, kind="stable")  # most likely first
        sorted_p = np.take_along_axis(probs, order, axis=-1)  # (..., V)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the more likely tokens
        nucleus = np.zeros_like(keep)
        np.put_along_axis(nucleus, order, before < top_p, axis=-1)  # the first is always in
        keep &= nucleus
    return keep


def _softmax(z):
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def choose_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Pick one token per row from logits (B, V) -> (B,) int64.

    temperature 0: greedy, argmax (ties: the lowest id). Otherwise one draw per row from
    softmax(logits / temp) restricted to the allowed tokens (allowed_tokens: top_k, top_p)
    and renormalised, from `rng`.
    """
    check_sampling(temperature, top_k, top_p)
    logits = np.asarray(logits, dtype=np.float64)  # (B, V): sampling in float64
    if temperature == 0:
        return logits.argmax(axis=-1)
    B, V = logits.shape
    keep = allowed_tokens(logits, temperature, top_k, top_p)
    probs = _softmax(np.where(keep, logits / temperature, -np.inf))  # (B, V)
    rng = np.random.default_rng() if rng is None else rng
    u = rng.random((B, 1))  # one uniform draw per row; inverse CDF
    cdf = np.cumsum(probs, axis=-1)  # (B, V)
    return np.minimum((cdf < u * cdf[:, -1:]).sum(axis=-1), V - 1)


def stream_tokens(step, batch_size, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                  eos_token_id=None, pad_token_id=None, seed=None):
    """The token loop every model shares: logits in, one token per row out, until done.

    step(None) -> (B, V) logits of the first new token (the model has read its prompt);
    step(tokens) -> (B, V) logits of the next one, once `tokens` (B,) are appended.
    Yields each step's (B,) int64 tokens, at most max_new_tokens of them. A row that emits
    an id of `eos_token_id` (an id or a list) is finished: it gets `pad_token_id` from then
    on (None: the first eos id, or 0), and the loop stops once every row is finished. The
    model is asked for logits only while a token is still to come (max_new_tokens calls
    at most).
    """
    eos = (np.array([], dtype=np.int64) if eos_token_id is None
           else np.atleast_1d(np.asarray(eos_token_id, dtype=np.int64)))
    pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if eos.size else 0)
    rng = np.random.default_rng(seed)
    finished = np.zeros(batch_size, dtype=bool)
    if max_new_tokens == 0:
        return
    logits = step(None)  # (B, V)
    for i in range(max_new_tokens):
        token = choose_next(logits, temperature, top_k, top_p, rng)  # (B,)
        token = np.where(finished, pad, token)
        finished |= np.isin(token, eos)
        yield token
        if finished.all() or i == max_new_tokens - 1:
            return
        logits = step(token)
