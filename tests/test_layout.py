"""The package layout the design fixes: autograd depends on nothing of ours."""

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_top_level_names(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_autograd_imports_neither_npplm_nor_gpu():
    for path in sorted((ROOT / "autograd").rglob("*.py")):
        bad = imported_top_level_names(path) & {"npplm", "gpu"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the engine must stand alone"


def test_gpu_does_not_import_npplm():
    for path in sorted((ROOT / "gpu").rglob("*.py")):
        assert "npplm" not in imported_top_level_names(path), path


def test_required_top_level_layout():
    for name in ("pyproject.toml", "README.md", "npplm", "autograd", "gpu", "benchmarks",
                 "tests"):
        assert (ROOT / name).exists(), f"missing {name}"


def test_import_npplm_loads_neither_cupy_nor_numba_cuda():
    # The CUDA kernels load on the first CuPy array that needs them (gpu/cuda_kernels/).
    code = ("import sys, npplm; "
            "print(sorted(m for m in ('cupy', 'numba.cuda') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
