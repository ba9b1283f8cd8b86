"""`model.generate` for every family: one choice of loop, and the decoder-only step.

`decode(step, ...)` runs a family's step through the one loop that fits the options:
`stream_tokens` (sampling.py) for greedy decoding and sampling, `beam_search`
(beam_search.py) for num_beams > 1, and returns the new tokens, (B r, n). The families
build their steps and call it: `GenerationMixin` below for the decoder-only models (GPT,
LLaMA), `T5ForConditionalGeneration.generate` (the encoder once, then the decoder over a
T5Cache), GLM's `fill_blank` (Part A once, then the blank from [S]).

The protocol a decoder-only model follows to be generated from:
    model.new_cache(batch_size, max_length, dtype=None) -> a KVCache (PreTrainedModel
        builds it from the family's `kv_cache_layout()`, on the weights' device, in their
        dtype, or as `dtype` names: "float16", "float32", "int8" (Int8KVCache))
    model(input_ids, attention_mask=mask, cache=cache) -> an object with `.logits`
        input_ids (B, T) the new tokens; mask (B, cache.length + T) of 1/0 covering the
        cached tokens and the new ones; the model appends its keys and values with
        cache.update(layer, k, v), calls cache.advance(T) once, and numbers positions from
        the mask (position = real tokens so far - 1) so that left padding changes nothing.
    logits (B, T, V); only the last position's are used.

Batches of prompts of different lengths are LEFT-padded (padding first, mask 0): every
row's next token then sits in the same last column. Prompts, masks and tokens stay NumPy
arrays on the host; only the logits of each step come back from the device.
"""

import numpy as np

from autograd import no_grad, to_numpy
from npplm.generation.beam_search import EARLY_STOPPING, beam_search
from npplm.generation.sampling import check_sampling, stream_tokens


def check_prompt(input_ids, attention_mask):
    """(ids, mask), both (B, T) int64 NumPy arrays, from (B, T) or (T,) input; a 1/0 mask
    must be left-padded and give every row a token."""
    ids = np.asarray(to_numpy(input_ids) if hasattr(input_ids, "dtype") else input_ids)
    if ids.ndim == 1:
        ids = ids[None, :]  # one prompt (T,) -> (1, T)
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
        raise ValueError(f"input_ids must be integers of shape (B, T) or (T,) with T >= 1, "
                         f"got dtype {ids.dtype} and shape {ids.shape}")
    if attention_mask is None:
        mask = np.ones(ids.shape, dtype=np.int64)
    else:
        mask = np.asarray(to_numpy(attention_mask)).astype(np.int64)
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


def check_options(max_new_tokens, num_beams=1, temperature=0.0, num_return_sequences=1,
                  top_k=None, top_p=None):
    """Validate what every generate shares, naming the value at fault."""
    check_sampling(temperature, top_k, top_p)
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a non-negative integer")
    if not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise ValueError(f"num_beams={num_beams!r} must be a positive integer")
    if num_beams > 1 and temperature != 0:
        raise ValueError(f"num_beams={num_beams} is beam search, which is deterministic: "
                         f"temperature must be 0, got {temperature} (beam sampling is "
                         "not implemented)")
    if num_beams == 1 and num_return_sequences != 1:
        raise ValueError(f"num_return_sequences={num_return_sequences} needs num_beams >= "
                         f"{num_return_sequences} (beam search)")


def decode(step, batch_size, max_new_tokens, *, num_beams=1, temperature=0.0, top_k=None,
           top_p=None, eos_token_id=None, pad_token_id=None, seed=None, length_penalty=1.0,
           early_stopping=False, num_return_sequences=1, stream=None):
    """New tokens (B r, n) from a family's step: the loop that the options ask for.

    step(tokens, rows=None) -> (R, V) logits, R = batch_size x num_beams rows; tokens None
    for the first new token; rows (beam search only) reorder the rows before `tokens` are
    appended (row i continues the sequence of row rows[i]).
    num_beams=1   stream_tokens: greedy at temperature 0, else sampling (top_k, top_p,
                  seed); r = 1; a row that emits eos gets pad_token_id after it.
    num_beams=N   beam_search: length_penalty, early_stopping (True, False, "never"),
                  num_return_sequences r <= N hypotheses per input, best first, right-
                  padded with pad_token_id.
    stream        called with each step's (B,) tokens as they come (num_beams=1 only).
    n <= max_new_tokens: decoding stops early once every row is finished.
    """
    check_options(max_new_tokens, num_beams, temperature, num_return_sequences, top_k, top_p)
    if early_stopping not in EARLY_STOPPING:
        raise ValueError(f"early_stopping={early_stopping!r} must be one of {EARLY_STOPPING}")
    if num_beams > 1:
        if stream is not None:
            raise ValueError("stream needs num_beams=1: beam search knows its sequences only "
                             "at the end")
        pad = 0 if pad_token_id is None else pad_token_id
        return beam_search(step, batch_size, num_beams, max_new_tokens, eos_token_id, pad,
                           length_penalty, early_stopping, num_return_sequences).sequences
    steps = []
    for tokens in stream_tokens(step, batch_size, max_new_tokens, temperature, top_k, top_p,
                                eos_token_id, pad_token_id, seed):
        if stream is not None:
            stream(tokens.copy())
        steps.append(tokens)
    return np.stack(steps, axis=1) if steps else np.zeros((batch_size, 0), dtype=np.int64)


