"""ALBERT against transformers' implementation: random-init tiny models, nothing downloaded.

Every head is built in transformers (eager attention, eval mode), its weights randomised,
saved with save_pretrained and loaded with npplm.from_pretrained; outputs and the gradient
of the loss with respect to every parameter must match. Two shapes: four layers sharing one
group (the published layout), and three layers over two groups of two inner layers, which
exercises the reference's int(i / (L / groups)) split.
"""

import dataclasses
import json

import numpy as np
import pytest

import npplm
from autograd import Tensor
from npplm.io import CheckpointError, read_weights, write_safetensors
from npplm.models import ARCHITECTURES, BASE_MODELS
from npplm.models import albert as A
from npplm.models.albert import AlbertConfig, group_of_layer, num_parameters
from tests.tolerances import assert_close

SHARED = AlbertConfig.tiny()  # E=16 < C=32, 4 layers, 1 group
GROUPED = AlbertConfig.tiny(num_hidden_layers=3, num_hidden_groups=2, inner_group_num=2,
                            hidden_act="gelu", type_vocab_size=3)
UNTIED = AlbertConfig.tiny(tie_word_embeddings=False)
CONFIGS = {"shared": SHARED, "grouped": GROUPED, "untied": UNTIED}
# Every model class of the family file (the backbone and its heads), found, not listed.
HEADS = [name for name, cls in vars(A).items() if isinstance(cls, type)
         and issubclass(cls, A.AlbertPreTrainedModel) and cls is not A.AlbertPreTrainedModel]

B, T, N = 2, 7, 3  # batch, length, choices (multiple choice)

# (architecture, config, overrides, labels): every head on both shapes, plus the three
# sequence-classification losses and the untied MLM decoder.
CASES = [(head, name, {}, "default") for head in HEADS for name in ("shared", "grouped")]
CASES += [
    ("AlbertForSequenceClassification", "shared", {"num_labels": 1}, "regression"),
    ("AlbertForSequenceClassification", "grouped", {"num_labels": 3}, "multi_label"),
    ("AlbertForTokenClassification", "grouped", {"num_labels": 5}, "default"),
    ("AlbertForMaskedLM", "untied", {}, "default"),
    ("AlbertForPreTraining", "untied", {}, "default"),
]


def case_id(case):
    head, name, overrides, labels = case
    extra = "" if labels == "default" else f"-{labels}"
    extra += "".join(f"-{k}={v}" for k, v in overrides.items() if labels == "default")
    return f"{head.removeprefix('Albert')}-{name}{extra}"


# --- building the two models -----------------------------------------------------------------


