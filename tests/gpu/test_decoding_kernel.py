"""A block's one-call decoding step (gpu/numba_cpu/decoding.py) against the model's own
forward (the primitives and QuantizedLinear's kernels), on tiny quantised LLaMA and Qwen2.

Tolerance: the products are the same tile code in both paths, so they agree exactly; the
norms, rotations, softmax and SiLU sum the same float32 terms in another order, each within
a few float32 roundings (2^-24 relative) of terms of size about 1, through two blocks: 1e-5
absolute on logits and cached keys of size about 1 ("model32") holds with a wide margin
(the observed difference is 4e-7).
"""

import numpy as np
import pytest

import npplm.models.llama as llama
from autograd import no_grad
from gpu.numba_cpu import decoding
from npplm.generation.kv_cache import Int8KVCache, quantize_int8
from npplm.models.llama import LlamaConfig, LlamaForCausalLM
from npplm.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from tests.gpu.spies import spy_on
from tests.quantization.models import quantized_twin
from tests.tolerances import assert_close

MIXED = {"q_proj": "Q4_K", "k_proj": "Q4_0", "v_proj": "Q8_0", "o_proj": "Q6_K",
         "gate_proj": "Q4_1", "up_proj": "Q4_1", "down_proj": "Q4_K", "embed_tokens": "Q8_0"}
PLAIN = {"q_proj": "Q4_1", "k_proj": "Q4_0", "v_proj": "Q8_0", "o_proj": "Q4_1",
         "gate_proj": "Q4_1", "up_proj": "Q8_0", "down_proj": "Q4_0"}


def llama_model(activations="float32"):
    # Widths of 256 for the K-quants; 4 query heads on 2 key/value heads (GQA).
    config = LlamaConfig.tiny(hidden_size=256, intermediate_size=512, num_attention_heads=4,
                              num_key_value_heads=2, tie_word_embeddings=True, vocab_size=96)
    return quantized_twin(LlamaForCausalLM, config, MIXED, activations)[0]


def qwen2_model():
    # q, k, v with biases; 96 rows a projection: a tile of 64 and a padded one.
    config = Qwen2Config.tiny(hidden_size=64, intermediate_size=96, num_attention_heads=4,
                              num_key_value_heads=2, vocab_size=96)
    return quantized_twin(Qwen2ForCausalLM, config, PLAIN)[0]


def decode(model, prompt, tokens, one_call, monkeypatch=None, kv_cache_dtype=None):
    """Logits of each of `tokens` fed one at a time after `prompt` (1, T), and the cache."""
    if not one_call:
        monkeypatch.setattr(llama, "one_call_a_block", lambda *args: False)
    cache = model.new_cache(1, prompt.shape[1] + len(tokens), dtype=kv_cache_dtype)
    with no_grad():
        model(prompt, cache=cache)
        logits = [model(np.array([[t]]), cache=cache).logits.numpy() for t in tokens]
    if not one_call:
        monkeypatch.undo()
    return np.concatenate(logits), cache


@pytest.mark.parametrize("make", [llama_model, lambda: llama_model("q8"), qwen2_model],
                         ids=["llama-mixed-formats", "llama-q8-activations", "qwen2-biases"])
def test_a_one_call_step_equals_the_blocks_forward(make, monkeypatch):
    model = make()
    prompt = np.random.default_rng(0).integers(0, 96, (1, 7))
    tokens = [5, 90, 17, 17, 3]
    calls = spy_on(monkeypatch, decoding, ["llama_block_step"])
    ours, cache = decode(model, prompt, tokens, one_call=True)
    assert len(calls) == len(tokens) * model.config.num_hidden_layers  # every step took it
    theirs, reference_cache = decode(model, prompt, tokens, False, monkeypatch)
    assert ours.dtype == np.float32
    assert_close(ours, theirs, "model32")
    assert cache.length == reference_cache.length == 12
    for ours_kv, theirs_kv in zip(cache._arrays(), reference_cache._arrays()):
        assert_close(ours_kv[:, :, :12], theirs_kv[:, :, :12], "model32")


