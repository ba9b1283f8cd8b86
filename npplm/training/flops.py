"""Counting the work of training: parameters, FLOPs per token, and model FLOP utilisation.

A training step of a Transformer on one token costs, to a good approximation,

    6 N + 12 L T A     floating-point operations                          (PaLM, app. B)

  - 6 N: every parameter of a matrix multiply does one multiply and one add per token in
    the forward pass (2 N), and twice that in the backward pass (the gradient with
    respect to the input and the one with respect to the weight: 4 N). N counts the
    weights that multiply (every Linear, the tied LM head included); embedding lookups,
    biases and norm gains do no matmul work and are left out.
  - 12 L T A: attention's own matmuls, which have no parameters: Q K^T and P V cost
    2 T A each per token and layer forward (T the context length, A = H D the attention
    width), times 3 for forward plus backward. Computed densely, a causal mask saves
    nothing, so the full T is counted.

Kaplan et al. ("Scaling Laws for Neural Language Models", arXiv:2001.08361, table 1)
write C ~ 6 N per token and count N without embeddings; Chowdhery et al. (PaLM,
arXiv:2204.02311, appendix B) add the attention term and define model FLOP utilisation:

    MFU = (tokens per second x FLOPs per token) / peak FLOP/s of the hardware

Here the peak is measured, not taken from a data sheet: the best rate of a large float32
matrix multiply through NumPy's BLAS on this machine (`matmul_peak`), so MFU says how much
of what the CPU can actually do in a GEMM our training step achieves. The same counter
serves the benchmarks (benchmarks/side_by_side_training.py) and `npplm scaling`.
"""

import time

import numpy as np

from npplm.layers import Linear


def linear_parameters(model):
    """Weights of every Linear of the model (N above); a tied LM head counts, as its
    matmul is real work even though its weight is the embedding table."""
    total, seen = 0, set()
    for _, module in model.named_modules():
        if isinstance(module, Linear) and id(module) not in seen:
            seen.add(id(module))
            total += module.weight.size
    return total


def attention_width(config):
    """A = H D, the width of the attention matmuls, from any family's config."""
    for heads, dim in (("n_head", "head_dim"), ("num_attention_heads", "head_dim"),
                       ("num_heads", "d_kv")):
        if hasattr(config, heads) and hasattr(config, dim):
            return getattr(config, heads) * getattr(config, dim)
    return getattr(config, "n_embd", None) or config.hidden_size


def num_layers(config):
    for name in ("n_layer", "num_hidden_layers", "num_layers"):
        if hasattr(config, name):
            return getattr(config, name)
    raise ValueError(f"{type(config).__name__} names no layer count")


def training_flops_per_token(model, context):
    """6 N + 12 L T A for one token of a training step at context length T = `context`."""
    config = model.config
    return (6 * linear_parameters(model)
            + 12 * num_layers(config) * context * attention_width(config))


def matmul_peak(n=2048, repeats=10, dtype=np.float32):
    """The best FLOP/s of an (n x n) @ (n x n) matrix multiply on this machine (2 n^3 FLOPs
    per call), with NumPy's BLAS and its current thread count."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b  # warm up the BLAS threads
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def mfu(tokens_per_second, flops_per_token, peak_flops):
    """Model FLOP utilisation: the share of the peak the training step achieves."""
    return tokens_per_second * flops_per_token / peak_flops
