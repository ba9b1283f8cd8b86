"""The HTTP side over a scripted engine, served by uvicorn in this process on a loopback port:
the test decides when each token comes, so it can fill the queue (503 in OpenAI's shape) and
leave a stream half-read (the job is cancelled and the engine serves the next request)."""

import http.client as httpclient
import json
import socket
import threading
import time

import pytest

from npplm.serving import Engine, create_app
from tests.serving.conftest import http
from tests.serving.fakes import Letters, Script, ids

uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture
def served():
    """(base URL, engine, gate): a Script model that writes 'abcdefgh', one letter per release
    of the gate; at most one request waits in the queue."""
    gate = threading.Semaphore(0)
    engine = Engine(Script(ids("abcdefgh"), gate), Letters(), max_queue=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(engine, "script"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", engine, gate
    gate.release(1000)  # let whatever still decodes run out
    server.should_exit = True
    thread.join(timeout=10)


def completion(url, **fields):
    return http("POST", f"{url}/v1/completions",
                {"model": "script", "prompt": "a", "max_tokens": 8, **fields})


def wait_for(condition, what):
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_full_queue_answers_503_in_openai_shape(served):
    url, engine, gate = served
    first = threading.Thread(target=completion, args=(url,))  # decoding, held at the gate
    first.start()
    wait_for(lambda: engine.counters["requests"] == 1 and engine.jobs.qsize() == 0,
             "the engine to take the first request")
    second = threading.Thread(target=completion, args=(url,))  # waits in the queue
    second.start()
    wait_for(lambda: engine.jobs.qsize() == 1, "the second request to queue")
    status, body = completion(url)
    assert status == 503
    error = json.loads(body)["error"]
    assert error["type"] == "server_error" and error["code"] == "server_busy"
    assert "1 requests are already waiting" in error["message"]
    gate.release(16)
    first.join(timeout=10)
    second.join(timeout=10)
    gate.release(8)
    status, body = completion(url)  # the server is still up and serves again
    assert status == 200 and json.loads(body)["choices"][0]["text"] == "abcdefgh"


def test_a_client_that_leaves_mid_stream_frees_the_engine(served):
    url, engine, gate = served
    host, port = url.removeprefix("http://").split(":")
    connection = httpclient.HTTPConnection(host, int(port), timeout=10)
    connection.request("POST", "/v1/completions", json.dumps(
        {"model": "script", "prompt": "a", "max_tokens": 8, "stream": True}),
        {"content-type": "application/json"})
    response = connection.getresponse()
    gate.release()  # one letter
    line = response.readline()
    assert line.startswith(b"data: ") and json.loads(line[6:])["choices"][0]["text"] == "a"
    connection.sock.shutdown(socket.SHUT_RDWR)  # the client goes away mid-answer
    connection.close()
    deadline = time.monotonic() + 10
    while engine.counters["cancelled"] == 0:  # each letter lets the engine see the cancel
        assert time.monotonic() < deadline, "the job was never cancelled"
        gate.release()
        time.sleep(0.05)
    assert engine.counters["completed"] == 0
    gate.release(8)
    status, body = completion(url)  # the engine is free for the next request
    assert status == 200 and json.loads(body)["choices"][0]["text"] == "abcdefgh"
