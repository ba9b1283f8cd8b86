"""The asv suites still run: every benchmark method once, NumPy backend, smallest size.

Speed is never asserted here (that is what the benchmarks are for); this only keeps them
from rotting as the engine changes.
"""

import inspect
import itertools

import pytest

from benchmarks import bench_autograd, bench_encoder, bench_t5, bench_training

SUITES = [obj for module in (bench_autograd, bench_encoder, bench_t5, bench_training)
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
