"""npplm.alignment.losses: DPO and its variants, the reward model's loss, and their pieces.

First the acceptance numbers, worked by hand in each test's comment; then float64 gradient
checks of every loss against finite differences (hypothesis draws the inputs); then TRL's
own code as the oracle (DPOTrainer._compute_loss and RewardTrainer.compute_loss, driven
with stand-ins for the trainer's state, skipped where trl is not installed); then whole
models: the DPO loss of a tiny GPT-2 and a tiny LLaMA and every parameter's gradient
against the same loss written in PyTorch on the transformers model with the same weights.
"""

import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import npplm
from autograd import Tensor, gradcheck, no_grad
from npplm.alignment.losses import (
    LOSS_TYPES,
    dpo_loss,
    logsigmoid,
    preference_metrics,
    reward_loss,
    sequence_logps,
)
from tests.tolerances import assert_close

# The brief's pair: policy log-probs -10 (chosen) and -12 (rejected), reference -11 and
# -11, completions of 5 and 8 tokens, beta = 0.1. So pi_c - ref_c = 1, pi_r - ref_r = -1,
# h = 2 and beta h = 0.2.
PAIR = dict(chosen_logps=[-10.0], rejected_logps=[-12.0], ref_chosen_logps=[-11.0],
            ref_rejected_logps=[-11.0], chosen_lengths=[5], rejected_lengths=[8])
ACCEPTANCE = {
    # -log sigmoid(0.2) = log(1 + e^-0.2)
    ("sigmoid", 0.0): 0.5981388693815918,
    # max(0, 1 - 0.2)
    ("hinge", 0.0): 0.8,
    # h' = 1/5 - (-1)/8 = 0.325; (0.325 - 1/(2 * 0.1))^2 = (-4.675)^2
    ("ipo", 0.0): 21.855625,
    # (0.9 log(1 + e^-0.2) - 0.1 log(1 + e^0.2)) / 0.8 = log(1 + e^-0.2) - 0.025
    ("robust", 0.1): 0.5731388693815918,
}


# --- the acceptance numbers ----------------------------------------------------------------


@pytest.mark.parametrize(("loss_type", "label_smoothing"), list(ACCEPTANCE))
def test_dpo_acceptance_numbers(loss_type, label_smoothing):
    pair = {k: np.array(v, dtype=np.float64) if "logps" in k else v for k, v in PAIR.items()}
    losses, chosen, rejected = dpo_loss(**pair, beta=0.1, loss_type=loss_type,
                                        label_smoothing=label_smoothing)
    expected = ACCEPTANCE[loss_type, label_smoothing]
    assert losses.shape == (1,) and losses.dtype == np.float64
    assert losses.item() == pytest.approx(expected, abs=1e-12)
    # Implicit rewards: beta (policy - reference), summed log-ratios for every loss type.
    assert chosen.item() == pytest.approx(0.1) and rejected.item() == pytest.approx(-0.1)
    assert not chosen.requires_grad and not rejected.requires_grad


def test_reward_loss_acceptance_numbers():
    # -log sigmoid(1.5 - 0.5) = log(1 + e^-1); with margin 0.3: log(1 + e^-0.7)
    r_c, r_r = np.array([1.5]), np.array([0.5])
    assert reward_loss(r_c, r_r).item() == pytest.approx(0.31326168751822286, abs=1e-12)
    assert reward_loss(r_c, r_r, margin=0.3).item() == pytest.approx(0.4031860488854579,
                                                                     abs=1e-12)
    # centering adds c mean((r_c + r_r)^2) = 0.01 * 4
    assert reward_loss(r_c, r_r, center_rewards_coefficient=0.01).item() == pytest.approx(
        0.31326168751822286 + 0.04, abs=1e-12)
    # A reward model's logits (B, 1) are read as (B,).
    assert reward_loss(r_c[:, None], r_r[:, None]).shape == ()


def test_float32_stays_float32():
    logps = [Tensor(np.array(v, dtype=np.float32), requires_grad=True)
             for v in ([-10.0, -3.0], [-12.0, -2.0], [-11.0, -2.5], [-11.0, -2.5])]
    for loss_type in LOSS_TYPES:
        losses, chosen, rejected = dpo_loss(*logps, loss_type=loss_type,
                                            chosen_lengths=np.array([5, 2]),
                                            rejected_lengths=np.array([8, 3]))
        assert losses.dtype == chosen.dtype == rejected.dtype == np.float32, loss_type
        losses.mean().backward()
        assert logps[0].grad.dtype == np.float32
    rewards = Tensor(np.array([[1.5], [0.2]], dtype=np.float32), requires_grad=True)
    loss = reward_loss(rewards, rewards * 0.5, margin=np.array([0.3, 0.1]),
                       center_rewards_coefficient=0.01)
    assert loss.dtype == np.float32


