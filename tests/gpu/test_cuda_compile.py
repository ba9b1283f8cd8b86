"""Every CUDA kernel compiles to real GPU code (PTX for sm_90), float32 only.

The simulator (test_cuda_kernels.py) runs kernels as Python, so it accepts code that the
CUDA compiler refuses (builtin min() with this Numba, say) and cannot see float64
arithmetic creeping in (a float32 divided by an integer is float64 in Numba: slow on most
GPUs). So each kernel is also compiled here, in a subprocess without the simulator, with
Numba's NVVM and no device: the script pretends the current device is compute capability
9.0 (an H100/H200), which is all the compiler asks of it. Skipped where NVVM is missing.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r'''
import json, types as pytypes
import numba.cuda.dispatcher as dispatcher
from numba import cuda, types as t
dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=(9, 0))
import gpu.numba_cuda.attention as A, gpu.numba_cuda.normalization as N
import gpu.numba_cuda.rotary as R, gpu.numba_cuda.softmax as S
f = t.float32
a1, a2, a3, a4 = t.float32[:], t.float32[:, :], t.float32[:, :, :], t.float32[:, :, :, :]
ids, keep = t.int64[:], t.boolean[:, :]
KERNELS = {
    "softmax_rows": (S.softmax_rows, (a2, a2, t.boolean)),
    "softmax_backward_rows": (S.softmax_backward_rows, (a2, a2, a2, t.boolean)),
    "cross_entropy_rows": (S.cross_entropy_rows, (a2, ids, f, a1)),
    "cross_entropy_backward_rows": (S.cross_entropy_backward_rows, (a2, ids, a1, f, a2)),
    "layer_norm_rows": (N.layer_norm_rows, (a2, a1, a1, f, a2)),
    "layer_norm_backward_rows": (N.layer_norm_backward_rows, (a2, a2, a1, f, a2, a1, a1)),
    "rms_norm_rows": (N.rms_norm_rows, (a2, a1, f, a2)),
    "rms_norm_backward_rows": (N.rms_norm_backward_rows, (a2, a2, a1, f, a2, a1)),
    "weight_grad_columns": (N.weight_grad_columns, (a2, a2, a1, a1, a1, a1)),
    "rotate_pairs": (R.rotate_pairs, (a4, a3, a3, a4, t.int64)),
    "attention forward_rows": (A.forward_rows, (a4, a4, a4, keep, f, a4, a3)),
    "attention backward_rows": (A.backward_rows,
                                (a4, a3, a4, a4, a4, keep, a4, a3, f, a4, a4, a4)),
}
try:
    cuda.compile_ptx(lambda x: None, (a1,), cc=(9, 0))
except Exception as e:
    print(json.dumps({"skip": f"{type(e).__name__}: {str(e)[:200]}"}))
    raise SystemExit
results = {}
for name, (kernel, signature) in KERNELS.items():
    try:
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        results[name] = ptx.count(".f64")
    except Exception as e:
        results[name] = f"{type(e).__name__}: {str(e)[:300]}"
print(json.dumps(results))
'''


def test_every_cuda_kernel_compiles_for_the_gpu_in_float32():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    if "skip" in results:
        pytest.skip(f"no NVVM to compile CUDA kernels here ({results['skip']})")
    assert len(results) == 12
    for name, f64_instructions in results.items():
        assert f64_instructions == 0, f"{name}: {f64_instructions}"
