"""QuantizedLinear / QuantizedEmbedding and the swap of a model's layers
(npplm/quantization/linear.py): a quantised model computes what the float32 model with the
dequantised weights computes."""

import numpy as np
import pytest

from autograd import Tensor, no_grad
from npplm.layers import Embedding, Linear
from npplm.models.llama import LlamaConfig, LlamaForCausalLM
from npplm.quantization import formats
from npplm.quantization.linear import PackedWeight, QuantizedEmbedding, QuantizedLinear
from tests.quantization.models import dequantized, packed_of, quantized_twin
from tests.tolerances import assert_close


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"])
def test_packing_a_file_format_keeps_its_numbers_exactly(kind):
    w = np.random.default_rng(0).standard_normal((70, 256)).astype(np.float32)
    raw = formats.quantize(w, kind)
    packed = PackedWeight.pack(kind, *formats.unpack(raw, kind, w.shape))
    assert np.array_equal(packed.dequantize(), formats.dequantize(raw, kind, w.shape))


def test_quantized_linear_is_linear_with_the_dequantized_weight_and_passes_gradients():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((48, 64)).astype(np.float32)
    bias = Tensor(rng.standard_normal(48).astype(np.float32), requires_grad=True)
    layer = QuantizedLinear(packed_of(w, "Q4_1"), bias)
    reference = Linear.tied(Tensor(dequantized(w, "Q4_1")), bias)
    x = Tensor(rng.standard_normal((2, 3, 64)).astype(np.float32), requires_grad=True)
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == (2, 3, 48)
    # Float32 rounding of the same 64 products summed in another order: within 1e-5 of
    # sum_j |W_rj x_j| (as tests/gpu/test_quantized_kernel.py derives).
    scale = np.abs(x.numpy()) @ np.abs(reference.weight.numpy()).T
    assert np.all(np.abs(y.numpy() - reference(x).numpy()) <= 1e-5 * scale)
    (y * y).sum().backward()
    dx, db = x.grad.copy(), bias.grad.copy()
    x.grad = bias.grad = None
    y_ref = reference(x)
    (y_ref * y_ref).sum().backward()
    assert_close(dx, x.grad, "grad")
    assert_close(db, bias.grad, "grad")
    assert not any(isinstance(p, PackedWeight) for p in layer.parameters())  # frozen


def test_quantized_embedding_looks_up_dequantized_rows_and_checks_ids():
    w = np.random.default_rng(2).standard_normal((100, 64)).astype(np.float32)
    table = QuantizedEmbedding(packed_of(w, "Q8_0"))
    ids = np.array([[0, 99, 5], [7, 7, 1]])
    assert np.array_equal(table(ids).numpy(), dequantized(w, "Q8_0")[ids])
    with pytest.raises(IndexError, match="token id 100 is out of range"):
        table(np.array([100]))


def test_a_bad_activation_mode_is_named():
    with pytest.raises(ValueError, match="activations='int4'"):
        QuantizedLinear(packed_of(np.ones((64, 32), np.float32), "Q8_0"), activations="int4")


@pytest.mark.parametrize("activations", ["float32", "q8"])
def test_a_quantized_llama_equals_the_float_model_of_its_dequantized_weights(activations):
    # Every Linear and the embedding quantised (Q4_K needs 256 columns: the widths here),
    # the tied LM head reading the embedding's blocks.
    config = LlamaConfig.tiny(hidden_size=256, intermediate_size=512, num_attention_heads=4,
                              num_key_value_heads=2, tie_word_embeddings=True,
                              vocab_size=96)
    kinds = {"q_proj": "Q4_K", "k_proj": "Q4_0", "v_proj": "Q8_0", "o_proj": "Q6_K",
             "gate_proj": "Q4_1", "up_proj": "Q4_1", "down_proj": "Q4_K",
             "embed_tokens": "Q8_0"}
    quantized, reference = quantized_twin(LlamaForCausalLM, config, kinds, activations)
    assert isinstance(quantized.lm_head, QuantizedLinear)
    assert quantized.lm_head.weight is quantized.model.embed_tokens.weight  # still tied
    assert not any(isinstance(m, (Linear, Embedding)) for _, m in quantized.named_modules())
    ids = np.random.default_rng(3).integers(0, 96, (2, 9))
    with no_grad():
        ours = quantized(ids).logits.numpy()
        theirs = reference(ids).logits.numpy()
    if activations == "float32":
        assert_close(ours, theirs, "model32")
    else:  # llama.cpp's rounding of each activation to 8 bits: about 1% of a logit's size
        assert np.abs(ours - theirs).max() < 0.02 * np.abs(theirs).max()
    # Cached greedy decoding runs through the kernels (one row at a time).
    assert quantized.generate(ids[:1, :4], max_new_tokens=6).shape == (1, 10)