def torch_model(head, config, seed=0):
    """transformers' model for our config, eval mode, every parameter randomised.

    Random weights of a useful size everywhere (not the zero biases and unit LayerNorms of
    the initialisation), so that a parameter used wrongly cannot hide.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.AlbertConfig.from_dict(config.to_hf())
    hf_config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, head)(hf_config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters once
            noise = torch.randn(p.shape, generator=gen)
            is_norm_gain = "norm" in name.lower() and name.endswith("weight")
            p.copy_(1 + 0.2 * noise if is_norm_gain else 0.2 * noise)
    return model


def load_ours(torch_model_, tmp_path):
    torch_model_.save_pretrained(tmp_path)
    model = npplm.from_pretrained(tmp_path)
    assert type(model).__name__ == type(torch_model_).__name__
    return model


def make_inputs(head, config, labels="default", seed=0):
    """Integer inputs with padding (id pad_token_id under a 0 mask) and two segments, and
    the labels the head's loss takes."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, (B, T))
    mask = np.ones((B, T), dtype=np.int64)
    mask[1, 4:] = 0
    ids[1, 4:] = config.pad_token_id  # the padding row must get no gradient from these
    types = np.zeros((B, T), dtype=np.int64)
    types[:, 3:] = config.type_vocab_size - 1
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
    if head == "AlbertForMultipleChoice":  # (B, T) -> (B, N, T)
        inputs = {k: np.stack([np.roll(v, i, axis=1) for i in range(N)], axis=1)
                  for k, v in inputs.items()}
        inputs["attention_mask"][:, :, 0] = 1
        inputs["labels"] = np.array([2, 0])
        return inputs
    n = config.num_labels
    if head in ("AlbertForMaskedLM", "AlbertForPreTraining"):
        mlm = rng.integers(0, config.vocab_size, (B, T))
        mlm[rng.random((B, T)) < 0.4] = -100  # positions not predicted
        mlm[0, 0] = 5
        inputs["labels"] = mlm
        if head == "AlbertForPreTraining":
            inputs["sentence_order_label"] = np.array([0, 1])
    elif head == "AlbertForSequenceClassification":
        inputs["labels"] = {"default": rng.integers(0, n, B),
                            "regression": rng.standard_normal(B).astype(np.float32),
                            "multi_label": (rng.random((B, n)) < 0.5).astype(np.float32)}[labels]
    elif head == "AlbertForTokenClassification":
        tags = rng.integers(0, n, (B, T))
        tags[1, 4:] = -100
        inputs["labels"] = tags
    elif head == "AlbertForQuestionAnswering":
        inputs["start_positions"] = np.array([2, T + 3])  # T + 3: outside, clamped, ignored
        inputs["end_positions"] = np.array([5, 3])
    return inputs


# Our ModelOutput field -> transformers' output field, where the names differ.
RENAMED = {"AlbertForPreTraining": {"logits": "prediction_logits",
                                    "seq_relationship_logits": "sop_logits"}}


def run_both(head, config, tmp_path, labels="default"):
    """Forward and backward in both libraries. Returns (ours model, ours outputs, torch
    model, torch outputs), gradients left in the parameters."""
    torch = pytest.importorskip("torch")
    theirs_model = torch_model(head, config)
    ours_model = load_ours(theirs_model, tmp_path)
    inputs = make_inputs(head, config, labels)
    ours = ours_model(**inputs)
    theirs = theirs_model(**{k: torch.tensor(v) for k, v in inputs.items()})
    if head == "AlbertModel":  # no loss: a fixed random linear function of both outputs
        rng = np.random.default_rng(1)
        r1 = rng.standard_normal((B, T, config.hidden_size)).astype(np.float32)
        r2 = rng.standard_normal((B, config.hidden_size)).astype(np.float32)
        ours.loss = (ours.last_hidden_state * r1).sum() + (ours.pooler_output * r2).sum()
        theirs.loss = ((theirs.last_hidden_state * torch.tensor(r1)).sum()
                       + (theirs.pooler_output * torch.tensor(r2)).sum())
    ours.loss.backward()
    theirs.loss.backward()
    return ours_model, ours, theirs_model, theirs


def output_pairs(head, ours, theirs):
    """(field, ours, theirs) for every output our model produced."""
    renamed = RENAMED.get(head, {})
    for field in dataclasses.fields(ours):
        value = getattr(ours, field.name)
        if value is not None:
            yield field.name, value, getattr(theirs, renamed.get(field.name, field.name))


def gradient_pairs(ours_model, theirs_model):
    """(name, ours grad, theirs grad) for every parameter of the torch model."""
    ours_params = dict(ours_model._all_named_parameters())
    for name, p in theirs_model.named_parameters():
        theirs = None if p.grad is None else p.grad.numpy()
        yield name, ours_params[name].grad, theirs


