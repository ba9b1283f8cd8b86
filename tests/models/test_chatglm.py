"""GLM-4 / ChatGLM (transformers' "glm") against Hugging Face transformers, on random-init
tiny models (nothing downloaded).

Each case is built in transformers' GlmForCausalLM (GQA, MQA with head_dim set apart from
C / H, MHA; a quarter, half or all of each head rotated; with and without q/k/v biases; a
tied head and a pad token), given random weights, saved with `save_pretrained` and loaded
with `npplm.from_pretrained`. Logits, loss and every parameter's gradient must agree in
float32, with and without left padding. Then: the rotation alone against transformers'
apply_rotary_pos_emb and finite differences (and a control: LLaMA's pairing fails), our
save_pretrained loads in transformers, cached decoding equals full recomputation, greedy
and beam generation equal transformers' token for token, the classifier head, parameter
counts of the published sizes, the config round trip and what it refuses.
"""

import dataclasses

import numpy as np
import pytest

import npplm
from autograd import Tensor, backend, concatenate, gradcheck, no_grad, to_numpy
from gpu import cuda_available
from npplm.layers import apply_rotary, rope_cos_sin, rope_frequencies
from npplm.models import ARCHITECTURES, BASE_MODELS, glm
from npplm.models import chatglm as chatglm_module
from npplm.models.chatglm import (
    GlmConfig,
    GlmForCausalLM,
    GlmForSequenceClassification,
    GlmModel,
    apply_partial_rotary,
    interleaved_cos_sin,
    num_parameters,
)
from tests.models.decoders import (
    LENGTHS,
    B,
    T,
    check_causal_lm_parity,
    left_padded_batch,
    max_diff,
    randomise,
    saved_checkpoints,
)
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
modeling_glm = pytest.importorskip("transformers.models.glm.modeling_glm")

CASES = {  # id -> GlmConfig.tiny overrides (tiny: H=4, K=2, D=8, R=4, q/k/v biases)
    "gqa": {},  # GLM-4's layout: GQA, half of each head rotated
    "full_rotary": dict(partial_rotary_factor=1.0),  # R = D: the whole head
    # head_dim set explicitly (H D = 64 != C = 32), a quarter rotated (R = 4 of 16), K = 1
    "head_dim_mqa": dict(head_dim=16, partial_rotary_factor=0.25, num_key_value_heads=1),
    "no_bias_tied": dict(attention_bias=False, tie_word_embeddings=True),
    "mha_pad_token": dict(num_key_value_heads=4, pad_token_id=0),  # nn.Embedding's padding_idx
}


def hf_model(config, cls=None):
    hf_config = transformers.GlmConfig(**config.to_hf(), attn_implementation="eager")
    torch.manual_seed(0)
    return randomise((cls or transformers.GlmForCausalLM)(hf_config))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return saved_checkpoints(tmp_path_factory,
                             lambda case_id: hf_model(GlmConfig.tiny(**CASES[case_id])))


# --- parity with transformers ------------------------------------------------------------


@pytest.mark.parametrize("case_id", list(CASES))
@pytest.mark.parametrize("padded", [False, True], ids=["full", "left_padded"])
def test_logits_loss_and_gradients_match_transformers(case_id, padded, checkpoints):
    hf, path = checkpoints(case_id)
    ours = npplm.from_pretrained(path)
    assert isinstance(ours, GlmForCausalLM) and not ours.training
    params = check_causal_lm_parity(hf, ours, padded, case_id)
    biases = {f"model.layers.{i}.self_attn.{p}_proj.bias" for i in range(2) for p in "qkv"}
    assert {n for n in params if n.endswith("bias")} == (
        biases if ours.config.attention_bias else set())
    if ours.config.pad_token_id is not None:
        assert not ours.model.embed_tokens.weight.grad[ours.config.pad_token_id].any()


@pytest.mark.parametrize("case_id", ["gqa", "no_bias_tied"])
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
    assert_close(ours(ids).logits, hf(torch.tensor(ids)).logits.detach().numpy(), "model32")
    again = npplm.from_pretrained(tmp_path)
    assert again.config == ours.config
    for name, value in again.state_dict().items():
        assert_close(value, ours.state_dict()[name], "exact64")


