"""The precision-and-memory benchmark scripts still run (--quick: tiny models, a few steps)."""

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
