"""Autoregressive generation for any decoder: greedy, temperature, top-k and top-p sampling.

Generating n tokens after a prompt of T takes one forward pass over the prompt (prefill),
which fills a KV cache with every layer's keys and values, then n - 1 passes of one token
each (decode), each attending over the cache instead of recomputing the prefix.

The protocol a model follows to be generated from (GPT-1/2/3 in npplm.models.gpt follow
it; any decoder family can):
    model.n_layers      L, the number of attention layers that write to the cache
    model.n_kv_heads    K, key/value heads per layer (H without grouped-query attention)
    model.head_dim      D
    model.dtype         the dtype of the cached keys and values (the parameters')
    model(input_ids, attention_mask=mask, cache=cache) -> an object with `.logits`
        input_ids (B, T) the new tokens; mask (B, cache.length + T) of 1/0 covering the
        cached tokens and the new ones; the model appends its keys and values with
        cache.update(layer, k, v), calls cache.advance(T) once, and numbers positions from
        the mask (position = real tokens so far - 1) so that left padding changes nothing.
    logits (B, T, V); only the last position's are used.

Batches of prompts of different lengths are LEFT-padded (padding first, mask 0): every
row's next token then sits in the same last column. A row that emits `eos_token_id` is
finished: it receives `pad_token_id` from then on, and generation stops early once every
row is finished (as Hugging Face's generate does).

`generate` returns the prompt and the new tokens, (B, T + n); `stream_generate` is the
same loop as an iterator yielding each step's (B,) tokens; `stream`, a callback, sees them
as they come. `GenerationMixin` gives a model a `.generate(...)` method.

The loop itself, `stream_tokens`, knows nothing of models: it asks a `step` function for
next-token logits. T5's generate (npplm.models.t5) decodes through it too, and beam search
(npplm.beam_search) takes a step function of the same kind.
"""

import numpy as np

from autograd import array_module, no_grad, to_numpy
from npplm.kv_cache import KVCache


def _check_prompt(input_ids, attention_mask):
    ids = np.asarray(to_numpy(input_ids) if hasattr(input_ids, "dtype") else input_ids)
    if ids.ndim == 1:
        ids = ids[None, :]  # one prompt (T,) -> (1, T)
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
        raise ValueError(f"input_ids must be integers of shape (B, T) or (T,) with T >= 1, "
                         f"got dtype {ids.dtype} and shape {ids.shape}")
    if attention_mask is None:
        mask = np.ones(ids.shape, dtype=np.int64)
    else:
        mask = np.asarray(attention_mask).astype(np.int64)
        mask = mask[None, :] if mask.ndim == 1 else mask
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {mask.shape} but input_ids has "
                             f"{ids.shape}: they must be equal")
        if (mask[:, 1:] < mask[:, :-1]).any():
            raise ValueError("attention_mask has padding after a token: pad batched prompts "
                             "on the LEFT (zeros first) so that every row ends together")
        if (mask.sum(axis=1) == 0).any():
            raise ValueError("attention_mask has a row with no token at all")
    return ids.astype(np.int64), mask


def choose_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Pick one token per row from logits (B, V) -> (B,) int64.

    temperature 0: greedy, argmax (ties: the lowest id). Otherwise softmax(logits / temp)
    restricted to the top_k most likely tokens and to the smallest set of most likely
    tokens whose probabilities add up to top_p (the nucleus, Holtzman et al.,
    arXiv:1904.09751), renormalised, then one draw per row from `rng`.
    """
    logits = np.asarray(logits, dtype=np.float64)  # (B, V): sampling in float64
    if temperature == 0:
        return logits.argmax(axis=-1)
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0: greedy)")
    B, V = logits.shape
    logits = logits / temperature
    if top_k is not None:
        if not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k={top_k} must be a positive integer")
        if top_k < V:
            kth = np.partition(logits, V - top_k, axis=-1)[:, V - top_k, None]  # (B, 1)
            logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)  # (B, V)
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p={top_p} must be in (0, 1]")
        order = np.argsort(-probs, axis=-1, kind="stable")  # most likely first
        sorted_p = np.take_along_axis(probs, order, axis=-1)  # (B, V)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the more likely tokens
        keep_sorted = before < top_p  # the first token is always kept
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
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
    at most). Decoder-only models (stream_generate) and T5 both decode through this loop.
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


def stream_generate(model, input_ids, max_new_tokens, temperature=1.0, top_k=None,
                    top_p=None, eos_token_id=None, seed=None, attention_mask=None,
                    pad_token_id=None):
    """Yield each step's new tokens, (B,) int64, for up to max_new_tokens steps.

    Arguments as `generate`. The model is run under no_grad.
    """
    ids, mask = _check_prompt(input_ids, attention_mask)
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be a non-negative integer")
    if max_new_tokens == 0:
        return
    B, T = ids.shape
    xp = array_module(model.parameters()[0].data)
    cache = KVCache(model.n_layers, B, model.n_kv_heads, model.head_dim, T + max_new_tokens,
                    model.dtype, xp=xp)

    def step(token):
        nonlocal mask
        if token is None:  # prefill: the whole prompt at once, (B, T, V)
            logits = model(ids, attention_mask=mask, cache=cache).logits
        else:  # decode: one token per row, attending over the cache, (B, 1, V)
            mask = np.concatenate([mask, np.ones((B, 1), dtype=mask.dtype)], axis=1)
            logits = model(token[:, None], attention_mask=mask, cache=cache).logits
        return to_numpy(logits.data[:, -1])  # (B, T, V) -> (B, V)

    with no_grad():
        yield from stream_tokens(step, B, max_new_tokens, temperature, top_k, top_p,
                                 eos_token_id, pad_token_id, seed)


def generate(model, input_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
             eos_token_id=None, seed=None, attention_mask=None, stream=None, pad_token_id=None):
    """Continue each prompt by up to max_new_tokens tokens; returns (B, T + n) int64.

    input_ids       (B, T), or (T,) for one prompt; batches LEFT-padded
    attention_mask  (B, T) 1 for tokens, 0 for padding; None: no padding
    temperature     0: greedy (deterministic); otherwise sample from softmax(logits / temp)
    top_k, top_p    restrict sampling to the k most likely tokens / the top-p nucleus
    eos_token_id    an id or a list of ids that finish a row
    pad_token_id    what finished rows receive; None: the (first) eos id, or 0
    seed            the sampling generator's seed: the same seed, the same tokens
    stream          called with each step's (B,) tokens as soon as they are chosen
    n <= max_new_tokens: generation stops early once every row has emitted eos.
    """
    ids, _ = _check_prompt(input_ids, attention_mask)
    steps = []
    for token in stream_generate(model, input_ids, max_new_tokens, temperature, top_k, top_p,
                                 eos_token_id, seed, attention_mask, pad_token_id):
        if stream is not None:
            stream(token.copy())
        steps.append(token)
    new = np.stack(steps, axis=1) if steps else np.zeros((ids.shape[0], 0), dtype=np.int64)
    return np.concatenate([ids, new], axis=1)  # (B, T) + (B, n) -> (B, T + n)


class GenerationMixin:
    """Gives a decoder model (one that follows the protocol above) a `generate` method."""

    def generate(self, input_ids, max_new_tokens, **kwargs):
        """`npplm.generation.generate(self, ...)`: see there."""
        return generate(self, input_ids, max_new_tokens, **kwargs)

    def stream_generate(self, input_ids, max_new_tokens, **kwargs):
        """`npplm.generation.stream_generate(self, ...)`: an iterator of (B,) tokens."""
        return stream_generate(self, input_ids, max_new_tokens, **kwargs)
