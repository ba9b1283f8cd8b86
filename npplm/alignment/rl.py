"""The pieces of PPO for language models, each one formula: what ppo.py assembles.

An episode is one response y = (y_1 .. y_n) to a prompt x. Step t is the choice of token y_t
in the state (x, y_<t); the policy's per-token log-probs log pi(y_t | x, y_<t) are (B, n)
arrays, one row per episode, with a mask (B, n) that is 1 on the response's real tokens (its
EOS included) and 0 on the padding after it. Every function here takes and gives such
(B, n) rows; masked steps carry nothing.

    kl_estimate        per-token KL(pi || pi_ref) estimates k1, k3 (Schulman's "Approximating
                       KL divergence", 2020)
    token_rewards      InstructGPT's reward r(x, y) - beta KL, laid out per token: the
                       penalty on every step, the score on the last real one
    gae                generalised advantage estimation (Schulman et al., 2016)
    whiten             shift to mean 0, scale to variance 1 over the real steps
    policy_loss        PPO's clipped surrogate (Schulman et al., 2017, eq. 7)
    value_loss         the critic's clipped squared error (as OpenAI's baselines / TRL)
    entropy            H(pi(. | state)) per step, a metric
    FixedKL, AdaptiveKL   the KL coefficient beta, constant or Ziegler et al.'s controller

Papers:
  PPO     Schulman, Wolski, Dhariwal, Radford and Klimov, "Proximal Policy Optimization
          Algorithms", arXiv:1707.06347.
  GAE     Schulman, Moritz, Levine, Jordan and Abbeel, "High-Dimensional Continuous Control
          Using Generalized Advantage Estimation", arXiv:1506.02438, eq. 16.
  KL      Ziegler, Stiennon, Wu, Brown, Radford, Amodei, Christiano and Irving, "Fine-Tuning
          Language Models from Human Preferences", arXiv:1909.08593, section 2.2 (the reward
          with the KL penalty, the adaptive coefficient); Ouyang et al., "Training language
          models to follow instructions with human feedback" (InstructGPT),
          arXiv:2203.02155, eq. 2.
Reference implementation: TRL's PPOTrainer (trl/trainer/ppo_trainer.py in trl 0.11 - 0.19,
then `trl.experimental`, since removed), whose formulas these are, less its bugs (ppo.py).
"""

import math

import numpy as np

from autograd import clip, exp, maximum

KL_ESTIMATORS = ("k1", "k3")


def masked_mean(x, mask):
    """The mean of x over the entries where mask is 1: a (B, n) NumPy array or Tensor, mask
    a (B, n) 1/0 array (in x's dtype, so float32 stays float32)."""
    mask = np.asarray(mask).astype(x.dtype)
    return (x * mask).sum() / max(float(mask.sum()), 1.0)


def whiten(x, mask, shift_mean=True, eps=1e-8):
    """(x - mean) / sqrt(var + eps) over the masked entries of the (B, n) array x, 0 on the
    others; the variance with Bessel's correction, as TRL's masked_whiten. shift_mean=False
    keeps the mean (TRL whitens rewards that way). Float32 stays float32."""
    x = np.asarray(x)
    mask = np.asarray(mask, dtype=bool)
    n = int(mask.sum())
    if n < 2:
        raise ValueError(f"whiten: {n} real step(s); at least 2 are needed for a variance")
    values = x[mask].astype(np.float64)
    mean, var = values.mean(), values.var(ddof=1)
    out = (x - mean) / math.sqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return np.where(mask, out, 0).astype(x.dtype)


