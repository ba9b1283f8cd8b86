"""BERT against Hugging Face transformers, on random-init tiny models (nothing downloaded).

Every head is built in transformers, given random weights (larger than the default 0.02
init, so that attention is sharp and LayerNorm gains and biases matter), saved with
`save_pretrained`, and loaded with `npplm.from_pretrained`, which exercises the loader too.
Then outputs, losses and the gradient of the loss with respect to every parameter must
agree, in float32 and tightly in float64. The other way round, our `save_pretrained` must
load in transformers' Auto classes. Then: 16-bit checkpoints, checkpoint errors, input
errors, configs and parameter counts, and a short fine-tuning run.
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
from npplm.models.bert import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    num_parameters,
)
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

# BertConfig.tiny(), spelled out for transformers (a test below checks they agree).
TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=32)
B, T, N = 3, 7, 3  # batch, sequence length, choices (multiple choice)
LENGTHS = np.array([7, 5, 2])  # the batch is padded: rows of 7, 5 and 2 real tokens


def make_batch(seed=0, shape=(B, T)):
    """ids with [PAD]=0 after each row's length, a padding mask, and random token types."""
    rng = np.random.default_rng(seed)
    lengths = np.resize(LENGTHS, shape[:-1])
    mask = (np.arange(shape[-1]) < lengths[..., None]).astype(np.int64)
    ids = np.where(mask, rng.integers(1, TINY["vocab_size"], shape), 0)
    types = np.where(mask, rng.integers(0, 2, shape), 0)
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types), rng


def labels_mlm(batch, rng):
    ids = batch["input_ids"]
    keep = (rng.random(ids.shape) < 0.5) & (batch["attention_mask"] == 1)
    return np.where(keep, rng.integers(0, TINY["vocab_size"], ids.shape), -100)


# Each case: (id, Hugging Face class, extra config, labels(batch, rng) -> kwargs).
CASES = [
    ("model", "BertModel", {}, lambda b, r: {}),
    ("pretraining", "BertForPreTraining", {},
     lambda b, r: dict(labels=labels_mlm(b, r), next_sentence_label=r.integers(0, 2, B))),
    ("masked_lm", "BertForMaskedLM", {}, lambda b, r: dict(labels=labels_mlm(b, r))),
    ("nsp", "BertForNextSentencePrediction", {},
     lambda b, r: dict(labels=r.integers(0, 2, B))),
    ("sequence", "BertForSequenceClassification", dict(num_labels=3),
     lambda b, r: dict(labels=r.integers(0, 3, B))),
    ("regression", "BertForSequenceClassification", dict(num_labels=1),
     lambda b, r: dict(labels=r.standard_normal(B).astype(np.float32))),
    ("multi_label", "BertForSequenceClassification", dict(num_labels=3),
     lambda b, r: dict(labels=r.integers(0, 2, (B, 3)).astype(np.float32))),
    ("token", "BertForTokenClassification", dict(num_labels=5),
     lambda b, r: dict(labels=np.where(b["attention_mask"] == 1,
                                       r.integers(0, 5, (B, T)), -100))),
    # One start position lies beyond the input: clamped to T and ignored, as in HF.
    ("qa", "BertForQuestionAnswering", {},
     lambda b, r: dict(start_positions=np.array([1, 3, 100]),
                       end_positions=np.array([4, 3, 1]))),
    ("multiple_choice", "BertForMultipleChoice", {},
     lambda b, r: dict(labels=r.integers(0, N, B))),
]
CASE_IDS = [c[0] for c in CASES]
AUTO = {"BertModel": "AutoModel", "BertForPreTraining": "AutoModelForPreTraining",
        "BertForMaskedLM": "AutoModelForMaskedLM",
        "BertForNextSentencePrediction": "AutoModelForNextSentencePrediction",
        "BertForSequenceClassification": "AutoModelForSequenceClassification",
        "BertForMultipleChoice": "AutoModelForMultipleChoice",
        "BertForTokenClassification": "AutoModelForTokenClassification",
        "BertForQuestionAnswering": "AutoModelForQuestionAnswering"}
