"""The processes of a run and the messages between them: MPI through mpi4py, buffers only.

    world = current_world()          # SingleProcess, or Mpi when started by mpiexec
    world.rank, world.size           # this process's number, how many there are
    world.allreduce(grad)            # in place: grad <- the sum of every rank's grad

Every call here moves NumPy arrays with mpi4py's uppercase, buffer-based methods
(`Allreduce`, `Reduce_scatter_block`, `Allgather`, `Send`, `Recv`, `Bcast`): the bytes go
straight from the array, as in C. The lowercase methods (`allreduce`, `send`, ...) pickle
Python objects and are never used (npplm has no pickle anywhere); the few small Python
values ranks exchange (a flag, a message) travel as JSON bytes (`broadcast_json`).

Progress. MPICH moves a nonblocking message only while the process is inside an MPI call;
there is no background thread unless MPIR_CVAR_ASYNC_PROGRESS asks for one (and that
thread spins on a core the computation needs). So `wait` polls with `Testall`, and the
data-parallel backward polls its in-flight all-reduces each time a parameter's gradient
is complete (data_parallel.py); that is how they overlap with the rest of backward.

`SingleProcess` is the world of a plain `python` or `npplm` process: the same methods,
doing nothing (a sum over one rank is the array itself), so the trainer has one code path.
mpi4py is imported only by a process that mpiexec started (`launched_by_mpiexec`), so npplm
works without the `[mpi]` extra.

GPUs: `Mpi(nccl=True)` (chosen by `current_world()` when NPPLM_BACKEND=cupy) moves CuPy
arrays with NCCL (`cupy.cuda.nccl`: all-reduce, reduce-scatter, all-gather, broadcast),
the NCCL unique id broadcast over MPI; NumPy arrays and Python numbers still go over MPI.
See nccl.py.
"""

import contextlib
import json
import os
import time

import numpy as np

MPI_ENV = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


class DistributedError(RuntimeError):
    """A collective failed or another rank reported a failure."""


def launched_by_mpiexec():
    """Whether this process was started by mpiexec with more than one rank (MPICH's hydra
    sets PMI_SIZE, Open MPI OMPI_COMM_WORLD_SIZE)."""
    size = os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or "1"
    return int(size) > 1


class SingleProcess:
    """The world of one process: rank 0 of 1, every collective the identity."""

    rank, size, is_main = 0, 1, True

    def allreduce(self, array):
        return array

    def iallreduce(self, array):
        return None

    def wait(self, requests, what="a message"):
        pass

    def poll(self, requests):
        return True

    def reduce_scatter(self, send, recv):
        recv[...] = send[:recv.size].reshape(recv.shape)
        return recv

    def allgather(self, send, recv):
        recv[...] = send.reshape(recv.shape)
        return recv

    def broadcast(self, array, root=0):
        return array

    def broadcast_json(self, value, root=0):
        return value

    def sum(self, value):
        return float(value)

    def barrier(self):
        pass

    def abort(self, message, code=1):
        raise SystemExit(message)

    @contextlib.contextmanager
    def telling_the_others(self, what):
        yield

    def wait_for_main(self):
        pass

    def __repr__(self):
        return "SingleProcess()"


