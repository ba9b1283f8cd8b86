"""The engine: one thread owns the model and decodes; requests wait their turn in a queue.

    engine = Engine(model, tokenizer)
    job = engine.submit(Job(prompt_ids, max_new_tokens=64, temperature=0.0, stop=["\\n\\n"]),
                        emit=callback)       # QueueFull when max_queue jobs already wait
    callback(("text", "Hel")), callback(("text", "lo")), ...,
    callback(("done", Finished(finish_reason="stop", prompt_tokens=9, completion_tokens=2)))

A job decodes token by token through the model's cached `stream_generate` (greedy at
temperature 0, else sampling from `seed`). Text is emitted as soon as it decodes to whole
characters and cannot be the start of a stop sequence; a stop sequence ends the job with
finish_reason "stop" and is not emitted (OpenAI's behaviour), as does the model's EOS;
max_new_tokens ends it with "length". A job whose client went away (`job.cancel()`) stops
at the next token. Each finished job logs one line: its id, prompt and completion tokens,
the time to its first token and its decoding speed.

This first engine runs one job at a time, in arrival order. Its interface (submit, emit,
cancel) is what a continuously batching engine keeps: jobs joining the running batch at
the next step instead of waiting for it to drain.
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

    def __init__(self, model, tokenizer, max_queue=64, timeout=600.0):
        from npplm.inference import eos_ids

        self.model, self.tokenizer = model, tokenizer
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
        """Decode one job to its end; returns Finished (see the module docstring)."""
        started = time.perf_counter()
        deadline = started + self.timeout
        new, sent, first = [], "", None
        reason = "length"
        ids = np.asarray([job.prompt_ids], dtype=np.int64)  # (1, T)
        with no_grad():
            steps = self.model.stream_generate(
                ids, job.max_new_tokens, temperature=job.temperature, top_k=job.top_k,
                top_p=job.top_p, eos_token_id=sorted(self.eos) or None, seed=job.seed)
            for tokens in steps:
                token = int(tokens[0])
                if first is None:
                    first = time.perf_counter() - started
                if token in self.eos:
                    reason = "stop"
                    break
                new.append(token)
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # the rest of a multi-byte character is to come
                    continue
                cut = min((text.find(s) for s in job.stop if s in text), default=-1)
                if cut >= 0:  # a stop sequence: emit up to it, not it
                    if cut > len(sent):
                        job.emit(("text", text[len(sent):cut]))
                    sent, reason = text[:cut], "stop"
                    break
                shown = len(text) - held_back(text, job.stop)
                if shown > len(sent):
                    job.emit(("text", text[len(sent):shown]))
                    sent = text[:shown]
                if job.cancelled.is_set():
                    reason = "cancelled"
                    break
                if time.perf_counter() > deadline:
                    break
        if reason == "length":  # what a possible stop's prefix held back
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if len(text) > len(sent):
                job.emit(("text", text[len(sent):]))
        seconds = time.perf_counter() - started
        decoding = seconds - (first or 0.0)
        finished = Finished(reason, len(job.prompt_ids), len(new), first,
                            (len(new) - 1) / decoding if len(new) > 1 and decoding > 0 else None)
        with self._lock:
            self.counters["completed" if reason != "cancelled" else "cancelled"] += 1
            self.counters["prompt_tokens"] += finished.prompt_tokens
            self.counters["completion_tokens"] += finished.completion_tokens
        log.info("%s: %d prompt + %d completion tokens, %s, first token %.3f s, %s tokens/s",
                 job.id, finished.prompt_tokens, finished.completion_tokens, reason,
                 first or 0.0, f"{finished.tokens_per_s:.1f}" if finished.tokens_per_s else "-")
        return finished
