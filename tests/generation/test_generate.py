"""model.generate for decoder-only models: greedy decoding and beam search against
transformers' generate, sampling, eos, streaming.

The models are tiny random GPT-2 / GPT-1 heads saved by transformers and loaded by npplm;
nothing is downloaded.
"""

import numpy as np
import pytest

import npplm
from npplm.generation import choose_next
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

TINY = dict(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4)
HF = {"gpt2": ("GPT2Config", "GPT2LMHeadModel"),
      "openai-gpt": ("OpenAIGPTConfig", "OpenAIGPTLMHeadModel")}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """family -> (transformers model, the same weights in npplm), random scale-0.3 weights."""
    built = {}

    def get(family):
        if family not in built:
            config_name, model_name = HF[family]
            config = getattr(transformers, config_name)(**TINY, attn_implementation="eager")
            torch.manual_seed(0)
            hf = getattr(transformers, model_name)(config).eval()
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():
                for name, p in hf.named_parameters():
                    if not (".ln_" in name and name.endswith("weight")):
                        p.copy_(0.3 * torch.randn(p.shape, generator=g))
            path = tmp_path_factory.mktemp(family)
            hf.save_pretrained(path)
            built[family] = hf, npplm.from_pretrained(path)
        return built[family]

    return get


def prompts(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(3, 64, (2, 6))


@pytest.mark.parametrize("family", list(HF))
def test_greedy_equals_transformers_generate(family, pair):
    hf, ours = pair(family)
    ids = prompts()
    expected = hf.generate(torch.tensor(ids), attention_mask=torch.ones(ids.shape, dtype=int),
                           max_new_tokens=12, do_sample=False, pad_token_id=0).numpy()
    assert (ours.generate(ids, 12, temperature=0) == expected).all()


def test_greedy_left_padded_batch_equals_transformers_generate(pair):
    hf, ours = pair("gpt2")
    ids = prompts()
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # the second prompt is 3 tokens, left-padded
    ids[1, :3] = 0
    expected = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                           max_new_tokens=8, do_sample=False, pad_token_id=0).numpy()
    got = ours.generate(ids, 8, temperature=0, attention_mask=mask)
    assert (got == expected).all()
    alone = ours.generate(ids[1, 3:], 8, temperature=0)
    assert (got[1, 6:] == alone[0, 3:]).all()


def test_sampling_is_reproducible_with_a_seed(pair):
    _, ours = pair("gpt2")
    ids = prompts()
    a = ours.generate(ids, 10, temperature=1.5, seed=7)
    b = ours.generate(ids, 10, temperature=1.5, seed=7)
    c = ours.generate(ids, 10, temperature=1.5, seed=8)
    assert (a == b).all() and a.shape == (2, 16)
    assert (a != c).any()
    assert (a[:, :6] == ids).all()  # the prompt comes back first


def test_top_k_1_and_tiny_top_p_are_greedy(pair):
    _, ours = pair("gpt2")
    ids = prompts(1)
    greedy = ours.generate(ids, 8, temperature=0)
    assert (ours.generate(ids, 8, top_k=1, seed=3) == greedy).all()
    assert (ours.generate(ids, 8, top_p=1e-6, seed=3) == greedy).all()


def test_choose_next_respects_top_k_and_top_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 2000))
    rng = np.random.default_rng(0)
    picks = choose_next(logits, top_k=2, rng=rng)
    assert set(picks.tolist()) == {0, 1}
    assert abs((picks == 0).mean() - 0.5 / 0.8) < 0.05  # renormalised over the two kept
    picks = choose_next(logits, top_p=0.7, rng=rng)  # 0.5 < 0.7: tokens 0 and 1 kept
    assert set(picks.tolist()) == {0, 1}
    picks = choose_next(logits, rng=rng)
    assert abs(np.bincount(picks, minlength=4) / 2000 - [0.5, 0.3, 0.15, 0.05]).max() < 0.04
    assert (choose_next(logits[:1], temperature=0) == [0]).all()


def test_eos_finishes_a_row_then_pads_and_stops_when_all_finished(pair):
    _, ours = pair("gpt2")
    ids = prompts()
    greedy = ours.generate(ids, 12, temperature=0)
    eos = int(greedy[0, 8])  # row 0's third new token
    out = ours.generate(ids, 12, temperature=0, eos_token_id=eos, pad_token_id=63)
    first = np.flatnonzero(greedy[0, 6:] == eos)[0]
    assert (out[0, 6:6 + first + 1] == greedy[0, 6:6 + first + 1]).all()
    assert (out[0, 6 + first + 1:] == 63).all()
    hits = [np.flatnonzero(greedy[r, 6:] == eos) for r in range(2)]
    if len(hits[1]):  # stops as soon as both rows have finished
        assert out.shape[1] == 6 + max(h[0] for h in hits) + 1
    else:
        assert out.shape[1] == 18


