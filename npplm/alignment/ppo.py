"""RLHF with PPO: the policy improves its own samples against a judge, held near where it began.

The source's RLHF (InstructGPT's third step, Ouyang et al. 2022, eq. 2) maximises

    objective(phi) = E_{x ~ prompts, y ~ pi_phi(.|x)} [ r(x, y) - beta log(pi_phi(y|x)
                                                                      / pi_ref(y|x)) ]
                     + gamma_ptx E_{x ~ pre-training} [ log pi_phi(x) ]        (PPO-ptx)

r the reward model (or any judge), pi_ref the starting (SFT) model, frozen: the source's
objective (1.1) in its InstructGPT notes, and L_PPO = E[r_phi(x, y) - beta KL(pi_theta ||
pi_ref)] in its RLHF section (3.8.6). As the source lays the problem out for RL: the state
is the prompt and the output so far, the action the next token, the reward 0 at every step
but the last (where the response ends, at EOS) plus the KL penalty, the discount 1
(gamma = 1 here by default). One iteration:

    1. rollout    B prompts, left-padded; the policy samples a response to each with the
                  cached `generate` (temperature, top_k, top_p, stop at EOS);
                  mask (B, n) is 1 on each response's tokens up to its EOS, 0 after.
    2. score      the judge reads (prompt, response text): scores (B,); optional penalty
                  for a response that never ended, clipping.
    3. reference  one forward each of the policy (log pi_old), the reference (log pi_ref)
                  and the critic (V_old) over prompt + response, no gradients:
                  log-probs (B, n) of the sampled tokens under the distribution they were
                  drawn from (logits / temperature, restricted to the top_k / top_p set).
    4. advantages per-token reward r_t = -beta kl_t, plus the score on the last real token
                  (rl.token_rewards); GAE over the response (rl.gae); advantages whitened.
    5. update     ppo_epochs passes over the B episodes in minibatches: the clipped policy
                  loss (rl.policy_loss) + vf_coef x the clipped value loss (rl.value_loss)
                  [+ ptx_coef x the LM loss of a pre-training batch]; clip, AdamW step.
    6. beta       fixed, or Ziegler et al.'s adaptive controller (rl.AdaptiveKL).

Choices, and the known traps they avoid:
  - The critic is a separate model (InstructGPT, TRL): a *ForSequenceClassification whose
    score head reads every position (token_scores), started from the reward model when its
    tokenizer is the policy's (InstructGPT initialises the value function from the RM), else
    from the policy's backbone with a fresh head. A shared trunk would halve the compute
    but let the value loss pull the policy's features.
  - The score goes on the last real response token (the EOS when one was generated), never
    on padding: TRL put it at the first padding position (#1893, #3750).
  - Log-probs are recomputed with the sampling settings used to generate: a temperature or
    top-k that differs between sampling and scoring gives a biased, even negative, KL.
    The allowed top_k / top_p set is fixed at rollout time (from the policy that sampled)
    and applied to the policy, old and new, and to the reference alike.
  - EOS is the tokenizer's end of turn, kept as a response token even where the pad id is
    the EOS id (GPT-2, SmolLM2): padding is known by position, so the policy can learn to stop.
  - Dropout is off in every model (TRL does the same): with it, the first minibatch's ratio
    would not be 1, and the rollout's log-probs would be of another function.
  - Rollouts, minibatch orders and pre-training rows are drawn from generators seeded by
    (seed, iteration, ...), and the checkpoint holds the policy, the critic, both
    optimizers and beta: a killed run resumes where it stopped and goes on as the
    uninterrupted one would.

Metrics, named as TRL names them: objective/kl (sum over the response of the chosen KL
estimator, mean over episodes), objective/scores, objective/non_score_reward,
objective/rlhf_reward, objective/kl_coef, policy/approxkl, policy/clipfrac, policy/entropy,
loss/policy, loss/value, val/vpred, val/clipfrac, val/ratio, lr, episode; plus the time of
each phase and the rollout's tokens/s, and held-out eval/scores and eval/kl at intervals.
"""

import dataclasses
import math
import pathlib
import time
from dataclasses import dataclass

import numpy as np

