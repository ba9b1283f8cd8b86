"""A character-level MLP language model (Bengio et al., 2003) on Python's own source code.

"A Neural Probabilistic Language Model" (JMLR 2003) is where neural language modelling
starts: embed the previous n characters, concatenate, one tanh hidden layer, softmax over
the next character. It is the smallest complete exercise of the engine: an embedding
lookup (integer-array indexing, whose gradient accumulates over repeated ids), matmuls,
tanh, the fused cross-entropy and an Adam update (npplm.training.AdamW without decay), all
on `autograd` Tensors.

The corpus is one that every Python installation carries: the standard library's source
files, read in a fixed order so runs are reproducible. The model trains on the first 90%
of the characters and reports perplexity (exp of the mean next-character NLL) on the rest.

`npplm demo` runs it; `npplm train` (npplm/training/) trains the Transformers.
"""

import math
import pathlib
import sysconfig
import time

import numpy as np

from autograd import Tensor, no_grad
from npplm.layers import cross_entropy, softmax
from npplm.training.optim import AdamW

# Printable ASCII plus newline; anything else is read as "?". Index 0 is the newline.
ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
UNKNOWN = ALPHABET.index("?")


def stdlib_text(max_chars=2_000_000):
    """The first `max_chars` characters of the standard library's .py files, sorted by path."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    if total == 0:
        raise FileNotFoundError(f"no .py files found in the standard library folder {root}")
    return "".join(parts)[:max_chars]


def encode(text):
    table = np.full(0x110000, UNKNOWN, dtype=np.int64)
    table[[ord(c) for c in ALPHABET]] = np.arange(len(ALPHABET))
    return table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]


def decode(ids):
    return "".join(ALPHABET[i] for i in ids)


class CharMLP:
    """P(c_t | c_{t-n..t-1}) = softmax(W2 tanh(W1 [e(c_{t-n}); ...; e(c_{t-1})] + b1) + b2)."""

    def __init__(self, context=8, embed=24, hidden=256, seed=0):
        rng = np.random.default_rng(seed)
        V = len(ALPHABET)
        self.context = context

        def param(*shape, scale):
            return Tensor((rng.standard_normal(shape) * scale).astype(np.float32),
                          requires_grad=True)

        self.wte = param(V, embed, scale=1.0)  # (V, E) character embeddings
        self.w1 = param(context * embed, hidden, scale=(context * embed) ** -0.5)
        self.b1 = param(hidden, scale=0.0)
        self.w2 = param(hidden, V, scale=0.1 * hidden**-0.5)  # small: start near uniform
        self.b2 = param(V, scale=0.0)

    def parameters(self):
        return [self.wte, self.w1, self.b1, self.w2, self.b2]

    def __call__(self, idx):
        """idx: (B, n) integer contexts -> (B, V) next-character logits."""
        B = idx.shape[0]
        emb = self.wte[idx]  # (B, n) -> (B, n, E)
        h = (emb.reshape(B, -1) @ self.w1 + self.b1).tanh()  # (B, n*E) @ (n*E, F) -> (B, F)
        return h @ self.w2 + self.b2  # (B, F) @ (F, V) -> (B, V)


def windows(ids, starts, context):
    """Contexts (B, n) and next-character targets (B,) for the given start offsets."""
    idx = ids[starts[:, None] + np.arange(context)]  # (B, n)
    return idx, ids[starts + context]


def perplexity(model, ids, n_windows=8192, batch=2048, seed=1):
    """exp(mean NLL) of the next character over `n_windows` evenly spaced positions."""
    starts = np.linspace(0, len(ids) - model.context - 1, n_windows).astype(np.int64)
    total = 0.0
    with no_grad():
        for i in range(0, len(starts), batch):
            idx, y = windows(ids, starts[i:i + batch], model.context)
            total += cross_entropy(model(idx), y, reduction="sum").item()
    return math.exp(total / len(starts))


def sample(model, prompt, n_chars=240, temperature=0.8, seed=0):
    rng = np.random.default_rng(seed)
    ids = list(encode(prompt.rjust(model.context)))
    with no_grad():
        for _ in range(n_chars):
            logits = model(np.array([ids[-model.context:]]))
            p = softmax(logits / temperature).numpy()[0].astype(np.float64)
            ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return decode(ids[model.context - len(prompt):])  # the prompt, then what was sampled


def train(steps=2000, batch=256, lr=3e-3, seed=0, log=print, max_chars=2_000_000):
    """Train on the standard library; log progress; return (model, final validation ppl)."""
    text = stdlib_text(max_chars)
    ids = encode(text)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    model = CharMLP(seed=seed)
    opt = AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    rng = np.random.default_rng(seed)
    n_params = sum(p.size for p in model.parameters())
    log(f"corpus: {len(ids):,} characters of Python stdlib source "
        f"({split:,} train / {len(ids) - split:,} validation), vocabulary {len(ALPHABET)}")
    log(f"model: character MLP, context {model.context}, {n_params:,} parameters")
    log(f"step {0:5d} | validation perplexity {perplexity(model, val_ids):7.2f}")
    t0, seen = time.perf_counter(), 0
    for step in range(1, steps + 1):
        starts = rng.integers(0, len(train_ids) - model.context - 1, size=batch)
        idx, y = windows(train_ids, starts, model.context)
        loss = cross_entropy(model(idx), y)
        loss.backward()
        decay = 0.5 * (1 + math.cos(math.pi * step / steps))  # cosine to 10% of lr
        opt.set_lr(lr * (0.1 + 0.9 * decay))
        opt.step()
        opt.zero_grad()
        seen += batch
        if step % max(1, steps // 8) == 0 or step == steps:
            rate = seen / (time.perf_counter() - t0)
            log(f"step {step:5d} | train loss {loss.item():.3f} | validation perplexity "
                f"{perplexity(model, val_ids):7.2f} | {rate:,.0f} characters/s")
    ppl = perplexity(model, val_ids)
    log("sample:\n" + sample(model, "def ", seed=seed))
    return model, ppl
