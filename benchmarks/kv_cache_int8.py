"""What an int8 KV cache costs in accuracy: SmolLM2-135M-Instruct, float32 cache vs int8.

    .venv/bin/python benchmarks/kv_cache_int8.py [--model PATH] [--tokens 1024] [--chunk 64]
        [--new-tokens 64]

The model reads a held-out text (the docstrings of a fixed list of standard-library modules,
prose the model was not tuned on here, cut to --tokens tokens) in chunks of --chunk tokens
through its KV cache, so every chunk attends to the earlier ones through the cache, and each
position scores the next token. Printed for each cache (float32; int8 with float16 scales,
the one `kv_cache_dtype="int8"` builds; int8 with float32 scales):
    bytes      the cache's nbytes after the text, per token and as a ratio to float32
    ppl        exp(mean negative log-likelihood) of the next tokens
    top-1      how often its argmax next token equals the float32 cache's
    max |dlogp|  the largest change of a next token's log-probability
How much of a perplexity change is the int8 format and how much the luck of which entries
round up or down: the int8 caches are run again --units more times in other units u
(quantising x / u and multiplying what is read back by u: the same precision, codes rounding
at other places), and the mean and range of their perplexities printed.
Then greedy decoding of --new-tokens tokens after three prompts, float32 cache vs int8: how
many tokens agree, where each continuation first differs, and there the float32 model's
log-probability margin between the two tokens chosen. Also the rms error int8 leaves on
the keys and on the values, with float16 and float32 scales. CPU, NumPy; 12 minutes on two
cores.
"""

import argparse
import importlib
import inspect
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

MODULES = ("argparse", "json", "subprocess", "difflib", "heapq", "pickle", "decimal",
           "textwrap", "unittest", "logging", "collections", "functools", "itertools")
PROMPTS = ("The key and value cache of a transformer",
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
           "Once upon a time, in a small village by the sea,")


def held_out_text():
    """The docstrings of MODULES, one after another (the same text for one Python version)."""
    docs = [inspect.getdoc(importlib.import_module(name)) or "" for name in MODULES]
    return "\n\n".join(d for d in docs if d)


def score(model, ids, chunk, cache):
    """Next-token log-probabilities (N - 1,) and argmaxes of ids (N,), read chunk by chunk
    through `cache` (its every position), and the cache's bytes once full."""
    from autograd import no_grad, to_numpy

    N = len(ids)
    logp, top = [], []
    with no_grad():
        for a in range(0, N, chunk):
            b = min(a + chunk, N)
            logits = to_numpy(model(ids[None, a:b], attention_mask=np.ones((1, b), np.int64),
                                    cache=cache).logits.data[0]).astype(np.float64)  # (T, V)
            logits -= logits.max(axis=1, keepdims=True)
            logz = np.log(np.exp(logits).sum(axis=1))
            targets = ids[a + 1:b + 1]  # position t predicts token t + 1
            logp.append(logits[np.arange(len(targets)), targets] - logz[:len(targets)])
            top.append(logits.argmax(axis=1)[:len(targets)])
    return np.concatenate(logp), np.concatenate(top), cache.nbytes


