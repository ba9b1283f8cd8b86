"""Dropout as a module: active in training mode, the identity in eval mode."""

import numpy as np

from autograd import dropout
from npplm.module import Module


class Dropout(Module):
    """Zero each element with probability p while training; its own seeded generator."""

    def __init__(self, p, seed=0):
        self.p = p
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        return dropout(x, self.p, self.rng, training=self.training)
