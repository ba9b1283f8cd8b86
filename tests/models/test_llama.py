"""LLaMA against Hugging Face transformers, on random-init tiny models (nothing downloaded).

Each case is built in transformers (GQA, MQA, MHA; tied and untied heads; LLaMA-3 rope
scaling), given random weights, saved with `save_pretrained` and loaded with
`npplm.from_pretrained`. Logits, loss and every parameter's gradient must agree in float32.
Then: our save_pretrained loads in transformers, cached decoding equals full recomputation,
left padding changes nothing, the cache holds K heads only, parameter counts, bad input.
"""

import dataclasses

import numpy as np
import pytest

import npplm
from autograd import no_grad
from npplm.models import ARCHITECTURES, BASE_MODELS
from npplm.models.llama import LlamaConfig, LlamaForCausalLM, LlamaModel, num_parameters
from tests.models.decoders import (
    LENGTHS,
    B,
    T,
    check_causal_lm_parity,
    left_padded_batch,
    randomise,
    saved_checkpoints,
)
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

SCALING = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
               original_max_position_embeddings=16)  # small, so the tiny D=8 is affected
CASES = {  # id -> LlamaConfig.tiny overrides
    "gqa": {},  # H=4 query heads, K=2 key/value heads
    "gqa_tied": dict(tie_word_embeddings=True),
    "mqa_tied": dict(num_key_value_heads=1, tie_word_embeddings=True),
    "mha": dict(num_key_value_heads=4),
    "llama3_scaling": dict(rope_theta=500000.0, rope_scaling=SCALING),
    "pad_token": dict(pad_token_id=0),  # nn.Embedding's padding_idx
}


def hf_model(config):
    hf_config = transformers.LlamaConfig(**config.to_hf(), attn_implementation="eager")
    torch.manual_seed(0)
    return randomise(transformers.LlamaForCausalLM(hf_config))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return saved_checkpoints(tmp_path_factory,
                             lambda case_id: hf_model(LlamaConfig.tiny(**CASES[case_id])))


# --- parity with transformers ------------------------------------------------------------


@pytest.mark.parametrize("case_id", list(CASES))
@pytest.mark.parametrize("padded", [False, True], ids=["full", "left_padded"])
def test_logits_loss_and_gradients_match_transformers(case_id, padded, checkpoints):
    hf, path = checkpoints(case_id)
    ours = npplm.from_pretrained(path)
    assert isinstance(ours, LlamaForCausalLM) and not ours.training
    check_causal_lm_parity(hf, ours, padded, case_id)
    if case_id == "pad_token":
        assert not ours.model.embed_tokens.weight.grad[0].any()


@pytest.mark.parametrize("case_id", ["gqa", "mqa_tied", "llama3_scaling"])
def test_our_save_pretrained_loads_in_transformers(case_id, checkpoints, tmp_path):
    hf, path = checkpoints(case_id)
    ours = npplm.from_pretrained(path)
    ours.save_pretrained(tmp_path)
    back, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True)
    assert type(back) is type(hf)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert back.config.rope_parameters == hf.config.rope_parameters
    ids = left_padded_batch()[0]
    with torch.no_grad():
        assert_close(back(torch.tensor(ids)).logits.numpy(), hf(torch.tensor(ids)).logits.numpy(),
                     "exact64")
    again = npplm.from_pretrained(tmp_path)
    assert again.config == ours.config
    for name, value in again.state_dict().items():
        assert_close(value, ours.state_dict()[name], "exact64")


def test_backbone_dispatch_and_loading(checkpoints):
    _, path = checkpoints("gqa")
    assert ARCHITECTURES["LlamaForCausalLM"] is LlamaForCausalLM
    assert BASE_MODELS["llama"] is LlamaModel
    lm = npplm.from_pretrained(path)
    backbone = LlamaModel.from_pretrained(path)  # a backbone from a causal-LM checkpoint
    ids = left_padded_batch()[0]
    assert_close(backbone(ids).last_hidden_state, lm.model(ids).last_hidden_state, "exact64")


# --- decoding with a KV cache ------------------------------------------------------------


