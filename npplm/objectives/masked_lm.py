"""The masked language model (MLM) of BERT, RoBERTa and ALBERT, as a data collator.

Papers: Devlin, Chang, Lee and Toutanova, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding" (arXiv:1810.04805), section 3.1 "Task #1: Masked
LM" and appendix A.1; Liu et al., "RoBERTa: A Robustly Optimized BERT Pretraining Approach"
(arXiv:1907.11692), section 4.1 "Static vs. Dynamic Masking". Reference implementations:
Google's `create_pretraining_data.py` (BERT's static masks) and Hugging Face's
`DataCollatorForLanguageModeling` (dynamic masks, the per-token draw we use).

Some input tokens are selected for prediction; the model sees them corrupted and is scored
on recovering them:

    original   [CLS] my dog is hairy [SEP]
    selected           .   .  x    .          ("is" and nothing else, say)
    input      [CLS] my dog [MASK] hairy [SEP]     80% of selected tokens
               [CLS] my dog apple  hairy [SEP]     10%: a random token
               [CLS] my dog is     hairy [SEP]     10%: unchanged
    labels      -100 -100 -100 is -100 -100        the original id where selected

    L_MLM = - sum over selected i of log P(x_i | corrupted x)   (mean over selected tokens)

The numbers (BERT section 3.1, the defaults here):
  - each non-special token is selected with probability mlm_probability = 0.15,
    independently (Hugging Face's draw; Google's code picks exactly round(0.15 n) positions,
    which has the same expected count). Special tokens ([CLS], [SEP], <s>, </s>, ...) and
    padding are never selected.
  - a selected token becomes [MASK] with probability mask_replace_prob = 0.8, a random token
    with probability random_replace_prob = 0.1, and stays unchanged otherwise (0.1). The
    unchanged and random cases keep the model from learning that only [MASK] positions
    matter, since [MASK] never appears when fine-tuning (BERT appendix C.2 ablates the split).
  - the random token is drawn uniformly from the non-special vocabulary (every id in
    [0, V) that is not a special id or padding). As in BERT's code, the draw does not avoid
    the original token: it equals it with probability 1 / (non-special vocabulary size), so
    a selected token is changed to another word with probability 0.1 (1 - 1/V') and left
    as it was with probability 0.1 + 0.1/V'. (BERT's and Hugging Face's code draw from the
    whole vocabulary, special tokens included; we leave them out, so that a random
    replacement never plants a [SEP] or a [PAD] in the text.)
  - one departure, for safety: a sequence that has candidate tokens but drew none gets one
    selected uniformly among them (Google's code has the same floor, max(1, round(0.15 n))).
    With 126 candidates this happens with probability 0.85^126 ~ 1e-9; it matters only for
    very short sequences, where a batch with nothing to predict would make the mean loss 0/0.
    Google's code also caps the count at max_predictions_per_seq (20 for 128 tokens); we
    do not.

Static or dynamic masks (RoBERTa section 4.1). BERT masked its data once, in preprocessing
("static"; to see more than one mask per sequence, the data was duplicated 10 times, "so that
each sequence is masked in 10 different ways over the 40 epochs"). RoBERTa's dynamic masking
generates "the masking pattern every time we feed a sequence to the model"; it found it
"comparable or slightly better" than static masking, and it needs no copies of the data.
  - dynamic (static_seed=None, the default): the masks come from the `rng` of the call, a
    `numpy.random.Generator` the trainer derives from the step number; nothing else.
  - static (static_seed=an int): the mask of an example depends only on (static_seed, its
    identity) and never on when or where in a batch it is served. The identity is a
    non-negative integer the caller passes per example, `collator(examples, rng,
    indices=...)`, typically the example's index in the dataset; example i is masked with
    its own generator `numpy.random.default_rng([static_seed, i])`. BERT's 10 copies are
    `indices = 10 * i + epoch % 10`.

What an example is: a 1-D array of token ids that already holds the family's special tokens,
a packed block as the trainer builds it: `[CLS] ... [SEP] ... [SEP]` for BERT and ALBERT,
`<s> ... </s> ... </s>` for RoBERTa (its FULL-SENTENCES input, section 4.2: text packed
across documents, one separator where a document ends). Examples may differ in length;
shorter ones are right-padded with pad_id. A pad_id inside an example (a partly filled last
block) is treated as padding too: attention_mask 0 and never selected.

Calling the collator on B examples returns a dict of int64 arrays, keyed by the keyword
arguments of BertForMaskedLM, RobertaForMaskedLM and AlbertForMaskedLM:
    input_ids       (B, T)  the corrupted ids, right-padded with pad_id
    attention_mask  (B, T)  1 on tokens, 0 on padding
    token_type_ids  (B, T)  all 0 (one segment); left out with token_type_ids=False
    labels          (B, T)  the original id where selected, -100 elsewhere
so that `model(**batch).loss` is the MLM loss. NextSentenceCollator and
SentenceOrderCollator (sentence_pairs.py) reuse this masking on sentence pairs.

Not done here: whole-word masking (BERT's later release), ALBERT's n-gram masking (ALBERT
section 4.1 masks n-grams of up to 3 tokens, n drawn with probability proportional to 1/n;
this collator masks single tokens as BERT and RoBERTa do).
"""

