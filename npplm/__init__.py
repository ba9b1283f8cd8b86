"""npplm: the pre-trained language models of the source chapter, in readable NumPy.

Built on `autograd` (the engine) and `gpu` (device helpers and kernels). The active array
backend is chosen by NPPLM_BACKEND=numpy|cupy when this package is first imported.
"""

import autograd
from autograd import BACKEND, Tensor, no_grad
from npplm import layers
from npplm.checkpoints import CheckpointError, from_pretrained
from npplm.module import Module
from npplm.tokenizers import load_tokenizer

__version__ = "0.1.0"
__all__ = ["BACKEND", "CheckpointError", "Module", "Tensor", "__version__", "autograd",
           "from_pretrained", "layers", "load_tokenizer", "no_grad"]
