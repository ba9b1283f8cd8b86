"""Summing CuPy arrays over ranks with NCCL, the GPU's own collective library.

Under NPPLM_BACKEND=cupy the gradients live on the GPU. Copying them to the host for MPI
and back would cost two PCIe trips per step; NCCL sums them GPU to GPU (NVLink, or the
network with GPUDirect), in a kernel on a CUDA stream. The ranks still start and find each
other through MPI: rank 0 draws NCCL's 128-byte unique id (`nccl.get_unique_id()`), MPI
broadcasts it as bytes (`Bcast`, not pickle), and every rank joins the communicator with
it (`NcclCommunicator(size, id, rank)`), on the GPU `local rank mod device count` of its
machine.

The code path is the trainer's own: world.Mpi routes any CuPy array here (allreduce and
iallreduce); NCCL calls are asynchronous on the stream, so an "in-flight" bucket needs no
polling, and the stream orders it before the optimizer's kernels that read it.

Not exercised without GPUs (tests/gpu skip), and no GPU was lent to the session that wrote
it: the checks to run on a multi-GPU machine are in tests/gpu/test_nccl.py.
"""

import os

import numpy as np

LOCAL_RANK_ENV = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "LOCAL_RANK")


def local_rank(world):
    """This rank's number among the ranks of its machine (MPICH's hydra: MPI_LOCALRANKID)."""
    for name in LOCAL_RANK_ENV:
        if name in os.environ:
            return int(os.environ[name])
    return world.rank


class NcclCommunicator:
    """A NCCL communicator over the ranks of an Mpi world, one GPU per rank."""

    def __init__(self, world):
        import cupy
        from cupy.cuda import nccl

        self.cupy, self.nccl = cupy, nccl
        cupy.cuda.Device(local_rank(world) % cupy.cuda.runtime.getDeviceCount()).use()
        uid = np.zeros(128, np.int16)
        if world.is_main:
            uid[:] = nccl.get_unique_id()  # 128 C chars, -128..127
        world.broadcast(uid)
        self.comm = nccl.NcclCommunicator(world.size, tuple(int(c) for c in uid), world.rank)
        self.dtypes = {np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64,
                       np.dtype(np.float16): nccl.NCCL_FLOAT16}

    def handles(self, array):
        """Whether `array` is a CuPy array NCCL can sum (a float dtype it knows)."""
        return isinstance(array, self.cupy.ndarray) and array.dtype in self.dtypes

    def _args(self, *arrays):
        for a in arrays:
            if not a.flags.c_contiguous:
                raise ValueError(f"NCCL buffers must be contiguous, got strides {a.strides}")
        return self.dtypes[arrays[0].dtype], self.cupy.cuda.get_current_stream().ptr

    def allreduce(self, array):
        """array <- the sum over ranks, in place, on the current stream; returns it."""
        dtype, stream = self._args(array)
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, dtype,
                            self.nccl.NCCL_SUM, stream)
        return array

    def reduce_scatter(self, send, recv):
        """recv <- this rank's block of the sum of every rank's send (ZeRO-1)."""
        dtype, stream = self._args(send, recv)
        self.comm.reduceScatter(send.data.ptr, recv.data.ptr, recv.size, dtype,
                                self.nccl.NCCL_SUM, stream)
        return recv

    def allgather(self, send, recv):
        """recv <- every rank's send, in rank order (ZeRO-1's parameters)."""
        dtype, stream = self._args(send, recv)
        self.comm.allGather(send.data.ptr, recv.data.ptr, send.size, dtype, stream)
        return recv

    def broadcast(self, array, root=0):
        """array <- root's array (the weights every rank starts from)."""
        dtype, stream = self._args(array)
        self.comm.bcast(array.data.ptr, array.size, dtype, root, stream)
        return array