from autograd import Tensor, no_grad, to_numpy
from npplm.alignment import rl
from npplm.alignment.data import encode_prompt, read_examples
from npplm.alignment.judges import RewardModelJudge, check_scores, resolve_judge
from npplm.alignment.stage import load_policy, plot_metrics
from npplm.generation.sampling import allowed_tokens, check_sampling
from npplm.layers import IGNORE_INDEX, cross_entropy
from npplm.training.checkpointing import (
    check_same_run,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    rng_states,
    save_checkpoint,
)
from npplm.training.data import BlockOrder
from npplm.training.optim import AdamW, clip_grad_norm, decay_groups
from npplm.training.run_folder import claimed
from npplm.training.trainer import MetricsFile

DEFAULT_PROMPTS = "the standard library's code or questions"  # `data=None` in a request


@dataclass(frozen=True)
class PPOConfig:
    """How to run PPO; the defaults fit the small GPT-2 of `npplm train` on two cores."""

    steps: int = 30  # iterations: a rollout batch and its updates each
    batch_size: int = 32  # B: episodes (prompts) per rollout
    mini_batch_size: int = 8  # episodes per gradient step
    ppo_epochs: int = 2  # passes over each rollout batch
    lr: float = 1e-4  # the policy's AdamW learning rate, constant
    critic_lr: float | None = None  # None: lr
    weight_decay: float = 0.0
    clip_grad_norm: float | None = 1.0  # per model
    max_new_tokens: int = 32
    temperature: float = 1.0  # sampling, and the log-probs of the samples
    top_k: int | None = None
    top_p: float | None = None
    kl_coef: float = 0.05  # beta; the adaptive controller's start
    kl_estimator: str = "k1"  # the per-token KL in the reward: k1 or k3
    kl_target: float | None = None  # the adaptive controller's target KL (None: fixed beta)
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = None  # subtracted from the score of a response
    score_clip: float | None = None  # scores clipped to [-c, c]
    ptx_coef: float = 0.0  # InstructGPT's gamma: the pre-training term's weight
    ptx_batch_size: int = 4  # pre-training rows per minibatch
    eval_every: int = 10  # iterations between held-out evaluations (and at 0 and the end)
    eval_prompts: int = 64
    save_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens",
                     "eval_prompts", "ptx_batch_size", "kl_horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PPOConfig.{name}={value!r} must be a positive integer")
        for name in ("eval_every", "save_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"PPOConfig.{name}={value!r} must be an integer >= 0")
        if self.mini_batch_size > self.batch_size:
            raise ValueError(f"PPOConfig.mini_batch_size={self.mini_batch_size} exceeds "
                             f"batch_size={self.batch_size}")
        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.temperature == 0:
            raise ValueError("PPOConfig.temperature=0 is greedy decoding: PPO needs samples "
                             "from the policy (temperature > 0)")
        for name in ("lr", "cliprange", "cliprange_value"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PPOConfig.{name}={getattr(self, name)} must be > 0")
        for name in ("critic_lr", "clip_grad_norm", "kl_target", "score_clip"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"PPOConfig.{name}={value} must be > 0 or None")
        for name in ("weight_decay", "kl_coef", "vf_coef", "ptx_coef"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"PPOConfig.{name}={value} must be a number >= 0")
        if self.missing_eos_penalty is not None and not math.isfinite(self.missing_eos_penalty):
            raise ValueError(f"PPOConfig.missing_eos_penalty={self.missing_eos_penalty} must "
                             "be a number")
        if self.kl_estimator not in rl.KL_ESTIMATORS:
            raise ValueError(f"PPOConfig.kl_estimator={self.kl_estimator!r}; use one of "
                             f"{rl.KL_ESTIMATORS}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"PPOConfig: gamma={self.gamma} and lam={self.lam} must lie in "
                             "[0, 1]")

    def kl_controller(self):
        if self.kl_target is None:
            return rl.FixedKL(self.kl_coef)
        return rl.AdaptiveKL(self.kl_coef, self.kl_target, self.kl_horizon)


# --- prompts and rollouts --------------------------------------------------------------------

@dataclass
class Prompt:
    """A prompt as the data gave it (for the judge) and its ids (for the policy)."""

    value: object  # a string or a list of chat messages
    ids: np.ndarray  # (P,) int64


def encode_prompts(rows, tokenizer, limit, where="prompts", drop_long=False, log=print):
    """[Prompt] of TRL prompt-only rows, tokenized as TRL does (data.encode_prompt);
    ValueError naming an empty set or a prompt longer than `limit` tokens (the context
    less max_new_tokens), which drop_long (the default prompt sets) drops and counts."""
    prompts, dropped = [], 0
    for i, row in enumerate(rows):
        ids = np.asarray(encode_prompt(tokenizer, row["prompt"]), dtype=np.int64)
        if len(ids) == 0:
            raise ValueError(f"{where}, prompt {i}: it has no token")
        if len(ids) > limit and drop_long:
            dropped += 1
            continue
        if len(ids) > limit:
            raise ValueError(f"{where}, prompt {i} ({row['prompt']!r:.60}) has {len(ids)} "
                             f"tokens; with --max-new-tokens the context leaves room for "
                             f"{limit}: shorten the prompt or lower --max-new-tokens")
        prompts.append(Prompt(row["prompt"], ids))
    if dropped:
        log(f"{where}: dropped {dropped} of {len(rows)} longer than {limit} tokens")
    if not prompts:
        raise ValueError(f"{where}: no prompt at all; RLHF needs prompts to respond to")
    return prompts


def left_pad(rows, pad_id):
    """((B, P) ids, (B, P) 1/0 mask) of 1-D rows, padded on the LEFT (generation's layout)."""
    P = max(len(r) for r in rows)
    ids = np.full((len(rows), P), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), P), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, P - len(r):], mask[i, P - len(r):] = r, 1
    return ids, mask


