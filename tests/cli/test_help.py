"""What `--help` promises: a description and defaults everywhere, and the README's
command synopses equal to the real usage lines."""

import pathlib
import re

import pytest

import npplm
from npplm import cli

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
COMMANDS = ("train", "eval", "scaling", "demo", "generate", "chat", "sft", "reward", "dpo",
            "ppo", "serve", "quantize", "info")


def subparsers():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    return sub.choices


def test_the_readme_synopsis_is_the_real_usage():
    block = re.search(r"<!-- synopsis: begin -->\n```\n(.*?)\n```\n<!-- synopsis: end -->",
                      README.read_text(), re.S)
    assert block, "README.md has no synopsis block between the markers"
    assert block.group(1) == cli.synopsis(), (
        "README.md's command synopsis drifted from the CLI; paste this between the markers:\n"
        + cli.synopsis())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_and_shows_its_defaults(command):
    parser = subparsers()[command]
    assert parser.description and len(parser.description) > 40
    text = parser.format_help()
    for action in parser._actions:
        if action.help in (None, "==SUPPRESS=="):
            pytest.fail(f"npplm {command} {action.option_strings}: no help text")
        if action.default not in (None, False, "==SUPPRESS==") and action.dest != "help":
            shown = (" ".join(map(str, action.default)) if isinstance(action.default, list)
                     else str(action.default))
            assert f"(default: {shown}" in " ".join(text.split()).replace("[", "").replace(
                "]", "").replace(",", "") or f"(default: {action.default}" in " ".join(
                text.split()), (command, action.dest)


def test_train_help_names_the_default_folder_as_it_is():
    text = " ".join(subparsers()["train"].format_help().split())
    assert "runs/FAMILY-OBJECTIVE, OBJECTIVE being 'default' without --objective" in text


def test_the_package_docstring_describes_the_package():
    assert "chapter" not in npplm.__doc__
    assert "cli/" in npplm.__doc__ and "inference/" in npplm.__doc__
