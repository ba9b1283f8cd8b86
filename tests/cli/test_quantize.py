"""`npplm quantize`: a model folder or a run folder to a GGUF file that npplm runs again,
and the refusals, each one line (the writer itself: tests/quantization/test_export.py)."""

import numpy as np
import pytest

from npplm import cli, from_pretrained, load_tokenizer
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from npplm.tokenizers import train_byte_level_bpe
from npplm.tokenizers.templates import Template
from npplm.training.run_folder import resolve_model
from tests.cli.conftest import TINY

CHAT = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer():
    tok = train_byte_level_bpe([__doc__] * 3, 300, special_tokens=("<|endoftext|>",
                                                                   "<|im_start|>",
                                                                   "<|im_end|>"),
                               template=Template(bos_token="<|endoftext|>",
                                                 eos_token="<|im_end|>"))
    tok.chat_template = CHAT
    return tok


@pytest.fixture(scope="module")
def hf_folder(tokenizer, tmp_path_factory):
    """A Hugging Face folder (config.json, model.safetensors, tokenizer files) of a tiny
    Qwen2 whose widths take Q4_K (256, 512)."""
    folder = tmp_path_factory.mktemp("qwen2")
    config = Qwen2Config.tiny(vocab_size=tokenizer.vocab_size, hidden_size=256,
                              intermediate_size=512, bos_token_id=0, eos_token_id=2)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save(folder)
    return folder


def test_a_model_folder_to_a_file_that_generate_and_chat_run(hf_folder, tokenizer, npplm,
                                                             tmp_path):
    out = tmp_path / "tiny.Q4_K.gguf"
    result = npplm("quantize", "--model", hf_folder, "--type", "q4_k", "--out", out)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [f"wrote {out}: qwen2 Q4_K, 27 tensors (Q4_K 16, F32 11),"
                                       f" {out.stat().st_size / 1e6:.1f} MB"]
    result = npplm("generate", "--model", out, "--prompt", "a model", "--max-new-tokens", "3")
    assert result.code == 0, result.err
    result = npplm("chat", "--model", out, "--message", "hi", "--max-new-tokens", "3")
    assert result.code == 0, result.err


def test_the_file_holds_the_folders_model(hf_folder, tmp_path):
    cli.main(["quantize", "--model", str(hf_folder), "--type", "q8_0", "--out",
              str(tmp_path / "m.gguf")])
    ids = np.arange(12)[None]
    want = from_pretrained(hf_folder)(ids).logits.numpy()
    got = from_pretrained(tmp_path / "m.gguf")(ids).logits.numpy()
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()  # Q8_0's rounding only
    assert load_tokenizer(tmp_path / "m.gguf").chat_template == CHAT


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    """A run folder of `npplm train --model llama` (tiny preset: C = 32, F = 37)."""
    run = tmp_path_factory.mktemp("runs") / "llama"
    assert cli.main(["train", "--model", "llama", "--out", str(run), *TINY]) == 0
    return run


def test_a_run_folder_to_a_file_with_its_fallbacks(llama_run, npplm, tmp_path):
    out = tmp_path / "run.gguf"
    result = npplm("quantize", "--model", llama_run, "--type", "q4_k", "--out", out)
    assert result.code == 0, result.err
    # Widths 32 (every matrix but down_proj) and 37 (down_proj): no whole 256-weight block,
    # so Q4_1, and down_proj not even whole 32s, so F16.
    assert "width not a multiple of 256: 14 matrices as Q4_1, 2 matrices as F16" in result.out
    model = from_pretrained(out)
    trained = from_pretrained(resolve_model(llama_run))
    ids = np.arange(10)[None]
    want = trained(ids).logits.numpy()
    assert np.abs(model(ids).logits.numpy() - want).max() < 0.2 * np.abs(want).max()
    assert model.generate(ids, 3).shape == (1, 13)


def test_an_existing_out_is_refused_unless_overwrite(hf_folder, npplm, tmp_path):
    out = tmp_path / "m.gguf"
    out.write_text("not ours")
    result = npplm("quantize", "--model", hf_folder, "--out", out)
    assert result.code == 2
    assert result.err.strip() == f"npplm quantize: error: --out {out} exists: pass " \
                                 "--overwrite to replace it"
    assert out.read_text() == "not ours"
    (tmp_path / "d.gguf").mkdir()
    result = npplm("quantize", "--model", hf_folder, "--out", tmp_path / "d.gguf",
                   "--overwrite")
    assert result.code == 2 and "is a folder: name a file" in result.err
    result = npplm("quantize", "--model", hf_folder, "--out", tmp_path / "m.bin")
    assert result.code == 2 and "the file name must end in .gguf" in result.err
    result = npplm("quantize", "--model", hf_folder, "--out", out, "--overwrite")
    assert result.code == 0, result.err
    assert out.read_bytes()[:4] == b"GGUF"


def test_a_gpt2_model_and_a_bad_type_are_refused_in_one_line(tokenizer, npplm, tmp_path):
    GPT2LMHeadModel(GPTConfig.tiny(vocab_size=tokenizer.vocab_size)).save_pretrained(
        tmp_path / "gpt")
    tokenizer.save(tmp_path / "gpt")
    result = npplm("quantize", "--model", tmp_path / "gpt", "--out", tmp_path / "g.gguf")
    assert result.code == 2
    assert result.err.splitlines()[-1] == (
        "npplm quantize: error: cannot write a GPT2LMHeadModel to GGUF: npplm writes "
        "LlamaForCausalLM, Qwen2ForCausalLM")
    assert not (tmp_path / "g.gguf").exists()
    result = npplm("quantize", "--type", "q5_0", "--out", tmp_path / "g.gguf")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert "argument --type: invalid choice: 'q5_0'" in result.err
    result = npplm("quantize", "--model", tmp_path / "missing", "--out", tmp_path / "g.gguf")
    assert result.code == 2 and "no such file or folder" in result.err
