"""Chat templates: a model's own Jinja2 template turns a list of messages into its prompt.

Instruction-tuned models were trained on conversations laid out with special tokens
(SmolLM2: `<|im_start|>user\\n...<|im_end|>\\n`). The layout ships with the model as a
Jinja2 template (`tokenizer.chat_template` in GGUF metadata, `chat_template` in
tokenizer_config.json); rendering it exactly is what makes the model answer well. The
template runs in Jinja2's sandbox: it comes from a file, so it may not touch Python.
"""

import functools


def render_chat(template, messages, add_generation_prompt=True, **special_tokens):
    """The prompt text for `messages` ([{"role": ..., "content": ...}, ...]).

    add_generation_prompt appends the opening of the assistant's turn, so that the model's
    continuation is its answer. special_tokens (bos_token=..., eos_token=...) are passed to
    the template, as transformers does.
    """
    if template is None:
        raise ValueError("this tokenizer has no chat template")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"a chat message must be a dict with 'role' and 'content', got {m!r}")
    return compiled(template).render(messages=list(messages),
                                     add_generation_prompt=add_generation_prompt,
                                     **special_tokens)


@functools.lru_cache(maxsize=8)
def compiled(template):
    """The template compiled once (a hundred times faster to render again than to parse)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def _raise(message):
    raise ValueError(f"chat template: {message}")
