"""Writing GGUF files (npplm.models.gguf_export, npplm.tokenizers.gguf_vocab), read back by
the `gguf` package, by npplm and by Hugging Face transformers.

Tiny random LLaMA and Qwen2 models (widths 256 and 512, so every matrix takes the K-quants;
a width of 288 to exercise the fallback) with weights of scale 0.06, and a byte-level BPE
tokenizer trained here, are written in each type. Then:
  - gguf.GGUFReader lists the tensors under llama.cpp's names, types and shapes;
  - npplm's quantised load gives the logits of the float32 model built from the written
    blocks as gguf.quants.dequantize (the oracle) decodes them, within float32 rounding;
  - those logits are within QUANTISATION_ERROR of the original float model's;
  - transformers' GGUF loader reads the file into the same logits as ours;
  - the tokenizer read back from the file encodes as the original, special tokens and chat
    template included.
"""

import dataclasses

import numpy as np
import pytest

import npplm
from autograd import no_grad
from npplm.models.gguf_export import FILE_TYPES, gguf_name, tensor_type, write_gguf
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.models.llama import LlamaConfig, LlamaForCausalLM, hf_key, unpermute_rotary
from npplm.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from npplm.tokenizers import train_byte_level_bpe, train_sentencepiece_bpe
from npplm.tokenizers.byte_level_bpe import ByteLevel, Split
from npplm.tokenizers.gguf_vocab import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, to_gguf
from npplm.tokenizers.templates import LLAMA, Template
from tests.tolerances import assert_close

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from gguf.quants import dequantize  # noqa: E402  (after the importorskip)

KINDS = list(FILE_TYPES)  # Q8_0, Q4_0, Q4_1, Q4_K, Q6_K
FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM, transformers.LlamaForCausalLM),
            "qwen2": (Qwen2Config, Qwen2ForCausalLM, transformers.Qwen2ForCausalLM)}
# How far a quantised model's logits may be from the float model's, as
# rms(quantised - float) / rms(float) on these tiny random models (weights of scale 0.06,
# so activations stay O(1)). Random weights give no redundancy to hide rounding in, so the
# weights' own error (Q8_0 0.5%, Q4_0 9% relative: npplm/quantization/formats.py) grows
# about fourfold through embedding, two blocks and head. Measured (llama, qwen2): Q8_0
# 0.021 0.020, Q6_K 0.078 0.071, Q4_K 0.30 0.27, Q4_1 0.30 0.29, Q4_0 0.31 0.31; the bounds
# are 1.5 times those (unrelated logits of the same size would give sqrt(2) = 1.41).
QUANTISATION_ERROR = {"Q8_0": 0.03, "Q6_K": 0.12, "Q4_K": 0.45, "Q4_1": 0.45, "Q4_0": 0.47}

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TEXTS = ["Hello world!", "the quick brown fox, 12345 + 678", "  spaces\n\n\ttabs",
         "Crème brûlée à Genève 日本", "<|im_start|>user\nhi there<|im_end|>\n<|endoftext|>"]
V = 320  # the models' vocabulary: the tokenizer's 300 ids padded, as published models pad


@pytest.fixture(scope="module")
def tokenizer():
    lines = [line for _ in range(3) for line in __doc__.splitlines() + TEXTS[:4]]
    tok = train_byte_level_bpe(lines, 300, special_tokens=SPECIALS,
                               template=Template(bos_token="<|endoftext|>",
                                                 eos_token="<|im_end|>"))
    tok.chat_template = CHAT
    return tok


def build(family, **overrides):
    """A tiny model of `family`, C = 256, F = 512 (K-quant widths), weights of scale 0.06
    and norm gains 1 +- 0.1, so that quantisation errors show in the logits."""
    config_class, cls, _ = FAMILIES[family]
    config = config_class.tiny(**{**dict(vocab_size=V, hidden_size=256, intermediate_size=512,
                                         bos_token_id=0, eos_token_id=2), **overrides})
    model = cls(config)
    rng = np.random.default_rng(0)
    for name, p in model.named_parameters():
        noise = rng.standard_normal(p.shape).astype(np.float32)
        p.data = 1 + 0.1 * noise if name.endswith("norm.weight") else 0.06 * noise
    return model.eval()


