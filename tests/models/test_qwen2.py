"""Qwen2 against Hugging Face transformers, on random-init tiny models (nothing downloaded).

Each case is built in transformers (GQA, MQA, MHA; tied and untied heads; a pad token), given
random weights (the q/k/v biases included), saved with `save_pretrained` and loaded with
`npplm.from_pretrained`. Logits, loss and every parameter's gradient must agree in float32.
Then: our save_pretrained loads in transformers, cached decoding equals full recomputation,
generation equals transformers' token for token, the classifier head, parameter counts of
the published sizes, the config round trip and what it refuses, and GGUF files of the qwen2
architecture written as llama.cpp's converter writes them (q/k rows NOT permuted).
"""

import dataclasses

import numpy as np
import pytest

import npplm
from autograd import no_grad
from npplm.io import CheckpointError
from npplm.models import ARCHITECTURES, BASE_MODELS, GGUF_ARCHITECTURES
from npplm.models.llama import LlamaForCausalLM, unpermute_rotary
from npplm.models.qwen2 import (
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2Model,
    num_parameters,
    read_gguf,
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

CASES = {  # id -> Qwen2Config.tiny overrides
    "gqa": {},  # H=4 query heads, K=2 key/value heads
    "gqa_tied": dict(tie_word_embeddings=True),  # as the 0.5B and 1.5B models
    "mqa_tied": dict(num_key_value_heads=1, tie_word_embeddings=True),
    "mha": dict(num_key_value_heads=4),
    "pad_token": dict(pad_token_id=0),  # nn.Embedding's padding_idx
}


def hf_model(config, cls=None):
    hf_config = transformers.Qwen2Config(**config.to_hf(), attn_implementation="eager")
    torch.manual_seed(0)
    return randomise((cls or transformers.Qwen2ForCausalLM)(hf_config))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return saved_checkpoints(tmp_path_factory,
                             lambda case_id: hf_model(Qwen2Config.tiny(**CASES[case_id])))


# --- parity with transformers ------------------------------------------------------------


@pytest.mark.parametrize("case_id", list(CASES))
@pytest.mark.parametrize("padded", [False, True], ids=["full", "left_padded"])
def test_logits_loss_and_gradients_match_transformers(case_id, padded, checkpoints):
    hf, path = checkpoints(case_id)
    ours = npplm.from_pretrained(path)
    assert isinstance(ours, Qwen2ForCausalLM) and not ours.training
    params = check_causal_lm_parity(hf, ours, padded, case_id)
    assert {n for n in params if n.endswith("bias")} == {
        f"model.layers.{i}.self_attn.{p}_proj.bias" for i in range(2) for p in "qkv"}
    if case_id == "pad_token":
        assert not ours.model.embed_tokens.weight.grad[0].any()


def test_biases_matter(checkpoints):
    # The q/k/v biases are read and used: zeroing them moves the logits well past the
    # tolerance (a model that silently dropped them would fail the parity test above).
    hf, path = checkpoints("gqa")
    ours = npplm.from_pretrained(path)
    ids = left_padded_batch()[0]
    with no_grad():
        before = ours(ids).logits.numpy()
        for layer in ours.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj,
                         layer.self_attn.v_proj):
                proj.bias.data[...] = 0
        assert max_diff(ours(ids).logits.numpy(), before) > 1e-2


@pytest.mark.parametrize("case_id", ["gqa", "mqa_tied"])
def test_our_save_pretrained_loads_in_transformers(case_id, checkpoints, tmp_path):
    hf, path = checkpoints(case_id)
    ours = npplm.from_pretrained(path)
    ours.save_pretrained(tmp_path)
    back, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True)
    assert type(back) is type(hf)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
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
    assert ARCHITECTURES["Qwen2ForCausalLM"] is Qwen2ForCausalLM
    assert ARCHITECTURES["Qwen2Model"] is BASE_MODELS["qwen2"] is Qwen2Model
    assert ARCHITECTURES["Qwen2ForSequenceClassification"] is Qwen2ForSequenceClassification
    assert GGUF_ARCHITECTURES["qwen2"] is Qwen2ForCausalLM
    lm = npplm.from_pretrained(path)
    backbone = Qwen2Model.from_pretrained(path)  # a backbone from a causal-LM checkpoint
    ids = left_padded_batch()[0]
    assert_close(backbone(ids).last_hidden_state, lm.model(ids).last_hidden_state, "exact64")


def test_sequence_classification_matches_transformers(tmp_path):
    config = Qwen2Config.tiny(num_labels=3, pad_token_id=0)
    hf = hf_model(config, transformers.Qwen2ForSequenceClassification)
    hf.save_pretrained(tmp_path)
    ours = npplm.from_pretrained(tmp_path)
    assert isinstance(ours, Qwen2ForSequenceClassification)
    ids, mask, _, _ = left_padded_batch()
    labels = np.array([0, 2, 1])
    want = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
    got = ours(ids, attention_mask=mask, labels=labels)
    assert_close(got.logits, want.logits.detach().numpy(), "model32")
    assert_close(got.loss, want.loss.detach().numpy(), "model32")


