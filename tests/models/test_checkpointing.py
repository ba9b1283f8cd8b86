"""Activation checkpointing (`model.gradient_checkpointing_enable()`) for every family: the
same loss and gradients as without it, with dropout on (the replay draws the same masks):
bit for bit in float64, to 1e-6 in float32; parameters still get gradients when the
blocks' input needs none; and the graph kept until backward really shrinks."""

import numpy as np
import pytest

from autograd.graph import toposort
from npplm.models.albert import AlbertConfig, AlbertForMaskedLM
from npplm.models.bert import BertConfig, BertForMaskedLM
from npplm.models.glm import GLMConfig, GLMForConditionalGeneration, blank_infilling_inputs
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.models.llama import LlamaConfig, LlamaForCausalLM
from npplm.models.roberta import RobertaConfig, RobertaForMaskedLM
from npplm.models.t5 import T5Config, T5ForConditionalGeneration

RNG = np.random.default_rng(0)
IDS = RNG.integers(5, 40, (2, 12))
MLM_LABELS = np.where(RNG.random((2, 12)) < 0.3, IDS, -100)


def glm_batch():
    c = GLMConfig.tiny()
    rows = [blank_infilling_inputs(list(range(3, 11)), [(4, 6), (1, 3)],
                                   mask_token_id=c.mask_token_id, sop_token_id=c.sop_token_id,
                                   eop_token_id=c.eop_token_id) for _ in range(2)]
    return dict(input_ids=np.stack([r["input_ids"] for r in rows]),
                position_ids=np.stack([r["position_ids"] for r in rows]),
                attention_mask=np.array([r["sep"] for r in rows]),
                labels=np.stack([r["labels"] for r in rows]))


FAMILIES = {  # name: (model maker, the batch of its loss); dropout 0.1 everywhere
    "gpt2": (lambda: GPT2LMHeadModel(GPTConfig.tiny(n_positions=16, resid_pdrop=0.1,
                                                    embd_pdrop=0.1, attn_pdrop=0.1), seed=0),
             dict(input_ids=IDS, labels=IDS)),
    "llama": (lambda: LlamaForCausalLM(LlamaConfig.tiny(), seed=0),  # LLaMA has no dropout
              dict(input_ids=IDS, labels=IDS)),
    "bert": (lambda: BertForMaskedLM(BertConfig.tiny(), seed=0),
             dict(input_ids=IDS, labels=MLM_LABELS)),
    "roberta": (lambda: RobertaForMaskedLM(RobertaConfig.tiny(), seed=0),
                dict(input_ids=IDS, labels=MLM_LABELS)),
    "albert": (lambda: AlbertForMaskedLM(AlbertConfig.tiny(), seed=0),
               dict(input_ids=IDS, labels=MLM_LABELS)),
    "t5": (lambda: T5ForConditionalGeneration(T5Config.tiny(), seed=0),
           dict(input_ids=IDS, labels=IDS[:, :7])),
    "glm": (lambda: GLMForConditionalGeneration(GLMConfig.tiny(), seed=0), glm_batch()),
}


def run(family, dtype, checkpointing, frozen_embeddings=False):
    make, batch = FAMILIES[family]
    model = make().astype(dtype)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    if frozen_embeddings:  # the blocks' input then needs no gradient (PyTorch's trap)
        for name, p in model.named_parameters():
            if "embed" in name or "wte" in name or "wpe" in name or "shared" in name:
                p.requires_grad = False
    loss = model(**batch).loss
    nodes = len(toposort(loss._node))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return float(loss.item()), grads, nodes


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_checkpointing_gives_the_same_gradients_bit_for_bit_in_float64(family):
    """Equal bytes. (T5's decoder blocks get the encoder output's keys and values
    projected before them, npplm/models/t5.py: inside the checkpointed blocks, the
    encoder output's gradient would be summed per block first, in another order.)"""
    loss, grads, nodes = run(family, np.float64, False)
    loss_ck, grads_ck, nodes_ck = run(family, np.float64, True)
    assert loss_ck == loss
    assert grads.keys() == grads_ck.keys()
    for name in grads:
        assert grads_ck[name] is not None, name
        assert np.array_equal(grads_ck[name], grads[name]), name
    assert nodes_ck < nodes / 2, (nodes_ck, nodes)  # the blocks' graphs are not kept


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5"])
def test_float32_gradients_agree_to_1e6(family):
    loss, grads, _ = run(family, np.float32, False)
    loss_ck, grads_ck, _ = run(family, np.float32, True)
    assert abs(loss_ck - loss) <= 1e-6
    for name in grads:
        assert grads_ck[name].dtype == np.float32
        np.testing.assert_allclose(grads_ck[name], grads[name], rtol=0, atol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_blocks_whose_input_needs_no_gradient_still_train_their_parameters(family):
    _, grads, _ = run(family, np.float64, False, frozen_embeddings=True)
    _, grads_ck, _ = run(family, np.float64, True, frozen_embeddings=True)
    blocks = [n for n in grads if ".h." in n or ".layer." in n]
    assert blocks
    for name in grads:
        assert grads_ck[name] is not None and np.array_equal(grads_ck[name], grads[name]), name


def test_dropout_generators_end_where_they_would_without_checkpointing():
    """The replay restores the generators afterwards: the next step draws the same masks."""
    states = []
    for checkpointing in (False, True):
        model = FAMILIES["gpt2"][0]()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(**FAMILIES["gpt2"][1]).loss.backward()
        states.append([m.rng.bit_generator.state["state"]
                       for _, m in model.named_modules() if hasattr(m, "rng")])
    assert states[0] == states[1]


def test_eval_and_generation_do_not_checkpoint():
    model = FAMILIES["gpt2"][0]().gradient_checkpointing_enable().eval()
    loss = model(**FAMILIES["gpt2"][1]).loss
    assert all(n.primitive.name != "checkpoint" for n in toposort(loss._node))
    out = model.generate(IDS[:1, :4], max_new_tokens=3)
    assert out.shape == (1, 7)


def test_the_trainer_with_checkpointing_trains_the_same_run():
    """TrainConfig(gradient_checkpointing=True) (npplm train --grad-checkpointing): three
    updates with dropout give the same losses and weights, float64, bit for bit."""
    from npplm.training import TrainConfig, Trainer

    def clm(examples, rng):
        x = np.stack(examples)
        return {"input_ids": x, "labels": x}

    data = list(np.random.default_rng(1).integers(0, 64, (16, 16)))
    runs = []
    for checkpointing in (False, True):
        model = FAMILIES["gpt2"][0]().astype(np.float64)
        config = TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=0,
                             save_every=0, log_every=1, gradient_checkpointing=checkpointing)
        history = Trainer(model, clm, data, config=config, log=lambda *a: None).fit()
        assert model.gradient_checkpointing is checkpointing
        runs.append(([r["loss"] for r in history], model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for name, value in runs[0][1].items():
        assert np.array_equal(runs[1][1][name], value), name
