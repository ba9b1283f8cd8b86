"""Every family and objective `npplm train` offers: it trains, it checkpoints, it resumes
exactly, and the checkpoint folder loads on its own."""

import numpy as np
import pytest

import npplm
from npplm.training import TrainConfig, Trainer
from npplm.training.recipe import FAMILIES, build_run, make_config

RUNS = [(family, objective) for family, fam in FAMILIES.items() for objective in fam.objectives]


def test_every_family_offers_its_papers_objectives():
    assert RUNS == [("gpt", "clm"), ("llama", "clm"), ("bert", "mlm+nsp"), ("bert", "mlm"),
                    ("roberta", "mlm"), ("albert", "mlm+sop"), ("albert", "mlm"),
                    ("t5", "span"), ("glm", "blank"), ("glm", "gmask")]


def run_for(family, objective):
    return build_run(family, "tiny", objective, max_chars=30_000, block_size=32,
                     vocab_size=400, log=lambda _: None)


@pytest.mark.parametrize("family,objective", RUNS, ids=[f"{f}-{o}" for f, o in RUNS])
def test_trains_checkpoints_and_resumes_exactly(family, objective, tmp_path):
    config = TrainConfig(steps=4, batch_size=4, lr=3e-3, warmup_steps=1, eval_every=2,
                         eval_batches=1, save_every=2, log_every=1, seed=0)

    def trainer(name):
        run = run_for(family, objective)  # the same every time
        return run, Trainer(run.model, run.collator, run.train, run.val, config,
                            run_dir=tmp_path / name, perplexity=run.perplexity,
                            tokenizer=run.tokenizer)

    run, whole = trainer("whole")
    full = [r["loss"] for r in whole.fit() if "loss" in r]
    assert len(full) == 4 and all(np.isfinite(full))
    _, first = trainer("cut")
    first.fit(stop_at=2)
    _, second = trainer("cut")
    assert [r["loss"] for r in second.fit() if "loss" in r] == full
    checkpoint = tmp_path / "whole" / "checkpoints" / "step-000004"
    tokenizer = npplm.load_tokenizer(checkpoint)  # the folder is self-contained
    assert tokenizer.vocab_size == run.tokenizer.vocab_size
    model = npplm.from_pretrained(checkpoint)  # GLM too, from npplm's own config.json
    assert type(model) is type(run.model)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, whole.model.state_dict()[name])


def test_configs_take_the_tokenizers_ids_and_the_block_size(tmp_path):
    run = run_for("roberta", "mlm")
    config = run.model.config
    tok = run.tokenizer
    assert config.vocab_size == tok.vocab_size
    assert config.pad_token_id == tok.token_to_id("<pad>") == 1
    assert config.max_position_embeddings == 32 + 2  # positions count from pad + 1
    assert run.train.shape[1] == 32
    assert (run.train[:, 0] == tok.token_to_id("<s>")).all()
    assert (run.train[:, -1] == tok.token_to_id("</s>")).all()


def test_unknown_preset_and_field_are_named():
    with pytest.raises(ValueError, match="'huge' is not a BertConfig preset"):
        make_config("bert", "huge", {})
    with pytest.raises(ValueError, match="--set hidden: BertConfig has no such field"):
        make_config("bert", "tiny", {"hidden": 3})
