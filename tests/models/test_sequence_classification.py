"""GPT2ForSequenceClassification and LlamaForSequenceClassification (reward models) against
Hugging Face transformers, on random-init tiny models (nothing downloaded).

Each classifier is built in transformers with random weights, saved with `save_pretrained`
and loaded with `npplm.from_pretrained`. The scores of a right-padded and of a left-padded
batch, the loss and every parameter's gradient must agree; our `save_pretrained` must load
back in transformers; `from_backbone` must turn a causal LM (a folder or an object) into a
classifier whose backbone is the LM's. Then the pooling rule itself (the rightmost token
that is not padding, transformers' formula), num_labels in config.json, and errors.
"""

import numpy as np
import pytest

import npplm
from autograd import no_grad
from npplm.io import CheckpointError
from npplm.layers import positions_from_mask
from npplm.models import ARCHITECTURES
from npplm.models.base import last_token_positions
from npplm.models.gpt import CONV1D_WEIGHTS, GPT2ForSequenceClassification, GPTConfig
from npplm.models.llama import LlamaConfig, LlamaForSequenceClassification
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

PAD = 0
# family -> (our config preset, transformers' config class, its LM class, our classifier)
FAMILIES = {
    "gpt2": (GPTConfig.tiny, "GPT2Config", "GPT2LMHeadModel", GPT2ForSequenceClassification),
    "llama": (LlamaConfig.tiny, "LlamaConfig", "LlamaForCausalLM",
              LlamaForSequenceClassification),
}
LENGTHS = np.array([7, 5, 2])  # real tokens per row
B, T = 3, 7


def randomize(model, seed=0):
    """Random weights of scale 0.2 (norm gains 1 +- 0.1), in place, ties kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_gain = name.endswith("weight") and (".ln_" in name or name.endswith("norm.weight"))
            p.copy_(1 + 0.1 * noise if is_gain else 0.2 * noise)
    return model


def hf_config(family, **overrides):
    preset, config_name, _, _ = FAMILIES[family]
    config = preset(pad_token_id=PAD, **overrides)
    return getattr(transformers, config_name)(**config.to_hf(), attn_implementation="eager")


def hf_classifier(family, num_labels):
    name = FAMILIES[family][3].__name__  # transformers' class has the same name
    torch.manual_seed(0)
    model = getattr(transformers, name)(hf_config(family, num_labels=num_labels))
    return randomize(model).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(family, num_labels) -> (transformers classifier, its save_pretrained folder)."""
    built = {}

    def get(family, num_labels=1):
        key = family, num_labels
        if key not in built:
            model = hf_classifier(family, num_labels)
            path = tmp_path_factory.mktemp(f"{family}_{num_labels}")
            model.save_pretrained(path)
            built[key] = model, path
        return built[key]

    return get


def padded_batch(side, seed=0):
    """ids and attention mask (B, T): rows of LENGTHS real tokens, padded with PAD on `side`."""
    rng = np.random.default_rng(seed)
    real = np.arange(T) < LENGTHS[:, None]  # right padding: real tokens first
    if side == "left":
        real = real[:, ::-1]
    ids = np.where(real, rng.integers(3, 64, (B, T)), PAD)
    return ids, real.astype(np.int64)


def checkpoint_grad(name, grad):
    """Our gradient in the checkpoint's layout: GPT-2's Conv1D weights are (in, out) there."""
    return grad.T if name.endswith(CONV1D_WEIGHTS) else grad


