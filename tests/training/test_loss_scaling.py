"""DynamicLossScaler against torch.amp.GradScaler: the scale trajectory, unscale_, skips."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, backend, to_numpy
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.training.loss_scaling import DynamicLossScaler
from npplm.training.optim import AdamW, clip_grad_norm

torch = pytest.importorskip("torch")


def scale_trajectories(flags, **settings):
    """Run both scalers through the same steps; flags[t] True puts an inf into a gradient
    after step t's backward, on both sides, so that each detects it itself. Returns
    [(scale, growth tracker, found inf)] of ours and of torch's, after each update."""
    tp = torch.nn.Parameter(torch.ones(3))
    topt = torch.optim.SGD([tp], lr=0.0)
    theirs = torch.amp.GradScaler("cpu", **settings)
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    ours = DynamicLossScaler(**settings)
    got, want = [], []
    for bad in flags:
        # The loss is tiny so that S * loss and S * grad stay finite at the largest S here.
        topt.zero_grad()
        theirs.scale(tp.sum() * 1e-30).backward()
        p.grad = None
        ours.scale_loss(p.sum() * 1e-30).backward()
        if bad:
            tp.grad[1] = float("inf")
            p.grad[1] = np.inf
        theirs.unscale_(topt)
        found = bool(sum(v.item() for v in theirs._found_inf_per_device(topt).values()))
        theirs.step(topt)
        theirs.update()
        want.append((theirs.get_scale(), theirs._get_growth_tracker(), found))
        found_inf = ours.unscale_([p])
        ours.update(found_inf)
        got.append((ours.scale, ours.growth_tracker, found_inf))
    return got, want


def test_the_trajectory_equals_gradscalers_with_growth_and_backoff():
    flags = [False] * 7 + [True] + [False] * 3 + [True, True] + [False] * 7
    got, want = scale_trajectories(flags, growth_interval=3)
    assert got == want
    scales = [s for s, _, _ in got]
    assert scales[2] == 2.0**17 and scales[5] == 2.0**18  # grew after 3 clean steps
    assert scales[7] == 2.0**17  # backed off at the inf
    assert [f for _, _, f in got] == flags  # both detected every injected inf


def test_the_defaults_are_gradscalers():
    ours, theirs = DynamicLossScaler(), torch.amp.GradScaler("cpu")
    assert ours.scale == theirs.get_scale() == 65536.0
    assert (ours.growth_factor, ours.backoff_factor, ours.growth_interval) == (
        theirs.get_growth_factor(), theirs.get_backoff_factor(), theirs.get_growth_interval())
    got, want = scale_trajectories([False, True, False, False])
    assert got == want
    assert [s for s, _, _ in got] == [65536.0, 32768.0, 32768.0, 32768.0]
    assert [t for _, t, _ in got] == [1, 0, 1, 2]


@given(flags=st.lists(st.booleans(), min_size=1, max_size=40),
       growth_interval=st.integers(1, 4),
       growth_factor=st.floats(1.01, 4.0),
       backoff_factor=st.floats(0.01, 0.99))
def test_any_sequence_and_factors_give_gradscalers_trajectory(flags, growth_interval,
                                                              growth_factor, backoff_factor):
    # Factors that are no powers of two check that the scale is rounded to float32 as
    # torch's is, after every product.
    got, want = scale_trajectories(flags, growth_interval=growth_interval,
                                   growth_factor=growth_factor, backoff_factor=backoff_factor)
    assert got == want


def test_the_scale_stops_growing_at_float32s_ceiling():
    got, want = scale_trajectories([False] * 3, init_scale=2.0**127, growth_interval=1)
    assert got == want
    assert [(s, t) for s, t, _ in got] == [(2.0**127, 0)] * 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [2.0**13, 3.0])
def test_unscale_equals_torchs(dtype, scale):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s).astype(dtype) * 1e3 for s in [(4, 3), (5,)]]
    params = [Tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    tparams = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float32 if dtype == np.float32
                                              else torch.float64)) for g in grads]
    for p, tp, g in zip(params, tparams, grads):
        p.grad, tp.grad = g.copy(), torch.tensor(g.copy())
    theirs = torch.amp.GradScaler("cpu", init_scale=scale)
    theirs.scale(torch.ones(()))  # GradScaler makes its scale tensor on the first scale()
    theirs.unscale_(torch.optim.SGD(tparams, lr=0.0))
    ours = DynamicLossScaler(init_scale=scale)
    assert ours.unscale_(params) is False
    for p, tp in zip(params, tparams):
        assert p.grad.dtype == dtype  # in place, in the gradient's own dtype
        np.testing.assert_array_equal(p.grad, tp.grad.numpy())  # bit for bit


def test_unscale_finds_nan_and_inf_and_refuses_a_second_call():
    ours = DynamicLossScaler(init_scale=4.0)
    p, q = (Tensor(np.ones(3, np.float32), requires_grad=True) for _ in range(2))
    p.grad, q.grad = np.ones(3, np.float32), np.array([1.0, np.nan, 1.0], np.float32)
    assert ours.unscale_([p, q]) is True
    np.testing.assert_array_equal(p.grad, np.full(3, 0.25, np.float32))
    with pytest.raises(RuntimeError, match="already called"):
        ours.unscale_([p, q])
    ours.update(True)
    assert ours.scale == 2.0 and ours.skipped_steps == 1
    assert DynamicLossScaler().unscale_([Tensor(np.ones(2), requires_grad=True)]) is False


