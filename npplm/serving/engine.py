"""The engines: one thread owns the model and decodes; requests wait their turn in a queue.

    engine = BatchingEngine(model, tokenizer, max_batch=8)
    job = engine.submit(Job(prompt_ids, max_new_tokens=64, temperature=0.0, stop=["\\n\\n"]),
                        emit=callback)       # QueueFull when max_queue jobs already wait
    callback(("text", "Hel")), callback(("text", "lo")), ...,
    callback(("done", Finished(finish_reason="stop", prompt_tokens=9, completion_tokens=2)))

Each job is a Sequence: token by token (greedy at temperature 0, else sampled from its own
generator, seeded by its `seed` exactly as a lone `generate` seeds it), its text is emitted
as soon as it decodes to whole characters and cannot be the start of a stop sequence; a
stop sequence ends the job with finish_reason "stop" and is not emitted (OpenAI's
behaviour), as does the model's EOS; max_new_tokens or the time limit end it with "length".
A job whose client went away (`job.cancel()`) stops at its next token. Each finished job
logs one line: its id, prompt and completion tokens, the time to its first token and its
decoding speed.

    Engine          one job at a time, in arrival order, through the model's cached
                    `stream_generate` (what any decoder offers)
    BatchingEngine  continuous batching: up to max_batch jobs decode together, one token
                    each per forward pass. A job that arrives is prefilled alone (its prompt
                    into a KV cache of its own), then joins the running batch at the next
                    step: its cache is stacked onto the batch's, everything right-aligned
                    (left padding, which the attention mask hides and the positions skip:
                    a decoder numbers positions from the mask). A finished or cancelled
                    job leaves at once, its cache rows dropped (KVCache.rows, KVCache.stacked).
                    Decoding memory-bound weights once for R rows instead of R times is what
                    batching buys; each row's tokens stay those it would get alone, up to
                    float32 rounding (a batched product sums in another order; greedy
                    answers of SmolLM2 came out identical in every test).

The engine's thread is the only one that runs the model: the HTTP side only tokenizes. That
matters beyond tidiness: Numba's "workqueue" layer (NUMBA_THREADING_LAYER=workqueue) aborts
the process when two threads launch parallel kernels at once. The OpenMP layer that
npplm.runtime chooses allows it, but one engine thread keeps the model's kernels from
competing for the cores.
"""

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from autograd import no_grad

log = logging.getLogger("npplm.serving")


class QueueFull(RuntimeError):
    """max_queue jobs are already waiting."""


@dataclass
class Finished:
    """How a job ended: "stop" (EOS or a stop sequence), "length" (max_new_tokens or the
    request's time limit) or "cancelled" (its client left); its token counts."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds_to_first_token: float | None = None
    tokens_per_s: float | None = None


@dataclass
class Job:
    """One request to decode: prompt ids and sampling settings; see the module docstring."""

    prompt_ids: list
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list = field(default_factory=list)
    id: str = ""
    emit: object = None  # set by Engine.submit
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self):
        self.cancelled.set()


def held_back(text, stops):
    """How many characters at the end of `text` could be the start of a stop sequence (and
    so must wait before being shown)."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                longest = max(longest, k)
                break
    return longest