# --- decoding with a KV cache ------------------------------------------------------------


@pytest.mark.parametrize("case_id", ["gqa", "mqa_tied", "mha"])
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
    assert cache.keys[0].shape[1] == ours.config.num_key_value_heads  # (B, K, S, D)
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
@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("case_id", ["gqa", "mqa_tied"])
def test_generate_equals_transformers_generate(case_id, num_beams, checkpoints):
    # Greedy decoding and beam search of a left-padded batch, through the one decoding loop
    # (npplm.generation.decode), as for LLaMA. pad 1: transformers fills finished beams with
    # `pad_token_id or eos_token_id`, so a pad id of 0 would read as eos.
    hf, path = checkpoints(case_id)
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
    model = Qwen2ForCausalLM(Qwen2Config.tiny(), seed=0)
    ids = np.random.default_rng(0).integers(0, 64, (4, 12))
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # the biases learn too
    for p in model.parameters():
        p.data -= 0.5 * p.grad
    assert model(ids, labels=ids).loss.item() < loss.item()


# --- configuration and parameter counts ------------------------------------------------------

PRESETS = {
    "qwen2_0_5b": 494_032_768, "qwen2_1_5b": 1_543_714_304, "qwen2_7b": 7_615_616_512,
    "qwen2_5_0_5b": 494_032_768, "qwen2_5_7b": 7_615_616_512,
}


def hf_count(config):
    with torch.device("meta"):
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**config.to_hf()))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", list(PRESETS))
def test_published_sizes_parameter_counts(preset):
    config = getattr(Qwen2Config, preset)()
    assert config.rope_theta == 1e6 and config.rms_norm_eps == 1e-6 and config.head_dim in (
        64, 128)
    assert num_parameters(config) == PRESETS[preset]
    assert hf_count(config) == PRESETS[preset]


def test_parameter_count_matches_an_allocated_model():
    for overrides in ({}, dict(tie_word_embeddings=True), dict(num_key_value_heads=1)):
        config = Qwen2Config.tiny(**overrides)
        assert Qwen2ForCausalLM(config).num_parameters() == num_parameters(config)
        assert hf_count(config) == num_parameters(config)
        assert Qwen2Model(config).num_parameters() == num_parameters(config, with_lm_head=False)


def test_config_round_trips():
    for config in (Qwen2Config.tiny(), Qwen2Config.qwen2_0_5b(), Qwen2Config.qwen2_7b()):
        assert Qwen2Config.from_hf(config.to_hf()) == config
        # transformers 5 reads sliding_window as None while use_sliding_window is false
        hf = transformers.Qwen2Config(**config.to_hf()).to_dict()
        assert hf["sliding_window"] is None and hf["use_sliding_window"] is False
        back = Qwen2Config.from_hf(hf)
        assert back == dataclasses.replace(config, sliding_window=None)
    # A transformers 4.x config.json, as published (Qwen2-0.5B): rope_theta at the top level.
    published = {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
        "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 131072,
        "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
        "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
        "vocab_size": 151936}
    assert Qwen2Config.from_hf(published) == Qwen2Config.qwen2_0_5b()
    hash(Qwen2Config.qwen2_7b())  # frozen and hashable


