"""The engine on its own: stop sequences held back until they cannot match, cancellation,
a full queue, and a failing request that leaves the engine running."""

import queue
import threading

import pytest

from npplm.serving.engine import Engine, Job, QueueFull, held_back
from tests.serving.fakes import Letters, Script, ids


def run(engine, job):
    """The events of one job, in order."""
    events = queue.Queue()
    engine.submit(job, events.put)
    out = []
    while True:
        event = events.get(timeout=10)
        out.append(event)
        if event[0] != "text":
            return out


def text(events):
    return "".join(v for k, v in events if k == "text")


def test_held_back_is_the_longest_stop_prefix_at_the_end():
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("hello", ["world", "lo!"]) == 2
    assert held_back("hello", ["xyz"]) == 0


def test_stop_sequences_end_the_job_and_are_not_emitted():
    engine = Engine(Script(ids("abcdefgh")), Letters())
    events = run(engine, Job([0], 20, stop=["def", "xyz"]))
    assert text(events) == "abc" and events[-1][1].finish_reason == "stop"
    assert events[-1][1].completion_tokens == 6  # a b c d e f were decoded
    assert all(not v.endswith("d") for k, v in events if k == "text")  # "d" was held back
    events = run(engine, Job([0], 20, stop=["dex"]))  # a prefix that never completes
    assert text(events) == "abcdefgh" and events[-1][1].finish_reason == "length"
    events = run(engine, Job([0], 3))
    assert text(events) == "abc" and events[-1][1].finish_reason == "length"
    engine2 = Engine(Script(ids("abz") + ids("cd")), Letters())
    events = run(engine2, Job([0], 20))
    assert text(events) == "ab" and events[-1][1].finish_reason == "stop"


def test_a_cancelled_job_stops_and_the_next_runs():
    gate = threading.Semaphore(0)
    engine = Engine(Script(ids("abcdefgh"), gate), Letters())
    events = queue.Queue()
    job = engine.submit(Job([0], 20), events.put)
    gate.release()
    assert events.get(timeout=10) == ("text", "a")
    job.cancel()
    gate.release(8)
    while (event := events.get(timeout=10))[0] == "text":
        pass
    assert event[1].finish_reason == "cancelled" and event[1].completion_tokens < 8
    assert engine.counters["cancelled"] == 1
    assert text(run(engine, Job([0], 2))) == "ab"


def test_a_full_queue_is_refused():
    gate = threading.Semaphore(0)
    engine = Engine(Script(ids("ab"), gate), Letters(), max_queue=1)
    first = queue.Queue()
    engine.submit(Job([0], 2), first.put)  # taken by the engine's thread, blocked at the gate
    while engine.jobs.qsize():
        pass
    engine.submit(Job([0], 2), lambda event: None)  # waits in the queue
    with pytest.raises(QueueFull, match="1 requests are already waiting"):
        engine.submit(Job([0], 2), lambda event: None)
    gate.release(4)
    assert first.get(timeout=10) == ("text", "a")


def test_a_failing_request_is_answered_and_the_engine_goes_on():
    class Broken(Script):
        def stream_generate(self, ids, max_new_tokens, **sampling):
            raise RuntimeError("boom")
            yield

    engine = Engine(Broken([]), Letters())
    assert run(engine, Job([0], 2)) == [("error", "RuntimeError: boom")]
    engine.model = Script(ids("ab"))
    assert text(run(engine, Job([0], 2))) == "ab"
