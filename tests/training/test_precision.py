"""Mixed precision: 16-bit storage with float32 arithmetic inside (autograd/precision.py),
float32 master weights (npplm/training/precision.py), bf16 and fp16 runs tracking fp32."""

import numpy as np
import pytest

import autograd as ag
from autograd import Tensor
from autograd.precision import bfloat16
from npplm.layers import layer_norm, linear, softmax
from npplm.training import TrainConfig, Trainer
from npplm.training.precision import MixedPrecision
from tests.training.test_skipped_updates import blocks, clm, config, model

HALVES = [np.dtype(np.float16)] + ([bfloat16] if bfloat16 is not None else [])


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_sums_and_products_of_16_bit_arrays_add_in_float32(dtype):
    ones = Tensor(np.ones(4096, dtype), requires_grad=True)
    total = ag.sum(ones)
    assert total.dtype == dtype and float(total.item()) == 4096.0  # bf16 alone: 256
    total.backward()
    assert ones.grad.dtype == dtype
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(dtype) for s in ((8, 300), (300, 5)))
    product = (Tensor(a) @ Tensor(b)).data
    exact = (a.astype(np.float32) @ b.astype(np.float32)).astype(dtype)
    assert product.dtype == dtype and np.array_equal(product, exact)


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_layers_keep_the_16_bit_dtype_and_compute_inside_in_float32(dtype):
    rng = np.random.default_rng(1)
    x32 = rng.standard_normal((4, 24)).astype(np.float32)
    w32, b32 = rng.standard_normal((16, 24)).astype(np.float32), np.zeros(16, np.float32)
    x, w, b = (Tensor(v.astype(dtype), requires_grad=True) for v in (x32, w32, b32))
    for out, reference in (
            (linear(x, w, b), x32.astype(dtype).astype(np.float32)
             @ w32.astype(dtype).astype(np.float32).T),  # (out, in) weights
            (softmax(x), None), (layer_norm(x, Tensor(np.ones(24, dtype)),
                                            Tensor(np.zeros(24, dtype))), None)):
        assert out.dtype == dtype
        if reference is not None:
            np.testing.assert_array_equal(out.data, reference.astype(dtype))
    y = linear(x, w, b).sum()
    y.backward()
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == dtype
    np.testing.assert_array_equal(b.grad, np.full(16, 4, dtype))  # the bias sum, in float32


def test_working_copies_hand_back_the_float32_masters_and_float32_gradients():
    m = model()
    params = m.parameters()
    masters = [p.data for p in params]
    ids = np.stack(blocks()[:2])
    with MixedPrecision("fp16").working_copies(params):
        assert {p.dtype for p in params} == {np.dtype(np.float16)}
        loss = m(ids, labels=ids).loss
        assert loss.dtype == np.float32  # the loss is computed and kept in float32
        loss.backward()
    assert all(p.data is master for p, master in zip(params, masters))
    assert {p.grad.dtype for p in params} == {np.dtype(np.float32)}


@pytest.mark.parametrize("precision, tolerance", [("bf16", 0.02), ("fp16", 0.005)])
def test_16_bit_training_tracks_float32(precision, tolerance):
    """30 updates of a tiny GPT-2: the losses stay within `tolerance` of float32's (bf16
    keeps 8 bits of mantissa, fp16 11), the masters and AdamW's moments stay float32."""
    if precision == "bf16" and bfloat16 is None:
        pytest.skip("ml_dtypes is not installed")

    def run(p):
        trainer = Trainer(model(), clm, blocks(), config=config(steps=30, precision=p),
                          log=lambda *a: None)
        history = trainer.fit()
        return trainer, np.array([r["loss"] for r in history if "loss" in r])

    _, full = run("fp32")
    trainer, half = run(precision)
    assert np.abs(half - full).max() < tolerance, np.abs(half - full).max()
    assert half[-1] < full[0] - 0.5  # it learned
    assert {p.dtype for p in trainer.model.parameters()} == {np.dtype(np.float32)}
    assert {v.dtype for v in trainer.optimizer.state_arrays().values()} == {
        np.dtype(np.float32)}
    assert trainer.scaler.enabled == (precision == "fp16")


def test_an_unknown_precision_is_named():
    with pytest.raises(ValueError, match="precision='fp8'; use one of fp32, bf16, fp16"):
        TrainConfig(precision="fp8")


@pytest.mark.skipif(bfloat16 is None, reason="ml_dtypes is not installed")
def test_without_master_weights_small_updates_round_away():
    """Why master weights: AdamW at lr 1e-5 moves each weight by about 1e-5, below half a
    bfloat16 step (|w| / 256) for every weight larger than 0.005, so an update applied to
    bfloat16 weights leaves most of them where they were; on float32 masters every one
    moves (Micikevicius et al. 2018, section 3.1)."""
    from npplm.training import AdamW

    moved = {}
    for pure in (False, True):
        m = model()
        weights = [p for p in m.parameters() if p.ndim == 2]
        if pure:
            for p in m.parameters():
                p.data = p.data.astype(bfloat16)
        before = [p.data.astype(np.float32) for p in weights]
        opt = AdamW(m.parameters(), lr=1e-5, weight_decay=0.0)
        ids = np.stack(blocks()[:4])
        for _ in range(3):
            m(ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
        changed = sum(int((p.data.astype(np.float32) != b).sum())
                      for p, b in zip(weights, before))
        moved[pure] = changed / sum(p.size for p in weights)
    assert moved[False] > 0.99, moved
    assert moved[True] < 0.5, moved  # measured: 0.998 and about 0.2
