"""Sentence-pair objectives: BERT's next sentence prediction (NSP) and ALBERT's sentence order
prediction (SOP), each trained together with the masked LM.

Papers: Devlin et al., "BERT" (arXiv:1810.04805), section 3.1 "Task #2: Next Sentence
Prediction (NSP)" and appendix A.2; Lan et al., "ALBERT: A Lite BERT for Self-supervised
Learning of Language Representations" (arXiv:1909.11942), section 3.1 "Inter-sentence
coherence loss". Reference implementations: `create_instances_from_document` and
`truncate_seq_pair` of Google's BERT `create_pretraining_data.py`, and ALBERT's copy of it,
which adds the swap.

Both tasks show the model two runs of text, A and B, as one input, and ask one question of
its [CLS] vector (the pooler output):

    input           [CLS] A ... A [SEP] B ... B [SEP]
    token_type_ids    0   0 ... 0   0   1 ... 1   1

    NSP  label 0: B is the text that follows A in its document    ("IsNext", 50%)
         label 1: B is text from another document                 ("NotNext", 50%)
    SOP  label 0: A and B are two consecutive runs, in order      (50%)
         label 1: the same two runs, swapped                      (50%)

(The labels are the models' and Hugging Face's: BertForPreTraining's next_sentence_label and
AlbertForPreTraining's sentence_order_label. Some write-ups, the study notes among them,
call the positive class 1; the models here score 0 as "B follows A" / "in order".)

ALBERT's argument (section 3.1): an NSP negative comes from another document, so it can be
told apart by topic alone; an SOP negative has the same topic and the same sentences, and
only coherence tells it apart. RoBERTa (section 4.2) drops NSP altogether.

Building pairs from documents (`nsp_examples`, `sop_examples`), as BERT's
`create_instances_from_document` does. A document is a list of segments (1-D arrays of token
ids): sentences, or whatever units the caller cut the text into. The budget for A and B
together is max_length - 3 tokens ([CLS] and two [SEP]).
  1. Walk through the document collecting consecutive segments into a chunk until it holds
     at least the budget in tokens and at least two segments, or the document ends.
  2. Split the chunk at a uniform random segment boundary: A is the segments before it, B
     (the true continuation) the segments after it.
  3. NSP: with probability 1/2 keep B (label 0). Otherwise (label 1) B is replaced by text
     from another document, chosen uniformly among the others: from a uniformly random
     segment of it, segments up to the tokens A leaves of the budget. The chunk's unused
     segments are put back, so the next chunk starts right after A (BERT does the same).
     SOP: with probability 1/2 swap A and B (label 1), else keep them (label 0).
  4. Cut the pair to the budget with BERT's rule (`truncate_pair`): one token at a time from
     the longer of the two, from its front or its back with probability 1/2 each.
Departures from BERT's code, so that the classes stay balanced at exactly 1/2: BERT makes
every chunk of a single segment a negative (a chunk has one segment when that segment alone
fills the budget, or when it is the document's last); here a chunk always has two segments
when the document has two left, and a lone last segment is not used as A. A document with a
single segment yields no pair (for NSP it can still be drawn from as another document).
BERT's short_seq_prob (10% of chunks with a shorter random budget) is not implemented.

NSP needs at least two documents (its negatives come from another one): a one-document
corpus is refused with a clear error. A negative can never be the true next text, since it
comes from another document (unless the corpus holds the same text twice). The pair
builders draw their randomness from the `rng` they are given; BERT built its pairs once, in
preprocessing, and so may the trainer (a fixed seed), or anew each epoch.

The collators (`NextSentenceCollator`, `SentenceOrderCollator`) assemble the pairs into the
input above and mask them with a MaskedLMCollator (static or dynamic, its `indices` the
pairs' identities), returning the keyword arguments of BertForPreTraining and
AlbertForPreTraining:
    input_ids        (B, T)  [CLS] A [SEP] B [SEP], masked, right-padded with pad_id
    attention_mask   (B, T)  1 on tokens, 0 on padding
    token_type_ids   (B, T)  0 on [CLS] A [SEP], 1 on B [SEP], 0 on padding
    labels           (B, T)  MLM labels: the original id where selected, -100 elsewhere
    next_sentence_label  (B,)  NSP only: 0 B follows A, 1 B from another document
    sentence_order_label (B,)  SOP only: 0 in order, 1 swapped
A pair longer than the collator's max_length (one built elsewhere) is cut with the same
rule, from the back only, so that a static mask never meets a differently cut pair.
"""

