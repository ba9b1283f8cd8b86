"""The training loop: accumulation, determinism, resume, divergence, and PyTorch parity."""

import json
import math

import numpy as np
import pytest

from npplm.io import CheckpointError
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.training import TrainConfig, Trainer, TrainingDiverged
from npplm.training.checkpointing import latest_checkpoint
from npplm.training.data import pack
from tests.tolerances import assert_close

T = 16


def clm(examples, rng):
    """Next-token batches: the labels are the inputs (the model shifts them)."""
    x = np.stack(examples)
    return {"input_ids": x, "labels": x}


def blocks(n=40, vocab=64, seed=0):
    """Blocks of a learnable stream: a noisy counter modulo the vocabulary."""
    rng = np.random.default_rng(seed)
    stream = (np.arange(n * T) * 3 + rng.integers(0, 2, n * T)) % vocab
    return pack([stream], T)


def tiny_model(seed=0, dropout=0.0, dtype=np.float32):
    config = GPTConfig.tiny(n_positions=T, resid_pdrop=dropout, embd_pdrop=dropout,
                            attn_pdrop=dropout)
    return GPT2LMHeadModel(config, seed=seed).astype(dtype)


def config(**overrides):
    base = dict(steps=8, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=4, eval_batches=2,
                save_every=3, log_every=1, seed=1)
    return TrainConfig(**{**base, **overrides})


def losses(history):
    return [r["loss"] for r in history if "loss" in r]


def test_gradient_accumulation_equals_one_large_batch():
    """4 micro-batches of 2 give the update of one batch of 8 (float64: to rounding)."""
    data = blocks()
    runs = []
    for batch, accum in ((8, 1), (2, 4)):
        model = tiny_model(dtype=np.float64)
        Trainer(model, clm, data, config=config(batch_size=batch, grad_accum=accum,
                                                steps=3)).fit()
        runs.append(model.state_dict())
    for name in runs[0]:
        assert_close(runs[1][name], runs[0][name], "float64")


def test_accumulation_is_exact_for_mlm_whose_micro_batches_mask_different_counts():
    """Static masks (fixed by each example's index) make 4 micro-batches of 2 and one batch
    of 8 mask the same tokens; weighted by their masked counts, the micro-batch means add
    up to the big batch's mean, and the updates agree (float64: to rounding)."""
    from npplm.models.bert import BertConfig, BertForMaskedLM
    from npplm.objectives import MaskedLMCollator
    from npplm.training.trainer import accumulation_weights

    rng = np.random.default_rng(3)
    data = rng.integers(5, 64, size=(16, T))
    collate = MaskedLMCollator(64, mask_id=4, pad_id=0, special_ids=[1, 2], static_seed=5,
                               token_type_ids=False)
    counts = [int((collate(data[i:i + 2], None, indices=range(i, i + 2))["labels"] != -100)
                  .sum()) for i in range(0, 8, 2)]
    assert len(set(counts)) > 1  # the micro-batches really mask different numbers
    runs = []
    for batch, accum in ((8, 1), (2, 4)):
        model = BertForMaskedLM(BertConfig.tiny(hidden_dropout_prob=0.0,
                                                attention_probs_dropout_prob=0.0),
                                seed=0).astype(np.float64)
        history = Trainer(model, collate, data, config=config(batch_size=batch,
                                                              grad_accum=accum, steps=2)).fit()
        runs.append((losses(history), model.state_dict()))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-12)
    for name in runs[0][1]:
        assert_close(runs[1][1][name], runs[0][1][name], "float64")
    batches = [{"labels": np.array([[1, -100, 2]])}, {"labels": np.array([[-100, -100, 3]])}]
    assert accumulation_weights(batches) == [2 / 3, 1 / 3]
    assert accumulation_weights(batches, shifted=True) == [1 / 2, 1 / 2]  # labels[:, 1:]
    nsp = [dict(b, next_sentence_label=np.array([0])) for b in batches]
    assert accumulation_weights(nsp) == [1 / 2, 1 / 2]  # two terms: the mean of the losses


def test_same_seed_same_losses_and_training_learns():
    data = blocks()
    a = losses(Trainer(tiny_model(), clm, data, config=config(steps=30)).fit())
    b = losses(Trainer(tiny_model(), clm, data, config=config(steps=30)).fit())
    assert a == b
    assert np.mean(a[-5:]) < np.mean(a[:5]) - 0.5


def test_resumed_run_equals_uninterrupted(tmp_path):
    """With dropout on (its generators are part of the state), stopping after step 5 and
    resuming into a freshly initialised model gives bit-identical later losses."""
    data, val = blocks(), blocks(8, seed=1)
    full = Trainer(tiny_model(dropout=0.1), clm, data, val, config=config(),
                   run_dir=tmp_path / "full").fit()
    first = Trainer(tiny_model(dropout=0.1), clm, data, val, config=config(),
                    run_dir=tmp_path / "cut")
    first.fit(stop_at=5)
    assert first.step == 5 and latest_checkpoint(tmp_path / "cut").name == "step-000005"
    resumed = Trainer(tiny_model(seed=7, dropout=0.1), clm, data, val, config=config(),
                      run_dir=tmp_path / "cut")
    history = resumed.fit()
    assert losses(history) == losses(full)
    assert [r["val_loss"] for r in history if "val_loss" in r] == \
        [r["val_loss"] for r in full if "val_loss" in r]
    logged = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").open()]
    assert [r["step"] for r in logged if "loss" in r] == list(range(1, 9))
    assert (tmp_path / "cut" / "loss.png").stat().st_size > 1000


