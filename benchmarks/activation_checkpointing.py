"""Activation checkpointing on GPT-2 124M at T = 512: the peak memory of a training step and
its time, with and without `model.gradient_checkpointing_enable()`.

    .venv/bin/python benchmarks/activation_checkpointing.py [--batch 4] [--steps 2] [--quick]

Each case runs in a fresh process (so that one's high-water mark cannot hide the other's):
run a step of a tiny GPT-2 (Numba compiles its kernels then, per dtype not shape), build
GPT-2 124M (12 layers, width 768, vocabulary 50257, dropout 0.1), run one untimed step,
then `--steps` timed steps of forward + backward + AdamW on a batch of `--batch`
random sequences of T = 512. Memory is the process's peak resident set (ru_maxrss, which
counts NumPy's and Numba's arrays alike) minus its resident set before the first step:
what the step adds to the weights. The optimizer's moments are allocated before that
point (zeros, touched), so they count in neither.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import numpy as np  # noqa: E402

T = 512


def one_case(checkpointing, batch, steps, quick):
    from npplm import runtime
    from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
    from npplm.training import AdamW, clip_grad_norm, decay_groups
    from npplm.training.memory import rss_bytes

    runtime.configure()

    def training_step(config, batch):
        model = GPT2LMHeadModel(config, seed=0)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        opt = AdamW([g for g in decay_groups(model, 0.1) if g["params"]], lr=1e-4)
        for i, p in enumerate(opt.params):  # the moments now: the step's peak is its own
            opt.state[i] = {"exp_avg": np.zeros_like(p.data),
                            "exp_avg_sq": np.zeros_like(p.data)}
        ids = np.random.default_rng(0).integers(0, config.vocab_size, (batch, T))

        def step():
            model(ids, labels=ids).loss.backward()
            clip_grad_norm(opt.params, 1.0)
            opt.step()
            opt.zero_grad()

        return model, step

    # Compile every kernel first on a tiny model (Numba compiles per dtype, not shape), so
    # that the compiler's memory is counted before the step, not in it.
    training_step(GPTConfig.tiny(n_positions=T), 1)[1]()
    config = GPTConfig.tiny(n_positions=T) if quick else GPTConfig.gpt2(n_positions=T)
    model, step = training_step(config, batch)
    before = rss_bytes()
    step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"weights_bytes": sum(p.data.nbytes for p in model.parameters()),
            "step_peak_bytes": peak - before, "step_s": float(np.median(times))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a tiny model: a smoke test")
    parser.add_argument("--case", choices=("plain", "checkpointed"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print("RESULT " + json.dumps(one_case(args.case == "checkpointed", args.batch,
                                              args.steps, args.quick)), flush=True)
        return
    results = {}
    for case in ("plain", "checkpointed"):
        command = [sys.executable, __file__, "--case", case, "--batch", str(args.batch),
                   "--steps", str(args.steps)] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"{case} failed:\n{done.stderr}")
        results[case] = json.loads(lines[0][len("RESULT "):])
    plain, ck = results["plain"], results["checkpointed"]
    name = "tiny GPT-2" if args.quick else "GPT-2 124M"
    print(f"{name}, T = {T}, batch {args.batch}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}; weights {plain['weights_bytes'] / 2**20:.0f} MiB")
    print(f"{'':14s} {'step peak (MiB)':>16s} {'s/step':>8s}")
    for case in ("plain", "checkpointed"):
        r = results[case]
        print(f"{case:14s} {r['step_peak_bytes'] / 2**20:16.0f} {r['step_s']:8.2f}")
    print(f"memory {plain['step_peak_bytes'] / ck['step_peak_bytes']:.2f}x less, time "
          f"{ck['step_s'] / plain['step_s']:.2f}x (targets: >= 2x less, <= 1.4x)")


if __name__ == "__main__":
    main()