class Engine:
    """The model, its tokenizer, and the thread that decodes queued jobs one at a time."""

    def __init__(self, model, tokenizer, max_queue=64, timeout=600.0, kv_cache_dtype=None):
        from npplm.inference import eos_ids

        self.model, self.tokenizer = model, tokenizer
        self.kv_cache_dtype = kv_cache_dtype  # what every job's cache stores (model.new_cache)
        self.eos = eos_ids(model, tokenizer)
        self.timeout = timeout
        self.jobs = queue.Queue(maxsize=max_queue)
        self.counters = {"requests": 0, "completed": 0, "cancelled": 0, "prompt_tokens": 0,
                         "completion_tokens": 0}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        model.eval()
        self.thread = threading.Thread(target=self._work, name="npplm-engine", daemon=True)
        self.thread.start()

    def submit(self, job, emit):
        """Queue `job`; emit(event) will be called from the engine's thread with each
        ("text", piece) and finally ("done", Finished) or ("error", message)."""
        job.emit = emit
        job.id = job.id or f"req-{next(self._ids)}"
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"the server is busy: {self.jobs.maxsize} requests are already "
                            "waiting; retry later") from None
        with self._lock:
            self.counters["requests"] += 1
        return job

    def _work(self):
        while True:
            job = self.jobs.get()
            try:
                finished = self.run(job)
                job.emit(("done", finished))
            except Exception as e:  # a bug must not kill the server: the request gets it
                log.exception("request %s failed", job.id)
                job.emit(("error", f"{type(e).__name__}: {e}"))

    def run(self, job):
        """Decode one job to its end through stream_generate; returns Finished."""
        seq = Sequence(job, self.tokenizer, self.eos, self.timeout)
        ids = np.asarray([job.prompt_ids], dtype=np.int64)  # (1, T)
        with no_grad():
            steps = self.model.stream_generate(
                ids, job.max_new_tokens, temperature=job.temperature, top_k=job.top_k,
                top_p=job.top_p, eos_token_id=sorted(self.eos) or None, seed=job.seed,
                kv_cache_dtype=self.kv_cache_dtype)
            for tokens in steps:
                if seq.accept(int(tokens[0])):
                    break
        return self.finish(seq)

    def finish(self, seq):
        """Close a Sequence: flush held-back text, count, log; returns its Finished."""
        finished = seq.close()
        with self._lock:
            self.counters["cancelled" if finished.finish_reason == "cancelled"
                          else "completed"] += 1
            self.counters["prompt_tokens"] += finished.prompt_tokens
            self.counters["completion_tokens"] += finished.completion_tokens
        log.info("%s: %d prompt + %d completion tokens, %s, first token %.3f s, %s tokens/s",
                 seq.job.id, finished.prompt_tokens, finished.completion_tokens,
                 finished.finish_reason, finished.seconds_to_first_token or 0.0,
                 f"{finished.tokens_per_s:.1f}" if finished.tokens_per_s else "-")
        return finished


