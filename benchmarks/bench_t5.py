"""asv benchmarks of T5: a t5-small training step and beam-search decoding.

Shapes: t5-small (6 + 6 blocks, width 512, vocabulary 32128, random weights drawn as
Hugging Face initialises them), dropout off. Training: a batch of 8 inputs of 128 tokens
(every other row a quarter padding) and targets of 32, loss and backward. Decoding: 2
inputs of 32 tokens, 4 beams, 16 new tokens. `side_by_side.py --only "(f)"` runs the same
computations against Hugging Face transformers and prints the ratios.
"""

import numpy as np

import autograd as ag

TRAIN_B, TRAIN_S, TRAIN_T = 8, 128, 32
BEAM_B, BEAM_S, BEAMS, BEAM_NEW = 2, 32, 4, 16


def t5_model(preset):
    """T5ForConditionalGeneration at a T5Config preset, dropout off, in eval mode."""
    from npplm.models.t5 import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(getattr(T5Config, preset)(dropout_rate=0.0)).eval()


def t5_inputs(config, batch, length, target_length, seed=0):
    """Random encoder ids with a padding mask (every other row's last quarter) and labels."""
    rng = np.random.default_rng(seed)
    low = min(100, config.vocab_size // 2)
    ids = rng.integers(low, config.vocab_size, (batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    mask[1::2, 3 * length // 4:] = 0
    labels = rng.integers(low, config.vocab_size, (batch, target_length))
    return ids * mask, mask, labels


def t5_loss(model, ids, mask, labels):
    return model(ids, attention_mask=mask, labels=labels).loss


class T5Small:
    """T5ForConditionalGeneration at t5-small size, B=8, S=128, T=32: loss and backward."""

    timeout = 600
    preset = "t5_small"  # the smoke test in tests/test_benchmarks.py sets "tiny"

    def setup(self):
        self.model = t5_model(self.preset)
        self.ids, self.mask, self.labels = t5_inputs(self.model.config, TRAIN_B, TRAIN_S,
                                                     TRAIN_T)

    def time_forward_backward(self):
        t5_loss(self.model, self.ids, self.mask, self.labels).backward()
        self.model.zero_grad()

    def peakmem_forward_backward(self):
        t5_loss(self.model, self.ids, self.mask, self.labels).backward()
        self.model.zero_grad()


class T5BeamSearch:
    """t5-small beam search: 2 inputs of 32 tokens, 4 beams, 16 new tokens; and greedy."""

    timeout = 600
    preset = "t5_small"

    def setup(self):
        self.model = t5_model(self.preset)
        self.ids, self.mask, _ = t5_inputs(self.model.config, BEAM_B, BEAM_S, 1)

    def time_beam_search(self):
        self.model.generate(self.ids, attention_mask=self.mask, num_beams=BEAMS,
                            max_new_tokens=BEAM_NEW)

    def time_greedy(self):
        self.model.generate(self.ids, attention_mask=self.mask, max_new_tokens=BEAM_NEW)

    def time_encoder(self):
        with ag.no_grad():
            self.model.encode(self.ids, self.mask)