HF_FIELD = {"prediction_logits": "logits"}  # BertForPreTraining's name for the MLM logits


def randomize(model, seed=0):
    """Random weights of scale 0.2 (LayerNorm gains 1 +- 0.1), in place, ties kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if name.endswith("LayerNorm.weight") else 0.2 * noise)
    return model


def hf_model(name, **extra):
    config = transformers.BertConfig(**TINY, **extra, attn_implementation="eager")
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
    """(inputs and labels as NumPy arrays) for a case: padded, with token types."""
    _, name, _, make_labels = CASES[CASE_IDS.index(case_id)]
    shape = (B, N, T) if name == "BertForMultipleChoice" else (B, T)
    batch, rng = make_batch(shape=shape)
    return {**batch, **make_labels(batch, rng)}


def to_torch(inputs, dtype=torch.float32):
    return {k: torch.tensor(v) if v.dtype.kind in "iu" else torch.tensor(v, dtype=dtype)
            for k, v in inputs.items()}


def synthetic_loss(out, like):
    """For BertModel (no labels): a fixed random projection of both outputs to a scalar."""
    rng = np.random.default_rng(1)
    r1 = rng.standard_normal(out.last_hidden_state.shape)
    r2 = rng.standard_normal(out.pooler_output.shape)
    if like == "torch":
        dtype = out.last_hidden_state.dtype
        return ((out.last_hidden_state * torch.tensor(r1, dtype=dtype)).sum()
                + (out.pooler_output * torch.tensor(r2, dtype=dtype)).sum())
    dtype = out.last_hidden_state.dtype
    return ((out.last_hidden_state * Tensor(r1.astype(dtype))).sum()
            + (out.pooler_output * Tensor(r2.astype(dtype))).sum())


def compare(ours, hf, inputs, out_kind, grad_kind, dtype=torch.float32):
    """Run both models on the same inputs; compare every output field and every gradient."""
    hf_out = hf(**to_torch(inputs, dtype))
    our_out = ours(**inputs)
    fields = {HF_FIELD.get(k, k): v for k, v in hf_out.items() if v is not None}
    ours_fields = {k: v for k, v in vars(our_out).items() if v is not None}
    assert sorted(fields) == sorted(ours_fields)
    for k, v in fields.items():
        assert_close(ours_fields[k], v.detach().numpy(), out_kind)

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
    for name, p in ours_params.items():
        assert_close(p.grad, hf_params[name].grad.numpy(), grad_kind, scale=scale)
    return our_out, hf_out


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
    # No attention_mask: attend everywhere; no token_type_ids: all sentence A.
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
    for case_id in ("masked_lm", "pretraining"):
        _, path = checkpoints(case_id)
        for model in (npplm.from_pretrained(path), type(npplm.from_pretrained(path))(
                BertConfig.tiny())):
            predictions = model.cls.predictions
            assert predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
            assert predictions.decoder.bias is predictions.bias
            names = [n for n, _ in model.named_parameters()]
            assert "cls.predictions.bias" in names
            assert not any(n.startswith("cls.predictions.decoder") for n in names)
    # Untied MLM decoders are refused (every published BERT ties them); backbones don't care.
    with pytest.raises(ValueError, match="tie_word_embeddings=False is not implemented"):
        BertForPreTraining(BertConfig.tiny(tie_word_embeddings=False))
    BertModel(BertConfig.tiny(tie_word_embeddings=False))


def test_pad_row_starts_at_zero_and_gets_no_lookup_gradient():
    model = BertModel(BertConfig.tiny())
    table = model.embeddings.word_embeddings.weight
    assert not table.data[0].any()
    batch, _ = make_batch()
    out = model(**batch)
    out.last_hidden_state.sum().backward()
    assert not table.grad[0].any()  # [PAD] = 0 appears in the batch but learns nothing
    assert table.grad[batch["input_ids"][0, 0]].any()


def test_backbone_loads_from_a_pretraining_checkpoint(checkpoints):
    # Fine-tuning starts this way: a new head, the pre-trained backbone's weights.
    hf, path = checkpoints("pretraining")
    batch, _ = make_batch()
    with torch.no_grad():
        want = hf.bert(**to_torch(batch))
    head = BertForSequenceClassification(BertConfig.tiny(num_labels=3)).eval()
    head.bert.load_weights(read_weights(path))
    assert_close(head.bert(**batch).pooler_output, want.pooler_output.numpy(), "model32")
    tagger = BertForTokenClassification(BertConfig.tiny()).eval()  # no pooler: it is ignored
    tagger.bert.load_weights(read_weights(path))
    assert_close(tagger.bert(**batch).last_hidden_state, want.last_hidden_state.numpy(),
                 "model32")


def test_pretraining_checkpoint_loads_as_masked_lm(checkpoints, tmp_path):
    # bert-base-uncased on the Hub says BertForMaskedLM but holds the pooler and NSP head.
    hf, path = checkpoints("pretraining")
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config,
                                                      "architectures": ["BertForMaskedLM"]}))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    model = npplm.from_pretrained(tmp_path)
    assert isinstance(model, BertForMaskedLM)
    batch, _ = make_batch()
    with torch.no_grad():
        want = hf(**to_torch(batch)).prediction_logits.numpy()
    assert_close(model(**batch).logits, want, "model32")


# --- 16-bit checkpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_checkpoints_load(dtype, checkpoints, tmp_path):
    hf, _ = checkpoints("masked_lm")
    half = copy.deepcopy(hf).to(getattr(torch, dtype))
    half.save_pretrained(tmp_path)
    ours = npplm.from_pretrained(tmp_path)
    assert all(p.dtype == np.float32 for p in ours.parameters())  # widened on load
    batch, _ = make_batch()
    logits = ours(**batch).logits
    # Exactly: against the float32 model holding the same rounded weights (widening a
    # 16-bit float to float32 is exact).
    with torch.no_grad():
        rounded = half.float()(**to_torch(batch)).logits.numpy()
        original = hf(**to_torch(batch)).logits.numpy()
    assert_close(logits, rounded, "model32")
    # Loosely: against the float32 model it was rounded from.
    assert_close(logits, original, "weights16")


# --- checkpoint errors -----------------------------------------------------------------------


@pytest.fixture
def classifier_dir(checkpoints, tmp_path):
    """A copy of the sequence classification checkpoint, to damage."""
    _, path = checkpoints("sequence")
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    return tmp_path


def rewrite(directory, change):
    from safetensors.numpy import load_file, save_file

    state = load_file(directory / "model.safetensors")
    change(state)
    save_file(state, directory / "model.safetensors")


def test_pickle_only_checkpoint_is_refused(checkpoints, tmp_path):
    hf, path = checkpoints("sequence")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin is a pickle.*Convert it to "
                                              "safetensors"):
        npplm.from_pretrained(tmp_path)


def test_missing_and_unexpected_keys_are_named(classifier_dir):
    rewrite(classifier_dir, lambda s: s.pop("bert.encoder.layer.1.output.dense.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \['bert\.encoder\.layer\.1\."
                                              r"output\.dense\.weight'\], unexpected keys \[\]"):
        npplm.from_pretrained(classifier_dir)
    rewrite(classifier_dir, lambda s: s.update({
        "bert.encoder.layer.1.output.dense.weight": np.zeros((32, 37), np.float32),
        "bert.encoder.layer.2.output.dense.weight": np.zeros((32, 37), np.float32)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['bert\.encoder\.layer\.2\."):
        npplm.from_pretrained(classifier_dir)


def test_wrong_shape_names_key_and_both_shapes(classifier_dir):
    rewrite(classifier_dir, lambda s: s.update({"classifier.weight": np.zeros((4, 32),
                                                                                np.float32)}))
    with pytest.raises(CheckpointError, match=r"'classifier\.weight' has shape \(4, 32\) in the "
                                              r"checkpoint but \(3, 32\) in the model"):
        npplm.from_pretrained(classifier_dir)


def test_truncated_checkpoint_is_named(classifier_dir):
    path = classifier_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated"):
        npplm.from_pretrained(classifier_dir)


def test_buffers_in_older_checkpoints_are_ignored(classifier_dir):
    rewrite(classifier_dir, lambda s: s.update({
        "bert.embeddings.position_ids": np.arange(32)[None],
        "bert.embeddings.token_type_ids": np.zeros((1, 32), np.int64)}))
    assert isinstance(npplm.from_pretrained(classifier_dir), BertForSequenceClassification)


# --- input errors ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    return BertModel(BertConfig.tiny()).eval()


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
    batch, _ = make_batch()
    batch["token_type_ids"][0, 1] = 2
    with pytest.raises(IndexError, match=r"token type id 2 is out of range for a table of 2 "
                                         r"rows \(valid: 0\.\.1\)"):
        tiny_model(**batch)
    with pytest.raises(ValueError, match=r"token_type_ids has shape \(3, 6\) but input_ids "
                                         r"has \(3, 7\)"):
        tiny_model(batch["input_ids"], token_type_ids=np.zeros((3, 6), np.int64))


def test_sequence_longer_than_max_position_embeddings(tiny_model):
    with pytest.raises(ValueError, match="input_ids has 33 positions but "
                                         "max_position_embeddings is 32"):
        tiny_model(np.ones((1, 33), np.int64))
    tiny_model(np.ones((1, 32), np.int64))  # the limit itself is fine


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
        BertForSequenceClassification(BertConfig.tiny(num_labels=3))(**batch,
                                                                      labels=np.array([0, 3, 1]))
    with pytest.raises(ValueError, match="both labels and next_sentence_label"):
        BertForPreTraining(BertConfig.tiny())(**batch, labels=np.zeros((B, T), np.int64))
    with pytest.raises(ValueError, match="needs num_labels=2.*got 3"):
        BertForQuestionAnswering(BertConfig.tiny(num_labels=3))


# --- configuration and parameter counts ----------------------------------------------------


def hf_count(config, add_pooling_layer=True):
    """transformers' count for the same config, on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = transformers.BertModel(transformers.BertConfig(**config.to_hf()),
                                       add_pooling_layer=add_pooling_layer)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset, with_pooler, expected", [
    ("base", True, 109_482_240), ("base", False, 108_891_648),
    ("large", True, 335_141_888), ("large", False, 334_092_288),
])
def test_published_sizes_parameter_counts(preset, with_pooler, expected):
    config = getattr(BertConfig, preset)()
    assert num_parameters(config, with_pooler=with_pooler) == expected
    assert hf_count(config, with_pooler) == expected