def test_config_refuses_what_is_not_implemented():
    hf = Qwen2Config.tiny().to_hf()
    with pytest.raises(ValueError, match="use_sliding_window=True is not implemented"):
        Qwen2Config.from_hf({**hf, "use_sliding_window": True})
    with pytest.raises(ValueError, match="use_sliding_window=True is not implemented"):
        Qwen2Config.tiny(use_sliding_window=True)
    with pytest.raises(ValueError, match="layer_types has sliding_attention layers"):
        Qwen2Config.from_hf({**hf, "layer_types": ["full_attention", "sliding_attention"]})
    with pytest.raises(ValueError, match="attention_dropout=0.1 is not implemented"):
        Qwen2Config.from_hf({**hf, "attention_dropout": 0.1})
    with pytest.raises(ValueError, match="rope scaling 'yarn' is not implemented"):
        Qwen2Config.from_hf({**hf, "rope_scaling": {"type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="model_type 'llama' is not qwen2"):
        Qwen2Config.from_hf({**hf, "model_type": "llama"})
    with pytest.raises(ValueError, match="num_attention_heads=4 is not divisible by "
                                         "num_key_value_heads=3"):
        Qwen2Config.tiny(num_key_value_heads=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Qwen2Config.tiny().hidden_size = 64


# --- GGUF files of the qwen2 architecture -----------------------------------------------------

gguf = pytest.importorskip("gguf")

LAYER_NAMES = {  # Hugging Face key under model.layers.N. -> GGUF name under blk.N.
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(key):
    """Hugging Face key -> GGUF tensor name, as convert_hf_to_gguf.py maps them (the
    biases keep their suffix: blk.N.attn_q.bias)."""
    top = {"model.embed_tokens.weight": "token_embd.weight",
           "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    if key in top:
        return top[key]
    _, _, n, rest = key.split(".", 3)
    module, suffix = rest.rsplit(".", 1)
    return f"blk.{n}.{LAYER_NAMES[module]}.{suffix}"


def write_qwen2_gguf(path, config, hf):
    """Write a qwen2 GGUF in float32 as llama.cpp's converter does (its Qwen2Model class
    writes each tensor as Hugging Face stores it: no q/k row permutation); returns the
    Hugging Face state written."""
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    if config.tie_word_embeddings:
        del state["lm_head.weight"]  # the converter writes no output.weight when tied
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("tiny-qwen2")
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_freq_base(config.rope_theta)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list([f"t{i}" for i in range(config.vocab_size)])
    w.add_token_types([gguf.TokenType.NORMAL] * config.vocab_size)
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    for key, value in state.items():
        w.add_tensor(gguf_name(key), np.ascontiguousarray(value, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return state


@pytest.mark.parametrize("case_id", ["gqa", "mqa_tied"])
def test_gguf_file_gives_the_transformers_weights_and_logits(case_id, checkpoints, tmp_path):
    config = Qwen2Config.tiny(**CASES[case_id])
    hf = checkpoints(case_id)[0]
    path = tmp_path / "tiny-qwen2-f32.gguf"
    state = write_qwen2_gguf(path, config, hf)
    assert "blk.0.attn_q.bias" in {t.name for t in gguf.GGUFReader(path).tensors}

    got_config, got = read_gguf(path)
    assert set(got) == set(state)
    for key in state:  # no permutation to undo: every tensor exactly as written
        assert np.array_equal(got[key], state[key]), key
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                  "rope_theta", "tie_word_embeddings", "head_dim"):
        assert getattr(got_config, field) == getattr(config, field), field
    assert got_config.rms_norm_eps == pytest.approx(config.rms_norm_eps, rel=1e-6)

    ours = npplm.from_pretrained(path)  # dispatched on general.architecture = "qwen2"
    assert isinstance(ours, Qwen2ForCausalLM) and not ours.training
    ids = np.random.default_rng(2).integers(0, config.vocab_size, (2, 11))
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()
    logits = ours(ids).logits.numpy()
    assert_close(logits, want, "model32")
    print(f"\nqwen2 GGUF {case_id}: max |ours - transformers| = {max_diff(logits, want):.2e}")

    # The control: treating the file as LLaMA's (un-permuting q and k rows) breaks parity,
    # so the test above does tell the two row orders apart.
    with no_grad():
        for layer in ours.model.layers:
            for proj, n in ((layer.self_attn.q_proj, config.num_attention_heads),
                            (layer.self_attn.k_proj, config.num_key_value_heads)):
                proj.weight.data[...] = unpermute_rotary(proj.weight.data, n)
        assert max_diff(ours(ids).logits.numpy(), want) > 1e-2


def test_gguf_file_matches_transformers_reading_it(checkpoints, tmp_path):
    # transformers' own GGUF loader (which un-permutes q/k for llama files only) reads the
    # same file into its Qwen2ForCausalLM: the same weights, the same logits as ours.
    config = Qwen2Config.tiny()
    hf = checkpoints("gqa")[0]
    write_qwen2_gguf(tmp_path / "tiny.gguf", config, hf)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="tiny.gguf", attn_implementation="eager", dtype=torch.float32).eval()
    assert type(theirs) is transformers.Qwen2ForCausalLM
    ours = Qwen2ForCausalLM.from_gguf(tmp_path / "tiny.gguf")
    theirs_state = theirs.state_dict()
    for key, value in ours.state_dict().items():
        assert np.array_equal(value, theirs_state[key].numpy()), key
    ids = np.random.default_rng(3).integers(0, config.vocab_size, (2, 11))
    with torch.no_grad():
        want = theirs(torch.tensor(ids)).logits.numpy()
    assert_close(ours(ids).logits.numpy(), want, "model32")


def test_gguf_architectures_are_not_mixed_up(checkpoints, tmp_path):
    config = Qwen2Config.tiny()
    write_qwen2_gguf(tmp_path / "q.gguf", config, checkpoints("gqa")[0])
    with pytest.raises(CheckpointError, match="general.architecture is 'qwen2'; this reader "
                                              "expects 'llama'"):
        LlamaForCausalLM.from_gguf(tmp_path / "q.gguf")
