"""The losses of preference alignment: DPO and its variants, and the reward model's.

    logsigmoid           log sigmoid(x), composed so that it neither overflows nor loses
                         float32's precision far from 0
    sequence_logps       log pi(y | x): the summed log-probabilities of a completion's tokens
                         under a causal LM (GPT, LLaMA), differentiable
    dpo_loss             DPO (sigmoid, with cDPO's label smoothing), hinge, IPO, robust DPO;
                         the implicit rewards beta log pi / pi_ref
    reward_loss          the Bradley-Terry loss of a reward model, with an optional margin
                         and TRL's reward centering
    preference_metrics   TRL's rewards/chosen, rewards/rejected, rewards/accuracies,
                         rewards/margins

Papers:
  DPO     Rafailov, Sharma, Mitchell, Ermon, Manning and Finn, "Direct Preference
          Optimization: Your Language Model is Secretly a Reward Model" (NeurIPS 2023),
          arXiv:2305.18290.
  cDPO    Mitchell, "A note on DPO with noisy preferences & relationship to IPO" (2023).
  hinge   Zhao et al., "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
          arXiv:2305.10425; Liu et al., "Statistical Rejection Sampling Improves Preference
          Optimization" (RSO), arXiv:2309.06657, whose hinge form TRL uses.
  IPO     Azar et al., "A General Theoretical Paradigm to Understand Learning from Human
          Preferences", arXiv:2310.12036.
  robust  Chowdhury, Kini and Natarajan, "Provably Robust DPO: Aligning Language Models
          with Noisy Feedback", arXiv:2403.00409.
  reward  Ouyang et al., "Training language models to follow instructions with human
          feedback" (InstructGPT), arXiv:2203.02155, eq. 1; the margin of Touvron et al.,
          "Llama 2", arXiv:2307.09288, eq. 2; the centering term of Eisenstein et al.,
          "Helping or Herding?", arXiv:2312.09244, eq. 2.
Reference implementation: TRL (huggingface/trl), `trainer/dpo_trainer.py`
(`DPOTrainer._compute_loss`) and `trainer/reward_trainer.py` (`RewardTrainer.compute_loss`),
checked against trl 1.16 in tests/alignment/test_losses.py.

Notation, for a prompt x with a chosen completion y_w and a rejected one y_l, and a batch
of B pairs:
    pi_c, pi_r     log pi_theta(y_w | x), log pi_theta(y_l | x)   the policy (trained)
    ref_c, ref_r   log pi_ref(y_w | x), log pi_ref(y_l | x)       the frozen reference
    h = (pi_c - ref_c) - (pi_r - ref_r)                           DPO's "logits", IPO's h
Every loss here is per pair, shape (B,); a trainer takes the mean.
"""

import numpy as np

from autograd import Tensor, abs, array_module, as_array, exp, log, minimum, to_numpy
from npplm.layers import IGNORE_INDEX, cross_entropy, int_array

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


def logsigmoid(x):
    """log sigmoid(x) = -log(1 + e^-x), written as min(x, 0) - log(1 + e^-|x|).

    Both forms are equal (for x < 0 multiply inside the log by e^x), but only the second
    is safe: e^-|x| <= 1 never overflows, and for x -> -inf it gives x - log(1 + e^x) ~ x
    instead of log(0). Composed from the engine's primitives, so its gradient is theirs:
        d/dx = [x < 0] - sign(x) e^-|x| / (1 + e^-|x|) = sigmoid(-x)
    (at x = 0, minimum's VJP splits the tie: 1/2, which is sigmoid(0)). Float32 stays
    float32: the constants are Python floats.
    """
    return minimum(x, 0.0) - log(1.0 + exp(-abs(x)))


