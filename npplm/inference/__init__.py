"""Inference: text in, text out, for every family that writes text.

    text.py   the prompt laid out as each family expects (decoder-only, encoder-decoder,
              GLM's blank), the new tokens streamed as text, the speed; chat turns

This floor sits above models and tokenizers and below the command line: `npplm generate`
and `npplm chat` are thin over it, and so is anything else that serves a model.
"""

from npplm.inference.text import (
    DoesNotGenerate,
    Generation,
    can_generate,
    chat_prompt,
    eos_ids,
    generate_text,
)

__all__ = ["DoesNotGenerate", "Generation", "can_generate", "chat_prompt", "eos_ids",
           "generate_text"]
