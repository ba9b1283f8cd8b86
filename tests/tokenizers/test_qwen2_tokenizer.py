"""Qwen2's tokenizer (byte-level BPE behind an NFC normalizer), from its tokenizer.json and
from a GGUF file, against Hugging Face `tokenizers`.

No download: `tokenizers` trains a small vocabulary here and is then given Qwen2's stages
(those of transformers' Qwen2Converter): normalizer NFC; pre_tokenizer Split on Qwen2's
regex (each digit alone), then ByteLevel without regex; decoder ByteLevel; the special
tokens <|endoftext|>, <|im_start|>, <|im_end|> added after the vocabulary. The merges are
learned with GPT-2's regex, which keeps digit runs and words whole, so they hold "12",
"123" and merges across Qwen2's cuts: a wrong cut (LLaMA-3's \\p{N}{1,3}) changes the ids.

The GGUF file is written as llama.cpp's converter writes one (tokenizer.ggml.model "gpt2",
pre "qwen2", tokens, token types, merges, bos / eos / padding ids). It carries no
normalizer, and llama.cpp and transformers apply none to a "qwen2" file: its ids equal the
tokenizer.json's on text in NFC, and those of the same stages without NFC on other text.
"""

import json
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npplm import load_tokenizer
from npplm.tokenizers import TokenizerFormatError
from npplm.tokenizers.loading import QWEN2_PATTERN
from tests.tokenizers.parity import CORPUS, TRAIN, assert_decode_like_transformers, assert_same_ids

pytest.importorskip("tokenizers")

# The Split regex of Qwen2's tokenizer.json, as published.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXTS = [*CORPUS,
         "12345 and 1234567890, 3.14159; 2024-01-31",
         "e\u0301 then \u00e9, A\u030a and \u00c5, \u1e9b\u0323",   # NFD and NFC spellings
         "I'm sure they'RE fine, WE'LL see; 'Twas",
         "中文的句子，还有日本語。",
         "line one\nline two\n\n\nafter blank lines\r\n  indented\tand\ttabbed",
         "many     spaces    between   words   ",
         "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
         "<|im_start|>assistant\n",
         "text<|endoftext|>more text<|endoftext|>"]


def _qwen2_stages(tok, pattern=QWEN2_SPLIT, nfc=True):
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

    tok.normalizer = normalizers.NFC() if nfc else None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder holding a Qwen2-style tokenizer.json and tokenizer_config.json."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAIN + ["12345 1234 123 12"] * 4, trainer)
    _qwen2_stages(tok)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    directory = tmp_path_factory.mktemp("qwen2")
    tok.save(str(directory / "tokenizer.json"))
    config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
              "model_max_length": 131072}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def theirs(folder):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def test_the_regex_is_qwen2s():
    assert QWEN2_PATTERN == QWEN2_SPLIT
    tokenization_qwen2 = pytest.importorskip("transformers.models.qwen2.tokenization_qwen2")
    assert QWEN2_PATTERN == tokenization_qwen2.PRETOKENIZE_REGEX


def test_the_file_is_qwen2_shaped(folder, theirs):
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["normalizer"] == {"type": "NFC"}
    assert [s["type"] for s in data["pre_tokenizer"]["pretokenizers"]] == ["Split", "ByteLevel"]
    assert [theirs.token_to_id(t) for t in SPECIALS] == [700, 701, 702]
    # The vocabulary has digit runs that a Split keeping them (LLaMA-3's) would use.
    assert theirs.token_to_id("123") is not None


# --- the vocabulary in a GGUF file, as llama.cpp's converter writes it -------------------