# --- parity with transformers ------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("side", ["right", "left"])
def test_scores_match_transformers(family, side, checkpoints):
    hf, path = checkpoints(family)
    ours = npplm.from_pretrained(path)
    assert type(ours) is FAMILIES[family][3] and not ours.training
    assert ours.config.num_labels == 1 and ours.config.pad_token_id == PAD
    ids, mask = padded_batch(side)
    # Hugging Face's forward numbers positions 0..T-1 whatever the mask; we number them from
    # the mask (as its generate does). Give it ours: with right padding they are the same.
    positions = positions_from_mask(mask, T)
    with no_grad():
        scores = ours(ids, attention_mask=mask).logits.numpy()
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                      position_ids=torch.tensor(positions)).logits.numpy()
    assert scores.shape == (B, 1)
    assert_close(scores, expected, "model32")


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("num_labels", [1, 3])
def test_loss_and_gradients_match_transformers(family, num_labels, checkpoints):
    hf, path = checkpoints(family, num_labels)
    ours = npplm.from_pretrained(path)
    ids, mask = padded_batch("right", seed=1)
    rng = np.random.default_rng(2)
    if num_labels == 1:  # a reward model trained by regression: mean squared error
        labels = rng.standard_normal(B).astype(np.float32)
    else:  # classes: cross-entropy
        labels = rng.integers(0, num_labels, B)
    hf_out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                labels=torch.tensor(labels))
    out = ours(ids, attention_mask=mask, labels=labels)
    assert_close(out.logits, hf_out.logits.detach().numpy(), "model32")
    assert_close(out.loss, hf_out.loss.detach().numpy(), "model32")

    hf.zero_grad()
    hf_out.loss.backward()
    out.loss.backward()
    hf_params = dict(hf.named_parameters())
    ours_params = dict(ours.named_parameters())
    assert set(ours_params) == set(hf_params)
    scale = max(float(abs(p.grad).max()) for p in hf_params.values() if p.grad is not None)
    for name, p in ours_params.items():
        theirs = hf_params[name].grad
        theirs = np.zeros(hf_params[name].shape) if theirs is None else theirs.numpy()
        assert_close(checkpoint_grad(name, p.grad), theirs, "model_grad32", scale=scale)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_pretrained_loads_in_transformers(family, checkpoints, tmp_path):
    hf, path = checkpoints(family)
    ours = npplm.from_pretrained(path)
    ours.save_pretrained(tmp_path)
    back = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path, attn_implementation="eager").eval()
    assert type(back).__name__ == type(hf).__name__
    assert back.config.num_labels == 1 and back.config.pad_token_id == PAD
    for name, value in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name
    ids, mask = padded_batch("right", seed=3)
    with no_grad():
        scores = ours(ids, attention_mask=mask).logits.numpy()
    with torch.no_grad():
        expected = back(input_ids=torch.tensor(ids),
                        attention_mask=torch.tensor(mask)).logits.numpy()
    assert_close(scores, expected, "model32")


# --- a reward model from a causal LM ---------------------------------------------------------


@pytest.fixture(scope="module")
def lm_checkpoints(tmp_path_factory):
    """family -> (transformers causal LM, its folder): what a reward model starts from."""
    built = {}

    def get(family):
        if family not in built:
            _, config_name, lm_name, _ = FAMILIES[family]
            config = FAMILIES[family][0]()  # an LM config: no pad token, num_labels 2
            torch.manual_seed(0)
            lm = randomize(getattr(transformers, lm_name)(getattr(transformers, config_name)(
                **config.to_hf(), attn_implementation="eager")), seed=4).eval()
            path = tmp_path_factory.mktemp(f"{family}_lm")
            lm.save_pretrained(path)
            built[family] = lm, path
        return built[family]

    return get


@pytest.mark.parametrize("family", list(FAMILIES))
def test_from_backbone_of_a_causal_lm_folder_matches_transformers(family, lm_checkpoints):
    lm, path = lm_checkpoints(family)
    cls = FAMILIES[family][3]
    ours = cls.from_backbone(path, pad_token_id=PAD).eval()
    assert ours.config.num_labels == 1 and ours.score.weight.shape == (1, 32)
    # The same in transformers: the LM's backbone, a new score layer (given ours).
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, pad_token_id=PAD, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs.score.weight.copy_(torch.tensor(ours.score.weight.numpy()))
    ids, mask = padded_batch("right", seed=5)
    with no_grad():
        scores = ours(ids, attention_mask=mask).logits.numpy()
    with torch.no_grad():
        expected = theirs(input_ids=torch.tensor(ids),
                          attention_mask=torch.tensor(mask)).logits.numpy()
    assert_close(scores, expected, "model32")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_from_backbone_of_a_model_copies_its_backbone(family, lm_checkpoints):
    _, path = lm_checkpoints(family)
    lm = npplm.from_pretrained(path)
    cls = FAMILIES[family][3]
    reward = cls.from_backbone(lm, num_labels=1, pad_token_id=PAD, seed=1)
    prefix = cls.base_model_prefix
    lm_state = getattr(lm, prefix).state_dict()
    reward_state = reward.backbone.state_dict()
    assert set(lm_state) == set(reward_state)
    for name, value in lm_state.items():
        np.testing.assert_array_equal(reward_state[name], value, err_msg=name)
    # Copies: training the reward model leaves the policy (or reference) alone.
    first = next(iter(reward_state))
    reward_state[first][...] += 1.0
    assert not np.array_equal(getattr(lm, prefix).state_dict()[first], reward_state[first])
    # A classifier's dtype follows the source's.
    assert cls.from_backbone(lm.astype(np.float64), pad_token_id=PAD).dtype == np.float64
    other = next(c for c in (GPT2ForSequenceClassification, LlamaForSequenceClassification)
                 if c is not cls)
    with pytest.raises(TypeError, match="from_backbone needs"):
        other.from_backbone(lm)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_from_pretrained_refuses_a_causal_lm_folder_for_a_classifier(family, lm_checkpoints):
    _, path = lm_checkpoints(family)
    with pytest.raises(CheckpointError, match="score.weight"):
        FAMILIES[family][3].from_pretrained(path)


