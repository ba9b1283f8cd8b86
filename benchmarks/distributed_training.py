"""Data parallelism on MPI ranks against one process: tokens/s, all-reduce bandwidth,
overlap, ZeRO-1's memory, the GPipe pipeline, and a projection to larger clusters.

    .venv/bin/python benchmarks/distributed_training.py [--ranks 2] [--steps 6] [--quick]

The step is issue 7's GPT-2 (benchmarks/bench_training.py: 6 layers, width 384, T = 256,
vocabulary 8192, dropout off) at a global batch of 8 sequences, trained by npplm's own
Trainer (forward, backward, clipping at 1.0, AdamW), in three ways, each rank with one
thread (OMP/OpenBLAS/Numba):

    one process      the whole batch of 8                         (the baseline)
    data parallel    N ranks x 8/N rows, gradients summed in 25 MB buckets during backward
    ZeRO-1           the same, AdamW's moments sharded (reduce-scatter + all-gather)
    GPipe            N stages x the blocks, M = 8 micro-batches of 1 sequence

The script runs the baseline in this process, then starts itself under `mpiexec -n N`
(`--rank-side`) for the rest; rank 0 prints one JSON line that this side reads.

Reported: tokens/s and the ratio to the baseline; the all-reduce of every gradient
(13.9M float32) alone: its time and bandwidth (algorithm: bytes / time; bus: x 2 (N-1)/N,
what each rank's link carries in a ring); overlap: 1 - (the data-parallel step - the same
step on the same ranks with the buckets filled but never sent) / (the all-reduce alone);
ZeRO-1's optimizer bytes per rank; the pipeline's bubble (N-1)/(M+N-1) and throughput.

Then the alpha-beta model of a ring all-reduce,

    t(N) = 2 (N-1) alpha + 2 (N-1)/N * bytes / beta,

projects data-parallel efficiency = compute / (compute + exposed communication) at 8, 64
and 512 ranks on a typical cluster network (alpha = 5 us, beta = 12.5 GB/s: 100 Gb/s
InfiniBand), with each rank's compute as measured here (weak scaling: 4 sequences a rank)
and 100 times faster (a GPU), with no overlap, with the fraction of the all-reduce's bytes
this machine finished during backward overlapped, and with all of it overlapped.

Why the time is not hidden here although half the bytes travel during backward: between
two processes on one machine, MPICH's all-reduce is memory copies that the ranks' own cores
make inside MPI calls (the polls), and each rank has one core; moving the copies into
backward moves their cost there. On a network the NIC moves the bytes (DMA, RDMA) while
the cores compute, which is what the projection assumes.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import numpy as np  # noqa: E402

from benchmarks.bench_training import PRESETS, gpt_config  # noqa: E402

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
ALPHA, BETA = 5e-6, 12.5e9  # a typical cluster link: latency (s), bandwidth (bytes/s)
MICRO_BATCHES = 8


def blocks(preset, n=64, seed=0):
    *_, V, T, _ = PRESETS[preset]
    return list(np.random.default_rng(seed).integers(0, V, (n, T)))


def clm(examples, rng):
    x = np.stack(examples)
    return {"input_ids": x, "labels": x}


def trainer(preset, world, zero=False):
    from npplm.models.gpt import GPT2LMHeadModel
    from npplm.training import TrainConfig, Trainer

    *_, B = PRESETS[preset]
    config = TrainConfig(steps=1000, batch_size=B, lr=1e-4, warmup_steps=0, betas=(0.9, 0.95),
                         eval_every=0, save_every=0, zero=zero)
    model = GPT2LMHeadModel(gpt_config(preset), seed=0)
    return Trainer(model, clm, blocks(preset), config=config, world=world, log=lambda *a: None)


def timed_steps(step, steps, warmup=2):
    """Median seconds of `steps` calls of step() after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    if not steps:
        return None
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def tokens_per_step(preset):
    *_, T, B = PRESETS[preset]
    return T * B


