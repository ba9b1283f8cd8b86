"""Decoding: turning a model's next-token logits into text, for every family.

    kv_cache.py     KVCache: each layer's keys and values, preallocated, reorderable
    sampling.py     choose_next (greedy, temperature, top-k, top-p) and stream_tokens, the
                    token loop every family decodes through
    beam_search.py  beam_search: the num_beams likeliest hypotheses, length penalty, the
                    three early-stopping rules of transformers
    generate.py     decode (the loop the options ask for), and GenerationMixin: generate /
                    stream_generate for decoder-only models (GPT, LLaMA)

This package knows the decoding protocol, not the model classes: the families import it
(GPT and LLaMA inherit GenerationMixin; T5's generate and GLM's fill_blank build their own
step and call `decode`), so it sits below npplm.models.
"""

from npplm.generation.beam_search import BeamSearchOutput, beam_search
from npplm.generation.generate import GenerationMixin, check_prompt, decode
from npplm.generation.kv_cache import KVCache
from npplm.generation.sampling import check_sampling, choose_next, stream_tokens

__all__ = ["BeamSearchOutput", "GenerationMixin", "KVCache", "beam_search", "check_prompt",
           "check_sampling", "choose_next", "decode", "stream_tokens"]
