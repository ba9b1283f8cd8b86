"""RoBERTa against Hugging Face transformers, on random-init tiny models (nothing downloaded).

As for BERT (tests/models/test_bert.py): every head is built in transformers, given random
weights of scale 0.2, saved with `save_pretrained` and loaded with `npplm.from_pretrained`;
outputs, losses and the gradient of the loss with respect to every parameter must agree, in
float32 and tightly in float64, and our `save_pretrained` must load in transformers' Auto
classes. The batch is padded with <pad> = 1 on the right in one row and on the left in
another, so that RoBERTa's position ids (counted after the padding index, skipping pads)
differ from BERT's 0..T-1 for real tokens too. Then: position ids against the reference's
own function, checkpoint layouts, input errors, configs and parameter counts, fine-tuning.
"""

import copy
import dataclasses
import json

import numpy as np
import pytest

import npplm
from autograd import Tensor
from npplm.io import CheckpointError, read_weights
from npplm.models import ARCHITECTURES, BASE_MODELS
from npplm.models.roberta import (
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    num_parameters,
    position_ids_from_input_ids,
)
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

# RobertaConfig.tiny(), spelled out for transformers (a test below checks they agree): the
# published settings (one token type, eps 1e-5, <pad> = 1) at a tiny size. 34 position
# rows fit 32 tokens: rows 0 and 1 hold no real token.
TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=34, type_vocab_size=1,
            layer_norm_eps=1e-5)
PAD = 1  # <pad>, transformers' RobertaConfig default and the published checkpoints' id
B, T, N = 3, 7, 3  # batch, sequence length, choices (multiple choice)
# The batch is padded: rows of 7, 5 and 2 real tokens; the third row is padded on the left.
STARTS, LENGTHS = np.array([0, 0, 5]), np.array([7, 5, 2])


def make_batch(seed=0, shape=(B, T)):
    """ids with <pad> = 1 around each row's tokens, a padding mask, token types all 0."""
    rng = np.random.default_rng(seed)
    starts, lengths = np.resize(STARTS, shape[:-1]), np.resize(LENGTHS, shape[:-1])
    t = np.arange(shape[-1])
    mask = ((t >= starts[..., None]) & (t < (starts + lengths)[..., None])).astype(np.int64)
    ids = np.where(mask, rng.integers(2, TINY["vocab_size"], shape), PAD)  # no pad inside
    types = np.zeros(shape, np.int64)  # type_vocab_size = 1: sentence A only
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types), rng


def labels_mlm(batch, rng):
    ids = batch["input_ids"]
    keep = (rng.random(ids.shape) < 0.5) & (batch["attention_mask"] == 1)
    return np.where(keep, rng.integers(0, TINY["vocab_size"], ids.shape), -100)


# Each case: (id, Hugging Face class, extra config, labels(batch, rng) -> kwargs).
CASES = [
    ("model", "RobertaModel", {}, lambda b, r: {}),
    ("masked_lm", "RobertaForMaskedLM", {}, lambda b, r: dict(labels=labels_mlm(b, r))),
    ("sequence", "RobertaForSequenceClassification", dict(num_labels=3),
     lambda b, r: dict(labels=r.integers(0, 3, B))),
    ("regression", "RobertaForSequenceClassification", dict(num_labels=1),
     lambda b, r: dict(labels=r.standard_normal(B).astype(np.float32))),
    ("multi_label", "RobertaForSequenceClassification", dict(num_labels=3),
     lambda b, r: dict(labels=r.integers(0, 2, (B, 3)).astype(np.float32))),
    ("token", "RobertaForTokenClassification", dict(num_labels=5),
     lambda b, r: dict(labels=np.where(b["attention_mask"] == 1,
                                       r.integers(0, 5, (B, T)), -100))),
    # One start position lies beyond the input: clamped to T and ignored, as in HF.
    ("qa", "RobertaForQuestionAnswering", {},
     lambda b, r: dict(start_positions=np.array([1, 3, 100]),
                       end_positions=np.array([4, 3, 6]))),
    ("multiple_choice", "RobertaForMultipleChoice", {},
     lambda b, r: dict(labels=r.integers(0, N, B))),
]
CASE_IDS = [c[0] for c in CASES]
AUTO = {"RobertaModel": "AutoModel", "RobertaForMaskedLM": "AutoModelForMaskedLM",
        "RobertaForSequenceClassification": "AutoModelForSequenceClassification",
        "RobertaForMultipleChoice": "AutoModelForMultipleChoice",
        "RobertaForTokenClassification": "AutoModelForTokenClassification",
        "RobertaForQuestionAnswering": "AutoModelForQuestionAnswering"}


