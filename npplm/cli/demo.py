"""`npplm demo`: thin over npplm.training.char_mlp."""

from npplm.cli.common import add_command, positive_float, positive_int


def add_parser(sub):
    p = add_command(sub, "demo", "train a character-level MLP LM on the stdlib source",
                    "Train Bengio et al.'s (2003) neural probabilistic language model on "
                    "characters of the Python standard library: the engine and the layers "
                    "end to end in a few seconds. Prints the validation perplexity.")
    p.add_argument("--steps", type=positive_int, default=2000, help="optimizer updates")
    p.add_argument("--batch", type=positive_int, default=256, help="examples per update")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="learning rate")
    p.add_argument("--seed", type=int, default=0, help="seeds the data and the model")
    p.set_defaults(func=run_command)
    return p


def run_command(args):
    from npplm.training import char_mlp

    _, ppl = char_mlp.train(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed)
    print(f"final validation perplexity: {ppl:.2f} (a uniform guess is "
          f"{len(char_mlp.ALPHABET)})")
