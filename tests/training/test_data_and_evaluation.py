"""Documents, the split, packing, the epoch order, and sliding-window perplexity."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import no_grad
from npplm.layers import cross_entropy
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.training import perplexity
from npplm.training.data import (
    BlockOrder,
    DataError,
    pack,
    read_documents,
    split_documents,
    stdlib_documents,
)
from npplm.training.evaluation import _window_starts


def test_stdlib_documents_are_python_source():
    docs = stdlib_documents(max_chars=50_000)
    assert sum(map(len, docs)) == 50_000
    assert "def " in "".join(docs)


def test_read_documents_folder_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("print('second')")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    assert read_documents(tmp_path) == ["first document", "print('second')"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_documents(tmp_path / "nowhere")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        read_documents(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="not UTF-8"):
        read_documents(tmp_path / "bad.txt")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no text files"):
        read_documents(tmp_path / "nothing")


def test_split_is_by_whole_documents():
    docs = [f"doc {i} " * (i + 1) for i in range(30)]
    train, val = split_documents(docs, 0.1, seed=0)
    assert sorted(train + val) == sorted(docs) and not set(train) & set(val)
    assert 0.1 <= sum(map(len, val)) / sum(map(len, docs)) < 0.25
    one_train, one_val = split_documents(["line\n" * 100], 0.1)
    assert one_train[0] + one_val[0] == "line\n" * 100 and one_val[0].startswith("line")


def test_pack_blocks_and_too_small_corpus():
    docs = [np.arange(5), np.arange(10, 17)]
    blocks = pack(docs, 4, separator_id=99)
    assert blocks.tolist() == [[0, 1, 2, 3], [4, 99, 10, 11], [12, 13, 14, 15]]
    with pytest.raises(DataError, match="14 tokens, fewer than one block of block_size=64"):
        pack(docs, 64, separator_id=99)


@given(n=st.integers(1, 20), batch=st.integers(1, 7), seed=st.integers(0, 3))
def test_every_epoch_serves_every_example_once(n, batch, seed):
    order = BlockOrder(n, seed)
    served = np.concatenate([order.indices(p, batch) for p in range(0, 3 * n, batch)])[:3 * n]
    for epoch in range(3):
        assert sorted(served[epoch * n:(epoch + 1) * n]) == list(range(n))
    again = BlockOrder(n, seed)  # a fresh order (a resumed run) serves the same from any point
    assert again.indices(n + 1, batch).tolist() == order.indices(n + 1, batch).tolist()


@given(n=st.integers(2, 60), window=st.integers(2, 16), data=st.data())
def test_sliding_windows_score_every_token_once(n, window, data):
    stride = data.draw(st.integers(1, window))
    window = min(window, n)
    starts, first = _window_starts(n, window, stride)
    scored = np.concatenate([np.arange(f, b + window) for b, f in zip(starts, first)])
    assert scored.tolist() == list(range(1, n))
    for b, f in zip(starts, first):  # each token keeps window - stride tokens of context
        assert 0 <= b and b + window <= n and (b == 0 or f - b >= window - stride)


def tiny_lm():
    return GPT2LMHeadModel(GPTConfig.tiny(n_positions=16), seed=0).eval()


def test_perplexity_of_one_window_is_exp_of_the_model_loss():
    model = tiny_lm()
    ids = np.random.default_rng(0).integers(0, 64, 16)
    ppl, nll, count = perplexity(model, ids, window=16)
    with no_grad():
        loss = model(ids[None], labels=ids[None]).loss.item()
    assert count == 15 and math.isclose(nll, loss, rel_tol=1e-5)
    assert math.isclose(ppl, math.exp(loss), rel_tol=1e-5)


def test_sliding_window_equals_scoring_each_token_with_its_own_context():
    """stride 3: each token's NLL equals that of the model run on exactly the context the
    window gave it, computed one token at a time."""
    model, window, stride = tiny_lm(), 8, 3
    ids = np.random.default_rng(1).integers(0, 64, 30)
    _, nll, count = perplexity(model, ids, window=window, stride=stride, batch_size=2)
    starts, first = _window_starts(len(ids), window, stride)
    total = 0.0
    with no_grad():
        for b, f in zip(starts, first):
            for t in range(f, b + window):
                logits = model(ids[None, b:t]).logits  # context b .. t-1 predicts token t
                total += cross_entropy(logits[:, -1], ids[t:t + 1]).item()
    assert count == 29 and math.isclose(nll, total / count, rel_tol=1e-5)


def test_perplexity_bad_input():
    with pytest.raises(ValueError, match="stride=9"):
        perplexity(tiny_lm(), np.arange(20), window=8, stride=9)
    with pytest.raises(ValueError, match="at least 2 tokens, got 1"):
        perplexity(tiny_lm(), np.arange(1), window=8)