def test_equal_policy_and_reference_give_ln2():
    # h = 0: -log sigmoid(0) = log 2, whatever beta; both rewards are 0.
    logps = np.array([-7.0, -3.0, -12.5])
    losses, chosen, rejected = dpo_loss(logps, logps - 1, logps, logps - 1, beta=0.3)
    assert_close(losses, np.full(3, math.log(2)), "exact64")
    assert preference_metrics(chosen, rejected) == {
        "rewards/chosen": 0.0, "rewards/rejected": 0.0, "rewards/accuracies": 0.0,
        "rewards/margins": 0.0}


def test_preference_metrics():
    metrics = preference_metrics(np.array([0.5, -0.1, 0.3]), Tensor(np.array([0.1, 0.2, 0.3])))
    assert metrics == pytest.approx({"rewards/chosen": 0.7 / 3, "rewards/rejected": 0.2,
                                     "rewards/accuracies": 1 / 3,
                                     "rewards/margins": 0.1 / 3})
    assert all(type(v) is float for v in metrics.values())


# --- logsigmoid ----------------------------------------------------------------------------


def test_logsigmoid_is_finite_far_from_zero_and_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.array([-1000.0, -100.0, -20.0, -1.0, 0.0, 1e-8, 1.0, 20.0, 100.0, 1000.0])
    expected = torch.nn.functional.logsigmoid(torch.tensor(x)).numpy()
    assert_close(logsigmoid(Tensor(x)), expected, "float64")
    out32 = logsigmoid(Tensor(x.astype(np.float32)))
    assert out32.dtype == np.float32 and np.isfinite(out32.numpy()).all()
    assert_close(out32, expected.astype(np.float32), "float32")


@given(x=hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(-30, 30)))
def test_logsigmoid_gradient(x):
    x = np.where(np.abs(x) < 1e-3, 1e-3, x)  # |x| is not differentiable at 0 (checked below)
    gradcheck(logsigmoid, x)


def test_logsigmoid_gradient_at_zero_is_one_half():
    x = Tensor(np.zeros(1), requires_grad=True)
    logsigmoid(x).sum().backward()
    assert x.grad[0] == 0.5  # sigmoid(-0)


# --- float64 gradient checks ---------------------------------------------------------------


@st.composite
def preference_batches(draw):
    """Four (B,) log-prob vectors, completion lengths and beta: a batch of B pairs."""
    B = draw(st.integers(1, 4))
    vectors = [draw(hnp.arrays(np.float64, B, elements=st.floats(-40.0, -0.5)))
               for _ in range(4)]
    lengths = [draw(hnp.arrays(np.int64, B, elements=st.integers(1, 12))) for _ in range(2)]
    beta = draw(st.floats(0.05, 1.0))
    return vectors, lengths, beta


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@given(batch=preference_batches(), label_smoothing=st.floats(0.0, 0.45))
def test_dpo_loss_gradients(loss_type, batch, label_smoothing):
    (pi_c, pi_r, ref_c, ref_r), (n_c, n_r), beta = batch
    if loss_type in ("hinge", "ipo"):
        label_smoothing = 0.0
    if loss_type == "hinge":  # away from the kink at beta h = 1
        assume(np.all(np.abs(1 - beta * ((pi_c - ref_c) - (pi_r - ref_r))) > 1e-3))

    def f(*logps):
        return dpo_loss(*logps, beta=beta, loss_type=loss_type,
                        label_smoothing=label_smoothing, chosen_lengths=n_c,
                        rejected_lengths=n_r)[0]

    gradcheck(f, pi_c, pi_r, ref_c, ref_r)


@given(batch=preference_batches(), center=st.sampled_from([None, 0.01, 0.5]),
       with_margin=st.booleans())
def test_reward_loss_gradients(batch, center, with_margin):
    (r_c, r_r, margin, _), _, _ = batch
    margin = -margin / 10 if with_margin else None  # margins >= 0

    def f(r_c, r_r):
        return reward_loss(r_c / 10, r_r / 10, margin=margin, center_rewards_coefficient=center)

    gradcheck(f, r_c, r_r)


# --- input checks --------------------------------------------------------------------------


