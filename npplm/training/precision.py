"""Mixed-precision training: float32 master weights, 16-bit forward and backward.

Micikevicius et al., "Mixed Precision Training" (ICLR 2018, arXiv:1710.03740), the recipe
torch.amp and llm.c follow, in three parts:

1. **float32 master weights.** The optimizer keeps and updates float32 parameters. An
   update lr * m / sqrt(v) is often below a 16-bit weight's resolution (bfloat16 has 8
   bits: 1.0 + 0.001 rounds back to 1.0), so updates applied to 16-bit weights are lost
   and training stalls; added to float32 masters they accumulate.
2. **16-bit working copies.** Each step, the model's parameters are rounded to float16 or
   bfloat16 (`working_copies`), the forward and backward run on them, so activations and
   gradients are 16-bit (half the memory and bandwidth, and a GPU's tensor cores), and the
   gradients are widened back to float32 onto the masters. Inside, every matrix product and
   every reduction computes in float32 (autograd/precision.py), as tensor cores and
   torch.autocast do; the loss is float32.
3. **Loss scaling** (float16 only): float16's smallest normal number is 6e-5, and many
   gradients are smaller; multiplying the loss by S (2^16) shifts them into range, and
   dividing the float32 gradients by S undoes it (loss_scaling.py). bfloat16 has float32's
   exponent range and needs none.

What 16 bits cost on a CPU: NumPy has no 16-bit BLAS (the products above widen to float32
and round back, one extra pass each way) and ml_dtypes' bfloat16 ufuncs are plain loops, so
a bf16 step here is slower than a float32 one. The CPU path exists to be correct and
readable, and to study the numerics (the README's precision section measures it); the
speed is the GPU's.

    precision = MixedPrecision("bf16")          # or "fp16"; "fp32" does nothing
    with precision.working_copies(parameters):  # p.data 16-bit inside
        loss = model(**batch).loss; loss.backward()
    # here p.data is the float32 master again and p.grad float32
"""

import contextlib

import numpy as np

from autograd.precision import HALF, bfloat16

PRECISIONS = ("fp32", "bf16", "fp16")


def half_dtype(precision):
    """The 16-bit dtype of a precision name (None for fp32)."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        return np.dtype(np.float16)
    if precision == "bf16":
        if bfloat16 is None:
            raise ImportError("bf16 needs ml_dtypes (pip install ml_dtypes): NumPy has no "
                              "bfloat16 of its own")
        return bfloat16
    raise ValueError(f"precision={precision!r}; use one of {PRECISIONS}")


class MixedPrecision:
    """Rounds parameters to a 16-bit dtype for the forward and backward (see above)."""

    def __init__(self, precision="fp32"):
        self.precision = precision
        self.dtype = half_dtype(precision)

    @property
    def enabled(self):
        return self.dtype is not None

    @contextlib.contextmanager
    def working_copies(self, params):
        """Inside: each p.data is its 16-bit rounding. After: p.data is the float32 master
        again (the very array it was) and p.grad, if any, float32."""
        if not self.enabled:
            yield
            return
        masters = [p.data for p in params]
        for p in params:
            if p.data.dtype in HALF:
                raise TypeError(f"a parameter of shape {p.shape} is already {p.dtype}: the "
                                "masters must be float32")
            p.data = p.data.astype(self.dtype)
        try:
            yield
        finally:
            for p, master in zip(params, masters):
                p.data = master
                if p.grad is not None:
                    p.grad = p.grad.astype(master.dtype, copy=False)
