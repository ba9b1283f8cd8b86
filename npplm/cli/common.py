"""What every command shares: the help format, flag types, errors, naming a model.

Errors, one style for every command:
    UsageError   a flag's value, or a combination of flags, is wrong: exit status 2
    anything else that goes wrong while working (a file that cannot be read, a run that
                 diverged): exit status 1
Either way one line, `npplm COMMAND: error: MESSAGE`; --debug (or NPPLM_DEBUG=1) shows the
traceback instead. Library errors raised while the arguments are checked (inside
`checking_arguments()`) count as usage errors.

A model is named the same way by every command that reads one: a run folder (its newest
checkpoint), a checkpoint folder, a Hugging Face folder, or a .gguf file
(npplm.training.run_folder.resolve_model).
"""

import argparse
import contextlib
import math
import sys

HELP_WIDTH = 100  # usage lines wrap here whatever the terminal, so the README can quote them


class UsageError(Exception):
    """A wrong flag value or combination: one line, exit status 2."""


@contextlib.contextmanager
def checking_arguments():
    """Inside this block, a ValueError or FileNotFoundError is a usage error."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from e


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every flag's help, descriptions kept as written, a fixed width."""

    def __init__(self, prog):
        super().__init__(prog, width=HELP_WIDTH, max_help_position=32)

    def _get_help_string(self, action):
        """The help, with "(default: X)" added unless the help already says its default, or
        there is none to say (None, a flag that is off)."""
        if "(default" in (action.help or "") or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse's parser with one-line errors: `npplm train: error: ... (see --help)`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_command(sub, name, help, description, parents=()):
    """A sub-command parser with the shared format and the --debug flag."""
    parser = sub.add_parser(name, help=help, description=description,
                            formatter_class=HelpFormatter, parents=list(parents))
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the traceback (also: NPPLM_DEBUG=1)")
    return parser


# --- flag types: argparse turns their ValueError into a usage error naming the flag --------

def positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def positive_float(text):
    value = finite_float(text)
    if value <= 0:
        raise ValueError(text)
    return value


def non_negative_float(text):
    value = finite_float(text)
    if value < 0:
        raise ValueError(text)
    return value


def probability(text):
    """A number in (0, 1]."""
    value = finite_float(text)
    if not 0 < value <= 1:
        raise ValueError(text)
    return value


positive_int.__name__ = "positive integer"  # argparse names the type in its message
non_negative_int.__name__ = "integer >= 0"
finite_float.__name__ = "finite number"
positive_float.__name__ = "positive number"
non_negative_float.__name__ = "number >= 0"
probability.__name__ = "number in (0, 1]"


# --- models -------------------------------------------------------------------------------

def load_model(path):
    """(model, tokenizer) of the model `path` names (see the module docstring), saying on
    stderr what is loaded."""
    from npplm.training import run_folder

    return run_folder.load_model(path, log=say)


def say(message):
    """A status line on stderr, apart from the output."""
    print(message, file=sys.stderr, flush=True)
