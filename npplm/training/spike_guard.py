"""A loss-spike guard: skip an update whose loss or gradient norm is an outlier.

Large language models sometimes spike: within a step or two the loss jumps far above its
trend, and the model may or may not recover. Gradient clipping bounds the size of the
update but not its direction, so one bad update can still do damage; the guard refuses
the update instead.

The detector is llm.c's (llmc/outlier_detector.h, used by train_gpt2.cu's -sl and -sg
flags): keep the last W values of a quantity, and score a new value x by

    z = (x - mean) / std          mean, std: over the last W values (std with 1/W, ddof 0)

and skip the update when z > threshold. The guard scores the training loss and the global
gradient norm (before clipping) separately; either one can refuse the step. Two choices
differ from llm.c, and both make the detector see a spike more clearly:

- The new value is scored against the values before it; llm.c pushes it into the window
  first. A lone outlier inside its own window inflates the std it is divided by: among
  n values, one can never be more than sqrt(n - 1) standard deviations above their mean
  (11.3 at W = 128), however large it is.
- A skipped value never enters the history: the window holds only the losses and norms
  of updates that were applied, so one spike does not widen the normal range for the next
  W steps (llm.c keeps it, so a second spike soon after scores lower).

Only upward deviations count (z > threshold, as llm.c): a loss or a norm far below its
running range is no danger. A trend is no spike either: on a straight ramp the newest
value lies about sqrt(3) (1.7) standard deviations above the window's mean. A history whose
values are all equal has std 0; then nothing is flagged (llm.c returns z = 0).

Defaults. W = 128 (llm.c's window); `min_history` = W, so no step is judged before the
window is full (llm.c likewise returns no score until then). threshold = 6: llm.c ships
the flags off (0) and leaves the number to the user; 6 keeps ordinary batch noise from
ever being refused (under a Gaussian, z > 6 has probability 1e-9, and the std estimated
from 128 values is off by about 1/sqrt(2 W) = 6%, too little to matter) while a real
spike, a jump of many times the batch-to-batch noise, is far above it. Gradient norms
are heavier-tailed than losses, which is the other reason for a high threshold.

A skipped update consumes its batch and advances the step (the schedule moves on, as in
llm.c); the optimizer's state and step count do not change.

Rewinding (PaLM's remedy). Skipping treats one bad batch. When the loss stays above its
range for several steps in a row, the parameters themselves have gone bad, and skipping
more batches cannot help: `consecutive_skips` counts such steps and `persistent` says
when there have been `patience` of them. PaLM (Chowdhery et al., "PaLM: Scaling Language
Modeling with Pathways", arXiv:2204.02311, section 5.1) saw about 20 spikes in its
largest model despite clipping, and "re-started training from a checkpoint roughly 100
steps before the spike started, and skipped roughly 200-500 data batches, which cover
the batches that were seen before and during the spike"; the loss then did not spike at
that point again. They also found that the same batches did not spike from an earlier
checkpoint: a spike is a particular batch meeting a particular state of the parameters,
not bad data alone. `plan_rewind` picks the checkpoint and the number of batches to skip;
the trainer loads that checkpoint, moves its data position forward past the skipped
batches, and records the skip so that a resumed run makes the same jump.
"""

import math
from collections import deque
from dataclasses import dataclass

import numpy as np