def kl_estimate(logps, ref_logps, estimator="k1"):
    """Per-token estimates of KL(pi || pi_ref) from the log-probs of the sampled tokens, (B, n).

    With log r = log pi_ref(y_t) - log pi(y_t) and y_t drawn from pi:
        k1 = -log r = log pi - log pi_ref      unbiased; one sample can be negative
        k3 = (r - 1) - log r                   unbiased and >= 0 (it is KL's Bregman form)
    Both are exactly 0 where pi = pi_ref. The sum over a response is the KL of the whole
    sequence (the chain rule of KL), which is what InstructGPT's penalty bounds.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimate: estimator={estimator!r}; use one of {KL_ESTIMATORS}")
    diff = np.asarray(logps) - np.asarray(ref_logps)  # log pi - log pi_ref
    if estimator == "k1":
        return diff
    log_r = -diff
    return np.expm1(log_r) - log_r  # (r - 1) - log r, exact for small |log r|


def last_positions(mask):
    """(B,) the index of each row's last real step (mask 1), from a (B, n) 1/0 mask that is
    1 up to some point and 0 after it; ValueError for a row with no real step."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any(axis=1).all():
        raise ValueError("a response has no token at all: every episode needs a step to score")
    n = mask.shape[1]
    return n - 1 - np.argmax(mask[:, ::-1], axis=1)  # (B,)


def token_rewards(scores, kl, mask, kl_coef):
    """InstructGPT's reward, per token: r_t = -kl_coef kl_t on every real step, plus the
    score of the whole response on its last real step (the EOS when one was generated),
    never on padding. Summed over a response: score - kl_coef KL(pi || pi_ref), eq. 2.

    scores (B,), kl (B, n) per-token estimates, mask (B, n) 1/0; returns (B, n) float32
    (0 on padding). TRL placed the score at the first padding position after the response
    (issues #1893, #3750), so a response of the full length lost its score altogether."""
    mask = np.asarray(mask, dtype=bool)
    rewards = np.where(mask, -kl_coef * np.asarray(kl, dtype=np.float64), 0.0)  # (B, n)
    rows = np.arange(mask.shape[0])
    rewards[rows, last_positions(mask)] += np.asarray(scores, dtype=np.float64)
    return rewards.astype(np.float32)