@pytest.fixture(scope="module")
def files(tokenizer, tmp_path_factory):
    """(float model, path of its file) per (family, kind, case), written once."""
    folder = tmp_path_factory.mktemp("gguf")
    cases = {"untied": {}, "tied": dict(tie_word_embeddings=True),
             "fallback": dict(intermediate_size=288)}  # down_proj width 288 = 9 x 32
    written = {}

    def get(family, kind, case="untied"):
        if (family, kind, case) not in written:
            model = build(family, **cases[case])
            path = folder / f"{family}-{case}-{kind}.gguf"
            written[family, kind, case] = model, path, write_gguf(model, tokenizer, path,
                                                                  kind)
        return written[family, kind, case]

    return get


def logits(model, ids):
    with no_grad():
        return model(ids).logits.numpy()


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


IDS = np.random.default_rng(1).integers(0, V, (2, 9))


# --- the file -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_tensors_have_llama_cpp_names_types_and_shapes(family, kind, files):
    model, path, summary = files(family, kind)
    reader = gguf.GGUFReader(path)
    state = model.checkpoint_state()
    found = {t.name: t for t in reader.tensors}
    assert set(found) == {gguf_name(k) for k in state}
    for key, value in state.items():
        t = found[gguf_name(key)]
        assert tuple(int(n) for n in reversed(t.shape)) == value.shape, key  # ggml: [in, out]
        assert t.tensor_type.name == (kind if value.ndim == 2 else "F32"), key
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == family
    assert fields["general.file_type"] == FILE_TYPES[kind]
    assert fields[f"{family}.rope.dimension_count"] == model.config.head_dim
    assert summary.types == {kind: 7 * 2 + 2, "F32": 2 * 2 + 1 + (6 if family == "qwen2" else 0)}
    assert summary.fallbacks == [] and summary.nbytes == path.stat().st_size


@pytest.mark.parametrize("family", FAMILIES)
def test_a_tied_head_is_written_once_and_read_back_tied(family, files):
    model, path, summary = files(family, "Q8_0", "tied")
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert "token_embd.weight" in names and "output.weight" not in names
    back = npplm.from_pretrained(path)
    assert back.config.tie_word_embeddings
    # the quantised head reads the quantised embedding: one PackedWeight for both
    assert back.lm_head.weight is back.model.embed_tokens.weight


def oracle_model(path, cls, config):
    """The float32 model of a file, its weights decoded by gguf.quants.dequantize."""
    state = {}
    for t in gguf.GGUFReader(path).tensors:
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        key = hf_key(t.name, biases=("attn_q", "attn_k", "attn_v"))
        if cls is LlamaForCausalLM and key.endswith("q_proj.weight"):
            w = unpermute_rotary(w, config.num_attention_heads)
        elif cls is LlamaForCausalLM and key.endswith("k_proj.weight"):
            w = unpermute_rotary(w, config.num_key_value_heads)
        state[key] = w
    return cls(config).load_weights(state).eval()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_quantised_load_is_the_float_model_of_the_written_blocks(family, kind, files):
    model, path, _ = files(family, kind)
    quantised = npplm.from_pretrained(path)  # block-quantised weights kept
    assert type(quantised) is type(model)
    eps = float(np.float32(model.config.rms_norm_eps))  # GGUF stores a float32
    unread = ("sliding_window", "max_window_layers")  # Qwen2's unused keys: not in GGUF
    got, want = (dataclasses.asdict(c) for c in (quantised.config, model.config))
    assert {k: v for k, v in got.items() if k not in unread} == {
        **{k: v for k, v in want.items() if k not in unread}, "rms_norm_eps": eps}
    got = logits(quantised, IDS)
    assert_close(got, logits(oracle_model(path, type(model), model.config), IDS), "model32")
    want = logits(model, IDS)
    error = rms(got - want) / rms(want)
    print(f"\n{family} {kind}: rms(quantised - float) / rms(float) = {error:.4f}")
    assert error < QUANTISATION_ERROR[kind]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_transformers_reads_the_file_into_our_logits(family, kind, files):
    model, path, _ = files(family, kind)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, attn_implementation="eager",
        dtype=torch.float32).eval()
    assert type(theirs) is FAMILIES[family][2]
    with torch.no_grad():
        want = theirs(torch.tensor(IDS)).logits.numpy()
    ours = logits(npplm.from_pretrained(path, dequantize=True), IDS)
    print(f"\n{family} {kind}: max |ours - transformers| = {np.abs(ours - want).max():.2e}")
    assert_close(ours, want, "model32")
    assert_close(logits(npplm.from_pretrained(path), IDS), want, "model32")


