"""SpikeGuard: outliers are refused and kept out of the history; the run goes on."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.training.optim import AdamW, clip_grad_norm
from npplm.training.spike_guard import Rewind, SpikeGuard, plan_rewind


def normal_stream(n, seed=0):
    """(loss, gradient norm) pairs of a calm run: a slow downward trend plus noise."""
    rng = np.random.default_rng(seed)
    losses = 3.0 - 0.001 * np.arange(n) + 0.05 * rng.standard_normal(n)
    norms = 1.0 + 0.1 * rng.standard_normal(n)
    return list(zip(losses.tolist(), norms.tolist()))


def warmed_guard(n=40, **settings):
    guard = SpikeGuard(**{"window": 32, **settings})
    for loss, norm in normal_stream(n):
        assert guard.observe(loss, norm) is None
    return guard


@pytest.mark.parametrize("which", ["loss", "gradient norm"])
def test_an_outlier_is_refused_and_kept_out_of_the_history(which):
    guard = warmed_guard()
    before = guard.state()
    loss, norm = (5.0, 1.0) if which == "loss" else (2.96, 4.0)
    reason = guard.observe(loss, norm)
    assert reason is not None and reason.startswith(f"{which} spike")
    assert "threshold 6" in reason
    after = guard.state()
    assert after["losses"] == before["losses"] and after["grad_norms"] == before["grad_norms"]
    assert (guard.skipped_steps, guard.consecutive_skips) == (1, 1)
    for loss, norm in normal_stream(10, seed=1):  # later normal values pass
        assert guard.observe(loss - 0.04, norm) is None
    assert (guard.skipped_steps, guard.consecutive_skips) == (1, 0)
    assert len(guard.losses) == 32


def test_check_changes_nothing_and_scores_against_the_previous_values():
    guard = warmed_guard()
    state = guard.state()
    assert guard.check(5.0, 1.0) is not None
    assert guard.state() == state
    history = np.array(guard.losses)
    z = (5.0 - history.mean()) / history.std()  # the new value is not in its own window
    assert guard.zscore(5.0, guard.losses) == pytest.approx(z, rel=1e-12)
    # Inside its own 32-value window no value can score above sqrt(31) = 5.6 (Samuelson's
    # inequality), below the threshold of 6: scored llm.c's way, it could never be refused.
    assert z > 6.0 > np.sqrt(31)


def test_nothing_is_judged_before_min_history():
    guard = SpikeGuard(window=32)  # min_history defaults to the window, as llm.c
    for loss, norm in normal_stream(31):
        guard.observe(loss, norm)
    assert guard.check(100.0, 100.0) is None
    guard.accept(2.97, 1.0)
    assert guard.check(100.0, 100.0) is not None
    assert SpikeGuard(window=32, min_history=8).check(100.0, 100.0) is None


def test_only_upward_deviations_and_non_finite_values_are_refused():
    guard = warmed_guard()
    assert guard.check(0.5, 0.01) is None  # far below: no danger
    assert guard.check(float("nan"), 1.0) == "the loss is nan"
    assert guard.check(2.9, float("inf")) == "the gradient norm is inf"


def test_a_constant_history_flags_nothing():
    guard = SpikeGuard(window=4)
    for _ in range(4):
        guard.accept(2.0, 1.0)
    assert guard.check(2.5, 1.5) is None  # std 0: llm.c's z = 0


def test_persistent_after_patience_refusals_in_a_row():
    guard = warmed_guard(patience=3)
    for _ in range(3):
        assert not guard.persistent
        assert guard.observe(9.0, 1.0) is not None
    assert guard.persistent and guard.skipped_steps == 3
    guard.observe(2.96, 1.0)
    assert not guard.persistent


def test_the_state_goes_through_json_and_judges_the_same():
    guard = warmed_guard(n=50)
    guard.observe(7.0, 1.0)
    restored = SpikeGuard(window=32)
    restored.load_state(json.loads(json.dumps(guard.state())))
    assert restored.state() == guard.state()
    for loss, norm in normal_stream(20, seed=2) + [(8.0, 1.0), (2.9, 9.0)]:
        assert restored.observe(loss - 0.05, norm) == guard.observe(loss - 0.05, norm)
    assert restored.state() == guard.state()


@given(st.lists(st.tuples(st.floats(0.0, 10.0), st.floats(0.0, 10.0)), max_size=60),
       st.integers(2, 8))
def test_the_history_holds_exactly_the_accepted_values(stream, window):
    guard = SpikeGuard(window=window, threshold=1.5)  # low: many refusals
    accepted = []
    for loss, norm in stream:
        if guard.observe(loss, norm) is None:
            accepted.append((loss, norm))
    kept = accepted[-window:]
    assert list(guard.losses) == [loss for loss, _ in kept]
    assert list(guard.grad_norms) == [norm for _, norm in kept]
    assert guard.skipped_steps == len(stream) - len(accepted)


def test_plan_rewind_follows_palm():
    # About 100 updates back, then 300 batches (PaLM: 200 to 500) from there.
    assert plan_rewind(1234, [1100, 1200]) == Rewind(checkpoint_step=1100, skip_updates=300)
    assert plan_rewind(1250, [1200]) == Rewind(1200, 300)  # the only one: as far back as can be
    assert plan_rewind(1000, [500, 600, 1000]) == Rewind(600, 400)  # always past the spike
    assert plan_rewind(50, [50, 100]) is None  # nothing before the spike


# --- a tiny training loop: the outlier batch is skipped and the run goes on ------------------
def test_an_injected_outlier_batch_is_skipped_and_the_run_goes_on():
    # The model learns a counter (each token 3 more than the one before); at step 30 a batch
    # runs backwards, which the model by then predicts confidently wrong: its loss is 24
    # standard deviations above the window's, while no other step comes above 2.
    config = GPTConfig.tiny(n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config, seed=0)
    opt = AdamW(model.parameters(), lr=1e-2)
    guard = SpikeGuard(window=8)
    rng = np.random.default_rng(0)
    data = (np.arange(40 * 16) * 3 % 64).reshape(40, 16)  # (N, T) blocks of the stream
    outlier, records = 30, []
    for step in range(36):
        ids = data[rng.integers(0, 40, 4)]  # (B, T)
        if step == outlier:
            ids = ids[:, ::-1].copy()  # the same tokens, counting down
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        norm = clip_grad_norm(opt.params, 1.0)
        reason = guard.observe(loss.item(), norm)
        before = [p.data.copy() for p in opt.params]
        if reason is None:
            opt.step()
        opt.zero_grad()
        records.append((loss.item(), reason))
        if step == outlier:
            assert reason is not None and reason.startswith("loss spike"), records
            assert all(np.array_equal(p.data, b) for p, b in zip(opt.params, before))
    assert [step for step, (_, r) in enumerate(records) if r is not None] == [outlier]
    assert opt.t == 35 and guard.skipped_steps == 1
    assert records[-1][0] < records[outlier - 1][0]  # and it went on learning