def test_checkpoints_are_kept_and_complete(tmp_path):
    Trainer(tiny_model(), clm, blocks(), config=config(keep_checkpoints=2),
            run_dir=tmp_path).fit()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["latest.json", "step-000006", "step-000008"]
    files = sorted(p.name for p in (tmp_path / "checkpoints" / "step-000008").iterdir())
    assert files == ["config.json", "model.safetensors", "optimizer.safetensors",
                     "trainer_state.json"]
    import npplm

    model = npplm.from_pretrained(tmp_path / "checkpoints" / "step-000008")
    assert isinstance(model, GPT2LMHeadModel)


def test_resume_refuses_another_model_or_run(tmp_path):
    Trainer(tiny_model(), clm, blocks(), config=config(steps=3), run_dir=tmp_path).fit()
    wider = GPT2LMHeadModel(GPTConfig.tiny(n_positions=T, n_embd=48))
    with pytest.raises(CheckpointError, match="another model.*n_embd: checkpoint 32, model 48"):
        Trainer(wider, clm, blocks(), config=config(steps=6), run_dir=tmp_path).fit()
    with pytest.raises(CheckpointError, match="batch_size=4.*asks for 2"):
        Trainer(tiny_model(), clm, blocks(), config=config(steps=6, batch_size=2),
                run_dir=tmp_path).fit()


def test_nan_loss_stops_and_names_step_and_checkpoint(tmp_path):
    model = tiny_model()

    def poisoned(examples, rng):
        batch = clm(examples, rng)
        if trainer.step == 4:  # from the fifth update on, weights are broken
            model.transformer.wte.weight.data[:] = np.nan
        return batch

    trainer = Trainer(model, poisoned, blocks(), config=config(save_every=2), run_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 5 .*step-000004"):
        trainer.fit()
    assert latest_checkpoint(tmp_path).name == "step-000004"


def test_bad_train_configs_are_named():
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="warmup_steps=20 exceeds steps=10"):
        TrainConfig(steps=10, warmup_steps=20)
    with pytest.raises(ValueError, match="'adam'"):
        TrainConfig(optimizer="adam")


# --- PyTorch parity: llm.c's check ----------------------------------------------------------

def test_ten_adamw_steps_match_pytorch(tmp_path):
    """Ten AdamW steps on a tiny GPT-2 from identical weights and data: npplm's Trainer and
    transformers + torch.optim.AdamW (same decay groups, warmup-cosine schedule, global norm
    clipping) give the same ten losses within 1e-5."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = tiny_model(seed=3)
    model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager")
    hf.train()  # dropout 0.1 in the tiny config is set to 0 below; train mode as ours
    for m in hf.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    cfg = config(steps=10, batch_size=4, lr=1e-2, warmup_steps=3, weight_decay=0.1,
                 clip_grad_norm=0.5, eval_every=0, save_every=0)
    data = blocks()
    trainer = Trainer(model, clm, data, config=cfg)
    ours = losses(trainer.fit())

    decay = [p for p in hf.parameters() if p.ndim >= 2]
    rest = [p for p in hf.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    schedule = cfg.schedule()
    theirs = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        idx = trainer.order.indices(step * cfg.batch_size, cfg.batch_size)
        x = torch.tensor(data[idx])
        loss = hf(x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), cfg.clip_grad_norm)
        opt.step()
        opt.zero_grad()
        theirs.append(loss.item())
    assert len(ours) == 10
    print("max |ours - theirs| =", np.max(np.abs(np.subtract(ours, theirs))))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    assert theirs[-1] < theirs[0] - 0.3  # it trained, so the comparison means something
    assert all(math.isfinite(x) for x in ours)


def test_the_nan_message_suggests_what_is_not_on_yet(tmp_path):
    for clip, remedy in ((1.0, "the clipping norm \\(--clip, now 1\\)"),
                         (None, "clip gradients \\(--clip 1.0\\)")):
        model = tiny_model()

        def poisoned(examples, rng, model=model):
            model.transformer.wte.weight.data[:] = np.nan
            return clm(examples, rng)

        trainer = Trainer(model, poisoned, blocks(), config=config(clip_grad_norm=clip))
        with pytest.raises(TrainingDiverged, match=remedy):
            trainer.fit()


@pytest.mark.parametrize("field, value", [("lr", float("nan")), ("lr", -1.0), ("lr", 0.0),
                                          ("weight_decay", -1.0), ("min_lr", 1.0),
                                          ("clip_grad_norm", float("nan")), ("eps", 0.0),
                                          ("betas", (0.9, 1.0))])
def test_out_of_range_numbers_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{"lr": 1e-3, field: value})