def _write_gguf(path, data, pre):
    """A GGUF file holding tokenizer.json's vocabulary, as llama.cpp's converter writes it."""
    gguf = pytest.importorskip("gguf")

    vocab = data["model"]["vocab"]
    added = {t["id"]: t for t in data["added_tokens"]}
    tokens = sorted(vocab, key=vocab.get) + [added[i]["content"] for i in sorted(added)]
    types = [gguf.TokenType.NORMAL] * len(vocab) + [
        gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED
        for i in sorted(added)]
    ids = {t: i for i, t in enumerate(tokens)}
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([" ".join(m) for m in data["model"]["merges"]])
    writer.add_bos_token_id(ids["<|endoftext|>"])  # Qwen2's config.json bos_token_id
    writer.add_eos_token_id(ids["<|im_end|>"])
    writer.add_pad_token_id(ids["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def from_gguf(folder):
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    return load_tokenizer(_write_gguf(folder / "qwen2.gguf", data, "qwen2"))


def test_gguf_ids_equal_the_tokenizer_json_ones_on_nfc_text(from_gguf, theirs):
    for text in TEXTS:
        text = unicodedata.normalize("NFC", text)
        assert from_gguf.encode(text).ids == theirs.encode(text).ids, text
        assert from_gguf.decode(from_gguf.encode(text).ids) == text


def test_gguf_applies_no_nfc_as_llama_cpp(from_gguf, folder):
    from tokenizers import Tokenizer

    unnormalized = _qwen2_stages(Tokenizer.from_file(str(folder / "tokenizer.json")), nfc=False)
    for text in TEXTS:
        assert from_gguf.encode(text).ids == unnormalized.encode(text).ids, text
    assert from_gguf.encode("e\u0301").ids != from_gguf.encode("\u00e9").ids


def test_gguf_roles_and_special_tokens(from_gguf):
    assert (from_gguf.bos_token, from_gguf.eos_token, from_gguf.pad_token) == \
        ("<|endoftext|>", "<|im_end|>", "<|endoftext|>")
    ids = from_gguf.encode("<|im_start|>user\nHi<|im_end|>").ids
    assert ids[0] == 701 and ids[-1] == 702
    assert from_gguf.decode(ids, skip_special_tokens=True) == "user\nHi"


def test_llama3_cut_would_give_other_ids(folder):
    """The GGUF pre-tokenizer name matters: the same vocabulary read as "llama-bpe" keeps
    digit runs of 3."""
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    llama = load_tokenizer(_write_gguf(folder / "llama.gguf", data, "llama-bpe"))
    assert llama.tokenize("12345") != ["1", "2", "3", "4", "5"]


# --- the tokenizer.json, read by npplm ------------------------------------------------------


@pytest.fixture(scope="module")
def ours(folder):
    return load_tokenizer(folder)


def test_ids_and_tokens_equal_tokenizers(theirs, ours):
    assert_same_ids(theirs, ours, TEXTS)


def test_single_digits_and_nfc(theirs, ours):
    assert ours.tokenize("12345") == ["1", "2", "3", "4", "5"]
    assert ours.encode("caf\u00e9").ids == ours.encode("cafe\u0301").ids == \
        theirs.encode("cafe\u0301").ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
       | st.lists(st.sampled_from(["e", "\u0301", "\u00e9", "1", "23", " ", "\n", "'s", "中",
                                   "<|im_end|>", "A", "\u030a", "\u00c5", "!"]),
                  max_size=20).map("".join))
def test_random_text_ids_equal_tokenizers(theirs, ours, text):
    assert ours.encode(text).ids == theirs.encode(text).ids


def test_decode(theirs, ours):
    for text in TEXTS:
        ids = ours.encode(text).ids
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False)
        assert ours.decode(ids) == unicodedata.normalize("NFC", text)
    assert_decode_like_transformers(ours, theirs, ours.encode(TEXTS[-2]).ids)


def test_roles_and_length(ours):
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == \
        (None, "<|im_end|>", "<|endoftext|>")
    assert ours.model_max_length == 131072


def test_saved_file_keeps_the_normalizer(ours, tmp_path):
    from tokenizers import Tokenizer

    ours.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again == ours
    assert json.loads((tmp_path / "tokenizer.json").read_text())["normalizer"] == \
        {"type": "NFC"}
    reread = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in TEXTS:
        assert again.encode(text).ids == reread.encode(text).ids


def test_other_normalizers_and_normalized_added_tokens(folder, tmp_path):
    """Any normalizer of normalizers.py, and added tokens matched after normalization."""
    from tokenizers import AddedToken, Tokenizer, normalizers

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.add_tokens([AddedToken("Hello", normalized=True), AddedToken("fix", normalized=True)])
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(tmp_path)
    texts = [*TEXTS, "HELLO there, hello, \ufb01x the \ufb01xed; Hello<|im_end|>HeLLo"]
    assert_same_ids(tok, ours, texts)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Mystery"}]}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerFormatError, match="normalizer type 'Mystery' is not "
                                                   "supported.*byte-level BPE"):
        load_tokenizer(tmp_path)