def test_dispatch_tables_and_backbone_loading(checkpoints, tmp_path):
    _, path = checkpoints("gqa")
    assert ARCHITECTURES["GlmForCausalLM"] is GlmForCausalLM
    assert ARCHITECTURES["GlmModel"] is BASE_MODELS["glm"] is GlmModel
    assert ARCHITECTURES["GlmForSequenceClassification"] is GlmForSequenceClassification
    # The 2021 GLM keeps its own model_type: "glm" is transformers' GLM-4.
    assert glm.MODEL_TYPE == "npplm-glm" and glm.MODEL_TYPE not in BASE_MODELS
    assert ARCHITECTURES["GLMForConditionalGeneration"] is glm.GLMForConditionalGeneration
    lm = npplm.from_pretrained(path)
    backbone = GlmModel.from_pretrained(path)  # a backbone from a causal-LM checkpoint
    ids = left_padded_batch()[0]
    assert_close(backbone(ids).last_hidden_state, lm.model(ids).last_hidden_state, "exact64")
    # A folder naming no architecture loads as the base model of model_type "glm".
    hf_backbone = randomise(transformers.GlmModel(transformers.GlmConfig(
        **GlmConfig.tiny().to_hf(), attn_implementation="eager")))
    hf_backbone.config.architectures = None
    hf_backbone.save_pretrained(tmp_path)
    ours = npplm.from_pretrained(tmp_path)
    assert type(ours) is GlmModel
    with torch.no_grad():
        want = hf_backbone(torch.tensor(ids)).last_hidden_state.numpy()
    assert_close(ours(ids).last_hidden_state, want, "model32")


def test_sequence_classification_matches_transformers(tmp_path):
    config = GlmConfig.tiny(num_labels=3, pad_token_id=0)
    hf = hf_model(config, transformers.GlmForSequenceClassification)
    hf.save_pretrained(tmp_path)
    ours = npplm.from_pretrained(tmp_path)
    assert isinstance(ours, GlmForSequenceClassification)
    ids, mask, _, _ = left_padded_batch()
    labels = np.array([0, 2, 1])
    want = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
    got = ours(ids, attention_mask=mask, labels=labels)
    assert_close(got.logits, want.logits.detach().numpy(), "model32")
    assert_close(got.loss, want.loss.detach().numpy(), "model32")
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "ours", attn_implementation="eager").eval()
    assert type(back) is transformers.GlmForSequenceClassification
    with torch.no_grad():
        again = back(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert_close(again, want.logits.detach().numpy(), "model32")


# --- the rotation: first R dims, neighbouring pairs -------------------------------------------


def tables(positions, config, dtype=np.float32):
    """Our cos/sin tables (B, T, R) for positions (B, T), as GlmModel.layer_inputs makes them."""
    w = rope_frequencies(config.rotary_dim, config.rope_theta)
    return interleaved_cos_sin(*rope_cos_sin(positions, w, dtype))


@pytest.mark.parametrize("factor", [0.25, 0.5, 1.0])
def test_rotation_matches_transformers_apply_rotary_pos_emb(factor):
    config = GlmConfig.tiny(head_dim=16, partial_rotary_factor=factor)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((B, 4, T, 16)).astype(np.float32)  # (B, H, T, D)
    k = rng.standard_normal((B, 2, T, 16)).astype(np.float32)  # (B, K, T, D)
    g = rng.standard_normal((B, 4, T, 16)).astype(np.float32)  # a cotangent for q
    # (B, T), each row its own positions. Small ones: transformers forms the angles in
    # float32, we in float64, and at position m they differ by about m * 6e-8.
    positions = left_padded_batch()[3]
    hf_config = transformers.GlmConfig(**config.to_hf())
    rotary = modeling_glm.GlmRotaryEmbedding(hf_config)
    tq, tk = torch.tensor(q, requires_grad=True), torch.tensor(k)
    hf_cos, hf_sin = rotary(tq, torch.tensor(positions))
    hf_q, hf_k = modeling_glm.apply_rotary_pos_emb(tq, tk, hf_cos, hf_sin)
    (hf_q * torch.tensor(g)).sum().backward()

    cos, sin = tables(positions, config)
    assert cos.shape == (B, T, config.rotary_dim) and cos.dtype == np.float32
    ours_q = Tensor(q, requires_grad=True)
    rotated_q = apply_partial_rotary(ours_q, cos, sin)
    rotated_q.backward(g)
    assert_close(rotated_q, hf_q.detach().numpy(), "float32")
    assert_close(apply_partial_rotary(Tensor(k), cos, sin), hf_k.numpy(), "float32")
    assert_close(ours_q.grad, tq.grad.numpy(), "float32")
    # The dims past R pass through, value and gradient.
    R = config.rotary_dim
    np.testing.assert_array_equal(rotated_q.numpy()[..., R:], q[..., R:])
    np.testing.assert_array_equal(ours_q.grad[..., R:], g[..., R:])


def test_rotation_turns_each_neighbouring_pair_in_its_plane():
    config = GlmConfig.tiny(head_dim=16)  # R = 8: pairs (0, 1), (2, 3), (4, 5), (6, 7)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 5, 16))
    positions = rng.integers(0, 10000, (1, 5))
    y = apply_partial_rotary(Tensor(x), *tables(positions, config, np.float64)).numpy()
    pair_norms = lambda a: np.hypot(a[..., 0:8:2], a[..., 1:8:2])  # noqa: E731
    assert_close(pair_norms(y), pair_norms(x), "float64")
    # Pair j at position m turns by m w_j: read the angle back from the complex numbers.
    w = rope_frequencies(8, config.rope_theta)
    turned = (y[..., 0:8:2] + 1j * y[..., 1:8:2]) / (x[..., 0:8:2] + 1j * x[..., 1:8:2])
    expected = np.exp(1j * positions[0, :, None] * w)  # (T, R/2), every head alike
    assert_close(turned, np.broadcast_to(expected, turned.shape), "float64")
    at_zero = apply_partial_rotary(Tensor(x), *tables(np.zeros((1, 5), int), config,
                                                      np.float64)).numpy()
    assert_close(at_zero, x, "exact64")


@pytest.mark.parametrize("factor", [0.5, 1.0])
def test_rotation_gradient_matches_finite_differences(factor):
    config = GlmConfig.tiny(partial_rotary_factor=factor)
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 8))
    cos, sin = tables(np.array([[0, 1, 2, 3], [7, 8, 9, 10]]), config, np.float64)
    assert gradcheck(lambda t: apply_partial_rotary(t, cos, sin), x)