def sequence_logps(model, input_ids, attention_mask, completion_mask):
    """log pi(y | x) = sum_t log pi(y_t | x, y_<t): one sum per row, (B,), differentiable.

    model            a causal LM: model(input_ids, attention_mask=...).logits is (B, T, V)
    input_ids        (B, T) prompt and completion, right-padded
    attention_mask   (B, T) 1 for tokens, 0 for padding (None: no padding)
    completion_mask  (B, T) 1 on the completion's tokens, 0 on the prompt and padding

    Position t predicts token t + 1, so token t + 1 is scored by the logits of position t
    when completion_mask[:, t + 1] is 1. That is log_softmax followed by a gather of the
    target's entry: npplm.layers.cross_entropy computes exactly -log_softmax(logits)[target]
    per position (reduction="none", 0 at IGNORE_INDEX), fused, and keeps the (B, T, V)
    logits whole, as causal_lm_loss does. Our causal LMs number positions from the
    attention mask, so right padding changes nothing for the real tokens.
    """
    ids = to_numpy(int_array(input_ids, "input_ids"))  # (B, T), host bookkeeping
    completion = to_numpy(as_array(completion_mask)) != 0  # (B, T)
    if ids.ndim != 2 or completion.shape != ids.shape:
        raise ValueError(f"sequence_logps: input_ids {ids.shape} and completion_mask "
                         f"{completion.shape} must both be (B, T)")
    if attention_mask is not None:
        padding = to_numpy(as_array(attention_mask)) == 0
        if padding.shape != ids.shape:
            raise ValueError(f"sequence_logps: attention_mask has shape {padding.shape}, "
                             f"input_ids {ids.shape}")
        if (completion & padding).any():
            raise ValueError("sequence_logps: completion_mask marks padding positions "
                             "(attention_mask 0) as completion tokens")
    if completion[:, 0].any():
        raise ValueError("sequence_logps: a completion cannot start at position 0: the first "
                         "token has no logits predicting it (put the prompt first)")
    targets = np.full_like(ids, IGNORE_INDEX)  # (B, T)
    targets[:, :-1] = np.where(completion[:, 1:], ids[:, 1:], IGNORE_INDEX)  # t -> t + 1
    logits = model(input_ids, attention_mask=attention_mask).logits  # (B, T, V)
    token_logps = -cross_entropy(logits, targets, reduction="none")  # (B, T), 0 off-target
    return token_logps.sum(axis=1)  # (B, T) -> (B,)


def _pair_vectors(names, values):
    """Tensors of one shape (B,): Tensors as given (a policy's, with its graph), arrays and
    lists as constants (a reference's). Lists become float32, arrays keep their dtype."""
    tensors = [v if isinstance(v, Tensor) else Tensor(v) for v in values]
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1 or len(tensors[0].shape) != 1:
        listed = ", ".join(f"{n} {t.shape}" for n, t in zip(names, tensors))
        raise ValueError(f"dpo_loss: expected one (B,) vector each, got {listed}")
    return tensors


def _lengths(lengths, name, like):
    """Completion lengths (B,) as an array of `like`'s dtype and device (integer lengths
    would promote a float32 division to float64)."""
    lengths = to_numpy(as_array(lengths))
    if lengths.shape != like.shape:
        raise ValueError(f"dpo_loss: {name} has shape {lengths.shape}, the log-probs "
                         f"{like.shape}")
    if (lengths < 1).any():
        raise ValueError(f"dpo_loss: {name} holds a length below 1: every completion needs "
                         "at least one token")
    return _device_array(lengths, like)


