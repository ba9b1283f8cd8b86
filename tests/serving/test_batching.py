"""Continuous batching (BatchingEngine) against a lone `generate`: jobs that join while others
decode and leave at different lengths get the tokens each would get alone, greedy and
sampled from their seeds; the KV cache's rows and stacking keep every row's keys.

The lone answers are computed before an engine starts: the engine's thread is the one that
decodes, and under Numba's "workqueue" layer (if a user chooses it) only one thread may
launch parallel kernels at a time."""

import queue

import numpy as np
import pytest

from npplm.generation.kv_cache import KVCache
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.serving.engine import BatchingEngine, Job
from tests.serving.fakes import Letters


@pytest.fixture(scope="module")
def model():
    config = GPTConfig.tiny(vocab_size=26, n_positions=96, bos_token_id=None, eos_token_id=25)
    return GPT2LMHeadModel(config, seed=5).eval()


def alone(model, job, kv_cache_dtype=None):
    out = model.generate(np.array([job.prompt_ids]), job.max_new_tokens,
                         temperature=job.temperature, top_p=job.top_p, seed=job.seed,
                         eos_token_id=25, kv_cache_dtype=kv_cache_dtype)
    out = out[0, len(job.prompt_ids):].tolist()
    return "".join(chr(97 + t) for t in (out[:out.index(25)] if 25 in out else out))


@pytest.mark.parametrize("kv_cache_dtype", [None, "int8"])
def test_joining_and_leaving_jobs_get_what_they_would_get_alone(model, kv_cache_dtype):
    # With an int8 cache too: each cached vector is quantised on its own, batched or not.
    rng = np.random.default_rng(0)
    jobs = [Job(rng.integers(0, 25, size=int(rng.integers(1, 12))).tolist(),
                max_new_tokens=int(rng.integers(1, 30)),
                temperature=[0.0, 1.0, 0.7][k % 3], top_p=[None, None, 0.9][k % 3], seed=k)
            for k in range(12)]
    expected = [alone(model, job, kv_cache_dtype) for job in jobs]  # before the engine runs
    engine = BatchingEngine(model, Letters(), max_batch=4, kv_cache_dtype=kv_cache_dtype)
    events = [queue.Queue() for _ in jobs]
    for job, q in zip(jobs, events):  # 12 jobs, at most 4 at a time: they join as others leave
        engine.submit(job, q.put)
    for q, text in zip(events, expected):
        pieces, kind = [], None
        while kind != "done":
            kind, value = q.get(timeout=60)
            assert kind in ("text", "done"), value
            if kind == "text":
                pieces.append(value)
        assert "".join(pieces) == text
    assert engine.counters["completed"] == 12 and not engine.active


def test_cache_rows_and_stacking_keep_each_rows_keys():
    a = KVCache(2, 2, 1, 3, 10, np.float32)
    b = KVCache(2, 1, 1, 3, 6, np.float32)
    for cache, n in ((a, 4), (b, 2)):
        for layer in range(2):
            k = np.random.default_rng(layer + n).normal(size=(cache.keys[0].shape[0], 1, n, 3))
            cache.update(layer, k.astype(np.float32), (k + 1).astype(np.float32))
        cache.advance(n)
    both = KVCache.stacked([a, b], 9)
    assert both.length == 4 and both.keys[0].shape == (3, 1, 9, 3)
    np.testing.assert_array_equal(both.keys[1][:2, :, :4], a.keys[1][:, :, :4])
    np.testing.assert_array_equal(both.values[0][2:, :, 2:4], b.values[0][:, :, :2])
    assert not both.keys[0][2:, :, :2].any()  # b's left padding
    kept = both.rows([2, 0], start=1)
    assert kept.length == 3 and kept.keys[0].shape == (2, 1, 8, 3)
    np.testing.assert_array_equal(kept.keys[0][1, :, :3], a.keys[0][0, :, 1:4])
    np.testing.assert_array_equal(kept.values[1][0, :, 1:3], b.values[1][0, :, :2])
    with pytest.raises(ValueError, match="max_length 3"):
        KVCache.stacked([a, b], 3)


def test_a_cancelled_job_leaves_the_batch_and_the_others_go_on(model):
    import threading

    long, other = Job([1, 2, 3], 60, temperature=0.0), Job([4, 5], 20, temperature=0.0)
    expected = alone(model, other)  # before the engine's thread runs kernels
    engine = BatchingEngine(model, Letters(), max_batch=4)
    first, second, cancelled = queue.Queue(), queue.Queue(), threading.Event()

    def emit_long(event):  # the engine's thread waits here, at the first text, for the cancel
        first.put(event)
        if event[0] == "text" and not cancelled.is_set():
            assert cancelled.wait(timeout=60)

    engine.submit(long, emit_long)
    engine.submit(other, second.put)
    assert first.get(timeout=60)[0] == "text"
    long.cancel()
    cancelled.set()
    while (event := first.get(timeout=60))[0] == "text":
        pass
    assert event[1].finish_reason == "cancelled" and event[1].completion_tokens < 60
    pieces = []
    while (event := second.get(timeout=60))[0] == "text":
        pieces.append(event[1])
    assert "".join(pieces) == expected
    assert engine.counters["cancelled"] == 1 and not engine.active