# --- the fallback ---------------------------------------------------------------------------


def test_the_type_of_each_tensor():
    assert tensor_type("Q4_K", (256,)) == "F32"  # norms and biases
    assert tensor_type("Q4_K", (64, 512)) == "Q4_K"
    assert tensor_type("Q4_K", (64, 288)) == "Q4_1"  # 288 = 9 x 32, not whole 256s
    assert tensor_type("Q6_K", (64, 576)) == "Q8_0"  # SmolLM2's width
    assert tensor_type("Q4_K", (64, 37)) == "F16"  # not even whole 32s
    assert tensor_type("Q4_0", (64, 37)) == "F16"
    assert tensor_type("Q8_0", (64, 288)) == "Q8_0"


@pytest.mark.parametrize("kind, instead", [("Q4_K", "Q4_1"), ("Q6_K", "Q8_0")])
def test_a_width_the_k_quants_cannot_take_falls_back_and_says_so(kind, instead, files):
    model, path, summary = files("llama", kind, "fallback")
    down = {f"blk.{i}.ffn_down.weight" for i in range(model.config.num_hidden_layers)}
    assert sorted(summary.fallbacks) == sorted((name, instead) for name in down)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert {types[name] for name in down} == {instead}
    assert types["blk.0.ffn_up.weight"] == kind
    assert f"width not a multiple of 256: 2 matrices as {instead}" in summary.line()
    want = logits(oracle_model(path, LlamaForCausalLM, model.config), IDS)
    assert_close(logits(npplm.from_pretrained(path), IDS), want, "model32")


def test_a_width_of_no_whole_blocks_is_written_f16(tokenizer, tmp_path):
    model = build("llama", intermediate_size=37)  # down_proj rows of 37 weights
    summary = write_gguf(model, tokenizer, tmp_path / "m.gguf", "q4_0")
    assert {t for _, t in summary.fallbacks} == {"F16"} and len(summary.fallbacks) == 2
    ours = logits(npplm.from_pretrained(tmp_path / "m.gguf"), IDS)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="m.gguf", attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        assert_close(ours, theirs(torch.tensor(IDS)).logits.numpy(), "model32")


# --- what cannot be written -----------------------------------------------------------------


def test_other_families_types_and_quantised_models_are_refused(tokenizer, files, tmp_path):
    gpt = GPT2LMHeadModel(GPTConfig.tiny())
    with pytest.raises(ValueError, match="cannot write a GPT2LMHeadModel to GGUF: npplm "
                                         "writes LlamaForCausalLM, Qwen2ForCausalLM"):
        write_gguf(gpt, tokenizer, tmp_path / "g.gguf")
    model, path, _ = files("llama", "Q8_0")
    with pytest.raises(ValueError, match="quantisation type 'q5_0' is not written"):
        write_gguf(model, tokenizer, tmp_path / "m.gguf", "q5_0")
    with pytest.raises(ValueError, match=r"already block-quantised \(Q8_0\): load it with "
                                         "dequantize=True"):
        write_gguf(npplm.from_pretrained(path), tokenizer, tmp_path / "m.gguf")
    scaled = LlamaForCausalLM(LlamaConfig.tiny(rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=32)))
    with pytest.raises(ValueError, match="rope scaling 'llama3' cannot be written"):
        write_gguf(scaled, tokenizer, tmp_path / "m.gguf")
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file


# --- the tokenizer --------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_the_tokenizer_and_chat_template_come_back(family, tokenizer, files):
    _, path, _ = files(family, "Q4_0")
    back = npplm.load_tokenizer(path)
    for text in TEXTS:
        assert back.encode(text, add_special_tokens=False).ids == tokenizer.encode(
            text, add_special_tokens=False).ids, text
        ids = tokenizer.encode(text).ids
        assert back.decode(ids) == tokenizer.decode(ids)
    assert back.chat_template == CHAT
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    assert back.apply_chat_template(messages) == tokenizer.apply_chat_template(messages)
    assert (back.bos_token, back.eos_token) == ("<|endoftext|>", "<|im_end|>")


