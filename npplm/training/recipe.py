"""Recipes: a model family, a preset and an objective turned into everything a run needs.

`npplm train --model FAMILY --preset NAME --objective OBJ --data PATH` calls
`resolve_request`, which fills in the defaults and checks every value before anything is
read or trained, then `build_run`, which, in order:

    1. reads the documents (data.py) and splits them into train and validation;
    2. trains the family's kind of tokenizer on the training documents (or loads one
       given with --tokenizer, or the run folder's own when resuming);
    3. builds the config: the preset (a classmethod of the family's config, e.g.
       GPTConfig.gpt2) with the tokenizer's vocabulary size, the block size as the
       position limit, the tokenizer's special ids, and any --set overrides;
    4. builds the model (random init from the seed) and the objective's collator;
    5. packs the tokenized documents into blocks: the examples.

The FAMILIES table says, per family, which config class and presets, which objectives
with which model class, and which tokenizer. It is written out by hand, as npplm.models'
tables are: adding an objective to a family is one more line.
"""

import dataclasses
import importlib
import os
import pathlib
from dataclasses import dataclass, field

import numpy as np

from npplm.tokenizers import templates
from npplm.training.data import (
    DataError,
    pack,
    read_documents,
    split_documents,
    stdlib_documents,
    tokenize_documents,
)
from npplm.training.run_folder import resolve_tokenizer

EOT = templates.EOT  # GPT-2's document separator, also BOS/EOS of our trained tokenizers
T5_SENTINELS = tuple(f"<extra_id_{i}>" for i in range(100))  # T5's 100 span sentinels

