"""What tests/distributed runs on every rank under `mpiexec -n 2 python -m tests.distributed.ranks
SCENARIO OUT`: each scenario trains tiny models on both ranks and, on rank 0, the same run
in one process (world=SingleProcess()), then rank 0 writes OUT/SCENARIO.json for the test
to compare. Arrays go to OUT/SCENARIO.safetensors (never pickle)."""

import hashlib
import json
import pathlib
import sys

import numpy as np

from npplm.distributed import GradientBuckets, SingleProcess, allreduce_flat, current_world
from npplm.io import write_safetensors
from npplm.models.bert import BertConfig, BertForMaskedLM
from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
from npplm.objectives import MaskedLMCollator
from npplm.training import TrainConfig, Trainer
from npplm.training.data import pack

T, VOCAB = 16, 64


def clm(examples, rng):
    x = np.stack(examples)
    return {"input_ids": x, "labels": x}


def blocks(n=48, seed=0):
    rng = np.random.default_rng(seed)
    stream = (np.arange(n * T) * 3 + rng.integers(0, 2, n * T)) % VOCAB
    return pack([stream], T)


def gpt():
    return GPT2LMHeadModel(GPTConfig.tiny(n_positions=T, resid_pdrop=0.0, embd_pdrop=0.0,
                                          attn_pdrop=0.0), seed=0)


def bert():
    return BertForMaskedLM(BertConfig.tiny(hidden_dropout_prob=0.0,
                                           attention_probs_dropout_prob=0.0), seed=0)


def mlm_data():
    return list(np.random.default_rng(3).integers(5, VOCAB, size=(48, T)))


MLM = MaskedLMCollator(VOCAB, mask_id=4, pad_id=0, special_ids=[1, 2], token_type_ids=False)


def digest(model):
    from autograd import to_numpy

    h = hashlib.sha256()
    for p in model.parameters():
        h.update(np.ascontiguousarray(to_numpy(p.data)).tobytes())
    return h.hexdigest()


class Checked(Trainer):
    """A Trainer that checks after every update that all ranks hold the same bytes."""

    same_on_every_rank = True

    def train_step(self):
        record = super().train_step()
        mine = np.frombuffer(bytes.fromhex(digest(self.model)), np.uint8).copy()
        every = np.empty(mine.size * self.world.size, np.uint8)
        self.world.allgather(mine, every)
        rows = every.reshape(self.world.size, -1)
        self.same_on_every_rank &= bool((rows == rows[0]).all())
        return record


def train(make_model, collator, data, world, run_dir=None, stop_at=None, **settings):
    config = TrainConfig(**{**dict(steps=10, batch_size=8, lr=1e-3, warmup_steps=2,
                                   eval_every=0, save_every=0, log_every=1, seed=1),
                            **settings})
    model = make_model()
    trainer = Checked(model, collator, data, config=config, world=world, run_dir=run_dir,
                      log=lambda *a: None)
    history = trainer.fit(stop_at=stop_at)
    return model, [r["loss"] for r in history if "loss" in r], trainer


def exactness(out, world):
    """2 ranks x half batch against 1 process x full batch; ZeRO-1 against plain."""
    cases = {
        "clm": (gpt, clm, blocks(), {}),
        "clm_accum": (gpt, clm, blocks(), {"batch_size": 4, "grad_accum": 2}),
        "mlm": (bert, MLM, mlm_data(), {}),
        "mlm_accum": (bert, MLM, mlm_data(), {"batch_size": 4, "grad_accum": 2}),
        "clm_zero": (gpt, clm, blocks(), {"zero": True}),
        # checkpointed blocks hand their parameters' gradients to the buckets' callback too
        "clm_checkpointed": (gpt, clm, blocks(), {"gradient_checkpointing": True}),
        "mlm_zero": (bert, MLM, mlm_data(), {"zero": True, "grad_accum": 2}),
    }
    results, arrays = {}, {}
    for name, (make, collator, data, settings) in cases.items():
        model, losses, trainer = train(make, collator, data, world, **settings)
        results[name] = {"losses": losses, "same_on_every_rank": trainer.same_on_every_rank}
        if name.endswith("_zero"):
            results[name]["state_bytes"] = trainer.optimizer.state_nbytes
            results[name]["n_params"] = sum(p.size for p in trainer.optimizer.params)
        arrays.update({f"{name}/ranks/{k}": v for k, v in model.state_dict().items()})
        if world.is_main:
            alone, alone_losses, _ = train(make, collator, data, SingleProcess(),
                                           **{k: v for k, v in settings.items() if k != "zero"})
            results[name]["one_process"] = alone_losses
            arrays.update({f"{name}/one/{k}": v for k, v in alone.state_dict().items()})
    results["buckets"] = buckets_equal_flat(world)
    return results, arrays


