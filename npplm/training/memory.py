"""Where a training step's memory goes: `npplm train --dry-run`.

A step holds, besides the weights,

    gradients            one array per trainable parameter, its size
    optimizer moments    AdamW: two more (m and v), SGD with momentum: one; / N under ZeRO-1
    activations          every array the graph keeps for backward (each node's inputs and
                         output), from the forward until backward has used it

The first three follow from the parameter count. Activations depend on the model, the
batch and the implementation, so they are counted, not guessed: `graph_bytes` runs one
forward on a real batch and adds up the distinct buffers its graph references (views share
their base; the parameters themselves are not counted). With activation checkpointing the
graph keeps only each block's input, plus, during backward, one block's replay at a time:
`activation_bytes(..., checkpointing=True)` counts the first and adds the largest block's
own graph for the second.

`measured_step_peak` then runs a real step and samples the process's resident memory above
what it held before (after giving the heap's free pages back): NumPy's, Numba's and the
allocator's memory alike.
"""

import os

from autograd.graph import toposort


def _base(a):
    while getattr(a, "base", None) is not None and hasattr(a.base, "nbytes"):
        a = a.base
    return a


def graph_bytes(loss, exclude=()):
    """Bytes of the distinct arrays the graph below `loss` keeps (a view counts as its
    base), leaving out the arrays in `exclude` (the parameters)."""
    skip = {id(_base(a)) for a in exclude}
    seen, total = set(), 0
    for node in toposort(loss._node):
        outs = node.out if isinstance(node.out, tuple) else (node.out,)
        for a in (*node.inputs, *outs):
            if not hasattr(a, "nbytes"):
                continue
            base = _base(a)
            if id(base) in skip or id(base) in seen:
                continue
            seen.add(id(base))
            total += base.nbytes
    return total


def activation_bytes(model, batch, loss_fn, checkpointing=False):
    """What one forward's graph keeps for backward (see the module docstring)."""
    params = [p.data for p in model.parameters()]
    before = model.gradient_checkpointing
    model.gradient_checkpointing_enable(checkpointing)
    try:
        model.train()
        kept = graph_bytes(loss_fn(model, batch), exclude=params)
        if checkpointing:
            kept += largest_block_replay(model, batch, loss_fn, params)
    finally:
        model.gradient_checkpointing_enable(before)
    return kept


def largest_block_replay(model, batch, loss_fn, params):
    """The graph one checkpointed block rebuilds in backward: the plain graph's bytes minus
    the checkpointed graph's, over the number of checkpointed block calls (the blocks of a
    stack are alike)."""
    model.gradient_checkpointing_enable(False)
    plain = graph_bytes(loss_fn(model, batch), exclude=params)
    model.gradient_checkpointing_enable(True)
    loss = loss_fn(model, batch)
    ck = graph_bytes(loss, exclude=params)
    calls = sum(1 for node in toposort(loss._node) if node.primitive.name == "checkpoint")
    return max(0, plain - ck) // max(1, calls)


def state_bytes(model, optimizer_kind, ranks=1, zero=False):
    """Weights, gradients and optimizer moments, in bytes (float32 masters)."""
    params = model.parameters()
    weights = sum(p.data.nbytes for p in params)
    trained = sum(p.data.nbytes for p in params if p.requires_grad)
    return _states(weights, trained, optimizer_kind, ranks, zero)


def _states(weights, trained, optimizer_kind, ranks=1, zero=False):
    moments = {"adamw": 2, "sgd": 1}[optimizer_kind] * trained
    return {"weights": weights, "gradients": trained,
            "optimizer": moments // ranks if zero else moments}


def rss_bytes():
    """The resident set now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measured_step_peak(step, interval=0.0005):
    """Peak resident bytes above the present ones while `step()` runs: the heap's free
    pages are given back first (runtime.release_freed_memory), then a thread samples the
    resident set every `interval` seconds (NumPy's products and Numba's kernels release
    the GIL, so it gets to run)."""
    import threading

    from npplm import runtime

    runtime.release_freed_memory()
    before = peak = rss_bytes()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            done.wait(interval)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        step()
    finally:
        done.set()
        watcher.join()
    return max(0, max(peak, rss_bytes()) - before)


def format_bytes(n):
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def account_table(rows):
    """The dry run's table: (what, bytes, note) rows."""
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{what:<{width}}  {format_bytes(n):>12}  {note}" for what, n, note in rows)




def state_rows(states, n_params, optimizer_kind):
    """The account's first three rows: weights, gradients, optimizer moments."""
    return [("weights", states["weights"], f"{n_params:,} float32 parameters"),
            ("gradients", states["gradients"], "one per trainable parameter"),
            ("optimizer moments", states["optimizer"],
             "AdamW: m and v" if optimizer_kind == "adamw" else "SGD: momentum")]


def too_large_account(n_params, memory, config, log=print):
    """The dry run of a model too large to build here (recipe.ModelTooLarge): what follows
    from its parameter count alone, every parameter float32 and trained; its activations
    can be neither counted nor measured without building it."""
    weights = 4 * n_params
    states = _states(weights, weights, config.optimizer)
    rows = [*state_rows(states, n_params, config.optimizer),
            ("step, without activations", sum(states.values()),
             f"more than this machine's {format_bytes(memory)}")]
    log("memory of one training step of a model too large for this machine, from its "
        "parameter count (activations are not counted: that needs the model built):")
    log(account_table(rows))
    return states


def dry_run(run, config, log=print):
    """The memory account of training `run` (recipe.build_run's) with `config`: the table
    of weights, gradients, moments and activations (counted with and without
    checkpointing) beside the measured peak of real steps. Nothing is written; the model's
    weights change (throw it away afterwards)."""
    import dataclasses

    from npplm.training.trainer import Trainer

    def trainer(**changes):
        cfg = dataclasses.replace(config, eval_every=0, save_every=0, **changes)
        return Trainer(run.model, run.collator, run.train, None, cfg, log=lambda *a: None)

    model = run.model
    states = state_bytes(model, config.optimizer)
    probe = trainer(gradient_checkpointing=False)
    batch = probe._micro_batch(0)
    plain = activation_bytes(model, batch, probe.loss_fn, checkpointing=False)
    checkpointed = activation_bytes(model, batch, probe.loss_fn, checkpointing=True)
    del probe
    trainer(batch_size=1, grad_accum=1).train_step()  # compiles the kernels first
    measured = {}
    for ck in (False, True):
        model.zero_grad()
        measured[ck] = measured_step_peak(trainer(gradient_checkpointing=ck).train_step)
    model.gradient_checkpointing_enable(False)
    B, A = config.batch_size, config.grad_accum
    base = states["gradients"] + states["optimizer"]
    rows = [*state_rows(states, model.num_parameters(), config.optimizer),
            ("activations", plain, f"kept by the graph of one micro-batch of {B} (counted)"),
            ("  with checkpointing", checkpointed, "block inputs + one block's replay"),
            ("step, estimated", base + plain, "gradients + moments + activations"),
            ("  with checkpointing", base + checkpointed, "the same, checkpointed"),
            ("step, measured", measured[False], "peak resident memory above the weights"),
            ("  with checkpointing", measured[True], "the same, checkpointed")]
    log(f"memory of one training step ({A} micro-batch{'es' * (A > 1)} of {B}; "
        "activations are per micro-batch, freed by its backward):")
    log(account_table(rows))
    return {"states": states, "activations": plain, "activations_checkpointed": checkpointed,
            "measured": measured[False], "measured_checkpointed": measured[True]}
