"""The asv suites still run: every benchmark method once, NumPy backend, smallest size.

Speed is never asserted here (that is what the benchmarks are for); this only keeps them
from rotting as the engine changes.
"""

import inspect
import itertools

import pytest

from benchmarks import bench_autograd, bench_decoding, bench_encoder, bench_t5, bench_training

SUITES = [obj for module in (bench_autograd, bench_decoding, bench_encoder, bench_t5,
                             bench_training)
          for _, obj in inspect.getmembers(module, inspect.isclass)
          if obj.__module__ == module.__name__
          and any(n.startswith(("time_", "peakmem_")) for n in dir(obj))]


def smallest_numpy_params(suite):
    """The first parameter combination that runs on NumPy at the smallest size."""
    grid = getattr(suite, "params", [])
    if grid and not isinstance(grid[0], list):
        grid = [grid]
    for combo in itertools.product(*grid):
        if "cupy" not in combo:
            return combo
    return ()


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.__name__)
def test_benchmark_suite_runs(suite):
    args = smallest_numpy_params(suite)
    bench = suite()
    if hasattr(bench, "preset"):
        bench.preset = "tiny"  # the same code path at a size a test can afford
    if hasattr(bench, "setup"):
        try:
            bench.setup(*args)
        except NotImplementedError as e:  # asv's "skip": a package or device is missing
            pytest.skip(str(e))
    methods = [n for n in dir(bench) if n.startswith(("time_", "peakmem_"))]
    assert methods
    for name in methods:
        getattr(bench, name)(*args)


def test_every_cupy_case_skips_cleanly_without_a_gpu():
    import gpu

    if gpu.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(NotImplementedError):
        bench_autograd.array_module("cupy")


def test_the_gpu_check_rehearses_every_stage_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --smoke: every stage runs (the CUDA kernels on Numba's
    simulator, the strict backend for CuPy) and the report is written."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--smoke",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                         cwd=root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["stages"]) == ["environment", "tests", "kernels", "training", "decoding"]
    assert all(s["status"] == "ok" for s in report["stages"].values()), report
    assert len(report["stages"]["kernels"]["result"]) == 9
    assert report["stages"]["decoding"]["result"]["tokens_equal"] == "4/4"
    assert "## training: ok" in (tmp_path / "report.md").read_text()


def test_the_gpu_check_names_what_is_missing_before_running():
    import subprocess
    import sys
    from pathlib import Path

    import gpu

    if gpu.cuda_available():
        pytest.skip("this machine has what the GPU check needs")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py")],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 2
    assert out.stderr.startswith("the GPU check needs:") and "cupy" in out.stderr
