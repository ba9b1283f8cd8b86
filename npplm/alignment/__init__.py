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

`npplm sft`, `npplm reward` and `npplm dpo` are thin over sft(), train_reward_model() and
train_dpo().
"""

from npplm.alignment.dpo import train_dpo
from npplm.alignment.losses import dpo_loss, preference_metrics, reward_loss, sequence_logps
from npplm.alignment.reward import train_reward_model
from npplm.alignment.sft import sft

__all__ = ["dpo_loss", "preference_metrics", "reward_loss", "sequence_logps", "sft",
           "train_dpo", "train_reward_model"]