# --- parity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_outputs_and_every_gradient_match_transformers(case, tmp_path):
    head, config_name, overrides, labels = case
    config = dataclasses.replace(CONFIGS[config_name], **overrides)
    ours_model, ours, theirs_model, theirs = run_both(head, config, tmp_path, labels)
    for field, a, b in output_pairs(head, ours, theirs):
        assert isinstance(a, Tensor), field
        assert_close(a, b.detach().numpy(), kind="model32")
    # The same parameters (tied ones once), each with the same gradient. `scale`, the
    # model's largest gradient entry, sets the noise floor of model_grad32 for gradients
    # that are zero in exact arithmetic and rounding noise in float32 (the attention key
    # bias: softmax ignores a shift shared by all keys; likewise the QA and multiple-choice
    # output biases, whose shift is shared by all positions or choices).
    assert len(ours_model.parameters()) == len(list(theirs_model.parameters()))
    pairs = list(gradient_pairs(ours_model, theirs_model))
    scale = max(np.max(np.abs(b)) for _, _, b in pairs if b is not None)
    for name, a, b in pairs:
        if b is None:  # unused by this head (the untied model's predictions.bias)
            assert a is None or not np.any(a), name
        else:
            assert a is not None, f"{name} got no gradient"
            assert_close(a, b, kind="model_grad32", scale=scale)
    if config.pad_token_id is not None and head != "AlbertForMultipleChoice":
        # The padding row of the token table gets no gradient from the lookup (only from a
        # tied decoder): PyTorch's padding_idx rule, which the comparison above also checks.
        word = getattr(ours_model, "albert", ours_model).embeddings.word_embeddings.weight
        if not config.tie_word_embeddings or head not in ("AlbertForMaskedLM",
                                                          "AlbertForPreTraining"):
            assert not np.any(word.grad[config.pad_token_id])


def test_every_class_is_registered_for_from_pretrained():
    assert len(HEADS) == 7
    for head in HEADS:
        assert ARCHITECTURES[head] is getattr(A, head)
    assert BASE_MODELS["albert"] is A.AlbertModel


def test_state_dict_keys_are_the_checkpoint_keys():
    torch_model("AlbertForPreTraining", GROUPED)  # skips without transformers
    for head in HEADS:
        for config in (SHARED, GROUPED, UNTIED):
            ours = set(getattr(A, head)(config).state_dict())
            theirs = set(torch_model(head, config).state_dict())
            assert ours == theirs, (head, ours ^ theirs)


# --- cross-layer sharing ---------------------------------------------------------------------


def test_layers_map_onto_groups_as_the_reference_does():
    def groups(L, G):
        return [group_of_layer(i, AlbertConfig.tiny(num_hidden_layers=L, num_hidden_groups=G))
                for i in range(L)]

    assert groups(12, 1) == [0] * 12
    assert groups(4, 2) == [0, 0, 1, 1]
    assert groups(3, 2) == [0, 0, 1]
    assert groups(6, 6) == list(range(6))
    assert groups(7, 3) == [0, 0, 0, 1, 1, 2, 2]


def record_calls(model):
    """Make every AlbertLayer log its id() when called; returns the log."""
    log = []
    for _, m in model.named_modules():
        if isinstance(m, A.AlbertLayer):
            m.forward = (lambda f, i: lambda *a: (log.append(i), f(*a))[1])(m.forward, id(m))
    return log


def test_grouped_model_runs_its_groups_in_order():
    model = A.AlbertModel(GROUPED)
    log = record_calls(model)
    model(np.ones((1, 3), dtype=np.int64))
    g0, g1 = ([id(layer) for layer in group.albert_layers]
              for group in model.encoder.albert_layer_groups)
    assert log == g0 + g0 + g1  # layers 0, 1 -> group 0; layer 2 -> group 1; 2 inner each