# --- the side mpiexec starts -------------------------------------------------------------
def rank_side(preset, steps):
    from npplm import runtime
    from npplm.distributed import GradientBuckets, SingleProcess, current_world

    runtime.configure()
    world = current_world()
    out = {"ranks": world.size}

    # the all-reduce of every gradient, alone (blocking), as the buckets would carry it
    t = trainer(preset, world)
    n = sum(p.size for p in t.optimizer.params)
    flat = np.ones(n, np.float32)
    world.allreduce(flat)
    world.barrier()
    times = []
    for _ in range(5):
        world.barrier()
        started = time.perf_counter()
        world.allreduce(flat)
        times.append(time.perf_counter() - started)
    out["allreduce_s"], out["allreduce_bytes"] = float(np.median(times)), int(flat.nbytes)

    # data parallel: the Trainer's own step; the buckets' waits after backward
    for p in t.optimizer.params:
        world.broadcast(p.data)
    timed_steps(t.train_step, 0)  # the two warm-up steps
    t.buckets.wait_s = 0.0
    t.buckets.bytes_sent = t.buckets.bytes_done_in_backward = 0
    out["dp_step_s"] = timed_steps(t.train_step, steps, warmup=0)
    out["dp_wait_s"] = t.buckets.wait_s / steps
    out["dp_done_in_backward"] = t.buckets.bytes_done_in_backward / t.buckets.bytes_sent
    out["n_buckets"] = len(t.buckets.buckets)
    out["n_params"] = int(n)
    # the same step on every rank at once, its buckets filled but never sent: what the
    # step costs without communication, on cores as busy as above
    t.buckets = GradientBuckets(t.optimizer.params, SingleProcess())
    out["dp_no_comm_step_s"] = timed_steps(t.train_step, steps)
    del t

    # ZeRO-1
    z = trainer(preset, world, zero=True)
    out["zero_step_s"] = timed_steps(z.train_step, steps)
    out["zero_state_bytes"] = z.optimizer.state_nbytes
    out["plain_state_bytes"] = 2 * 4 * int(n)
    del z

    # GPipe
    out.update(pipeline_side(preset, world, steps))
    if world.is_main:
        print("RESULT " + json.dumps(out), flush=True)


def pipeline_side(preset, world, steps):
    from npplm.distributed.pipeline import GPipe
    from npplm.models.gpt import GPT2LMHeadModel
    from npplm.training import AdamW, decay_groups

    model = GPT2LMHeadModel(gpt_config(preset), seed=0)
    M = min(MICRO_BATCHES, PRESETS[preset][-1])
    pipe = GPipe(model, world, micro_batches=M)
    opt = AdamW([g for g in decay_groups(pipe.stage, 0.1) if g["params"]], lr=1e-4,
                betas=(0.9, 0.95))
    ids = np.stack(blocks(preset)[:PRESETS[preset][-1]])
    batch = {"input_ids": ids, "labels": ids}

    def step():
        pipe.step(batch)
        pipe.clip_grad_norm(1.0)
        opt.step()
        opt.zero_grad()

    seconds = timed_steps(step, steps)
    return {"pipe_step_s": seconds, "bubble": pipe.bubble, "micro_batches": M,
            "pipe_wait_s": world.sum(pipe.wait_s) / world.size}


