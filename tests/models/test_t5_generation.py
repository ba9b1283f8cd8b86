"""T5 decoding: cached steps against full recomputation, generate against transformers.

The models are random-init tiny T5s (v1.0: ReLU, tied and scaled head; v1.1: gated GELU,
untied head) built in transformers, saved and loaded by npplm; nothing is downloaded.
Their weights are larger than the default init (scale 0.3) so that the next-token
distributions are far from uniform, and the eos row of the head is doubled so that beams
end at different lengths: early stopping and the length penalty then change the result
(test_the_compared_settings_change_the_result makes sure they do).

transformers is run with use_cache=False: its cache assumes as many decoder blocks as
encoder blocks (tiny() has 2 and 3) and fails on this config; without it, transformers
recomputes the whole decoder at every step, an oracle independent of our cache.
"""

import json

import numpy as np
import pytest

import npplm
from npplm.generation.beam_search import beam_search
from npplm.io import read_weights, write_safetensors
from npplm.models.t5 import T5Config, T5ForConditionalGeneration
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VARIANTS = {
    "v1_0": dict(feed_forward_proj="relu"),
    "v1_1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}
EOS = 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """variant -> (transformers model, npplm model with the same weights), built once."""
    built = {}

    def get(variant):
        if variant not in built:
            config = T5Config.tiny(**VARIANTS[variant])
            hf = transformers.T5ForConditionalGeneration(
                transformers.T5Config(**config.to_hf(), attn_implementation="eager"))
            if not config.tie_word_embeddings:  # transformers 5 ties every head: untie
                hf.lm_head.weight = torch.nn.Parameter(hf.lm_head.weight.detach().clone())
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for name, p in hf.named_parameters():
                    noise = torch.randn(p.shape, generator=g)
                    scale = 1.0 if "relative_attention_bias" in name else 0.3
                    p.copy_(1 + 0.1 * noise if "layer_norm" in name else scale * noise)
                hf.lm_head.weight[EOS] *= 2.0
            path = tmp_path_factory.mktemp(variant)
            hf.eval().save_pretrained(path)
            if not config.tie_word_embeddings:  # the layout of a published v1.1 checkpoint
                state = read_weights(path)
                state["lm_head.weight"] = hf.lm_head.weight.detach().numpy()
                write_safetensors(state, path / "model.safetensors")
                hf_config = json.loads((path / "config.json").read_text())
                hf_config["tie_word_embeddings"] = False
                del hf_config["scale_decoder_outputs"]
                (path / "config.json").write_text(json.dumps(hf_config))
            built[variant] = hf, npplm.from_pretrained(path)
        return built[variant]

    return get


def inputs(seed=0):
    """Six encoder inputs of 9, 6, 3, 9, 8 and 7 tokens, right-padded with 0."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(9) < np.array([9, 6, 3, 9, 8, 7])[:, None]).astype(np.int64)
    return rng.integers(2, 64, (6, 9)) * mask, mask


def theirs(hf, ids, mask, **settings):
    out = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), use_cache=False,
                      do_sample=False, **settings).numpy()
    # transformers fills a beam's row after its eos with `pad_token_id or eos_token_id`,
    # evaluated on a tensor: a pad id of 0 is falsy, so T5's rows are filled with eos.
    # We fill with pad; compare up to the eos and pad after it.
    for row in out:
        ends = np.flatnonzero(row[1:] == EOS)
        if ends.size:
            row[ends[0] + 2:] = 0
    return out


# --- cached decoding equals full recomputation ---------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_steps_equal_full_recomputation(variant, pair):
    # float64, so that any difference beyond rounding is a bug, not float32 noise. The
    # decoder input is 14 tokens, beyond max_distance 12: every kind of bucket is used.
    model = pair(variant)[1].astype(np.float64)
    ids, mask = inputs()
    dec = np.random.default_rng(1).integers(0, 64, (len(ids), 14))
    full = model(ids, attention_mask=mask, decoder_input_ids=dec)
    with npplm.no_grad():
        cache = model.prefill(ids, attention_mask=mask, max_length=14)
        chunks = [dec[:, :5]] + [dec[:, t:t + 1] for t in range(5, 14)]  # 5 at once, then 1s
        steps = [model(decoder_input_ids=chunk, cache=cache) for chunk in chunks]
    assert cache.length == 14
    got = np.concatenate([s.logits.numpy() for s in steps], axis=1)  # (B, 14, V)
    assert_close(got, full.logits, "exact64")
    assert_close(steps[-1].encoder_last_hidden_state, full.encoder_last_hidden_state, "exact64")


def test_beam_search_through_the_cache_equals_recomputation(pair):
    # The same search, its step recomputing the whole decoder from each beam's tokens:
    # checks the cache's reordering of beams (T5Cache.reorder).
    model = pair("v1_0")[1]
    ids, mask = inputs(2)
    N, R = 3, 3 * len(ids)
    encoder_ids, encoder_mask = np.repeat(ids, N, axis=0), np.repeat(mask, N, axis=0)
    history = np.zeros((R, 1), dtype=np.int64)  # each row's decoder input: start token

    def recompute(tokens, rows):
        nonlocal history
        if tokens is not None:
            history = np.concatenate([history[rows], tokens[:, None]], axis=1)
        with npplm.no_grad():
            out = model(encoder_ids, attention_mask=encoder_mask, decoder_input_ids=history)
        return out.logits.numpy()[:, -1]

    want = beam_search(recompute, len(ids), N, 9, EOS, length_penalty=0.7).sequences
    got = model.generate(ids, attention_mask=mask, num_beams=N, max_new_tokens=9,
                         length_penalty=0.7)
    np.testing.assert_array_equal(got[:, 1:], want)


# --- generate equals transformers' generate ------------------------------------------------

SETTINGS = {
    "default": dict(),  # greedy, 20 new tokens
    "greedy": dict(max_new_tokens=12),
    "beams_early": dict(num_beams=4, max_new_tokens=12, early_stopping=True),
    "beams_late": dict(num_beams=4, max_new_tokens=12, early_stopping=False),
    "beams_never": dict(num_beams=4, max_new_tokens=12, early_stopping="never"),
    "long_penalty": dict(num_beams=3, max_new_tokens=12, length_penalty=2.0),
    "short_penalty": dict(num_beams=3, max_new_tokens=12, length_penalty=-1.0,
                          early_stopping=True),
    "two_returned": dict(num_beams=4, max_length=9, length_penalty=0.5,
                         early_stopping="never", num_return_sequences=2),
    # Two beams fill up with hypotheses early: whether a running beam may still win
    # (the early-stopping bound, "never" against False) decides some outputs here.
    "pair_late": dict(num_beams=2, max_new_tokens=20),
    "pair_never": dict(num_beams=2, max_new_tokens=20, early_stopping="never"),
}


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_generate_equals_transformers(variant, setting, pair):
    hf, ours = pair(variant)
    ids, mask = inputs()
    want = theirs(hf, ids, mask, **SETTINGS[setting])
    got = ours.generate(ids, attention_mask=mask, **SETTINGS[setting])
    np.testing.assert_array_equal(got, want)


def test_the_compared_settings_change_the_result(pair):
    # Otherwise the parity test above could pass with early_stopping or length_penalty
    # ignored. Outputs of transformers itself, for either variant.
    ids, mask = inputs()
    out = {(v, s): theirs(pair(v)[0], ids, mask, **SETTINGS[s]) for v in VARIANTS
           for s in ("greedy", "beams_early", "beams_late", "long_penalty", "short_penalty")}

    def differ(a, b):
        return any(out[v, a].shape != out[v, b].shape or (out[v, a] != out[v, b]).any()
                   for v in VARIANTS)

    assert differ("greedy", "beams_late")
    assert differ("beams_early", "beams_late")
    assert differ("long_penalty", "short_penalty")
    assert any((out[key][:, 1:] == EOS).any() for key in out)  # some hypotheses end with eos


# --- sampling -------------------------------------------------------------------------------


def test_sampling_is_seeded_and_top_k_1_is_greedy(pair):
    model = pair("v1_1")[1]
    ids, mask = inputs(3)
    a = model.generate(ids, attention_mask=mask, max_new_tokens=10, temperature=1.5, seed=7)
    b = model.generate(ids, attention_mask=mask, max_new_tokens=10, temperature=1.5, seed=7)
    c = model.generate(ids, attention_mask=mask, max_new_tokens=10, temperature=1.5, seed=8)
    assert (a == b).all() and (a != c).any() and (a[:, 0] == 0).all()
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=10)
    top_k = model.generate(ids, attention_mask=mask, max_new_tokens=10, temperature=1.0,
                           top_k=1, seed=3)
    top_p = model.generate(ids, attention_mask=mask, max_new_tokens=10, temperature=1.0,
                           top_p=1e-6, seed=3)
    np.testing.assert_array_equal(top_k, greedy)
    np.testing.assert_array_equal(top_p, greedy)


def test_one_input_without_a_batch_axis(pair):
    model = pair("v1_0")[1]
    ids, _ = inputs()
    np.testing.assert_array_equal(model.generate(ids[0], max_new_tokens=6, num_beams=2),
                                  model.generate(ids[:1], max_new_tokens=6, num_beams=2))


# --- bad input ------------------------------------------------------------------------------


def test_generate_refuses_bad_arguments_by_name():
    model = T5ForConditionalGeneration(T5Config.tiny()).eval()
    ids = np.full((2, 4), 5)
    with pytest.raises(ValueError, match="max_new_tokens=3 or max_length=5, not both"):
        model.generate(ids, max_new_tokens=3, max_length=5)
    with pytest.raises(ValueError, match="max_length=0 must be a positive integer"):
        model.generate(ids, max_length=0)
    with pytest.raises(ValueError, match="max_new_tokens=-1 must be a non-negative"):
        model.generate(ids, max_new_tokens=-1)
    with pytest.raises(ValueError, match=r"decoder_start_token_id=64 is outside the vocab"):
        model.generate(ids, decoder_start_token_id=64)
    with pytest.raises(ValueError, match=r"pad_token_id=-1 is outside the vocabulary"):
        model.generate(ids, pad_token_id=-1)
    with pytest.raises(ValueError, match=r"eos_token_id=99 is outside the vocabulary"):
        model.generate(ids, eos_token_id=99)
    with pytest.raises(ValueError, match="num_beams=0 must be a positive integer"):
        model.generate(ids, num_beams=0)
    with pytest.raises(ValueError, match="temperature must be 0, got 0.7"):
        model.generate(ids, num_beams=2, temperature=0.7)
    with pytest.raises(ValueError, match=r"num_return_sequences=3 must be in \[1, num_beams=2"):
        model.generate(ids, num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="num_return_sequences=2 needs num_beams >= 2"):
        model.generate(ids, num_return_sequences=2)
    with pytest.raises(ValueError, match="early_stopping='sometimes' must be one of"):
        model.generate(ids, num_beams=2, early_stopping="sometimes")
    with pytest.raises(IndexError, match="input_ids: token id 70 is out of range"):
        model.generate(np.full((1, 3), 70))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\)"):
        model.generate(ids, attention_mask=np.ones((2, 3)))


def test_a_cache_is_used_as_documented():
    model = T5ForConditionalGeneration(T5Config.tiny()).eval()
    ids = np.full((2, 4), 5)
    with npplm.no_grad():
        cache = model.prefill(ids, max_length=3, num_beams=2)  # 4 rows
        with pytest.raises(ValueError, match="the encoder has already run"):
            model(ids, decoder_input_ids=np.zeros((4, 1), np.int64), cache=cache)
        with pytest.raises(ValueError, match="a cache decodes step by step"):
            model(labels=np.zeros((4, 1), np.int64), cache=cache)
        with pytest.raises(ValueError, match="decoder_input_ids has batch 2 but the cache "
                                             "has 4 rows"):
            model(decoder_input_ids=np.zeros((2, 1), np.int64), cache=cache)
        with pytest.raises(ValueError, match="a row of the same input"):
            cache.reorder([0, 2, 2, 3])  # row 1 (input 0) cannot continue row 2 (input 1)
        model(decoder_input_ids=np.zeros((4, 3), np.int64), cache=cache)
        with pytest.raises(ValueError, match="KV cache full"):
            model(decoder_input_ids=np.zeros((4, 1), np.int64), cache=cache)