def randomize(model, seed=0):
    """Random weights of scale 0.2 (LayerNorm gains 1 +- 0.1), in place, ties kept. The
    padding rows of the word and position tables become nonzero too: they must still get
    no gradient, in both implementations."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            gain = name.endswith(("LayerNorm.weight", "layer_norm.weight"))
            p.copy_(1 + 0.1 * noise if gain else 0.2 * noise)
    return model


def hf_model(name, **extra):
    config = transformers.RobertaConfig(**TINY, **extra, attn_implementation="eager")
    torch.manual_seed(0)
    return randomize(getattr(transformers, name)(config)).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """case id -> (transformers model, its save_pretrained directory), built once."""
    built = {}

    def get(case_id):
        if case_id not in built:
            _, name, extra, _ = CASES[CASE_IDS.index(case_id)]
            model = hf_model(name, **extra)
            path = tmp_path_factory.mktemp(case_id)
            model.save_pretrained(path)
            built[case_id] = model, path
        return built[case_id]

    return get


def case_inputs(case_id):
    """Inputs and labels of a case as NumPy arrays: the padded batch."""
    _, name, _, make_labels = CASES[CASE_IDS.index(case_id)]
    shape = (B, N, T) if name == "RobertaForMultipleChoice" else (B, T)
    batch, rng = make_batch(shape=shape)
    return {**batch, **make_labels(batch, rng)}


def to_torch(inputs, dtype=torch.float32):
    return {k: torch.tensor(v) if v.dtype.kind in "iu" else torch.tensor(v, dtype=dtype)
            for k, v in inputs.items()}


def synthetic_loss(out, like):
    """For RobertaModel (no labels): a fixed random projection of both outputs to a scalar.
    It weighs the outputs at pad positions too, so their positions (row PAD) matter."""
    rng = np.random.default_rng(1)
    r1 = rng.standard_normal(out.last_hidden_state.shape)
    r2 = rng.standard_normal(out.pooler_output.shape)
    dtype = out.last_hidden_state.dtype
    if like == "torch":
        return ((out.last_hidden_state * torch.tensor(r1, dtype=dtype)).sum()
                + (out.pooler_output * torch.tensor(r2, dtype=dtype)).sum())
    return ((out.last_hidden_state * Tensor(r1.astype(dtype))).sum()
            + (out.pooler_output * Tensor(r2.astype(dtype))).sum())


def compare(ours, hf, inputs, out_kind, grad_kind, dtype=torch.float32):
    """Run both models on the same inputs; compare every output field and every gradient.
    Returns the largest output and (relative) gradient differences, for the record."""
    hf_out = hf(**to_torch(inputs, dtype))
    our_out = ours(**inputs)
    fields = {k: v for k, v in hf_out.items() if v is not None}
    ours_fields = {k: v for k, v in vars(our_out).items() if v is not None}
    assert sorted(fields) == sorted(ours_fields)
    out_err = 0.0
    for k, v in fields.items():
        assert_close(ours_fields[k], v.detach().numpy(), out_kind)
        out_err = max(out_err, float(np.abs(ours_fields[k].numpy() - v.detach().numpy()).max()))

    hf_loss = hf_out.loss if hf_out.get("loss") is not None else synthetic_loss(hf_out, "torch")
    our_loss = our_out.loss if our_out.loss is not None else synthetic_loss(our_out, "ours")
    hf.zero_grad()
    hf_loss.backward()
    our_loss.backward()
    hf_params = dict(hf.named_parameters(remove_duplicate=False))  # tied ones under every name
    assert set(ours.state_dict()) == set(hf_params)  # the same names, tied or not
    ours_params = dict(ours.named_parameters())
    assert all(p.grad is not None for p in ours_params.values()), "a parameter got no gradient"
    scale = max(float(abs(hf_params[name].grad).max()) for name in ours_params)
    grad_err = 0.0
    for name, p in ours_params.items():
        want = hf_params[name].grad.numpy()
        assert_close(p.grad, want, grad_kind, scale=scale)
        grad_err = max(grad_err, float(np.abs(p.grad - want).max()) / scale)
    return out_err, grad_err


# --- position ids --------------------------------------------------------------------------


def test_position_ids_count_tokens_after_the_padding_index():
    ids = np.array([[0, 9, 7, 2, 1, 1],    # right-padded: 2, 3, 4, 5, then pads at 1
                    [1, 1, 0, 9, 7, 2],    # left-padded: tokens still start at 2
                    [0, 9, 1, 7, 2, 1],    # a pad inside: skipped, the count goes on
                    [1, 1, 1, 1, 1, 1]])   # nothing but padding
    want = np.array([[2, 3, 4, 5, 1, 1],
                     [1, 1, 2, 3, 4, 5],
                     [2, 3, 1, 4, 5, 1],
                     [1, 1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(position_ids_from_input_ids(ids, PAD), want)


@pytest.mark.parametrize("padding_idx", [0, 1, 5])
def test_position_ids_match_transformers(padding_idx):
    # Against the reference's own function, on random padded batches with pads anywhere.
    rng = np.random.default_rng(padding_idx)
    for shape in [(1, 1), (3, 7), (5, 40)]:
        ids = rng.integers(0, 8, shape)
        ids[rng.random(shape) < 0.3] = padding_idx
        reference = transformers.models.roberta.modeling_roberta.RobertaEmbeddings
        want = reference.create_position_ids_from_input_ids(torch.tensor(ids),
                                                            padding_idx).numpy()
        got = position_ids_from_input_ids(ids, padding_idx)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int64


# --- parity with transformers ------------------------------------------------------------


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_outputs_and_gradients_match_transformers(case_id, checkpoints):
    hf, path = checkpoints(case_id)
    ours = npplm.from_pretrained(path)
    assert type(ours).__name__ == type(hf).__name__
    assert not ours.training  # from_pretrained returns a model in eval mode, as HF does
    compare(ours, hf, case_inputs(case_id), "model32", "model_grad32")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_float64_matches_transformers_to_rounding(case_id, checkpoints):
    # In float64 the two must agree to ~1e-10: a formula that differs slightly (an eps in
    # the wrong place, a slightly different GELU) would hide inside float32's 1e-5 above.
    hf, path = checkpoints(case_id)
    hf = copy.deepcopy(hf).double()
    ours = npplm.from_pretrained(path).astype(np.float64)
    inputs = {k: v.astype(np.float64) if v.dtype.kind == "f" else v
              for k, v in case_inputs(case_id).items()}
    compare(ours, hf, inputs, "float64", "float64", dtype=torch.float64)


def test_defaults_without_mask_and_token_types(checkpoints):
    # No attention_mask: every position attends to the pads too, but positions still follow
    # the pad *ids*. No token_type_ids: all 0.
    hf, path = checkpoints("model")
    ours = npplm.from_pretrained(path)
    ids = make_batch()[0]["input_ids"]
    hf_out = hf(input_ids=torch.tensor(ids))
    out = ours(ids)
    assert_close(out.last_hidden_state, hf_out.last_hidden_state.detach().numpy(), "model32")
    assert_close(out.pooler_output, hf_out.pooler_output.detach().numpy(), "model32")
    # Inputs may also be Tensors or lists.
    assert_close(ours(Tensor(ids)).last_hidden_state, out.last_hidden_state, "exact64")
    assert_close(ours(ids.tolist()).last_hidden_state, out.last_hidden_state, "exact64")


def test_a_batch_padded_past_the_position_table_matches_transformers(checkpoints):
    # 40 columns, more than the 34 position rows, but no row holds more than 32 tokens: the
    # positions fit, so the reference runs, and so must we.
    hf, path = checkpoints("model")
    ours = npplm.from_pretrained(path)
    rng = np.random.default_rng(3)
    ids = np.full((2, 40), PAD)
    ids[0, :32] = rng.integers(2, 64, 32)  # the longest row the table allows
    ids[1, 30:] = rng.integers(2, 64, 10)  # left-padded
    mask = (ids != PAD).astype(np.int64)
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    got = ours(ids, attention_mask=mask)
    assert_close(got.last_hidden_state, want.last_hidden_state.numpy(), "model32")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_our_save_pretrained_loads_in_transformers(case_id, checkpoints, tmp_path):
    hf, path = checkpoints(case_id)
    ours = npplm.from_pretrained(path)
    ours.save_pretrained(tmp_path)
    auto = getattr(transformers, AUTO[type(hf).__name__])
    back, info = auto.from_pretrained(tmp_path, attn_implementation="eager",
                                      output_loading_info=True)
    assert type(back) is type(hf)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    inputs = to_torch({k: v for k, v in case_inputs(case_id).items()
                       if k in ("input_ids", "attention_mask", "token_type_ids")})
    with torch.no_grad():
        want, got = hf.eval()(**inputs), back.eval()(**inputs)
    for k, v in want.items():
        assert_close(got[k].numpy(), v.numpy(), "model32")
    # And our own loader reads it back to the same parameters.
    again = npplm.from_pretrained(tmp_path)
    expected = ours.state_dict()
    assert sorted(again.state_dict()) == sorted(expected)
    for name, value in again.state_dict().items():
        assert_close(value, expected[name], "exact64")


def test_tied_weights_are_one_tensor(checkpoints):
    _, path = checkpoints("masked_lm")
    for model in (npplm.from_pretrained(path), RobertaForMaskedLM(RobertaConfig.tiny())):
        lm_head = model.lm_head
        assert lm_head.decoder.weight is model.roberta.embeddings.word_embeddings.weight
        assert lm_head.decoder.bias is lm_head.bias
        names = [n for n, _ in model.named_parameters()]
        assert "lm_head.bias" in names
        assert not any(n.startswith("lm_head.decoder") for n in names)
    # Untied MLM decoders are refused (every published RoBERTa ties them).
    with pytest.raises(ValueError, match="tie_word_embeddings=False is not implemented"):
        RobertaForMaskedLM(RobertaConfig.tiny(tie_word_embeddings=False))
    RobertaModel(RobertaConfig.tiny(tie_word_embeddings=False))


def test_pad_rows_start_at_zero_and_get_no_lookup_gradient():
    model = RobertaModel(RobertaConfig.tiny())
    words = model.embeddings.word_embeddings.weight
    positions = model.embeddings.position_embeddings.weight
    assert not words.data[PAD].any() and not positions.data[PAD].any()
    batch, _ = make_batch()
    out = model(**batch)
    out.last_hidden_state.sum().backward()
    # <pad> = 1 appears in the batch, at position 1, but neither row learns anything.
    assert not words.grad[PAD].any() and not positions.grad[PAD].any()
    assert not positions.grad[0].any()  # row 0: no token ever sits there
    assert words.grad[batch["input_ids"][0, 0]].any() and positions.grad[PAD + 1].any()


# --- checkpoint layouts and errors ---------------------------------------------------------


def rewrite(directory, change):
    from safetensors.numpy import load_file, save_file

    state = load_file(directory / "model.safetensors")
    change(state)
    save_file(state, directory / "model.safetensors")


def copy_checkpoint(checkpoints, case_id, tmp_path):
    _, path = checkpoints(case_id)
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    return tmp_path


def test_published_layout_loads_as_masked_lm(checkpoints, tmp_path):
    # roberta-base on the Hub: RobertaForMaskedLM with a pooler, and older files store the
    # position_ids buffer. Both are ignored, and the outputs are unchanged.
    hf, _ = checkpoints("masked_lm")
    directory = copy_checkpoint(checkpoints, "masked_lm", tmp_path)
    rewrite(directory, lambda s: s.update({
        "roberta.pooler.dense.weight": np.zeros((32, 32), np.float32),
        "roberta.pooler.dense.bias": np.zeros(32, np.float32),
        "roberta.embeddings.position_ids": np.arange(34)[None],
        "roberta.embeddings.token_type_ids": np.zeros((1, 34), np.int64)}))
    model = npplm.from_pretrained(directory)
    assert isinstance(model, RobertaForMaskedLM)
    batch, _ = make_batch()
    with torch.no_grad():
        want = hf(**to_torch(batch)).logits.numpy()
    assert_close(model(**batch).logits, want, "model32")


def test_backbone_loads_from_pre_trained_checkpoints(checkpoints):
    # Fine-tuning starts this way: a new head, the pre-trained backbone's weights.
    hf, path = checkpoints("masked_lm")
    batch, _ = make_batch()
    with torch.no_grad():
        want = hf.roberta(**to_torch(batch)).last_hidden_state.numpy()
    head = RobertaForSequenceClassification(RobertaConfig.tiny(num_labels=3)).eval()
    head.roberta.load_weights(read_weights(path))
    assert_close(head.roberta(**batch).last_hidden_state, want, "model32")
    # A bare RobertaModel checkpoint (keys without `roberta.`, a pooler) fits a tagger's
    # backbone too: the pooler is ignored.
    hf, path = checkpoints("model")
    with torch.no_grad():
        want = hf(**to_torch(batch)).last_hidden_state.numpy()
    tagger = RobertaForTokenClassification(RobertaConfig.tiny()).eval()
    tagger.roberta.load_weights(read_weights(path))
    assert_close(tagger.roberta(**batch).last_hidden_state, want, "model32")


def test_bfloat16_checkpoint_loads(checkpoints, tmp_path):
    hf, _ = checkpoints("masked_lm")
    half = copy.deepcopy(hf).to(torch.bfloat16)
    half.save_pretrained(tmp_path)
    ours = npplm.from_pretrained(tmp_path)
    assert all(p.dtype == np.float32 for p in ours.parameters())  # widened on load
    batch, _ = make_batch()
    with torch.no_grad():
        rounded = half.float()(**to_torch(batch)).logits.numpy()
    assert_close(ours(**batch).logits, rounded, "model32")


def test_missing_keys_are_named(checkpoints, tmp_path):
    directory = copy_checkpoint(checkpoints, "sequence", tmp_path)
    rewrite(directory, lambda s: s.pop("classifier.out_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \['classifier\.out_proj\.weight'\]"
                                              r", unexpected keys \[\]"):
        npplm.from_pretrained(directory)


# --- input errors ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    return RobertaModel(RobertaConfig.tiny()).eval()


def test_token_id_outside_the_vocabulary(tiny_model):
    batch, _ = make_batch()
    batch["input_ids"][1, 2] = 64
    with pytest.raises(IndexError, match=r"token id 64 is out of range for a table of 64 rows"):
        tiny_model(**batch)
    batch["input_ids"][1, 2] = -3
    with pytest.raises(IndexError, match="token id -3 is out of range"):
        tiny_model(**batch)
    with pytest.raises(TypeError, match="input_ids must hold integers, got dtype float64"):
        tiny_model(np.ones((1, 3)))


def test_token_type_outside_type_vocab_size(tiny_model):
    # The published models have one token type: a sentence B id is an error, not a guess.
    batch, _ = make_batch()
    batch["token_type_ids"][0, 1] = 1
    with pytest.raises(IndexError, match=r"token type id 1 is out of range for a table of 1 "
                                         r"rows \(valid: 0\.\.0\)"):
        tiny_model(**batch)
    with pytest.raises(ValueError, match=r"token_type_ids has shape \(3, 6\) but input_ids "
                                         r"has \(3, 7\)"):
        tiny_model(batch["input_ids"], token_type_ids=np.zeros((3, 6), np.int64))


def test_sequence_longer_than_the_position_table(tiny_model):
    # 34 rows, positions from pad + 1 = 2: at most 32 tokens, not 34.
    with pytest.raises(ValueError, match=r"input_ids has a row of 33 tokens \(padding not "
                                         r"counted\) but RoBERTa fits at most 32: positions "
                                         r"start at pad_token_id \+ 1 = 2 and "
                                         r"max_position_embeddings is 34"):
        tiny_model(np.full((1, 33), 5))
    tiny_model(np.full((1, 32), 5))  # the limit itself is fine
    tiny_model(np.concatenate([np.full((1, 32), 5), np.full((1, 8), PAD)], axis=1))  # + pads
    assert RobertaConfig.base().max_length == 512


def test_attention_mask_of_the_wrong_shape(tiny_model):
    batch, _ = make_batch()
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 6\) but the input "
                                         r"ids have \(3, 7\)"):
        tiny_model(batch["input_ids"], attention_mask=np.ones((3, 6)))
    with pytest.raises(ValueError, match=r"input_ids must have shape \(B, T\)"):
        tiny_model(np.ones(5, np.int64))


def test_label_errors():
    batch, _ = make_batch()
    with pytest.raises(IndexError, match="target 3 is out of range for 3 classes"):
        RobertaForSequenceClassification(RobertaConfig.tiny(num_labels=3))(
            **batch, labels=np.array([0, 3, 1]))
    with pytest.raises(ValueError, match="needs num_labels=2.*got 3"):
        RobertaForQuestionAnswering(RobertaConfig.tiny(num_labels=3))


# --- configuration and parameter counts ----------------------------------------------------


def hf_count(config, architecture):
    """transformers' count for the same config, on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = getattr(transformers, architecture)(transformers.RobertaConfig(**config.to_hf()))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset, architecture, expected", [
    ("base", "RobertaModel", 124_645_632), ("base", "RobertaForMaskedLM", 124_697_433),
    ("base", "RobertaForSequenceClassification", 124_647_170),
    ("large", "RobertaModel", 355_359_744), ("large", "RobertaForMaskedLM", 355_412_057),
])
def test_published_sizes_parameter_counts(preset, architecture, expected):
    config = getattr(RobertaConfig, preset)()
    assert num_parameters(config, architecture) == expected
    assert hf_count(config, architecture) == expected


