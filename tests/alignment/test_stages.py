"""The three stages end to end on a tiny GPT-2, with fixed seeds and thresholds: SFT lowers
the held-out answer NLL, the reward model learns to rank, DPO raises the held-out implicit
reward accuracy and margin; each run folder resumes, and its checkpoint loads."""

import json

import numpy as np
import pytest

import npplm
from npplm.alignment import sft, train_dpo, train_reward_model
from npplm.alignment.data import write_jsonl
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.training import TrainConfig
from npplm.training.data import stdlib_documents
from npplm.training.recipe import EOT, FAMILIES, train_tokenizer
from npplm.training.run_folder import resolve_model

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda",
         "sigma", "omega", "river", "stone", "cloud", "maple", "cedar", "amber", "coral"]


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """A folder holding a tiny GPT-2 and its tokenizer: the model every stage starts from."""
    folder = tmp_path_factory.mktemp("policy")
    docs = stdlib_documents(30_000) + [" ".join(WORDS) * 3, "Sure, the answer is"]
    tok = train_tokenizer(FAMILIES["gpt"].tokenizer, docs, 400, log=lambda *_: None)
    eot = tok.token_to_id(EOT)
    config = GPTConfig.tiny(vocab_size=tok.vocab_size, n_positions=64, bos_token_id=eot,
                            eos_token_id=eot, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    GPT2LMHeadModel(config, seed=0).save_pretrained(folder)
    tok.save(folder)
    return folder


def preference_rows(n, seed):
    """Pairs with a learnable preference: the chosen answer is polite."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        word = WORDS[rng.integers(len(WORDS))]
        rows.append({"prompt": f"Say {word}.", "chosen": f" Sure, the answer is {word}.",
                     "rejected": f" {word} {word} {word}!!"})
    return rows


def config(steps, **overrides):
    return TrainConfig(**{**dict(steps=steps, batch_size=8, lr=3e-3, warmup_steps=2,
                                 eval_every=steps, eval_batches=4, save_every=steps,
                                 log_every=1, seed=0), **overrides})


def held_out(trainer, key):
    evals = [r for r in trainer.history if key in r]
    return evals[0][key], evals[-1][key]


def test_sft_lowers_the_held_out_answer_nll_and_resumes(tiny_policy, tmp_path):
    data = tmp_path / "sft.jsonl"
    write_jsonl([{"prompt": r["prompt"], "completion": r["chosen"]}
                 for r in preference_rows(200, 0)], data)
    trainer = sft(tiny_policy, tmp_path / "sft", config(40), data=data, max_length=48,
                  log=lambda *_: None)
    first, last = held_out(trainer, "val_loss")
    assert last < 0.6 * first, (first, last)
    assert (tmp_path / "sft" / "sft.png").stat().st_size > 1000
    again = sft(tiny_policy, tmp_path / "sft", config(40), data=data, max_length=48,
                log=lambda *_: None)  # the same request: it resumes, nothing to do
    assert again.resumed_from == 40
    model = npplm.from_pretrained(resolve_model(tmp_path / "sft"))  # loads on its own
    assert type(model).__name__ == "GPT2LMHeadModel"


def test_the_reward_model_learns_to_rank_and_loads_in_transformers(tiny_policy, tmp_path):
    data = tmp_path / "pairs.jsonl"
    write_jsonl(preference_rows(200, 1), data)
    trainer = train_reward_model(tiny_policy, tmp_path / "rm", config(30), data=data,
                                 max_length=48, log=lambda *_: None)
    first, last = held_out(trainer, "rewards/accuracies")
    assert last >= 0.9, (first, last)
    checkpoint = resolve_model(tmp_path / "rm")
    assert json.loads((checkpoint / "config.json").read_text())["architectures"] == \
        ["GPT2ForSequenceClassification"]
    assert type(npplm.from_pretrained(checkpoint)).__name__ == "GPT2ForSequenceClassification"


def test_dpo_raises_the_held_out_implicit_reward_accuracy_and_margin(tiny_policy, tmp_path):
    data = tmp_path / "pairs.jsonl"
    write_jsonl(preference_rows(200, 2), data)
    trainer = train_dpo(tiny_policy, tmp_path / "dpo", config(30, lr=1e-3), data=data,
                        max_length=48, beta=0.1, log=lambda *_: None)
    first, last = held_out(trainer, "rewards/accuracies")
    assert first == 0.0 and last > 0.5  # at step 0 policy == reference: rewards are 0
    margin_first, margin_last = held_out(trainer, "rewards/margins")
    assert margin_first == 0.0 and margin_last > 0.1
    loss_first, _ = held_out(trainer, "val_loss")
    assert loss_first == pytest.approx(np.log(2), rel=1e-5)  # policy == reference


def test_a_different_request_in_a_stage_folder_is_refused(tiny_policy, tmp_path):
    from npplm.training.run_folder import RunFolderError

    data = tmp_path / "pairs.jsonl"
    write_jsonl(preference_rows(40, 3), data)
    train_dpo(tiny_policy, tmp_path / "dpo", config(2), data=data, max_length=48,
              log=lambda *_: None)
    with pytest.raises(RunFolderError, match="differs in beta"):
        train_dpo(tiny_policy, tmp_path / "dpo", config(2), data=data, max_length=48,
                  beta=0.5, log=lambda *_: None)


@pytest.mark.parametrize("stage", ["sft", "reward", "dpo"])
def test_the_stage_commands_run_and_report(stage, tiny_policy, tmp_path, capsys):
    from npplm import cli

    rows = preference_rows(40, 4)
    if stage == "sft":
        rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]
    write_jsonl(rows, tmp_path / "data.jsonl")
    code = cli.main([stage, "--model", str(tiny_policy), "--data", str(tmp_path / "data.jsonl"),
                     "--out", str(tmp_path / stage), "--steps", "3", "--warmup", "1",
                     "--batch-size", "4", "--max-length", "48", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "held out: loss" in out.out and "checkpoint:" in out.out
    if stage != "sft":
        assert "rewards/accuracies" in out.out
    assert cli.main([stage, "--model", str(tiny_policy), "--data",
                     str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_sft_micro_batches_give_the_full_batchs_update(tiny_policy):
    """Two micro-batches of 2 equal one batch of 4 (answers of different lengths): each
    micro-batch weighs by its share of the completion tokens (the Trainer's exact
    accumulation), so the mean is over the update's answer tokens."""
    from npplm.alignment.data import SFTCollator, tokenize_sft
    from npplm.training import Trainer

    tok = npplm.load_tokenizer(tiny_policy)
    rows = [{"prompt": f"Say {w}.", "completion": " Sure" + ", yes" * (i % 3) + f" {w}."}
            for i, w in enumerate(WORDS[:8])]
    examples, _ = tokenize_sft(rows, tok, 48)
    models = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = npplm.from_pretrained(tiny_policy)
        Trainer(model, SFTCollator(tok.pad_id), examples, None,
                config(1, batch_size=batch_size, grad_accum=accumulation, warmup_steps=0,
                       optimizer="sgd", lr=0.5)).fit()
        models.append(model)
    for (name, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_examples_longer_than_the_context_are_refused_before_any_work(tiny_policy, tmp_path):
    with pytest.raises(ValueError, match="--max-length 100 exceeds the context of .* 64"):
        sft(tiny_policy, tmp_path / "x", config(2), max_length=100, log=pytest.fail)
    assert not (tmp_path / "x").exists()
