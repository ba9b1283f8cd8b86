"""`npplm train` on two MPI ranks end to end: --nproc, a killed run resumed, a failing rank
ending the job, a refused run folder."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.distributed.mpi import ONE_THREAD, ROOT, mpiexec, run_ranks

SMALL = ["--set", "n_layer=1", "n_embd=32", "n_head=2", "resid_pdrop=0", "embd_pdrop=0",
         "attn_pdrop=0", "--max-chars", "40000",
         "--vocab-size", "300", "--block-size", "32", "--batch-size", "4", "--lr", "1e-2",
         "--warmup", "2", "--eval-batches", "2", "--eval-every", "100", "--log-every", "1",
         "--quiet"]


def train(out, *extra, nproc=2):
    return [sys.executable, "-m", "npplm", "train", "--out", str(out), *SMALL,
            "--nproc", str(nproc), *extra]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").open()]


def losses(run):
    return [(r["step"], r["loss"]) for r in records(run) if "loss" in r]


ENV = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes_with_the_same_losses(tmp_path):
    """Kill `npplm train --nproc 2` (mpiexec and both ranks) after its second checkpoint,
    run the same command again: every logged loss equals an uninterrupted 2-rank run's, and
    those equal one process's with the full batch (to float32 rounding)."""
    mpiexec()  # skips without the [mpi] extra
    steps = 400  # enough that the run is still going when its second checkpoint appears
    args = ("--steps", str(steps), "--save-every", "4")
    subprocess.run(train(tmp_path / "whole", *args), check=True, capture_output=True,
                   env=ENV, timeout=300, cwd=ROOT)
    victim = subprocess.Popen(train(tmp_path / "killed", *args), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT,
                              start_new_session=True)
    checkpoint = tmp_path / "killed" / "checkpoints" / "step-000008"
    deadline = time.time() + 240
    while not checkpoint.is_dir() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    os.killpg(victim.pid, signal.SIGKILL)  # the launcher and mpiexec; the ranks follow
    victim.wait()
    assert checkpoint.is_dir(), "the run never reached its second checkpoint"
    done = losses(tmp_path / "killed")
    assert done[-1][0] < steps, "the run finished before it was killed"
    resumed = subprocess.run(train(tmp_path / "killed", *args), capture_output=True,
                             text=True, env=ENV, timeout=300, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout + resumed.stderr
    assert losses(tmp_path / "killed") == losses(tmp_path / "whole")
    assert len(losses(tmp_path / "whole")) == steps
    # and one process with the whole batch (no dropout: ranks draw their own masks)
    subprocess.run(train(tmp_path / "one", *args, nproc=1), check=True, capture_output=True,
                   env=ENV, timeout=300, cwd=ROOT)
    one = np.array([loss for _, loss in losses(tmp_path / "one")][:50])
    two = np.array([loss for _, loss in losses(tmp_path / "whole")][:50])
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-4)  # 50 steps at lr 1e-2


def test_a_rank_that_raises_ends_the_job_naming_itself_and_the_step(tmp_path):
    started = time.time()
    result = run_ranks(["-m", "tests.distributed.ranks", "fault", tmp_path], check=False,
                       timeout=60)
    assert time.time() - started < 60
    assert result.returncode != 0
    assert "rank 1 of 2 failed at step 3: ValueError: a fault injected by the test" \
        in result.stderr, result.stderr
    assert not (tmp_path / "fault.json").exists()
    assert not list((tmp_path / "run").glob("checkpoints/*.tmp-*"))


def test_a_rank_that_dies_ends_the_job_and_is_named_by_its_pid(tmp_path):
    started = time.time()
    result = run_ranks(["-m", "tests.distributed.ranks", "death", tmp_path], check=False,
                       timeout=60)
    assert time.time() - started < 60
    assert result.returncode != 0
    pids = dict(re.findall(r"rank (\d) pid (\d+)", result.stdout))
    assert set(pids) == {"0", "1"}, result.stdout
    assert f"PID {pids['1']} " in result.stdout + result.stderr, result.stdout + result.stderr
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "step-000002" / "model.safetensors").is_file()
    assert not list(checkpoints.glob("*.tmp-*"))
    assert not (tmp_path / "death.json").exists()


def test_rank_zeros_refusal_stops_every_rank_with_one_line(tmp_path):
    """`mpiexec -n 2 npplm train` into a folder of other files: rank 0's claim refuses it,
    rank 1 learns it and stops quietly, the user reads one line, nothing is touched."""
    (tmp_path / "mine.txt").write_text("not a run folder\n")
    command = train(tmp_path, "--steps", "2", nproc=1)[1:]  # [-m, npplm, train, ...]
    result = run_ranks(command, check=False, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not an npplm run (mine.txt)" in lines[0], result.stderr
    assert (tmp_path / "mine.txt").read_text() == "not a run folder\n"
