"""A tiny chat model and a real `npplm serve` process on a free loopback port, shared by the
serving tests."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.training.data import stdlib_documents
from npplm.training.recipe import EOT, FAMILIES, train_tokenizer

TEMPLATE = ("{% for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}"
            "{{ raise_exception('unknown role ' + m.role) }}{% endif %}"
            "<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
MESSAGES = [{"role": "user", "content": "def main():"}]


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory):
    """A tiny GPT-2 (random weights) with a trained tokenizer and a chat template."""
    folder = tmp_path_factory.mktemp("served") / "tiny-chat"
    tokenizer = train_tokenizer(FAMILIES["gpt"].tokenizer, stdlib_documents(20_000), 400,
                                log=lambda *_: None)
    tokenizer.chat_template = TEMPLATE
    eot = tokenizer.token_to_id(EOT)
    config = GPTConfig.tiny(vocab_size=tokenizer.vocab_size, n_positions=96, bos_token_id=eot,
                            eos_token_id=eot)
    GPT2LMHeadModel(config, seed=3).save_pretrained(folder)
    tokenizer.save(folder)
    return folder


def http(method, url, body=None, raw=None):
    """(status, text) of one plain HTTP request (the stdlib's urllib: what the client will
    not send, such as malformed JSON)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(model_folder):
    """The server process, its base URL; stopped at the end (killed if it lingers)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "npplm", "serve", "--model",
                                str(model_folder), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {process.stdout.read()}")
            try:
                if http("GET", f"{url}/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not answer /health within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
