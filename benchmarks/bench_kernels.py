"""asv benchmarks of the Numba kernels against the references they replace.

    .venv/bin/python benchmarks/bench_kernels.py     # prints the table once, no asv needed

Each kernel in gpu/kernels/ is timed beside its NumPy reference on the shape that matters
most: GELU on BERT-base's feed-forward activation, (8, 128, 3072) float32.
"""

import numpy as np

from gpu.kernels import activations as kernels
from npplm.layers import activations as reference

GELU_SHAPE = (8, 128, 3072)
FORMS = {
    "gelu": (reference.gelu_reference, reference.gelu_grad_reference,
             kernels.gelu_forward, kernels.gelu_backward),
    "gelu_tanh": (reference.gelu_tanh_reference, reference.gelu_tanh_grad_reference,
                  kernels.gelu_tanh_forward, kernels.gelu_tanh_backward),
}


class Gelu:
    """Forward + backward of one GELU form: the NumPy reference, then the kernel."""

    params = [list(FORMS)]
    param_names = ["form"]

    def setup(self, form):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(GELU_SHAPE, dtype=np.float32)
        self.g = np.ones_like(self.x)
        self.ref_fwd, self.ref_bwd, self.fwd, self.bwd = FORMS[form]
        self.fwd(self.x), self.bwd(self.g, self.x)  # compile (or load the cache) first

    def time_reference(self, form):
        self.ref_fwd(self.x), self.ref_bwd(self.g, self.x)

    def time_kernel(self, form):
        self.fwd(self.x), self.bwd(self.g, self.x)


if __name__ == "__main__":
    import timeit
    from functools import partial

    import numba

    for form in FORMS:
        bench = Gelu()
        bench.setup(form)
        ref = min(timeit.repeat(partial(bench.time_reference, form), number=1, repeat=7))
        ker = min(timeit.repeat(partial(bench.time_kernel, form), number=1, repeat=7))
        print(f"{form} forward+backward {GELU_SHAPE} float32, {numba.get_num_threads()} "
              f"threads: reference {ref * 1e3:.1f} ms, kernel {ker * 1e3:.1f} ms "
              f"({ref / ker:.1f}x)")