def test_dpo_loss_refuses_what_it_cannot_compute():
    logps = [np.array([-1.0, -2.0])] * 4
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(*logps, loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(*logps, beta=0.0)
    for bad in (-0.1, 0.5, 0.7):
        with pytest.raises(ValueError, match="label_smoothing"):
            dpo_loss(*logps, loss_type="robust", label_smoothing=bad)
    with pytest.raises(ValueError, match="label_smoothing has no effect"):
        dpo_loss(*logps, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="chosen_lengths and rejected_lengths"):
        dpo_loss(*logps, loss_type="ipo")
    with pytest.raises(ValueError, match="at least one token"):
        dpo_loss(*logps, loss_type="ipo", chosen_lengths=[3, 0], rejected_lengths=[1, 1])
    with pytest.raises(ValueError, match=r"\(B,\)"):
        dpo_loss(logps[0], logps[1], logps[2], np.array([-1.0]))


def test_reward_loss_and_metrics_check_shapes():
    with pytest.raises(ValueError, match="differ"):
        reward_loss(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match=r"\(B, 1\)"):
        reward_loss(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="margin"):
        reward_loss(np.zeros(3), np.zeros(3), margin=np.zeros(2))
    with pytest.raises(ValueError):
        preference_metrics(np.zeros(3), np.zeros(2))


# --- TRL as the oracle -----------------------------------------------------------------------


def trl_dpo(pi_c, pi_r, ref_c, ref_r, n_c, n_r, beta, loss_type, label_smoothing):
    """(mean loss, rewards/* metrics) from trl's DPOTrainer._compute_loss itself.

    The trainer's state is replaced by the attributes the method reads, and the model by a
    function returning per-token log-probs whose row sums are the given sequence log-probs
    (rows [chosen, rejected], each a one-token prompt then n completion tokens).
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from trl.trainer.dpo_trainer import DPOTrainer

    lengths = np.concatenate([n_c, n_r])  # (2B,)
    T = int(lengths.max()) + 1
    completion = (np.arange(T) >= 1) & (np.arange(T) <= lengths[:, None])  # (2B, T)
    per_token = np.zeros((len(lengths), T - 1))
    per_token[:, 0] = np.concatenate([pi_c, pi_r])
    outputs = SimpleNamespace(log_probs=torch.tensor(per_token),
                              entropy=torch.zeros(per_token.shape),
                              mean_logits=torch.zeros(per_token.shape),
                              is_top1=torch.zeros(per_token.shape, dtype=torch.bool))
    inputs = dict(input_ids=torch.ones(completion.shape, dtype=torch.long),
                  attention_mask=torch.ones(completion.shape, dtype=torch.long),
                  completion_mask=torch.tensor(completion.astype(np.int64)),
                  ref_chosen_logps=torch.tensor(ref_c), ref_rejected_logps=torch.tensor(ref_r))
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), beta=beta, loss_types=[loss_type],
        loss_weights=[1.0], label_smoothing=label_smoothing, f_divergence_type="reverse_kl",
        precompute_ref_logps=True, ld_alpha=None, use_weighting=False,
        aux_loss_enabled=False, _metrics={"train": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1,
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x,
                                    gather_for_metrics=lambda x: x))
    loss = DPOTrainer._compute_loss(trainer, lambda **kwargs: outputs, inputs, False)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()
               if k.startswith("rewards/")}
    return float(loss), metrics


# trl 1.x uses label_smoothing in "robust" only (cDPO's smoothing of "sigmoid" was dropped),
# so the sigmoid case is compared at 0 and its smoothing against PyTorch below.
TRL_CASES = [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.1),
             ("robust", 0.3)]


@pytest.mark.parametrize(("loss_type", "label_smoothing"), TRL_CASES)
def test_dpo_loss_matches_trl(loss_type, label_smoothing):
    rng = np.random.default_rng(0)
    pi_c, pi_r, ref_c, ref_r = (-rng.uniform(2, 30, 5) for _ in range(4))
    n_c, n_r = rng.integers(1, 12, 5), rng.integers(1, 12, 5)
    losses, chosen, rejected = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=0.2,
                                        loss_type=loss_type, label_smoothing=label_smoothing,
                                        chosen_lengths=n_c, rejected_lengths=n_r)
    loss, metrics = trl_dpo(pi_c, pi_r, ref_c, ref_r, n_c, n_r, 0.2, loss_type,
                            label_smoothing)
    assert losses.numpy().mean() == pytest.approx(loss, rel=1e-12)
    # TRL counts accuracies in float32 (.float()): 0.8 arrives as 0.800000012.
    assert preference_metrics(chosen, rejected) == pytest.approx(metrics, rel=1e-7)


@pytest.mark.parametrize(("loss_type", "label_smoothing"), list(ACCEPTANCE))
def test_acceptance_numbers_are_trls(loss_type, label_smoothing):
    pair = {k: np.array(v, dtype=np.float64) for k, v in PAIR.items()}
    loss, _ = trl_dpo(*pair.values(), 0.1, loss_type, label_smoothing)
    assert loss == pytest.approx(ACCEPTANCE[loss_type, label_smoothing], abs=1e-12)


def test_sigmoid_label_smoothing_is_cdpo():
    # cDPO (Mitchell 2023): the expected DPO loss when each label is flipped with
    # probability eps, in PyTorch: -(1 - eps) logsigmoid(beta h) - eps logsigmoid(-beta h).
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    pi_c, pi_r, ref_c, ref_r = (-rng.uniform(2, 30, 6) for _ in range(4))
    h = torch.tensor((pi_c - ref_c) - (pi_r - ref_r))
    expected = -0.8 * F.logsigmoid(0.5 * h) - 0.2 * F.logsigmoid(-0.5 * h)
    losses, _, _ = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=0.5, label_smoothing=0.2)
    assert_close(losses, expected.numpy(), "float64")


@pytest.mark.parametrize("center", [None, 0.01])
@pytest.mark.parametrize("with_margin", [False, True])
def test_reward_loss_matches_trl(center, with_margin):
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from trl.trainer.reward_trainer import RewardTrainer

    rng = np.random.default_rng(2)
    r_c, r_r, margin = rng.standard_normal(4), rng.standard_normal(4), rng.uniform(0, 1, 4)
    logits = torch.tensor(np.concatenate([r_c, r_r])[:, None])  # (2B, 1): [chosen, rejected]
    inputs = dict(attention_mask=torch.ones(8, 3, dtype=torch.long))
    if with_margin:
        inputs["margin"] = torch.tensor(margin)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        args=SimpleNamespace(center_rewards_coefficient=center),
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
        accelerator=SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x))
    expected = RewardTrainer.compute_loss(trainer, lambda **kw: SimpleNamespace(logits=logits),
                                          inputs)
    ours = reward_loss(r_c, r_r, margin=margin if with_margin else None,
                       center_rewards_coefficient=center)
    assert ours.item() == pytest.approx(float(expected), rel=1e-12)


# --- whole models against PyTorch -------------------------------------------------------------

# Two preference pairs as one right-padded batch of four rows, [chosen, chosen, rejected,
# rejected] (TRL's order): a prompt, then the completion, then padding (id 0).
PROMPTS = np.array([3, 2])
CHOSEN = np.array([3, 4])
REJECTED = np.array([2, 5])


def preference_batch(seed=0):
    """ids, attention mask and completion mask (4, T) of the two pairs, right-padded."""
    prompt = np.concatenate([PROMPTS, PROMPTS])
    completion = np.concatenate([CHOSEN, REJECTED])
    T = int((prompt + completion).max())
    t = np.arange(T)
    mask = t < (prompt + completion)[:, None]  # (4, T)
    in_completion = mask & (t >= prompt[:, None])  # (4, T)
    ids = np.where(mask, np.random.default_rng(seed).integers(3, 64, mask.shape), 0)
    return ids, mask.astype(np.int64), in_completion.astype(np.int64)


def torch_sequence_logps(model, ids, mask, completion):
    """The same sum written directly: log_softmax, shift by one, gather, mask, sum."""
    import torch

    ids = torch.tensor(ids)
    logits = model(input_ids=ids, attention_mask=torch.tensor(mask)).logits  # (B, T, V)
    logp = logits[:, :-1].log_softmax(-1)  # position t predicts token t + 1
    token_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T - 1)
    return (token_logp * torch.tensor(completion)[:, 1:]).sum(-1)  # (B,)


def torch_dpo_loss(pi_c, pi_r, ref_c, ref_r, beta, loss_type, eps, n_c, n_r):
    """DPO's per-pair losses in PyTorch, from the formulas (see npplm.alignment.losses)."""
    import torch

    F = torch.nn.functional
    chosen, rejected = pi_c - ref_c, pi_r - ref_r
    if loss_type == "ipo":
        h = chosen / torch.tensor(n_c) - rejected / torch.tensor(n_r)
        return (h - 1 / (2 * beta)) ** 2
    h = chosen - rejected
    if loss_type == "sigmoid":
        return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    if loss_type == "hinge":
        return torch.relu(1 - beta * h)
    return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)