@pytest.mark.parametrize("make", [llama_model, qwen2_model], ids=["llama", "qwen2"])
def test_with_an_int8_cache_it_quantises_and_reads_as_the_blocks_forward(make, monkeypatch):
    # The step writes each new key and value as kv_cache.quantize_int8 does (the same
    # codes and float16 scales, test below) and reads them dequantised; its vectors differ
    # from the forward's by float32 rounding, so a code may land one step apart at a
    # rounding tie (none does here).
    model = make()
    prompt = np.random.default_rng(5).integers(0, 96, (1, 7))
    tokens = [5, 90, 17, 17, 3]
    calls = spy_on(monkeypatch, decoding, ["llama_block_step"])
    ours, cache = decode(model, prompt, tokens, True, kv_cache_dtype="int8")
    assert len(calls) == len(tokens) * model.config.num_hidden_layers
    theirs, reference_cache = decode(model, prompt, tokens, False, monkeypatch, "int8")
    assert type(cache).__name__ == "Int8KVCache" and cache.length == 12
    assert_close(ours, theirs, "model32")
    for ours_kv, theirs_kv in zip(cache._arrays(), reference_cache._arrays()):
        np.testing.assert_array_equal(ours_kv[:, :, :12], theirs_kv[:, :, :12])


@pytest.mark.parametrize("seed", range(4))
def test_the_step_quantises_a_vector_as_quantize_int8(seed):
    rng = np.random.default_rng(seed)
    D = 64
    x = rng.standard_normal((8, D)).astype(np.float32) * np.float32(10.0 ** rng.integers(-3, 4))
    x[0] = 0  # an all-zero vector: scale 0, codes 0
    x[1] *= np.float32(1e-9)  # a tiny one: a subnormal float16 scale
    x[2] = np.arange(D) - 32  # max|x| = 32: x / s lands on ties (x.5) for some entries
    x[3, :4] = [635.0, -635.0, 2.5, 3.5]  # s = 5, exact: 2.5 / 5 = 0.5 rounds to even
    codes = np.zeros((1, 1, 8, D), np.int8)
    bits = np.zeros((1, 1, 8), np.uint16)
    for p in range(8):
        decoding.store_int8(codes, bits, 0, 0, p, x[p])
    expected_codes, expected_scales = quantize_int8(x)
    np.testing.assert_array_equal(codes[0, 0], expected_codes)
    np.testing.assert_array_equal(bits[0, 0].view(np.float16), expected_scales)
    with pytest.raises(OverflowError, match="float16 scale"):
        decoding.store_int8(codes, bits, 0, 0, 0, np.full(D, 1e7, np.float32))


def test_generate_takes_it_with_its_all_ones_mask_and_picks_the_same_tokens(monkeypatch):
    model = llama_model()
    prompt = np.random.default_rng(1).integers(0, 96, (1, 5))
    calls = spy_on(monkeypatch, decoding, ["llama_block_step"])
    ours = model.generate(prompt, max_new_tokens=8, temperature=0)
    assert len(calls) == 7 * model.config.num_hidden_layers  # the 7 steps after the prefill
    monkeypatch.setattr(llama, "one_call_a_block", lambda *args: False)
    assert np.array_equal(ours, model.generate(prompt, max_new_tokens=8, temperature=0))


@pytest.mark.parametrize("make", [llama_model, qwen2_model], ids=["llama", "qwen2"])
def test_a_left_padded_batch_steps_as_the_blocks_forward(make, monkeypatch):
    # Prompts of 7, 4 and 1 tokens, left-padded (the third row's padding is all but one
    # key), each row at its own position; a row whose every key is padding; rows enough
    # (6 > ROWS_APART) for the tiles that unpack a byte once for every row, and 3 for the
    # one-row tiles.
    model = make()
    rng = np.random.default_rng(2)
    prompt = rng.integers(0, 96, (6, 7))
    mask = np.ones((6, 7), dtype=np.int64)
    mask[1, :3] = mask[2, :6] = mask[3, :] = mask[4, :2] = 0
    new = np.array([[1], [1], [1], [0], [1], [1]])
    for rows in (6, 3):
        ours, theirs = (decode_padded(model, prompt[:rows], mask[:rows], new[:rows],
                                      one_call, monkeypatch) for one_call in (True, False))
        assert_close(ours, theirs, "model32")


