"""16-bit training on the CPU: the default `npplm train` run in fp32, bf16 and fp16, and a
pure-bf16 run without float32 master weights, side by side.

    .venv/bin/python benchmarks/mixed_precision.py [--steps 200] [--quick]

The run is `npplm train`'s default recipe (a 4-layer GPT-2, width 128, a 2048-id byte-level
BPE on the standard library's source, 16 blocks of 128 tokens a step, AdamW at 3e-3 with
warmup and cosine decay), built once (recipe.build_run) and trained four times from the
same initial weights and data order:

    fp32        the reference
    bf16        bfloat16 forward and backward on float32 master weights
    fp16        float16 forward and backward, dynamic loss scaling, float32 masters
    pure bf16   the weights themselves bfloat16 and AdamW updating them in bfloat16 (its
                moments bfloat16 too): no master weights, as Micikevicius et al. warn

Printed (`--lr` sets the peak learning rate, 3e-3 by default as `npplm train`'s; `--variants`
picks the runs): the training loss at a few steps, the largest and the mean |loss - fp32's| over
the last 50 steps, the validation loss at the end, and seconds per step. The pure run shows
the stall: updates smaller than half a bfloat16 step (1/256 of a weight's magnitude) round
away, so as the learning rate decays, less and less of each update survives.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import numpy as np  # noqa: E402


def build(quick):
    from npplm.training.recipe import build_run

    return build_run("gpt", max_chars=200_000 if quick else 2_000_000, seed=0,
                     overrides={"n_layer": 1, "n_embd": 32} if quick else None,
                     log=lambda *a: None)


def train(run, precision, steps, lr, pure=False):
    """(training losses, final validation loss, seconds per step) of one run."""
    from npplm.training import TrainConfig, Trainer
    from npplm.training.precision import half_dtype

    model = run.model.__class__(run.model.config, seed=0)  # the same initial weights
    model.load_state_dict(run.model.state_dict())
    config = TrainConfig(steps=steps, batch_size=16, lr=lr, warmup_steps=min(30, steps),
                         eval_every=0, save_every=0, log_every=1, eval_batches=8,
                         precision="fp32" if pure else precision, seed=0)
    trainer = Trainer(model, run.collator, run.train, run.val, config, log=lambda *a: None)
    if pure:  # no masters: the model itself is 16-bit, AdamW's arithmetic too
        dtype = half_dtype(precision)
        for p in model.parameters():
            p.data = p.data.astype(dtype)
    started = time.perf_counter()
    history = trainer.fit()
    seconds = (time.perf_counter() - started) / steps
    if pure:
        for p in model.parameters():
            p.data = p.data.astype(np.float32)
    losses = np.array([r["loss"] for r in history if "loss" in r])
    return losses, trainer.evaluate(), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16", "fp16", "pure bf16"],
                        choices=["fp32", "bf16", "fp16", "pure bf16"])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args(argv)
    steps = 12 if args.quick else args.steps
    from npplm import runtime

    runtime.configure()
    run = build(args.quick)
    print(f"npplm train's default GPT-2 ({run.model.num_parameters():,} parameters), {steps} "
          f"steps of 16 x {run.train.shape[1]} tokens, peak lr {args.lr:g}; "
          f"{time.strftime('%Y-%m-%d')}")
    if "fp32" not in args.variants:
        args.variants.insert(0, "fp32")  # the reference
    results = {name: train(run, name.split()[-1], steps, args.lr, pure=name == "pure bf16")
               for name in args.variants}
    reference = results["fp32"][0]
    marks = sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps - 1})
    print(f"{'':10s} " + " ".join(f"{'step ' + str(m + 1):>9s}" for m in marks)
          + f" {'max|d| last 50':>15s} {'mean|d|':>8s} {'val loss':>9s} {'s/step':>7s}")
    for name, (losses, val, seconds) in results.items():
        tail = np.abs(losses[-50:] - reference[-50:])
        print(f"{name:10s} " + " ".join(f"{losses[m]:9.4f}" for m in marks)
              + f" {tail.max():15.4f} {tail.mean():8.4f} {val:9.4f} {seconds:7.3f}")


if __name__ == "__main__":
    main()
