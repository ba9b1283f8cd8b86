"""Module: parameters found by walking attributes, tied weights, state dicts, modes."""

import numpy as np
import pytest

from autograd import Tensor
from npplm.layers import Dropout, Embedding, LayerNorm, Linear, Module


class Block(Module):
    def __init__(self):
        self.ln = LayerNorm(4)
        self.fc = Linear(4, 4)
        self.drop = Dropout(0.5)


class Tiny(Module):
    def __init__(self):
        self.wte = Embedding(10, 4)
        self.layer = [Block(), Block()]
        self.head = Linear(4, 10, bias=False)
        self.head.weight = self.wte.weight  # tied
        self.not_a_parameter = Tensor(np.zeros(3))  # a buffer: no gradient, not listed


def test_parameters_are_named_by_attribute_path_in_order():
    names = [n for n, _ in Tiny().named_parameters()]
    assert names == ["wte.weight", "layer.0.ln.weight", "layer.0.ln.bias", "layer.0.fc.weight",
                     "layer.0.fc.bias", "layer.1.ln.weight", "layer.1.ln.bias",
                     "layer.1.fc.weight", "layer.1.fc.bias"]


def test_tied_parameters_count_once_but_appear_under_every_name_in_state_dict():
    m = Tiny()
    assert m.num_parameters() == 10 * 4 + 2 * (4 + 4 + 16 + 4)
    assert "head.weight" in m.state_dict()
    assert "head.weight" not in m.state_dict(remove_duplicates=True)


def test_load_state_dict_round_trip_and_casts_to_the_parameter_dtype():
    a, b = Tiny(), Tiny()
    for p in a.parameters():
        p.data = p.data + 1.0
    state = {k: v.astype(np.float64) for k, v in a.state_dict().items()}
    b.load_state_dict(state)
    for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        assert q.dtype == np.float32


def test_loaded_parameters_are_c_ordered_whatever_the_checkpoint_array():
    # GPT's Conv1D weights arrive transposed; a Fortran-ordered parameter would take other
    # GEMM paths (other rounding) than the model it was saved from.
    lin = Linear(3, 4)
    lin.load_state_dict({"weight": np.ones((3, 4), np.float32).T, "bias": np.zeros(4)})
    assert lin.weight.data.flags.c_contiguous and lin.weight.dtype == np.float32


def test_load_state_dict_names_missing_unexpected_and_mismatched_keys():
    m = Tiny()
    state = m.state_dict()
    del state["layer.1.fc.bias"]
    state["extra.weight"] = np.zeros(2)
    with pytest.raises(KeyError, match=r"missing keys \['layer.1.fc.bias'\], unexpected keys "
                                       r"\['extra.weight'\]"):
        m.load_state_dict(state)
    state = m.state_dict()
    state["layer.0.fc.weight"] = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"'layer.0.fc.weight' has shape \(4, 5\) in the "
                                         r"checkpoint but \(4, 4\) in the model"):
        m.load_state_dict(state)


def test_train_and_eval_reach_every_submodule():
    m = Tiny().eval()
    assert all(not sub.training for _, sub in m.named_modules())
    x = Tensor(np.ones((2, 4), dtype=np.float32))
    np.testing.assert_array_equal(m.layer[0].drop(x).numpy(), x.numpy())
    m.train()
    assert m.layer[1].drop.training
    assert (m.layer[1].drop(x).numpy() == 0).any()


def test_zero_grad_clears_every_parameter():
    m = Tiny()
    m.head(m.wte(np.array([1, 2]))).sum().backward()
    assert m.wte.weight.grad is not None
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