def test_shared_layer_is_one_parameter_set_whose_gradient_sums_over_its_uses():
    torch = pytest.importorskip("torch")
    config = SHARED  # four layers, one stored
    shared = A.AlbertModel(config, seed=3).astype(np.float64)
    layer_names = [n for n, _ in shared.named_parameters() if ".albert_layer_groups." in n]
    assert len(layer_names) == 16 and all(
        n.startswith("encoder.albert_layer_groups.0.albert_layers.0.") for n in layer_names)
    layer = shared.encoder.albert_layer_groups[0].albert_layers[0]
    log = record_calls(shared)
    inputs = make_inputs("AlbertModel", config)
    rng = np.random.default_rng(4)
    r1, r2 = rng.standard_normal((B, T, config.hidden_size)), rng.standard_normal(
        (B, config.hidden_size))

    def loss(model):
        out = model(**inputs)
        return (out.last_hidden_state * r1).sum() + (out.pooler_output * r2).sum()

    loss(shared).backward()
    assert log == [id(layer)] * 4  # the same Module object, four times

    # The same computation with four separate copies of the layer: the shared gradient
    # must be the sum of the copies' gradients.
    unrolled = A.AlbertModel(dataclasses.replace(config, num_hidden_groups=4),
                             seed=5).astype(np.float64)
    state = shared.state_dict()
    unrolled.load_state_dict({k: state[k.replace(f"groups.{g}.", "groups.0.")]
                              for g in range(4) for k in unrolled.state_dict()
                              if f"groups.{g}." in k or "groups." not in k})
    loss(unrolled).backward()
    copies = dict(unrolled.named_parameters())
    for name, p in shared.named_parameters():
        if name in layer_names:
            expected = sum(copies[name.replace("groups.0.", f"groups.{g}.")].grad
                           for g in range(4))
        else:
            expected = copies[name].grad
        assert_close(p.grad, expected, kind="float64")
    first_use = copies["encoder.albert_layer_groups.0.albert_layers.0.ffn.weight"].grad
    assert not np.allclose(layer.ffn.weight.grad, first_use)  # the later uses contribute

    # PyTorch also accumulates into its one shared parameter: in float64, equal.
    theirs = torch_model("AlbertModel", config).double()
    state = {k: torch.tensor(v) for k, v in shared.state_dict().items()}
    theirs.load_state_dict(state, strict=True)
    out = theirs(**{k: torch.tensor(v) for k, v in inputs.items()})
    ((out.last_hidden_state * torch.tensor(r1)).sum()
     + (out.pooler_output * torch.tensor(r2)).sum()).backward()
    for name, p in theirs.named_parameters():
        assert_close(dict(shared.named_parameters())[name].grad, p.grad.numpy(), "float64")


# --- parameter counts ------------------------------------------------------------------------

PUBLISHED = {"base": 11_683_584, "large": 17_683_968, "xlarge": 58_724_864,
             "xxlarge": 222_595_584}


@pytest.mark.parametrize("size", PUBLISHED)
def test_published_sizes_have_the_documented_parameter_counts(size):
    config = getattr(AlbertConfig, size)()
    assert num_parameters(config) == PUBLISHED[size]
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):  # shapes only: nothing allocated
        theirs = transformers.AlbertModel(transformers.AlbertConfig.from_dict(config.to_hf()))
    assert theirs.num_parameters() == PUBLISHED[size]


def test_base_is_about_a_tenth_of_bert_base_and_xxlarge_shares_its_layer():
    base, xxlarge = AlbertConfig.base(), AlbertConfig.xxlarge()
    assert round(num_parameters(base) / 1e6) == 12
    # Sharing: twelve layers cost one; unshared they would cost twelve.
    unshared = dataclasses.replace(xxlarge, num_hidden_groups=12)
    assert num_parameters(unshared) - num_parameters(xxlarge) == 11 * 201_379_840


@pytest.mark.parametrize("config", [SHARED, GROUPED, UNTIED], ids=["shared", "grouped",
                                                                   "untied"])
def test_parameter_count_of_every_head_without_allocating(config):
    for head in HEADS:
        model = getattr(A, head)(config)
        assert model.num_parameters() == num_parameters(config, head), head
        assert torch_model(head, config).num_parameters() == num_parameters(config, head)
    with pytest.raises(ValueError, match="unknown architecture 'BertModel'"):
        num_parameters(config, "BertModel")


