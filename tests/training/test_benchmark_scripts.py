"""The precision-and-memory benchmark scripts still run (--quick: tiny models, a few steps),
and profile_step.py's timers count every primitive call and leave the registry as it was."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(script, *args):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_activation_checkpointing_benchmark_runs():
    out = run("activation_checkpointing.py", "--steps", "1", "--batch", "1")
    assert "plain" in out and "checkpointed" in out and "less, time" in out


@pytest.mark.slow
def test_mixed_precision_benchmark_runs():
    out = run("mixed_precision.py", "--variants", "bf16", "pure bf16")
    rows = [line.split()[0] for line in out.splitlines()[2:]]
    assert rows == ["fp32", "bf16", "pure"], out


def test_profile_step_times_every_primitive_call_and_unwraps_them():
    import collections

    import numpy as np

    from autograd.primitive import REGISTRY
    from benchmarks.bench_training import npplm_step
    from benchmarks.profile_step import instrument

    before = {name: (p.fun, p.vjp) for name, p in REGISTRY.items()}
    step, _ = npplm_step("tiny")
    records = collections.defaultdict(lambda: [0.0, 0.0, 0])
    restore = instrument(records)
    try:
        step()
    finally:
        restore()
    assert {name: (p.fun, p.vjp) for name, p in REGISTRY.items()} == before
    L = 2  # the tiny preset's layers: q/k/v, projection, two MLP matrices each, + LM head
    assert records["linear"][2] == records["linear (vjp)"][2] == 4 * L + 1
    assert records["causal_attention"][2] == L
    assert all(np.isfinite(r[0]) and r[0] >= 0 for r in records.values())
