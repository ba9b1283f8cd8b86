"""T5 against Hugging Face transformers, on random-init tiny models (nothing downloaded).

Each variant is built in transformers (eager attention, eval), given random weights larger
than the default init, saved with `save_pretrained`, and loaded with `npplm.from_pretrained`.
Logits, loss and the gradient of the loss with respect to every parameter must agree in
float32, with a padded encoder batch and ignored (-100) labels. Variants:
    v1_0      ReLU feed-forward, head tied to `shared`, decoder output scaled by C^-0.5
    v1_1      gated GELU, untied lm_head, no scale: a published v1.1 checkpoint's layout
              (config tie_word_embeddings=false, lm_head.weight stored). transformers 5
              always ties, so the test unties its model by hand and writes these keys.
    v1_1_hf5  gated GELU as transformers 5 saves it: tied, scale_decoder_outputs=false
In float64 the two agree to ~1e-14 once transformers' T5LayerNorm is patched to compute
its variance in the input's dtype (it always casts to float32, even in a float64 model).
"""

import copy
import json

import numpy as np
import pytest

import npplm
from npplm.io import read_weights, write_safetensors
from npplm.models import ARCHITECTURES, BASE_MODELS
from npplm.models.t5 import (
    T5Config,
    T5ForConditionalGeneration,
    T5Model,
    num_parameters,
    relative_position_bucket,
    shift_right,
)
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

B, S, T = 3, 20, 15  # batch, encoder length (beyond max_distance 12), decoder length
LENGTHS = np.array([20, 13, 4])  # the encoder batch is padded: rows of 20, 13 and 4 tokens
VARIANTS = {
    "v1_0": dict(feed_forward_proj="relu"),
    "v1_1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "v1_1_hf5": dict(feed_forward_proj="gated-gelu", scale_decoder_outputs=False),
}


def randomize(model, seed=0):
    """Weights of scale 0.15 (relative bias 1.0, RMS gains 1 +- 0.1), in place, ties kept.

    Larger than the default init so that attention is sharp and the position bias matters;
    not much larger, as float32 rounding grows through five blocks and two stacks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            scale = 1.0 if "relative_attention_bias" in name else 0.15
            p.copy_(1 + 0.1 * noise if "layer_norm" in name else scale * noise)
    return model


def hf_model(variant):
    config = T5Config.tiny(**VARIANTS[variant])
    hf = transformers.T5ForConditionalGeneration(
        transformers.T5Config(**config.to_hf(), attn_implementation="eager"))
    if not config.tie_word_embeddings:  # transformers 5 ties every T5 head: untie by hand
        hf.lm_head.weight = torch.nn.Parameter(hf.lm_head.weight.detach().clone())
    return randomize(hf).eval(), config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """variant -> (transformers model, its checkpoint directory), built once."""
    built = {}

    def get(variant):
        if variant not in built:
            hf, config = hf_model(variant)
            path = tmp_path_factory.mktemp(variant)
            hf.save_pretrained(path)
            if not config.tie_word_embeddings:  # the layout of google/t5-v1_1-*
                state = read_weights(path)
                state["lm_head.weight"] = hf.lm_head.weight.detach().numpy()
                write_safetensors(state, path / "model.safetensors")
                hf_config = json.loads((path / "config.json").read_text())
                hf_config["tie_word_embeddings"] = False
                del hf_config["scale_decoder_outputs"]
                (path / "config.json").write_text(json.dumps(hf_config))
            built[variant] = hf, path
        return built[variant]

    return get


def make_batch(seed=0):
    """Padded encoder ids and mask; labels with -100 at the end of one row."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(S) < LENGTHS[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(2, 64, (B, S)), 0)
    labels = rng.integers(2, 64, (B, T))
    labels[1, 10:] = -100
    return ids, mask, labels


def compare_gradients(ours, hf, our_loss, hf_loss):
    hf.zero_grad()
    hf_loss.backward()
    our_loss.backward()
    hf_params = dict(hf.named_parameters(remove_duplicate=False))  # tied: under every name
    assert set(ours.state_dict()) == set(hf_params)
    params = dict(ours.named_parameters())
    assert all(p.grad is not None for p in params.values()), "a parameter got no gradient"
    scale = max(float(hf_params[n].grad.abs().max()) for n in params)
    errors = {}
    for name, p in params.items():
        assert_close(p.grad, hf_params[name].grad.numpy(), "model_grad32", scale=scale)
        errors[name] = float(np.abs(p.grad - hf_params[name].grad.numpy()).max())
    return max(errors.values())