@pytest.fixture(scope="module")
def causal_lms(tmp_path_factory):
    """family -> (transformers model, ours loaded from its save_pretrained folder)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from npplm.models.llama import LlamaConfig
    from tests.models import test_gpt, test_llama

    built = {}

    def get(family):
        if family not in built:
            hf = (test_gpt.hf_model("gpt2") if family == "gpt2"
                  else test_llama.hf_model(LlamaConfig.tiny()))
            path = tmp_path_factory.mktemp(family)
            hf.save_pretrained(path)
            built[family] = hf, path
        hf, path = built[family]
        return hf, npplm.from_pretrained(path)  # a fresh copy each time: clean gradients

    return get


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_sequence_logps_equal_pytorch(family, causal_lms):
    import torch

    hf, ours = causal_lms(family)
    ids, mask, completion = preference_batch()
    with torch.no_grad():
        expected = torch_sequence_logps(hf, ids, mask, completion).numpy()
    with no_grad():
        logps = sequence_logps(ours, ids, mask, completion)
    assert logps.shape == (4,) and logps.dtype == np.float32
    assert_close(logps, expected, "float32")
    # Padding on the right changes nothing: other pad ids give the same sums.
    other = np.where(mask == 1, ids, 9)
    with no_grad():
        assert_close(sequence_logps(ours, other, mask, completion), logps, "float32")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_dpo_gradients_of_a_model_match_pytorch(family, loss_type, causal_lms):
    import torch

    from tests.models.test_gpt import checkpoint_grad

    hf, ours = causal_lms(family)
    ids, mask, completion = preference_batch(seed=1)
    eps = 0.1 if loss_type in ("sigmoid", "robust") else 0.0
    beta = 0.5
    # The reference is a constant: the policy's own log-probs, shifted per row.
    offsets = np.random.default_rng(3).uniform(-2, 2, 4)
    with torch.no_grad():
        ref = (torch_sequence_logps(hf, ids, mask, completion).numpy() + offsets)
    ref = ref.astype(np.float32)

    hf.zero_grad()
    theirs = torch_sequence_logps(hf, ids, mask, completion)
    expected = torch_dpo_loss(theirs[:2], theirs[2:], torch.tensor(ref[:2]),
                              torch.tensor(ref[2:]), beta, loss_type, eps, CHOSEN,
                              REJECTED).mean()
    expected.backward()

    logps = sequence_logps(ours, ids, mask, completion)  # (4,): [chosen, rejected]
    losses, _, _ = dpo_loss(logps[:2], logps[2:], ref[:2], ref[2:], beta=beta,
                            loss_type=loss_type, label_smoothing=eps,
                            chosen_lengths=CHOSEN, rejected_lengths=REJECTED)
    loss = losses.mean()
    loss.backward()
    assert_close(loss, expected.detach().numpy(), "float32")
    hf_params = dict(hf.named_parameters(remove_duplicate=False))
    ours_params = dict(ours.named_parameters())
    scale = max(float(abs(hf_params[n].grad).max()) for n in ours_params)
    assert scale > 0
    for name, p in ours_params.items():
        assert_close(checkpoint_grad(name, p.grad), hf_params[name].grad.numpy(),
                     "model_grad32", scale=scale)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_first_step_loss_is_ln2_when_policy_is_reference(family, causal_lms):
    _, policy = causal_lms(family)
    ids, mask, completion = preference_batch(seed=2)
    with no_grad():
        ref = sequence_logps(policy, ids, mask, completion).numpy()
    logps = sequence_logps(policy, ids, mask, completion)
    losses, chosen, rejected = dpo_loss(logps[:2], logps[2:], ref[:2], ref[2:])
    loss = losses.mean()
    assert_close(loss, np.float32(math.log(2)), "float32")
    assert preference_metrics(chosen, rejected)["rewards/margins"] == 0.0
    loss.backward()  # d loss / d h = -beta / 2 at h = 0: the first step already moves
    assert any(np.abs(p.grad).max() > 0 for p in policy.parameters())


def test_sequence_logps_checks_its_masks():
    from npplm.models.gpt import GPT2LMHeadModel, GPTConfig

    model = GPT2LMHeadModel(GPTConfig.tiny()).eval()
    ids, mask, completion = preference_batch()
    with pytest.raises(ValueError, match="padding"):
        sequence_logps(model, ids, mask, np.ones_like(completion) - np.eye(4, ids.shape[1],
                                                                          dtype=np.int64))
    with pytest.raises(ValueError, match="position 0"):
        sequence_logps(model, ids, None, np.ones_like(ids))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        sequence_logps(model, ids, mask, completion[:, :-1])