def decode_padded(model, prompt, mask, new, one_call, monkeypatch):
    """Logits of 4 steps after a padded prompt, and the filled cache arrays, by the one-call
    step (checked to be taken) or by the blocks' forward."""
    calls = spy_on(monkeypatch, decoding, ["llama_block_step"])
    if not one_call:
        monkeypatch.setattr(llama, "one_call_a_block", lambda *args: False)
    B = len(prompt)
    cache, m, logits = model.new_cache(B, 12), mask, []
    with no_grad():
        model(prompt, attention_mask=m, cache=cache)
        for t in range(4):
            m = np.concatenate([m, new], axis=1)
            tokens = np.full((B, 1), 7 * t + 5)
            logits.append(model(tokens, attention_mask=m, cache=cache).logits.numpy())
    monkeypatch.undo()
    assert len(calls) == (4 * model.config.num_hidden_layers if one_call else 0)
    return np.concatenate([np.concatenate(logits, axis=1).ravel(),
                           *(a[:, :, :11].ravel() for a in cache._arrays())])


def test_beam_search_takes_it_and_finds_the_same_beams(monkeypatch):
    model = llama_model()
    prompt = np.random.default_rng(4).integers(0, 96, (1, 5))
    calls = spy_on(monkeypatch, decoding, ["llama_block_step"])
    ours = model.generate(prompt, max_new_tokens=6, num_beams=3, temperature=0)
    assert len(calls) == 5 * model.config.num_hidden_layers
    monkeypatch.setattr(llama, "one_call_a_block", lambda *args: False)
    assert np.array_equal(ours, model.generate(prompt, max_new_tokens=6, num_beams=3,
                                               temperature=0))


class WideScales(Int8KVCache):
    scale_dtype = np.float32


def test_other_steps_take_the_blocks_forward(monkeypatch):
    model = llama_model()
    calls = spy_on(monkeypatch, decoding, ["llama_block_step"])
    prompt = np.array([[1, 2, 3]])
    with no_grad():
        model(prompt, cache=model.new_cache(1, 8))  # T = 3: a prefill
        cache = WideScales(model.config.num_hidden_layers, 1, 2, 64, 8, np.float32)
        model(np.array([[1]]), cache=cache)  # an int8 cache with float32 scales
        cache = model.new_cache(1, 8)
        model(np.array([[1]]), cache=cache, position_ids=np.array([[4]]))  # own positions
    model(np.array([[1]]), cache=model.new_cache(1, 8))  # recording for a gradient
    assert calls == []


def test_a_full_cache_is_refused_before_the_kernel_writes():
    model = llama_model()
    cache = model.new_cache(1, 2)
    with no_grad():
        model(np.array([[1, 2]]), cache=cache)
        with pytest.raises(ValueError, match="KV cache full: 2 cached"):
            model(np.array([[3]]), cache=cache)


def test_glm4_which_shares_the_backbone_but_not_the_block_takes_its_forward(monkeypatch):
    from npplm.models.chatglm import GlmConfig, GlmForCausalLM

    config = GlmConfig.tiny(hidden_size=64, intermediate_size=96, vocab_size=96)
    every = {name: "Q8_0" for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj",
                                        "down_proj")}
    model = quantized_twin(GlmForCausalLM, config, every)[0]
    calls = spy_on(monkeypatch, decoding, ["llama_block_step"])
    assert model.generate(np.array([[1, 2, 3]]), max_new_tokens=3, temperature=0).shape \
        == (1, 6)
    assert calls == []