def test_float16_gradients_are_unscaled_in_float32():
    # 2^-20 is below float16's smallest normal (2^-14): scaled by 2^16 it is 16, which
    # float16 holds, but dividing it back in float16 would make it a subnormal, and 2^-26
    # would round to zero. Widened to float32 first, both come back exactly.
    p = Tensor(np.zeros(2, np.float16), requires_grad=True)
    p.grad = np.array([2.0**-20 * 2**16, 2.0**-26 * 2**16], np.float16)
    assert DynamicLossScaler().unscale_([p]) is False
    assert p.grad.dtype == np.float32
    np.testing.assert_array_equal(p.grad, [2.0**-20, 2.0**-26])


def test_unscale_keeps_the_gradients_on_the_device():
    # The strict backend is NumPy with CuPy's rules: no implicit transfer may happen.
    with backend.selected("strict") as xp:
        p = Tensor(np.ones(3, np.float32), requires_grad=True)
        p.grad = xp.asarray(np.array([2.0, 4.0, np.inf], np.float32))
        scaler = DynamicLossScaler(init_scale=2.0)
        assert scaler.unscale_([p]) is True
        assert backend.is_device_array(p.grad)
        np.testing.assert_array_equal(to_numpy(p.grad), [1.0, 2.0, np.inf])


def test_disabled_is_the_identity():
    scaler = DynamicLossScaler(enabled=False)
    loss = Tensor(np.float32(2.5), requires_grad=True)
    assert scaler.scale_loss(loss) is loss and scaler.scale == 1.0
    p = Tensor(np.ones(2, np.float32), requires_grad=True)
    p.grad = np.array([np.inf, 3.0], np.float32)
    assert scaler.unscale_([p]) is False  # an inf is then a divergence, not the scale's
    np.testing.assert_array_equal(p.grad, [np.inf, 3.0])
    scaler.update(True)
    assert scaler.scale == 1.0 and scaler.skipped_steps == 0


def test_the_state_goes_through_json():
    scaler = DynamicLossScaler(growth_interval=3)
    for found in [False, False, False, True, False]:
        scaler.update(found)
    restored = DynamicLossScaler(growth_interval=3)
    restored.load_state(json.loads(json.dumps(scaler.state())))
    assert restored.state() == scaler.state()
    assert (restored.scale, restored.growth_tracker, restored.skipped_steps) == (65536.0, 1, 1)
    for found in [False, False, True]:  # and it goes on the same way
        scaler.update(found)
        restored.update(found)
        assert restored.state() == scaler.state()


def test_scale_loss_keeps_the_dtype():
    loss = Tensor(np.float32(2.0), requires_grad=True)
    scaled = DynamicLossScaler().scale_loss(loss)
    assert scaled.dtype == np.float32 and scaled.item() == 131072.0


# --- a tiny training loop: a skipped step changes nothing -------------------------------------
def tiny_model():
    config = GPTConfig.tiny(n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config, seed=0)


def lm_batch(seed, T=16):
    ids = np.random.default_rng(seed).integers(0, 64, (2, T))
    return {"input_ids": ids, "labels": ids}


def test_scaled_gradients_unscale_to_the_plain_ones():
    # S = 2^16 only moves exponents, so every gradient comes back bit for bit.
    model = tiny_model()
    model(**lm_batch(0)).loss.backward()
    plain = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    scaler = DynamicLossScaler()
    scaler.scale_loss(model(**lm_batch(0)).loss).backward()
    assert scaler.unscale_(model.parameters()) is False
    for p, g in zip(model.parameters(), plain):
        np.testing.assert_array_equal(p.grad, g)


def test_a_skipped_step_leaves_parameters_and_adamw_state_unchanged():
    model = tiny_model()
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    scaler = DynamicLossScaler()

    def step(seed, inject_inf=False):
        """One update as the trainer makes it; returns whether it was applied."""
        scaler.scale_loss(model(**lm_batch(seed)).loss).backward()
        if inject_inf:
            opt.params[3].grad[0] = np.inf  # as a float16 overflow would leave it
        found_inf = scaler.unscale_(opt.params)
        if not found_inf:  # an inf step's gradients are thrown away unread
            clip_grad_norm(opt.params, 1.0)
            opt.step()
        opt.zero_grad()
        scaler.update(found_inf)
        return not found_inf

    assert step(0) and step(1)  # AdamW now has moments and t = 2
    params = [p.data.copy() for p in opt.params]
    arrays, meta = opt.state_arrays(), json.dumps(opt.state_meta())
    assert not step(2, inject_inf=True)
    for p, before in zip(opt.params, params):
        np.testing.assert_array_equal(p.data, before)
    assert json.dumps(opt.state_meta()) == meta  # t included
    after = opt.state_arrays()
    assert after.keys() == arrays.keys()
    for key in arrays:
        np.testing.assert_array_equal(after[key], arrays[key])
    assert scaler.scale == 32768.0 and scaler.skipped_steps == 1
    assert step(3) and opt.t == 3  # and the run goes on
    assert not np.array_equal(opt.params[0].data, params[0])