def test_llama_pairing_breaks_parity(checkpoints, monkeypatch):
    # The control: rotating the same dims with LLaMA's pairing (x[j], x[j + R/2]) and its
    # tables moves the logits far past the tolerance, so the parity tests above do tell
    # the two pairings apart.
    hf, path = checkpoints("gqa")
    ours = npplm.from_pretrained(path)
    ids = left_padded_batch()[0]
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()
    assert_close(ours(ids).logits, want, "model32")

    def llama_pairs(x, cos, sin):
        R = cos.shape[-1]
        return concatenate(apply_rotary(x[..., :R], cos, sin), x[..., R:], axis=-1)

    monkeypatch.setattr(chatglm_module, "interleaved_cos_sin", lambda cos, sin: (cos, sin))
    monkeypatch.setattr(chatglm_module, "apply_partial_rotary", llama_pairs)
    with no_grad():
        assert max_diff(ours(ids).logits.numpy(), want) > 1e-2


# --- decoding with a KV cache ------------------------------------------------------------


@pytest.mark.parametrize("case_id", ["gqa", "head_dim_mqa"])
def test_cached_decoding_equals_full_recomputation(case_id, checkpoints):
    ours = npplm.from_pretrained(checkpoints(case_id)[1])
    ids = left_padded_batch()[0]
    with no_grad():
        full = ours(ids).logits.numpy()
        cache = ours.new_cache(B, T)
        steps = [ours(ids[:, :4], cache=cache).logits.numpy()]  # prefill 4 positions
        for t in range(4, T):  # then one token at a time
            steps.append(ours(ids[:, t:t + 1], cache=cache).logits.numpy())
    assert cache.length == T
    K, D = ours.config.num_key_value_heads, ours.config.head_dim
    assert cache.keys[0].shape[1:] == (K, T, D)  # (B, K, S, D): K heads of the full D
    assert_close(np.concatenate(steps, axis=1), full, "model32")


