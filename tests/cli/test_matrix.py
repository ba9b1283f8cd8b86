"""Every family through every command: train (tiny), eval, generate, and loading the saved
checkpoint and tokenizer in transformers."""

import json

import numpy as np
import pytest

import npplm
from npplm.training.recipe import FAMILIES
from npplm.training.run_folder import resolve_model

GENERATING = ("gpt", "llama", "t5", "glm")
ENCODERS = ("bert", "roberta", "albert")
METRIC = {"gpt": "perplexity", "llama": "perplexity", "bert": "masked-LM loss",
          "roberta": "masked-LM loss", "albert": "masked-LM loss",
          "t5": "span-corruption loss", "glm": "blank-infilling loss"}


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_reports_the_familys_metric_on_the_runs_held_out_split(family, family_runs,
                                                                     npplm):
    result = npplm("eval", "--model", family_runs[family])
    assert result.code == 0, result.err
    assert f"on the held-out split of {family_runs[family]}" in result.out
    assert METRIC[family] in result.out
    if METRIC[family] == "perplexity":
        assert "bits/byte" in result.out
    if family in ENCODERS:
        assert "pseudo-perplexity" in result.out
    assert "evaluating" in result.err  # the progress bar (tqdm writes to stderr)


@pytest.mark.parametrize("family", GENERATING)
def test_generate_continues_a_prompt_from_a_run_folder(family, family_runs, npplm):
    result = npplm("generate", "--model", family_runs[family], "--prompt", "def f(x):",
                   "--max-new-tokens", "5")
    assert result.code == 0, result.err
    assert result.out.startswith("def f(x):")
    assert "tokens/s" in result.err


@pytest.mark.parametrize("family", ENCODERS)
def test_encoders_say_they_do_not_generate(family, family_runs, npplm):
    result = npplm("generate", "--model", family_runs[family], "--prompt", "def")
    assert result.code == 1
    assert "does not generate text" in result.err
    assert len(result.err.strip().splitlines()) == 2  # "loading ...", then the one error line


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "glm"])
def test_the_checkpoint_loads_in_transformers_with_the_same_logits(family, family_runs):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    checkpoint = resolve_model(family_runs[family])
    ours = npplm.from_pretrained(checkpoint)
    name = json.loads((checkpoint / "config.json").read_text())["architectures"][0]
    theirs = getattr(transformers, name).from_pretrained(checkpoint).eval()
    ids = np.random.default_rng(0).integers(5, ours.config.vocab_size, (2, 12))
    inputs = {"input_ids": ids}
    if family == "t5":
        inputs["decoder_input_ids"] = ids[:, :7]
    expected = theirs(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    expected = (expected.prediction_logits if hasattr(expected, "prediction_logits")
                else expected.logits).detach().numpy()
    got = ours(**inputs).logits.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_saved_tokenizer_reads_the_same_in_transformers(family, family_runs):
    transformers = pytest.importorskip("transformers")
    folder = resolve_model(family_runs[family])
    ours = npplm.load_tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    for text in ("def f(x):\n    return x + 1", "import os", "a, b = b, a"):
        assert ours.encode(text).ids == theirs(text)["input_ids"], text


def test_glm_checkpoints_name_a_model_type_of_their_own(family_runs):
    transformers = pytest.importorskip("transformers")
    checkpoint = resolve_model(family_runs["glm"])
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "npplm-glm"  # not "glm": transformers' GLM-4
    with pytest.raises(ValueError, match="npplm-glm"):
        transformers.AutoConfig.from_pretrained(checkpoint)
    assert type(npplm.from_pretrained(checkpoint)).__name__ == "GLMForConditionalGeneration"
    # a checkpoint an older npplm wrote, with model_type "glm", still loads
    config["model_type"] = "glm"
    (checkpoint / "config.json").write_text(json.dumps(config))
    try:
        assert npplm.from_pretrained(checkpoint).config == npplm.from_pretrained(
            resolve_model(family_runs["glm"])).config
    finally:
        config["model_type"] = "npplm-glm"
        (checkpoint / "config.json").write_text(json.dumps(config))