# --- configuration ---------------------------------------------------------------------------


def test_config_round_trips_through_transformers():
    transformers = pytest.importorskip("transformers")
    config = dataclasses.replace(GROUPED, num_labels=4, problem_type="regression",
                                 eos_token_id=(3, 4))
    assert AlbertConfig.from_hf(config.to_hf()) == config
    theirs = transformers.AlbertConfig.from_dict(config.to_hf())
    assert theirs.num_labels == 4 and theirs.num_hidden_groups == 2
    assert AlbertConfig.from_hf(theirs.to_dict()) == config
    # transformers' defaults are ours: an empty config.json means the same model.
    assert AlbertConfig.from_hf(transformers.AlbertConfig().to_dict()) == AlbertConfig()
    assert AlbertConfig.from_hf({"hidden_size": 768, "num_attention_heads": 12,
                                 "some_future_key": 1}).hidden_size == 768
    assert config.to_hf()["model_type"] == "albert"


def test_config_is_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SHARED.hidden_size = 64
    bad = [
        (dict(hidden_size=30), r"hidden_size=30 is not divisible by num_attention_heads=4"),
        (dict(num_hidden_groups=5), r"num_hidden_groups=5 > num_hidden_layers=4"),
        (dict(embedding_size=0), r"embedding_size=0 must be a positive integer"),
        (dict(hidden_act="swishy"), r"unknown activation 'swishy'"),
        (dict(hidden_dropout_prob=1.0), r"hidden_dropout_prob=1.0 must be in \[0, 1\)"),
        (dict(pad_token_id=99), r"pad_token_id=99 is outside the vocabulary \(vocab_size=99\)"),
        (dict(problem_type="ranking"), r"problem_type='ranking'"),
    ]
    for overrides, message in bad:
        with pytest.raises(ValueError, match=message):
            AlbertConfig.tiny(**overrides)
    with pytest.raises(ValueError, match="num_labels=2"):
        A.AlbertForQuestionAnswering(AlbertConfig.tiny(num_labels=3))


# --- bad input -------------------------------------------------------------------------------


def test_bad_inputs_name_the_value_and_the_limit():
    model = A.AlbertForMaskedLM(SHARED)
    ids = np.ones((2, 7), dtype=np.int64)
    with pytest.raises(IndexError, match=r"token id 99 is out of range for a table of 99 rows "
                                         r"\(valid: 0..98\)"):
        model(np.full((2, 7), 99))
    with pytest.raises(IndexError, match=r"token type id 2 is out of range for a table of 2"):
        model(ids, token_type_ids=np.full((2, 7), 2))
    with pytest.raises(ValueError, match=r"sequence length 65 exceeds "
                                         r"max_position_embeddings=64"):
        model(np.ones((1, 65), dtype=np.int64))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 5\) but the input ids "
                                         r"have \(2, 7\)"):
        model(ids, attention_mask=np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"token_type_ids has shape \(2, 6\)"):
        model(ids, token_type_ids=np.zeros((2, 6), dtype=np.int64))
    with pytest.raises(TypeError, match="input_ids must hold integers, got dtype float64"):
        model(np.ones((2, 7)))
    with pytest.raises(ValueError, match=r"shape \(batch, length\), got shape \(7,\)"):
        model(np.ones(7, dtype=np.int64))
    with pytest.raises(IndexError, match=r"target 120 is out of range for 99 classes"):
        model(ids, labels=np.full((2, 7), 120))
    with pytest.raises(ValueError, match=r"\(batch, choices, length\)"):
        A.AlbertForMultipleChoice(SHARED)(ids)


def test_inputs_may_be_tensors_and_outputs_are_tensors():
    model = A.AlbertModel(SHARED)
    ids = np.arange(14).reshape(2, 7)
    a = model(ids, np.ones((2, 7)))
    b = model(Tensor(ids), Tensor(np.ones((2, 7))))
    assert isinstance(a.last_hidden_state, Tensor) and a.last_hidden_state.shape == (2, 7, 32)
    assert a.pooler_output.shape == (2, 32)
    assert_close(a.last_hidden_state, b.last_hidden_state, kind="exact64")


