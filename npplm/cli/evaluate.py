"""`npplm eval`: thin over npplm.training.held_out.evaluate."""

from npplm.cli.common import add_command, checking_arguments, positive_int

DESCRIPTION = """\
Score a model on held-out text with its family's metric: perplexity and bits per byte for
causal LMs (GPT, LLaMA; a sliding window, every token scored once), masked-LM loss and
pseudo-perplexity for encoders (BERT, RoBERTa, ALBERT), the objective's loss per target
token for T5 (span corruption) and GLM (blank infilling).

Without --data, a model from a run folder is scored on the run's own held-out split
(documents it validated on and never trained on); other models need --data."""


def add_parser(sub):
    p = add_command(sub, "eval", "score a model on held-out text (its family's metric)",
                    DESCRIPTION)
    p.add_argument("--model", "--checkpoint", dest="model", metavar="PATH", required=True,
                   help="a run folder, a checkpoint folder, a Hugging Face folder or a .gguf "
                        "file")
    p.add_argument("--data", metavar="PATH", help="a text file or a folder of them (default: "
                                                  "the run's held-out split)")
    p.add_argument("--max-chars", type=positive_int, help="score at most this many characters "
                                                          "(default: all)")
    p.add_argument("--window", type=positive_int,
                   help="causal LMs: tokens per forward pass, at least 2 (default: the "
                        "model's context)")
    p.add_argument("--stride", type=positive_int,
                   help="causal LMs: how far the window moves (default: window / 2)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="rows per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seeds the masks of MLM, T5 and GLM")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_command)
    return p


def run_command(args):
    from npplm.training.held_out import describe, evaluate

    with checking_arguments():
        if args.window is not None and args.window < 2:
            raise ValueError(f"--window {args.window} must be at least 2 tokens (one to read, "
                             "one to predict)")
        if args.window is not None and args.stride is not None and args.stride > args.window:
            raise ValueError(f"--stride {args.stride} exceeds --window {args.window}")
    result = evaluate(args.model, args.data, max_chars=args.max_chars, window=args.window,
                      stride=args.stride, batch_size=args.batch_size, seed=args.seed,
                      progress=not args.quiet)
    print(describe(result))
