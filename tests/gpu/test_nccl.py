"""NCCL under NPPLM_BACKEND=cupy on two GPUs: the collectives, and data parallelism equal to
one process (npplm/distributed/nccl.py). Skips without two CUDA devices and the [mpi] extra
(NCCL refuses two ranks on one GPU)."""

import json

import numpy as np
import pytest

import gpu
from tests.distributed.mpi import run_ranks


@pytest.mark.gpu
def test_two_gpus_sum_with_nccl_and_train_as_one_process(tmp_path):
    if not gpu.cuda_available():
        pytest.skip("no CUDA device with CuPy here")
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("NCCL needs one GPU per rank: fewer than 2 here")
    run_ranks(["-m", "tests.distributed.ranks", "nccl", tmp_path],
              env={"NPPLM_BACKEND": "cupy"})
    r = json.loads((tmp_path / "nccl.json").read_text())
    assert r["nccl"]
    assert r["allreduce"] == [3.0] * 6
    assert r["reduce_scatter"] == [0.0, 2.0, 4.0]  # rank 0 writes: its block of 2 x arange(6)
    assert r["allgather"] == [0.0] * 3 + [1.0] * 3
    assert r["broadcast"] == [7.0, 7.0]
    assert r["clm"]["same_on_every_rank"]
    np.testing.assert_allclose(r["clm"]["losses"], r["clm"]["one_process"], rtol=0, atol=1e-5)