def causal_lm_step(model, ids, mask, max_new_tokens, num_beams=1, kv_cache_dtype=None):
    """The step of a decoder-only model over a KV cache, for `decode` (see there).

    ids, mask (B, T) left-padded prompts; each is repeated for its num_beams beams (row
    b N + j is beam j of input b). The cache holds T + max_new_tokens positions, stored as
    kv_cache_dtype says (model.new_cache).
    """
    ids, mask = np.repeat(ids, num_beams, axis=0), np.repeat(mask, num_beams, axis=0)
    R, T = ids.shape
    cache = model.new_cache(R, T + max_new_tokens, dtype=kv_cache_dtype)

    def step(tokens, rows=None):
        nonlocal mask
        if rows is not None:  # beam search: row i continues the sequence of rows[i]
            cache.reorder(rows)
            mask = mask[rows]
        if tokens is None:  # prefill: the whole prompt at once, (R, T, V)
            logits = model(ids, attention_mask=mask, cache=cache).logits
        else:  # one token per row, attending over the cache, (R, 1, V)
            mask = np.concatenate([mask, np.ones((R, 1), dtype=mask.dtype)], axis=1)
            logits = model(tokens[:, None], attention_mask=mask, cache=cache).logits
        return to_numpy(logits.data[:, -1])  # (R, T, V) -> (R, V)

    return step


class GenerationMixin:
    """`generate` and `stream_generate` for a decoder-only model (GPT, LLaMA): the
    protocol in the module docstring. The model runs under no_grad; call .eval() first if
    it was training (dropout), as with Hugging Face's generate."""

    def generate(self, input_ids, max_new_tokens, *, attention_mask=None, temperature=1.0,
                 top_k=None, top_p=None, eos_token_id=None, pad_token_id=None, seed=None,
                 num_beams=1, length_penalty=1.0, early_stopping=False,
                 num_return_sequences=1, stream=None, kv_cache_dtype=None):
        """Continue each prompt by up to max_new_tokens tokens; returns (B r, T + n) int64.

        input_ids       (B, T), or (T,) for one prompt; batches LEFT-padded
        attention_mask  (B, T) 1 for tokens, 0 for padding; None: no padding
        temperature     0: greedy (deterministic); otherwise sample from softmax(logits /
                        temp), restricted to the top_k tokens / the top_p nucleus
        eos_token_id    an id or a list of ids that finish a row
        pad_token_id    what finished rows receive; None: the (first) eos id, or 0
        seed            the sampling generator's seed: the same seed, the same tokens
        num_beams       > 1: beam search (temperature 0), with length_penalty,
                        early_stopping and num_return_sequences r as transformers'
        stream          called with each step's (B,) tokens as soon as they are chosen
        kv_cache_dtype  what the KV cache stores: None the weights' dtype, "float16",
                        "float32", or "int8" (codes and a scale per vector, about half a
                        float16 cache: npplm.generation.kv_cache)
        Each row is its prompt, then its new tokens (r rows per prompt with beams).
        """
        ids, mask = check_prompt(input_ids, attention_mask)
        check_options(max_new_tokens, num_beams, temperature, num_return_sequences, top_k,
                      top_p)
        with no_grad():
            step = causal_lm_step(self, ids, mask, max_new_tokens, num_beams, kv_cache_dtype)
            new = decode(step, ids.shape[0], max_new_tokens, num_beams=num_beams,
                         temperature=temperature, top_k=top_k, top_p=top_p,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id, seed=seed,
                         length_penalty=length_penalty, early_stopping=early_stopping,
                         num_return_sequences=num_return_sequences, stream=stream)
        prompts = np.repeat(ids, new.shape[0] // ids.shape[0], axis=0)  # (B r, T)
        return np.concatenate([prompts, new], axis=1)  # (B r, T) + (B r, n) -> (B r, T + n)

    def stream_generate(self, input_ids, max_new_tokens, *, attention_mask=None,
                        temperature=1.0, top_k=None, top_p=None, eos_token_id=None,
                        pad_token_id=None, seed=None, kv_cache_dtype=None):
        """An iterator of each step's new tokens, (B,) int64: `generate` without beams, for
        showing text as it comes."""
        ids, mask = check_prompt(input_ids, attention_mask)
        check_options(max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
        with no_grad():
            step = causal_lm_step(self, ids, mask, max_new_tokens,
                                  kv_cache_dtype=kv_cache_dtype)
            yield from stream_tokens(step, ids.shape[0], max_new_tokens, temperature, top_k,
                                     top_p, eos_token_id, pad_token_id, seed)
