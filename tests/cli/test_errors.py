"""One error style for every command: one line, exit status 2 for usage errors and 1 for
failures, the traceback behind --debug; and the input checks that had gaps."""

import os
import re
import subprocess
import sys

import pytest


def one_line(result):
    lines = [line for line in result.err.splitlines() if not line.startswith("loading ")]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("npplm"), result.err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["train", "--vocab-size", "0"], "--vocab-size: invalid positive integer value: '0'"),
    (["train", "--vocab-size", "100"], "--vocab-size 100 is too small for a gpt tokenizer"),
    (["train", "--weight-decay", "-1"], "--weight-decay: invalid number >= 0 value: '-1'"),
    (["train", "--lr", "nan"], "--lr: invalid positive number value: 'nan'"),
    (["train", "--warmup", "50", "--steps", "10"], "--warmup 50 exceeds --steps 10"),
    (["train", "--masking", "static", "--model", "gpt"], "applies to masked-LM objectives"),
    (["eval", "--model", "RUN", "--window", "1"], "--window 1 must be at least 2"),
    (["eval", "--model", "RUN", "--window", "0"], "--window: invalid positive integer"),
    (["eval", "--model", "RUN", "--window", "8", "--stride", "9"], "--stride 9 exceeds"),
    (["generate", "--model", "RUN", "--prompt", ""], "--prompt is empty"),
    (["generate", "--model", "RUN", "--prompt", "x", "--temperature", "nan"],
     "--temperature: invalid number >= 0 value: 'nan'"),
    (["generate", "--model", "RUN", "--prompt", "x", "--top-p", "1.5"],  # at temperature 0
     "--top-p: invalid number in \\(0, 1\\] value: '1.5'"),
    (["generate", "--model", "RUN", "--prompt", "x", "--top-k", "0"], "--top-k: invalid"),
    (["scaling", "--widths", "16", "32", "--steps", "10", "20"],
     "4 runs, but L\\(N, D\\) has 5 parameters"),
    (["scaling", "--widths", "32"], "at least two different widths"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_are_one_line_with_status_2(argv, message, npplm, family_runs):
    argv = [str(family_runs["gpt"]) if a == "RUN" else a for a in argv]
    result = npplm(*argv)
    assert result.code == 2, result.err
    assert re.search(message, one_line(result)), result.err


@pytest.mark.parametrize("argv, message", [
    (["eval", "--model", "nowhere"], "--model nowhere: no such file or folder"),
    (["generate", "--model", "nowhere", "--prompt", "x"], "no such file or folder"),
    (["eval", "--model", "BERT", "--window", "16"], "--window and --stride set a causal LM"),
])
def test_failures_are_one_line_with_status_1(argv, message, npplm, family_runs):
    argv = [str(family_runs["bert"]) if a == "BERT" else a for a in argv]
    result = npplm(*argv)
    assert result.code == 1, result.err
    assert message in one_line(result)
    assert "--debug shows the traceback" in result.err


def test_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, "-m", "npplm", "eval", "--model", str(tmp_path / "nowhere")]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    for extra, env in (([], {"NPPLM_DEBUG": "1"}), (["--debug"], {})):
        debug = subprocess.run(command + extra, capture_output=True, text=True, timeout=120,
                               env={**os.environ, **env})
        assert debug.returncode == 1
        assert "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_eval_without_a_run_needs_data(tmp_path, npplm, family_runs):
    checkpoint = next((family_runs["gpt"] / "checkpoints").glob("step-*"))
    copy = tmp_path / "model"
    copy.mkdir()
    for f in checkpoint.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    result = npplm("eval", "--model", copy)
    assert result.code == 1 and "is not from an npplm run" in result.err
    text = tmp_path / "text.txt"
    text.write_text("def f(x):\n    return x\n" * 40)
    result = npplm("eval", "--model", copy, "--data", text, "--quiet")
    assert result.code == 0 and f"on {text}" in result.out
