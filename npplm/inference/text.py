"""Continue a prompt with any family that writes text, streaming the text as it comes.

Each family reads a prompt its own way:

    GPT, LLaMA   decoder-only: the prompt's ids are continued (model.generate)
    T5           encoder-decoder: the prompt (ending in </s>) is the encoder's input; the
                 decoder writes from its start token until </s> (T5.generate)
    GLM          Part A is the prompt then [gMASK]; the blank is written from [S] until [E]
                 (glm.fill_blank): GLM's left-to-right generation of long text
    BERT, RoBERTa, ALBERT   encoders fill in masks; they do not write text (DoesNotGenerate)

    generation = generate_text(model, tokenizer, prompt_ids, 64, on_text=print_piece)
    generation.text, generation.stop, generation.tokens_per_s

A reply ends at an end-of-sequence id (the model's and the tokenizer's: SmolLM2's chat ends
its turns with <|im_end|>), after max_new_tokens, or at the model's context, whichever
comes first; `Generation.stop` says which. The prompt plus the reply never exceed the
context (`model.context_length`): max_new_tokens is cut to fit, rather than failing midway.
"""

import time
from dataclasses import dataclass

import numpy as np

from npplm.generation import GenerationMixin, check_sampling
from npplm.models.glm import GLMForConditionalGeneration, fill_blank
from npplm.models.t5 import T5ForConditionalGeneration

GENERATING = (GenerationMixin, T5ForConditionalGeneration, GLMForConditionalGeneration)


class DoesNotGenerate(ValueError):
    """The model is an encoder (BERT, RoBERTa, ALBERT): it does not write text."""


def can_generate(model):
    """Whether generate_text can continue a prompt with this model."""
    return isinstance(model, GENERATING)


def eos_ids(model, tokenizer):
    """The ids that end a reply: the config's eos_token_id (one id or a list; GLM: [E])
    and the tokenizer's eos_token, where they exist."""
    config = model.config
    ids = set()
    for value in (getattr(config, "eop_token_id", None), getattr(config, "eos_token_id", None)):
        if value is not None:
            ids.update(int(i) for i in np.atleast_1d(value))
    token = getattr(tokenizer, "eos_token", None)
    if token is not None and tokenizer.token_to_id(token) is not None:
        ids.add(tokenizer.token_to_id(token))
    return ids


@dataclass
class Generation:
    """What generate_text wrote: the new ids (without the one that ended the reply), their
    text, the prompt's length, the wall time (prefill included), and why it stopped:
    "eos", "length" (max_new_tokens) or "context" (the model's context is full)."""

    ids: list
    text: str
    prompt_tokens: int
    steps: int  # tokens chosen, the ending one included
    seconds: float
    stop: str

    @property
    def tokens_per_s(self):
        return self.steps / self.seconds if self.seconds > 0 else float("inf")


def generate_text(model, tokenizer, prompt_ids, max_new_tokens, *, temperature=0.0,
                  top_k=None, top_p=None, seed=None, on_text=None, kv_cache_dtype=None):
    """Continue `prompt_ids` (a list of ids, special tokens included as the family expects)
    by up to max_new_tokens tokens; returns a Generation. on_text(piece) is called with
    each new piece of text as soon as it decodes to whole characters. temperature 0 is
    greedy; otherwise sampling restricted by top_k / top_p, drawn from `seed`.
    kv_cache_dtype: None (the model's), "float16", "float32" or "int8" (npplm.generation
    .kv_cache: int8 codes and a scale per cached vector)."""
    if not can_generate(model):
        raise DoesNotGenerate(f"{type(model).__name__} is an encoder: it fills in masked "
                              "tokens and does not generate text; generation takes GPT, "
                              "LLaMA, T5 and GLM models")
    check_sampling(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
    prompt = [int(i) for i in prompt_ids]
    if not prompt:
        raise ValueError("the prompt is empty: give at least one token of text")
    is_glm = isinstance(model, GLMForConditionalGeneration)
    limit = model.context_length
    used = len(prompt) + (1 if is_glm else 0)  # GLM's Part A ends with [gMASK]
    n = max_new_tokens
    if limit is not None:
        if used >= limit:
            raise ValueError(f"the prompt is {len(prompt)} tokens; this model reads at most "
                             f"{limit} in all (its context), which leaves no room for a reply")
        n = min(n, limit - used)
    eos = eos_ids(model, tokenizer)
    new, shown, state = [], "", {"steps": 0, "ended": False}

    def stream(tokens):  # (1,): the token just chosen
        nonlocal shown
        token = int(tokens[0])
        if state["ended"]:
            return
        state["steps"] += 1
        if token in eos:
            state["ended"] = True
            return
        new.append(token)
        if on_text is not None:
            text = tokenizer.decode(new, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                on_text(text[len(shown):])
                shown = text

    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                    stream=stream, kv_cache_dtype=kv_cache_dtype)
    ids = np.asarray([prompt], dtype=np.int64)  # (1, T)
    model.eval()
    started = time.perf_counter()
    if is_glm:
        part_a = np.concatenate([ids, [[model.config.gmask_token_id]]], axis=1)  # (1, T + 1)
        fill_blank(model, part_a, n, **sampling)
    elif isinstance(model, T5ForConditionalGeneration):
        model.generate(ids, max_new_tokens=n, **sampling)
    else:
        model.generate(ids, n, eos_token_id=sorted(eos) or None, **sampling)
    seconds = time.perf_counter() - started
    text = tokenizer.decode(new, skip_special_tokens=True)
    if on_text is not None and text != shown:
        on_text(text[len(shown):])  # what was held back waiting for a character's end
    stop = "eos" if state["ended"] else "context" if n < max_new_tokens else "length"
    return Generation(new, text, len(prompt), state["steps"], seconds, stop)


def chat_prompt(tokenizer, messages):
    """The ids of a conversation rendered by the tokenizer's own chat template, ready for
    the assistant's turn. ValueError when the tokenizer has no template (a model npplm
    trained from scratch has none: use `generate`)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("this model's tokenizer has no chat template, so it cannot chat: "
                         "use `npplm generate --prompt TEXT` to continue a text instead")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False).ids  # the template wrote them