@dataclass
class Rollout:
    """A batch of episodes: prompts (B, P) left-padded, responses (B, n) with the mask of
    their real tokens (EOS included), and whether each ended with an EOS."""

    prompts: list  # [Prompt]
    ids: np.ndarray  # (B, P)
    mask: np.ndarray  # (B, P)
    response: np.ndarray  # (B, n)
    response_mask: np.ndarray  # (B, n) 1/0
    ended: np.ndarray  # (B,) bool

    def rows(self, idx):
        """The episodes idx as (ids, mask, response, response_mask), trimmed to their width."""
        ids, mask = self.ids[idx], self.mask[idx]
        keep = mask.any(axis=0)  # drop left columns that are padding in every row kept
        n = int(self.response_mask[idx].sum(axis=1).max())
        return ids[:, keep], mask[:, keep], self.response[idx, :n], self.response_mask[idx, :n]


def response_masks(response, eos):
    """((B, n) 1/0 mask of the real tokens, (B,) ended): a row's tokens up to and including
    its first EOS id (all of them when it has none)."""
    is_eos = np.isin(response, list(eos)) if eos else np.zeros(response.shape, bool)
    after = np.cumsum(is_eos, axis=1) - is_eos  # EOS ids strictly before each position
    return (after == 0).astype(np.int64), is_eos.any(axis=1)


def rollout(policy, prompts, eos, pad_id, config, seed):
    """Sample one response per prompt with the cached generate (no gradients)."""
    ids, mask = left_pad([p.ids for p in prompts], pad_id)
    out = policy.generate(ids, config.max_new_tokens, attention_mask=mask,
                          temperature=config.temperature, top_k=config.top_k,
                          top_p=config.top_p, eos_token_id=sorted(eos) or None,
                          pad_token_id=pad_id, seed=seed)
    response = out[:, ids.shape[1]:]  # (B, n), n <= max_new_tokens
    response_mask, ended = response_masks(response, eos)
    return Rollout(prompts, ids, mask, response, response_mask, ended)


def response_texts(tokenizer, rollout):
    """Each response decoded without its EOS and padding."""
    texts = []
    for row, m, ended in zip(rollout.response, rollout.response_mask, rollout.ended):
        n = int(m.sum()) - int(ended)
        texts.append(tokenizer.decode(row[:n].tolist()))
    return texts


# --- the forward passes ----------------------------------------------------------------------

def _joined(ids, mask, response, response_mask):
    return (np.concatenate([ids, response], axis=1),
            np.concatenate([mask, response_mask], axis=1))


def response_logits(model, ids, mask, response, response_mask):
    """(B, n, V) logits over each response token: position P - 1 + t predicts token t."""
    full, full_mask = _joined(ids, mask, response, response_mask)
    P = ids.shape[1]
    return model(full, attention_mask=full_mask).logits[:, P - 1:-1]  # (B, P + n, V) -> (B, n, V)