def test_left_padded_batch_equals_each_sequence_alone(checkpoints):
    ours = npplm.from_pretrained(checkpoints("gqa")[1])
    ids, mask, _, _ = left_padded_batch()
    with no_grad():
        batch = ours(ids, attention_mask=mask).logits.numpy()
        cache = ours.new_cache(B, T)  # and decoding the padded batch with a cache
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
@pytest.mark.parametrize("case_id,num_beams", [("gqa", 1), ("head_dim_mqa", 1),
                                               ("full_rotary", 1), ("gqa", 3)])
def test_generate_equals_transformers_generate(case_id, num_beams, checkpoints):
    # Greedy decoding (and beam search once) of a left-padded batch with the KV cache,
    # through the one decoding loop (npplm.generation.decode), as for LLaMA. pad 1:
    # transformers fills finished rows with `pad_token_id or eos_token_id`.
    hf, path = checkpoints(case_id)
    ours = npplm.from_pretrained(path)
    ids, mask, _, _ = left_padded_batch(seed=5)
    eos = int(ours.generate(ids, 4, temperature=0, attention_mask=mask)[0, -1])
    options = dict(num_beams=num_beams, eos_token_id=eos, pad_token_id=1)
    want = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=8,
                       do_sample=False, **options).numpy()
    got = ours.generate(ids, 8, temperature=0, attention_mask=mask, **options)
    np.testing.assert_array_equal(got, want)


# --- devices and training ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["strict", pytest.param("cupy", marks=pytest.mark.gpu)])
def test_device_backend_gives_numpys_numbers(name):
    # On the strict backend (NumPy with CuPy's rules: an implicit host/device mix raises,
    # autograd/strict.py) and on CuPy where a device is present: the same logits, gradients
    # and cached greedy tokens as NumPy, from the same seed.
    if name == "cupy" and not cuda_available():
        pytest.skip("no CUDA device with CuPy here")
    ids, mask, labels, _ = left_padded_batch()
    out = {}
    for backend_name in ("numpy", name):
        with backend.selected(backend_name):
            model = GlmForCausalLM(GlmConfig.tiny(**CASES["head_dim_mqa"]), seed=0)
            result = model(ids, attention_mask=mask, labels=labels)
            result.loss.backward()
            grads = {k: to_numpy(p.grad) for k, p in model.named_parameters()}
            tokens = model.eval().generate(ids, 5, temperature=0, attention_mask=mask)
            out[backend_name] = to_numpy(result.logits.data), grads, tokens
    (logits, grads, tokens), (device_logits, device_grads, device_tokens) = out.values()
    assert_close(device_logits, logits, "float32")
    for key, grad in grads.items():
        assert_close(device_grads[key], grad, "grad")
    np.testing.assert_array_equal(device_tokens, tokens)


def test_one_sgd_step_lowers_the_loss():
    model = GlmForCausalLM(GlmConfig.tiny(), seed=0)
    ids = np.random.default_rng(0).integers(0, 64, (4, 12))
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # the biases learn too
    for p in model.parameters():
        p.data -= 0.5 * p.grad
    assert model(ids, labels=ids).loss.item() < loss.item()


# --- configuration and parameter counts ------------------------------------------------------

PRESETS = {"glm4_9b": 9_399_951_360, "glm4_9b_chat": 9_399_951_360,
           "chatglm3_6b": 6_243_584_000}