# --- the pooling rule ----------------------------------------------------------------------


def test_last_token_positions_follow_transformers_formula():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, (64, 6))  # pads (0) anywhere: inside rows, at both ends
    ids[0] = 0  # padding only: position 0
    ids[1] = [5, 0, 0, 0, 0, 0]  # one real token first: position 0
    ids[2] = [0, 0, 0, 0, 0, 5]  # left padded: the last position
    ours = last_token_positions(ids, PAD)
    # modeling_gpt2.py / modeling_layers.py GenericForSequenceClassification, verbatim in torch
    t = torch.tensor(ids)
    non_pad = (t != PAD).to(torch.int32)
    expected = (torch.arange(t.shape[-1], dtype=torch.int32) * non_pad).argmax(-1)
    np.testing.assert_array_equal(ours, expected.numpy())
    assert list(ours[:3]) == [0, 0, 5]


def test_without_a_pad_token_only_one_row_can_be_scored():
    np.testing.assert_array_equal(last_token_positions(np.ones((1, 4), np.int64), None), [3])
    model = GPT2ForSequenceClassification(GPTConfig.tiny(num_labels=1)).eval()
    with pytest.raises(ValueError, match="pad_token_id"):
        model(np.ones((2, 4), np.int64))
    with no_grad():
        assert model(np.ones((1, 4), np.int64)).logits.shape == (1, 1)


# --- configs and tables --------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("num_labels", [1, 2, 5])
def test_num_labels_round_trips_through_transformers(family, num_labels, tmp_path):
    preset, config_name, _, _ = FAMILIES[family]
    config = preset(num_labels=num_labels, pad_token_id=PAD)
    hf = getattr(transformers, config_name)(**config.to_hf())
    assert hf.num_labels == num_labels and hf.pad_token_id == PAD
    assert type(config).from_hf(hf.to_dict()) == config
    hf.save_pretrained(tmp_path)  # config.json as transformers writes it (no id2label at 2)
    assert type(config).from_hf(npplm.io.read_config(tmp_path)) == config
    assert ("id2label" in config.to_hf()) == (num_labels != 2)  # transformers' convention


def test_classifier_configs_validate_num_labels():
    for preset in (GPTConfig.tiny, LlamaConfig.tiny):
        with pytest.raises(ValueError, match="num_labels"):
            preset(num_labels=0)
    with pytest.raises(ValueError, match="pad_token_id"):
        GPTConfig.tiny(pad_token_id=64)


def test_tables_name_the_classifiers():
    for name in ("GPT2ForSequenceClassification", "LlamaForSequenceClassification"):
        assert ARCHITECTURES[name].__name__ == name


def test_parameters_are_the_backbone_and_score():
    for family, (preset, _, _, cls) in FAMILIES.items():
        config = preset(num_labels=3, pad_token_id=PAD)
        model = cls(config)
        names = {name for name, _ in model.named_parameters()}
        assert "score.weight" in names and not any("lm_head" in n for n in names)
        assert all(n == "score.weight" or n.startswith(cls.base_model_prefix + ".")
                   for n in names), family
        assert model.score.weight.shape == (3, 32)
