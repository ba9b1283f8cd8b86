"""Pre-training objectives as data collators, one module per objective.

Every collator follows the convention of T5's `SpanCorruptionCollator`: it is built from the
tokenizer-level facts it needs (vocabulary size, special ids, the paper's probabilities as
defaults) and checks them at once; calling it,

    batch = collator(examples, rng)        # rng: a numpy.random.Generator for this step
    loss = model(**batch).loss

returns a dict of NumPy int64 arrays whose keys are exactly the keyword arguments of the
model's forward. Every random draw comes from `rng` and nothing is kept between calls, so a
run is reproducible and resumable from the step number alone. (The one exception, by
design: MLM's static masks come from a fixed seed and each example's index, passed as
`collator(examples, rng, indices=...)`.)

    objective                 collator                  examples            model
    masked LM (BERT, RoBERTa) MaskedLMCollator          1-D id blocks       *ForMaskedLM
    MLM + NSP (BERT)          NextSentenceCollator      nsp_examples(...)   BertForPreTraining
    MLM + SOP (ALBERT)        SentenceOrderCollator     sop_examples(...)   AlbertForPreTraining
    causal LM (GPT, LLaMA)    CausalLMCollator          1-D id blocks       *LMHeadModel,
                                                                            LlamaForCausalLM
    blank infilling (GLM)     BlankInfillingCollator    1-D id blocks       GLMForConditional-
                                                                            Generation
    span corruption (T5)      SpanCorruptionCollator    1-D id blocks       T5ForConditional-
                              (span_corruption.py)                          Generation
"""

from npplm.objectives.batching import LABEL_PAD_ID
from npplm.objectives.blank_infilling import (
    BlankInfillingCollator,
    blank_spans,
    gmask_span,
    place_spans,
    span_lengths,
)
from npplm.objectives.causal_lm import CausalLMCollator
from npplm.objectives.masked_lm import MaskedLMCollator
from npplm.objectives.sentence_pairs import (
    NextSentenceCollator,
    SentenceOrderCollator,
    SentencePair,
    SentencePairCollator,
    nsp_examples,
    sop_examples,
    truncate_pair,
)
from npplm.objectives.span_corruption import SpanCorruptionCollator

__all__ = [
    "LABEL_PAD_ID",
    "BlankInfillingCollator",
    "CausalLMCollator",
    "MaskedLMCollator",
    "NextSentenceCollator",
    "SentenceOrderCollator",
    "SentencePair",
    "SentencePairCollator",
    "SpanCorruptionCollator",
    "blank_spans",
    "gmask_span",
    "nsp_examples",
    "place_spans",
    "sop_examples",
    "span_lengths",
    "truncate_pair",
]