def gae(rewards, values, gamma=1.0, lam=0.95, mask=None):
    """Generalised advantage estimation: (advantages, returns), each (B, n).

        delta_t = r_t + gamma V(s_{t+1}) - V(s_t)                 the TD error
        A_t     = sum_{l >= 0} (gamma lam)^l delta_{t+l}           (GAE eq. 16)
                = delta_t + gamma lam A_{t+1}                      (computed backwards)
        returns = A + V                                            the critic's targets

    rewards, values (B, n); mask (B, n) 1 on real steps (None: all). A masked step carries
    nothing: its reward, value, advantage and return are 0, and the episode before it ends
    there (V after the last real step is 0: the response is over). lam = 1 gives the Monte
    Carlo return minus V; lam = 0 the one-step TD error. Float32 stays float32.
    """
    rewards = np.asarray(rewards)
    values = np.asarray(values)
    if rewards.ndim != 2 or rewards.shape != values.shape:
        raise ValueError(f"gae: rewards {rewards.shape} and values {values.shape} must both be "
                         "(B, n)")
    if not (0 <= gamma <= 1 and 0 <= lam <= 1):
        raise ValueError(f"gae: gamma={gamma} and lam={lam} must lie in [0, 1]")
    real = np.ones(rewards.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if real.shape != rewards.shape:
        raise ValueError(f"gae: mask {real.shape} and rewards {rewards.shape} differ")
    r = np.where(real, rewards, 0).astype(np.float64)
    v = np.where(real, values, 0).astype(np.float64)
    B, n = r.shape
    advantages = np.zeros((B, n))
    next_value, next_advantage = np.zeros(B), np.zeros(B)
    for t in reversed(range(n)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        advantages[:, t] = np.where(real[:, t], delta + gamma * lam * next_advantage, 0.0)
        next_value, next_advantage = v[:, t], advantages[:, t]
    dtype = np.result_type(rewards.dtype, values.dtype)
    return advantages.astype(dtype), (advantages + v).astype(dtype)


def policy_loss(logps, old_logps, advantages, mask, cliprange=0.2):
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), to minimise:

        ratio_t = pi(y_t) / pi_old(y_t) = exp(log pi - log pi_old)
        L       = mean_t max(-A_t ratio_t, -A_t clip(ratio_t, 1 - eps, 1 + eps))

    (eq. 7's min of the two objectives is the max of the two losses). The mean is over the
    real steps of the minibatch. logps (B, n) a Tensor (the policy now, with its graph);
    old_logps and advantages (B, n) arrays from the rollout. Returns (loss, metrics): the
    metrics are policy/clipfrac (the fraction of steps where the clipped term is the larger,
    i.e. whose gradient is cut) and policy/approxkl (0.5 mean (log ratio)^2, TRL's), floats.
    """
    log_ratio = logps - old_logps  # (B, n)
    ratio = exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * clip(ratio, lo=1.0 - cliprange, hi=1.0 + cliprange)
    loss = masked_mean(maximum(unclipped, clipped), mask)
    metrics = {
        "policy/clipfrac": float(masked_mean((clipped.data > unclipped.data).astype(np.float64),
                                             mask)),
        "policy/approxkl": float(masked_mean(0.5 * log_ratio.data.astype(np.float64) ** 2,
                                             mask)),
    }
    return loss, metrics


def value_loss(values, old_values, returns, mask, cliprange_value=0.2):
    """The critic's loss, its change clipped around the rollout's values as the policy's is:

        V_clip = clip(V, V_old - eps, V_old + eps)
        L      = 1/2 mean_t max((V - R_t)^2, (V_clip - R_t)^2)

    values (B, n) a Tensor (the critic now); old_values, returns (B, n) arrays. Returns
    (loss, metrics): val/clipfrac (where the clipped error is the larger), val/vpred (the
    mean predicted value)."""
    clipped = clip(values, lo=old_values - cliprange_value, hi=old_values + cliprange_value)
    err, err_clipped = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(maximum(err, err_clipped), mask)
    metrics = {
        "val/clipfrac": float(masked_mean((err_clipped.data > err.data).astype(np.float64),
                                          mask)),
        "val/vpred": float(masked_mean(values.data.astype(np.float64), mask)),
    }
    return loss, metrics


def entropy(logits):
    """H(softmax(logits)) per row, (...): logsumexp(z) - sum_v p_v z_v, in float64 (a metric,
    no gradient); logits (..., V) an array, -inf on tokens outside a sampling set."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)  # 0 where z = -inf (a token outside a top-k / top-p set)
    total = p.sum(axis=-1)
    pz = np.where(p > 0, p * np.where(p > 0, z, 0.0), 0.0)
    return np.log(total) - pz.sum(axis=-1) / total


class FixedKL:
    """A constant KL coefficient beta."""

    def __init__(self, kl_coef):
        if not (math.isfinite(kl_coef) and kl_coef >= 0):
            raise ValueError(f"kl_coef={kl_coef} must be a number >= 0")
        self.value = float(kl_coef)

    def update(self, current_kl, n_steps):
        pass

    def state(self):
        return {"value": self.value}

    def load(self, state):
        self.value = float(state["value"])


class AdaptiveKL(FixedKL):
    """Ziegler et al. (2019), section 2.2: beta follows the KL towards a target,

        e      = clip(KL / KL_target - 1, -0.2, 0.2)
        beta <- beta (1 + K_beta e),   K_beta = n_steps / horizon

    KL the mean KL of the batch just seen (summed over each response), n_steps the episodes
    in it: beta grows while the policy drifts further than the target, shrinks while it
    stays closer, by at most 20% x n_steps / horizon per batch."""

    def __init__(self, kl_coef, target, horizon):
        super().__init__(kl_coef)
        if not (target > 0 and horizon > 0):
            raise ValueError(f"adaptive KL: target={target} and horizon={horizon} must be > 0")
        self.target, self.horizon = float(target), float(horizon)

    def update(self, current_kl, n_steps):
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_steps / self.horizon