def test_stream_callback_and_iterator_see_every_token(pair):
    _, ours = pair("openai-gpt")
    ids = prompts()
    seen = []
    out = ours.generate(ids, 5, temperature=0, stream=seen.append)
    assert len(seen) == 5 and all(s.shape == (2,) for s in seen)
    assert (np.stack(seen, axis=1) == out[:, 6:]).all()
    steps = list(ours.stream_generate(ids, 5, temperature=0))
    assert (np.stack(steps, axis=1) == out[:, 6:]).all()
    assert ours.generate(ids, 0).shape == (2, 6)


def test_generate_refuses_bad_arguments():
    model = GPT2LMHeadModel(GPTConfig.tiny()).eval()
    with pytest.raises(ValueError, match="pad batched prompts on the LEFT"):
        model.generate(np.ones((1, 4), dtype=int), 2, attention_mask=[[1, 1, 0, 0]])
    with pytest.raises(ValueError, match="attention_mask has shape \\(1, 3\\)"):
        model.generate(np.ones((1, 4), dtype=int), 2, attention_mask=[[1, 1, 1]])
    with pytest.raises(ValueError, match="temperature=-1"):
        model.generate(np.ones((1, 4), dtype=int), 2, temperature=-1)
    with pytest.raises(ValueError, match="top_p=1.5"):
        model.generate(np.ones((1, 4), dtype=int), 2, top_p=1.5)
    with pytest.raises(ValueError, match="exceed n_positions=32"):  # 30 + 3 - 1 > 32
        model.generate(np.ones((1, 30), dtype=int), 4)


# --- beam search: the same loop as T5's, against transformers' generate ---------------------

BEAMS = {
    "late": dict(num_beams=3, early_stopping=False),
    "early": dict(num_beams=3, early_stopping=True),
    "never": dict(num_beams=2, early_stopping="never", length_penalty=2.0),
    "two_returned": dict(num_beams=4, num_return_sequences=2, length_penalty=0.5),
}


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")
@pytest.mark.parametrize("setting", list(BEAMS))
@pytest.mark.parametrize("family", list(HF))
def test_beam_search_equals_transformers_generate(family, setting, pair):
    hf, ours = pair(family)
    ids = prompts(2)
    greedy = ours.generate(ids, 10, temperature=0)
    eos = int(greedy[0, 9])  # likely enough that some hypotheses end early
    # pad 1, not 0: transformers fills finished beams with `pad_token_id or eos_token_id`,
    # so a pad id of 0 would be replaced by eos (tests/models/test_t5_generation.py).
    options = dict(BEAMS[setting], eos_token_id=eos, pad_token_id=1)
    expected = hf.generate(torch.tensor(ids), attention_mask=torch.ones(ids.shape, dtype=int),
                           max_new_tokens=10, do_sample=False, **options).numpy()
    got = ours.generate(ids, 10, temperature=0, **options)
    np.testing.assert_array_equal(got, expected)


def test_beam_search_on_a_left_padded_batch_equals_transformers_generate(pair):
    hf, ours = pair("gpt2")
    ids = prompts(3)
    mask = np.ones_like(ids)
    mask[0, :2] = 0
    ids[0, :2] = 0
    options = dict(num_beams=3, pad_token_id=1, eos_token_id=int(ids[1, -1]))
    expected = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                           max_new_tokens=8, do_sample=False, **options).numpy()
    got = ours.generate(ids, 8, temperature=0, attention_mask=mask, **options)
    np.testing.assert_array_equal(got, expected)


def test_beam_search_refuses_sampling_and_streaming(pair):
    _, ours = pair("gpt2")
    with pytest.raises(ValueError, match="temperature must be 0"):
        ours.generate(prompts(), 4, num_beams=2, temperature=1.0)
    with pytest.raises(ValueError, match="stream needs num_beams=1"):
        ours.generate(prompts(), 4, num_beams=2, temperature=0, stream=print)
    with pytest.raises(ValueError, match="num_return_sequences=2 needs num_beams >= 2"):
        ours.generate(prompts(), 4, temperature=0, num_return_sequences=2)


@pytest.mark.parametrize("options, message", [
    (dict(temperature=float("nan")), "temperature=nan"),
    (dict(temperature=float("inf")), "temperature=inf"),
    (dict(temperature=0.0, top_p=1.5), "top_p=1.5"),  # checked even when greedy ignores it
    (dict(temperature=0.0, top_k=0), "top_k=0"),
    (dict(temperature=0.5, top_p=0.0), "top_p=0.0"),
])
def test_sampling_options_are_checked_at_every_temperature(options, message):
    from npplm.generation import check_sampling, choose_next

    with pytest.raises(ValueError, match=message):
        check_sampling(**options)
    with pytest.raises(ValueError, match=message):
        choose_next(np.zeros((1, 4)), **options)
