"""Stand-ins for a model and a tokenizer that let a test decide when each token comes."""

import numpy as np


class Letters:
    """A tokenizer of single letters, id i <-> chr(97 + i); id 25 ('z') is EOS."""

    eos_token = "z"

    def token_to_id(self, token):
        return ord(token) - 97

    chat_template = None

    def encode(self, text, add_special_tokens=True):
        return type("Encoding", (), {"ids": [ord(c) - 97 for c in text]})()

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + i) for i in ids if not (skip_special_tokens and i == 25))


class Script:
    """A 'model' that writes a fixed sequence of ids, each after taking `gate` (a semaphore
    the test releases once per token), or at once without one."""

    context_length = 100

    def __init__(self, ids, gate=None):
        self.ids, self.gate = ids, gate
        self.config = type("Config", (), {"eos_token_id": 25})()

    def eval(self):
        return self

    def stream_generate(self, ids, max_new_tokens, **sampling):
        for token in self.ids[:max_new_tokens]:
            if self.gate is not None and not self.gate.acquire(timeout=10):
                raise TimeoutError("the test never opened the gate")
            yield np.array([token])


def ids(word):
    return [ord(c) - 97 for c in word]
