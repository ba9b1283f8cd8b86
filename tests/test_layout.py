"""The package layout the design fixes: autograd depends on nothing of ours."""

import ast
import pathlib

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