def test_parameter_count_matches_an_allocated_model():
    config = BertConfig.tiny()
    assert BertModel(config).num_parameters() == num_parameters(config)
    assert BertModel(config, add_pooling_layer=False).num_parameters() == num_parameters(
        config, with_pooler=False)


def test_tiny_preset_is_what_the_parity_tests_build():
    tiny = BertConfig.tiny()
    assert {k: getattr(tiny, k) for k in TINY} == TINY
    hf = transformers.BertConfig(**TINY)
    for f in dataclasses.fields(BertConfig):
        if f.name not in ("id2label",):
            assert getattr(tiny, f.name) == getattr(hf, f.name), f.name


def test_config_round_trips_through_transformers(tmp_path):
    config = BertConfig.tiny(num_labels=3, id2label=("NEG", "NEU", "POS"),
                             problem_type="single_label_classification", classifier_dropout=0.2)
    hf = transformers.BertConfig(**config.to_hf())
    assert hf.num_labels == 3 and hf.id2label == {0: "NEG", 1: "NEU", 2: "POS"}
    hf.save_pretrained(tmp_path)
    back = BertConfig.from_hf(json.loads((tmp_path / "config.json").read_text()))
    assert back == config
    assert BertConfig.from_hf(config.to_hf()) == config
    # transformers' own defaults (id2label LABEL_0, LABEL_1) come back as ours.
    assert BertConfig.from_hf(transformers.BertConfig().to_dict()) == BertConfig.base()


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by "
                                         "num_attention_heads=4"):
        BertConfig.tiny(hidden_size=30)
    with pytest.raises(ValueError, match="unknown activation 'gelu_fast'"):
        BertConfig.tiny(hidden_act="gelu_fast")
    with pytest.raises(ValueError, match=r"hidden_dropout_prob=1.0 must be in \[0, 1\)"):
        BertConfig.tiny(hidden_dropout_prob=1.0)
    with pytest.raises(ValueError, match="pad_token_id=64 is outside the vocabulary"):
        BertConfig.tiny(pad_token_id=64)
    with pytest.raises(ValueError, match="num_labels=0 must be a positive integer"):
        BertConfig.tiny(num_labels=0)
    with pytest.raises(ValueError, match="id2label names 2 classes but num_labels=3"):
        BertConfig.tiny(num_labels=3, id2label=("a", "b"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        BertConfig.tiny().hidden_size = 64


def test_from_hf_ignores_unknown_keys_and_refuses_what_it_cannot_compute():
    hf = {**BertConfig.tiny().to_hf(), "gradient_checkpointing": False, "use_cache": True,
          "transformers_version": "4.8.2", "position_embedding_type": "absolute"}
    assert BertConfig.from_hf(hf) == BertConfig.tiny()
    with pytest.raises(ValueError, match="'relative_key' is not implemented"):
        BertConfig.from_hf({**hf, "position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="model_type 'roberta' is not bert"):
        BertConfig.from_hf({**hf, "model_type": "roberta"})
    with pytest.raises(ValueError, match="decoder variant"):
        BertConfig.from_hf({**hf, "is_decoder": True})


def test_dispatch_tables_name_every_bert_class():
    assert BASE_MODELS["bert"] is BertModel
    for name in AUTO:
        assert ARCHITECTURES[name].__name__ == name


# --- fine-tuning -------------------------------------------------------------------------------


def contains_seven(n, rng, length=8):
    """[CLS]=1 then tokens from 3..19; half the sequences hold token 7 somewhere: label 1."""
    ids = rng.choice([t for t in range(3, 20) if t != 7], size=(n, length))
    labels = rng.integers(0, 2, n)
    where = rng.integers(1, length, n)
    ids[labels == 1, where[labels == 1]] = 7
    ids[:, 0] = 1
    return ids, labels


def test_fine_tuning_learns_a_synthetic_task():
    rng = np.random.default_rng(0)
    model = BertForSequenceClassification(BertConfig.tiny(num_labels=2), seed=0)
    held_out, answers = contains_seven(400, np.random.default_rng(1))

    def accuracy():
        model.eval()
        return (model(held_out).logits.numpy().argmax(-1) == answers).mean()

    before = accuracy()
    model.train()  # dropout on while training
    params = model.parameters()
    m = [np.zeros_like(p.data) for p in params]
    v = [np.zeros_like(p.data) for p in params]
    lr, b1, b2, eps = 3e-3, 0.9, 0.999, 1e-8
    for step in range(1, 61):  # Adam, written out
        ids, labels = contains_seven(32, rng)
        model.zero_grad()
        model(ids, labels=labels).loss.backward()
        for p, mi, vi in zip(params, m, v):
            mi[:] = b1 * mi + (1 - b1) * p.grad
            vi[:] = b2 * vi + (1 - b2) * p.grad**2
            p.data -= lr * (mi / (1 - b1**step)) / (np.sqrt(vi / (1 - b2**step)) + eps)
    after = accuracy()
    assert before < 0.65 and after > 0.9, f"held-out accuracy {before:.2f} -> {after:.2f}"
