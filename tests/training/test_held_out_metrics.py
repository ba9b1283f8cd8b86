"""The held-out metrics beyond perplexity: pseudo-perplexity and the masked-LM loss of an
encoder, and the objective loss of T5 and GLM, each against PyTorch / transformers on the
same weights; and the held-out split `npplm eval` rebuilds is the run's own."""

import math

import numpy as np
import pytest

from npplm.layers import IGNORE_INDEX
from npplm.models.bert import BertConfig, BertForMaskedLM
from npplm.models.t5 import T5Config, T5ForConditionalGeneration
from npplm.objectives import MaskedLMCollator, SpanCorruptionCollator
from npplm.training.evaluation import objective_loss, pseudo_perplexity, token_nll


def bert_pair(tmp_path, seed):
    """(torch, a tiny BertForMaskedLM, the same weights in transformers)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = BertForMaskedLM(BertConfig.tiny(vocab_size=50), seed=seed)
    model.save_pretrained(tmp_path / "bert")
    return torch, model, transformers.BertForMaskedLM.from_pretrained(tmp_path / "bert").eval()


def test_pseudo_perplexity_equals_masking_each_token_in_turn_in_torch(tmp_path):
    torch, model, theirs = bert_pair(tmp_path, seed=0)
    blocks = np.random.default_rng(0).integers(5, 50, (3, 9))
    blocks[:, 0], blocks[:, -1] = 2, 3  # [CLS] ... [SEP]: not scored
    ppl, nll, count = pseudo_perplexity(model, blocks, mask_id=4, skip_ids={0, 2, 3},
                                        batch_size=4)
    total, n = 0.0, 0
    with torch.no_grad():
        for block in blocks:
            for t in range(1, len(block) - 1):  # Salazar et al.: one token masked at a time
                x = torch.tensor(block[None])
                x[0, t] = 4
                logp = torch.log_softmax(theirs(input_ids=x).logits[0, t].double(), -1)
                total -= float(logp[block[t]])
                n += 1
    assert count == n == 3 * 7
    assert math.isclose(nll, total / n, rel_tol=1e-5)
    assert math.isclose(ppl, math.exp(total / n), rel_tol=1e-5)


def test_masked_lm_loss_counts_every_masked_token_once_across_batches(tmp_path):
    torch, model, theirs = bert_pair(tmp_path, seed=1)
    blocks = np.random.default_rng(1).integers(5, 50, (7, 12))
    collator = MaskedLMCollator(50, mask_id=4, pad_id=0, special_ids=[1, 2, 3], static_seed=5)
    mean, count = objective_loss(model, collator, blocks, seed=0, batch_size=3)
    total, n = 0.0, 0
    with torch.no_grad():
        for i, lo in enumerate(range(0, 7, 3)):  # the same masks: static, per example
            rows = blocks[lo:lo + 3]
            batch = collator(list(rows), np.random.default_rng([0, i]),
                             indices=np.arange(lo, lo + len(rows)))
            out = theirs(input_ids=torch.tensor(batch["input_ids"]),
                         token_type_ids=torch.tensor(batch["token_type_ids"]),
                         labels=torch.tensor(batch["labels"]))
            k = int((batch["labels"] != IGNORE_INDEX).sum())
            total, n = total + float(out.loss) * k, n + k  # torch's mean, weighted back
    assert count == n > 0
    assert math.isclose(mean, total / n, rel_tol=1e-5)


def test_t5_objective_loss_equals_transformers_loss_per_target_token(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    config = T5Config.tiny()
    model = T5ForConditionalGeneration(config, seed=0)
    model.save_pretrained(tmp_path / "t5")
    theirs = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "t5").eval()
    V = config.vocab_size
    sentinels = list(range(V - 10, V))
    collator = SpanCorruptionCollator(sentinels, pad_id=config.pad_token_id,
                                      eos_id=config.eos_token_id)
    blocks = np.random.default_rng(2).integers(3, V - 10, (5, 20))
    mean, count = objective_loss(model, collator, blocks, seed=3, batch_size=2)
    total, n = 0.0, 0
    with torch.no_grad():
        for i, lo in enumerate(range(0, 5, 2)):
            batch = collator(list(blocks[lo:lo + 2]), np.random.default_rng([3, i]))
            out = theirs(input_ids=torch.tensor(batch["input_ids"]),
                         attention_mask=torch.tensor(batch["attention_mask"]),
                         labels=torch.tensor(batch["labels"]))
            k = int((batch["labels"] != IGNORE_INDEX).sum())
            total, n = total + float(out.loss) * k, n + k
    assert count == n
    assert math.isclose(mean, total / n, rel_tol=1e-5)


def test_token_nll_skips_ignored_labels_and_keeps_float32_logits():
    from autograd import Tensor

    logits = Tensor(np.random.default_rng(0).standard_normal((2, 3, 5)).astype(np.float32))
    labels = np.array([[1, IGNORE_INDEX, 4], [IGNORE_INDEX, IGNORE_INDEX, 0]])
    total, count = token_nll(logits, labels)
    x = logits.data.astype(np.float64)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    assert count == 3
    assert math.isclose(total, -(logp[0, 0, 1] + logp[0, 2, 4] + logp[1, 2, 0]), rel_tol=1e-6)
    assert logits.dtype == np.float32


def test_the_held_out_split_is_the_one_the_run_validated_on(tmp_path):
    from npplm.training.recipe import build_run, read_corpus, resolve_request

    request = dict(family="gpt", preset="tiny", max_chars=40_000, block_size=32,
                   vocab_size=300, seed=4)
    run = build_run(**request, log=lambda _: None)
    _, _, val = read_corpus(resolve_request(**request))
    from npplm.training.recipe import make_examples

    again = make_examples("gpt", "clm", run.tokenizer, val, 32, 4, "validation split")
    np.testing.assert_array_equal(again, run.val)
