"""AdamW, SGD, clipping and the schedule against PyTorch's, step by step."""

import math

import numpy as np
import pytest

from autograd import Tensor
from npplm.training import SGD, AdamW, WarmupCosine, clip_grad_norm
from tests.tolerances import assert_close

torch = pytest.importorskip("torch")

SHAPES = [(5, 3), (3,), (2, 4, 2)]


def twins(seed=0, dtype=np.float64):
    """The same parameters as npplm Tensors and torch tensors, and gradient streams."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [Tensor(v.copy(), requires_grad=True) for v in values]
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    grads = [[rng.standard_normal(s).astype(dtype) * 10 ** rng.uniform(-3, 1) for s in SHAPES]
             for _ in range(6)]
    return ours, theirs, grads


def run_both(make_ours, make_theirs, steps=6, lr_of=None, dtype=np.float64):
    ours, theirs, grads = twins(dtype=dtype)
    opt, topt = make_ours(ours), make_theirs(theirs)
    for t in range(steps):
        if lr_of is not None:
            opt.set_lr(lr_of(t))
            for group in topt.param_groups:
                group["lr"] = lr_of(t)
        for p, tp, g in zip(ours, theirs, grads[t]):
            p.grad, tp.grad = g.copy(), torch.tensor(g.copy())
        opt.step()
        topt.step()
    return ours, theirs


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_matches_torch(weight_decay):
    ours, theirs = run_both(
        lambda ps: AdamW(ps, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.95), eps=1e-8,
                                     weight_decay=weight_decay),
        lr_of=WarmupCosine(1e-2, 2, 6, 1e-3))
    for p, tp in zip(ours, theirs):
        assert_close(p.data, tp.detach().numpy(), "exact64")


def test_adamw_groups_and_float32():
    """Per-group weight decay, as decay_groups builds; float32 stays float32."""
    def groups(ps):
        return [{"params": ps[:1], "weight_decay": 0.1}, {"params": ps[1:], "weight_decay": 0.0}]

    ours, theirs = run_both(lambda ps: AdamW(groups(ps), lr=3e-3),
                            lambda ps: torch.optim.AdamW(groups(ps), lr=3e-3),
                            dtype=np.float32)
    for p, tp in zip(ours, theirs):
        assert p.dtype == np.float32
        assert_close(p.data, tp.detach().numpy(), "float32")


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.01)])
def test_sgd_matches_torch(momentum, weight_decay):
    ours, theirs = run_both(
        lambda ps: SGD(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay))
    for p, tp in zip(ours, theirs):
        assert_close(p.data, tp.detach().numpy(), "exact64")


@pytest.mark.parametrize("max_norm", [0.5, 1e9])
def test_clip_grad_norm_matches_torch(max_norm):
    ours, theirs, grads = twins()
    for p, tp, g in zip(ours, theirs, grads[0]):
        p.grad, tp.grad = g.copy(), torch.tensor(g.copy())
    norm = clip_grad_norm(ours, max_norm)
    tnorm = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert math.isclose(norm, float(tnorm), rel_tol=1e-12)
    for p, tp in zip(ours, theirs):
        assert_close(p.grad, tp.grad.numpy(), "exact64")
    assert norm > max_norm or max_norm == 1e9  # the case clips, or must not


def test_state_round_trip_continues_identically():
    """Saving the moments and step count mid-run and loading them into a fresh optimizer
    continues exactly as the uninterrupted optimizer."""
    ours, _, grads = twins()
    copy = [Tensor(p.data.copy(), requires_grad=True) for p in ours]
    a = AdamW(ours, lr=1e-2, weight_decay=0.1)
    for t in range(3):
        for p, g in zip(ours, grads[t]):
            p.grad = g.copy()
        a.step()
    b = AdamW(copy, lr=5.0)  # other settings: load_state restores the saved ones
    for p, q in zip(copy, ours):
        p.data = q.data.copy()
    b.load_state(a.state_arrays(), a.state_meta())
    for t in range(3, 6):
        for p, q, g in zip(ours, copy, grads[t]):
            p.grad, q.grad = g.copy(), g.copy()
        a.step()
        b.step()
    for p, q in zip(ours, copy):
        np.testing.assert_array_equal(p.data, q.data)


def test_load_state_refuses_another_model():
    ours, _, _ = twins()
    other = [Tensor(np.zeros((7,)), requires_grad=True)]
    with pytest.raises(ValueError, match="other shapes"):
        AdamW(other).load_state({}, AdamW(ours).state_meta())
    with pytest.raises(ValueError, match="'SGD'"):
        AdamW(ours).load_state({}, SGD(ours).state_meta())


def test_bad_settings_are_named():
    p = [Tensor(np.zeros(2), requires_grad=True)]
    with pytest.raises(ValueError, match="betas"):
        AdamW(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        AdamW([])
    with pytest.raises(ValueError, match="momentum"):
        SGD(p, momentum=1.5)
    with pytest.raises(ValueError, match="min_lr"):
        WarmupCosine(1e-3, 10, 100, min_lr=1e-2)


def test_schedule_shape():
    s = WarmupCosine(1.0, warmup_steps=4, total_steps=14, min_lr=0.1)
    assert [s(t) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s(4) == 1.0  # the cosine starts at the peak
    assert math.isclose(s(9), 0.55)  # half way: the mean of peak and floor
    assert s(13) > 0.1 and s(100) == pytest.approx(0.1)
    assert all(s(t) >= s(t + 1) for t in range(4, 20))
