"""GPT-1/2/3 against Hugging Face transformers, on random-init tiny models (nothing downloaded).

GPT-2 and GPT-1 LM heads are built in transformers with random weights (scale 0.2, so that
attention is sharp), saved with `save_pretrained` and loaded with `npplm.from_pretrained`,
which exercises the Conv1D transposes. Logits, loss and every parameter's gradient must
agree; our `save_pretrained` must load back in transformers. Then the KV cache (cached
decoding equals full recomputation, left padding changes nothing), GPT-3's banded layers
(which have no reference implementation: their mask's properties), parameter counts
against the published figures and against transformers on the meta device, and input errors.
"""

import numpy as np
import pytest

import npplm
from autograd import Tensor, no_grad
from npplm.generation import KVCache
from npplm.layers import causal_mask, positions_from_mask
from npplm.models import ARCHITECTURES, BASE_MODELS
from npplm.models.gpt import (
    CONV1D_WEIGHTS,
    GPT2LMHeadModel,
    GPT2Model,
    GPTConfig,
    OpenAIGPTLMHeadModel,
    band,
    num_parameters,
)
from tests.models.decoders import saved_checkpoints
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

# GPTConfig.tiny(), spelled out for transformers (GPT-1 has no n_inner: F = 4 C there).
TINY = dict(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4)
FAMILIES = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_inner=37, bos_token_id=1,
                                                   eos_token_id=2)),
    "openai-gpt": ("OpenAIGPTConfig", "OpenAIGPTLMHeadModel", {}),
}
B, T = 3, 7
LENGTHS = np.array([7, 5, 2])  # left-padded: rows of 7, 5 and 2 real tokens


def randomize(model, seed=0):
    """Random weights of scale 0.2 (LayerNorm gains 1 +- 0.1), in place, ties kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_gain = ".ln_" in name and name.endswith("weight")
            p.copy_(1 + 0.1 * noise if is_gain else 0.2 * noise)
    return model


def hf_model(family):
    config_name, model_name, extra = FAMILIES[family]
    config = getattr(transformers, config_name)(**TINY, **extra, attn_implementation="eager")
    torch.manual_seed(0)
    return randomize(getattr(transformers, model_name)(config)).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (transformers model, its save_pretrained directory), built once."""
    return saved_checkpoints(tmp_path_factory, hf_model)


def left_padded_batch(seed=0):
    rng = np.random.default_rng(seed)
    mask = (np.arange(T) >= T - LENGTHS[:, None]).astype(np.int64)  # zeros first
    ids = np.where(mask == 1, rng.integers(3, TINY["vocab_size"], (B, T)), 0)
    # No loss on the first real token either: it would be predicted from a padding
    # position, whose output is meaningless (and differs: Hugging Face's GPT-1 lets a
    # padding query attend to later tokens, where every key is masked for us).
    first = np.arange(T) == (T - LENGTHS[:, None])
    labels = np.where((mask == 1) & ~first, ids, -100)
    return ids, mask, labels


def checkpoint_grad(name, grad):
    """Our gradient in the checkpoint's layout: Conv1D weights are (in, out) there."""
    return grad.T if name.endswith(CONV1D_WEIGHTS) else grad


