"""benchmarks/distributed_training.py still runs (--quick: the tiny preset, on 2 ranks)."""

import subprocess
import sys

from tests.distributed.mpi import ROOT, mpiexec


def test_the_distributed_benchmark_runs():
    mpiexec()  # skips without the [mpi] extra
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/distributed_training.py"),
                           "--quick"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for row in ("one process", "data parallel (2 ranks)", "ZeRO-1 (2 ranks)",
                "GPipe (2 stages, M=2)", "all-reduce of", "bubble (N-1)/(M+N-1) = 0.333",
                "(2.00x less)", "projection"):
        assert row in out, out
    ranks = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert [r for r in ranks if r in ("8", "64", "512")] == ["8", "64", "512"], out
