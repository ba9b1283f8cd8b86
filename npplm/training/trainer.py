"""The training loop: batches, accumulation, clipping, the update, evaluation, checkpoints.

One update (step s = 0, 1, ..., steps - 1):

    lr = schedule(s)
    for each of A micro-batches (gradient accumulation):
        examples = the next B examples of the epoch order       (data.BlockOrder)
        batch    = collator(examples, rng(seed, s, micro))      a dict of model kwargs
        loss     = model(**batch).loss * w;  loss.backward()    w = its share, see below
    ||g||   = clip_grad_norm(parameters, max_norm)               (optim.py)
    optimizer.step(); optimizer.zero_grad()

Gradient accumulation: each micro-batch's loss is a mean over its n_k scored tokens, so
it is weighted by n_k / (n_1 + ... + n_A) (`accumulation_weights`): the A weighted means
add up to the mean over all the update's scored tokens, and the update equals one batch A
times larger exactly (up to float rounding), also for MLM, whose micro-batches mask
different numbers of tokens (tests/training/test_trainer.py checks CLM and MLM). Packed
CLM blocks score B (T - 1) tokens each, so there every weight is 1 / A. The one exception:
a loss with a per-sequence term besides the token mean (BERT's NSP, ALBERT's SOP) has no
single weight that is exact for both terms; there each micro-batch weighs 1 / A (the mean
of the A micro-batch losses, as Hugging Face's Trainer computed every loss before 4.46).

Reproducibility: every random choice is a function of (seed, step) or saved in the
checkpoint (see checkpointing.py), so two runs with the same settings produce the same
losses, and a killed run resumed from its last checkpoint produces exactly the losses the
uninterrupted run would have (tested by killing a real `npplm train` process).

Several processes: started by `mpiexec -n N` (or `npplm train --nproc N`), the same loop
runs data-parallel (npplm/distributed/): every rank collates the whole micro-batches and
computes on its rows, the weighted gradients are summed over ranks in buckets while
backward runs (or reduce-scattered under ZeRO-1, TrainConfig.zero), and the update is one
process's with the same global batch, to float32 rounding (tests/distributed/). Rank 0
alone logs, draws the bar and writes checkpoints; a rank that raises ends the job with its
rank and step named. Dropout draws from (seed, step, rank), so ranks differ and a resumed
run draws the same masks.

Precision and stability (each off by default; see the files named): the forward and
backward may run in 16 bits on float32 master weights (precision.py), the loss be scaled
for float16 gradients (loss_scaling.py: an update with inf/NaN gradients is skipped), an
update whose loss or gradient norm is an outlier be skipped or, when spikes persist, the
run rewound past them (spike_guard.py), and blocks be recomputed in backward instead of
kept (TrainConfig.gradient_checkpointing, autograd/checkpoint.py).

Safety: a loss or gradient norm that is NaN or infinite stops the run before the update
is applied, with TrainingDiverged naming the step and the last good checkpoint. Ctrl-C
lets the current step finish, saves a checkpoint and stops (a second Ctrl-C stops at once).
"""

import json
import math
import os
import pathlib
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from autograd import no_grad
from npplm import runtime
from npplm.distributed import GradientBuckets, ZeroAdamW, current_world, shard_batch, shard_weights
from npplm.training.checkpointing import (
    check_same_run,
    checkpoint_name,
    checkpoint_steps,
    dropout_modules,
    latest_checkpoint,
    load_checkpoint,
    rng_states,
    save_checkpoint,
)
from npplm.training.data import BlockOrder
from npplm.training.loss_scaling import DynamicLossScaler
from npplm.training.optim import SGD, AdamW, clip_grad_norm, decay_groups
from npplm.training.precision import PRECISIONS, MixedPrecision
from npplm.training.schedule import WarmupCosine
from npplm.training.spike_guard import SpikeGuard, plan_rewind

