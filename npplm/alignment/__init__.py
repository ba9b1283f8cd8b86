"""Alignment: what follows pre-training in the source's chapter, one stage per file.

    data.py       TRL's dataset formats (text, prompt-completion, messages, preference) in
                  JSONL, tokenized with the answer masks; the SFT and preference collators
    docstrings.py the default data every Python carries: instruction and preference pairs
                  from the standard library's docstrings, split by module
    losses.py     sequence_logps, dpo_loss (sigmoid, hinge, IPO, robust), reward_loss
    stage.py      what the stages share: the starting model, the held-out split, the run
                  folder
    sft.py        supervised fine-tuning on the answers only      (InstructGPT, step 1)
    reward.py     the reward model, Bradley-Terry on pairs        (InstructGPT, step 2)
    dpo.py        direct preference optimisation, no reward model (Rafailov et al., 2023)
    judges.py     what scores a response in RLHF: a reward model, a built-in rule, a function
    rl.py         PPO's pieces, one formula each: KL estimators, per-token rewards, GAE,
                  whitening, the clipped losses, the adaptive KL coefficient
    ppo.py        RLHF with PPO: rollouts, scoring, the reference, updates  (InstructGPT, step 3)

`npplm sft`, `npplm reward`, `npplm dpo` and `npplm ppo` are thin over sft(),
train_reward_model(), train_dpo() and train_ppo().
"""

from npplm.alignment.dpo import train_dpo
from npplm.alignment.losses import dpo_loss, preference_metrics, reward_loss, sequence_logps
from npplm.alignment.ppo import PPOConfig, train_ppo
from npplm.alignment.reward import train_reward_model
from npplm.alignment.rl import gae
from npplm.alignment.sft import sft

__all__ = ["PPOConfig", "dpo_loss", "gae", "preference_metrics", "reward_loss",
           "sequence_logps", "sft", "train_dpo", "train_ppo", "train_reward_model"]
