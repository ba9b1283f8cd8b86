"""Activation checkpointing for npplm's blocks: `model.gradient_checkpointing_enable()`.

Every family's backbone runs its blocks through `run_block(owner, block, *args)`: the
block itself, or, when the model's checkpointing is on and a graph is being recorded, the
block under `autograd.checkpoint` (autograd/checkpoint.py has the method and its memory
arithmetic). What npplm adds to the engine's version is the block's own knowledge:

    params        the block's parameters (tied ones once): they get their gradients from
                  the replay even when the block's input needs none
    random_state  the generators of the block's Dropout layers, so that the replay draws
                  the masks the forward drew (and the generators end where they were)

With dropout on, the gradients equal those without checkpointing bit for bit
(tests/models/test_checkpointing.py, every family).
"""

from autograd import checkpoint, is_grad_enabled
from npplm.layers.dropout import Dropout


def checkpointed(block, *args):
    """block(*args), its activations recomputed in backward instead of kept."""
    dropouts = [m for _, m in block.named_modules() if isinstance(m, Dropout)]

    def get():
        return [d.rng.bit_generator.state for d in dropouts]  # (each a fresh dict)

    def put(states):
        for d, state in zip(dropouts, states):
            d.rng.bit_generator.state = state

    return checkpoint(block, *args, params=block.parameters(), random_state=(get, put))


def run_block(owner, block, *args):
    """block(*args), checkpointed when `owner` (the backbone running it) has checkpointing
    on, is training and a graph is being recorded; otherwise a plain call."""
    if owner.gradient_checkpointing and owner.training and is_grad_enabled():
        return checkpointed(block, *args)
    return block(*args)
