"""Training: optimizers, the learning-rate schedule, data, the loop, checkpoints, evaluation.

    optim.py       AdamW (decoupled weight decay, bias correction), SGD, clip_grad_norm,
                   decay_groups (matrices decay, vectors do not)
    schedule.py    WarmupCosine: linear warmup, then cosine decay to a floor
"""

from npplm.training.optim import SGD, AdamW, Optimizer, clip_grad_norm, decay_groups
from npplm.training.schedule import WarmupCosine

__all__ = ["SGD", "AdamW", "Optimizer", "WarmupCosine", "clip_grad_norm", "decay_groups"]
