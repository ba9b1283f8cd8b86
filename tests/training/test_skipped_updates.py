"""The Trainer with dynamic loss scaling and the spike guard (TrainConfig.loss_scaling,
TrainConfig.spike_guard): a skipped update leaves the weights and the optimizer as they
were, the run goes on, and both features' state survives a resume."""

import json

import numpy as np

from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.training import TrainConfig, Trainer, TrainingDiverged
from npplm.training.data import pack
from npplm.training.spike_guard import SpikeGuard

T = 16


def clm(examples, rng):
    x = np.stack(examples)
    return {"input_ids": x, "labels": x}


def blocks(n=64):
    rng = np.random.default_rng(0)
    return pack([(np.arange(n * T) * 3 + rng.integers(0, 2, n * T)) % 64], T)


def model():
    return GPT2LMHeadModel(GPTConfig.tiny(n_positions=T, resid_pdrop=0.0, embd_pdrop=0.0,
                                          attn_pdrop=0.0), seed=0)


def config(**overrides):
    return TrainConfig(**{**dict(steps=6, batch_size=4, lr=3e-3, warmup_steps=1,
                                 eval_every=0, save_every=0, log_every=1, seed=1),
                          **overrides})


def fit(trainer):
    return [r for r in trainer.fit() if "loss" in r]


def test_loss_scaling_without_overflow_changes_nothing():
    """Powers of two scale and unscale exactly: the same losses, bit for bit."""
    plain = fit(Trainer(model(), clm, blocks(), config=config(), log=lambda *a: None))
    scaled = fit(Trainer(model(), clm, blocks(), config=config(loss_scaling=True),
                         log=lambda *a: None))
    assert [r["loss"] for r in scaled] == [r["loss"] for r in plain]
    assert [r["grad_norm"] for r in scaled] == [r["grad_norm"] for r in plain]
    assert all(r["loss_scale"] == 65536.0 and r["skipped_steps"] == 0 for r in scaled)


def test_an_inf_gradient_skips_the_update_and_halves_the_scale():
    m = model()
    trainer = Trainer(m, clm, blocks(), config=config(loss_scaling=True),
                      log=lambda *a: None)
    trainer.train_step()
    weights = {k: v.copy() for k, v in m.state_dict().items()}
    moments = {k: v.copy() for k, v in trainer.optimizer.state_arrays().items()}
    t = trainer.optimizer.t
    real = trainer.loss_fn

    def overflowing(model, batch):  # a float16 overflow, as an inf in the loss's graph
        loss = real(model, batch)
        return loss * np.float32(np.inf) if trainer.step == 1 else loss

    trainer.loss_fn = overflowing
    record = trainer.train_step()
    assert record["skipped"].startswith("inf/NaN gradients at loss scale 65536")
    assert record["grad_norm"] is None and record["skipped_steps"] == 1
    assert trainer.scaler.scale == 32768.0 and trainer.optimizer.t == t
    for k, v in m.state_dict().items():
        assert np.array_equal(v, weights[k]), k
    for k, v in trainer.optimizer.state_arrays().items():
        assert np.array_equal(v, moments[k]), k
    record = trainer.train_step()  # the run goes on at the smaller scale
    assert "skipped" not in record and record["loss_scale"] == 32768.0
    assert trainer.optimizer.t == t + 1


def test_the_spike_guard_skips_an_outlier_batch_and_the_run_goes_on():
    m = model()
    trainer = Trainer(m, clm, blocks(), config=config(steps=40, spike_guard=6.0, lr=1e-2),
                      log=lambda *a: None)
    # a short window, so that 25 steps of a falling loss make a history to judge against
    # (the default, llm.c's 128 updates, waits that long before judging anything)
    trainer.guard = SpikeGuard(window=8, threshold=6.0)
    real = trainer.loss_fn

    def with_an_outlier(model, batch):
        if trainer.step == 25:  # one batch of nonsense: every label a random token
            batch = {**batch, "labels": np.random.default_rng(0).integers(0, 64,
                                                                           batch["labels"].shape)}
        return real(model, batch)

    trainer.loss_fn = with_an_outlier
    weights = {}

    def snapshot_after_step_25(record):
        weights[record["step"]] = {k: v.copy() for k, v in m.state_dict().items()}

    records = []
    while trainer.step < 40:
        records.append(trainer.train_step())
        snapshot_after_step_25(records[-1])
    skipped = [r for r in records if "skipped" in r]
    assert [r["step"] for r in skipped] == [26], [(r["step"], r["loss"]) for r in records]
    assert "loss" in skipped[0]["skipped"]
    for k, v in weights[26].items():
        assert np.array_equal(v, weights[25][k]), k
    assert records[-1]["loss"] < records[24]["loss"]  # it kept learning afterwards
    assert records[-1]["skipped_steps"] == 1


