"""What tests/distributed/test_pipeline.py runs on every rank under `mpiexec -n 2 python -m
tests.distributed.pipeline_ranks SCENARIO OUT`: a tiny causal LM trained with GPipe on two
stages (npplm/distributed/pipeline.py) and, on rank 0, the same updates in one process with
the plain Trainer on the full batches; rank 0 writes OUT/SCENARIO.json (losses, norms,
checks) and OUT/SCENARIO.safetensors (both runs' final parameters), never pickle."""

import json
import pathlib
import sys

import numpy as np

from npplm import runtime
from npplm.distributed import SingleProcess, current_world
from npplm.distributed.pipeline import GPipe
from npplm.io import write_safetensors
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.models.llama import LlamaConfig, LlamaForCausalLM
from npplm.training import TrainConfig, Trainer
from npplm.training.data import BlockOrder
from npplm.training.optim import AdamW, decay_groups
from npplm.training.trainer import batch_rng
from tests.distributed.ranks import VOCAB, T, blocks, clm, gpt  # noqa: F401 (VOCAB: test_pipeline)


def clm_holes(examples, rng):
    """CLM with about 30% of the targets ignored (-100): micro-batches score different
    numbers of tokens, so their weights n_k / n are not all 1 / M."""
    x = np.stack(examples)
    labels = np.where(rng.random(x.shape) < 0.3, -100, x)
    return {"input_ids": x, "labels": labels}


def gpt_dropout():
    """Dropout 0.1 everywhere: each Dropout layer draws from its own generator, row by
    row, so the stages draw exactly one process's masks (pipeline.py's docstring)."""
    return GPT2LMHeadModel(GPTConfig.tiny(n_positions=T), seed=0)


def llama():
    """Three blocks on two stages (2 + 1) and a tied head, to cover the uneven cut."""
    return LlamaForCausalLM(LlamaConfig.tiny(num_hidden_layers=3, tie_word_embeddings=True,
                                             max_position_embeddings=T), seed=0)


SCENARIOS = {  # name: (model, collator, micro-batches M, batch B)
    "gpt": (gpt, clm, 4, 8),
    "gpt_dropout": (gpt_dropout, clm, 4, 8),
    "llama": (llama, clm_holes, 3, 8),
}


def config(batch_size):
    return TrainConfig(steps=10, batch_size=batch_size, lr=1e-3, warmup_steps=2,
                       clip_grad_norm=1.0, eval_every=0, save_every=0, log_every=1, seed=1)


def pipelined(make_model, collator, micro_batches, batch_size, world):
    """The Trainer's updates (same batches, schedule, AdamW, clipping) through GPipe."""
    cfg = config(batch_size)
    model = make_model()
    pipe = GPipe(model, world, micro_batches=micro_batches)
    groups = [g for g in decay_groups(pipe.stage, cfg.weight_decay) if g["params"]]
    optimizer = AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    schedule, data = cfg.schedule(), blocks()
    order = BlockOrder(len(data), seed=cfg.seed)
    losses, norms = [], []
    for step in range(cfg.steps):
        optimizer.set_lr(schedule(step))
        idx = order.indices(step * batch_size, batch_size)
        batch = collator([data[i] for i in idx], batch_rng(cfg.seed, step, 0))
        losses.append(pipe.step(batch))
        norms.append(pipe.clip_grad_norm(cfg.clip_grad_norm))
        optimizer.step()
        optimizer.zero_grad()
    return model, pipe, losses, norms


def one_process(make_model, collator, batch_size):
    model = make_model()
    trainer = Trainer(model, collator, blocks(), config=config(batch_size),
                      world=SingleProcess(), log=lambda *a: None)
    history = [r for r in trainer.fit() if "loss" in r]
    return model, [r["loss"] for r in history], [r["grad_norm"] for r in history]


def same_on_every_rank(values, world):
    mine = np.asarray(values, np.float64)
    every = np.empty(mine.size * world.size, np.float64)
    world.allgather(mine, every)
    rows = every.reshape(world.size, -1)
    return bool((rows == rows[0]).all())


def tied_copies_equal(pipe, world):
    """The last stage's copies of the tied tables, sent to rank 0: the same bytes as its own?"""
    equal = True
    last = world.size - 1
    for i, p, _ in pipe.tied:
        if world.rank == last:
            world.send(np.ascontiguousarray(p.data), 0, tag=1000 + i)
        elif world.is_main:
            theirs = world.recv(np.empty_like(p.data), last, tag=1000 + i)
            equal &= bool(np.array_equal(theirs, p.data))
    return equal


def train(name, world):
    make, collator, M, B = SCENARIOS[name]
    model, pipe, losses, norms = pipelined(make, collator, M, B, world)
    result = {"losses": losses, "grad_norms": norms, "stages": world.size,
              "bubble": pipe.bubble, "tied": [i for i, _, _ in pipe.tied],
              "layers": [list(s.layers) for s in pipe.stages],
              "losses_same_on_every_rank": same_on_every_rank(losses, world),
              "tied_copies_equal": tied_copies_equal(pipe, world)}
    pipe.gather(root=0)
    arrays = {}
    if world.is_main:
        arrays.update({f"{name}/pipeline/{k}": v for k, v in model.state_dict().items()})
        alone, alone_losses, alone_norms = one_process(make, collator, B)
        result.update(one_process=alone_losses, one_process_grad_norms=alone_norms)
        arrays.update({f"{name}/one/{k}": v for k, v in alone.state_dict().items()})
    return result, arrays


def exactness(world):
    results, arrays = {}, {}
    for name in SCENARIOS:
        results[name], more = train(name, world)
        arrays.update(more)
    return results, arrays


def main():
    scenario, out = sys.argv[1], pathlib.Path(sys.argv[2])
    runtime.configure()  # as Trainer.fit does, on every rank
    world = current_world()
    results, arrays = globals()[scenario](world)
    if world.is_main:
        results["size"] = world.size
        (out / f"{scenario}.json").write_text(json.dumps(results))
        write_safetensors({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                          out / f"{scenario}.safetensors")


if __name__ == "__main__":
    main()