def new_cache(model, batch, length=T):
    return model.new_cache(batch, length)


@pytest.mark.parametrize("case_id", ["gqa", "mqa_tied", "llama3_scaling"])
def test_cached_decoding_equals_full_recomputation(case_id, checkpoints):
    ours = npplm.from_pretrained(checkpoints(case_id)[1])
    ids = left_padded_batch()[0]
    with no_grad():
        full = ours(ids).logits.numpy()
        cache = new_cache(ours, B)
        steps = [ours(ids[:, :4], cache=cache).logits.numpy()]  # prefill 4 positions
        for t in range(4, T):  # then one token at a time
            steps.append(ours(ids[:, t:t + 1], cache=cache).logits.numpy())
    assert cache.length == T
    assert_close(np.concatenate(steps, axis=1), full, "model32")


def test_cache_stores_only_the_key_value_heads():
    for K in (1, 2, 4):
        model = LlamaForCausalLM(LlamaConfig.tiny(num_key_value_heads=K))
        cache = new_cache(model, B, length=16)
        with no_grad():
            model(left_padded_batch()[0], cache=cache)
        assert cache.keys[0].shape == cache.values[1].shape == (B, K, 16, 8)  # (B, K, S, D)
        assert cache.nbytes == 2 * B * 2 * T * K * 8 * 4  # 2 x B x L x length x K x D x 4


def test_left_padded_batch_equals_each_sequence_alone(checkpoints):
    ours = npplm.from_pretrained(checkpoints("gqa")[1])
    ids, mask, _, _ = left_padded_batch()
    with no_grad():
        batch = ours(ids, attention_mask=mask).logits.numpy()
        cache = new_cache(ours, B)  # and decoding the padded batch with a cache
        steps = [ours(ids[:, :5], attention_mask=mask[:, :5], cache=cache).logits.numpy()]
        for t in range(5, T):
            steps.append(ours(ids[:, t:t + 1], attention_mask=mask[:, :t + 1],
                              cache=cache).logits.numpy())
        for row, n in enumerate(LENGTHS):
            alone = ours(ids[row:row + 1, T - n:]).logits.numpy()[0]
            assert_close(batch[row, T - n:], alone, "model32")
    cached = np.concatenate(steps, axis=1)
    assert_close(cached[mask == 1], batch[mask == 1], "model32")


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")
@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_equals_transformers_generate(num_beams, checkpoints):
    # Greedy decoding and beam search of a left-padded GQA batch, through the one decoding
    # loop (npplm.generation.decode). pad 1: transformers fills finished beams with
    # `pad_token_id or eos_token_id`, so a pad id of 0 would read as eos.
    hf, path = checkpoints("gqa")
    ours = npplm.from_pretrained(path)
    ids, mask, _, _ = left_padded_batch(seed=5)
    eos = int(ours.generate(ids, 4, temperature=0, attention_mask=mask)[0, -1])
    options = dict(num_beams=num_beams, eos_token_id=eos, pad_token_id=1)
    want = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=8,
                       do_sample=False, **options).numpy()
    got = ours.generate(ids, 8, temperature=0, attention_mask=mask, **options)
    np.testing.assert_array_equal(got, want)


# --- training ------------------------------------------------------------------------------


def test_one_sgd_step_lowers_the_loss():
    model = LlamaForCausalLM(LlamaConfig.tiny(), seed=0)
    ids = np.random.default_rng(0).integers(0, 64, (4, 12))
    loss = model(ids, labels=ids).loss
    loss.backward()
    for p in model.parameters():
        p.data -= 0.5 * p.grad
    assert model(ids, labels=ids).loss.item() < loss.item()


# --- configuration and parameter counts ------------------------------------------------------

PRESETS = {
    "llama1_7b": 6_738_415_616, "llama1_13b": 13_015_864_320, "llama1_65b": 65_285_660_672,
    "llama2_7b": 6_738_415_616, "llama2_13b": 13_015_864_320, "llama2_70b": 68_976_648_192,
    "llama3_8b": 8_030_261_248, "llama3_70b": 70_553_706_496, "llama3_1_8b": 8_030_261_248,
}


