"""The `npplm` command: a module per command group, each thin over a library API.

    npplm train      train.py      pre-train any family (npplm.training.pretrain)
    npplm eval       evaluate.py   each family's held-out metric (npplm.training.held_out)
    npplm scaling    scaling.py    a sweep of tiny GPT-2s and two scaling-law fits
    npplm demo       demo.py       a character-level MLP LM (npplm.training.char_mlp)
    npplm generate   generate.py   continue a prompt (npplm.inference)
    npplm chat       generate.py   chat through a model's template (npplm.inference)
    npplm sft        align.py      supervised fine-tuning (npplm.alignment)
    npplm reward     align.py      a reward model on preference pairs (npplm.alignment)
    npplm dpo        align.py      direct preference optimisation (npplm.alignment)
    npplm ppo        rlhf.py       RLHF with PPO against a judge (npplm.alignment)
    npplm serve      serve.py      OpenAI's chat API over HTTP (npplm.serving)
    npplm quantize   quantize.py   a LLaMA or Qwen2 model to a GGUF file (npplm.models)
    npplm info       info.py       versions, backend, device, primitives
    common.py        the help format, flag types, the error style, naming a model

Errors: one line, `npplm COMMAND: error: MESSAGE`; exit status 2 for a usage error (a
wrong flag value or combination), 1 for a failure while working, 130 on Ctrl-C. --debug or
NPPLM_DEBUG=1 shows the traceback instead.
"""

import os
import sys

from npplm.cli import (
    align,
    common,
    demo,
    evaluate,
    generate,
    info,
    quantize,
    rlhf,
    scaling,
    serve,
    train,
)
from npplm.cli.common import HelpFormatter, Parser, UsageError
from npplm.distributed.world import launched_by_mpiexec

DESCRIPTION = """\
npplm: the pre-trained language models that shaped the field, in readable NumPy.

  npplm train       pre-train a model (default: a small GPT-2 on Python's stdlib source)
  npplm eval        score a model on held-out text with its family's metric
  npplm scaling     fit scaling laws to a sweep of tiny GPT-2s
  npplm demo        train a character-level MLP language model
  npplm generate    continue a prompt (GPT, LLaMA, T5, GLM; default SmolLM2)
  npplm chat        talk to an instruction-tuned model (default SmolLM2)
  npplm sft         supervised fine-tuning on prompt -> answer pairs
  npplm reward      train a reward model on preference pairs
  npplm dpo         direct preference optimisation on preference pairs
  npplm ppo         RLHF: PPO against a judge or a reward model
  npplm serve       serve a model behind OpenAI's chat API (default SmolLM2)
  npplm quantize    write a LLaMA or Qwen2 model to a quantised GGUF file (llama.cpp's)
  npplm info        versions, backend, device and the registered primitives

A model is named the same way everywhere: a run folder, a checkpoint folder, a Hugging Face
folder or a .gguf file. `npplm COMMAND --help` shows each command's flags and defaults."""


def build_parser():
    """The `npplm` parser with every command."""
    parser = Parser(prog="npplm", description=DESCRIPTION, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    scaling.add_parser(sub)
    demo.add_parser(sub)
    generate.add_parsers(sub)
    align.add_parsers(sub)
    rlhf.add_parser(sub)
    serve.add_parser(sub)
    quantize.add_parser(sub)
    info.add_parser(sub)
    for command in sub.choices.values():
        name_numbers(command)
    return parser


def name_numbers(parser):
    """Integer flags read `--steps N`, other numbers `--lr X`, unless they name themselves."""
    integers = (int, common.positive_int, common.non_negative_int)
    for action in parser._actions:
        if action.metavar is None and action.type is not None:
            action.metavar = "N" if action.type in integers else "X"


def synopsis():
    """Every command's usage line, as `npplm COMMAND --help` prints it: the README's
    "Command line" block is tested against this text."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    lines = []
    for parser in sub.choices.values():
        usage = parser.format_usage().removeprefix("usage: ").rstrip()
        lines += [line.removeprefix(" " * len("usage: ")) for line in usage.splitlines()]
    return "\n".join(lines)


def main(argv=None):
    """Run `npplm ARGS`; returns the exit status (0 on success)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error argparse printed (2)
        return e.code
    debug = args.debug or os.environ.get("NPPLM_DEBUG", "") not in ("", "0")
    from npplm import runtime

    runtime.configure()  # the allocator and thread-pool settings the benchmarks assume
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given (train --nproc)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\nnpplm {args.command}: interrupted (a training run resumes where it stopped "
              "with the same command)", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; the traceback behind --debug
        if debug:
            raise
        usage = isinstance(e, UsageError)
        kind = "" if usage or _named(e) else f"{type(e).__name__}: "
        hint = "" if usage else " (--debug shows the traceback)"
        message = f"npplm {args.command}: error: {kind}{e}{hint}"
        if launched_by_mpiexec():
            return _failed_on_a_rank(e, message, 2 if usage else 1)
        print(message, file=sys.stderr)
        return 2 if usage else 1
    return status or 0


def _failed_on_a_rank(error, message, status):
    """An error on one of several MPI ranks. A usage error (the same on every rank) and rank
    0's error that the others already know (world.telling_the_others) are printed once, by
    rank 0, and every rank returns; any other ends the whole job (MPI_Abort) with the rank
    named, or the other ranks would wait forever."""
    from npplm.distributed import DistributedError, current_world

    world = current_world()
    if isinstance(error, DistributedError) and not world.is_main:
        return status  # rank 0 prints why
    if isinstance(error, UsageError):  # every rank has the same arguments: rank 0 says it
        if world.is_main:
            print(message, file=sys.stderr)
        return status
    if getattr(error, "told_the_other_ranks", False):
        print(message, file=sys.stderr)
        return status
    world.abort(message.replace(": error:", f": error on rank {world.rank}:", 1), status)


SELF_EXPLAINING = (ValueError, OSError, RuntimeError, MemoryError)  # what checks raise


def _named(error):
    """Whether an error's message says what it is by itself: npplm's own errors, and the
    standard ones its checks raise (ValueError, FileNotFoundError, ...). Any other (a
    KeyError, an AttributeError) is shown with its type: it is likely a bug."""
    if type(error).__module__.startswith("npplm"):
        return True
    return type(error).__module__ == "builtins" and isinstance(error, SELF_EXPLAINING)
