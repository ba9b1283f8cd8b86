"""The causal language model (CLM) of GPT-1/2/3 and LLaMA, as a data collator: next-token
targets.

Papers: Radford et al., "Improving Language Understanding by Generative Pre-Training"
(GPT-1, 2018), section 3.1, L_1 = sum_i log P(u_i | u_{i-k}, ..., u_{i-1}); Radford et al.,
"Language Models are Unsupervised Multitask Learners" (GPT-2, 2019), section 2; Touvron et
al., "LLaMA" (arXiv:2302.13971). Reference implementation: Hugging Face's
`DataCollatorForLanguageModeling(mlm=False)`, which returns the inputs as labels and leaves
the shift to the model.

For a block x_0 .. x_{T-1} the model predicts every token from the ones before it:

    L_CLM = - 1/(T-1) sum_{t=0}^{T-2} log P(x_{t+1} | x_0 .. x_t)

The collator does not shift: labels are the input ids themselves, and the models
(`causal_lm_loss` in gpt.py, LlamaForCausalLM) score position t's logits against labels[t+1].
Doing it in the model keeps one convention for training, evaluation and generation.

What an example is: a 1-D array of at least 2 token ids, normally a packed block of
max_length tokens from the trainer, with the family's document separators already in it
(GPT-2's <|endoftext|> between documents, LLaMA's <s> at the start of each). Nothing is added
here. Examples of different lengths are right-padded with pad_id; a padding position is
never scored (label -100) and never attended to (attention_mask 0), and under the causal mask
no real token can see a later padding token anyway. Padding is known by position, not by
id: GPT-2 has no pad token and its <|endoftext|> is often used as one, so a pad_id inside an
example is an ordinary token, scored like any other.

Calling the collator on B examples returns a dict of int64 arrays, keyed by the keyword
arguments of GPT2LMHeadModel, OpenAIGPTLMHeadModel and LlamaForCausalLM:
    input_ids       (B, T)  the examples, right-padded with pad_id
    attention_mask  (B, T)  1 on tokens, 0 on padding
    labels          (B, T)  = input_ids, with -100 on padding
"""

import numpy as np

from npplm.objectives.batching import (
    LABEL_PAD_ID,
    check_examples,
    check_positive_int,
    check_token_id,
    pad_rows,
)


class CausalLMCollator:
    """Next-token training batches for GPT-1/2/3 and LLaMA (see the module docstring).

    vocab_size  V; every id must be in [0, V)
    pad_id      the id written into padding (any id: padding is neither attended to nor
                scored); 0 by default
    max_length  the longest example accepted (None: no limit), e.g. the model's n_positions

    collator(examples, rng) -> dict; `rng` is accepted for the common collator signature and
    unused: next-token targets need no randomness.
    """

    # The model scores labels[:, 1:] (the trainer's accumulation weights count those).
    shifts_labels = True

    def __init__(self, vocab_size, pad_id=0, max_length=None):
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.pad_id = check_token_id("pad_id", pad_id, self.vocab_size)
        if max_length is not None:
            max_length = check_positive_int("max_length", max_length, minimum=2)
        self.max_length = max_length

    def __call__(self, examples, rng=None):
        # Two tokens at least: with one, the only position has no next token to predict.
        rows = check_examples(examples, self.vocab_size, self.max_length, min_length=2)
        input_ids = pad_rows(rows, self.pad_id)  # (B, T)
        lengths = np.array([len(r) for r in rows])  # (B,)
        real = np.arange(input_ids.shape[1])[None, :] < lengths[:, None]  # (B, T)
        return {"input_ids": input_ids,
                "attention_mask": real.astype(np.int64),  # (B, T)
                "labels": np.where(real, input_ids, LABEL_PAD_ID)}  # (B, T)
