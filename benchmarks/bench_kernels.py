"""asv benchmarks of the Numba kernels against the references they replace.

    .venv/bin/python benchmarks/bench_kernels.py     # prints the table once, no asv needed

Each kernel in gpu/numba_cpu/ is timed beside its NumPy reference on the shape that matters
most: GELU on BERT-base's feed-forward activation, (8, 128, 3072) float32; causal attention
on the GPT-2 of side_by_side_training.py, B=8, H=6, T=S=256, D=64 float32, forward +
backward, q, k and v strided views of one (B, T, 3C) projection as the model makes them;
cross-entropy forward + backward on that GPT-2's head, (B T, V) = (2048, 8192) float32;
LayerNorm and RMSNorm forward + backward on its residual stream, (B T, C) = (2048, 384);
global-norm clipping and one AdamW step on the parameters of bench_training.py's GPT-2
6L/384 (13.9M float32 parameters; its biases and gains take the reference);
rotary position embedding forward + backward on a LLaMA-sized q, B=8, H=9, T=256, D=64
float32 (SmolLM2-135M's heads), a strided view of its (B, T, H D) projection.
"""

from unittest import mock

import numpy as np

from gpu.numba_cpu import activations as kernels
from gpu.numba_cpu import attention as attention_kernels
from gpu.numba_cpu import normalization as norm_kernels
from gpu.numba_cpu import optim as optim_kernels
from gpu.numba_cpu import rotary as rotary_kernels
from gpu.numba_cpu import softmax as softmax_kernels
from npplm.layers import activations as reference
from npplm.layers import losses as softmax_reference
from npplm.layers import normalization as norm_reference
from npplm.layers.attention import causal_attention_grad_reference, causal_attention_reference
from npplm.layers.rotary import (
    rope_cos_sin,
    rope_frequencies,
    rotary_grad_reference,
    rotary_reference,
)
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.training import AdamW, clip_grad_norm, decay_groups

GELU_SHAPE = (8, 128, 3072)
ATTENTION_SHAPE = (8, 6, 256, 64)  # (B, H, T, D)
HEAD_SHAPE = (2048, 8192)  # (B T, V)
NORM_SHAPE = (2048, 384)  # (B T, C)
GPT2_6L_384 = dict(vocab_size=8192, n_positions=256, n_embd=384, n_layer=6, n_head=6)
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
        # dL/dout as merge_heads' VJP hands it over: a (B, H, T, D) view of (B, T, H, D)
        self.g = rng.standard_normal((B, T, H, D), dtype=np.float32).transpose(0, 2, 1, 3)
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


class LayerNorm:
    """Forward + backward of LayerNorm: the NumPy reference, then the kernel."""

    def setup(self):
        rng = np.random.default_rng(0)
        self.x, self.g = (rng.standard_normal(NORM_SHAPE, dtype=np.float32) for _ in range(2))
        self.w, self.b = (rng.standard_normal(NORM_SHAPE[1:], dtype=np.float32)
                          for _ in range(2))
        self.time_kernel()  # compile (or load the cache) first

    def time_reference(self):
        norm_reference.layer_norm_reference(self.x, self.w, self.b, 1e-5)
        norm_reference.layer_norm_grad_reference(self.g, self.x, self.w, 1e-5)

    def time_kernel(self):
        norm_kernels.layer_norm_forward(self.x, self.w, self.b, 1e-5)
        norm_kernels.layer_norm_backward(self.g, self.x, self.w, 1e-5)


class RMSNorm(LayerNorm):
    """Forward + backward of RMSNorm: the NumPy reference, then the kernel."""

    def time_reference(self):
        norm_reference.rms_norm_reference(self.x, self.w, 1e-6)
        norm_reference.rms_norm_grad_reference(self.g, self.x, self.w, 1e-6)

    def time_kernel(self):
        norm_kernels.rms_norm_forward(self.x, self.w, 1e-6)
        norm_kernels.rms_norm_backward(self.g, self.x, self.w, 1e-6)


class AdamWStep:
    """Global-norm clipping and one AdamW step of a GPT-2's parameters, as the trainer does
    them: everything through the NumPy references, then with the kernels dispatched."""

    def setup(self):
        model = GPT2LMHeadModel(GPTConfig(**GPT2_6L_384), seed=0)
        self.params = model.parameters()
        rng = np.random.default_rng(0)
        for p in self.params:
            p.grad = rng.standard_normal(p.shape, dtype=np.float32) * np.float32(0.01)
        self.opt = AdamW(decay_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95))
        self.max_norm = clip_grad_norm(self.params, None)
        self.time_kernel()  # compile (or load the cache) first

    def clip(self):
        self.max_norm *= 0.999  # below the gradients' norm, so that every call scales them
        clip_grad_norm(self.params, self.max_norm)

    def step(self):
        self.opt.step()

    def time_reference(self):
        with mock.patch.object(optim_kernels, "applies", lambda *arrays: False):
            self.clip()
            self.step()

    def time_kernel(self):
        self.clip()
        self.step()


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

    from npplm import runtime

    runtime.configure()  # as the CLI and the Trainer: Numba's sleeping thread pool

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
                        (LayerNorm(), f"LayerNorm {NORM_SHAPE} (B T, C)"),
                        (RMSNorm(), f"RMSNorm {NORM_SHAPE} (B T, C)"),
                        (Rotary(), f"rotary {ROTARY_SHAPE} (B, H, T, D), strided q")):
        bench.setup()
        report(f"{what} forward+backward", bench.time_reference, bench.time_kernel)
    bench = AdamWStep()
    bench.setup()
    no_kernels = mock.patch.object(optim_kernels, "applies", lambda *arrays: False)
    for what, f in (("clip_grad_norm", bench.clip), ("AdamW.step", bench.step)):
        report(f"{what}, GPT-2 6L/384 (13.9M parameters)", no_kernels(f), f)
    report("clip_grad_norm + AdamW.step, GPT-2 6L/384", bench.time_reference, bench.time_kernel)