def hf_count(config):
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config.to_hf()))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", list(PRESETS))
def test_published_sizes_parameter_counts(preset):
    config = getattr(LlamaConfig, preset)()
    assert num_parameters(config) == PRESETS[preset]
    assert hf_count(config) == PRESETS[preset]


def test_parameter_count_matches_an_allocated_model():
    for overrides in ({}, dict(tie_word_embeddings=True), dict(num_key_value_heads=1)):
        config = LlamaConfig.tiny(**overrides)
        assert LlamaForCausalLM(config).num_parameters() == num_parameters(config)
        assert hf_count(config) == num_parameters(config)
        assert LlamaModel(config).num_parameters() == num_parameters(config, with_lm_head=False)


def test_config_round_trips_through_transformers(tmp_path):
    for config in (LlamaConfig.tiny(), LlamaConfig.llama3_1_8b(), LlamaConfig.llama2_70b()):
        hf = transformers.LlamaConfig(**config.to_hf())
        assert LlamaConfig.from_hf(hf.to_dict()) == config
    # transformers 4.x spelling: rope_theta and rope_scaling at the top level.
    old = {**LlamaConfig.tiny().to_hf(), "rope_theta": 500000.0,
           "rope_scaling": {"type": "llama3", **{k: v for k, v in SCALING.items()
                                                  if k != "rope_type"}}}
    del old["rope_parameters"]
    assert LlamaConfig.from_hf(old) == LlamaConfig.tiny(rope_theta=500000.0,
                                                        rope_scaling=SCALING)
    hash(LlamaConfig.llama3_1_8b())  # frozen and hashable


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="num_attention_heads=4 is not divisible by "
                                         "num_key_value_heads=3"):
        LlamaConfig.tiny(num_key_value_heads=3)
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible"):
        LlamaConfig.tiny(hidden_size=30)
    with pytest.raises(ValueError, match="rope_scaling type 'yarn' is not implemented"):
        LlamaConfig.tiny(rope_scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match="attention_bias=true is not implemented"):
        LlamaConfig.from_hf({**LlamaConfig.tiny().to_hf(), "attention_bias": True})
    with pytest.raises(ValueError, match="model_type 'bert' is not llama"):
        LlamaConfig.from_hf({"model_type": "bert"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        LlamaConfig.tiny().hidden_size = 64


# --- input errors ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm():
    return LlamaForCausalLM(LlamaConfig.tiny()).eval()


def test_bad_input_is_named(tiny_lm):
    with pytest.raises(IndexError, match=r"token id 64 is out of range for a table of 64 rows"):
        tiny_lm(np.array([[1, 64]]))
    with pytest.raises(TypeError, match="input_ids must hold integers"):
        tiny_lm(np.ones((1, 3)))
    with pytest.raises(ValueError, match="input_ids has 65 positions after 0 cached ones, 65 "
                                         "in all, but max_position_embeddings is 64"):
        tiny_lm(np.ones((1, 65), np.int64))
    tiny_lm(np.ones((1, 64), np.int64))  # the limit itself is fine
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\) but must be \(B, "
                                         r"cache length \+ T\) = \(1, 0 \+ 4\)"):
        tiny_lm(np.ones((1, 4), np.int64), attention_mask=np.ones((1, 3), np.int64))
    cache = new_cache(tiny_lm, 1, length=64)
    with no_grad():
        tiny_lm(np.ones((1, 60), np.int64), cache=cache)
        with pytest.raises(ValueError, match="input_ids has 5 positions after 60 cached ones, "
                                             "65 in all, but max_position_embeddings is 64"):
            tiny_lm(np.ones((1, 5), np.int64), cache=cache)
        with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 1\) but must be "
                                             r"\(B, cache length \+ T\) = \(1, 60 \+ 1\)"):
            tiny_lm(np.ones((1, 1), np.int64), attention_mask=np.ones((1, 1)), cache=cache)
    with pytest.raises(ValueError, match=r"labels has shape \(1, 3\) but the logits are for "
                                         r"\(1, 4\) positions"):
        tiny_lm(np.ones((1, 4), np.int64), labels=np.ones((1, 3), np.int64))
