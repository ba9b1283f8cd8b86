"""Causal LM: labels are the inputs (the models shift), padding is never scored nor seen,
GPT-1, GPT-2 and LLaMA train on the batches, and refused input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npplm.models.gpt import GPT2LMHeadModel, GPTConfig, OpenAIGPTLMHeadModel
from npplm.models.llama import LlamaConfig, LlamaForCausalLM
from npplm.objectives import LABEL_PAD_ID, CausalLMCollator
from tests.tolerances import assert_close

V = 64


@given(st.lists(st.integers(2, 20), min_size=1, max_size=5), st.integers(0, V - 1),
       st.integers(0, 2**16))
def test_labels_are_the_inputs_and_padding_is_ignored(lengths, pad_id, seed):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, V, size=n) for n in lengths]
    batch = CausalLMCollator(V, pad_id=pad_id)(rows, rng)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    T = max(lengths)
    for b, row in enumerate(rows):
        n = len(row)
        np.testing.assert_array_equal(batch["input_ids"][b, :n], row)
        np.testing.assert_array_equal(batch["labels"][b, :n], row)  # pad_id inside: scored
        assert (batch["input_ids"][b, n:] == pad_id).all()
        assert (batch["labels"][b, n:] == LABEL_PAD_ID).all()
        np.testing.assert_array_equal(batch["attention_mask"][b], [1] * n + [0] * (T - n))
    assert all(a.dtype == np.int64 and a.shape == (len(rows), T) for a in batch.values())


FAMILIES = {
    "gpt2": (GPT2LMHeadModel, GPTConfig.tiny()),
    "gpt1": (OpenAIGPTLMHeadModel, GPTConfig.tiny(model_type="openai-gpt")),
    "llama": (LlamaForCausalLM, LlamaConfig.tiny()),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_trains_the_model_and_padding_changes_nothing(family):
    model_class, config = FAMILIES[family]
    model = model_class(config, seed=0).eval()
    rng = np.random.default_rng(1)
    rows = [rng.integers(0, V, size=n) for n in (16, 11, 5)]
    batch = CausalLMCollator(V)(rows, rng)
    loss = model(**batch).loss
    assert np.isfinite(loss.item()) and loss.shape == ()

    # The padded batch's loss is the token-weighted mean of each row's loss alone: padding
    # is neither scored nor seen by a real token. Another pad id gives the same loss.
    alone = [model(**CausalLMCollator(V)([r], rng)).loss.item() for r in rows]
    weights = np.array([len(r) - 1 for r in rows])
    assert_close(loss.item(), np.dot(alone, weights) / weights.sum(), kind="model32")
    assert_close(model(**CausalLMCollator(V, pad_id=V - 1)(rows, rng)).loss.item(),
                 loss.item(), kind="model32")

    loss.backward()
    for p in model.parameters():
        p.data -= 0.1 * p.grad
    assert model(**batch).loss.item() < loss.item()


def test_refused_input_names_the_value():
    rng = np.random.default_rng(0)
    collate = CausalLMCollator(V, max_length=8)
    with pytest.raises(ValueError, match="empty batch"):
        collate([], rng)
    with pytest.raises(ValueError, match="example 1 has 1 token\\(s\\); this objective needs "
                                         "at least 2"):
        collate([np.arange(4), np.array([5])], rng)
    with pytest.raises(ValueError, match="example 0 is empty"):
        collate([np.array([], dtype=int)], rng)
    with pytest.raises(ValueError, match="example 0 has 9 tokens, more than max_length=8"):
        collate([np.arange(9)], rng)
    with pytest.raises(ValueError, match="example 0 holds token id 64, outside"):
        collate([np.array([1, 64])], rng)
    with pytest.raises(ValueError, match="pad_id=64 is outside the vocabulary \\[0, 64\\)"):
        CausalLMCollator(V, pad_id=64)
    with pytest.raises(ValueError, match="max_length must be >= 2, got 1"):
        CausalLMCollator(V, max_length=1)
