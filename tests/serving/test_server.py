"""`npplm serve` as a real process on a loopback port, talked to with the official `openai`
client (and raw HTTP for what the client will not send): answers equal to local greedy
decoding, streaming, stop sequences, lengths, usage counts, concurrency, and every error
in OpenAI's shape with the server still up afterwards."""

import json
import threading

import numpy as np
import pytest

openai = pytest.importorskip("openai")

from npplm.training.recipe import EOT  # noqa: E402
from npplm.training.run_folder import load_model  # noqa: E402
from tests.serving.conftest import MESSAGES, http  # noqa: E402


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="not-needed", max_retries=0,
                         timeout=60)


@pytest.fixture(scope="module")
def local(model_folder):
    """Greedy decoding in this process: what the server must answer, token for token."""
    model, tokenizer = load_model(model_folder)
    model.eval()
    eot = tokenizer.token_to_id(EOT)

    def greedy(prompt_ids, max_new):
        out = model.generate(np.array([prompt_ids]), max_new, temperature=0.0,
                             eos_token_id=eot)[0, len(prompt_ids):].tolist()
        new = out[:out.index(eot)] if eot in out else out
        return tokenizer.decode(new, skip_special_tokens=True), len(new), eot in out

    def chat_ids(messages):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return list(tokenizer.encode(text, add_special_tokens=False).ids)

    return greedy, chat_ids, tokenizer


def test_health_and_models(server, client):
    assert json.loads(http("GET", f"{server}/health")[1])["status"] == "ok"
    assert [m.id for m in client.models.list().data] == ["tiny-chat"]


def test_a_chat_completion_is_local_greedy_decoding(client, local):
    greedy, chat_ids, _ = local
    reply = client.chat.completions.create(model="tiny-chat", messages=MESSAGES,
                                           max_tokens=24, temperature=0)
    ids = chat_ids(MESSAGES)
    text, n, ended = greedy(ids, 24)
    assert reply.choices[0].message.content == text
    assert reply.choices[0].finish_reason == ("stop" if ended else "length")
    assert reply.usage.prompt_tokens == len(ids)
    assert reply.usage.completion_tokens == n
    assert reply.usage.total_tokens == len(ids) + n


def test_streamed_deltas_add_up_to_the_whole_answer(client):
    whole = client.chat.completions.create(model="tiny-chat", messages=MESSAGES,
                                           max_tokens=24, temperature=0)
    chunks = list(client.chat.completions.create(
        model="tiny-chat", messages=MESSAGES, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == whole.choices[0].finish_reason and set(reasons[:-1]) == {None}
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stop_sequences_and_max_tokens(client, local):
    greedy, chat_ids, _ = local
    text, _, _ = greedy(chat_ids(MESSAGES), 24)
    stop = text[5:8]  # three characters from inside the greedy answer
    reply = client.chat.completions.create(model="tiny-chat", messages=MESSAGES,
                                           max_tokens=24, temperature=0, stop=[stop, "@@@"])
    assert reply.choices[0].message.content == text[:text.index(stop)]
    assert reply.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tiny-chat", messages=MESSAGES, max_tokens=24, temperature=0, stop=stop,
        stream=True))
    assert streamed == text[:text.index(stop)]
    short = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=3,
                                           temperature=0)
    if short.usage.completion_tokens == 3:  # unless EOS came first
        assert short.choices[0].finish_reason == "length"


def test_text_completions(client, local):
    greedy, _, tokenizer = local
    reply = client.completions.create(model="tiny-chat", prompt="import os\n", max_tokens=16,
                                      temperature=0)
    ids = list(tokenizer.encode("import os\n").ids)
    text, n, _ = greedy(ids, 16)
    assert reply.choices[0].text == text
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == n


def test_concurrent_clients_get_what_each_would_get_alone(client, local):
    greedy, chat_ids, _ = local
    questions = [[{"role": "user", "content": f"def f{i}(x):"}] for i in range(8)]
    alone = [greedy(chat_ids(q), 16)[0] for q in questions]
    answers = [None] * 8

    def ask(i):
        answers[i] = client.chat.completions.create(
            model="tiny-chat", messages=questions[i], max_tokens=16,
            temperature=0).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert answers == alone


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "tiny-chat", "messages": []}, 400, "messages"),
    ({"model": "tiny-chat", "messages": "hi"}, 400, "messages"),
    ({"model": "tiny-chat", "messages": MESSAGES, "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny-chat", "messages": MESSAGES, "temperature": 3}, 400, "temperature"),
    ({"model": "tiny-chat", "messages": MESSAGES, "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "tiny-chat", "messages": MESSAGES, "max_tokens": 10**9}, 400, "max_tokens"),
    ({"model": "tiny-chat", "messages": MESSAGES, "n": 2}, 400, "n"),
    ({"model": "tiny-chat", "messages": MESSAGES, "stop": [1]}, 400, "stop"),
    ({"model": "tiny-chat", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages"),
    ({"model": "tiny-chat", "messages": [{"role": "user", "content": 5}]}, 400,
     "messages[0].content"),
    ({"model": "other", "messages": MESSAGES}, 404, "model"),
    ({"messages": MESSAGES}, 400, "model"),
    ({"model": "tiny-chat", "messages": [{"role": "user", "content": "x " * 400}]}, 400,
     "messages"),
])
def test_bad_requests_get_openai_errors_and_the_server_stays_up(server, client, body, status,
                                                                 param):
    code, text = http("POST", f"{server}/v1/chat/completions", body)
    assert code == status, text
    error = json.loads(text)["error"]
    assert error["param"] == param and error["message"] and error["type"]
    ok = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=2)
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_malformed_json_and_unknown_fields(server):
    code, text = http("POST", f"{server}/v1/chat/completions", raw=b"{not json")
    assert code == 400 and json.loads(text)["error"]["code"] == "invalid_json"
    code, text = http("POST", f"{server}/v1/chat/completions", {
        "model": "tiny-chat", "messages": MESSAGES, "max_tokens": 2, "frequency_penalty": 0,
        "some_future_field": {"x": 1}})
    assert code == 200, text
    code, text = http("POST", f"{server}/v1/completions",
                      {"model": "tiny-chat", "prompt": "x", "max_tokens": 3, "stream": True})
    events = [line for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "text_completion" for e in events[:-1])


def test_the_load_benchmark_runs(model_folder, capsys):
    from benchmarks import serve_load

    result = serve_load.main(["--model", str(model_folder), "--clients", "3", "--seconds", "2",
                              "--max-tokens", "4"])
    assert result["requests"] >= 3 and result["errors"] == 0
    assert "time to first token p50" in capsys.readouterr().out
