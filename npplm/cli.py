"""The `npplm` command line.

    npplm demo        train a character-level MLP language model on Python's stdlib source
    npplm info        versions, backend, device, and the registered primitives
"""

import argparse
import sys


def cmd_demo(args):
    from npplm import char_mlp

    _, ppl = char_mlp.train(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed)
    print(f"final validation perplexity: {ppl:.2f} (a uniform guess is {len(char_mlp.ALPHABET)})")


def cmd_info(args):
    import numpy

    import autograd
    import gpu
    import npplm

    print(f"npplm {npplm.__version__}, numpy {numpy.__version__}, backend {autograd.BACKEND}")
    print(f"CUDA device: {gpu.device_name() or 'none'}")
    print(f"{len(autograd.REGISTRY)} primitives: {', '.join(autograd.REGISTRY)}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npplm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a character MLP LM on the Python stdlib source")
    demo.add_argument("--steps", type=int, default=2000)
    demo.add_argument("--batch", type=int, default=256)
    demo.add_argument("--lr", type=float, default=3e-3)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", help="versions, backend, device and primitives")
    info.set_defaults(func=cmd_info)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