import numbers

import numpy as np

from npplm.objectives.batching import (
    LABEL_PAD_ID,
    check_examples,
    check_positive_int,
    check_probability,
    check_token_id,
    pad_rows,
)


class MaskedLMCollator:
    """BERT's masked LM on a batch of token-id examples (the module docstring has the rules).

    vocab_size           V; every id must be in [0, V)
    mask_id, pad_id      [MASK] and [PAD] (BERT: 103 and 0; RoBERTa: 50264 and 1)
    special_ids          the other ids that are never selected nor drawn as random
                         replacements ([CLS], [SEP], <s>, </s>, [UNK] if you wish)
    mlm_probability      chance a non-special token is selected, in (0, 1]; BERT: 0.15
    mask_replace_prob    chance a selected token becomes [MASK]; BERT: 0.8
    random_replace_prob  chance it becomes a random non-special token; BERT: 0.1 (the rest,
                         1 - 0.8 - 0.1, stay unchanged)
    static_seed          None: dynamic masks (RoBERTa); an int: static masks (BERT), each
                         example's mask fixed by (static_seed, its index)
    max_length           the longest example accepted (None: no limit); longer examples are
                         refused, since cutting one would drop its closing [SEP]
    token_type_ids       whether to return all-zero token_type_ids (BERT, ALBERT; RoBERTa's
                         forward accepts them too, its one token type is 0)

    collator(examples, rng, indices=None) -> dict (see the module docstring). `indices` are
    the examples' identities, required with static_seed and ignored without it.
    """

    def __init__(self, vocab_size, mask_id, pad_id, special_ids=(), *, mlm_probability=0.15,
                 mask_replace_prob=0.8, random_replace_prob=0.1, static_seed=None,
                 max_length=None, token_type_ids=True):
        self.vocab_size = check_positive_int("vocab_size", vocab_size, minimum=2)
        self.mask_id = check_token_id("mask_id", mask_id, self.vocab_size)
        self.pad_id = check_token_id("pad_id", pad_id, self.vocab_size)
        if self.mask_id == self.pad_id:
            raise ValueError(f"mask_id and pad_id are both {mask_id}; they must differ")
        if isinstance(special_ids, numbers.Integral):
            raise TypeError(f"special_ids must be a list of ids, got the single id "
                            f"{special_ids!r}; write [{special_ids}]")
        others = [check_token_id("special id", s, self.vocab_size) for s in special_ids]
        # Every id that is never selected and never a random replacement: pad, mask, others.
        self.special_ids = np.unique(np.array([self.pad_id, self.mask_id, *others],
                                              dtype=np.int64))
        self.mlm_probability = check_probability("mlm_probability", mlm_probability,
                                                 low_open=True)
        self.mask_replace_prob = check_probability("mask_replace_prob", mask_replace_prob)
        self.random_replace_prob = check_probability("random_replace_prob",
                                                     random_replace_prob)
        total = self.mask_replace_prob + self.random_replace_prob
        if total > 1.0 + 1e-12:
            raise ValueError(f"mask_replace_prob + random_replace_prob = {mask_replace_prob} "
                             f"+ {random_replace_prob} = {total} exceeds 1")
        # The ids a random replacement is drawn from, uniformly: the non-special vocabulary.
        self.replacement_ids = np.setdiff1d(np.arange(self.vocab_size), self.special_ids)
        if self.random_replace_prob > 0 and self.replacement_ids.size == 0:
            raise ValueError(f"every id of the vocabulary of {self.vocab_size} is special: "
                             "there is no token to draw a random replacement from")
        if static_seed is not None:
            static_seed = check_positive_int("static_seed", static_seed, minimum=0)
        self.static_seed = static_seed
        if max_length is not None:
            max_length = check_positive_int("max_length", max_length)
        self.max_length = max_length
        self.token_type_ids = bool(token_type_ids)

    def __call__(self, examples, rng, indices=None):
        rows = check_examples(examples, self.vocab_size, self.max_length)
        inputs, labels = self.mask_rows(rows, rng, indices)
        ids = pad_rows(rows, self.pad_id)  # (B, T), the uncorrupted ids
        batch = {"input_ids": pad_rows(inputs, self.pad_id),  # (B, T)
                 # Replacements are never special, so padding is where the original is pad.
                 "attention_mask": (ids != self.pad_id).astype(np.int64)}  # (B, T)
        if self.token_type_ids:
            batch["token_type_ids"] = np.zeros_like(ids)  # (B, T): one segment
        batch["labels"] = pad_rows(labels, LABEL_PAD_ID)  # (B, T)
        return batch

    def mask_rows(self, rows, rng, indices=None):
        """(inputs, labels): two lists of 1-D int64 arrays, one pair per row of `rows`.

        Each row is masked by `mask` with the row's generator: `rng` for every row in turn
        (dynamic), or default_rng([static_seed, index]) per row (static). ValueError when
        the whole batch has no token to predict (every token special or padding).
        """
        generators = self._generators(len(rows), rng, indices)
        pairs = [self.mask(row, g) for row, g in zip(rows, generators)]
        inputs, labels = [p[0] for p in pairs], [p[1] for p in pairs]
        if not any((lab != LABEL_PAD_ID).any() for lab in labels):
            raise ValueError(f"no token of the batch can be masked: all {sum(map(len, rows))} "
                             f"tokens are special ids {self.special_ids.tolist()} or padding, "
                             "so the masked-LM loss would be 0/0")
        return inputs, labels

    def mask(self, ids, rng):
        """Mask one row: (inputs, labels), int64 arrays of the shape of `ids` (T,).

        ids  (T,) token ids; rng  the generator every draw comes from.
        """
        ids = np.asarray(ids, dtype=np.int64)
        T = ids.shape[0]
        candidate = ~np.isin(ids, self.special_ids)  # (T,) never special, never padding
        selected = candidate & (rng.random(T) < self.mlm_probability)  # (T,)
        if candidate.any() and not selected.any():
            selected[rng.choice(np.flatnonzero(candidate))] = True  # the floor of one
        # One uniform draw per position splits the selected tokens 80/10/10.
        u = rng.random(T)  # (T,)
        to_mask = selected & (u < self.mask_replace_prob)
        to_random = selected & ~to_mask & (u < self.mask_replace_prob
                                           + self.random_replace_prob)
        inputs = np.where(to_mask, self.mask_id, ids)
        if self.random_replace_prob > 0:
            random_ids = self.replacement_ids[rng.integers(self.replacement_ids.size, size=T)]
            inputs = np.where(to_random, random_ids, inputs)
        labels = np.where(selected, ids, LABEL_PAD_ID)
        return inputs.astype(np.int64), labels.astype(np.int64)

    def _generators(self, n, rng, indices):
        """One generator per row: the call's rng for all (dynamic), or one per identity."""
        if self.static_seed is None:
            if not isinstance(rng, np.random.Generator):
                raise TypeError(f"rng must be a numpy.random.Generator (the trainer derives one "
                                f"per step), got {type(rng).__name__}")
            return [rng] * n
        if indices is None:
            raise ValueError(f"static masking (static_seed={self.static_seed}) needs the "
                             "examples' identities: call collator(examples, rng, indices=...)")
        indices = list(indices)
        if len(indices) != n:
            raise ValueError(f"indices has {len(indices)} entries for {n} examples")
        for index in indices:
            if (isinstance(index, bool) or not isinstance(index, numbers.Integral)
                    or index < 0):
                raise ValueError(f"an example's index must be a non-negative integer, got "
                                 f"{index!r}")
        return [np.random.default_rng([self.static_seed, int(i)]) for i in indices]
