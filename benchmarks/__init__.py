"""npplm's asv benchmarks (`bench_<area>.py`) and the PyTorch side-by-side script.

Run from this folder against the current virtual environment:

    cd benchmarks
    ../.venv/bin/asv machine --yes                  # once per machine: record its facts
    ../.venv/bin/asv run --python=same --quick      # --quick: one sample each, a smoke test
    ../.venv/bin/python side_by_side.py [--quick]   # ratios against PyTorch and bare NumPy

asv imports this package, then each `bench_*` module in it, from a temporary folder and
without installing npplm (`--python=same` benchmarks whatever the environment imports). The
repository root is therefore put on `sys.path` here, once for every benchmark module, so
`import autograd` finds the working tree these benchmarks sit in.

Every figure is measured with npplm's process settings (`npplm.runtime.configure()`: freed
memory kept in the process, Numba's sleeping thread pool), applied here once, as the CLI
and the Trainer apply them.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from npplm import runtime  # noqa: E402

runtime.configure()
