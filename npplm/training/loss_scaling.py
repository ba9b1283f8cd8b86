"""Dynamic loss scaling for float16 gradients, with torch.amp.GradScaler's state machine.

Micikevicius et al., "Mixed Precision Training", ICLR 2018, arXiv:1710.03740, section 3.2.

Why float16 gradients need it. float16 has 5 exponent bits: its normal numbers reach down
to 2^-14 (about 6.1e-5) and its subnormals to 2^-24 (about 6.0e-8); anything smaller
rounds to 0. Gradients are mostly small numbers: the paper's histogram of a detector's
activation gradients (figure 3, Multibox SSD) has a large share of them below 2^-24, which
float16 flushes to zero so that those weights stop learning, while nothing comes near
float16's maximum of 65504: the range is wasted at the top and short at the bottom. The
remedy is to shift all gradients up by one factor S before they are made:

    backward from  S * loss            every gradient is S dL/dx: the chain rule is linear
    g <- g / S     once, in float32    before clipping, the update or anything that reads g

Multiplying by a power of two only changes the exponent, so scaling costs no precision
(an overflow aside). The paper picks a constant S per network (8 was enough for SSD); the
dynamic scaler of the frameworks, this file's, finds S by itself: start high, and whenever
a gradient overflows to inf (or a NaN appears), skip that update and halve S; after
`growth_interval` clean steps in a row, try doubling it again. A skipped step costs
one batch; with the defaults S settles within a few halvings and then moves about once
every couple of thousand steps.

Why bfloat16 usually does not need it: bfloat16 keeps float32's 8 exponent bits (normal
numbers down to 2^-126, about 1.2e-38) and gives up mantissa bits instead, so small
gradients do not underflow; its coarse rounding is handled by keeping float32 master
weights and optimizer moments, not by scaling. The scaler is for float16 runs (and is
harmless, if useless, elsewhere: it is off with enabled=False).

The state machine is torch.amp.GradScaler's (torch._amp_update_scale_), with its defaults:

    found inf/NaN:  scale <- scale * backoff_factor (0.5);  tracker <- 0;  skip the update
    otherwise:      tracker <- tracker + 1
                    if tracker == growth_interval (2000):
                        scale <- scale * growth_factor (2.0), kept only if finite in float32
                        tracker <- 0

The scale is a float32 number as in torch (each product is rounded to float32), so that a
trajectory with any factors equals GradScaler's bit for bit
(tests/training/test_loss_scaling.py compares them on random finite/inf sequences).

One update with the scaler, in this order:

    scaler.scale_loss(loss * weight).backward()        for each micro-batch
    found_inf = scaler.unscale_(optimizer.params)      the true gradients again
    if not found_inf:                                  else the update is skipped: no
        norm = clip_grad_norm(optimizer.params, c)     optimizer state changes, nor its
        optimizer.step()                               step count
    optimizer.zero_grad()
    scaler.update(found_inf)
"""

import math

import numpy as np

from autograd import array_module


def _float32(x):
    """x rounded to the nearest float32, as a Python float (torch keeps the scale there);
    inf beyond float32's range."""
    with np.errstate(over="ignore"):
        return float(np.float32(x))