# --- parity with transformers ------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_loss_and_gradients_match_transformers(family, checkpoints):
    hf, path = checkpoints(family)
    ours = npplm.from_pretrained(path)
    assert type(ours).__name__ == type(hf).__name__ and not ours.training
    ids, mask, labels = left_padded_batch()
    # Hugging Face's bare forward numbers positions 0..T-1 whatever the mask; we number
    # them from the mask as its generate does. Give it the same positions to compare.
    positions = positions_from_mask(mask, T)
    hf_out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions), labels=torch.tensor(labels))
    out = ours(ids, attention_mask=mask, labels=labels)
    real = mask.astype(bool)  # padded rows' outputs are never used: compared on tokens only
    assert_close(out.logits.numpy()[real], hf_out.logits.detach().numpy()[real], "model32")
    assert_close(out.loss, hf_out.loss.detach().numpy(), "model32")

    hf.zero_grad()
    hf_out.loss.backward()
    out.loss.backward()
    hf_params = dict(hf.named_parameters(remove_duplicate=False))
    assert set(ours.state_dict()) == set(hf_params)
    ours_params = dict(ours.named_parameters())
    assert all(p.grad is not None for p in ours_params.values())
    scale = max(float(abs(hf_params[n].grad).max()) for n in ours_params)
    for name, p in ours_params.items():
        assert_close(checkpoint_grad(name, p.grad), hf_params[name].grad.numpy(),
                     "model_grad32", scale=scale)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_unpadded_forward_equals_transformers_default_positions(family, checkpoints):
    hf, path = checkpoints(family)
    ours = npplm.from_pretrained(path)
    ids = np.random.default_rng(1).integers(0, TINY["vocab_size"], (2, 9))
    with no_grad():
        logits = ours(ids).logits.numpy()
    assert_close(logits, hf(torch.tensor(ids)).logits.detach().numpy(), "model32")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_pretrained_loads_in_transformers(family, checkpoints, tmp_path):
    hf, path = checkpoints(family)
    ours = npplm.from_pretrained(path)
    ours.save_pretrained(tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager").eval()
    assert type(back).__name__ == type(hf).__name__
    for name, value in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name
    ids = np.random.default_rng(2).integers(0, TINY["vocab_size"], (2, 5))
    with no_grad():
        logits = ours(ids).logits.numpy()
    assert_close(logits, back(torch.tensor(ids)).logits.detach().numpy(), "model32")


def test_base_models_load_from_lm_checkpoints(checkpoints, tmp_path):
    hf, path = checkpoints("gpt2")
    hf.transformer.save_pretrained(tmp_path)  # a bare GPT2Model checkpoint
    model = npplm.from_pretrained(tmp_path)
    assert isinstance(model, GPT2Model)
    ids = np.arange(6)[None]
    with no_grad():
        h = model(ids).last_hidden_state.numpy()
    assert_close(h, hf.transformer(torch.tensor(ids)).last_hidden_state.detach().numpy(),
                 "model32")


def test_tables_name_the_gpt_classes():
    for name in ("GPT2Model", "GPT2LMHeadModel", "OpenAIGPTModel", "OpenAIGPTLMHeadModel"):
        assert ARCHITECTURES[name].__name__ == name
    assert BASE_MODELS["gpt2"].__name__ == "GPT2Model"
    assert BASE_MODELS["openai-gpt"].__name__ == "OpenAIGPTModel"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_config_round_trips_through_transformers(family):
    config_name, _, extra = FAMILIES[family]
    hf = getattr(transformers, config_name)(**TINY, **extra)
    ours = GPTConfig.from_hf(hf.to_dict())
    again = getattr(transformers, config_name)(**ours.to_hf())
    for key in (*TINY, "layer_norm_epsilon", "initializer_range"):
        assert getattr(again, key) == getattr(hf, key)
    assert GPTConfig.from_hf(again.to_dict()) == ours


# --- the KV cache ------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cached_decoding_equals_full_recompute(family, checkpoints):
    ours = npplm.from_pretrained(checkpoints(family)[1])
    ids = np.random.default_rng(3).integers(0, TINY["vocab_size"], (2, 12))
    with no_grad():
        full = ours(ids).logits.numpy()  # (B, 12, V), no cache
        cache = ours.new_cache(2, 12)
        steps = [ours(ids[:, :5], cache=cache).logits.numpy()]  # prefill 5
        for t in range(5, 12):  # then one token at a time
            steps.append(ours(ids[:, t:t + 1], cache=cache).logits.numpy())
    assert cache.length == 12
    cached = np.concatenate(steps, axis=1)
    assert_close(cached, full, "model32")
    assert (cached.argmax(-1) == full.argmax(-1)).all()
    # nbytes = 2 (k and v) x B x L x length x K x D x 4 bytes
    assert cache.nbytes == 2 * 2 * TINY["n_layer"] * 12 * TINY["n_head"] * 8 * 4


@pytest.mark.parametrize("family", list(FAMILIES))
def test_left_padding_equals_each_prompt_alone(family, checkpoints):
    ours = npplm.from_pretrained(checkpoints(family)[1])
    ids, mask, _ = left_padded_batch(seed=4)
    with no_grad():
        batched = ours(ids, attention_mask=mask).logits.numpy()
        out = ours.generate(ids, 6, temperature=0, attention_mask=mask)
        for row, n in enumerate(LENGTHS):
            alone = ours(ids[row:row + 1, T - n:]).logits.numpy()[0]
            assert_close(batched[row, T - n:], alone, "model32")
            single = ours.generate(ids[row, T - n:], 6, temperature=0)
            assert (out[row, T:] == single[0, n:]).all()


# --- GPT-3: alternating dense and banded layers -------------------------------------------


def test_band_properties():
    window = 3
    for T_, S in ((6, 6), (1, 9), (4, 10)):
        allowed = band(T_, S, window)
        dense = causal_mask(T_, S) == 0
        assert not (allowed & ~dense).any()  # never sees the future
        for t in range(T_):
            q = S - T_ + t  # the query's absolute position
            assert allowed[t, q]  # sees itself
            assert allowed[t].sum() == min(window, q + 1)
            assert np.flatnonzero(allowed[t]).tolist() == list(range(max(0, q - window + 1),
                                                                     q + 1))
        assert (band(T_, S, S) == dense).all()  # window >= S: dense


def test_gpt3_layers_alternate_and_wide_window_equals_dense():
    tiny = {k: v for k, v in vars(GPTConfig.tiny()).items() if k != "attention_layers"}
    config = GPTConfig.gpt3_small(**{**tiny, "n_layer": 4})
    assert config.layer_kinds() == ("global", "local", "global", "local")
    ids = np.random.default_rng(5).integers(0, 64, (2, 10))
    dense = GPT2LMHeadModel(GPTConfig.tiny(n_layer=4)).eval()
    with no_grad():
        expected = dense(ids).logits.numpy()
        for window, same in ((10, True), (32, True), (3, False)):
            sparse = GPT2LMHeadModel(GPTConfig.tiny(n_layer=4, local_window=window,
                                                    attention_layers=config.layer_kinds()))
            sparse.eval()
            logits = sparse(ids).logits.numpy()
            assert np.allclose(logits, expected, atol=1e-6) == same, window
            # The first `window` positions cannot tell banded from dense.
            assert_close(logits[:, :window], expected[:, :window], "model32")


def test_gpt3_cached_decoding_equals_full_recompute():
    model = GPT2LMHeadModel(GPTConfig.tiny(n_layer=2, local_window=3,
                                           attention_layers=("global", "local"))).eval()
    ids = np.random.default_rng(6).integers(0, 64, (1, 11))
    with no_grad():
        full = model(ids).logits.numpy()
        cache = KVCache(2, 1, 4, 8, 11, np.float32)
        steps = [model(ids[:, :4], cache=cache).logits.numpy()]
        steps += [model(ids[:, t:t + 1], cache=cache).logits.numpy() for t in range(4, 11)]
    assert_close(np.concatenate(steps, axis=1), full, "model32")


# --- parameter counts --------------------------------------------------------------------

PUBLISHED = {  # preset: (exact count, the published rounded figure)
    "gpt1": (116_534_784, "117M"),
    "gpt2": (124_439_808, "124M"),
    "gpt2_medium": (354_823_168, "355M"),
    "gpt2_large": (774_030_080, "774M"),
    "gpt2_xl": (1_557_611_200, "1.5B"),
    "gpt3_small": (125_226_240, "125M"),
    "gpt3_175b": (174_604_259_328, "175B"),
}


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_parameter_counts_match_published_and_transformers(preset):
    config = getattr(GPTConfig, preset)()
    exact, rounded = PUBLISHED[preset]
    assert num_parameters(config) == exact
    unit = {"M": 1e6, "B": 1e9}[rounded[-1]]
    assert abs(exact / unit / float(rounded[:-1]) - 1) < 0.04  # 1.5B is 1.56B
    hf = config.to_hf()
    name = "OpenAIGPTModel" if config.model_type == "openai-gpt" else "GPT2Model"
    hf_config = getattr(transformers, name.replace("Model", "Config"))(**hf)
    with torch.device("meta"):  # no memory: shapes only (GPT-3's sparsity has no weights)
        model = getattr(transformers, name)(hf_config)
    assert sum(p.numel() for p in model.parameters()) == exact


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_count_equals_allocated(family):
    cls = GPT2LMHeadModel if family == "gpt2" else OpenAIGPTLMHeadModel
    config = GPTConfig.tiny() if family == "gpt2" else GPTConfig.gpt1(**TINY)
    assert cls(config).num_parameters() == num_parameters(config)


def test_scaled_residual_init():
    config = GPTConfig.tiny(n_layer=8, n_embd=64, n_inner=256, vocab_size=64)
    block = GPT2Model(config).h[0]
    std = 0.02 / np.sqrt(2 * 8)
    for p in (block.attn.c_proj.weight, block.mlp.c_proj.weight):
        assert abs(p.numpy().std() - std) < 0.1 * std
    assert abs(block.mlp.c_fc.weight.numpy().std() - 0.02) < 0.002


def test_one_sgd_step_lowers_the_loss():
    model = GPT2LMHeadModel(GPTConfig.tiny(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    ids = np.random.default_rng(7).integers(0, 64, (4, 16))
    loss = model(ids, labels=ids).loss
    loss.backward()
    for p in model.parameters():
        p.data -= 0.5 * p.grad
    assert float(model(ids, labels=ids).loss.numpy()) < float(loss.numpy())


# --- bad input -----------------------------------------------------------------------------


def test_bad_input_errors_name_value_and_limit():
    model = GPT2LMHeadModel(GPTConfig.tiny())
    with pytest.raises(IndexError, match="64 is out of range.*64 rows"):
        model(np.array([[1, 64]]))
    with pytest.raises(ValueError, match="0 cached \\+ 33 new positions = 33 exceed "
                                         "n_positions=32"):
        model(np.zeros((1, 33), dtype=np.int64))
    cache = KVCache(2, 1, 4, 8, 40, np.float32)
    with no_grad():
        model(np.zeros((1, 30), dtype=np.int64), cache=cache)
    with pytest.raises(ValueError, match="30 cached \\+ 3 new positions = 33 exceed"):
        model(np.zeros((1, 3), dtype=np.int64), cache=cache)
    with pytest.raises(ValueError, match="attention_mask has shape \\(1, 1\\) but must be "
                                         "\\(B, S\\) = \\(1, 31\\)"):
        model(np.zeros((1, 1), dtype=np.int64), attention_mask=np.ones((1, 1)), cache=cache)
    with pytest.raises(ValueError, match="shape \\(B, T\\)"):
        model(np.zeros(4, dtype=np.int64))
    with pytest.raises(TypeError, match="integers"):
        model(np.zeros((1, 4)))


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="n_embd=30 is not divisible by n_head=4"):
        GPTConfig.tiny(n_embd=30)
    with pytest.raises(ValueError, match="attention_layers has 1 entries but n_layer=2"):
        GPTConfig.tiny(attention_layers=("local",))
    with pytest.raises(ValueError, match="'sparse'"):
        GPTConfig.tiny(attention_layers=("global", "sparse"))
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        GPTConfig.from_hf(dict(model_type="gpt2", scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ValueError, match="model_type 'llama'"):
        GPTConfig.from_hf(dict(model_type="llama"))
    with pytest.raises(ValueError, match="GPT2Model needs model_type 'gpt2'"):
        GPT2Model(GPTConfig.gpt1(**TINY))


def test_cache_gets_no_gradient_but_forward_still_differentiable():
    model = GPT2LMHeadModel(GPTConfig.tiny()).eval()
    cache = KVCache(2, 1, 4, 8, 8, np.float32)
    out = model(np.arange(4)[None], cache=cache)
    (out.logits * Tensor(np.ones_like(out.logits.numpy()))).sum().backward()
    assert model.transformer.wte.weight.grad is not None