# THUDM/glm-4-9b-hf's config.json in transformers 4.x's layout: rope_theta and
# partial_rotary_factor at the top level, eos a list.
GLM4_9B_HF = {
    "architectures": ["GlmForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
    "eos_token_id": [151329, 151336, 151338], "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 13696,
    "max_position_embeddings": 8192, "model_type": "glm", "num_attention_heads": 32,
    "num_hidden_layers": 40, "num_key_value_heads": 2, "pad_token_id": 151329,
    "partial_rotary_factor": 0.5, "rms_norm_eps": 1.5625e-07, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
    "vocab_size": 151552}


def hf_count(config, cls=None):
    with torch.device("meta"):
        model = (cls or transformers.GlmForCausalLM)(transformers.GlmConfig(**config.to_hf()))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", list(PRESETS))
def test_published_sizes_parameter_counts(preset):
    config = getattr(GlmConfig, preset)()
    assert config.head_dim == 128 and config.rotary_dim == 64
    assert num_parameters(config) == PRESETS[preset]
    assert hf_count(config) == PRESETS[preset]


def test_parameter_count_matches_an_allocated_model():
    for overrides in CASES.values():
        config = GlmConfig.tiny(**overrides)
        assert GlmForCausalLM(config).num_parameters() == num_parameters(config)
        assert hf_count(config) == num_parameters(config)
        assert GlmModel(config).num_parameters() == num_parameters(config, with_lm_head=False)
        assert hf_count(config, transformers.GlmModel) == num_parameters(config, False)


def test_config_round_trips():
    for config in [GlmConfig.tiny(**o) for o in CASES.values()] + [
            getattr(GlmConfig, p)() for p in PRESETS]:
        assert GlmConfig.from_hf(config.to_hf()) == config
        hf = transformers.GlmConfig(**config.to_hf())
        assert hf.rope_parameters == {"rope_type": "default", "rope_theta": config.rope_theta,
                                      "partial_rotary_factor": config.partial_rotary_factor}
        assert GlmConfig.from_hf(hf.to_dict()) == config
    # The published 4.x file, read directly and through transformers 5.
    assert GlmConfig.from_hf(GLM4_9B_HF) == GlmConfig.glm4_9b()
    assert GlmConfig.from_hf(transformers.GlmConfig(**GLM4_9B_HF).to_dict()) == GlmConfig.glm4_9b()
    assert GlmConfig.glm4_9b().eos_token_id == (151329, 151336, 151338)
    assert GlmConfig.glm4_9b().to_hf()["eos_token_id"] == [151329, 151336, 151338]
    # No partial_rotary_factor anywhere: 0.5, as transformers' GlmConfig fills it in.
    bare = {**GlmConfig.tiny().to_hf(), "rope_parameters": {"rope_type": "default",
                                                             "rope_theta": 10000.0}}
    assert GlmConfig.from_hf(bare).partial_rotary_factor == 0.5
    assert transformers.GlmConfig(**bare).rope_parameters["partial_rotary_factor"] == 0.5
    hash(GlmConfig.glm4_9b())  # frozen and hashable, the eos list a tuple


def test_config_refuses_what_is_not_implemented():
    hf = GlmConfig.tiny().to_hf()
    with pytest.raises(ValueError, match="model_type 'chatglm' is not 'glm'"):
        GlmConfig.from_hf({**hf, "model_type": "chatglm"})
    with pytest.raises(ValueError, match="rope scaling 'yarn' is not implemented"):
        GlmConfig.from_hf({**hf, "rope_parameters": {"rope_type": "yarn", "factor": 4.0,
                                                     "rope_theta": 1e4}})
    with pytest.raises(ValueError, match="rope scaling 'linear' is not implemented"):
        GlmConfig.from_hf({**hf, "rope_scaling": {"type": "linear", "factor": 2.0}})
    with pytest.raises(ValueError, match="attention_dropout=0.1 is not implemented"):
        GlmConfig.from_hf({**hf, "attention_dropout": 0.1})
    with pytest.raises(ValueError, match="hidden_act='gelu' is not implemented"):
        GlmConfig.tiny(hidden_act="gelu")
    for factor in (0.0, 1.5):
        with pytest.raises(ValueError, match="partial_rotary_factor=.* must be in"):
            GlmConfig.tiny(partial_rotary_factor=factor)
    with pytest.raises(ValueError, match="gives 3 rotated dims"):
        GlmConfig.tiny(head_dim=6)  # R = 3: no whole pairs
    with pytest.raises(ValueError, match="num_attention_heads=4 is not divisible by "
                                         "num_key_value_heads=3"):
        GlmConfig.tiny(num_key_value_heads=3)
    with pytest.raises(ValueError, match="pad_token_id=64 is outside the vocabulary"):
        GlmConfig.tiny(pad_token_id=64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        GlmConfig.tiny().hidden_size = 64


def test_a_reward_model_starts_from_the_causal_lm():
    from npplm.alignment.reward import reward_model_from

    policy = GlmForCausalLM(GlmConfig.tiny(), seed=0)
    reward = reward_model_from(policy, pad_token_id=0, seed=1)
    assert type(reward) is GlmForSequenceClassification and reward.config.num_labels == 1
    mine, theirs = reward.model.state_dict(), policy.model.state_dict()
    assert mine.keys() == theirs.keys()
    for name, value in theirs.items():
        np.testing.assert_array_equal(mine[name], value)
    assert reward(np.array([[3, 4, 5]])).logits.shape == (1, 1)
