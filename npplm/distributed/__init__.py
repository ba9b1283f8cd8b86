"""Training on several processes over MPI (mpi4py): `mpiexec -n N npplm train ...`.

    world.py           the ranks and the buffer-based messages between them (never pickle)
    data_parallel.py   each rank takes its rows of every batch; gradients summed over ranks
                       in buckets, all-reduced while backward goes on (PyTorch DDP's design)
    zero.py            ZeRO-1: AdamW's moments sharded, reduce-scatter then all-gather
    pipeline.py        GPipe: the blocks split into stages on ranks, micro-batches streamed
    nccl.py            CuPy arrays summed with NCCL under NPPLM_BACKEND=cupy
    launch.py          `npplm train --nproc N`: mpiexec started for you

The Trainer (npplm/training/trainer.py) uses the first three whenever the process was
started by mpiexec with more than one rank; one process never imports mpi4py.
"""

from npplm.distributed.data_parallel import (
    GradientBuckets,
    allreduce_flat,
    shard_batch,
    shard_rows,
    shard_weights,
)
from npplm.distributed.pipeline import GPipe, bubble
from npplm.distributed.world import (
    DistributedError,
    Mpi,
    SingleProcess,
    current_world,
    launched_by_mpiexec,
)
from npplm.distributed.zero import ZeroAdamW

__all__ = ["DistributedError", "GPipe", "GradientBuckets", "Mpi", "SingleProcess", "ZeroAdamW",
           "allreduce_flat", "bubble", "current_world", "launched_by_mpiexec", "shard_batch",
           "shard_rows", "shard_weights"]