def test_byte_level_metadata(tokenizer):
    meta = to_gguf(tokenizer, V)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == V
    assert tokens[:3] == list(SPECIALS) and types[:3] == [CONTROL] * 3
    assert set(types[3:300]) == {NORMAL}
    assert tokens[300:] == [f"[PAD{i}]" for i in range(300, V)]
    assert set(types[300:]) == {UNUSED}
    assert meta["tokenizer.ggml.merges"] == [f"{a} {b}" for a, b in tokenizer.merges]
    assert meta["tokenizer.ggml.bos_token_id"] == 0 and meta["tokenizer.ggml.eos_token_id"] == 2
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.ggml.add_eos_token"] is False
    assert meta["tokenizer.chat_template"] == CHAT


def test_qwen2s_pre_tokenizer_is_named_and_its_nfc_dropped(tokenizer):
    from npplm.tokenizers.byte_level_bpe import ByteLevelBPETokenizer
    from npplm.tokenizers.loading import QWEN2_PATTERN
    from npplm.tokenizers.normalizers import Lowercase, UnicodeForm

    steps = (Split(QWEN2_PATTERN), ByteLevel(use_regex=False))
    qwen2 = ByteLevelBPETokenizer(tokenizer.vocab, tokenizer.merges, pre_tokenizer=steps,
                                  normalizer=(UnicodeForm("NFC"),))
    assert to_gguf(qwen2)["tokenizer.ggml.pre"] == "qwen2"
    lowercased = ByteLevelBPETokenizer(tokenizer.vocab, tokenizer.merges,
                                       normalizer=(Lowercase(),))
    with pytest.raises(ValueError, match="normalizer .*Lowercase.* cannot be written"):
        to_gguf(lowercased)


def test_sentencepiece_bpe_metadata():
    # LLaMA-1/2's layout, as `npplm train --model llama` trains it (its Template: "<s> $A")
    tok = train_sentencepiece_bpe(__doc__.splitlines() * 2, 400, template=LLAMA)
    meta = to_gguf(tok)
    assert meta["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.pre" not in meta
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    scores = meta["tokenizer.ggml.scores"]
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and types[:3] == [UNKNOWN, CONTROL, CONTROL]
    assert tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert set(types[3:259]) == {BYTE}
    # llama.cpp merges the pair whose token scores highest: merge rank r scores -(r + 1)
    for rank, (a, b) in enumerate(tok.model.merges[:50]):
        assert scores[tokens.index(a + b)] == -(rank + 1)
    assert max(scores[i] for i in range(3, 259)) < min(scores[tokens.index(a + b)]
                                                       for a, b in tok.model.merges)
    assert meta["tokenizer.ggml.add_bos_token"] is True
    assert meta["tokenizer.ggml.add_eos_token"] is False
    assert meta["tokenizer.ggml.add_space_prefix"] is True
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"],
            meta["tokenizer.ggml.unknown_token_id"]) == (1, 2, 0)


def test_what_gguf_cannot_say_is_refused(tokenizer):
    roberta_style = train_byte_level_bpe(TEXTS, 270, pre_tokenizer=(ByteLevel(
        add_prefix_space=True),))
    with pytest.raises(ValueError, match=r"pre-tokenizer .*add_prefix_space=True.* has no "
                                         "GGUF name"):
        to_gguf(roberta_style)
    two_ends = train_byte_level_bpe(TEXTS, 270, special_tokens=SPECIALS, template=(
        Template.parse("<|im_start|> $A <|im_end|> <|im_end|>", "$A $B:1")))
    with pytest.raises(ValueError, match="GGUF says only whether a bos token goes before"):
        to_gguf(two_ends)
    wrong_bos = train_byte_level_bpe(TEXTS, 270, special_tokens=SPECIALS, template=(
        Template.parse("<|im_start|> $A", "$A $B:1", bos_token="<|endoftext|>")))
    with pytest.raises(ValueError, match="adds '<|im_start|>' where GGUF can only add the bos"):
        to_gguf(wrong_bos)
    with pytest.raises(ValueError, match="the tokenizer has 300 ids, more than the model's 64"):
        to_gguf(tokenizer, 64)
    from npplm.tokenizers import train_wordpiece

    with pytest.raises(ValueError, match="a WordPieceTokenizer .* cannot be written to GGUF"):
        to_gguf(train_wordpiece(TEXTS, 200))
