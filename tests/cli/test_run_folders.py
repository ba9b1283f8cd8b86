"""Run folders a typo cannot destroy: --overwrite, the lock, a left-over tokenizer."""

import json
import subprocess
import sys
import time

import pytest

from npplm.training.recipe import LAPTOP, resolve_request
from npplm.training.run_folder import RunFolderError, RunLock, clear
from tests.cli.conftest import TINY


def train(out, *extra):
    return ["train", "--out", out, *TINY, *extra]


def snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_overwrite_never_touches_a_folder_that_is_not_a_run(tmp_path, npplm):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "important.txt").write_text("x")
    result = npplm(*train(folder, "--overwrite"))
    assert result.code == 2
    assert "holds files that are not an npplm run (important.txt)" in result.err
    assert (folder / "important.txt").read_text() == "x"
    assert sorted(p.name for p in folder.iterdir()) == ["important.txt"]
    with pytest.raises(RunFolderError, match="not an npplm run folder"):
        clear(folder)  # the library refuses too
    assert (folder / "important.txt").is_file()


@pytest.mark.parametrize("bad", [["--data", "typo.txt"], ["--model", "bogus"],
                                 ["--steps", "0"], ["--preset", "gpt9"],
                                 ["--set", "n_layers=2"], ["--prompt", "x" * 5000]])
def test_a_bad_argument_with_overwrite_leaves_the_previous_run_whole(tmp_path, npplm, bad):
    run = tmp_path / "run"
    assert npplm(*train(run)).code == 0
    before = snapshot(run)
    result = npplm(*train(run, "--overwrite", *bad))
    assert result.code in (1, 2)
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert snapshot(run) == before


def test_overwrite_replaces_a_run(tmp_path, npplm):
    run = tmp_path / "run"
    assert npplm(*train(run)).code == 0
    result = npplm(*train(run, "--overwrite", "--model", "llama"))
    assert result.code == 0, result.err
    assert "removed the previous run" in result.out
    assert json.loads((run / "run.json").read_text())["recipe"]["family"] == "llama"


def test_a_folder_in_use_is_refused_with_the_holders_pid(tmp_path, npplm):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom npplm.training.run_folder import RunLock\n"
         f"with RunLock({str(run)!r}):\n    print('locked', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = npplm(*train(run))
        assert result.code == 1
        assert f"in use by another npplm process (pid {holder.pid})" in result.err
        assert not (run / "run.json").exists()  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    assert npplm(*train(run)).code == 0  # the lock died with its process


def test_the_lock_is_released_and_a_folder_it_made_is_removed(tmp_path):
    with RunLock(tmp_path / "new") as lock:
        assert lock.file.read_text().strip().isdigit()
        with pytest.raises(RunFolderError, match="in use"):  # not re-entrant within a process
            RunLock(tmp_path / "new").__enter__()
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with RunLock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_two_trains_at_once_one_is_refused_and_the_metrics_stay_clean(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "npplm", *train(run, "--steps", "60", "--log-every", "1")]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / ".lock").exists() and time.time() < deadline:
            time.sleep(0.01)
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"pid {first.pid}" in second.stderr
    finally:
        assert first.wait(timeout=300) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 61))


def test_a_failed_start_leaves_nothing_behind(tmp_path, npplm):
    run = tmp_path / "run"
    result = npplm(*train(run, "--preset", "gpt9"))  # refused before the tokenizer is trained
    assert result.code == 2 and "'gpt9' is not a GPTConfig preset" in result.err
    assert not run.exists()
    short = tmp_path / "short.txt"
    short.write_text("def f(): pass\n" * 3)
    result = npplm(*train(run, "--data", short, "--vocab-size", "260"))  # fails in the build
    assert result.code == 1 and "fewer than one block" in result.err
    assert not run.exists()


def test_another_request_in_a_run_folder_is_refused_not_served_the_old_tokenizer(tmp_path,
                                                                               npplm):
    run = tmp_path / "run"
    assert npplm(*train(run)).code == 0
    for change, key in ((["--vocab-size", "300"], "vocab_size"), (["--model", "llama"], "family"),
                        (["--objective", "clm", "--model", "llama"], "family")):
        result = npplm(*train(run, *change))
        assert result.code == 1
        assert f"holds another run (it differs in {key}" in result.err
    result = npplm(*train(run, "--steps", "3"))  # the same request trains on: it resumes
    assert result.code == 0 and "resuming from" in result.out


def test_resuming_is_said_even_when_quiet(tmp_path, npplm):
    run = tmp_path / "run"
    assert npplm(*train(run)).code == 0
    result = npplm(*train(run, "--steps", "3"))
    assert "resuming from" in result.out and "step-000002" in result.out


def test_set_adjusts_the_default_shape_instead_of_replacing_it():
    request = resolve_request("gpt", overrides={"n_layer": 2})
    assert request["overrides"] == {**LAPTOP["gpt"], "n_layer": 2}  # width 128, not 768
    assert resolve_request("gpt", "tiny", overrides={"n_layer": 2})["overrides"] == \
        {"n_layer": 2}  # a named preset is taken as it is


def test_set_n_layer_builds_a_two_layer_laptop_gpt(tmp_path, npplm):
    result = npplm("train", "--out", tmp_path / "run", "--set", "n_layer=2", "--max-chars",
                   "40000", "--vocab-size", "300", "--block-size", "32", "--steps", "1",
                   "--batch-size", "2", "--eval-batches", "1", "--quiet")
    assert result.code == 0, result.err
    recipe = json.loads((tmp_path / "run" / "run.json").read_text())["recipe"]
    assert recipe["overrides"]["n_layer"] == 2 and recipe["overrides"]["n_embd"] == 128
    assert recipe["parameters"] < 1_000_000  # 14.4M before: GPT-2 small's width


def test_a_run_with_a_given_tokenizer_resumes(tmp_path, npplm, family_runs):
    tokenizer = family_runs["gpt"]  # a run folder names its tokenizer too
    run = tmp_path / "run"
    assert npplm(*train(run, "--tokenizer", tokenizer)).code == 0
    assert (run / "tokenizer" / "tokenizer.json").read_bytes() == \
        (tokenizer / "tokenizer" / "tokenizer.json").read_bytes()
    result = npplm(*train(run, "--tokenizer", tokenizer, "--steps", "3"))
    assert result.code == 0, result.err
    assert "resuming from" in result.out
