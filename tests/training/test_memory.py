"""The memory account (npplm/training/memory.py, `npplm train --dry-run`)."""

import re

import numpy as np
import pytest

from autograd import Tensor
from npplm import cli
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.training.memory import activation_bytes, graph_bytes, state_bytes


def test_graph_bytes_counts_each_kept_buffer_once_and_not_the_weights():
    x = Tensor(np.ones((4, 8), np.float32))
    w = Tensor(np.ones((8, 16), np.float32), requires_grad=True)
    h = x @ w  # keeps x (128 B) and w (excluded); out h (256 B)
    y = h.tanh()  # keeps h (already counted) and its out (256 B)
    loss = y.reshape(-1).sum()  # reshape keeps y (counted), its out is a view of y
    assert graph_bytes(loss, exclude=[w.data]) == 128 + 256 + 256 + 4  # + the scalar sum


def test_checkpointing_counts_less_and_state_bytes_follow_the_parameters():
    model = GPT2LMHeadModel(GPTConfig.tiny(n_positions=32, n_layer=4), seed=0)
    ids = np.random.default_rng(0).integers(0, 64, (4, 32))
    batch = {"input_ids": ids, "labels": ids}

    def loss_fn(m, b):
        return m(**b).loss

    plain = activation_bytes(model, batch, loss_fn)
    checkpointed = activation_bytes(model, batch, loss_fn, checkpointing=True)
    assert 0 < checkpointed < plain / 2
    assert not model.gradient_checkpointing  # put back as it was
    n = sum(p.size for p in model.parameters())
    assert state_bytes(model, "adamw") == {"weights": 4 * n, "gradients": 4 * n,
                                           "optimizer": 8 * n}
    assert state_bytes(model, "adamw", ranks=2, zero=True)["optimizer"] == 4 * n


def test_dry_run_prints_the_account_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dry-run", "--out", str(out), "--set", "n_layer=1",
                     "n_embd=32", "n_head=2", "--max-chars", "30000", "--vocab-size", "300",
                     "--block-size", "32", "--batch-size", "4", "--quiet"]) == 0
    text = capsys.readouterr().out
    for row in ("weights", "gradients", "optimizer moments", "activations",
                "with checkpointing", "step, estimated", "step, measured"):
        assert row in text, text
    assert not out.exists()


def test_dry_run_of_a_model_too_large_to_build_gives_the_account_its_size_allows(tmp_path,
                                                                               capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dry-run", "--preset", "gpt3_175b", "--out", str(out),
                     "--max-chars", "30000", "--vocab-size", "300", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "too large for this machine" in text and "activations are not counted" in text
    n = int(re.search(r"([\d,]+) float32 parameters", text).group(1).replace(",", ""))
    assert 173e9 < n < 176e9  # GPT-3 175B's shape, with this run's 300-id vocabulary
    rows = dict(re.findall(r"^(weights|gradients|optimizer moments|step, without activations)"
                           r" +([\d,.]+) GiB", text, re.M))
    assert float(rows["weights"].replace(",", "")) == pytest.approx(4 * n / 2**30, rel=1e-3)
    assert float(rows["optimizer moments"].replace(",", "")) == pytest.approx(
        8 * n / 2**30, rel=1e-3)
    assert float(rows["step, without activations"].replace(",", "")) == pytest.approx(
        16 * n / 2**30, rel=1e-3)
    assert not out.exists()