def buckets_equal_flat(world):
    """The gradients of one backward summed by small buckets (several in flight) and by
    one flat all-reduce: the same bytes."""
    grads = []
    for bucketed in (True, False):
        model = gpt()
        data = blocks()[world.rank * 4:(world.rank + 1) * 4]
        loss = model(**clm(list(data), None)).loss
        params = model.parameters()
        if bucketed:
            buckets = GradientBuckets(params, world, bucket_bytes=4096)
            loss.backward(on_leaf_done=buckets.on_leaf_done)
            buckets.finish()
            n_buckets = len(buckets.buckets)
        else:
            loss.backward()
            allreduce_flat(params, world)
        grads.append(np.concatenate([p.grad.reshape(-1) for p in params]))
    return {"n_buckets": n_buckets, "equal": bool(np.array_equal(grads[0], grads[1])),
            "nonzero": bool(np.abs(grads[0]).sum() > 0)}


def fault(out, world):
    """Rank 1 raises in its loss at step 3: the Trainer ends the job naming rank and step
    (the test checks mpiexec's exit and message). Nothing is written."""
    def loss_fn(model, batch):
        if world.rank == 1 and trainer.step + 1 == 3:
            raise ValueError("a fault injected by the test")
        return model(**batch).loss

    model = gpt()
    config = TrainConfig(steps=10, batch_size=8, warmup_steps=0, eval_every=0, save_every=0)
    trainer = Trainer(model, clm, blocks(), config=config, world=world, loss_fn=loss_fn,
                      run_dir=out / "run", log=lambda *a: None)
    trainer.fit()
    return {"finished": True}, {}


def nccl(out, world):
    """Under NPPLM_BACKEND=cupy on 2 GPUs: NCCL's collectives, then 10 data-parallel steps
    against one process (tests/gpu/test_nccl.py)."""
    import cupy

    x = cupy.full(6, world.rank + 1, cupy.float32)
    world.allreduce(x)
    part = cupy.empty(3, cupy.float32)
    world.reduce_scatter(cupy.arange(6, dtype=cupy.float32), part)
    every = cupy.empty(6, cupy.float32)
    world.allgather(cupy.full(3, world.rank, cupy.float32), every)
    root = cupy.full(2, world.rank + 7, cupy.float32)
    world.broadcast(root)
    results = {"allreduce": x.get().tolist(), "reduce_scatter": part.get().tolist(),
               "allgather": every.get().tolist(), "broadcast": root.get().tolist(),
               "nccl": world.nccl is not None}
    model, losses, trainer = train(gpt, clm, blocks(), world)
    results["clm"] = {"losses": losses, "same_on_every_rank": trainer.same_on_every_rank}
    if world.is_main:
        results["clm"]["one_process"] = train(gpt, clm, blocks(), SingleProcess())[1]
    return results, {}


def death(out, world):
    """Rank 1 kills itself (SIGKILL) during step 3, after checkpoints at steps 1 and 2:
    mpiexec ends the job and names its pid; rank 0 logged every rank's pid at the start."""
    import os
    import signal

    def loss_fn(model, batch):
        if world.rank == 1 and trainer.step + 1 == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return model(**batch).loss

    config = TrainConfig(steps=10, batch_size=8, warmup_steps=0, eval_every=0, save_every=1)
    trainer = Trainer(gpt(), clm, blocks(), config=config, world=world, loss_fn=loss_fn,
                      run_dir=out / "run", log=lambda *a: print(*a, flush=True))
    trainer.fit()
    return {"finished": True}, {}


def main():
    scenario, out = sys.argv[1], pathlib.Path(sys.argv[2])
    world = current_world()
    results, arrays = globals()[scenario](out, world)
    if world.is_main:
        results["size"] = world.size
        (out / f"{scenario}.json").write_text(json.dumps(results))
        if arrays:
            write_safetensors({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                              out / f"{scenario}.safetensors")


if __name__ == "__main__":
    main()
