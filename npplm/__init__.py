"""npplm: the pre-trained language models of the source chapter, in readable NumPy.

Built on `autograd` (the engine) and `gpu` (device helpers and kernels). The active array
backend is chosen by NPPLM_BACKEND=numpy|cupy when this package is first imported.
"""

import autograd
from autograd import BACKEND, Tensor, no_grad

__version__ = "0.1.0"
__all__ = ["BACKEND", "Tensor", "__version__", "autograd", "no_grad"]