def _device_array(values, like):
    """Host values on the Tensor `like`'s device, in its dtype."""
    return array_module(like.data).asarray(values).astype(like.dtype)


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1,
             loss_type="sigmoid", label_smoothing=0.0, chosen_lengths=None,
             rejected_lengths=None):
    """DPO's loss per pair and the implicit rewards, as TRL's DPOTrainer computes them.

    Inputs are (B,) summed log-probs (sequence_logps): the policy's as Tensors (gradients
    flow into them), the reference's as arrays (constants). All four share one float dtype;
    float32 in, float32 out.
    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); the rewards have no
    gradient.

    With h = (pi_c - ref_c) - (pi_r - ref_r) and eps = label_smoothing:
      sigmoid  -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
               DPO's eq. 7, -log sigmoid(beta h), at eps = 0. eps > 0 is cDPO: the label
               is flipped with probability eps, so the loss is the expectation over both
               orders. (trl 1.x ignores label_smoothing here and uses it in "robust"
               only; at eps = 0 the two agree.)
      hinge    max(0, 1 - beta h)                       RSO's hinge-norm: SLiC's hinge
               on the log-ratios to the reference instead of the raw log-probs
      ipo      (h' - 1 / (2 beta))^2                    IPO's eq. 17, with tau = beta
               where h' uses log-probs divided by the completion's length (chosen_lengths,
               rejected_lengths: required). IPO's h is a sequence-level difference; summed
               over tokens it grows with length, while 1/(2 beta) does not. TRL normalises by
               the number of completion tokens, which the IPO authors confirmed is the form
               behind their results; so do we.
      robust   ((1 - eps)(-log sigmoid(beta h)) - eps(-log sigmoid(-beta h))) / (1 - 2 eps)
               Robust DPO's unbiased loss under label noise eps: its expectation over
               flipped labels is the clean DPO loss.
    hinge and ipo take no label_smoothing.

    Implicit rewards (DPO section 5): r(x, y) = beta (log pi_theta(y|x) - log pi_ref(y|x)),
    from the summed (not length-normalised) log-ratios, as TRL logs them for every loss.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"dpo_loss: loss_type={loss_type!r}; use one of {LOSS_TYPES}")
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta={beta} must be > 0 (it scales the log-ratios; IPO "
                         "divides by it)")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing={label_smoothing} must be in [0, 0.5): "
                         "it is the probability that a preference label is flipped")
    if label_smoothing and loss_type in ("hinge", "ipo"):
        raise ValueError(f"dpo_loss: label_smoothing has no effect on loss_type={loss_type!r} "
                         "(only 'sigmoid' and 'robust' use it); leave it at 0")
    if loss_type == "ipo" and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError("dpo_loss: loss_type='ipo' needs chosen_lengths and rejected_lengths"
                         " (completion tokens per row): IPO's log-probs are divided by them")
    pi_c, pi_r, ref_c, ref_r = _pair_vectors(
        ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps"),
        (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps))
    chosen_logratios = pi_c - ref_c  # log pi_theta(y_w|x) / pi_ref(y_w|x), (B,)
    rejected_logratios = pi_r - ref_r  # log pi_theta(y_l|x) / pi_ref(y_l|x), (B,)

    if loss_type == "ipo":
        n_c = _lengths(chosen_lengths, "chosen_lengths", pi_c)
        n_r = _lengths(rejected_lengths, "rejected_lengths", pi_r)
        h = chosen_logratios / n_c - rejected_logratios / n_r  # per-token h', (B,)
        diff = h - 1.0 / (2.0 * beta)
        losses = diff * diff  # (h' - 1/(2 tau))^2
    else:
        h = chosen_logratios - rejected_logratios  # (B,)
        eps = label_smoothing
        if loss_type == "sigmoid":
            losses = -(1.0 - eps) * logsigmoid(beta * h) - eps * logsigmoid(-beta * h)
        elif loss_type == "hinge":
            losses = (1.0 - beta * h).relu()
        else:  # robust
            losses = (-(1.0 - eps) * logsigmoid(beta * h)
                      + eps * logsigmoid(-beta * h)) / (1.0 - 2.0 * eps)

    chosen_rewards = Tensor(beta * chosen_logratios.data)  # detached: no graph
    rejected_rewards = Tensor(beta * rejected_logratios.data)
    return losses, chosen_rewards, rejected_rewards


def _rewards(value, name):
    """(B,) rewards from a Tensor or array of shape (B,) or (B, 1) (a reward model's logits)."""
    t = value if isinstance(value, Tensor) else Tensor(value)
    if len(t.shape) == 2 and t.shape[1] == 1:
        t = t.reshape(-1)  # (B, 1) -> (B,)
    if len(t.shape) != 1:
        raise ValueError(f"{name} must have shape (B,) or (B, 1), got {t.shape}")
    return t


def reward_loss(chosen_rewards, rejected_rewards, margin=None, center_rewards_coefficient=None):
    """The reward model's pairwise loss, a scalar, as TRL's RewardTrainer computes it:

        mean_b -log sigmoid(r_c - r_r - m)  +  c mean_b (r_c + r_r)^2

    The first term is the Bradley-Terry likelihood of the human's choice (InstructGPT eq. 1;
    Llama 2's eq. 2 with a margin m >= 0 that asks for a larger gap on clearly ranked
    pairs). The second, with c = center_rewards_coefficient (TRL recommends 0.01), pulls the
    rewards towards mean 0: Bradley-Terry sees differences only, so the level would drift.
    chosen_rewards, rejected_rewards: (B,) or (B, 1) (the classifier's logits); margin: (B,)
    or a number.
    """
    r_c, r_r = _rewards(chosen_rewards, "chosen_rewards"), _rewards(rejected_rewards,
                                                                    "rejected_rewards")
    if r_c.shape != r_r.shape:
        raise ValueError(f"reward_loss: chosen_rewards {r_c.shape} and rejected_rewards "
                         f"{r_r.shape} differ")
    diff = r_c - r_r  # (B,)
    if margin is not None:
        m = _device_array(to_numpy(as_array(margin)), r_c)  # data: no gradient
        if m.shape not in ((), r_c.shape):
            raise ValueError(f"reward_loss: margin has shape {m.shape}, rewards {r_c.shape}")
        diff = diff - m
    loss = -logsigmoid(diff).mean()
    if center_rewards_coefficient is not None:
        total = r_c + r_r
        loss = loss + center_rewards_coefficient * (total * total).mean()
    return loss


def preference_metrics(chosen_rewards, rejected_rewards):
    """{TRL's metric name: Python float} for a batch of implicit (DPO) or model rewards:
    rewards/chosen and rewards/rejected (means), rewards/accuracies (the fraction of pairs
    ranked right, r_c > r_r), rewards/margins (mean r_c - r_r)."""
    c = to_numpy(as_array(chosen_rewards)).astype(np.float64).reshape(-1)
    r = to_numpy(as_array(rejected_rewards)).astype(np.float64).reshape(-1)
    if c.shape != r.shape:
        raise ValueError(f"preference_metrics: {c.shape} chosen and {r.shape} rejected rewards")
    return {
        "rewards/chosen": float(c.mean()),
        "rewards/rejected": float(r.mean()),
        "rewards/accuracies": float((c > r).mean()),
        "rewards/margins": float((c - r).mean()),
    }