def in_units(cls, u):
    """`cls` (an int8 cache) quantising x / u and reading back u x_hat: the same precision,
    but entries round up or down at other places than at u = 1."""

    class InUnits(cls):
        def _store(self, layer, start, k, v):
            super()._store(layer, start, k / k.dtype.type(u), v / v.dtype.type(u))

        def _load(self, layer, n):
            return tuple(a * self.dtype.type(u) for a in super()._load(layer, n))

    return InUnits


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a llama GGUF file (default SmolLM2)")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--units", type=int, default=4, help="extra rounding realisations")
    args = parser.parse_args()

    from autograd import no_grad, to_numpy
    from npplm.generation.kv_cache import Int8KVCache, KVCache, dequantize_int8, quantize_int8
    from npplm.models.llama import LlamaForCausalLM, smollm2_path
    from npplm.tokenizers import load_tokenizer

    class Int8KVCacheFloat32Scales(Int8KVCache):
        scale_dtype = np.float32

    path = args.model or smollm2_path()
    model, tokenizer = LlamaForCausalLM.from_gguf(path), load_tokenizer(path)
    L, K, D = model.kv_cache_layout()
    ids = np.asarray(tokenizer.encode(held_out_text(), add_special_tokens=False).ids)
    ids = ids[:args.tokens]
    N = len(ids)
    print(f"{Path(path).name}: L={L} layers, K={K} key/value heads, D={D}; held-out text: "
          f"{N} tokens ({', '.join(MODULES)} docstrings), chunks of {args.chunk}")

    def run(cls, keep=None):
        start = time.perf_counter()
        cache = cls(L, 1, K, D, N, model.dtype)
        out = score(model, ids, args.chunk, cache)
        print(f"  ({cls.__name__}: {time.perf_counter() - start:.0f} s)", file=sys.stderr)
        if keep is not None:
            keep.append(cache)
        return out

    caches = {"float32": KVCache, "int8, float16 scales": Int8KVCache,
              "int8, float32 scales": Int8KVCacheFloat32Scales}
    full = []  # the float32 cache, once it holds the whole text
    results = {name: run(cls, full if cls is KVCache else None) for name, cls in caches.items()}
    ref_logp, ref_top, ref_bytes = results["float32"]
    ref_ppl = float(np.exp(-ref_logp.mean()))
    print(f"{'cache':<22} {'bytes/token':>11} {'vs float32':>10} {'ppl':>8} {'change':>7} "
          f"{'top-1':>7} {'max |dlogp|':>11}")
    for name, (logp, top, nbytes) in results.items():
        ppl = float(np.exp(-logp.mean()))
        print(f"{name:<22} {nbytes / N:>11.0f} {nbytes / ref_bytes:>10.4f} {ppl:>8.4f} "
              f"{ppl / ref_ppl - 1:>+7.2%} {(top == ref_top).mean():>7.2%} "
              f"{np.abs(logp - ref_logp).max():>11.4f}")

    for name, arrays in (("keys", full[0].keys), ("values", full[0].values)):
        x = np.stack(arrays).astype(np.float64)  # (L, 1, K, N, D)
        errors = []
        for scale_dtype in (np.float16, np.float32):
            x_hat = dequantize_int8(*quantize_int8(x, scale_dtype), np.float64)
            errors.append(np.sqrt(np.mean((x_hat - x) ** 2) / np.mean(x ** 2)))
        print(f"int8 {name}: rms error / rms {errors[0]:.4%} with float16 scales, "
              f"{errors[1]:.4%} with float32 scales")

    units = (1.1, 1.3, 1.7, 0.77, 1.05, 1.5)[:args.units]
    if units:
        print(f"int8 perplexity over {1 + len(units)} rounding realisations (units 1, "
              f"{', '.join(map(str, units))}):")
    for name in ("int8, float16 scales", "int8, float32 scales"):
        if not units:
            break
        ppls = [float(np.exp(-results[name][0].mean()))]
        ppls += [float(np.exp(-run(in_units(caches[name], u))[0].mean())) for u in units]
        change = np.array(ppls) / ref_ppl - 1
        print(f"  {name:<22} mean {np.mean(ppls):.4f} ({change.mean():+.2%}), range "
              f"{min(ppls):.4f} to {max(ppls):.4f} ({change.min():+.2%} to {change.max():+.2%})")

    agree, total = 0, 0
    for prompt in PROMPTS:
        p = np.asarray(tokenizer.encode(prompt, add_special_tokens=False).ids)
        out = {kind: model.generate(p, args.new_tokens, temperature=0,
                                    kv_cache_dtype=kind)[0, len(p):]
               for kind in (None, "int8")}
        same = out[None] == out["int8"]
        differ = np.flatnonzero(~same)
        agree, total = agree + int(same.sum()), total + len(same)
        first = "identical"
        if differ.size:  # the float32 model's margin there, recomputed without a cache
            t = differ[0]
            with no_grad():
                prefix = np.concatenate([p, out[None][:t]])[None]
                logits = to_numpy(model(prefix).logits.data[0, -1]).astype(np.float64)
            gap = logits[out[None][t]] - logits[out["int8"][t]]  # = the log-prob margin
            first = f"first differs at new token {t + 1}, a float32 log-prob margin of {gap:.3f}"
        print(f"greedy {args.new_tokens} tokens after {prompt[:40]!r}: {same.sum()}/{len(same)}"
              f" agree; {first}")
    print(f"greedy agreement, int8 vs float32 cache: {agree}/{total} = {agree / total:.1%}")


if __name__ == "__main__":
    main()
