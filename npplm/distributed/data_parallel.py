"""Data parallelism: every rank holds the whole model and computes on its slice of each batch.

One update on N ranks, for the same global batch one process would use:

    every rank collates the whole micro-batch (same rng: same masks)   trainer.py
    rank r keeps rows [r B/N, (r+1) B/N) of it                         shard_batch
    loss_r = mean over its n_r scored tokens;  weight = n_r / n_total   shard_weights
    (loss_r * weight).backward()    buckets all-reduce as they fill      GradientBuckets
    g = sum over ranks of the weighted gradients = one process's g      (exact, see below)

Why it is exact: one process's loss is the mean over all n_total = sum_r n_r scored tokens
of the global batch, = sum_r (n_r / n_total) * loss_r, so its gradient is the sum over
ranks of each rank's weighted gradient: an all-reduce with SUM, not an average. n_total is
counted on every rank from the whole batch it collated, with no message. MLM's shards mask
different numbers of tokens and still weigh exactly. With gradient accumulation n_total
counts every micro-batch of the update. A loss with a per-sequence term (BERT's NSP) weighs
rows instead (rows_r / (B A)): exact for that term, as trainer.py explains for accumulation.

Buckets (PyTorch DDP's design, Li et al., "PyTorch Distributed", VLDB 2020): the
parameters, in reverse order (roughly the order backward completes their gradients), are
cut into buckets of about 25 MB, each one flat buffer. When a parameter's gradient is
complete (the engine's on_leaf_done), it is copied into its bucket; when a bucket is full,
its all-reduce starts (MPI_Iallreduce) and backward goes on with the layers below while it
travels. Each later completed gradient polls the in-flight requests (MPICH progresses only
inside MPI calls, see world.py). `finish()` waits for the rest and points every `p.grad`
at its slice of the summed bucket. With accumulation only the last micro-batch's backward
reduces; the earlier ones add into `.grad` locally (DDP's no_sync).

`allreduce_flat` is the plain version: one buffer, one all-reduce after backward. The two
give the same sums (tests/distributed); the buckets only hide the time.
"""

import time

from autograd import array_module

BUCKET_BYTES = 25 * 2**20  # PyTorch DDP's default bucket_cap_mb


def shard_rows(n, rank, size):
    """The rows [lo, hi) of an n-row batch that rank `rank` of `size` takes: contiguous,
    sizes differing by at most one (np.array_split's split)."""
    if n < size:
        raise ValueError(f"a micro-batch of {n} examples cannot be split over {size} ranks: "
                         f"use --batch-size >= {size}")
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def batch_rows(batch):
    return len(batch["input_ids"])


def shard_batch(batch, rank, size):
    """A collated batch's rows for this rank: every array whose first axis is the batch."""
    n = batch_rows(batch)
    lo, hi = shard_rows(n, rank, size)
    return {k: (v[lo:hi] if getattr(v, "ndim", 0) >= 1 and len(v) == n else v)
            for k, v in batch.items()}


def shard_weights(batches, shards, count, sequence_terms):
    """Each shard's share of the update (module docstring): its scored tokens over those of
    every full micro-batch, count(batch) giving a batch's number (None without labels); or
    rows over all rows when there is a per-sequence term or nothing is counted."""
    totals = [count(b) for b in batches]
    if sequence_terms or None in totals or not sum(totals):
        rows = sum(batch_rows(b) for b in batches)
        return [batch_rows(s) / rows for s in shards]
    return [count(s) / sum(totals) for s in shards]


class GradientBuckets:
    """Sums gradients over ranks during backward, in buckets (see the module docstring).

    params   the model's parameters in the model's order (model.parameters(): embeddings
             first, then block by block), which buckets take reversed; not an optimizer's
             order, which groups matrices before vectors and would put the first block's
             biases, complete only at the end of backward, into the first bucket
    world    a world.Mpi (or SingleProcess: then nothing is sent)
    """

    def __init__(self, params, world, bucket_bytes=BUCKET_BYTES):
        self.world = world
        self.buckets = []  # each: {"params": [...], "offsets": [...], "buffer": flat array}
        self.where = {}  # id(param) -> (bucket index, offset)
        current, size, nbytes = [], 0, 0
        for p in reversed(params):
            if current and (nbytes + p.data.nbytes > bucket_bytes
                            or p.dtype != current[0].dtype):
                self._add_bucket(current, size)
                current, size, nbytes = [], 0, 0
            self.where[id(p)] = (len(self.buckets), size)
            current.append(p)
            size += p.size
            nbytes += p.data.nbytes
        if current:
            self._add_bucket(current, size)
        self.wait_s = 0.0  # time spent waiting in finish(): the communication not hidden
        self.bytes_sent = self.bytes_done_in_backward = 0  # how much overlapped backward
        self._reset()

    def _add_bucket(self, params, size):
        xp = array_module(params[0].data)
        self.buckets.append({"params": params, "buffer": xp.empty(size, params[0].dtype)})

    def _reset(self):
        self.missing = [len(b["params"]) for b in self.buckets]  # gradients still to come
        self.requests = [None] * len(self.buckets)
        self.started = [False] * len(self.buckets)

    @property
    def nbytes(self):
        return sum(b["buffer"].nbytes for b in self.buckets)

    def on_leaf_done(self, p):
        """The engine's callback: p.grad is complete. Copy it into its bucket; start the
        bucket's all-reduce once every gradient in it has arrived; poll the others."""
        if id(p) not in self.where:
            return  # not a parameter (an input that required gradients)
        i, offset = self.where[id(p)]
        self.buckets[i]["buffer"][offset:offset + p.size] = p.grad.reshape(-1)
        self.missing[i] -= 1
        if self.missing[i] == 0:
            self._start(i)
        self.world.poll(self.requests)

    def _start(self, i):
        self.started[i] = True
        self.requests[i] = self.world.iallreduce(self.buckets[i]["buffer"])

    def finish(self):
        """After the last backward of an update: send the buckets that never filled (a
        parameter without a gradient counts as zeros), wait for all, and point each
        p.grad at its summed slice. A parameter with no gradient here keeps none."""
        for i, bucket in enumerate(self.buckets):  # (the statistics of overlap)
            self.bytes_sent += bucket["buffer"].nbytes
            if self.started[i] and self.world.poll([self.requests[i]]):
                self.bytes_done_in_backward += bucket["buffer"].nbytes
        for i, bucket in enumerate(self.buckets):
            if not self.started[i]:
                for p in bucket["params"]:  # (copied again if reported: harmless)
                    _, offset = self.where[id(p)]
                    bucket["buffer"][offset:offset + p.size] = (
                        0 if p.grad is None else p.grad.reshape(-1))
                self._start(i)
        started = time.perf_counter()
        self.world.wait(self.requests, "the gradient all-reduce")
        self.wait_s += time.perf_counter() - started
        for bucket in self.buckets:
            for p in bucket["params"]:
                if p.grad is not None:
                    _, offset = self.where[id(p)]
                    p.grad = bucket["buffer"][offset:offset + p.size].reshape(p.shape)
        self._reset()


def allreduce_flat(params, world):
    """Sum every parameter's gradient over ranks with one flat all-reduce after backward
    (the reference the buckets must equal; no overlap)."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return
    xp = array_module(grads[0].grad)
    flat = xp.concatenate([p.grad.reshape(-1) for p in grads])
    world.allreduce(flat)
    offset = 0
    for p in grads:
        p.grad = flat[offset:offset + p.size].reshape(p.shape)
        offset += p.size