# The special tokens each family's tokenizer is trained with (they get the first ids, in
# this order, which is each family's published layout where it has one).
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0-4 (BERT's are 0, 100-103)
ALBERT_SPECIALS = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")  # ALBERT's ids 0-4
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # fairseq's order, <mask> 4
LLAMA_SPECIALS = ("<unk>", "<s>", "</s>")  # LLaMA-1/2's ids 0, 1, 2
T5_SPECIALS = ("<pad>", "</s>", "<unk>", *T5_SENTINELS)  # T5's pad 0, eos 1
GLM_SPECIALS = ("<pad>", EOT, "[MASK]", "[gMASK]", "[S]", "[E]")


@dataclass(frozen=True)
class Family:
    """One model family as `npplm train` sees it.

    objectives    objective -> model class name in npplm.models.<module>
    tokenizer     (algorithm, its special tokens, its Template): algorithm "byte-level-bpe"
                  (GPT-2, RoBERTa), "sentencepiece-bpe" (LLaMA-1/2), "wordpiece" (BERT),
                  "unigram" (T5, ALBERT); the template (npplm.tokenizers.templates) is what
                  encode adds to a text, as the family's published tokenizer does
    roles         what the objective needs: "separator" (between packed documents), "pad",
                  and for MLM "cls", "sep", "mask"
    positions     the config field limiting the sequence length (None: T5, relative only),
                  set to the block size plus `position_offset` (RoBERTa's pad offset)
    special_ids   config field -> the special token whose id it takes
    """

    module: str
    config: str
    default_preset: str
    objectives: dict
    tokenizer: tuple
    positions: str | None
    special_ids: dict = field(default_factory=dict)
    roles: dict = field(default_factory=dict)
    position_offset: int = 0

    def config_class(self):
        return getattr(importlib.import_module(f"npplm.models.{self.module}"), self.config)

    def model_class(self, objective, config):
        name = self.objectives[objective]
        if self.module == "gpt" and getattr(config, "model_type", "gpt2") == "openai-gpt":
            name = "OpenAIGPTLMHeadModel"  # GPT-1's presets build GPT-1's class
        return getattr(importlib.import_module(f"npplm.models.{self.module}"), name)

    def presets(self):
        cls = self.config_class()
        return sorted(n for n, v in vars(cls).items()
                      if isinstance(v, classmethod) and n not in ("from_hf",))


FAMILIES = {
    "gpt": Family("gpt", "GPTConfig", "gpt2", {"clm": "GPT2LMHeadModel"},
                  ("byte-level-bpe", (EOT,), templates.GPT2), "n_positions",
                  {"bos_token_id": EOT, "eos_token_id": EOT}, {"separator": EOT, "pad": EOT}),
    "llama": Family("llama", "LlamaConfig", "llama2_7b", {"clm": "LlamaForCausalLM"},
                    ("sentencepiece-bpe", LLAMA_SPECIALS, templates.LLAMA),
                    "max_position_embeddings",
                    {"bos_token_id": "<s>", "eos_token_id": "</s>"},
                    {"separator": "</s>", "pad": "</s>"}),
    "bert": Family("bert", "BertConfig", "base",
                   {"mlm+nsp": "BertForPreTraining", "mlm": "BertForMaskedLM"},
                   ("wordpiece", BERT_SPECIALS, templates.BERT), "max_position_embeddings",
                   {"pad_token_id": "[PAD]"},
                   {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}),
    "roberta": Family("roberta", "RobertaConfig", "base", {"mlm": "RobertaForMaskedLM"},
                      ("byte-level-bpe", ROBERTA_SPECIALS, templates.ROBERTA),
                      "max_position_embeddings",
                      {"pad_token_id": "<pad>", "bos_token_id": "<s>", "eos_token_id": "</s>"},
                      {"pad": "<pad>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"},
                      position_offset=2),  # positions count from pad_token_id + 1 = 2
    "albert": Family("albert", "AlbertConfig", "base",
                     {"mlm+sop": "AlbertForPreTraining", "mlm": "AlbertForMaskedLM"},
                     ("unigram", ALBERT_SPECIALS, templates.ALBERT), "max_position_embeddings",
                     {"pad_token_id": "<pad>", "bos_token_id": "[CLS]",
                      "eos_token_id": "[SEP]"},
                     {"pad": "<pad>", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}),
    "t5": Family("t5", "T5Config", "t5_small", {"span": "T5ForConditionalGeneration"},
                 ("unigram", T5_SPECIALS, templates.T5), None,
                 {"pad_token_id": "<pad>", "eos_token_id": "</s>",
                  "decoder_start_token_id": "<pad>"}, {"separator": "</s>"}),
    "glm": Family("glm", "GLMConfig", "base",
                  {"blank": "GLMForConditionalGeneration", "gmask": "GLMForConditionalGeneration"},
                  ("byte-level-bpe", GLM_SPECIALS, templates.GLM), "max_sequence_length",
                  {"pad_token_id": "<pad>", "mask_token_id": "[MASK]",
                   "gmask_token_id": "[gMASK]", "sop_token_id": "[S]", "eop_token_id": "[E]"},
                  position_offset=1),  # GLM's text may hold no special token: no separator
}

# `npplm train` with no arguments: a small GPT-2 on the standard library, about two minutes
# on two cores. GPT-2's architecture at a laptop's width (the published sizes start at 124M).
# The other families' defaults are their smallest published shape cut to the same scale.
DEFAULT_FAMILY = "gpt"
STDLIB_PROMPT = "    def __init__(self"  # the default corpus's samples continue a method

LAPTOP = {
    "gpt": dict(n_layer=4, n_embd=128, n_head=4),
    "llama": dict(num_hidden_layers=4, hidden_size=128, intermediate_size=344,
                  num_attention_heads=4, num_key_value_heads=2),
    "bert": dict(num_hidden_layers=4, hidden_size=128, num_attention_heads=4,
                 intermediate_size=512),
    "roberta": dict(num_hidden_layers=4, hidden_size=128, num_attention_heads=4,
                    intermediate_size=512),
    "albert": dict(num_hidden_layers=4, embedding_size=64, hidden_size=128,
                   num_attention_heads=4, intermediate_size=512),
    "t5": dict(num_layers=3, d_model=128, d_kv=32, d_ff=512, num_heads=4),
    "glm": dict(num_layers=4, hidden_size=128, num_attention_heads=4),
}


# --- objectives: the examples and the collator of each ------------------------------------

def special_id(tokenizer, token):
    i = tokenizer.token_to_id(token)
    if i is None:
        raise ValueError(f"the tokenizer has no {token!r} token, which this objective needs")
    return i


def make_collator(family, objective, tok, config, masking, seed):
    """The objective's collator for this tokenizer and config (npplm.objectives)."""
    from npplm import objectives as obj

    V, roles = tok.vocab_size, FAMILIES[family].roles
    if objective == "clm":
        return obj.CausalLMCollator(V, pad_id=special_id(tok, roles["pad"]))
    if objective == "span":
        return obj.SpanCorruptionCollator([special_id(tok, t) for t in T5_SENTINELS],
                                          pad_id=config.pad_token_id,
                                          eos_id=config.eos_token_id)
    if objective in ("blank", "gmask"):
        return obj.BlankInfillingCollator.from_config(
            config, gmask_prob=1.0 if objective == "gmask" else 0.0)
    # Masked LM, alone or with a sentence-pair task. Never masked: every special token.
    mask, pad = special_id(tok, roles["mask"]), special_id(tok, roles["pad"])
    specials = {special_id(tok, t) for t in FAMILIES[family].tokenizer[1]} - {mask, pad}
    if masking is None:
        masking = "dynamic" if family == "roberta" else "static"  # as each paper did
    mlm = obj.MaskedLMCollator(V, mask, pad, sorted(specials),
                               static_seed=seed if masking == "static" else None,
                               token_type_ids=family != "roberta")
    if objective == "mlm":
        return mlm
    pair = obj.NextSentenceCollator if objective == "mlm+nsp" else obj.SentenceOrderCollator
    return pair(mlm, special_id(tok, roles["cls"]), special_id(tok, roles["sep"]),
                max_length=config.max_position_embeddings)


def make_examples(family, objective, tok, docs, block_size, seed, what):
    """The examples a collator takes, from the documents of one split."""
    from npplm import objectives as obj

    roles = FAMILIES[family].roles
    if objective in ("mlm+nsp", "mlm+sop"):
        # Documents as lists of segments: BERT used sentences; in code, lines.
        segmented = []
        for doc in docs:
            lines = [tok.encode(line, add_special_tokens=False).ids for line in doc.splitlines()]
            segmented.append([np.asarray(x, dtype=np.int64) for x in lines if x])
        build = obj.nsp_examples if objective == "mlm+nsp" else obj.sop_examples
        # Built once, as BERT's create_pretraining_data did (one copy, dupe_factor 1).
        pairs = build(segmented, np.random.default_rng([seed, 7]), block_size)
        if not pairs:
            raise DataError(f"the {what} gives no sentence pairs: give more text")
        return pairs
    if objective == "clm":
        documents, separator = causal_documents(family, tok, docs)
        return pack(documents, block_size, separator, what)
    ids = tokenize_documents(tok, docs)
    if objective == "mlm":  # [CLS] block [SEP] (BERT, ALBERT) or <s> block </s> (RoBERTa)
        cls, sep = special_id(tok, roles["cls"]), special_id(tok, roles["sep"])
        blocks = pack(ids, block_size - 2, sep, what)
        n = len(blocks)
        return np.concatenate([np.full((n, 1), cls), blocks, np.full((n, 1), sep)], axis=1)
    separator = roles.get("separator")
    return pack(ids, block_size, None if separator is None else special_id(tok, separator),
                what)


def causal_documents(family, tok, docs):
    """(documents as id arrays, separator id) of a causal LM's text, as it trains on it and
    is scored on it: each document as the tokenizer's template writes it (LLaMA: <s> first,
    GPT-2: as it is), then the family's separator (</s>, <|endoftext|>) after it."""
    separator = FAMILIES[family].roles.get("separator")
    sep = tok.token_to_id(separator) if separator else None
    return tokenize_documents(tok, docs, add_special_tokens=True), sep


PERPLEXITY = {"clm": True, "mlm": True, "span": True, "blank": True, "gmask": True,
              "mlm+nsp": False, "mlm+sop": False}  # the pair losses add a second term


@dataclass
class Run:
    """What build_run returns: the pieces a Trainer takes, and what they came from."""

    model: object
    tokenizer: object
    collator: object
    train: object  # (N, T) blocks, or a list of sentence pairs
    val: object
    perplexity: bool
    sample: object  # model -> str, or None
    info: dict  # family, preset, objective, overrides, block size, corpus: for run.json


def parse_overrides(items):
    """["n_layer=4", "n_embd=256"] -> {"n_layer": 4, "n_embd": 256} (values as Python
    literals where they parse, else strings)."""
    import ast

    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. --set n_layer=4")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def check_preset(family, preset, overrides):
    """ValueError naming an unknown preset or config field of the family."""
    fam = FAMILIES[family]
    if preset not in fam.presets():
        raise ValueError(f"--preset {preset!r} is not a {fam.config} preset; choose one of "
                         f"{', '.join(fam.presets())}")
    fields = {f.name for f in dataclasses.fields(fam.config_class())}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"--set {unknown[0]}: {fam.config} has no such field; it has "
                         f"{', '.join(sorted(fields))}")


