"""The GLM-130B stability experiment, small: the same GLM trained in float16 with plain
Post-LN, Pre-LN, Post-LN + DeepNorm, and Post-LN + DeepNorm + the embedding gradient
shrink, at a learning rate high enough to provoke trouble.

    .venv/bin/python benchmarks/glm_stability.py [--steps 200] [--lr 1e-2] [--layers 6]
                                                  [--batch 8] [--quick] [--plot PATH]

GLM-130B (Zeng et al., arXiv:2210.02414, section 3 and figure 3) trained in float16 ("the
forward in FP16, the update in FP32") and fought loss spikes. It kept Post-LN, which
generalises better but diverges more easily than Pre-LN, and made it stable with DeepNorm
(the residual times alpha = (2N)^(1/4) before each LayerNorm, some weights initialised
with gain beta = (8N)^(-1/4)), then with the embedding-layer gradient shrink (EGS: the word
embedding's lookup passes only 0.1 of its gradient), which removed the remaining spikes.

Here: `npplm train`'s GLM recipe (blank infilling on the standard library's source, a
byte-level BPE of 2048 ids, width 128, 4 heads) made deeper (`--layers`), trained from the
same seed and the same batches once per variant, each in fp16 with dynamic loss scaling
(npplm/training/precision.py), AdamW, a short warmup and clipping at 1.0:

    post-LN              deepnorm=False
    pre-LN               layernorm_position="pre"
    post-LN + DeepNorm   deepnorm=True (GLM-130B's architecture)
    + EGS                deepnorm=True, embedding_grad_scale=0.1 (GLM-130B's recipe)
    130B's DeepNorm + EGS  the same with GLM-130B's own constants, alpha = (2N)^(1/2),
                         beta = (2N)^(-1/2) (DeepNet's table, above, is the source's)
    GLM-130B             that, with the embedding LayerNorm, RoPE and GeGLU
                         (GLMConfig.glm_130b's switches)

Reported per variant: spikes (updates whose training loss lies more than 4 standard
deviations above the previous 20 updates', counted after the fact), updates skipped for
inf/NaN fp16 gradients (the loss scaler's), the last 20 updates' mean training loss, the
validation loss at the end, and whether the run stopped (a non-finite gradient norm
without an inf, which the trainer refuses to apply). `--plot` draws the loss curves;
`--variants a,b` runs only those (the others' numbers do not change: same seed, same batches).
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import numpy as np  # noqa: E402

VARIANTS = {
    "post-LN": dict(deepnorm=False, embedding_grad_scale=1.0),
    "pre-LN": dict(layernorm_position="pre", deepnorm=False, embedding_grad_scale=1.0),
    "post-LN + DeepNorm": dict(deepnorm=True, embedding_grad_scale=1.0),
    "+ EGS": dict(deepnorm=True, embedding_grad_scale=0.1),
    # GLM-130B's own DeepNorm constants, alpha = (2N)^(1/2), beta = (2N)^(-1/2), with EGS
    "130B's DeepNorm + EGS": dict(deepnorm=True, deepnorm_constants="glm-130b",
                                  embedding_grad_scale=0.1),
    # and the whole GLM-130B shape: + the embedding LayerNorm, RoPE, GeGLU (F = 8/3 C)
    "GLM-130B": dict(deepnorm=True, deepnorm_constants="glm-130b", embedding_grad_scale=0.1,
                     embedding_layernorm=True, position_encoding="rotary", hidden_act="geglu",
                     intermediate_size=None),
}


def spikes(losses, window=20, z=4.0):
    """Updates whose loss is more than z standard deviations above the `window` before."""
    count = 0
    for i in range(window, len(losses)):
        before = losses[i - window:i]
        if np.isfinite(losses[i]) and losses[i] > before.mean() + z * max(before.std(), 1e-6):
            count += 1
    return count


def train(run, variant, args):
    from npplm.models.glm import GLMForConditionalGeneration
    from npplm.training import TrainConfig, Trainer, TrainingDiverged

    config = dataclasses.replace(run.model.config, num_layers=args.layers,
                                 **VARIANTS[variant])
    model = GLMForConditionalGeneration(config, seed=0)
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr,
                               warmup_steps=args.warmup, eval_every=0, save_every=0,
                               log_every=1, eval_batches=8, precision="fp16", seed=0)
    trainer = Trainer(model, run.collator, run.train, run.val, train_config,
                      perplexity=False, log=lambda *a: None)
    stopped = None
    started = time.perf_counter()
    try:
        trainer.fit()
    except TrainingDiverged as e:
        stopped = str(e).split(";")[0]
    seconds = time.perf_counter() - started
    losses = np.array([r["loss"] for r in trainer.history if "loss" in r])
    val = trainer.evaluate() if stopped is None else float("nan")
    return {"losses": losses, "spikes": spikes(losses), "skipped": trainer.scaler.skipped_steps,
            "final": float(np.nanmean(losses[-20:])), "val": val, "stopped": stopped,
            "seconds": seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8, help="blocks a step")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--plot", help="write the loss curves to this PNG")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    chosen = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if args.quick:
        args.steps, args.layers, args.warmup = 25, 2, 2
    from npplm import runtime
    from npplm.training.recipe import build_run

    runtime.configure()
    run = build_run("glm", objective="blank", max_chars=300_000 if args.quick else 2_000_000,
                    seed=0, log=lambda *a: None)
    print(f"GLM, {args.layers} layers, width {run.model.config.hidden_size}; fp16 with loss "
          f"scaling; {args.steps} steps of {args.batch} blocks, AdamW lr {args.lr:g}, warmup "
          f"{args.warmup}, clipping 1.0; {time.strftime('%Y-%m-%d')}")
    results = {}
    for variant in chosen:
        results[variant] = r = train(run, variant, args)
        status = "" if r["stopped"] is None else f"  stopped: {r['stopped']}"
        print(f"{variant:20s} spikes {r['spikes']:3d}  skipped {r['skipped']:3d}  last-20 loss "
              f"{r['final']:.3f}  validation {r['val']:.3f}  ({r['seconds']:.0f} s){status}",
              flush=True)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for variant, r in results.items():
            ax.plot(np.arange(1, len(r["losses"]) + 1), r["losses"], lw=1, label=variant)
        ax.set_xlabel("update")
        ax.set_ylabel("training loss (blank infilling)")
        ax.set_title(f"GLM, {args.layers} layers, fp16, lr {args.lr:g}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
