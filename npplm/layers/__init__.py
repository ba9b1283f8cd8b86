"""Generic layers shared by the model families: functions hold the math, modules own
parameters and call the functions.

    module.py          Module: parameters found by walking attributes, state dicts, modes
    linear.py          Linear (and Linear.tied for heads that reuse a table), linear()
    embedding.py       Embedding, check_ids(), int_array()
    normalization.py   LayerNorm, RMSNorm, and the fused layer_norm / rms_norm primitives
    activations.py     fused gelu, gelu_tanh, silu primitives; activation(name)
    softmax.py         fused softmax, log_softmax primitives
    losses.py          cross_entropy (fused), causal_lm_loss, BCE, MSE, the heads' losses
    dropout.py         the dropout primitive, dropout(), Dropout
    gradient_scale.py  grad_scale: identity forward, gradient times alpha (GLM's shrink)
    masks.py           additive_mask, padding_mask, causal_mask, PaddingMask, CausalMask,
                       causal_bias, check_attention_mask, positions_from_mask
    attention.py       split_heads, merge_heads, attention(), the fused causal_attention
    rotary.py          RoPE: rope_frequencies (incl. LLaMA-3 scaling), rope_cos_sin, apply_rotary
    checkpointing.py   run_block: a block, or the block replayed in backward (checkpointing)

A fused primitive that has a Numba kernel calls it with one visible line in its forward
or VJP, before the reference code beside it: `gpu/numba_cpu/` on the CPU, `gpu/numba_cuda/`
on the GPU. The engine (`autograd`) has no kernels and no hooks: its primitives compute
the same whatever has been imported.
"""

from npplm.layers.activations import activation, gelu, gelu_tanh, silu
from npplm.layers.attention import attention, causal_attention, merge_heads, split_heads
from npplm.layers.checkpointing import checkpointed, run_block
from npplm.layers.dropout import Dropout, dropout
from npplm.layers.embedding import Embedding, check_ids, int_array
from npplm.layers.gradient_scale import grad_scale
from npplm.layers.linear import Linear, linear
from npplm.layers.losses import (
    IGNORE_INDEX,
    binary_cross_entropy_with_logits,
    causal_lm_loss,
    cross_entropy,
    mean_squared_error,
    sequence_classification_loss,
    span_extraction_loss,
)
from npplm.layers.masks import (
    CausalMask,
    PaddingMask,
    additive_mask,
    causal_bias,
    causal_mask,
    check_attention_mask,
    padding_mask,
    positions_from_mask,
)
from npplm.layers.module import Module, no_init
from npplm.layers.normalization import LayerNorm, RMSNorm, layer_norm, rms_norm
from npplm.layers.rotary import apply_rotary, rope_cos_sin, rope_frequencies
from npplm.layers.softmax import log_softmax, softmax

__all__ = [
    "IGNORE_INDEX", "CausalMask", "Dropout", "Embedding", "LayerNorm", "Linear", "Module",
    "PaddingMask", "RMSNorm", "activation", "additive_mask", "apply_rotary", "attention",
    "binary_cross_entropy_with_logits", "causal_attention", "causal_bias", "causal_lm_loss",
    "causal_mask", "check_attention_mask", "check_ids", "checkpointed", "cross_entropy",
    "dropout", "gelu", "gelu_tanh", "grad_scale", "int_array", "layer_norm", "linear",
    "log_softmax", "mean_squared_error", "merge_heads", "no_init", "padding_mask",
    "positions_from_mask", "rms_norm", "rope_cos_sin", "rope_frequencies", "run_block",
    "sequence_classification_loss", "silu", "softmax", "span_extraction_loss", "split_heads",
]