# --- checkpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize("head", HEADS + ["AlbertForMaskedLM-untied"])
def test_our_checkpoint_loads_in_transformers_with_equal_outputs(head, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = UNTIED if head.endswith("-untied") else GROUPED
    head = head.removesuffix("-untied")
    ours = getattr(A, head)(config, seed=7).eval()  # built in training mode, as in torch
    rng = np.random.default_rng(8)
    for p in ours.parameters():  # every tensor different, so a misplaced one shows
        p.data = (p.data + 0.2 * rng.standard_normal(p.shape)).astype(np.float32)
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, head).from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    theirs.eval()
    inputs = make_inputs(head, config)
    ours_out = ours(**inputs)
    theirs_out = theirs(**{k: torch.tensor(v) for k, v in inputs.items()})
    for _, a, b in output_pairs(head, ours_out, theirs_out):
        assert_close(a, b.detach().numpy(), kind="model32")
    # ... and back: npplm reads what it wrote.
    again = npplm.from_pretrained(tmp_path)(**inputs)
    for field, a, _ in output_pairs(head, ours_out, theirs_out):
        assert_close(getattr(again, field), a, kind="exact64")


def test_backbone_loads_from_a_head_checkpoint_and_bare_configs_dispatch(tmp_path):
    torch = pytest.importorskip("torch")
    theirs = torch_model("AlbertForPreTraining", SHARED)
    theirs.save_pretrained(tmp_path)
    backbone = A.AlbertModel.from_pretrained(tmp_path)  # albert.* keys, prefix stripped
    inputs = make_inputs("AlbertModel", SHARED)
    ours = backbone(**inputs)
    ref = theirs.albert(**{k: torch.tensor(v) for k, v in inputs.items()})
    assert_close(ours.last_hidden_state, ref.last_hidden_state.detach().numpy(), "model32")
    assert_close(ours.pooler_output, ref.pooler_output.detach().numpy(), "model32")

    # A config.json naming no architecture loads the backbone of its model_type; the
    # position_ids buffer that older checkpoints carry is not a weight and is skipped.
    config = json.loads((tmp_path / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    state = read_weights(tmp_path)
    state["albert.embeddings.position_ids"] = np.arange(64)[None]
    write_safetensors(state, tmp_path / "model.safetensors")
    model = npplm.from_pretrained(tmp_path)
    assert type(model) is A.AlbertModel
    assert_close(model(**inputs).last_hidden_state, ours.last_hidden_state, "exact64")

    # A head given a backbone checkpoint is missing its head's keys: a clear error.
    model.save_pretrained(tmp_path / "backbone")
    with pytest.raises(CheckpointError, match=r"missing keys \['predictions\.LayerNorm"):
        A.AlbertForMaskedLM.from_pretrained(tmp_path / "backbone")


# --- training --------------------------------------------------------------------------------


def test_one_sgd_step_lowers_the_pretraining_loss():
    model = A.AlbertForPreTraining(SHARED, seed=11)
    inputs = make_inputs("AlbertForPreTraining", SHARED)
    before = model(**inputs).loss
    before.backward()
    for p in model.parameters():
        p.data -= 0.5 * p.grad
    after = model(**inputs).loss
    assert after.item() < before.item() - 0.1


def test_dropout_acts_in_training_mode_only():
    config = AlbertConfig.tiny(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    model = A.AlbertModel(config)
    ids = np.arange(1, 15).reshape(2, 7)
    a = model.train()(ids).last_hidden_state.numpy()
    b = model(ids).last_hidden_state.numpy()
    assert not np.allclose(a, b)
    c, d = (model.eval()(ids).last_hidden_state.numpy() for _ in range(2))
    np.testing.assert_array_equal(c, d)