class Mpi:
    """MPI_COMM_WORLD through mpi4py's buffer interface (see the module docstring)."""

    def __init__(self, comm=None, nccl=False):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm or MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_main = self.rank == 0
        self.nccl = None
        if nccl:
            from npplm.distributed.nccl import NcclCommunicator

            self.nccl = NcclCommunicator(self)

    # --- sums ----------------------------------------------------------------------------
    def allreduce(self, array):
        """array <- the sum over ranks of array, in place; returns it."""
        if self._on_gpu(array):
            return self.nccl.allreduce(array)
        self.comm.Allreduce(self.MPI.IN_PLACE, _buffer(array), op=self.MPI.SUM)
        return array

    def iallreduce(self, array):
        """Start the in-place sum of `array` over ranks; returns the request (see wait).
        The array must not be touched until the request is complete. CuPy arrays under
        NCCL are reduced on the stream at once (NCCL is asynchronous by itself): None."""
        if self._on_gpu(array):
            self.nccl.allreduce(array)
            return None
        return self.comm.Iallreduce(self.MPI.IN_PLACE, _buffer(array), op=self.MPI.SUM)

    def poll(self, requests):
        """Let MPI move the given requests along; True once all are complete."""
        live = [r for r in requests if r is not None]
        return not live or self.MPI.Request.Testall(live)

    def wait(self, requests, what="a message"):
        """Poll until every request is complete (Testall, then a short sleep: MPICH's
        Waitall would spin as hard, and this way a Ctrl-C is seen)."""
        live = [r for r in requests if r is not None]
        while live and not self.MPI.Request.Testall(live):
            time.sleep(0)

    def _on_gpu(self, array):
        return self.nccl is not None and self.nccl.handles(array)

    def reduce_scatter(self, send, recv):
        """recv <- rank r's block of the sum of every rank's `send` (send has size x recv)."""
        if self._on_gpu(send):
            return self.nccl.reduce_scatter(send, recv)
        self.comm.Reduce_scatter_block(_buffer(send), _buffer(recv), op=self.MPI.SUM)
        return recv

    def allgather(self, send, recv):
        """recv <- every rank's `send`, concatenated in rank order."""
        if self._on_gpu(send):
            return self.nccl.allgather(send, recv)
        self.comm.Allgather(_buffer(send), _buffer(recv))
        return recv

    def broadcast(self, array, root=0):
        """array <- root's array, in place."""
        if self._on_gpu(array):
            return self.nccl.broadcast(array, root)
        self.comm.Bcast(_buffer(array), root=root)
        return array

    def broadcast_json(self, value, root=0):
        """A JSON-able value of root's, on every rank (sent as UTF-8 bytes, never pickled)."""
        data = json.dumps(value).encode() if self.rank == root else b""
        n = np.array([len(data)], np.int64)
        self.comm.Bcast(n, root=root)
        buf = np.frombuffer(data, np.uint8).copy() if self.rank == root else np.empty(n[0],
                                                                                      np.uint8)
        self.comm.Bcast(buf, root=root)
        return json.loads(buf.tobytes().decode())

    def sum(self, value):
        """The sum over ranks of a Python number, in float64."""
        buf = np.array([value], np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return float(buf[0])

    # --- point to point (the pipeline's activations and their gradients) ----------------
    def send(self, array, dest, tag=0):
        self.comm.Send(_buffer(array), dest=dest, tag=tag)

    def recv(self, array, source, tag=0):
        self.comm.Recv(_buffer(array), source=source, tag=tag)
        return array

    def isend(self, array, dest, tag=0):
        return self.comm.Isend(_buffer(array), dest=dest, tag=tag)

    def barrier(self):
        self.comm.Barrier()

    @contextlib.contextmanager
    def telling_the_others(self, what):
        """Rank 0 runs the block; the others wait in wait_for_main() and learn whether it
        succeeded. If it raised, they raise DistributedError with its message (a refused
        run folder stops every rank with the same one-line reason, nobody waits forever)."""
        try:
            yield
        except BaseException as e:
            self.broadcast_json({"error": f"{what}: {type(e).__name__}: {e}"})
            e.told_the_other_ranks = True
            raise
        self.broadcast_json({"ok": True})

    def wait_for_main(self):
        status = self.broadcast_json(None)
        if "error" in status:
            raise DistributedError(status["error"])

    def abort(self, message, code=1):
        """Print `message` and end every rank of the job now (MPI_Abort: mpiexec kills the
        others, so no rank waits forever on one that has failed)."""
        import sys
        import time

        print(message, file=sys.stderr, flush=True)
        # mpiexec's proxy forwards our stderr asynchronously, and MPI_Abort may kill it
        # first: on a loaded machine the message was lost (CI, 2026-12-06). A pause lets
        # the line out before the job ends.
        time.sleep(0.5)
        self.comm.Abort(code)

    def __repr__(self):
        return f"Mpi(rank={self.rank}, size={self.size})"


def _buffer(array):
    """An array as mpi4py takes it: contiguous NumPy (CuPy arrays go to the host first only
    in tests; NCCL handles them in training)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"MPI buffers must be NumPy arrays, got {type(array).__name__}")
    if not array.flags.c_contiguous:
        raise ValueError(f"MPI buffers must be contiguous, got strides {array.strides}")
    return array


_world = None


def current_world():
    """This process's world: Mpi when mpiexec started it with several ranks (NCCL for
    CuPy arrays when NPPLM_BACKEND=cupy), else SingleProcess. Made once, then reused."""
    global _world
    if _world is None:
        if launched_by_mpiexec():
            _world = Mpi(nccl=os.environ.get("NPPLM_BACKEND") == "cupy")
        else:
            _world = SingleProcess()
    return _world