from dataclasses import dataclass

import numpy as np

from npplm.objectives.batching import (
    LABEL_PAD_ID,
    check_positive_int,
    check_probability,
    check_token_id,
    pad_rows,
)
from npplm.objectives.masked_lm import MaskedLMCollator

SPECIAL_TOKENS_PER_PAIR = 3  # [CLS] A [SEP] B [SEP]


@dataclass(frozen=True, eq=False)
class SentencePair:
    """One pair example: `first` (A) and `second` (B), 1-D int64 arrays of token ids, and the
    `label` of `task` ("nsp": 0 B follows A, 1 B from another document; "sop": 0 in order,
    1 swapped)."""

    first: np.ndarray
    second: np.ndarray
    label: int
    task: str


def truncate_pair(first, second, max_tokens, rng=None):
    """BERT's `truncate_seq_pair`: cut (first, second) to at most max_tokens ids in total.

    One token at a time is removed from the longer of the two (the second on a tie), from
    its front or its back with probability 1/2 each when `rng` is given ("to add more
    randomness and avoid biases", BERT's comment), from the back without one. Each part
    keeps at least one token when max_tokens >= 2. Returns two new int64 arrays.
    """
    max_tokens = check_positive_int("max_tokens", max_tokens, minimum=2)
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    # Cut as index ranges [start, end) into each part, then slice once at the end.
    bounds = [[0, len(first)], [0, len(second)]]
    while (bounds[0][1] - bounds[0][0]) + (bounds[1][1] - bounds[1][0]) > max_tokens:
        longer = bounds[0] if bounds[0][1] - bounds[0][0] > bounds[1][1] - bounds[1][0] \
            else bounds[1]
        if rng is not None and rng.random() < 0.5:
            longer[0] += 1  # drop the first token
        else:
            longer[1] -= 1  # drop the last token
    return first[bounds[0][0]:bounds[0][1]].copy(), second[bounds[1][0]:bounds[1][1]].copy()


def nsp_examples(documents, rng, max_length, *, random_next_prob=0.5):
    """BERT's NSP pairs from `documents` (lists of 1-D token-id segments): a list of
    SentencePair(task="nsp"). See the module docstring for the procedure.

    rng  a numpy.random.Generator; max_length  the model's input length, [CLS] and [SEP]s
    included (>= 5); random_next_prob  the share of negatives, BERT: 0.5.
    """
    docs, budget = _check_documents(documents, max_length)
    random_next_prob = check_probability("random_next_prob", random_next_prob)
    if len(docs) < 2:
        raise ValueError(f"NSP draws its negatives from another document, but the corpus has "
                         f"{len(docs)} document; give at least 2 (or use sop_examples)")
    pairs = []
    for d, doc in enumerate(docs):
        start = 0
        while (chunk_end := _chunk_end(doc, start, budget)) is not None:
            a_end = int(rng.integers(start + 1, chunk_end))  # A = doc[start:a_end], >= 1 each
            first = np.concatenate(doc[start:a_end])
            if rng.random() < random_next_prob:
                second = _text_from_another_document(docs, d, budget - len(first), rng)
                label = 1
                start = a_end  # put the unused segments back: the next chunk starts after A
            else:
                second = np.concatenate(doc[a_end:chunk_end])
                label = 0
                start = chunk_end
            first, second = truncate_pair(first, second, budget, rng)
            pairs.append(SentencePair(first, second, label, "nsp"))
    if not pairs:
        raise ValueError("no document has two segments, so there is no pair to build; NSP "
                         "needs documents of at least two segments (sentences)")
    return pairs


