"""asv benchmarks of the Numba kernels against the references they replace.

    .venv/bin/python benchmarks/bench_kernels.py     # prints the table once, no asv needed

Each kernel in gpu/kernels/ is timed beside its NumPy reference on the shape that matters
most: GELU on BERT-base's feed-forward activation, (8, 128, 3072) float32; causal attention
on the GPT-2 of side_by_side_training.py, B=8, H=6, T=S=256, D=64 float32, forward +
backward, q, k and v strided views of one (B, T, 3C) projection as the model makes them;
cross-entropy forward + backward on that GPT-2's head, (B T, V) = (2048, 8192) float32;
rotary position embedding forward + backward on a LLaMA-sized q, B=8, H=9, T=256, D=64
float32 (SmolLM2-135M's heads), a strided view of its (B, T, H D) projection.
"""

import numpy as np

from autograd.ops import nn as softmax_reference
from gpu.kernels import activations as kernels
from gpu.kernels import attention as attention_kernels
from gpu.kernels import rotary as rotary_kernels
from gpu.kernels import softmax as softmax_kernels
from npplm.layers import activations as reference
from npplm.layers.attention import causal_attention_grad_reference, causal_attention_reference
from npplm.layers.rotary import (
    rope_cos_sin,
    rope_frequencies,
    rotary_grad_reference,
    rotary_reference,
)

GELU_SHAPE = (8, 128, 3072)
ATTENTION_SHAPE = (8, 6, 256, 64)  # (B, H, T, D)
HEAD_SHAPE = (2048, 8192)  # (B T, V)
ROTARY_SHAPE = (8, 9, 256, 64)  # (B, H, T, D)
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


class CausalAttention:
    """Forward + backward of causal self-attention: the dense reference, then the kernel."""

    def setup(self):
        B, H, T, D = ATTENTION_SHAPE
        rng = np.random.default_rng(0)
        qkv = rng.standard_normal((B, T, 3, H, D), dtype=np.float32)  # c_attn's output
        self.q, self.k, self.v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        self.keep = np.ones((B, T), dtype=bool)
        self.scale = D ** -0.5
        self.g = rng.standard_normal((B, H, T, D), dtype=np.float32)
        self.g_lse = np.zeros((B, H, T), dtype=np.float32)
        self.time_kernel()  # compile (or load the cache) first

    def time_reference(self):
        args = (self.q, self.k, self.v, self.keep, self.scale)
        causal_attention_reference(*args)
        causal_attention_grad_reference(self.g, self.g_lse, *args)

    def time_kernel(self):
        args = (self.q, self.k, self.v, self.keep)
        out, lse = attention_kernels.attention_forward(*args, self.scale)
        attention_kernels.attention_backward(self.g, self.g_lse, *args, out, lse, self.scale)


class CrossEntropy:
    """Forward + backward of the language-model loss: the NumPy reference, then the kernel."""

    def setup(self):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(HEAD_SHAPE, dtype=np.float32)
        self.t = rng.integers(0, HEAD_SHAPE[1], HEAD_SHAPE[0])
        self.w = np.full(HEAD_SHAPE[0], 1 / HEAD_SHAPE[0], dtype=np.float32)
        self.time_kernel()  # compile (or load the cache) first

    def time_reference(self):
        softmax_reference.cross_entropy_reference(self.x, self.t, 0.0)
        softmax_reference.cross_entropy_grad_reference(self.x, self.t, self.w, 0.0)

    def time_kernel(self):
        softmax_kernels.cross_entropy_forward(self.x, self.t, 0.0)
        softmax_kernels.cross_entropy_backward(self.x, self.t, self.w, 0.0)


class Rotary:
    """Forward + backward of RoPE on q: the NumPy reference, then the kernel."""

    def setup(self):
        B, H, T, D = ROTARY_SHAPE
        rng = np.random.default_rng(0)
        proj = rng.standard_normal((B, T, H * D), dtype=np.float32)  # q_proj's output
        self.x = proj.reshape(B, T, H, D).transpose(0, 2, 1, 3)  # -> (B, H, T, D), strided
        self.cos, self.sin = rope_cos_sin(np.arange(T), rope_frequencies(D), np.float32)
        self.g = rng.standard_normal((B, H, T, D), dtype=np.float32)
        self.time_kernel()  # compile (or load the cache) first

    def time_reference(self):
        rotary_reference(self.x, self.cos, self.sin)
        rotary_grad_reference(self.g, self.cos, self.sin)

    def time_kernel(self):
        rotary_kernels.rotary_forward(self.x, self.cos, self.sin)
        rotary_kernels.rotary_backward(self.g, self.cos, self.sin)


if __name__ == "__main__":
    import timeit
    from functools import partial

    import numba

    def report(what, reference, kernel):
        """Medians of 9 timings of each, printed on one line."""
        ref, ker = (np.median(timeit.repeat(f, number=1, repeat=9)) for f in (reference, kernel))
        print(f"{what} float32, {numba.get_num_threads()} threads: reference "
              f"{ref * 1e3:.1f} ms, kernel {ker * 1e3:.1f} ms ({ref / ker:.1f}x, medians of 9)")

    for form in FORMS:
        bench = Gelu()
        bench.setup(form)
        report(f"{form} forward+backward {GELU_SHAPE}", partial(bench.time_reference, form),
               partial(bench.time_kernel, form))
    for bench, what in ((CausalAttention(), f"causal attention {ATTENTION_SHAPE} (B, H, T, D)"),
                        (CrossEntropy(), f"cross-entropy {HEAD_SHAPE} (B T, V)"),
                        (Rotary(), f"rotary {ROTARY_SHAPE} (B, H, T, D), strided q")):
        bench.setup()
        report(f"{what} forward+backward", bench.time_reference, bench.time_kernel)
