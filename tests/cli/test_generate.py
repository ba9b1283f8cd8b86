"""`npplm generate`: the speed, and the model's context reached without a traceback."""

import pytest

from npplm.inference import generate_text
from npplm.training.run_folder import resolve_model


def test_generate_reports_tokens_per_second(family_runs, npplm):
    result = npplm("generate", "--model", family_runs["llama"], "--prompt", "import",
                   "--max-new-tokens", "4", "--temperature", "0.7", "--top-k", "5")
    assert result.code == 0, result.err
    assert "tokens/s" in result.err and "stopped:" in result.err


@pytest.mark.parametrize("family", ["llama", "glm", "t5"])
def test_generate_with_an_int8_kv_cache(family, family_runs, npplm):
    result = npplm("generate", "--model", family_runs[family], "--prompt", "def f(x):",
                   "--max-new-tokens", "4", "--kv-cache", "int8")
    assert result.code == 0, result.err
    assert "tokens/s" in result.err


def test_past_the_context_generate_stops_cleanly(family_runs, npplm):
    result = npplm("generate", "--model", family_runs["gpt"], "--prompt", "def f(x):",
                   "--max-new-tokens", "500")
    assert result.code == 0, result.err
    assert "stopped: the model's context is full" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("family", ["gpt", "glm"])
def test_prompt_and_reply_never_exceed_the_context(family, family_runs):
    import npplm

    folder = resolve_model(family_runs[family])
    model, tok = npplm.from_pretrained(folder), npplm.load_tokenizer(folder)
    prompt = tok.encode("def f(x):").ids
    out = generate_text(model, tok, prompt, 1000)
    limit = model.context_length
    assert out.stop in ("context", "eos")
    assert len(prompt) + out.steps + (family == "glm") <= limit
    with pytest.raises(ValueError, match="leaves no room for a reply"):
        generate_text(model, tok, prompt * limit, 5)


def test_streamed_pieces_add_up_to_the_text(family_runs):
    import npplm

    folder = resolve_model(family_runs["gpt"])
    model, tok = npplm.from_pretrained(folder), npplm.load_tokenizer(folder)
    pieces = []
    out = generate_text(model, tok, tok.encode("class A:").ids, 12, temperature=1.0, seed=3,
                        on_text=pieces.append)
    assert "".join(pieces) == out.text == tok.decode(out.ids, skip_special_tokens=True)
    again = generate_text(model, tok, tok.encode("class A:").ids, 12, temperature=1.0, seed=3)
    assert again.ids == out.ids  # the seed decides