class DynamicLossScaler:
    """The loss scale S and the state machine that moves it (see the module docstring).

    init_scale       S at the first step (2^16, GradScaler's default)
    growth_factor    S is multiplied by this after growth_interval clean steps in a row
    backoff_factor   S is multiplied by this at every step whose gradients hold inf/NaN
    growth_interval  clean steps in a row before S grows
    enabled          False: scale_loss is the identity, unscale_ touches nothing and reports
                     no inf (an inf gradient is then a divergence, which the trainer's finite
                     check on the gradient norm reports), update does nothing; scale is 1
    """

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"DynamicLossScaler: init_scale={init_scale} must be a finite "
                             "number > 0")
        if not growth_factor > 1.0:
            raise ValueError(f"DynamicLossScaler: growth_factor={growth_factor} must be > 1")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"DynamicLossScaler: backoff_factor={backoff_factor} must lie "
                             "in (0, 1)")
        if not isinstance(growth_interval, int) or growth_interval < 1:
            raise ValueError(f"DynamicLossScaler: growth_interval={growth_interval!r} must be "
                             "a positive integer")
        self.init_scale, self.enabled = float(init_scale), bool(enabled)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = growth_interval
        self._scale = _float32(init_scale)
        self._growth_tracker = 0  # clean steps in a row since the last growth or backoff
        self._skipped_steps = 0  # steps whose gradients held inf/NaN, over the whole run
        self._unscaled = False  # unscale_ ran since the last update

    @property
    def scale(self):
        """The current loss scale S (1.0 when disabled)."""
        return self._scale if self.enabled else 1.0

    @property
    def skipped_steps(self):
        """How many updates were skipped for inf/NaN gradients."""
        return self._skipped_steps

    @property
    def growth_tracker(self):
        """Clean steps in a row since the scale last changed (or was kept at its ceiling)."""
        return self._growth_tracker

    def scale_loss(self, loss):
        """S * loss, a Tensor of the loss's dtype: backward from it gives S * gradients.

        The loss should be a float32 number (cross-entropy is computed in float32 even in a
        float16 model, as torch.autocast does): S * loss overflows float16's 65504 for any
        loss above 1 at the default S = 65536.
        """
        return loss * self.scale if self.enabled else loss

    def unscale_(self, params):
        """Divide every p.grad by S; return True when any of them holds an inf or a NaN.

        Call it once per update, after the last backward and before clipping (the norm and
        the threshold are in true-gradient units). The division is torch's: a multiplication
        by 1/S rounded to float32 (exact while S is a power of two). float32 and float64
        gradients are divided in place; a float16 gradient is widened to a new float32
        array first (p.grad is replaced), since dividing in float16 would flush the small
        values to zero again: the paper's float32 master gradients. The check looks at the
        unscaled values, so it also catches an overflow by the division (S < 1), which
        torch's check of the scaled values would let through to the norm.
        """
        if not self.enabled:
            return False
        if self._unscaled:
            raise RuntimeError("DynamicLossScaler.unscale_ was already called since the last "
                               "update(): the gradients would be divided by the scale twice")
        self._unscaled = True
        inv_scale = _float32(1.0 / self._scale)  # torch: scale.double().reciprocal().float()
        finite = []  # 0-d arrays on the gradients' device: one transfer at the end
        for p in params:
            if p.grad is None:
                continue
            if p.grad.dtype.itemsize < 4:  # float16: unscale in float32 (see above)
                p.grad = p.grad.astype(np.float32)
            p.grad *= inv_scale
            finite.append(array_module(p.grad).isfinite(p.grad).all())
        if not finite:
            return False
        return not bool(array_module(finite[0]).stack(finite).all())

    def update(self, found_inf):
        """Move S after an update: the GradScaler state machine of the module docstring."""
        if not self.enabled:
            return
        self._unscaled = False
        if found_inf:
            self._scale = _float32(self._scale * self.backoff_factor)
            self._growth_tracker = 0
            self._skipped_steps += 1
            return
        self._growth_tracker += 1
        if self._growth_tracker == self.growth_interval:
            grown = _float32(self._scale * self.growth_factor)
            if math.isfinite(grown):  # at float32's ceiling S stays where it is
                self._scale = grown
            self._growth_tracker = 0

    # --- checkpoints (trainer_state.json) ------------------------------------------------------
    def state(self):
        """The scaler as a JSON-able dict: the moving parts and, for the reader, its settings."""
        return {"scale": self._scale, "growth_tracker": self._growth_tracker,
                "skipped_steps": self._skipped_steps, "init_scale": self.init_scale,
                "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "enabled": self.enabled}

    def load_state(self, state):
        """Restore state(): the scale, the tracker and the count of skipped steps. The
        factors and the interval stay the constructor's (the run's TrainConfig)."""
        scale = float(state["scale"])
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"DynamicLossScaler.load_state: scale={scale} must be a finite "
                             "number > 0")
        self._scale = _float32(scale)
        self._growth_tracker = int(state["growth_tracker"])
        self._skipped_steps = int(state["skipped_steps"])
        self._unscaled = False