# --- the driver ----------------------------------------------------------------------------
def projection(compute_s, nbytes, overlap):
    """Data-parallel efficiency compute / (compute + exposed all-reduce) at 8, 64, 512 ranks,
    for a rank as fast as here and one 100x faster, exposing all of the ring all-reduce
    ("none"), the part this machine did not finish during backward ("as here"), or only
    what outlasts the compute ("all")."""
    rows = []
    for N in (8, 64, 512):
        ring = 2 * (N - 1) * ALPHA + 2 * (N - 1) / N * nbytes / BETA
        row = {"ranks": N, "allreduce_s": ring}
        for name, c in (("cpu", compute_s), ("gpu", compute_s / 100)):
            row[f"{name}_none"] = c / (c + ring)
            row[f"{name}_as_here"] = c / (c + (1 - overlap) * ring)
            row[f"{name}_all"] = c / max(c, ring)
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per case")
    parser.add_argument("--preset", default="gpt2-6L-384", choices=sorted(PRESETS))
    parser.add_argument("--quick", action="store_true", help="a smoke test: the tiny preset")
    parser.add_argument("--rank-side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = "tiny" if args.quick else args.preset
    steps = 2 if args.quick else args.steps
    if args.rank_side:
        return rank_side(preset, steps)
    if os.environ.get("OMP_NUM_THREADS") != "1":  # the baseline gets one thread too
        os.environ.update(ONE_THREAD)
        os.execv(sys.executable, [sys.executable, *sys.argv])

    from npplm import runtime
    from npplm.distributed import SingleProcess
    from npplm.distributed.launch import find_mpiexec

    runtime.configure()
    print(f"{os.cpu_count()} cores; {args.ranks} ranks x 1 thread against 1 process x 1 "
          f"thread; preset {preset}, global batch {PRESETS[preset][-1]}; "
          f"{time.strftime('%Y-%m-%d')}")
    base = trainer(preset, SingleProcess())
    one_s = timed_steps(base.train_step, steps)
    del base
    command = [find_mpiexec(), "-n", str(args.ranks), sys.executable, __file__, "--rank-side",
               "--preset", preset, "--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ,
                                                                        **ONE_THREAD})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"the ranks failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    r = json.loads(lines[0][len("RESULT "):])
    tokens = tokens_per_step(preset)
    N = r["ranks"]

    def rate(seconds):
        return tokens / seconds

    print(f"\n{'':28s} {'s/step':>8s} {'tokens/s':>9s} {'x one process':>14s}")
    for name, s in (("one process", one_s), (f"data parallel ({N} ranks)", r["dp_step_s"]),
                    (f"ZeRO-1 ({N} ranks)", r["zero_step_s"]),
                    (f"GPipe ({N} stages, M={r['micro_batches']})", r["pipe_step_s"])):
        print(f"{name:28s} {s:8.3f} {rate(s):9.0f} {one_s / s:14.2f}")
    mb = r["allreduce_bytes"] / 1e6
    algo = r["allreduce_bytes"] / r["allreduce_s"]
    print(f"\nall-reduce of {r['n_params'] / 1e6:.1f}M float32 gradients ({mb:.1f} MB) alone: "
          f"{1e3 * r['allreduce_s']:.1f} ms, algorithm bandwidth {algo / 1e9:.2f} GB/s, bus "
          f"bandwidth {algo * 2 * (N - 1) / N / 1e9:.2f} GB/s")
    exposed = r["dp_step_s"] - r["dp_no_comm_step_s"]
    overlap = min(1.0, max(0.0, 1 - exposed / r["allreduce_s"]))
    print(f"data parallel: {r['n_buckets']} buckets, {100 * r['dp_done_in_backward']:.0f}% of "
          f"the bytes all-reduced before backward ended; {1e3 * r['dp_wait_s']:.1f} ms a step "
          "waiting for the rest after it")
    print(f"  the step {1e3 * exposed:+.1f} ms against the same step with no message "
          f"({r['dp_no_comm_step_s']:.3f} s): {100 * overlap:.0f}% of the all-reduce's time "
          "hidden")
    less = r["plain_state_bytes"] / r["zero_state_bytes"]
    print(f"ZeRO-1: optimizer state {r['zero_state_bytes'] / 1e6:.1f} MB a rank against "
          f"{r['plain_state_bytes'] / 1e6:.1f} MB ({less:.2f}x less)")
    print(f"GPipe: bubble (N-1)/(M+N-1) = {r['bubble']:.3f}; measured: each stage blocked "
          f"{1e3 * r['pipe_wait_s']:.0f} ms of its {1e3 * r['pipe_step_s']:.0f} ms step "
          f"({r['pipe_wait_s'] / r['pipe_step_s']:.3f}) waiting for messages")
    compute = r["dp_no_comm_step_s"]
    done = r["dp_done_in_backward"]
    print(f"\nprojection: a ring all-reduce of {mb:.1f} MB at alpha {ALPHA * 1e6:.0f} us, beta "
          f"{BETA / 1e9:.1f} GB/s; compute {compute:.2f} s a step a rank (here) or "
          f"{1e3 * compute / 100:.1f} ms (a device 100x faster); data-parallel efficiency with "
          f"no overlap, with {100 * done:.0f}% overlapped (as here), with all of it:")
    print(f"{'ranks':>6s} {'all-reduce':>11s}   {'here: none':>10s} {'as here':>8s} {'all':>6s}"
          f"   {'100x: none':>10s} {'as here':>8s} {'all':>6s}")
    for row in projection(compute, r["allreduce_bytes"], done):
        print(f"{row['ranks']:6d} {1e3 * row['allreduce_s']:8.1f} ms   {row['cpu_none']:10.3f} "
              f"{row['cpu_as_here']:8.3f} {row['cpu_all']:6.3f}   {row['gpu_none']:10.3f} "
              f"{row['gpu_as_here']:8.3f} {row['gpu_all']:6.3f}")


if __name__ == "__main__":
    main()