_TRAIN, _VAL = 0, 1  # tags that keep training and validation random streams apart


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train: batch, optimizer, schedule, evaluation and checkpoint cadence."""

    steps: int = 1000  # optimizer updates
    batch_size: int = 16  # B: examples per micro-batch
    grad_accum: int = 1  # A: micro-batches per update (the update sees A B examples)
    optimizer: str = "adamw"  # "adamw" or "sgd"
    lr: float = 1e-3  # peak learning rate
    min_lr: float | None = None  # the cosine's floor; None: lr / 10 (LLaMA's choice)
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only (optim.decay_groups)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW; GPT-3 and LLaMA use 0.95 for b2
    eps: float = 1e-8
    momentum: float = 0.9  # SGD
    clip_grad_norm: float | None = 1.0  # None: no clipping (the norm is still logged)
    eval_every: int = 100  # steps between validation passes (and at the last step)
    eval_batches: int = 4  # validation micro-batches per pass, always the same ones
    save_every: int = 100  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2  # the newest this many are kept
    log_every: int = 10  # steps between lines of metrics.jsonl
    seed: int = 0
    zero: bool = False  # with several ranks: shard AdamW's moments (ZeRO-1)
    gradient_checkpointing: bool = False  # keep block inputs only; replay blocks in backward
    precision: str = "fp32"  # "bf16" / "fp16": 16-bit forward and backward (precision.py)
    loss_scaling: bool = False  # dynamic loss scaling (loss_scaling.py); on with fp16
    spike_guard: float | None = None  # skip updates whose loss or norm z-score exceeds this
    spike_rewind: bool = False  # spikes that persist: rewind to a checkpoint (PaLM)

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "eval_batches", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name}={value!r} must be a positive integer")
        for name in ("warmup_steps", "eval_every", "save_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name}={value!r} must be an integer >= 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision={self.precision!r}; use one of "
                             f"{', '.join(PRECISIONS)}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"TrainConfig.optimizer={self.optimizer!r}; use 'adamw' or 'sgd'")
        if self.warmup_steps > self.steps:
            raise ValueError(f"TrainConfig: warmup_steps={self.warmup_steps} exceeds "
                             f"steps={self.steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr={self.lr} must be a positive number")
        if self.min_lr is not None and not (math.isfinite(self.min_lr)
                                            and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"TrainConfig.min_lr={self.min_lr} must lie in [0, lr={self.lr}]")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig.weight_decay={self.weight_decay} must be a number "
                             ">= 0")
        if not all(0 <= b < 1 for b in self.betas) or not self.eps > 0:
            raise ValueError(f"TrainConfig: betas={self.betas} must lie in [0, 1) and "
                             f"eps={self.eps} be > 0")
        if self.spike_guard is not None and not (math.isfinite(self.spike_guard)
                                                 and self.spike_guard > 0):
            raise ValueError(f"TrainConfig.spike_guard={self.spike_guard} must be a z-score "
                             "> 0 or None")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"TrainConfig.clip_grad_norm={self.clip_grad_norm} must be > 0 "
                             "or None")

    @property
    def floor_lr(self):
        return self.lr / 10 if self.min_lr is None else self.min_lr

    def schedule(self):
        return WarmupCosine(self.lr, self.warmup_steps, self.steps, self.floor_lr)

    def make_optimizer(self, model):
        groups = decay_groups(model, self.weight_decay)
        groups = [g for g in groups if g["params"]]
        if self.optimizer == "sgd":
            return SGD(groups, lr=self.lr, momentum=self.momentum)
        return AdamW(groups, lr=self.lr, betas=self.betas, eps=self.eps)


def batch_rng(seed, step, micro):
    """The generator of one training micro-batch's random choices (masks, spans)."""
    return np.random.default_rng([seed, _TRAIN, step, micro])


SEQUENCE_TERMS = ("next_sentence_label", "sentence_order_label")  # a loss term per sequence


def scored_tokens(batch, shifted):
    """How many targets a batch's token loss averages over: labels != -100 (of labels[:, 1:]
    when the model shifts them, as causal LMs do); None without labels."""
    labels = batch.get("labels")
    if labels is None:
        return None
    labels = np.asarray(labels)
    return int(((labels[..., 1:] if shifted else labels) != -100).sum())


def accumulation_weights(batches, shifted=False):
    """Each micro-batch's share of the update (see the module docstring): n_k / sum n, or 1/A
    with a per-sequence loss term, without labels, or when nothing at all is scored."""
    A = len(batches)
    counts = [scored_tokens(b, shifted) for b in batches]
    if any(k in b for b in batches for k in SEQUENCE_TERMS) or None in counts or not sum(counts):
        return [1.0 / A] * A
    return [n / sum(counts) for n in counts]


