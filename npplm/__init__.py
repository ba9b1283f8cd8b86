"""npplm: the pre-trained language models that shaped the field, in readable NumPy.

Built on `autograd` (the engine) and `gpu` (device helpers and kernels). The active array
backend is chosen by NPPLM_BACKEND=numpy|cupy when this package is first imported. The
floors, each importing only those below it:

    layers/       Module, the shared layers and losses, each fused op beside its kernel
    quantization/ GGUF block formats, QuantizedLinear: weights kept quantised
    generation/   the KV cache and the one decoding loop (sampling, beam search)
    io/           file formats: safetensors, Hugging Face folders, GGUF
    tokenizers/   WordPiece, BPE, byte-level BPE, Unigram; tokenizer.json and GGUF vocabularies
    models/       one file per family (read gpt.py first), `from_pretrained`
    objectives/   the pre-training objectives as data collators
    training/     optimizers, schedule, data, the Trainer, run folders, held-out metrics,
                  scaling laws
    inference/    text in, text out for every family that generates
    alignment/    SFT, the reward model and DPO (TRL's formats and formulas)
    runtime.py    configure(): process settings for speed, applied only when asked
    cli/          the `npplm` command, a module per command, each thin over the floors above
"""

import autograd
from autograd import BACKEND, Tensor, no_grad
from npplm import layers, runtime
from npplm.io import CheckpointError
from npplm.layers import Module
from npplm.models import from_pretrained
from npplm.tokenizers import load_tokenizer

__version__ = "0.1.0"
__all__ = ["BACKEND", "CheckpointError", "Module", "Tensor", "__version__", "autograd",
           "from_pretrained", "layers", "load_tokenizer", "no_grad", "runtime"]
