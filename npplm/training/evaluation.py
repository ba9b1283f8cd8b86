"""Held-out metrics: the perplexity of a causal LM with a sliding window, the masked-LM
loss and pseudo-perplexity of an encoder, and the loss of any objective's batches.

Perplexity of a causal language model on a long text, with a sliding window.

    PPL = exp( -(1/N) sum_i log p(x_i | x_<i) )

the exponential of the mean negative log-likelihood per token: the number of equally
likely tokens the model is, on average, as unsure as. A model that knows nothing about a
V-token vocabulary scores V; one that is always certain and right scores 1.

A model sees at most `window` tokens (its context), but the text is longer. Cutting the
text into disjoint windows would score the first tokens of every window with almost no
context and overstate the perplexity. The sliding window (Hugging Face's "Perplexity of
fixed-length models" recipe) moves a window of `window` tokens forward `stride` tokens at a
time and scores only the tokens not scored before, each with at least window - stride
tokens of context:

    window 1: tokens 0 .. W-1, scores 1 .. W-1    (token 0 has no context: never scored)
    window k: tokens b .. b+W-1 with b = (k-1) stride, scores the last `stride` of them

stride = window gives disjoint windows (fast, pessimistic); stride = 1 gives every token a
full context (exact, W times slower). Each scored token is scored exactly once, so the
result is a true per-token mean whatever the stride.

An encoder (BERT, RoBERTa, ALBERT) sees the whole text at once, so it has no left-to-right
perplexity. Two numbers measure it instead:

    masked-LM loss      -(1/N) sum over masked positions of log p(x_i | the masked text),
                        with the objective's own masks (15%, 80/10/10), drawn from a seed
    pseudo-perplexity   PPPL = exp( -(1/N) sum_i log p(x_i | x without x_i) )
                        (Salazar et al., "Masked Language Model Scoring", ACL 2020): each
                        token in turn is replaced by the mask token and scored with every
                        other token visible; one forward pass per token, so it runs on the
                        first blocks only

T5's span corruption and GLM's blank infilling report their objective's loss per target
token (`objective_loss`), with the objective's own masks drawn from a seed, and its
exponential: the perplexity of the targets given the corrupted text.
"""

import math

import numpy as np

from autograd import no_grad, to_numpy
from npplm.layers import IGNORE_INDEX, log_softmax
from npplm.models.t5 import T5ForConditionalGeneration, shift_right
from npplm.training.trainer import collate


def _window_starts(n, window, stride):
    """Begin offsets b of the windows and, for each, the first position it scores."""
    starts, first_scored = [0], [1]
    end = min(window, n)
    while end < n:
        b = min(end + stride, n) - window
        starts.append(b)
        first_scored.append(end)
        end = b + window
    return starts, first_scored