def sampled_logps(logits, response, response_mask, temperature=1.0, allowed=None):
    """(B, n) log-probs of the sampled tokens under the sampling distribution:
    log_softmax(logits / temperature), restricted to `allowed` (B, n, V) when top_k / top_p
    were used; 0 on padding. logits a Tensor (the gradient flows) or an array."""
    logits = logits if isinstance(logits, Tensor) else Tensor(logits)
    if temperature != 1.0:
        logits = logits / temperature
    if allowed is not None:  # tokens outside the sampling set: far below everything else
        logits = logits + np.where(allowed, 0.0, -1e9).astype(logits.dtype)
    targets = np.where(response_mask != 0, response, IGNORE_INDEX)  # (B, n)
    return -cross_entropy(logits, targets, reduction="none")  # (B, n)


def values_of(critic, ids, mask, response, response_mask):
    """(B, n) the critic's V(s_t) of the state before each response token: position P - 1 + t."""
    full, full_mask = _joined(ids, mask, response, response_mask)
    P = ids.shape[1]
    return critic.token_scores(full, full_mask)[:, P - 1:-1, 0]  # (B, P + n, 1) -> (B, n)


def sampling_set(logits, response, config):
    """(B, n, V) bool, the tokens the sampler could draw (None without top_k / top_p); the
    sampled token is always in it (its logits came from the cached pass, these from a full
    one, which may differ in the last bits)."""
    if config.top_k is None and config.top_p is None:
        return None
    allowed = allowed_tokens(logits, config.temperature, config.top_k, config.top_p)
    np.put_along_axis(allowed, response[..., None], True, axis=-1)
    return allowed


# --- the critic --------------------------------------------------------------------------------

def critic_from(policy, tokenizer, judge, seed=0, log=print):
    """The value model: a copy of the reward model when the judge is one that reads the
    policy's tokens (InstructGPT), else the policy's backbone under a fresh scalar head."""
    from npplm.alignment.reward import reward_model_from

    if isinstance(judge, RewardModelJudge) and same_tokenizer(judge.tokenizer, tokenizer):
        log(f"critic: a copy of the reward model {judge.path}")
        return type(judge.model).from_backbone(judge.model, num_labels=1, seed=seed,
                                               pad_token_id=judge.model.config.pad_token_id)
    log("critic: the policy's backbone with a fresh value head")
    return reward_model_from(policy, tokenizer.pad_id, seed=seed)


def same_tokenizer(a, b, probe="def f(x):\n    return x  # The quick brown fox, 42!"):
    return (a.vocab_size == b.vocab_size
            and list(a.encode(probe).ids) == list(b.encode(probe).ids))


# --- the loop ----------------------------------------------------------------------------------

