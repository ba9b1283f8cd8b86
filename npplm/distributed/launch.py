"""`npplm train --nproc N`: start the same command on N ranks with mpiexec, on this machine.

    npplm train --nproc 2 --steps 100          is the same run as
    mpiexec -n 2 npplm train --steps 100       (with one thread per core each)

The mpiexec is the one beside this Python (the `mpich` wheel of the `[mpi]` extra installs
it into the environment's bin/), else the first on PATH. Each rank gets cores / N threads
for OpenBLAS, OpenMP and Numba, unless those variables are already set: two ranks that
each start a thread per core would fight over the cores.

Several machines: run mpiexec yourself, with a host file (MPICH's hydra):

    mpiexec -f hosts -n 8 /path/to/venv/bin/npplm train --out /shared/runs/big ...

where `hosts` lists one machine per line (`node1:4` for four ranks on node1), every machine
has the same environment at the same path, and the run folder is on a file system they
all see (rank 0 writes the tokenizer and the checkpoints; the other ranks read them).
"""

import os
import pathlib
import shutil
import subprocess
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def find_mpiexec():
    """The path of mpiexec, or a clear error saying how to get one."""
    here = pathlib.Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.is_file() else shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError("--nproc needs MPI: pip install 'npplm[mpi]' (mpi4py and the "
                                "mpich wheel), or put an mpiexec on PATH")
    return found


def rank_environment(nproc, env=None):
    """The environment for each of nproc ranks on this machine: cores / nproc threads."""
    env = dict(os.environ if env is None else env)
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    for name in THREAD_VARIABLES:
        env.setdefault(name, threads)
    return env


def without_option(argv, option):
    """argv with `option VALUE` and `option=VALUE` removed."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def relaunch(nproc, argv):
    """Run `python -m npplm ARGV` on nproc ranks under mpiexec; returns its exit status."""
    command = [find_mpiexec(), "-n", str(nproc), sys.executable, "-m", "npplm", *argv]
    return subprocess.run(command, env=rank_environment(nproc)).returncode
