"""`npplm train` and `npplm eval` end to end, a real kill and resume, and bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from npplm import cli

# A run small enough for a test: one narrow layer, a 300-id tokenizer, 40k characters.
SMALL = ["--set", "n_layer=1", "n_embd=16", "n_head=2", "--max-chars", "40000",
         "--vocab-size", "300", "--block-size", "32", "--batch-size", "4", "--lr", "1e-2",
         "--warmup", "2", "--eval-batches", "2", "--quiet"]


def train(tmp_path, *extra, name="run"):
    return ["train", "--out", str(tmp_path / name), *SMALL, *extra]


def records(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").open()]


def test_train_then_eval(tmp_path, capsys):
    assert cli.main(train(tmp_path, "--steps", "30", "--eval-every", "15", "--save-every",
                          "15")) == 0
    out = capsys.readouterr().out
    assert "validation perplexity:" in out
    evals = [r for r in records(tmp_path / "run") if "val_ppl" in r]
    assert [r["step"] for r in evals] == [0, 15, 30]
    assert evals[-1]["val_ppl"] < 0.5 * evals[0]["val_ppl"]  # it learned
    assert evals[0]["val_ppl"] > 100  # it started near a uniform guess over 300 ids
    assert isinstance(evals[-1]["sample"], str) and evals[-1]["sample"]
    for name in ("loss.png", "run.json", "tokenizer/tokenizer.json",
                 "checkpoints/step-000030/tokenizer.json"):
        assert (tmp_path / "run" / name).is_file()
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "run"), "--max-chars", "20000"]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "bits/byte" in out


@pytest.mark.slow
def test_killed_run_resumes_with_identical_losses(tmp_path):
    """SIGKILL a real `npplm train` process after its second checkpoint, run the same
    command again, and compare every logged loss with an uninterrupted run."""
    steps = 200  # enough that the run is still going when its second checkpoint appears

    def command(name):
        return [sys.executable, "-m", "npplm", *train(tmp_path, "--steps", str(steps),
                                                      "--save-every", "4", "--eval-every",
                                                      "100", "--log-every", "1", name=name)]

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(command("whole"), check=True, capture_output=True, env=env, timeout=300)
    victim = subprocess.Popen(command("killed"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env)
    checkpoint = tmp_path / "killed" / "checkpoints" / "step-000008"
    deadline = time.time() + 240
    while not checkpoint.is_dir() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert checkpoint.is_dir(), "the run never reached its second checkpoint"
    done = [r["step"] for r in records(tmp_path / "killed") if "loss" in r]
    assert done[-1] < steps, "the run finished before it was killed"
    resumed = subprocess.run(command("killed"), capture_output=True, text=True, env=env,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    whole, killed = records(tmp_path / "whole"), records(tmp_path / "killed")
    strip = ("tokens_per_s", "sample")
    assert [{k: v for k, v in r.items() if k not in strip} for r in killed] == \
        [{k: v for k, v in r.items() if k not in strip} for r in whole]
    assert len([r for r in whole if "loss" in r]) == steps


def test_bad_input_is_named_in_one_line(tmp_path, npplm):
    cases = [
        (train(tmp_path, "--data", str(tmp_path / "nowhere.txt")), 2, "nowhere.txt"),
        (train(tmp_path, "--preset", "gpt9"), 2, "'gpt9' is not a GPTConfig preset.*gpt2_medium"),
        (["train", "--set", "n_layers=2", "--out", str(tmp_path / "x")], 2,
         "--set n_layers: GPTConfig has no such field"),
        (train(tmp_path, "--model", "gpt", "--objective", "mlm"), 2, "does not train gpt"),
        (["train", "--preset", "gpt3_175b", "--max-chars", "40000", "--vocab-size", "300",
          "--out", str(tmp_path / "y")], 1, "parameters need about .* GiB .* this machine has"),
    ]
    for argv, code, message in cases:
        result = npplm(*argv)
        assert result.code == code, (argv, result.err)
        assert re.search(message, result.err), result.err
        assert len(result.err.strip().splitlines()) == 1, result.err
    short = tmp_path / "short.txt"
    short.write_text("def f(): pass\n" * 3)
    result = npplm(*train(tmp_path, "--data", str(short), "--vocab-size", "260"))
    assert result.code == 1 and "fewer than one block of block_size=32" in result.err


def test_another_model_in_the_same_folder_is_refused(tmp_path, npplm):
    assert npplm(*train(tmp_path, "--steps", "2", "--eval-every", "0", "--save-every", "0")
                 ).code == 0
    result = npplm("train", "--out", str(tmp_path / "run"), *SMALL[:1], "n_layer=2",
                   "n_embd=16", "n_head=2", *SMALL[4:], "--steps", "2")
    assert result.code == 1 and re.search("holds another run.*overrides", result.err)
    assert npplm(*train(tmp_path, "--steps", "2", "--overwrite", "--set", "n_layer=2",
                        "n_embd=16", "n_head=2")).code == 0  # --overwrite starts again
