#!/usr/bin/env bash
# llama.cpp, the reference for benchmarks/side_by_side_quantized.py, built from the
# llama-cpp-python source package into its own environment (never one of npplm's
# dependencies). Usage: bash benchmarks/build_llama_cpp.sh [VENV]   (default .venv-llama-cpp)
#
# GGML_NATIVE=OFF with the instruction sets named: a native build on the Intel VM of our
# benchmarks turns on AMX, which the VM advertises but traps (illegal instruction).
# AVX-512 (with VNNI and BF16) stays on, as llama.cpp would pick on this CPU. Takes some
# 10-20 minutes on two cores.
set -euo pipefail
VENV=${1:-.venv-llama-cpp}
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=ON" \
  "$VENV/bin/pip" install --no-binary llama-cpp-python --no-cache-dir \
  "llama-cpp-python==0.3.36" "numpy" "psutil"
"$VENV/bin/python" -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__)"