@pytest.mark.parametrize("architecture", list(AUTO))
def test_parameter_count_matches_allocated_models(architecture):
    config = RobertaConfig.tiny()
    ours = ARCHITECTURES[architecture](config)
    assert ours.num_parameters() == num_parameters(config, architecture)
    assert hf_count(config, architecture) == num_parameters(config, architecture)
    with pytest.raises(ValueError, match="unknown architecture 'RobertaForCausalLM'"):
        num_parameters(config, "RobertaForCausalLM")


def test_tiny_preset_is_what_the_parity_tests_build():
    tiny = RobertaConfig.tiny()
    assert {k: getattr(tiny, k) for k in TINY} == TINY
    hf = transformers.RobertaConfig(**TINY)
    for f in dataclasses.fields(RobertaConfig):
        if f.name not in ("id2label",):
            assert getattr(tiny, f.name) == getattr(hf, f.name), f.name


def test_config_round_trips_through_transformers(tmp_path):
    config = RobertaConfig.tiny(num_labels=3, id2label=("NEG", "NEU", "POS"),
                                problem_type="single_label_classification",
                                classifier_dropout=0.2)
    hf = transformers.RobertaConfig(**config.to_hf())
    assert hf.num_labels == 3 and hf.id2label == {0: "NEG", 1: "NEU", 2: "POS"}
    hf.save_pretrained(tmp_path)
    back = RobertaConfig.from_hf(json.loads((tmp_path / "config.json").read_text()))
    assert back == config
    assert RobertaConfig.from_hf(config.to_hf()) == config
    # A config.json that leaves keys out means what it means to transformers: its defaults
    # are ours. They are not roberta-base, whose config.json sets three of them.
    assert RobertaConfig.from_hf(transformers.RobertaConfig().to_dict()) == RobertaConfig()
    base = RobertaConfig.base()
    assert (base.max_position_embeddings, base.type_vocab_size, base.layer_norm_eps) == (
        514, 1, 1e-5)
    assert RobertaConfig.from_hf({**base.to_hf(), "eos_token_id": [2]}).eos_token_id == (2,)


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by "
                                         "num_attention_heads=4"):
        RobertaConfig.tiny(hidden_size=30)
    with pytest.raises(ValueError, match="unknown activation 'gelu_fast'"):
        RobertaConfig.tiny(hidden_act="gelu_fast")
    with pytest.raises(ValueError, match=r"hidden_dropout_prob=1.0 must be in \[0, 1\)"):
        RobertaConfig.tiny(hidden_dropout_prob=1.0)
    with pytest.raises(ValueError, match="pad_token_id=64 must be a token of the vocabulary"):
        RobertaConfig.tiny(pad_token_id=64)
    with pytest.raises(ValueError, match="pad_token_id=None must be a token"):
        RobertaConfig.tiny(pad_token_id=None)
    with pytest.raises(ValueError, match="max_position_embeddings=2 leaves no position for a "
                                         "token: positions start at pad_token_id"):
        RobertaConfig.tiny(max_position_embeddings=2)
    with pytest.raises(ValueError, match="num_labels=0 must be a positive integer"):
        RobertaConfig.tiny(num_labels=0)
    with pytest.raises(ValueError, match="id2label names 2 classes but num_labels=3"):
        RobertaConfig.tiny(num_labels=3, id2label=("a", "b"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        RobertaConfig.tiny().hidden_size = 64


def test_from_hf_ignores_unknown_keys_and_refuses_what_it_cannot_compute():
    hf = {**RobertaConfig.tiny().to_hf(), "gradient_checkpointing": False, "use_cache": True,
          "transformers_version": "4.8.2", "position_embedding_type": "absolute"}
    assert RobertaConfig.from_hf(hf) == RobertaConfig.tiny()
    with pytest.raises(ValueError, match="'relative_key' is not implemented"):
        RobertaConfig.from_hf({**hf, "position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="model_type 'bert' is not roberta"):
        RobertaConfig.from_hf({**hf, "model_type": "bert"})
    with pytest.raises(ValueError, match="decoder variant"):
        RobertaConfig.from_hf({**hf, "is_decoder": True})


def test_dispatch_tables_name_every_roberta_class():
    assert BASE_MODELS["roberta"] is RobertaModel
    for name in AUTO:
        assert ARCHITECTURES[name].__name__ == name


# --- fine-tuning -------------------------------------------------------------------------------


def contains_seven(n, rng, length=8):
    """<s>=0, tokens from 3..19, </s>=2, right-padded with <pad>=1 to a random length; half
    the sequences hold token 7 somewhere: label 1."""
    ids = rng.choice([t for t in range(3, 20) if t != 7], size=(n, length))
    labels = rng.integers(0, 2, n)
    lengths = rng.integers(4, length + 1, n)  # <s>, at least two tokens, </s>
    where = rng.integers(1, lengths - 1)
    ids[labels == 1, where[labels == 1]] = 7
    ids[:, 0] = 0
    ids[np.arange(n), lengths - 1] = 2
    ids[np.arange(length) >= lengths[:, None]] = PAD
    return ids, (ids != PAD).astype(np.int64), labels


def test_fine_tuning_learns_a_synthetic_task():
    rng = np.random.default_rng(0)
    model = RobertaForSequenceClassification(RobertaConfig.tiny(num_labels=2), seed=0)
    held_out, held_out_mask, answers = contains_seven(400, np.random.default_rng(1))

    def accuracy():
        model.eval()
        logits = model(held_out, attention_mask=held_out_mask).logits.numpy()
        return (logits.argmax(-1) == answers).mean()

    before = accuracy()
    model.train()  # dropout on while training
    params = model.parameters()
    m = [np.zeros_like(p.data) for p in params]
    v = [np.zeros_like(p.data) for p in params]
    lr, b1, b2, eps = 3e-3, 0.9, 0.999, 1e-8
    for step in range(1, 61):  # Adam, written out
        ids, mask, labels = contains_seven(32, rng)
        model.zero_grad()
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        for p, mi, vi in zip(params, m, v):
            mi[:] = b1 * mi + (1 - b1) * p.grad
            vi[:] = b2 * vi + (1 - b2) * p.grad**2
            p.data -= lr * (mi / (1 - b1**step)) / (np.sqrt(vi / (1 - b2**step)) + eps)
    after = accuracy()
    assert before < 0.65 and after > 0.9, f"held-out accuracy {before:.2f} -> {after:.2f}"
