"""A GPT-2 training step, npplm beside PyTorch eager, in one process: tokens/s, ratio, MFU.

    .venv/bin/python benchmarks/side_by_side_training.py [--threads N] [--quick]

The step (benchmarks/bench_training.py, issue 7's shape): 6 layers, width 384, 6 heads,
T=256, B=8, vocabulary 8192, dropout off; forward, backward, global-norm clipping at 1.0,
AdamW with decay on matrices. The reference is Hugging Face transformers' GPT2LMHeadModel
(SDPA attention) with torch.optim.AdamW, started from the same weights: PyTorch eager, the
way most people train such a model on a CPU.

MFU = tokens/s x FLOPs per token / peak, with FLOPs per token = 6 N + 12 L T A
(npplm/training/flops.py) and the peak measured here: the best float32 2048 x 2048 GEMM
through NumPy's BLAS with the same threads. Timing as side_by_side.py: samples alternate
between the two sides, medians are reported, "best" is the ratio of the fastest samples.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from benchmarks.bench_training import PRESETS, batch, npplm_step  # noqa: E402
from benchmarks.side_by_side import (  # noqa: E402
    THREAD_VARIABLES,
    Case,
    Unit,
    blas_threads,
    measure,
    print_machine,
)


def torch_step(torch, model, preset):
    """The same step in PyTorch, from our model's weights."""
    import tempfile

    import transformers

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        theirs = transformers.GPT2LMHeadModel.from_pretrained(folder,
                                                              attn_implementation="sdpa")
    theirs.train()
    decay = [p for p in theirs.parameters() if p.ndim >= 2]
    rest = [p for p in theirs.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}], lr=1e-4, betas=(0.9, 0.95))
    ids = torch.tensor(batch(preset))

    def step():
        theirs(ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="BLAS and OpenMP threads for both sides")
    parser.add_argument("--quick", action="store_true", help="a smoke test, not a measurement")
    parser.add_argument("--preset", default="gpt2-6L-384", choices=sorted(PRESETS))
    args = parser.parse_args(argv)
    if args.threads is not None and os.environ.get(THREAD_VARIABLES[0]) != str(args.threads):
        os.environ.update({k: str(args.threads) for k in THREAD_VARIABLES})
        os.execv(sys.executable, [sys.executable, *sys.argv])

    import torch

    from npplm.training import flops

    threads = blas_threads()
    torch.set_num_threads(threads)
    print_machine(torch, threads)
    ours, model = npplm_step(args.preset)
    theirs = torch_step(torch, model, args.preset)
    *_, T, B = PRESETS[args.preset]
    tokens = B * T
    case = Case(f"GPT-2 {args.preset} training step, B={B} T={T}", ours, theirs,
                Unit("ms", 1e3))
    repeat, min_time, budget = (3, 0.0, 10.0) if args.quick else (9, 0.0, 60.0)
    (t_ours, best_ours), (t_theirs, best_theirs) = measure(case, repeat, min_time, budget)
    peak = flops.matmul_peak()
    per_token = flops.training_flops_per_token(model, T)
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s (float32 2048^2 GEMM, best of 10); "
          f"{per_token / 1e6:.1f} MFLOP per token (6 N + 12 L T A, N = "
          f"{flops.linear_parameters(model):,})\n")
    print(f"{'':<22} {'ms/step':>9} {'tokens/s':>10} {'MFU':>7}")
    for name, t in (("npplm", t_ours), ("PyTorch eager", t_theirs)):
        rate = tokens / t
        used = flops.mfu(rate, per_token, peak)
        print(f"{name:<22} {t * 1e3:>9.1f} {rate:>10,.0f} {used:>7.1%}")
    print(f"\nnpplm speed / PyTorch speed: {t_theirs / t_ours:.2f} (best samples "
          f"{best_theirs / best_ours:.2f}); target at least 0.8, stretch 1.0")


if __name__ == "__main__":
    main()
