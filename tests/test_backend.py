"""The backend switch: NPPLM_BACKEND is read once at import, and bad values fail clearly."""

import importlib.util
import os
import subprocess
import sys

import pytest


def run_import(backend, code="import npplm; print(npplm.BACKEND)"):
    env = dict(os.environ, NPPLM_BACKEND=backend)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)


def test_default_is_numpy():
    env = {k: v for k, v in os.environ.items() if k != "NPPLM_BACKEND"}
    out = subprocess.run([sys.executable, "-c", "import npplm; print(npplm.BACKEND)"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numpy"


def test_numpy_by_name_any_case():
    out = run_import(" NumPy ")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numpy"


def test_unknown_backend_names_the_value_and_the_choices():
    out = run_import("bogus")
    assert out.returncode != 0
    assert "BackendError" in out.stderr
    assert "'bogus'" in out.stderr and "numpy, cupy" in out.stderr


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_cupy_without_cupy_says_it_is_missing():
    out = run_import("cupy")
    assert out.returncode != 0
    assert "CuPy is not installed" in out.stderr
    assert "pip install 'npplm[gpu]'" in out.stderr


def test_import_npplm_does_not_import_cupy():
    out = run_import("numpy", "import sys, npplm; print('cupy' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