def make_config(family, preset, overrides):
    """The preset's config with `overrides`; unknown presets and fields are named."""
    check_preset(family, preset, overrides)
    return getattr(FAMILIES[family].config_class(), preset)(**overrides)


class ModelTooLarge(MemoryError):
    """A model whose weights, gradients and AdamW moments would not fit in this machine's
    memory; `parameters` and `memory` (bytes) say how far (`npplm train --dry-run` prints
    what it can account for without building it)."""

    def __init__(self, parameters, memory):
        self.parameters, self.memory = parameters, memory
        super().__init__(f"{parameters:,} parameters need about {16 * parameters / 2**30:.1f} "
                         f"GiB for weights, gradients and AdamW moments, but this machine has "
                         f"{memory / 2**30:.1f} GiB: choose a smaller --preset or --set "
                         "smaller widths")


def check_memory(family, config):
    """Refuse a model whose weights, gradients and Adam moments alone (16 bytes per
    parameter) would not fit in this machine's memory, naming both numbers
    (ModelTooLarge)."""
    module = importlib.import_module(f"npplm.models.{FAMILIES[family].module}")
    n = module.num_parameters(config)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return n
    if 16 * n > have:
        raise ModelTooLarge(n, have)
    return n


def train_tokenizer(kind, docs, vocab_size, log=print):
    """A tokenizer learned from the training documents: kind = (algorithm, special tokens,
    template), a Family's `tokenizer`.

    WordPiece is trained cased (lowercase=False): the default corpus is code, where case
    carries meaning, and BERT's cased models keep it too. Unigram (T5, ALBERT) splits on
    whitespace as SentencePiece's T5 models do, so it loses newlines and indentation.
    """
    algorithm, specials, template = kind
    lines = [line for doc in docs for line in doc.splitlines(keepends=True)]
    log(f"training a {algorithm} tokenizer ({vocab_size} ids) on {len(lines):,} lines ...")
    if algorithm == "byte-level-bpe":
        from npplm.tokenizers import train_byte_level_bpe

        return train_byte_level_bpe(lines, vocab_size=vocab_size, special_tokens=specials,
                                    template=template)
    if algorithm == "wordpiece":
        from npplm.tokenizers import train_wordpiece

        return train_wordpiece(lines, vocab_size=vocab_size, lowercase=False,
                               special_tokens=specials, template=template)
    if algorithm == "sentencepiece-bpe":
        from npplm.tokenizers import train_sentencepiece_bpe

        return train_sentencepiece_bpe(lines, vocab_size=vocab_size, special_tokens=specials,
                                       template=template)
    if algorithm == "unigram":
        from npplm.tokenizers import train_unigram

        return train_unigram(lines, vocab_size=vocab_size, special_tokens=specials,
                             unk_token="<unk>", template=template)
    raise ValueError(f"no trainer for tokenizers of kind {algorithm!r}")


