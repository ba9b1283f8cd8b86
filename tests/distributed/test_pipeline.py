"""GPipe pipeline parallelism (npplm/distributed/pipeline.py): the cut, the bubble, one
process's micro-batched step against the plain full batch, and two MPI stages against one
process (tests/distributed/pipeline_ranks.py runs the ranks; this side compares)."""

import json

import numpy as np
import pytest

from npplm.distributed import SingleProcess
from npplm.distributed.pipeline import GPipe, Stage, bubble, cut_model, split_layers
from npplm.io import read_safetensors
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig, OpenAIGPTLMHeadModel
from tests.distributed import pipeline_ranks
from tests.distributed.mpi import run_ranks
from tests.tolerances import assert_close

SCENARIOS = tuple(pipeline_ranks.SCENARIOS)  # "gpt": 2 x 1 blocks; "llama": 2 + 1, tied


@pytest.fixture(scope="module")
def exactness(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    run_ranks(["-m", "tests.distributed.pipeline_ranks", "exactness", out], timeout=120)
    return (json.loads((out / "exactness.json").read_text()),
            read_safetensors(out / "exactness.safetensors"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_two_stage_pipeline_trains_as_one_process(exactness, name):
    """10 updates of GPipe on 2 stages = the Trainer in one process on the full batches:
    the same losses, gradient norms and final parameters, to float32 rounding."""
    results, arrays = exactness
    got = results[name]
    assert results["size"] == 2 and got["stages"] == 2
    assert len(got["losses"]) == 10 and got["losses_same_on_every_rank"]
    assert_close(got["losses"], got["one_process"], "model32")
    assert_close(got["grad_norms"], got["one_process_grad_norms"], "model32")
    names = [k.split("/", 2)[2] for k in arrays if k.startswith(f"{name}/pipeline/")]
    assert len(names) > 20
    for key in names:
        assert_close(arrays[f"{name}/pipeline/{key}"], arrays[f"{name}/one/{key}"], "model32")


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_tied_table_stays_the_same_on_the_first_and_last_stage(exactness, name):
    got = exactness[0][name]
    assert got["tied"] == [0]  # the token table, the model's first parameter
    assert got["tied_copies_equal"]  # bit for bit, after 10 updates


def test_reported_bubble_and_cut(exactness):
    results = exactness[0]
    assert results["gpt"]["bubble"] == pytest.approx(1 / 5)  # N = 2, M = 4
    assert results["llama"]["bubble"] == pytest.approx(1 / 4)  # N = 2, M = 3
    assert results["gpt"]["layers"] == [[0], [1]]
    assert results["llama"]["layers"] == [[0, 1], [2]]


def test_bubble_formula():
    # (N - 1) / (M + N - 1): GPipe's idle slots over all slots of a pass
    assert bubble(1, 8) == 0.0
    assert bubble(2, 4) == pytest.approx(1 / 5)
    assert bubble(3, 4) == pytest.approx(2 / 6)
    assert bubble(4, 1) == pytest.approx(3 / 4)  # one micro-batch: only one stage works
    assert bubble(4, 16) == pytest.approx(3 / 19)
    model = pipeline_ranks.gpt()
    assert GPipe(model, SingleProcess(), micro_batches=4).bubble == 0.0


def test_blocks_split_evenly_and_in_order():
    assert [list(r) for r in split_layers(2, 2)] == [[0], [1]]
    assert [list(r) for r in split_layers(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [list(r) for r in split_layers(4, 1)] == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="cannot fill"):
        split_layers(2, 3)


def test_stages_hold_every_parameter_and_share_only_the_tied_table():
    model = pipeline_ranks.gpt()
    cut = cut_model(model)
    first, last = (Stage(cut, s, 2, r) for s, r in enumerate(split_layers(2, 2)))
    names0 = {n for n, _ in first.named_parameters()}
    names1 = {n for n, _ in last.named_parameters()}
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= names0
    assert all(not n.startswith("transformer.h.1.") for n in names0)
    assert {"transformer.ln_f.weight", "transformer.h.1.mlp.c_fc.weight"} <= names1
    assert names0 & names1 == {"transformer.wte.weight"}  # lm_head reads the same table
    assert names0 | names1 == {n for n, _ in model.named_parameters()}


def holes_batch(rows=7, seed=5):
    """A batch whose rows score different numbers of targets (-100 holes)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, pipeline_ranks.VOCAB, size=(rows, pipeline_ranks.T))
    return {"input_ids": x, "labels": np.where(rng.random(x.shape) < 0.3, -100, x)}


def gpt1():
    return OpenAIGPTLMHeadModel(GPTConfig.tiny(model_type="openai-gpt", n_positions=16), seed=0)


def gpt3_banded():
    """Dense and locally banded layers (GPT-3's sparse pattern): the band's additive bias."""
    return GPT2LMHeadModel(GPTConfig.tiny(n_positions=16, attention_layers=("global", "local"),
                                          local_window=5), seed=0)


@pytest.mark.parametrize("make", [pipeline_ranks.gpt, pipeline_ranks.llama, gpt1, gpt3_banded])
def test_one_stage_micro_batches_give_the_full_batch_loss_and_gradient(make):
    """SingleProcess: one stage, the whole model; 7 rows in M = 3 uneven micro-batches
    weighted by their scored targets = one forward and backward of the 7 rows."""
    batch = holes_batch()
    reference = make()
    loss = reference(**batch).loss
    loss.backward()
    model = make()
    pipe = GPipe(model, SingleProcess(), micro_batches=3)
    assert pipe.stage.parameters() == model.parameters()
    got = pipe.step(batch)
    assert got == pytest.approx(float(loss.item()), abs=1e-6)
    scale = max(float(np.abs(p.grad).max()) for p in reference.parameters())
    for p, q in zip(model.parameters(), reference.parameters()):
        assert_close(p.grad, q.grad, "model_grad32", scale=scale)
    norm = pipe.clip_grad_norm(None)
    assert norm == pytest.approx(np.sqrt(sum(float((q.grad.astype(np.float64) ** 2).sum())
                                             for q in reference.parameters())), rel=1e-5)


def test_pipeline_refuses_what_it_cannot_run():
    from npplm.models.bert import BertConfig, BertForMaskedLM

    with pytest.raises(TypeError, match="cuts"):
        GPipe(BertForMaskedLM(BertConfig.tiny()), SingleProcess(), micro_batches=2)
    pipe = GPipe(pipeline_ranks.gpt(), SingleProcess(), micro_batches=8)
    with pytest.raises(ValueError, match="micro-batches"):
        pipe.step(holes_batch(rows=4))
    with pytest.raises(ValueError, match="labels required"):
        pipe.step({"input_ids": holes_batch()["input_ids"]})