# --- parity with transformers ------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_loss_and_gradients_match_transformers(variant, checkpoints):
    hf, path = checkpoints(variant)
    ours = npplm.from_pretrained(path)
    assert isinstance(ours, T5ForConditionalGeneration) and not ours.training
    assert ours.config == T5Config.tiny(**VARIANTS[variant])
    ids, mask, labels = make_batch()
    hf_out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                labels=torch.tensor(labels))
    out = ours(ids, attention_mask=mask, labels=labels)
    assert_close(out.logits, hf_out.logits.detach().numpy(), "model32")
    assert_close(out.loss, hf_out.loss.detach().numpy(), "model32")
    compare_gradients(ours, hf, out.loss, hf_out.loss)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_float64_matches_transformers_to_rounding(variant, checkpoints, monkeypatch):
    # float32 hides a slightly wrong formula inside 1e-5; float64 does not.
    def t5_layer_norm(self, h):  # transformers' T5LayerNorm without its float32 cast
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True)
                                              + self.variance_epsilon))

    monkeypatch.setattr(transformers.models.t5.modeling_t5.T5LayerNorm, "forward",
                        t5_layer_norm)
    hf, path = checkpoints(variant)
    hf = copy.deepcopy(hf).double()
    ours = npplm.from_pretrained(path).astype(np.float64)
    ids, mask, labels = make_batch()
    hf_out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                labels=torch.tensor(labels))
    out = ours(ids, attention_mask=mask, labels=labels)
    assert_close(out.logits, hf_out.logits.detach().numpy(), "float64")
    assert_close(out.loss, hf_out.loss.detach().numpy(), "float64")
    hf_out.loss.backward()
    out.loss.backward()
    hf_params = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, hf_params[name].grad.numpy(), "float64")


def test_explicit_decoder_inputs_with_padding_mask(checkpoints):
    # decoder_input_ids given (no shift), a right-padded decoder, no encoder mask.
    hf, path = checkpoints("v1_0")
    ours = npplm.from_pretrained(path)
    ids, _, labels = make_batch(seed=1)
    dec = shift_right(np.where(labels == -100, 0, labels), 0, 0)
    dec_mask = (np.arange(T) < np.array([15, 9, 3])[:, None]).astype(np.int64)
    hf_out = hf(input_ids=torch.tensor(ids), decoder_input_ids=torch.tensor(dec),
                decoder_attention_mask=torch.tensor(dec_mask), labels=torch.tensor(labels))
    out = ours(ids, decoder_input_ids=dec, decoder_attention_mask=dec_mask, labels=labels)
    assert_close(out.logits, hf_out.logits.detach().numpy(), "model32")
    assert_close(out.loss, hf_out.loss.detach().numpy(), "model32")
    compare_gradients(ours, hf, out.loss, hf_out.loss)


def test_backbone_matches_transformers_t5model(checkpoints):
    hf, path = checkpoints("v1_1")  # its lm_head.weight is ignored by T5Model
    backbone = T5Model.from_pretrained(path)
    ids, mask, labels = make_batch()
    dec = shift_right(labels, 0, 0)
    hf_base = transformers.T5Model(hf.config).eval()
    hf_base.load_state_dict({k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"})
    with torch.no_grad():
        want = hf_base(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                       decoder_input_ids=torch.tensor(dec)).last_hidden_state.numpy()
    got = backbone(ids, attention_mask=mask, decoder_input_ids=dec).last_hidden_state
    assert_close(got, want, "model32")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_our_save_pretrained_loads_in_transformers(variant, checkpoints, tmp_path):
    hf, path = checkpoints(variant)
    ours = npplm.from_pretrained(path)
    ours.save_pretrained(tmp_path)
    back, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True)
    assert type(back) is type(hf)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert back.config.scale_decoder_outputs == hf.config.scale_decoder_outputs
    assert (back.lm_head.weight is back.shared.weight) == ours.config.tie_word_embeddings
    ids, mask, labels = make_batch()
    args = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                labels=torch.tensor(labels))
    with torch.no_grad():
        assert_close(back.eval()(**args).logits.numpy(), hf(**args).logits.numpy(), "exact64")
    again = npplm.from_pretrained(tmp_path)
    assert again.config == ours.config
    for name, value in again.state_dict().items():
        assert_close(value, ours.state_dict()[name], "exact64")