class SpikeGuard:
    """Running z-scores of the loss and the gradient norm; refuses outlier updates.

    window       W: how many accepted values of each quantity the statistics cover
    threshold    z above which an update is refused (see the module docstring for 6)
    min_history  accepted values needed before any step is judged; default W
    patience     refused steps in a row after which `persistent` is True (rewind or stop)

    check() scores without changing anything, accept() adds an applied update's values to
    the history, observe() does both as a trainer uses them (check, then accept or count).
    """

    def __init__(self, window=128, threshold=6.0, min_history=None, patience=5):
        if not isinstance(window, int) or window < 2:
            raise ValueError(f"SpikeGuard: window={window!r} must be an integer >= 2")
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"SpikeGuard: threshold={threshold} must be a number > 0")
        min_history = window if min_history is None else min_history
        if not isinstance(min_history, int) or not 2 <= min_history <= window:
            raise ValueError(f"SpikeGuard: min_history={min_history!r} must be an integer "
                             f"in [2, window={window}]")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"SpikeGuard: patience={patience!r} must be a positive integer")
        self.window, self.threshold = window, float(threshold)
        self.min_history, self.patience = min_history, patience
        self.losses = deque(maxlen=window)  # of applied updates only, oldest first
        self.grad_norms = deque(maxlen=window)
        self.skipped_steps = 0  # refused by observe(), over the whole run
        self.consecutive_skips = 0  # refused by observe() since the last accepted update

    @staticmethod
    def zscore(value, history):
        """(value - mean) / std over `history` (std with 1/n); 0 when std is 0."""
        values = np.asarray(history, dtype=np.float64)
        mean, std = values.mean(), values.std()
        return 0.0 if std == 0.0 else float((value - mean) / std)

    def check(self, loss, grad_norm):
        """None when the update may go ahead; otherwise why not, in words. Changes nothing.

        A non-finite loss or norm is always refused: it would poison the statistics.
        """
        for name, value, history in (("loss", loss, self.losses),
                                     ("gradient norm", grad_norm, self.grad_norms)):
            if not math.isfinite(value):
                return f"the {name} is {value}"
            if len(history) < self.min_history:
                continue
            z = self.zscore(value, history)
            if z > self.threshold:
                values = np.asarray(history, dtype=np.float64)
                return (f"{name} spike: {value:.4g} is {z:.1f} standard deviations above the "
                        f"mean {values.mean():.4g} (std {values.std():.3g}) of the last "
                        f"{len(history)} applied updates (threshold {self.threshold:g})")
        return None

    def accept(self, loss, grad_norm):
        """Add an applied update's loss and gradient norm to the history."""
        self.losses.append(float(loss))
        self.grad_norms.append(float(grad_norm))
        self.consecutive_skips = 0

    def observe(self, loss, grad_norm):
        """check(), then accept() when the update may go ahead or count the refusal:
        returns check()'s answer. Call it once per update, just before optimizer.step()."""
        reason = self.check(loss, grad_norm)
        if reason is None:
            self.accept(loss, grad_norm)
        else:
            self.skipped_steps += 1
            self.consecutive_skips += 1
        return reason

    @property
    def persistent(self):
        """The last `patience` updates were all refused: skipping no longer helps, so the
        trainer should rewind (plan_rewind) or stop."""
        return self.consecutive_skips >= self.patience

    # --- checkpoints (trainer_state.json) ------------------------------------------------------
    def state(self):
        """The guard as a JSON-able dict: settings, the history, the counters. Floats go
        through JSON exactly (repr), so a resumed run judges as the uninterrupted one."""
        return {"window": self.window, "threshold": self.threshold,
                "min_history": self.min_history, "patience": self.patience,
                "losses": list(self.losses), "grad_norms": list(self.grad_norms),
                "skipped_steps": self.skipped_steps,
                "consecutive_skips": self.consecutive_skips}

    def load_state(self, state):
        """Restore state()'s history and counters; the settings stay the constructor's (a
        history longer than this window keeps its newest values)."""
        if len(state["losses"]) != len(state["grad_norms"]):
            raise ValueError(f"SpikeGuard.load_state: {len(state['losses'])} losses but "
                             f"{len(state['grad_norms'])} gradient norms")
        self.losses = deque(map(float, state["losses"]), maxlen=self.window)
        self.grad_norms = deque(map(float, state["grad_norms"]), maxlen=self.window)
        self.skipped_steps = int(state["skipped_steps"])
        self.consecutive_skips = int(state["consecutive_skips"])


@dataclass(frozen=True)
class Rewind:
    """Where a rewind goes: load the checkpoint of `checkpoint_step`, then skip the next
    `skip_updates` updates' worth of batches (skip_updates * grad_accum * batch_size
    examples of the data order) before training on."""

    checkpoint_step: int
    skip_updates: int


def plan_rewind(spike_step, checkpoint_steps, back=100, skip=300):
    """PaLM's remedy for a spike at update `spike_step` (1-based, as the trainer's records):
    the newest checkpoint at least `back` updates before it, or, when none is that old,
    the oldest one before it; and `skip` batches (PaLM: 200 to 500) counted from that
    checkpoint, always enough to pass the spike's own batch. None when no checkpoint
    precedes the spike (then there is nothing to rewind to: stop).

    From checkpoint c the next batches belong to updates c + 1, c + 2, ...; skipping k of
    them passes update s's batch when k >= s - c.
    """
    before = sorted(c for c in checkpoint_steps if c < spike_step)
    if not before:
        return None
    old_enough = [c for c in before if c <= spike_step - back]
    c = old_enough[-1] if old_enough else before[0]
    return Rewind(checkpoint_step=c, skip_updates=max(skip, spike_step - c))