class Sequence:
    """One job's decoding state: its tokens, the text emitted so far, its generator.

    accept(token) takes the next token and returns the finish reason when the job is over
    (None while it goes on); close() flushes what a possible stop's prefix held back."""

    def __init__(self, job, tokenizer, eos, timeout):
        self.job, self.tokenizer, self.eos = job, tokenizer, eos
        self.started = time.perf_counter()
        self.deadline = self.started + timeout
        self.rng = np.random.default_rng(job.seed)  # as stream_tokens seeds a lone generate
        self.new, self.sent, self.first, self.reason = [], "", None, None

    @property
    def remaining(self):
        return self.job.max_new_tokens - len(self.new)

    def accept(self, token):
        job = self.job
        if self.first is None:
            self.first = time.perf_counter() - self.started
        if token in self.eos:
            self.reason = "stop"
            return self.reason
        self.new.append(token)
        text = self.tokenizer.decode(self.new, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # else the rest of a character is still to come
            cut = min((text.find(s) for s in job.stop if s in text), default=-1)
            if cut >= 0:  # a stop sequence: emit up to it, not it
                if cut > len(self.sent):
                    job.emit(("text", text[len(self.sent):cut]))
                self.sent, self.reason = text[:cut], "stop"
                return self.reason
            shown = len(text) - held_back(text, job.stop)
            if shown > len(self.sent):
                job.emit(("text", text[len(self.sent):shown]))
                self.sent = text[:shown]
        if job.cancelled.is_set():
            self.reason = "cancelled"
        elif len(self.new) >= job.max_new_tokens or time.perf_counter() > self.deadline:
            self.reason = "length"
        return self.reason

    def close(self):
        reason = self.reason or "length"
        if reason == "length":  # what a possible stop's prefix held back
            text = self.tokenizer.decode(self.new, skip_special_tokens=True)
            if len(text) > len(self.sent):
                self.job.emit(("text", text[len(self.sent):]))
        seconds = time.perf_counter() - self.started
        decoding = seconds - (self.first or 0.0)
        n = len(self.new)
        return Finished(reason, len(self.job.prompt_ids), n, self.first,
                        (n - 1) / decoding if n > 1 and decoding > 0 else None)


class BatchingEngine(Engine):
    """Continuous batching over a decoder's KV cache (see the module docstring): up to
    max_batch jobs decode together; a new job joins at the next step, a finished one leaves
    at once."""

    def __init__(self, model, tokenizer, max_queue=64, timeout=600.0, max_batch=8,
                 kv_cache_dtype=None):
        self.max_batch = max_batch
        self.active, self.cache, self.mask = [], None, None  # rows, KVCache, (R, L) 1/0
        super().__init__(model, tokenizer, max_queue=max_queue, timeout=timeout,
                         kv_cache_dtype=kv_cache_dtype)

    def _work(self):
        while True:
            self._admit()
            if not self.active:
                continue
            try:
                self._step()
            except Exception as e:  # every running job gets it; the engine goes on
                log.exception("a decoding step failed")
                for seq in self.active:
                    seq.job.emit(("error", f"{type(e).__name__}: {e}"))
                self.active, self.cache, self.mask = [], None, None

    def _admit(self):
        """Prefill waiting jobs into the batch while there is room (wait for one when idle)."""
        while len(self.active) < self.max_batch:
            try:
                job = self.jobs.get(block=not self.active)
            except queue.Empty:
                return
            try:
                self._join(job)
            except Exception as e:
                log.exception("request %s failed", job.id)
                job.emit(("error", f"{type(e).__name__}: {e}"))

    def _choose(self, seq, logits):
        from npplm.generation.sampling import choose_next

        return int(choose_next(logits, seq.job.temperature, seq.job.top_k, seq.job.top_p,
                               seq.rng)[0])

    def _join(self, job):
        """Prefill `job` alone, choose its first token, and stack it onto the batch."""
        from autograd import to_numpy

        seq = Sequence(job, self.tokenizer, self.eos, self.timeout)
        P = len(job.prompt_ids)
        ids, ones = np.asarray([job.prompt_ids], np.int64), np.ones((1, P), np.int64)
        cache = self.model.new_cache(1, P, dtype=self.kv_cache_dtype)
        with no_grad():
            logits = self.model(ids, attention_mask=ones, cache=cache).logits
        seq.last = self._choose(seq, to_numpy(logits.data[:, -1]))  # (1, V)
        if seq.accept(seq.last):
            job.emit(("done", self.finish(seq)))
            return
        rows = self.active + [seq]
        L = max(P, 0 if self.cache is None else self.cache.length)
        room = L + max(r.remaining for r in rows)
        parts = [cache] if self.cache is None else [self.cache, cache]
        masks = [ones] if self.mask is None else [self.mask, ones]
        self.cache = type(cache).stacked(parts, room)
        self.mask = np.concatenate([np.pad(m, ((0, 0), (L - m.shape[1], 0))) for m in masks])
        self.active = rows

    def _step(self):
        """One token for every row; the finished leave the batch."""
        from autograd import to_numpy

        R = len(self.active)
        tokens = np.array([[seq.last] for seq in self.active], dtype=np.int64)  # (R, 1)
        self.mask = np.concatenate([self.mask, np.ones((R, 1), np.int64)], axis=1)
        with no_grad():
            logits = self.model(tokens, attention_mask=self.mask, cache=self.cache).logits
        logits = to_numpy(logits.data[:, -1])  # (R, V)
        keep = []
        for i, seq in enumerate(self.active):
            seq.last = self._choose(seq, logits[i:i + 1])
            if seq.accept(seq.last):
                seq.job.emit(("done", self.finish(seq)))
            else:
                keep.append(i)
        if len(keep) == R:
            return
        if not keep:
            self.active, self.cache, self.mask = [], None, None
            return
        mask = self.mask[keep]
        start = int(mask.any(axis=0).argmax())  # columns before it: padding in every row
        self.cache = self.cache.rows(keep, start)
        self.mask = mask[:, start:]
        self.active = [self.active[i] for i in keep]
