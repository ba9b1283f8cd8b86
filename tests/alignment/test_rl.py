"""npplm.alignment.rl: each piece of PPO against a direct transcription of its formula.

Hypothesis draws (B, n) batches with right-padded masks (each row real up to its length,
as a response is up to its EOS); the transcriptions are written the plainest way (loops,
the sum form of GAE), the implementations the fast way. The clipped losses are also checked
by float64 finite differences.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autograd import Tensor, gradcheck
from npplm.alignment import gae, rl


@st.composite
def episodes(draw, max_b=4, max_n=7):
    """(rewards, values, mask, seed): float64 (B, n) rows, each real up to its length >= 1."""
    B = draw(st.integers(1, max_b))
    n = draw(st.integers(1, max_n))
    lengths = draw(st.lists(st.integers(1, n), min_size=B, max_size=B))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    mask = (np.arange(n) < np.array(lengths)[:, None]).astype(np.int64)
    return rng.normal(size=(B, n)), rng.normal(size=(B, n)), mask, rng


def gae_transcribed(rewards, values, mask, gamma, lam):
    """A_t = sum_{l >= 0} (gamma lam)^l delta_{t+l} over each row's real steps, with
    delta_t = r_t + gamma V_{t+1} - V_t and V = 0 past the last real step."""
    B, n = rewards.shape
    advantages = np.zeros((B, n))
    for b in range(B):
        T = int(mask[b].sum())
        v = list(values[b, :T]) + [0.0]
        deltas = [rewards[b, t] + gamma * v[t + 1] - v[t] for t in range(T)]
        for t in range(T):
            advantages[b, t] = sum((gamma * lam) ** k * deltas[t + k] for k in range(T - t))
    return advantages


def test_gae_of_a_single_final_reward_is_lam_powers():
    # r = [0, 0, 1], V = 0, gamma = 1: delta = r; A_2 = 1, A_1 = lam, A_0 = lam^2.
    lam = 0.9
    advantages, returns = gae(np.array([[0.0, 0.0, 1.0]]), np.zeros((1, 3)), gamma=1.0, lam=lam)
    np.testing.assert_allclose(advantages, [[lam**2, lam, 1.0]], atol=1e-15)
    np.testing.assert_allclose(returns, advantages)  # V = 0


@given(episodes(), st.floats(0, 1), st.floats(0, 1))
def test_gae_equals_its_sum_form(batch, gamma, lam):
    rewards, values, mask, _ = batch
    advantages, returns = gae(rewards, values, gamma=gamma, lam=lam, mask=mask)
    expected = gae_transcribed(rewards, values, mask, gamma, lam)
    np.testing.assert_allclose(advantages, expected, atol=1e-10)
    np.testing.assert_allclose(returns, np.where(mask, expected + values, 0), atol=1e-10)
    assert (advantages[mask == 0] == 0).all() and (returns[mask == 0] == 0).all()


def test_gae_keeps_float32_and_names_bad_input():
    a, r = gae(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))
    assert a.dtype == r.dtype == np.float32
    with pytest.raises(ValueError, match=r"rewards \(2, 3\) and values \(2, 4\)"):
        gae(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="gamma=1.5"):
        gae(np.ones((1, 2)), np.ones((1, 2)), gamma=1.5)


@given(episodes(max_b=5))
def test_whiten_transcribed(batch):
    x, _, mask, _ = batch
    real = x[mask == 1]
    if real.size < 2:
        with pytest.raises(ValueError, match="at least 2"):
            rl.whiten(x, mask)
        return
    mean, std = real.mean(), math.sqrt(real.var(ddof=1) + 1e-8)
    np.testing.assert_allclose(rl.whiten(x, mask), np.where(mask, (x - mean) / std, 0),
                               atol=1e-10)
    np.testing.assert_allclose(rl.whiten(x, mask, shift_mean=False),
                               np.where(mask, (x - mean) / std + mean, 0), atol=1e-10)
    assert rl.whiten(x.astype(np.float32), mask).dtype == np.float32


@given(episodes())
def test_kl_estimators(batch):
    logps, ref, _, _ = batch
    logps, ref = -np.abs(logps), -np.abs(ref)  # log-probs are <= 0
    np.testing.assert_array_equal(rl.kl_estimate(logps, logps, "k1"), 0)
    np.testing.assert_array_equal(rl.kl_estimate(logps, logps, "k3"), 0)
    np.testing.assert_allclose(rl.kl_estimate(logps, ref, "k1"), logps - ref)
    log_r = ref - logps  # k3 = (r - 1) - log r, r = pi_ref / pi
    np.testing.assert_allclose(rl.kl_estimate(logps, ref, "k3"), np.exp(log_r) - 1 - log_r,
                               atol=1e-12)
    assert (rl.kl_estimate(logps, ref, "k3") >= 0).all()
    with pytest.raises(ValueError, match="estimator='k2'"):
        rl.kl_estimate(logps, ref, "k2")


def test_k1_and_k3_estimate_the_kl_of_two_distributions():
    # Sampling from pi, both estimators average to KL(pi || pi_ref) = sum pi log(pi / pi_ref).
    pi, ref = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.5, 0.3])
    exact = float((pi * np.log(pi / ref)).sum())
    draws = np.random.default_rng(0).choice(3, size=200_000, p=pi)
    for estimator in rl.KL_ESTIMATORS:
        estimate = rl.kl_estimate(np.log(pi[draws]), np.log(ref[draws]), estimator).mean()
        assert estimate == pytest.approx(exact, abs=0.005)


@given(episodes(), st.floats(0, 1))
def test_token_rewards_put_the_score_on_the_last_real_token(batch, kl_coef):
    kl, _, mask, rng = batch
    scores = rng.normal(size=len(mask))
    rewards = rl.token_rewards(scores, kl, mask, kl_coef)
    expected = np.where(mask, -kl_coef * kl, 0)
    for b in range(len(mask)):
        expected[b, int(mask[b].sum()) - 1] += scores[b]
    np.testing.assert_allclose(rewards, expected, atol=1e-5)
    assert rewards.dtype == np.float32


def policy_loss_transcribed(logps, old, adv, mask, eps):
    ratio = np.exp(logps - old)
    losses = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - eps, 1 + eps))
    return (losses * mask).sum() / mask.sum()


def value_loss_transcribed(v, old, returns, mask, eps):
    clipped = np.clip(v, old - eps, old + eps)
    losses = np.maximum((v - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * (losses * mask).sum() / mask.sum()


@given(episodes(), st.floats(0.05, 0.5))
def test_clipped_losses_transcribed(batch, eps):
    a, b, mask, rng = batch
    logps, old = -np.abs(a) * 0.5, -np.abs(a + 0.3 * b) * 0.5
    adv = rng.normal(size=a.shape)
    loss, metrics = rl.policy_loss(Tensor(logps), old, adv, mask, eps)
    assert loss.item() == pytest.approx(policy_loss_transcribed(logps, old, adv, mask, eps),
                                        rel=1e-10, abs=1e-12)
    ratio = np.exp(logps - old)
    cut = (-adv * np.clip(ratio, 1 - eps, 1 + eps)) > (-adv * ratio)
    assert metrics["policy/clipfrac"] == pytest.approx((cut * mask).sum() / mask.sum())
    assert metrics["policy/approxkl"] == pytest.approx(
        (0.5 * (logps - old) ** 2 * mask).sum() / mask.sum())
    v, old_v, returns = a, a + rng.normal(size=a.shape) * 0.3, b
    loss, metrics = rl.value_loss(Tensor(v), old_v, returns, mask, eps)
    assert loss.item() == pytest.approx(value_loss_transcribed(v, old_v, returns, mask, eps),
                                        rel=1e-10, abs=1e-12)
    assert metrics["val/vpred"] == pytest.approx((v * mask).sum() / mask.sum())


@settings(max_examples=25)
@given(episodes())
def test_clipped_losses_gradients(batch):
    a, b, mask, rng = batch
    old, adv = -np.abs(b) * 0.5, rng.normal(size=a.shape)
    # Keep the ratio away from the clip's corners, where the loss has no derivative.
    logps = old + rng.choice([-0.5, 0.05, 0.5], size=a.shape) + rng.uniform(-0.02, 0.02, a.shape)
    assert gradcheck(lambda x: rl.policy_loss(x, old, adv, mask, 0.2)[0], logps)
    old_v = rng.normal(size=a.shape)
    v = old_v + rng.choice([-0.5, 0.05, 0.5], size=a.shape)
    returns = v + rng.choice([-1.0, 1.0], size=a.shape) * rng.uniform(0.1, 1, a.shape)
    assert gradcheck(lambda x: rl.value_loss(x, old_v, returns, mask, 0.2)[0], v)


def test_losses_at_the_rollout_policy():
    # ratio = 1: the clipped and unclipped terms agree, nothing is clipped, approxkl = 0,
    # and the policy loss is -mean(A).
    logps = -np.abs(np.random.default_rng(1).normal(size=(3, 4))).astype(np.float32)
    adv = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    mask = np.ones((3, 4))
    loss, metrics = rl.policy_loss(Tensor(logps), logps, adv, mask)
    assert metrics == {"policy/clipfrac": 0.0, "policy/approxkl": 0.0}
    assert loss.item() == pytest.approx(-adv.mean(), rel=1e-6)
    assert loss.dtype == np.float32


def test_adaptive_kl_transcribed():
    # Ziegler et al.: e = clip(KL / target - 1, -0.2, 0.2); beta *= 1 + e n / horizon.
    controller, beta = rl.AdaptiveKL(0.1, target=6.0, horizon=100), 0.1
    for kl, n in [(12.0, 10), (6.6, 10), (3.0, 20), (5.7, 5), (0.0, 10)]:
        controller.update(kl, n)
        beta *= 1 + min(max(kl / 6.0 - 1, -0.2), 0.2) * n / 100
        assert controller.value == pytest.approx(beta, rel=1e-15)
    fixed = rl.FixedKL(0.05)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05
    with pytest.raises(ValueError, match="target=0"):
        rl.AdaptiveKL(0.1, target=0, horizon=10)


def test_entropy_transcribed():
    z = np.random.default_rng(0).normal(size=(2, 3, 5))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(rl.entropy(z), -(p * np.log(p)).sum(-1), atol=1e-12)
    restricted = np.where(np.arange(5) < 2, z, -np.inf)  # top-2: -inf outside
    q = np.exp(z[..., :2]) / np.exp(z[..., :2]).sum(-1, keepdims=True)
    np.testing.assert_allclose(rl.entropy(restricted), -(q * np.log(q)).sum(-1), atol=1e-12)