def sop_examples(documents, rng, max_length, *, swap_prob=0.5):
    """ALBERT's SOP pairs from `documents` (lists of 1-D token-id segments): a list of
    SentencePair(task="sop"), label 1 where A and B were swapped. See the module docstring.

    rng  a numpy.random.Generator; max_length  the model's input length (>= 5);
    swap_prob  the share of swapped pairs, ALBERT: 0.5.
    """
    docs, budget = _check_documents(documents, max_length)
    swap_prob = check_probability("swap_prob", swap_prob)
    pairs = []
    for doc in docs:
        start = 0
        while (chunk_end := _chunk_end(doc, start, budget)) is not None:
            a_end = int(rng.integers(start + 1, chunk_end))
            first = np.concatenate(doc[start:a_end])
            second = np.concatenate(doc[a_end:chunk_end])
            label = int(rng.random() < swap_prob)
            if label:
                first, second = second, first  # the same two consecutive runs, swapped
            first, second = truncate_pair(first, second, budget, rng)
            pairs.append(SentencePair(first, second, label, "sop"))
            start = chunk_end
    if not pairs:
        raise ValueError("no document has two segments, so there is no pair to build; SOP "
                         "needs documents of at least two segments (sentences)")
    return pairs


class SentencePairCollator:
    """[CLS] A [SEP] B [SEP] with token types and MLM masking, plus the pair's label.

    masking     a MaskedLMCollator: its ids, probabilities and static/dynamic choice apply;
                cls_id and sep_id must be among its special ids (so they are never masked)
    cls_id, sep_id  [CLS] and [SEP] (BERT: 101 and 102; ALBERT: 2 and 3)
    max_length  the longest input (>= 5); longer pairs are cut by `truncate_pair` (back)

    collator(pairs, rng, indices=None) -> dict (see the module docstring); `indices` are the
    pairs' identities, for static masking.
    """

    task = None  # "nsp" or "sop", set by the subclasses
    label_key = None  # the model's keyword for the pair label

    def __init__(self, masking, cls_id, sep_id, max_length=512):
        if not isinstance(masking, MaskedLMCollator):
            raise TypeError(f"masking must be a MaskedLMCollator, got {type(masking).__name__}")
        self.masking = masking
        V = masking.vocab_size
        self.cls_id = check_token_id("cls_id", cls_id, V)
        self.sep_id = check_token_id("sep_id", sep_id, V)
        for name, value in (("cls_id", self.cls_id), ("sep_id", self.sep_id)):
            if value not in masking.special_ids:
                raise ValueError(f"{name}={value} is not among the masking collator's special "
                                 f"ids {masking.special_ids.tolist()}: it would be masked; "
                                 f"add it to special_ids")
        self.max_length = check_positive_int("max_length", max_length,
                                             minimum=SPECIAL_TOKENS_PER_PAIR + 2)

    @property
    def static_seed(self):
        """The masking collator's: None for dynamic masks, else pass `indices` when calling."""
        return self.masking.static_seed

    def __call__(self, pairs, rng, indices=None):
        if len(pairs) == 0:
            raise ValueError("cannot collate an empty batch (0 examples)")
        rows, types, labels = [], [], []
        for i, pair in enumerate(pairs):
            first, second = self._check_pair(i, pair)
            first, second = truncate_pair(first, second,
                                          self.max_length - SPECIAL_TOKENS_PER_PAIR)
            rows.append(np.concatenate([[self.cls_id], first, [self.sep_id], second,
                                        [self.sep_id]]).astype(np.int64))
            types.append(np.concatenate([np.zeros(len(first) + 2, np.int64),
                                         np.ones(len(second) + 1, np.int64)]))
            labels.append(pair.label)
        inputs, mlm_labels = self.masking.mask_rows(rows, rng, indices)
        ids = pad_rows(rows, self.masking.pad_id)  # (B, T) before masking
        return {"input_ids": pad_rows(inputs, self.masking.pad_id),  # (B, T)
                "attention_mask": (ids != self.masking.pad_id).astype(np.int64),  # (B, T)
                "token_type_ids": pad_rows(types, 0),  # (B, T)
                "labels": pad_rows(mlm_labels, LABEL_PAD_ID),  # (B, T)
                self.label_key: np.array(labels, dtype=np.int64)}  # (B,)

    def _check_pair(self, i, pair):
        if not isinstance(pair, SentencePair):
            raise TypeError(f"example {i} must be a SentencePair (from {self.task}_examples), "
                            f"got {type(pair).__name__}")
        if pair.task != self.task:
            raise ValueError(f"example {i} is a {pair.task!r} pair but this collator does "
                             f"{self.task!r}; build the pairs with {self.task}_examples")
        if pair.label not in (0, 1):
            raise ValueError(f"example {i} has label {pair.label!r}; it must be 0 or 1")
        parts = []
        for name, part in (("first", pair.first), ("second", pair.second)):
            part = np.asarray(part)
            if part.ndim != 1 or part.size == 0 or not np.issubdtype(part.dtype, np.integer):
                raise ValueError(f"example {i}: {name} must be a non-empty 1-D array of token "
                                 f"ids, got shape {part.shape} and dtype {part.dtype}")
            bad = (part < 0) | (part >= self.masking.vocab_size)
            if bad.any():
                raise ValueError(f"example {i} holds token id {int(part[bad][0])}, outside the "
                                 f"vocabulary [0, {self.masking.vocab_size})")
            parts.append(part.astype(np.int64))
        return parts


