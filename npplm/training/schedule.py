"""The learning-rate schedule: linear warmup, then cosine decay to a floor.

    lr(s) = lr_max * (s + 1) / W                                     for s < W
    lr(s) = lr_min + (lr_max - lr_min) * (1 + cos(pi * (s - W) / (N - W))) / 2   W <= s < N

for update s = 0, 1, ..., N - 1 (W warmup steps, N steps in all). Warmup starts at
lr_max / W rather than at zero so that no update is wasted, and reaches lr_max at s = W - 1;
the cosine then falls from lr_max (at s = W) towards lr_min, which it would reach at s = N.

Why warm up: Adam's second-moment estimate v is built from few gradients in the first
steps, so its updates are large and erratic; a small learning rate until v settles is
what lets Transformers train at all at high rates (Liu et al., "On the Variance of the
Adaptive Learning Rate and Beyond", arXiv:1908.03265). The cosine (Loshchilov and Hutter,
SGDR, arXiv:1608.03983) is GPT-3's and LLaMA's decay (LLaMA: to 10% of the peak, the
default floor of `npplm train`).

The schedule is a pure function of the step number, so a resumed run needs nothing but
the step to continue it exactly.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    lr: float  # lr_max, the peak
    warmup_steps: int  # W
    total_steps: int  # N
    min_lr: float = 0.0  # lr_min, the floor of the cosine

    def __post_init__(self):
        if not (self.lr >= 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"WarmupCosine: need 0 <= min_lr={self.min_lr} <= lr={self.lr}")
        if not 0 <= self.warmup_steps <= self.total_steps or self.total_steps < 1:
            raise ValueError(f"WarmupCosine: need 0 <= warmup_steps={self.warmup_steps} <= "
                             f"total_steps={self.total_steps}, total_steps >= 1")

    def __call__(self, step):
        W, N = self.warmup_steps, self.total_steps
        if step < W:
            return self.lr * (step + 1) / W
        progress = min(1.0, (step - W) / max(1, N - W))
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
