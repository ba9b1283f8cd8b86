"""Quantisation: weights kept as llama.cpp's integer blocks, and the products that read them.

    formats.py  the GGUF block formats (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K): each layout drawn,
                bytes <-> (integer codes, scales, offsets) <-> float32, and our quantisers
    linear.py   QuantizedLinear: a Linear whose weight stays in blocks, repacked once for
                the kernels (gpu/numba_cpu/quantized.py) that take its products

The floor sits between the layers and generation: a quantised model is an ordinary model
whose Linear layers were swapped for QuantizedLinear, and io/gguf.py reads its bytes here.
Decoding one token through a quantised LLaMA or Qwen2 goes faster still: each block is one
Numba call (gpu/numba_cpu/decoding.py, dispatched in models/llama.py's LlamaModel.forward)
running the same tiles as QuantizedLinear.
"""

from npplm.quantization.formats import (
    FORMATS,
    Format,
    Unpacked,
    dequantize,
    quantize,
    row_bytes,
    unpack,
)
from npplm.quantization.linear import (
    PackedWeight,
    QuantizedEmbedding,
    QuantizedLinear,
    is_quantized,
    quantize_modules,
)

__all__ = ["FORMATS", "Format", "PackedWeight", "QuantizedEmbedding", "QuantizedLinear",
           "Unpacked", "dequantize", "is_quantized", "quantize", "quantize_modules",
           "row_bytes", "unpack"]
