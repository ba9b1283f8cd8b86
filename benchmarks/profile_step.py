"""Where a training step's time goes, primitive by primitive, and how many cores each uses.

    .venv/bin/python benchmarks/profile_step.py [--model gpt|bert] [--steps 5] [--top 25]
                                                [--default-blas-wait]

The step is side_by_side_training.py's GPT-2 (6 layers, width 384, T=256, B=8: forward,
backward, clipping, AdamW) or side_by_side.py's BERT-base forward + backward (B=8, T=128).
Every registered primitive (autograd.REGISTRY) has its forward and its VJP wrapped in a
timer that records, per call, the wall time and the CPU time of the whole process
(`time.process_time`: every thread). Their ratio is the cores in use during the call:

    cores ~ 1   one core works, the other idles (single-threaded NumPy, a small kernel)
    cores ~ 2   both work: a parallel kernel or a GEMM, or one thread working while an
                OpenBLAS worker spins after the GEMM before (its spin is CPU time too;
                --default-blas-wait keeps OpenBLAS's 0.1 s spin to show it)

The rest of the step (Python, the graph, the optimizer's own kernels) is reported as its
parts: "optimizer" (clip_grad_norm + AdamW.step + zero_grad) and "outside primitives"
(the step minus every timed call). The wrappers add about 2 us a call. Prints the top
primitives by wall time, then the share of the step spent on one core.
"""

import argparse
import collections
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script


def instrument(records):
    """Wrap every primitive's forward and VJP; returns a function that unwraps them."""
    from autograd.primitive import REGISTRY

    saved = []

    def timed(fun, key):
        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            out = fun(*args, **kwargs)
            r = records[key]
            r[0] += time.perf_counter() - wall
            r[1] += time.process_time() - cpu
            r[2] += 1
            return out
        return wrapper

    for name, prim in REGISTRY.items():
        saved.append((prim, prim.fun, prim.vjp))
        prim.fun = timed(prim.fun, f"{name}")
        if prim.vjp is not None:
            prim.vjp = timed(prim.vjp, f"{name} (vjp)")

    def restore():
        for prim, fun, vjp in saved:
            prim.fun, prim.vjp = fun, vjp
    return restore


def gpt_step():
    from benchmarks.bench_training import npplm_step

    step, model = npplm_step("gpt2-6L-384")
    return step, model.parameters()


def bert_step():
    import numpy as np

    from npplm.models.bert import BertConfig, BertModel

    model = BertModel(BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                      seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30522, (8, 128))
    mask = np.ones((8, 128), np.int64)

    def step():
        out = model(ids, attention_mask=mask).last_hidden_state
        (out * out).mean().backward()
        for p in model.parameters():
            p.grad = None

    return step, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["gpt", "bert"], default="gpt")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps (after 2 warm)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--default-blas-wait", action="store_true",
                        help="keep OpenBLAS's 0.1 s spin after each GEMM")
    args = parser.parse_args(argv)
    from npplm import runtime

    settings = runtime.configure()
    if args.default_blas_wait:  # OpenBLAS's own 0.1 s spin back, to see what it costs
        settings["blas_wait"] = runtime.set_blas_wait(None)
    step, _ = gpt_step() if args.model == "gpt" else bert_step()
    for _ in range(2):
        step()
    records = collections.defaultdict(lambda: [0.0, 0.0, 0])
    restore = instrument(records)
    try:
        walls = []
        for _ in range(args.steps):
            wall = time.perf_counter()
            step()
            walls.append(time.perf_counter() - wall)
    finally:
        restore()
    total = sum(walls)
    timed = sum(r[0] for r in records.values())
    print(f"{args.model} step, {args.steps} steps, {total / args.steps * 1e3:.0f} ms a step "
          f"(median {sorted(walls)[len(walls) // 2] * 1e3:.0f}); {os.cpu_count()} cores; "
          f"settings {settings}; {time.strftime('%Y-%m-%d')}")
    print(f"{'primitive':34s} {'ms/step':>8s} {'share':>6s} {'calls':>6s} {'cores':>6s}")
    rows = sorted(records.items(), key=lambda kv: -kv[1][0])
    for name, (wall, cpu, calls) in rows[:args.top]:
        print(f"{name:34s} {wall / args.steps * 1e3:8.1f} {wall / total:6.1%} "
              f"{calls // args.steps:6d} {cpu / max(wall, 1e-12):6.2f}")
    one_core = sum(r[0] for r in records.values() if r[1] / max(r[0], 1e-12) < 1.3)
    print(f"{'outside primitives':34s} {(total - timed) / args.steps * 1e3:8.1f} "
          f"{(total - timed) / total:6.1%}")
    print(f"in primitives using one core (cores < 1.3): {one_core / args.steps * 1e3:.0f} ms a "
          f"step, {one_core / total:.0%} of the step")


if __name__ == "__main__":
    main()