# What a run is asked for: the keys run.json's "recipe" starts with. A run folder is resumed
# only when these are equal; the rest of the recipe (vocabulary, parameters, architecture)
# follows from them.
REQUEST_KEYS = ("family", "preset", "objective", "overrides", "block_size", "vocab_size",
                "tokenizer", "corpus", "max_chars", "val_fraction", "seed", "masking")
MLM_OBJECTIVES = ("mlm", "mlm+nsp", "mlm+sop")
STDLIB_CORPUS = "the Python standard library's source"


def min_vocab_size(family):
    """The smallest vocabulary the family's tokenizer can have: its special tokens, plus
    the 256 byte tokens for byte-level BPE and byte fallback, plus one learned token."""
    algorithm, specials, _ = FAMILIES[family].tokenizer
    bytes_ = 256 if algorithm in ("byte-level-bpe", "sentencepiece-bpe") else 0
    return len(specials) + bytes_ + 1


def resolve_request(family=DEFAULT_FAMILY, preset=None, objective=None, data=None, *,
                    block_size=128, vocab_size=2048, overrides=None, tokenizer=None,
                    max_chars=None, val_fraction=0.1, seed=0, masking=None):
    """The run's request (the REQUEST_KEYS of run.json), with defaults filled in and every
    value checked, before anything is read or trained: a bad value raises ValueError (or
    FileNotFoundError for a path) naming the flag and the value.

    overrides  config fields (--set) over the preset; on the family's default preset they
               adjust its laptop shape (LAPTOP), so --set n_layer=2 is the same small
               model with two layers.
    """
    if family not in FAMILIES:
        raise ValueError(f"--model {family!r} is not a family npplm can train; choose one of "
                         f"{', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    objective = objective or next(iter(fam.objectives))
    if objective not in fam.objectives:
        raise ValueError(f"--objective {objective!r} does not train {family}; its objectives: "
                         f"{', '.join(fam.objectives)}")
    preset = preset or fam.default_preset
    overrides = dict(overrides or {})
    check_preset(family, preset, overrides)
    if preset == fam.default_preset:
        overrides = {**LAPTOP[family], **overrides}
    if not isinstance(block_size, int) or block_size < (4 if objective in MLM_OBJECTIVES else 2):
        raise ValueError(f"--block-size {block_size} is too small: a block needs at least "
                         f"{4 if objective in MLM_OBJECTIVES else 2} tokens")
    if tokenizer is None:
        least = min_vocab_size(family)
        if not isinstance(vocab_size, int) or vocab_size < least:
            raise ValueError(f"--vocab-size {vocab_size} is too small for a {family} tokenizer "
                             f"({fam.tokenizer[0]}): it needs at least {least} ids")
    elif not pathlib.Path(tokenizer).exists():
        raise FileNotFoundError(f"--tokenizer {tokenizer}: no such file or folder")
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 1):
        raise ValueError(f"--max-chars {max_chars} must be a positive number of characters")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must lie strictly between 0 and 1")
    if masking is not None:
        if objective not in MLM_OBJECTIVES:
            raise ValueError(f"--masking {masking} applies to masked-LM objectives only, not "
                             f"{objective!r}")
        if masking not in ("static", "dynamic"):
            raise ValueError(f"--masking {masking!r}: use 'static' or 'dynamic'")
    if data is not None and not pathlib.Path(data).exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    return dict(family=family, preset=preset, objective=objective, overrides=overrides,
                block_size=block_size, vocab_size=None if tokenizer else vocab_size,
                tokenizer=None if tokenizer is None else str(tokenizer),
                corpus=STDLIB_CORPUS if data is None else str(data), max_chars=max_chars,
                val_fraction=val_fraction, seed=seed, masking=masking)


