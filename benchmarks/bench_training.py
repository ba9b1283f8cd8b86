"""asv benchmarks of training: one AdamW step of a GPT-2-style model (issue 7's shape).

The "gpt2-6L-384" case: 6 layers, width 384, 6 heads, 256 positions, vocabulary 8192, a
batch of 8 sequences of 256 tokens (2048 tokens a step), dropout off: nanoGPT's "baby GPT"
shape. One step is forward, backward, global-norm clipping and the AdamW update.
`side_by_side_training.py` runs the same step against PyTorch eager (transformers' GPT-2 and
torch.optim.AdamW) in one process and prints tokens/s, the ratio and the MFU of both.
"""

import numpy as np

PRESETS = {  # (n_layer, n_embd, n_head, vocab, T, B)
    "gpt2-6L-384": (6, 384, 6, 8192, 256, 8),
    "tiny": (2, 32, 4, 64, 16, 2),  # the same code path at a size a test can afford
}


def gpt_config(preset):
    from npplm.models.gpt import GPTConfig

    L, C, H, V, T, _ = PRESETS[preset]
    return GPTConfig(vocab_size=V, n_positions=T, n_embd=C, n_layer=L, n_head=H,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                     eos_token_id=0)


def batch(preset, seed=0):
    *_, V, T, B = PRESETS[preset]
    return np.random.default_rng(seed).integers(0, V, (B, T))


def npplm_step(preset, seed=0):
    """A zero-argument function doing one full training step of our GPT-2, and the model."""
    from npplm.models.gpt import GPT2LMHeadModel
    from npplm.training import AdamW, clip_grad_norm, decay_groups

    model = GPT2LMHeadModel(gpt_config(preset), seed=seed)
    opt = AdamW(decay_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95))
    ids = batch(preset, seed)

    def step():
        model(ids, labels=ids).loss.backward()
        clip_grad_norm(opt.params, 1.0)
        opt.step()
        opt.zero_grad()

    return step, model


class TrainStep:
    """Seconds and peak memory of one GPT-2 training step (forward, backward, AdamW)."""

    params = ["gpt2-6L-384"]
    param_names = ["preset"]
    timeout = 300
    preset = None  # the smoke test sets "tiny"

    def setup(self, preset):
        self.step, _ = npplm_step(self.preset or preset)
        self.step()  # first call: allocations, lazy imports

    def time_step(self, preset):
        self.step()

    def peakmem_step(self, preset):
        self.step()