class PPOTrainer:
    """PPO of `policy` against `judge`, near `ref`, with `critic`; see the module docstring.

    train, val   TRL prompt-only rows ({"prompt": str | messages}); val: the held-out
                 prompts of eval/scores and eval/kl (the first config.eval_prompts)
    judge        judge(prompts, responses) -> scores (judges.py)
    ptx          optional (N, T) int64 pre-training blocks for PPO-ptx (config.ptx_coef)
    drop_long    drop (and count) prompts too long for the context instead of refusing them
    run_dir      where checkpoints, metrics.jsonl and the plots go; None: nothing written
    """

    def __init__(self, policy, ref, critic, tokenizer, judge, train, val, config, *,
                 run_dir=None, ptx=None, progress=False, log=print, run_info=None,
                 drop_long=False):
        from npplm.inference.text import eos_ids

        self.policy, self.ref, self.critic = policy, ref, critic
        self.tokenizer, self.judge, self.config = tokenizer, judge, config
        self.run_dir = None if run_dir is None else pathlib.Path(run_dir)
        self.progress, self.log, self.run_info = progress, log, dict(run_info or {})
        for model in (policy, ref, critic):
            model.eval()  # dropout off everywhere (module docstring)
        self.eos = eos_ids(policy, tokenizer)
        pad = tokenizer.pad_id
        self.pad = int(pad if pad is not None else min(self.eos, default=0))
        limit = policy.context_length - config.max_new_tokens
        if limit < 1:
            raise ValueError(f"--max-new-tokens {config.max_new_tokens} leaves no room for a "
                             f"prompt in the policy's context of {policy.context_length}")
        self.train = encode_prompts(train, tokenizer, limit, "training prompts", drop_long, log)
        self.val = encode_prompts(list(val)[:config.eval_prompts], tokenizer, limit,
                                  "held-out prompts", drop_long, log) if val else []
        if ptx is not None and config.ptx_coef and len(ptx) == 0:
            raise ValueError("PPO-ptx: no pre-training block to mix in")
        self.ptx = ptx
        self.kl = config.kl_controller()
        self.optimizer = AdamW(_groups(policy, config.weight_decay), lr=config.lr)
        self.critic_optimizer = AdamW(_groups(critic, config.weight_decay),
                                      lr=config.critic_lr or config.lr)
        self.order = BlockOrder(len(self.train), seed=config.seed)
        self.step = self.position = self.episodes = 0
        self.history, self.minibatch_metrics = [], []
        self.last_checkpoint, self.resumed_from = None, 0

    # --- one iteration -----------------------------------------------------------------------
    def iteration(self):
        """One rollout batch and its PPO updates; returns the metrics record."""
        cfg, B = self.config, self.config.batch_size
        idx = self.order.indices(self.position, B)
        self.position += B
        prompts = [self.train[i] for i in idx]
        clock = time.perf_counter()
        with no_grad():
            batch = rollout(self.policy, prompts, self.eos, self.pad, cfg,
                            seed=[cfg.seed, 1, self.step])
        t_rollout = time.perf_counter() - clock
        texts = response_texts(self.tokenizer, batch)
        scores = self.scores(prompts, texts, batch.ended)
        t_score = time.perf_counter() - clock - t_rollout
        old_logps, ref_logps, old_values, allowed = self.reference_pass(batch)
        t_reference = time.perf_counter() - clock - t_rollout - t_score

        mask = batch.response_mask  # (B, n)
        beta = self.kl.value
        kl, rewards = self.rewards_of(batch, scores, old_logps, ref_logps)
        advantages, returns = rl.gae(rewards, old_values, cfg.gamma, cfg.lam, mask)
        advantages = rl.whiten(advantages, mask)
        self.minibatch_metrics = self.update(batch, old_logps, old_values, advantages, returns,
                                             allowed)
        t_update = time.perf_counter() - clock - t_rollout - t_score - t_reference

        kl_sums = kl.sum(axis=1)  # (B,) the KL of each response
        self.kl.update(float(kl_sums.mean()), B)
        self.episodes += B
        non_score = (-beta * kl_sums).mean()
        record = {"step": self.step + 1, "episode": self.episodes,
                  "objective/kl": float(kl_sums.mean()),
                  "objective/scores": float(scores.mean()),
                  "objective/non_score_reward": float(non_score),
                  "objective/rlhf_reward": float(scores.mean() + non_score),
                  "objective/kl_coef": beta, "lr": cfg.lr,
                  "response_length": float(mask.sum(axis=1).mean()),
                  "eos_fraction": float(batch.ended.mean())}
        for key in self.minibatch_metrics[0]:
            record[key] = float(np.mean([m[key] for m in self.minibatch_metrics]))
        generated = batch.response.shape[1] * B  # decode steps x rows
        record.update({"time/rollout": t_rollout, "time/score": t_score,
                       "time/reference": t_reference, "time/update": t_update,
                       "rollout_tokens_per_s": generated / max(t_rollout, 1e-9)})
        self.step += 1
        return record

    def scores(self, prompts, texts, ended):
        """The judge's scores (B,), checked, with the configured penalty and clipping."""
        cfg = self.config
        scores = check_scores(self.judge([p.value for p in prompts], texts), len(texts), texts)
        if cfg.missing_eos_penalty is not None:
            scores = scores - np.float32(cfg.missing_eos_penalty) * ~ended
        if cfg.score_clip is not None:
            scores = np.clip(scores, -cfg.score_clip, cfg.score_clip)
        return scores.astype(np.float32)

    def rewards_of(self, batch, scores, logps, ref_logps):
        """(kl, rewards), each (B, n): the per-token KL estimates and InstructGPT's per-token
        reward (rl.token_rewards: -beta kl_t, the score on the last real token), whitened
        when asked (keeping their mean, as TRL)."""
        cfg, mask = self.config, batch.response_mask
        kl = rl.kl_estimate(logps, ref_logps, cfg.kl_estimator) * mask  # (B, n)
        rewards = rl.token_rewards(scores, kl, mask, self.kl.value)  # (B, n)
        if cfg.whiten_rewards:
            rewards = rl.whiten(rewards, mask, shift_mean=False)
        return kl, rewards

    def reference_pass(self, batch):
        """(log pi_old, log pi_ref, V_old) (B, n) float32 arrays, and the sampling sets
        (B, n, V) or None: no-gradient forwards in chunks of mini_batch_size."""
        cfg = self.config
        B, n = batch.response.shape
        out = [np.zeros((B, n), np.float32) for _ in range(3)]
        allowed = None
        with no_grad():
            for lo in range(0, B, cfg.mini_batch_size):
                idx = np.arange(lo, min(lo + cfg.mini_batch_size, B))
                rows = batch.rows(idx)
                m = rows[2].shape[1]
                logits = to_numpy(response_logits(self.policy, *rows).data)  # (b, m, V)
                chunk_allowed = sampling_set(logits, rows[2], cfg)
                if chunk_allowed is not None:
                    if allowed is None:
                        allowed = np.ones((B, n, logits.shape[-1]), dtype=bool)
                    allowed[idx, :m] = chunk_allowed
                ref_logits = to_numpy(response_logits(self.ref, *rows).data)
                for k, array in enumerate((
                        sampled_logps(logits, rows[2], rows[3], cfg.temperature, chunk_allowed),
                        sampled_logps(ref_logits, rows[2], rows[3], cfg.temperature,
                                      chunk_allowed),
                        values_of(self.critic, *rows))):
                    out[k][idx, :m] = to_numpy(array.data).astype(np.float32)
        return (*out, allowed)

    def update(self, batch, old_logps, old_values, advantages, returns, allowed):
        """ppo_epochs passes of minibatch steps; returns each step's metrics."""
        cfg, B = self.config, self.config.batch_size
        metrics = []
        for epoch in range(cfg.ppo_epochs):
            order = np.random.default_rng([cfg.seed, 2, self.step, epoch]).permutation(B)
            for k, lo in enumerate(range(0, B, cfg.mini_batch_size)):
                idx = np.sort(order[lo:lo + cfg.mini_batch_size])
                ids, mask, response, response_mask = batch.rows(idx)
                m = response.shape[1]
                sub = None if allowed is None else allowed[idx, :m]
                logits = response_logits(self.policy, ids, mask, response, response_mask)
                logps = sampled_logps(logits, response, response_mask, cfg.temperature, sub)
                pg_loss, pm = rl.policy_loss(logps, old_logps[idx, :m], advantages[idx, :m],
                                             response_mask, cfg.cliprange)
                values = values_of(self.critic, ids, mask, response, response_mask)
                vf_loss, vm = rl.value_loss(values, old_values[idx, :m], returns[idx, :m],
                                            response_mask, cfg.cliprange_value)
                loss = pg_loss + cfg.vf_coef * vf_loss
                record = {"loss/policy": float(pg_loss.item()),
                          "loss/value": float(vf_loss.item()), **pm, **vm}
                if cfg.ptx_coef and self.ptx is not None:
                    rng = np.random.default_rng([cfg.seed, 3, self.step, epoch, k])
                    rows = self.ptx[rng.choice(len(self.ptx), cfg.ptx_batch_size)]
                    ptx_loss = self.policy(rows, labels=rows).loss
                    loss = loss + cfg.ptx_coef * ptx_loss
                    record["loss/ptx"] = float(ptx_loss.item())
                if not math.isfinite(float(loss.item())):
                    raise FloatingPointError(f"PPO: the loss is {float(loss.item())} at "
                                             f"iteration {self.step + 1}; lower --lr")
                loss.backward()
                for params, optimizer in ((self.optimizer.params, self.optimizer),
                                          (self.critic_optimizer.params, self.critic_optimizer)):
                    norm = clip_grad_norm(params, cfg.clip_grad_norm)
                    if not math.isfinite(norm):
                        raise FloatingPointError(f"PPO: a gradient norm is {norm} at "
                                                 f"iteration {self.step + 1}; lower --lr")
                    optimizer.step()
                    optimizer.zero_grad()
                z = to_numpy(logits.data) / cfg.temperature
                if sub is not None:
                    z = np.where(sub, z, -np.inf)
                log_ratio = to_numpy(logps.data) - old_logps[idx, :m]
                record["policy/entropy"] = float(rl.masked_mean(rl.entropy(z), response_mask))
                record["val/ratio"] = float(rl.masked_mean(np.exp(log_ratio.astype(np.float64)),
                                                           response_mask))
                metrics.append(record)
        return metrics

    # --- held out ----------------------------------------------------------------------------
    def evaluate(self):
        """Judge scores and KL to the reference on the held-out prompts, with the training
        sampling settings and fixed seeds (the same draws each time); and one sample."""
        cfg = self.config
        scores, kls, lengths, sample = [], [], [], None
        for k, lo in enumerate(range(0, len(self.val), cfg.batch_size)):
            prompts = self.val[lo:lo + cfg.batch_size]
            with no_grad():
                batch = rollout(self.policy, prompts, self.eos, self.pad, cfg,
                                seed=[cfg.seed, 4, k])
            texts = response_texts(self.tokenizer, batch)
            scores.append(self.scores(prompts, texts, batch.ended))
            logps, ref_logps, _, _ = self.reference_pass(batch)
            kls.append((rl.kl_estimate(logps, ref_logps, "k1") * batch.response_mask).sum(1))
            lengths.append(batch.response_mask.sum(axis=1))
            sample = sample or (prompts[0].value, texts[0])
        return {"eval/scores": float(np.concatenate(scores).mean()),
                "eval/kl": float(np.concatenate(kls).mean()),
                "eval/length": float(np.concatenate(lengths).mean())}, sample

    def _evaluate_and_log(self, say):
        if not self.val:
            return
        record, (prompt, response) = self.evaluate()
        record = {"step": self.step, **record,
                  "sample": f"{_shown(prompt)}{response}"}
        self._record(record)
        say(f"iteration {self.step:4d} | held out: score {record['eval/scores']:.4f} | KL "
            f"{record['eval/kl']:.4f} | length {record['eval/length']:.1f}\n"
            f"{record['sample']}")

    # --- checkpoints and metrics -------------------------------------------------------------
    def save(self):
        from npplm.io import write_safetensors

        if self.run_dir is None:
            return None
        cfg = self.config
        state = {"step": self.step, "position": self.position, "episodes": self.episodes,
                 "kl": self.kl.state(), "rng": rng_states(self.policy),
                 "ppo_config": dataclasses.asdict(cfg), "run": self.run_info,
                 "critic_optimizer": self.critic_optimizer.state_meta()}

        def critic(folder):
            self.critic.save_pretrained(folder / "critic")
            write_safetensors(self.critic_optimizer.state_arrays(),
                              folder / "critic" / "optimizer.safetensors",
                              metadata={"format": "npplm-optimizer"})

        self.last_checkpoint = save_checkpoint(self.run_dir, self.step, self.policy,
                                               self.optimizer, state, keep=cfg.keep_checkpoints,
                                               tokenizer=self.tokenizer, extra=critic)
        return self.last_checkpoint

    def resume(self):
        from npplm.io import read_safetensors

        path = None if self.run_dir is None else latest_checkpoint(self.run_dir)
        if path is None:
            return 0
        state = load_checkpoint(path, self.policy, self.optimizer)
        check_same_run(path, state.get("ppo_config", {}), self.config,
                       ("batch_size", "mini_batch_size", "ppo_epochs", "seed"))
        load_model_weights(self.critic, path / "critic")
        arrays = read_safetensors(path / "critic" / "optimizer.safetensors")
        self.critic_optimizer.load_state({k: np.asarray(v) for k, v in arrays.items()},
                                         state["critic_optimizer"])
        self.step, self.position = int(state["step"]), int(state["position"])
        self.episodes = int(state["episodes"])
        self.kl.load(state["kl"])
        self.last_checkpoint = path
        self.history = self.metrics.kept_until(self.step)
        return self.step

    @property
    def metrics(self):
        return MetricsFile.of_run(self.run_dir)

    def _record(self, record):
        self.history.append(record)
        self.metrics.append(record)

    def plot(self):
        if self.run_dir is not None:
            plot_metrics(self.history, [["objective/scores", "eval/scores"],
                                        ["objective/kl", "eval/kl"]],
                         self.run_dir / "rewards.png", "PPO: judge score and KL to the reference")

    def fit(self):
        """Run to config.steps iterations, resuming from the run folder's newest checkpoint;
        returns self.history."""
        from npplm import runtime

        runtime.configure()
        cfg = self.config
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.resumed_from = self.resume()
            if not self.resumed_from:
                self.metrics.write([])
            else:
                self.log(f"resuming from {self.last_checkpoint} (iteration {self.step} of "
                         f"{cfg.steps})")
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, unit="it", dynamic_ncols=True,
                       desc="ppo")
        say = bar.write if bar is not None else self.log
        try:
            if self.step == 0:
                self._evaluate_and_log(say)
            while self.step < cfg.steps:
                record = self.iteration()
                self._record(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(score=f"{record['objective/scores']:.3f}",
                                    kl=f"{record['objective/kl']:.3f}")
                if self.step == cfg.steps or (cfg.eval_every and self.step % cfg.eval_every == 0):
                    self._evaluate_and_log(say)
                    self.plot()
                if self.step == cfg.steps or (cfg.save_every and self.step % cfg.save_every == 0):
                    self.save()
        finally:
            if bar is not None:
                bar.close()
        self.plot()
        return self.history


def _groups(model, weight_decay):
    return [g for g in decay_groups(model, weight_decay) if g["params"]]


def _shown(prompt):
    if isinstance(prompt, str):
        return prompt
    return "".join(f"[{m['role']}] {m['content']}\n" for m in prompt) + "[assistant] "


# --- the stage ---------------------------------------------------------------------------------

def prompt_rows(data, tokenizer, seed=0):
    """(training, held-out) prompt-only rows: a JSONL file's (10% held out at random), or by
    default the standard library's: `def` lines to continue for a model without a chat
    template (a code model such as `npplm train`'s GPT-2), the docstring questions as chat
    messages for one with (docstrings.py); both split by package."""
    from npplm.alignment.docstrings import code_prompts, question_prompts
    from npplm.alignment.stage import split_rows

    if data is not None:
        return split_rows(read_examples(data, ("prompt-only",))[0], data, seed)
    if tokenizer.chat_template is not None:
        return (question_prompts("train", conversational=True),
                question_prompts("validation", conversational=True))
    return code_prompts("train"), code_prompts("validation")


def pretraining_blocks(tokenizer, block_size, max_chars=1_000_000):
    """(N, block_size) int64 blocks of the standard library's source for PPO-ptx."""
    from npplm.training.data import pack, stdlib_documents, tokenize_documents

    docs = tokenize_documents(tokenizer, stdlib_documents(max_chars))
    eos = tokenizer.token_to_id(tokenizer.eos_token) if tokenizer.eos_token else None
    return np.asarray(pack(docs, block_size, eos, what="the standard library's source"))


def train_ppo(model, out, config, *, reward="python", ref=None, data=None, overwrite=False,
              progress=False, log=print):
    """RLHF with PPO of the causal LM at `model` in the run folder `out`.

    reward   a judge: a built-in name ("python"), the path of a reward model (`npplm
             reward`'s run folder or checkpoint), or a callable (prompts, responses) ->
             scores
    ref      the reference model pi_ref (default: `model`, the starting point)
    data     a JSONL file of {"prompt"} rows (None: the standard library's, prompt_rows)
    Nothing is written before the models, the judge and the prompts are loaded and checked.
    Returns the PPOTrainer (its history, last_checkpoint).
    """
    judge, judge_name = resolve_judge(reward)
    request = {"stage": "ppo", "model": str(model), "reward": judge_name,
               "ref": str(ref or model), "data": str(data or DEFAULT_PROMPTS),
               "max_new_tokens": config.max_new_tokens, "temperature": config.temperature,
               "top_k": config.top_k, "top_p": config.top_p, "kl_coef": config.kl_coef,
               "ptx_coef": config.ptx_coef}
    policy, tokenizer = load_policy(model)
    reference, ref_tokenizer = load_policy(ref or model)
    if not same_tokenizer(ref_tokenizer, tokenizer):
        raise ValueError(f"the reference {ref} and the policy {model} have different "
                         "tokenizers: the KL compares their log-probs token by token")
    if isinstance(judge, RewardModelJudge) and not same_tokenizer(judge.tokenizer, tokenizer):
        raise ValueError(f"the reward model {judge.path} and the policy {model} have different "
                         "tokenizers: train the reward model from the policy's base "
                         "(npplm reward --model ...)")
    critic = critic_from(policy, tokenizer, judge, seed=config.seed, log=log)
    train, val = prompt_rows(data, tokenizer, config.seed)
    ptx = None
    if config.ptx_coef:
        ptx = pretraining_blocks(tokenizer, min(128, policy.context_length))
    with claimed(out, request, key="stage", overwrite=overwrite, log=log) as claim:
        trainer = PPOTrainer(policy, reference, critic, tokenizer, judge, train, val, config,
                             run_dir=out, ptx=ptx, progress=progress, log=log,
                             run_info=request, drop_long=data is None)
        claim.commit({"stage": request, "ppo_config": dataclasses.asdict(config)})
        log(f"ppo: {len(trainer.train):,} training and {len(trainer.val):,} held-out prompts; "
            f"{config.steps} iterations of {config.batch_size} episodes; judge {judge_name}; "
            f"run folder {out}")
        trainer.fit()
    return trainer