def test_untied_head_round_trips_through_our_own_loader(checkpoints, tmp_path):
    _, path = checkpoints("v1_1")
    ours = npplm.from_pretrained(path)
    assert ours.lm_head.weight is not ours.shared.weight
    ours.save_pretrained(tmp_path)
    assert "lm_head.weight" in read_weights(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is False
    again = npplm.from_pretrained(tmp_path)
    for name, value in again.state_dict().items():
        assert_close(value, ours.state_dict()[name], "exact64")


def test_tied_embeddings_and_shared_position_bias_are_one_tensor(checkpoints):
    _, path = checkpoints("v1_0")
    model = npplm.from_pretrained(path)
    for table in (model.encoder.embed_tokens.weight, model.decoder.embed_tokens.weight,
                  model.lm_head.weight):
        assert table is model.shared.weight
    names = [n for n, _ in model.named_parameters()]
    assert "shared.weight" in names and not any("embed_tokens" in n for n in names)
    assert sum("relative_attention_bias" in n for n in names) == 2  # block 0 of each stack


def test_dispatch_tables():
    assert ARCHITECTURES["T5ForConditionalGeneration"] is T5ForConditionalGeneration
    assert ARCHITECTURES["T5Model"] is T5Model
    assert BASE_MODELS["t5"] is T5Model


# --- pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_match_transformers(bidirectional):
    rel = np.arange(-300, 300)[None, :]
    bucket = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    for n, d in ((32, 128), (8, 12)):
        want = bucket(torch.tensor(rel), bidirectional=bidirectional, num_buckets=n,
                      max_distance=d).numpy()
        np.testing.assert_array_equal(relative_position_bucket(rel, bidirectional, n, d), want)


def test_shift_right():
    labels = np.array([[5, 6, -100, -100], [7, 8, 9, 1]])
    np.testing.assert_array_equal(shift_right(labels, 0, 0), [[0, 5, 6, 0], [0, 7, 8, 9]])


def test_one_sgd_step_lowers_the_loss():
    model = T5ForConditionalGeneration(T5Config.tiny(dropout_rate=0.0))
    ids, mask, labels = make_batch()
    losses = []
    for _ in range(2):
        model.zero_grad()
        loss = model(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        losses.append(float(loss.numpy()))
        for p in model.parameters():
            p.data -= 0.5 * p.grad
    assert model(ids, attention_mask=mask, labels=labels).loss.numpy() < losses[0]


# --- configuration and parameter counts ----------------------------------------------------

PRESETS = {"t5_small": 60_506_624, "t5_base": 222_903_552, "t5_large": 737_668_096,
           "t5_3b": 2_851_598_336, "t5_11b": 11_307_321_344}


def hf_count(config, cls="T5ForConditionalGeneration"):
    """transformers' count for the same config, on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = getattr(transformers, cls)(transformers.T5Config(**config.to_hf()))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", list(PRESETS))
def test_published_sizes_parameter_counts(preset):
    config = getattr(T5Config, preset)()
    assert num_parameters(config) == PRESETS[preset]
    assert hf_count(config) == PRESETS[preset]


def test_parameter_count_matches_allocated_models():
    for variant in VARIANTS:
        config = T5Config.tiny(**VARIANTS[variant])
        assert T5ForConditionalGeneration(config).num_parameters() == num_parameters(config)
        assert T5Model(config).num_parameters() == num_parameters(config, with_lm_head=False)
        assert hf_count(config, "T5Model") == num_parameters(config, with_lm_head=False)


def test_config_round_trips_and_reads_transformers_configs():
    for variant in VARIANTS:
        config = T5Config.tiny(**VARIANTS[variant])
        assert T5Config.from_hf(config.to_hf()) == config
    hf = transformers.T5Config(**T5Config.tiny().to_hf()).to_dict()
    assert T5Config.from_hf(hf) == T5Config.tiny()
    # A published v1.1 config.json: untied, so unscaled; decoder_start_token_id absent.
    v11 = T5Config.from_hf(dict(model_type="t5", feed_forward_proj="gated-gelu",
                                tie_word_embeddings=False, num_decoder_layers=None))
    assert not v11.tie_word_embeddings and not v11.scale_decoder_outputs
    assert v11.decoder_start_token_id == 0 and v11.num_decoder_layers == 6


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="decoder_start_token_id=64 is outside"):
        T5Config.tiny(decoder_start_token_id=64)
    with pytest.raises(ValueError, match="pad_token_id=-1 is outside"):
        T5Config.tiny(pad_token_id=-1)
    with pytest.raises(ValueError, match="feed_forward_proj='gated-silu'"):
        T5Config.tiny(feed_forward_proj="gated-silu")
    with pytest.raises(ValueError, match="d_kv=0"):
        T5Config.tiny(d_kv=0)
    with pytest.raises(ValueError, match="model_type 'bert' is not t5"):
        T5Config.from_hf(dict(model_type="bert"))


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_is_named():
    model = T5ForConditionalGeneration(T5Config.tiny()).eval()
    ids, mask, labels = make_batch()
    with pytest.raises(IndexError, match="input_ids: token id 64 is out of range"):
        model(np.full((1, 3), 64), labels=labels[:1])
    with pytest.raises(IndexError, match="decoder_input_ids: token id -5 is out of range"):
        model(ids, decoder_input_ids=np.full((B, 2), -5))
    with pytest.raises(ValueError, match=r"labels has shape \(3, 14\) but decoder_input_ids "
                                         r"has \(3, 15\)"):
        model(ids, decoder_input_ids=shift_right(labels, 0, 0), labels=labels[:, 1:])
    with pytest.raises(ValueError, match=r"labels must have shape \(B, T\), got \(15,\)"):
        model(ids, labels=labels[0])
    with pytest.raises(IndexError, match="labels: token id 70 is out of range"):
        model(ids, decoder_input_ids=np.ones((B, T), np.int64), labels=np.full((B, T), 70))
    with pytest.raises(IndexError, match="labels: token id -5 is out of range"):
        model(ids, labels=np.full((B, T), -5))  # -100 is the only negative label allowed
    with pytest.raises(TypeError, match="labels must hold integers"):
        model(ids, labels=labels.astype(np.float32))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 19\)"):
        model(ids, attention_mask=mask[:, 1:], labels=labels)
    with pytest.raises(ValueError, match="needs decoder_input_ids or labels"):
        model(ids)
    with pytest.raises(ValueError, match="batch 2 but input_ids has 3"):
        model(ids, labels=labels[:2])