class NextSentenceCollator(SentencePairCollator):
    """BERT's MLM + NSP batches for BertForPreTraining (pairs from `nsp_examples`)."""

    task = "nsp"
    label_key = "next_sentence_label"


class SentenceOrderCollator(SentencePairCollator):
    """ALBERT's MLM + SOP batches for AlbertForPreTraining (pairs from `sop_examples`)."""

    task = "sop"
    label_key = "sentence_order_label"


def _check_documents(documents, max_length):
    """(documents as lists of 1-D int64 arrays, the token budget max_length - 3)."""
    max_length = check_positive_int("max_length", max_length,
                                    minimum=SPECIAL_TOKENS_PER_PAIR + 2)
    if isinstance(documents, (str, bytes)) or len(documents) == 0:
        raise ValueError("documents is empty: give a list of documents, each a list of "
                         "segments (1-D arrays of token ids)")
    docs = []
    for d, document in enumerate(documents):
        if isinstance(document, np.ndarray) or len(document) == 0:
            raise ValueError(f"document {d} must be a non-empty list of segments (1-D token-id "
                             f"arrays), got {type(document).__name__} of length "
                             f"{len(document)}")
        segments = []
        for s, segment in enumerate(document):
            segment = np.asarray(segment)
            if segment.ndim != 1 or segment.size == 0:
                raise ValueError(f"document {d}, segment {s} must be a non-empty 1-D array of "
                                 f"token ids, got shape {segment.shape}")
            if not np.issubdtype(segment.dtype, np.integer):
                raise TypeError(f"document {d}, segment {s} must hold integer token ids, got "
                                f"dtype {segment.dtype}")
            segments.append(segment.astype(np.int64))
        docs.append(segments)
    return docs, max_length - SPECIAL_TOKENS_PER_PAIR


def _chunk_end(doc, start, budget):
    """End (exclusive) of the chunk doc[start:end]: at least two segments and `budget` tokens,
    or up to the document's end; None when fewer than two segments are left."""
    if len(doc) - start < 2:
        return None
    end, tokens = start, 0
    while end < len(doc) and (tokens < budget or end - start < 2):
        tokens += len(doc[end])
        end += 1
    return end


def _text_from_another_document(docs, d, target, rng):
    """Segments of a uniformly chosen document other than d, from a uniform random segment
    on, until `target` tokens (at least one segment): NSP's "random" B."""
    other = int(rng.integers(len(docs) - 1))
    other += other >= d  # uniform over the documents other than d
    doc = docs[other]
    start = int(rng.integers(len(doc)))
    taken, tokens = [], 0
    for segment in doc[start:]:
        taken.append(segment)
        tokens += len(segment)
        if tokens >= target:
            break
    return np.concatenate(taken)