def collate(collator, examples, rng, indices):
    """The collator's batch; static masks (BERT) also need each example's identity."""
    if getattr(collator, "static_seed", None) is not None:
        return collator(examples, rng, indices=indices)
    return collator(examples, rng)


def tokens_in(batch):
    """Input tokens a batch feeds the model (for tokens/s): input_ids' size."""
    return int(np.asarray(batch["input_ids"]).size)


class MetricsFile:
    """A run's metrics.jsonl, one JSON record a line (path None: a run that writes nothing)."""

    def __init__(self, path):
        self.path = path

    @classmethod
    def of_run(cls, run_dir):
        return cls(None if run_dir is None else pathlib.Path(run_dir) / "metrics.jsonl")

    def kept_until(self, step):
        """The records up to `step`, the file rewritten to hold only them (a resumed run
        drops what the killed one logged after its last checkpoint)."""
        records = [r for r in self.read() if r["step"] <= step]
        self.write(records)
        return records

    def read(self):
        if self.path is None or not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def write(self, records):
        if self.path is not None:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def append(self, record):
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


class Trainer:
    """Trains `model` on `train` examples through `collator`; see the module docstring.

    model       a Module whose forward takes the collator's keys and returns `.loss`
    collator    (examples, rng) -> dict of arrays, e.g. npplm.objectives' collators
    train, val  sequences of examples (e.g. the (N, T) blocks of data.pack); val optional
    config      a TrainConfig
    run_dir     where checkpoints, metrics.jsonl and loss.png go; None: nothing written
    perplexity  report exp(validation loss): True when the loss is a token-level NLL
    sample      optional model -> str, called at each evaluation (a generated sample)
    eval_metrics  optional model -> {name: float}, called at each evaluation, the numbers
                logged with the validation loss (e.g. DPO's reward accuracy)
    loss_fn     optional (model, batch) -> scalar Tensor: the objective of one batch when it
                is not the model's own loss (DPO, the reward model); default
                model(**batch).loss. The model is still what is saved and resumed.
    tokenizer   optional: saved into every checkpoint folder beside the model
    progress    show a tqdm progress bar (loss, learning rate, tokens/s)
    log         where one-line messages go (print; the bar's own write when it is shown)
    run_info    a dict saved in every checkpoint's trainer_state.json (the recipe of the run)
    """

    def __init__(self, model, collator, train, val=None, config=None, run_dir=None,
                 perplexity=True, sample=None, progress=False, log=print, run_info=None,
                 tokenizer=None, eval_metrics=None, loss_fn=None, world=None):
        self.world = world or current_world()
        self.main = self.world.is_main  # only rank 0 logs, draws the bar and writes files
        if not self.main:
            log, progress = (lambda *args, **kwargs: None), False
        self.model, self.collator = model, collator
        self.train_examples, self.val_examples = train, val
        self.has_val = val is not None and len(val) > 0
        self.config = config or TrainConfig()
        if self.config.gradient_checkpointing:
            model.gradient_checkpointing_enable()  # (autograd/checkpoint.py)
        self.run_dir = None if run_dir is None else pathlib.Path(run_dir)
        self.perplexity, self.sample, self.progress = perplexity, sample, progress
        self.eval_metrics = eval_metrics
        self.loss_fn = loss_fn or (lambda model, batch: model(**batch).loss)
        self.log, self.run_info, self.tokenizer = log, dict(run_info or {}), tokenizer
        self.optimizer = self.config.make_optimizer(model)
        self.buckets = None  # several ranks: data parallel (npplm/distributed)
        if self.world.size > 1 and self.config.zero:
            self.optimizer = ZeroAdamW(self.optimizer, self.world)
        elif self.world.size > 1:
            trained = {id(p) for p in self.optimizer.params}  # in the model's order, which
            self.buckets = GradientBuckets(  # backward completes about in reverse
                [p for p in model.parameters() if id(p) in trained], self.world)
        self.schedule = self.config.schedule()
        self.precision = MixedPrecision(self.config.precision)
        self.scaler = DynamicLossScaler(enabled=self.config.loss_scaling
                                        or self.config.precision == "fp16")
        self.guard = (None if self.config.spike_guard is None
                      else SpikeGuard(threshold=self.config.spike_guard))
        self.order = BlockOrder(len(train), seed=self.config.seed)
        self.step, self.position = 0, 0  # updates done, examples served
        self.history = []  # every metrics record of this process, in order
        self.last_checkpoint = None
        self.resumed_from = 0  # the step fit() resumed from (0: it started afresh)
        self._tokens_seen = 0
        self._interrupted = False

    # --- one update ----------------------------------------------------------------------
    def _micro_batch(self, micro):
        B = self.config.batch_size
        idx = self.order.indices(self.position, B)
        self.position += B
        examples = [self.train_examples[i] for i in idx]
        return self._collate(examples, batch_rng(self.config.seed, self.step, micro), idx)

    def _collate(self, examples, rng, indices):
        return collate(self.collator, examples, rng, indices)

    def train_step(self):
        """One update; returns its metrics record (step counts updates done)."""
        if self.world.size > 1:
            return self._data_parallel_step()
        cfg, model, opt = self.config, self.model, self.optimizer
        lr = self.schedule(self.step)
        opt.set_lr(lr)
        model.train()
        total, tokens = 0.0, 0
        batches = [self._micro_batch(micro) for micro in range(cfg.grad_accum)]
        shifted = getattr(self.collator, "shifts_labels", False)
        with self.precision.working_copies(model.parameters()):  # 16-bit inside, if asked
            for batch, weight in zip(batches, accumulation_weights(batches, shifted)):
                tokens += tokens_in(batch)
                loss = self.loss_fn(model, batch)
                value = float(loss.item())
                if not math.isfinite(value) and not self.scaler.enabled:  # scaling: skip
                    self._diverged(f"the loss is {value}")
                self._backward(loss * weight)
                total += value * weight
        found_inf = self.scaler.unscale_(opt.params)
        norm = None if found_inf else clip_grad_norm(opt.params, cfg.clip_grad_norm)
        return self._finish_update(lr, total, norm, found_inf, tokens)

    def _data_parallel_step(self):
        """train_step on several ranks (npplm/distributed/data_parallel.py): every rank
        collates the whole micro-batches, computes on its rows, and the weighted gradients
        are summed over ranks, so the update is one process's. The loss and the norm are
        checked after the sums, where every rank sees the same numbers and stops together."""
        cfg, model, opt, world = self.config, self.model, self.optimizer, self.world
        lr = self.schedule(self.step)
        opt.set_lr(lr)
        model.train()
        reseed_dropout(model, cfg.seed, self.step, world.rank)
        batches = [self._micro_batch(micro) for micro in range(cfg.grad_accum)]
        shards = [shard_batch(b, world.rank, world.size) for b in batches]
        shifted = getattr(self.collator, "shifts_labels", False)
        sequence_terms = any(k in b for b in batches for k in SEQUENCE_TERMS)
        weights = shard_weights(batches, shards, lambda b: scored_tokens(b, shifted),
                                sequence_terms)
        total = 0.0
        with self.precision.working_copies(model.parameters()):  # 16-bit inside, if asked
            for micro, (shard, weight) in enumerate(zip(shards, weights)):
                loss = self.loss_fn(model, shard)
                total += float(loss.item()) * weight
                last = micro == len(shards) - 1  # only the last backward reduces (no_sync)
                hook = self.buckets.on_leaf_done if last and self.buckets is not None else None
                self._backward(loss * weight, hook)
        if self.buckets is not None:  # the sums: an inf on any rank is in every rank's
            self.buckets.finish()
            found_inf = self.scaler.unscale_(opt.params)
            norm = None if found_inf else clip_grad_norm(opt.params, cfg.clip_grad_norm)
        else:  # ZeRO-1: each rank holds its slice of the sums; they agree on an inf
            found_inf = world.sum(float(self.scaler.unscale_(opt.params))) > 0
            opt.reduce_gradients()
            norm = None if found_inf else opt.clip_grad_norm(cfg.clip_grad_norm)
        total = world.sum(total)
        if not math.isfinite(total) and not self.scaler.enabled:
            self._diverged(f"the loss is {total}")
        return self._finish_update(lr, total, norm, found_inf,
                                   sum(tokens_in(b) for b in batches))

    def _backward(self, loss, on_leaf_done=None):
        """Backward from the (scaled) loss. Under loss scaling an overflow is expected now
        and then, and handled (the update is skipped), so NumPy's overflow warnings are not
        shown for it."""
        if not self.scaler.enabled:
            return loss.backward(on_leaf_done=on_leaf_done)
        with np.errstate(over="ignore", invalid="ignore"):
            self.scaler.scale_loss(loss).backward(on_leaf_done=on_leaf_done)

    def _finish_update(self, lr, total, norm, found_inf, tokens):
        """The update once the gradients are in and clipped: skipped for inf/NaN gradients
        under loss scaling (the scale backs off) or for a spike (SpikeGuard), else applied;
        a non-finite norm without scaling stops the run. Returns the metrics record."""
        if norm is not None and not math.isfinite(norm):
            self._diverged(f"the gradient norm is {norm}")
        skipped = None
        if found_inf:
            skipped = f"inf/NaN gradients at loss scale {self.scaler.scale:g}"
        elif self.guard is not None:
            skipped = self.guard.observe(total, norm)
            if self.guard.persistent:  # skipping no longer helps: PaLM's remedy, or stop
                saved = [] if self.run_dir is None else checkpoint_steps(self.run_dir)
                plan = plan_rewind(self.step + 1, saved)
                if self.config.spike_rewind and plan is not None:
                    return self._rewind(plan, skipped)
                remedy = ("" if plan is None else
                          f"; PaLM's remedy (--spike-rewind): resume from "
                          f"{checkpoint_name(plan.checkpoint_step)} with the data order moved "
                          f"{plan.skip_updates} updates on")
                self._diverged(f"the last {self.guard.patience} updates were all spikes "
                               f"({skipped}){remedy}")
        record = {"step": self.step + 1, "loss": total, "lr": lr, "grad_norm": norm,
                  "tokens": tokens}
        if self.scaler.enabled:
            record["loss_scale"] = self.scaler.scale
        if skipped is None:
            self.optimizer.step()
        else:
            record["skipped"] = skipped
        self.optimizer.zero_grad()
        self.scaler.update(found_inf)
        if self.scaler.enabled or self.guard is not None:
            record["skipped_steps"] = self.scaler.skipped_steps + (
                self.guard.skipped_steps if self.guard is not None else 0)
        self.step += 1
        return record

    def _rewind(self, plan, why):
        """PaLM's remedy (spike_guard.py): back to checkpoint plan.checkpoint_step, the data
        order moved plan.skip_updates updates on, past the batches of the spike. The
        checkpoints and metrics after that step belong to the abandoned stretch and are
        dropped (this run wrote them); the checkpoint is saved again with the moved data
        position, so a run killed afterwards resumes past the skipped batches too."""
        spike = self.step + 1
        self.optimizer.zero_grad()
        path = self.run_dir / "checkpoints" / checkpoint_name(plan.checkpoint_step)
        self._restore(load_checkpoint(path, self.model, self.optimizer), path)
        self.world.barrier()  # every rank has read it before rank 0 replaces it
        cfg = self.config
        self.position += plan.skip_updates * cfg.grad_accum * cfg.batch_size
        if self.main:
            for step in checkpoint_steps(self.run_dir):
                if step > self.step:
                    shutil.rmtree(self.run_dir / "checkpoints" / checkpoint_name(step))
        self.save(replace=True)
        self.history = self.metrics.kept_until(self.step)
        record = {"step": self.step, "rewind": {"spike_at": spike, "to": self.step,
                                                "skipped_updates": plan.skip_updates,
                                                "why": why}}
        self._record(record)
        return record

    def _diverged(self, what):
        self.optimizer.zero_grad()
        where = (f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint
                 else "no checkpoint was saved")
        clip = self.config.clip_grad_norm
        remedy = ("lower the learning rate (--lr) or clip gradients (--clip 1.0)" if clip is None
                  else f"lower the learning rate (--lr) or the clipping norm (--clip, now "
                       f"{clip:g})")
        raise TrainingDiverged(f"{what} at step {self.step + 1} (update {self.step}); stopped "
                               f"before applying it; {where}. To go on, {remedy}.")

    # --- evaluation ----------------------------------------------------------------------
    def evaluate(self):
        """Mean loss over the first eval_batches validation micro-batches, always the same
        examples and the same random choices, so passes are comparable."""
        if not self.has_val:
            return None
        B, model, world = self.config.batch_size, self.model, self.world
        model.eval()
        losses, count = [], 0
        with no_grad():
            for i in range(self.config.eval_batches):
                lo = i * B
                if lo >= len(self.val_examples):
                    break
                count += 1
                if i % world.size != world.rank:
                    continue  # several ranks: batch i is rank i mod N's
                hi = min(lo + B, len(self.val_examples))
                examples = [self.val_examples[j] for j in range(lo, hi)]
                rng = np.random.default_rng([self.config.seed, _VAL, i, 0])
                batch = self._collate(examples, rng, np.arange(lo, hi))
                losses.append(float(self.loss_fn(model, batch).item()))
        model.train()
        if world.size > 1:
            return world.sum(sum(losses)) / count
        return float(np.mean(losses))

    # --- checkpoints ---------------------------------------------------------------------
    def save(self, replace=False):
        """Checkpoint the run as it stands between two steps (nothing without run_dir);
        replace=True writes it even where a checkpoint of this step exists (a rewind)."""
        if self.run_dir is None:
            return None
        if not self.main:  # rank 0 writes; ZeRO's moments are gathered from every rank
            if isinstance(self.optimizer, ZeroAdamW):
                self.optimizer.state_arrays()
            return None
        state = {"step": self.step, "position": self.position, "rng": rng_states(self.model),
                 "train_config": asdict(self.config), "run": self.run_info,
                 "tokens_seen": self._tokens_seen}
        if self.scaler.enabled:
            state["loss_scaler"] = self.scaler.state()
        if self.guard is not None:
            state["spike_guard"] = self.guard.state()
        self.last_checkpoint = save_checkpoint(self.run_dir, self.step, self.model,
                                               self.optimizer, state,
                                               keep=self.config.keep_checkpoints,
                                               tokenizer=self.tokenizer, replace=replace)
        return self.last_checkpoint

    def resume(self):
        """Continue from the run folder's newest checkpoint, if any; returns its step."""
        path = None if self.run_dir is None else latest_checkpoint(self.run_dir)
        if path is None:
            return 0
        state = load_checkpoint(path, self.model, self.optimizer)
        check_same_run(path, state.get("train_config", {}), self.config,
                       ("batch_size", "grad_accum", "seed"))
        self._restore(state, path)
        self.history = self.metrics.kept_until(self.step)
        return self.step

    def _restore(self, state, path):
        """The loop's own state from a checkpoint's trainer_state.json."""
        self.step, self.position = int(state["step"]), int(state["position"])
        self._tokens_seen = int(state.get("tokens_seen", 0))
        if self.scaler.enabled and "loss_scaler" in state:
            self.scaler.load_state(state["loss_scaler"])
        if self.guard is not None and "spike_guard" in state:
            self.guard.load_state(state["spike_guard"])
        self.last_checkpoint = path

    # --- metrics -------------------------------------------------------------------------
    @property
    def metrics(self):
        return MetricsFile.of_run(self.run_dir if self.main else None)

    def _record(self, record):
        self.history.append(record)
        self.metrics.append(record)

    def plot(self):
        """loss.png in the run folder: training and validation loss against step."""
        if self.run_dir is not None and self.main:
            plot_losses(self.history, self.run_dir / "loss.png")

    # --- the loop ------------------------------------------------------------------------
    def fit(self, resume=True, stop_at=None):
        """Train to config.steps (or stop after update `stop_at`); returns self.history.

        With resume=True and a checkpoint in run_dir, training continues from it. The
        process settings of npplm.runtime.configure() are applied first.
        """
        runtime.configure()
        if self.world.size == 1:
            return self._fit(resume, stop_at)
        try:
            return self._fit(resume, stop_at)
        except (TrainingDiverged, KeyboardInterrupt):
            raise  # every rank saw the same sums and stops the same way
        except Exception as e:  # one rank alone: end the job, or the others wait forever
            self.world.abort(f"npplm: rank {self.world.rank} of {self.world.size} failed at "
                             f"step {self.step + 1}: {type(e).__name__}: {e}")

    def _fit(self, resume, stop_at):
        cfg = self.config
        self._tokens_seen = 0
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.resumed_from = self.resume() if resume else 0
            if not self.resumed_from:
                self.metrics.write([])
            else:  # said with or without the progress bar
                self.log(f"resuming from {self.last_checkpoint} (step {self.step} of "
                         f"{cfg.steps})")
        if self.world.size > 1:
            for p in self.optimizer.params:  # several ranks start from rank 0's weights
                self.world.broadcast(p.data)
            pids = np.zeros(self.world.size, np.int64)
            self.world.allgather(np.array([os.getpid()], np.int64), pids)
            self.log(f"{self.world.size} ranks, data parallel{' with ZeRO-1' * cfg.zero}: "
                     + ", ".join(f"rank {r} pid {pid}" for r, pid in enumerate(pids))
                     + " (a rank that dies is named by its pid in mpiexec's report)")
        last = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        bar = _progress_bar(cfg.steps, self.step) if self.progress else None
        say = bar.write if bar is not None else self.log
        if self.step == 0 and self.has_val:
            self._evaluate_and_log(say)
        window_tokens, window_time = 0, 0.0  # tokens/s counts training steps only
        restore = self._catch_ctrl_c()
        try:
            while self.step < last:
                if self.world.sum(self._interrupted):  # on any rank: all save and stop
                    self.save()
                    say(f"interrupted: saved step {self.step} to {self.last_checkpoint}")
                    raise KeyboardInterrupt
                started = time.perf_counter()
                record = self.train_step()
                if "rewind" in record:
                    r = record["rewind"]
                    say(f"update {r['spike_at']}: spikes persisted ({r['why']}); rewound to "
                        f"step {r['to']}, the data order moved {r['skipped_updates']} updates on")
                    continue
                window_time += time.perf_counter() - started
                self._tokens_seen += record["tokens"]
                window_tokens += record["tokens"]
                record["tokens_per_s"] = window_tokens / max(window_time, 1e-9)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                                    tok_s=f"{record['tokens_per_s']:,.0f}")
                if "skipped" in record:
                    say(f"step {self.step}: update skipped: {record['skipped']}")
                if self.step % cfg.log_every == 0 or self.step == last or "skipped" in record:
                    record["tokens_seen"] = self._tokens_seen
                    self._record(record)
                    window_tokens, window_time = 0, 0.0
                if self.has_val and (self.step == cfg.steps
                                     or (cfg.eval_every and self.step % cfg.eval_every == 0)):
                    self._evaluate_and_log(say)
                if self.step == cfg.steps or (cfg.save_every and self.step % cfg.save_every == 0):
                    self.save()
        finally:
            restore()
            if bar is not None:
                bar.close()
        if self.step == last and self.step != cfg.steps:
            self.save()  # stopped early on purpose: leave a checkpoint to resume from
        self.plot()
        return self.history

    def _catch_ctrl_c(self):
        """The first Ctrl-C only sets a flag the loop checks between steps; returns the
        function that puts the previous handler back."""
        self._interrupted = False
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            self._interrupted = True
            signal.signal(signal.SIGINT, previous)  # a second Ctrl-C: stop at once

        signal.signal(signal.SIGINT, handler)
        return lambda: signal.signal(signal.SIGINT, previous)

    def _evaluate_and_log(self, say):
        loss = self.evaluate()
        record = {"step": self.step, "val_loss": loss}
        text = f"step {self.step:6d} | validation loss {loss:.4f}"
        if self.perplexity:
            record["val_ppl"] = math.exp(min(loss, 700.0))
            text += f" | perplexity {record['val_ppl']:10.2f}"
        if self.eval_metrics is not None and self.main:
            extra = self.eval_metrics(self.model)
            record.update(extra)
            text += "".join(f" | {k} {v:.4g}" for k, v in extra.items())
        if self.sample is not None and self.main:
            record["sample"] = self.sample(self.model)
            text += "\n" + record["sample"]
        self._record(record)
        self.plot()
        say(text)


def reseed_dropout(model, seed, step, rank):
    """With several ranks, each Dropout draws from (seed, step, rank, its index): ranks
    draw different masks for their different rows, and a resumed run draws the same ones
    without saving any rank's generator. (One process keeps its saved generators.)"""
    for index, (_, module) in enumerate(dropout_modules(model)):
        module.rng = np.random.default_rng([seed, _TRAIN, step, rank, index])


def _progress_bar(total, initial):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                desc="training")


def plot_losses(history, path):
    """Training loss (each logged step) and validation loss against step, to a PNG,
    written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in history if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if train:
        ax.plot(*zip(*train), label="training loss", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
