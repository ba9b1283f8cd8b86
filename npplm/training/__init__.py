"""Training: optimizers, the learning-rate schedule, data, the loop, checkpoints, evaluation.

    optim.py          AdamW (decoupled weight decay, bias correction), SGD, clip_grad_norm,
                      decay_groups (matrices decay, vectors do not)
    schedule.py       WarmupCosine: linear warmup, then cosine decay to a floor
    data.py           documents (a folder, a file, or the stdlib's source), the train /
                      validation split, packing into blocks, the per-epoch order
    trainer.py        TrainConfig and Trainer: accumulation, clipping, evaluation, metrics,
                      the loss curve, NaN stops, Ctrl-C
    checkpointing.py  atomic checkpoints of everything a resumed run needs
    loss_scaling.py   DynamicLossScaler: torch.amp.GradScaler's state machine
    spike_guard.py    SpikeGuard: skip an update whose loss or norm is an outlier (llm.c)
    evaluation.py     perplexity with a sliding window
"""

from npplm.training.evaluation import perplexity
from npplm.training.loss_scaling import DynamicLossScaler
from npplm.training.optim import SGD, AdamW, Optimizer, clip_grad_norm, decay_groups
from npplm.training.schedule import WarmupCosine
from npplm.training.spike_guard import SpikeGuard
from npplm.training.trainer import TrainConfig, Trainer, TrainingDiverged

__all__ = ["SGD", "AdamW", "DynamicLossScaler", "Optimizer", "SpikeGuard", "TrainConfig",
           "Trainer", "TrainingDiverged", "WarmupCosine", "clip_grad_norm", "decay_groups",
           "perplexity"]
