"""Dropout as a module: active in training mode, the identity in eval mode."""

import numpy as np

from autograd import dropout
from npplm.module import Module


def dropout_seed(rng):
    """A seed for one Dropout's own generator, drawn from the model's generator, so that no
    two dropout layers of a model draw the same masks and a model seed fixes them all."""
    return int(rng.integers(2**31))


class Dropout(Module):
    """Zero each element with probability p while training; its own seeded generator."""

    def __init__(self, p, seed=0):
        self.p = p
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        return dropout(x, self.p, self.rng, training=self.training)