def read_corpus(request):
    """(all documents, training documents, validation documents) of a request's corpus:
    the same split every time for the same request (npplm eval reads a run's held-out
    split this way)."""
    data = None if request["corpus"] == STDLIB_CORPUS else request["corpus"]
    docs = stdlib_documents(request["max_chars"]) if data is None else \
        read_documents(data, request["max_chars"])
    train, val = split_documents(docs, request["val_fraction"], request["seed"],
                                 min_val_docs=2 if request["objective"] == "mlm+nsp" else 1)
    return docs, train, val


def build_run(family=DEFAULT_FAMILY, preset=None, objective=None, data=None, *,
              block_size=128, vocab_size=2048, overrides=None, tokenizer=None,
              max_chars=None, val_fraction=0.1, seed=0, sample_prompt=None, masking=None,
              log=print):
    """Documents, tokenizer, config, model, collator and blocks for one run (see above),
    built in memory: nothing is written (pretrain.py writes the run folder).

    tokenizer  a path for npplm.load_tokenizer (--tokenizer), None: train one, or a
               tokenizer object to reuse (a resumed run's own, trained from this request)
    overrides  config fields over the preset (see resolve_request)
    masking    MLM only: "static" (BERT's default) or "dynamic" (RoBERTa's)
    Every argument is checked (resolve_request) before the corpus is read.
    """
    given = tokenizer if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)) \
        else None
    request = resolve_request(family, preset, objective, data, block_size=block_size,
                              vocab_size=vocab_size, overrides=overrides,
                              tokenizer=None if given is not None else tokenizer,
                              max_chars=max_chars, val_fraction=val_fraction, seed=seed,
                              masking=masking)
    fam = FAMILIES[family]
    objective, preset, overrides = request["objective"], request["preset"], request["overrides"]

    # 1. Documents.
    docs, train_docs, val_docs = read_corpus(request)
    log(f"corpus: {request['corpus']}: {len(docs):,} documents, "
        f"{sum(map(len, docs)):,} characters ({len(train_docs):,} train / "
        f"{len(val_docs):,} validation documents)")

    # 2. Tokenizer.
    from npplm.tokenizers import load_tokenizer

    if given is not None:
        tok = given
    elif tokenizer is not None:
        tok = load_tokenizer(resolve_tokenizer(tokenizer))
    else:
        tok = train_tokenizer(fam.tokenizer, train_docs, vocab_size, log)

    # 3. Config: the preset, fitted to the tokenizer and the block size.
    fitted = {"vocab_size": tok.vocab_size}
    if fam.positions is not None:
        fitted[fam.positions] = block_size + fam.position_offset
    for name, token in fam.special_ids.items():
        fitted[name] = tok.token_to_id(token)
        if fitted[name] is None:
            raise ValueError(f"the tokenizer has no {token!r} token, which {family} needs as "
                             f"{name}")
    config = make_config(family, preset, {**fitted, **overrides})
    if (family == "glm" and config.position_encoding == "rotary"
            and "max_sequence_length" not in overrides):
        # GLM-130B's [gMASK] positions count on through Part B: a block of n tokens reaches
        # position n + 1 (BlankInfillingCollator's gmask_count_on). RoPE has no table to grow.
        config = dataclasses.replace(config, max_sequence_length=block_size + 2)
    n_params = check_memory(family, config)

    # 4. Model and collator.
    model = fam.model_class(objective, config)(config, seed=seed)
    collator = make_collator(family, objective, tok, config, masking, seed)
    log(f"model: {type(model).__name__} ({preset}"
        + "".join(f", {k}={v}" for k, v in overrides.items())
        + f"), {n_params:,} parameters, vocabulary {tok.vocab_size}, block {block_size}")

    # 5. Examples: blocks, or sentence pairs.
    train = make_examples(family, objective, tok, train_docs, block_size, seed, "training split")
    val = make_examples(family, objective, tok, val_docs, block_size, seed, "validation split")
    kind = "sentence pairs" if objective in ("mlm+nsp", "mlm+sop") else \
        f"blocks of {block_size} tokens"
    log(f"data: {len(train):,} training and {len(val):,} validation {kind}")

    sample = None
    if sample_prompt is None and data is None:
        sample_prompt = STDLIB_PROMPT
    if objective == "clm":
        sample = text_sampler(tok, val[0], block_size, sample_prompt, seed)
    info = dict(request, vocabulary=tok.vocab_size, parameters=n_params,
                architecture=type(model).__name__)
    return Run(model, tok, collator, train, val, PERPLEXITY[objective], sample, info)


def text_sampler(tokenizer, first_val_block, block_size, prompt=None, seed=0, new_tokens=96):
    """model -> its continuation of a prompt (default: the first 16 validation tokens),
    sampled at temperature 0.8 from the 40 likeliest tokens, seeded."""
    if prompt is None:
        ids = np.asarray(first_val_block[:16], dtype=np.int64)
    else:
        ids = np.asarray(tokenizer.encode(prompt, add_special_tokens=False).ids, dtype=np.int64)
        if not 1 <= len(ids) < block_size:
            raise ValueError(f"--prompt is {len(ids)} tokens; it must be 1 to {block_size - 1}")
    new = max(1, min(new_tokens, block_size - len(ids)))

    def sample(model):
        out = model.generate(ids[None], new, temperature=0.8, top_k=40, seed=seed)
        return tokenizer.decode(out[0], skip_special_tokens=True)

    return sample


__all__ = ["FAMILIES", "REQUEST_KEYS", "DataError", "Family", "Run", "build_run",
           "make_config", "parse_overrides", "read_corpus", "resolve_request"]