def test_scaler_and_guard_state_are_checkpointed_and_resumed(tmp_path):
    cfg = config(steps=6, save_every=3, loss_scaling=True, spike_guard=6.0)
    whole = fit(Trainer(model(), clm, blocks(), config=cfg, run_dir=tmp_path / "a",
                        log=lambda *a: None))
    first = Trainer(model(), clm, blocks(), config=cfg, run_dir=tmp_path / "b",
                    log=lambda *a: None)
    first.fit(stop_at=3)
    state = json.loads((tmp_path / "b/checkpoints/step-000003/trainer_state.json").read_text())
    assert state["loss_scaler"]["scale"] == 65536.0
    assert len(state["spike_guard"]["losses"]) == 3
    second = Trainer(model(), clm, blocks(), config=cfg, run_dir=tmp_path / "b",
                     log=lambda *a: None)
    resumed = fit(second)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in whole]
    assert second.guard.state()["losses"] == [r["loss"] for r in whole]


def test_spikes_that_persist_stop_the_run_with_palms_remedy(tmp_path):
    m = model()
    trainer = Trainer(m, clm, blocks(), config=config(steps=40, spike_guard=6.0, lr=1e-2,
                                                      save_every=10, keep_checkpoints=3),
                      run_dir=tmp_path, log=lambda *a: None)
    trainer.guard = SpikeGuard(window=8, threshold=6.0, patience=3)
    real = trainer.loss_fn
    trainer.loss_fn = lambda model, batch: real(model, batch) * (100.0 if trainer.step >= 25
                                                                  else 1.0)
    try:
        trainer.fit()
        raise AssertionError("the run should have stopped")
    except TrainingDiverged as e:
        message = str(e)
    assert "the last 3 updates were all spikes" in message
    assert "PaLM's remedy (--spike-rewind): resume from step-000010" in message, message
    assert trainer.step == 27  # updates 26, 27 and 28 refused; 28 stopped the run


def test_spike_rewind_goes_back_past_the_bad_batches_and_finishes(tmp_path):
    """Three spikes in a row with spike_rewind: back to the oldest checkpoint kept (PaLM:
    about 100 steps back; a short run has only step 20), the data order moved 300 updates
    on, the abandoned stretch's checkpoints and metrics dropped, and the run finishes."""
    m = model()
    cfg = config(steps=40, spike_guard=6.0, spike_rewind=True, lr=1e-2, save_every=5,
                 keep_checkpoints=2)
    trainer = Trainer(m, clm, blocks(), config=cfg, run_dir=tmp_path, log=lambda *a: None)
    trainer.guard = SpikeGuard(window=8, threshold=6.0, patience=3)
    real, B = trainer.loss_fn, cfg.batch_size
    bad = range(25 * B, 30 * B)  # the examples of updates 26-30 in the first pass

    def spiking(model, batch):
        return real(model, batch) * (100.0 if trainer.position - B in bad else 1.0)

    trainer.loss_fn = spiking
    history = trainer.fit()
    rewinds = [r["rewind"] for r in history if "rewind" in r]
    assert len(rewinds) == 1 and rewinds[0]["spike_at"] == 28
    assert rewinds[0]["to"] == 20 and rewinds[0]["skipped_updates"] == 300
    steps = [r["step"] for r in history if "loss" in r]
    assert steps == list(range(1, 21)) + list(range(21, 41))  # 21-27 of the first pass gone
    assert trainer.step == 40 and trainer.guard.skipped_steps == 0  # the guard's state of step 20
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [r["step"] for r in logged if "loss" in r] == steps
    assert (tmp_path / "checkpoints/step-000040").is_dir()