def perplexity(model, ids, window, stride=None, batch_size=8, progress=None):
    """(perplexity, mean NLL in nats, tokens scored) of the 1-D `ids` under a causal LM.

    model   a causal LM whose forward(input_ids) returns logits (B, T, V), position t
            predicting token t + 1 (GPT, LLaMA)
    window  tokens per forward pass, at most the model's context
    stride  how far the window moves (default window // 2)
    progress  optional callable, given the number of windows done after each batch
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    stride = window // 2 if stride is None else stride
    if not 1 <= stride <= window:
        raise ValueError(f"stride={stride} must lie in [1, window={window}]")
    if len(ids) < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {len(ids)}")
    window = min(window, len(ids))
    starts, first = _window_starts(len(ids), window, stride)
    total, count = 0.0, 0
    model.eval()
    with no_grad():
        for lo in range(0, len(starts), batch_size):
            rows = starts[lo:lo + batch_size]
            x = np.stack([ids[b:b + window] for b in rows])  # (B, W)
            logp = to_numpy(log_softmax(model(x).logits, axis=-1).data)  # (B, W, V)
            for r, (b, f) in enumerate(zip(rows, first[lo:lo + batch_size])):
                # Scored tokens: absolute positions f .. b+W-1, predicted from position - 1.
                targets = np.arange(f, b + window)
                nll = -logp[r, targets - b - 1, ids[targets]].astype(np.float64)
                total += float(nll.sum())
                count += len(targets)
            if progress is not None:
                progress(len(rows))
    mean = total / count
    return math.exp(mean), mean, count


def window_count(n, window, stride=None):
    """How many windows `perplexity` runs over n tokens (for a progress bar's total)."""
    window = min(window, n)
    return len(_window_starts(n, window, window // 2 if stride is None else stride)[0])


def token_nll(logits, labels):
    """(sum of -log p(label), number of labels) over the positions whose label is not
    -100: logits (B, T, V) a Tensor, labels (B, T) aligned with them (not shifted)."""
    labels = np.asarray(to_numpy(labels), dtype=np.int64)
    scored = labels != IGNORE_INDEX  # (B, T)
    if not scored.any():
        return 0.0, 0
    logp = to_numpy(log_softmax(logits, axis=-1).data)  # (B, T, V)
    picked = logp[scored, labels[scored]].astype(np.float64)  # (N,)
    return float(-picked.sum()), int(scored.sum())


def model_inputs(model, batch):
    """A collator's batch without its labels, as the model's forward takes it: T5's
    decoder reads the labels shifted right (what its forward would derive from them)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if isinstance(model, T5ForConditionalGeneration):
        config = model.config
        inputs["decoder_input_ids"] = shift_right(np.asarray(batch["labels"]),
                                                  config.decoder_start_token_id,
                                                  config.pad_token_id)
    return inputs


def objective_loss(model, collator, examples, seed=0, batch_size=8, progress=None):
    """(mean NLL per target token, targets) of an objective's batches over `examples`.

    collator   (examples, rng[, indices]) -> a batch with "labels" (B, T), -100 where
               nothing is scored, aligned with the model's logits (MLM, T5 spans, GLM
               blanks); batch i draws its masks from default_rng([seed, i])
    Each token counts once however the batches fall (a sum, then one division), and the
    loss is computed from the logits, so a pre-training head's second term (NSP, SOP) is
    left out: an encoder's number is its masked-LM loss.
    """
    total, count = 0.0, 0
    model.eval()
    with no_grad():
        for i, lo in enumerate(range(0, len(examples), batch_size)):
            hi = min(lo + batch_size, len(examples))
            batch = collate(collator, [examples[j] for j in range(lo, hi)],
                            np.random.default_rng([seed, i]), np.arange(lo, hi))
            out = model(**model_inputs(model, batch))
            nll, n = token_nll(out.logits, batch["labels"])
            total, count = total + nll, count + n
            if progress is not None:
                progress(hi - lo)
    if count == 0:
        raise ValueError("the examples give no target token to score")
    return total / count, count


def pseudo_perplexity(model, blocks, mask_id, skip_ids=(), batch_size=64, token_type_ids=True,
                      progress=None):
    """(PPPL, mean NLL, tokens scored) of an encoder over (N, T) blocks (see the module
    docstring): every token of every block not in `skip_ids` ([CLS], [SEP], padding) is
    masked in turn, alone, and scored. token_type_ids: pass zeros (BERT, ALBERT; RoBERTa
    has no segments). progress gets the number of blocks done."""
    blocks = np.asarray(blocks, dtype=np.int64)
    total, count = 0.0, 0
    model.eval()
    with no_grad():
        for block in blocks:
            where = np.flatnonzero(~np.isin(block, list(skip_ids)))  # (K,) positions to score
            for lo in range(0, len(where), batch_size):
                at = where[lo:lo + batch_size]  # (k,)
                rows = np.repeat(block[None], len(at), axis=0)  # (k, T): one copy per token
                rows[np.arange(len(at)), at] = mask_id  # copy j masks token at[j]
                labels = np.full(rows.shape, IGNORE_INDEX)
                labels[np.arange(len(at)), at] = block[at]
                inputs = {"input_ids": rows}
                if token_type_ids:
                    inputs["token_type_ids"] = np.zeros_like(rows)
                nll, n = token_nll(model(**inputs).logits, labels)
                total, count = total + nll, count + n
            if progress is not None:
                progress(1)
    if count == 0:
        raise ValueError("the blocks hold no token to score")
    mean = total / count
    return math.exp(mean), mean, count
