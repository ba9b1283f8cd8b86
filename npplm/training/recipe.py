"""Recipes: a model family, a preset and an objective turned into everything a run needs.

`npplm train --model FAMILY --preset NAME --objective OBJ --data PATH` calls `build_run`,
which, in order:

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

from npplm.training.data import (
    DataError,
    pack,
    read_documents,
    split_documents,
    stdlib_documents,
    tokenize_documents,
)

EOT = "<|endoftext|>"  # GPT-2's document separator, also BOS/EOS of our trained tokenizers


@dataclass(frozen=True)
class Family:
    """One model family as `npplm train` sees it."""

    module: str  # npplm.models.<module>
    config: str  # its config class
    default_preset: str
    objectives: dict  # objective name -> model class name in the module
    tokenizer: str  # "byte-level-bpe" (the only kind trained here so far)
    positions: str  # the config field limiting the sequence length
    special_ids: dict = field(default_factory=dict)  # config field -> special token

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
    "gpt": Family("gpt", "GPTConfig", "gpt2", {"clm": "GPT2LMHeadModel"}, "byte-level-bpe",
                  "n_positions", {"bos_token_id": EOT, "eos_token_id": EOT}),
    "llama": Family("llama", "LlamaConfig", "llama2_7b", {"clm": "LlamaForCausalLM"},
                    "byte-level-bpe", "max_position_embeddings",
                    {"bos_token_id": EOT, "eos_token_id": EOT}),
}

# `npplm train` with no arguments: a small GPT-2 on the standard library, about two minutes
# on two cores. GPT-2's architecture at a laptop's width (the published sizes start at 124M).
DEFAULT_FAMILY, DEFAULT_OBJECTIVE = "gpt", "clm"
DEFAULT_OVERRIDES = {"gpt": dict(n_layer=4, n_embd=128, n_head=4)}


def causal_lm_collator(examples, rng):
    """CLM: the labels are the input ids (the model shifts them by one)."""
    x = np.stack(examples)  # (B, T)
    return {"input_ids": x, "labels": x}


COLLATORS = {"clm": lambda family, tokenizer, config: causal_lm_collator}


@dataclass
class Run:
    """What build_run returns: the pieces a Trainer takes, and what they came from."""

    model: object
    tokenizer: object
    collator: object
    train: np.ndarray  # (N, T) blocks
    val: np.ndarray  # (M, T) blocks
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


def make_config(family, preset, overrides):
    """The preset's config with `overrides`; unknown presets and fields are named."""
    fam = FAMILIES[family]
    cls = fam.config_class()
    if preset not in fam.presets():
        raise ValueError(f"--preset {preset!r} is not a {cls.__name__} preset; choose one of "
                         f"{', '.join(fam.presets())}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"--set {unknown[0]}: {cls.__name__} has no such field; it has "
                         f"{', '.join(sorted(fields))}")
    return getattr(cls, preset)(**overrides)


def check_memory(family, config):
    """Refuse a model whose weights, gradients and Adam moments alone (16 bytes per
    parameter) would not fit in this machine's memory, naming both numbers."""
    module = importlib.import_module(f"npplm.models.{FAMILIES[family].module}")
    n = module.num_parameters(config)
    need = 16 * n
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return n
    if need > have:
        raise MemoryError(f"{n:,} parameters need about {need / 2**30:.1f} GiB for weights, "
                          f"gradients and AdamW moments, but this machine has "
                          f"{have / 2**30:.1f} GiB: choose a smaller --preset or --set smaller "
                          "widths")
    return n


def train_tokenizer(kind, docs, vocab_size, log=print):
    """A tokenizer of `kind` learned from the training documents."""
    if kind != "byte-level-bpe":
        raise ValueError(f"no trainer for tokenizers of kind {kind!r}")
    from npplm.tokenizers import train_byte_level_bpe

    lines = [line for doc in docs for line in doc.splitlines(keepends=True)]
    log(f"training a byte-level BPE tokenizer ({vocab_size} ids) on {len(lines):,} lines ...")
    return train_byte_level_bpe(lines, vocab_size=vocab_size, special_tokens=[EOT])


def build_run(family=DEFAULT_FAMILY, preset=None, objective=None, data=None, *,
              block_size=128, vocab_size=2048, overrides=None, tokenizer=None,
              max_chars=None, val_fraction=0.1, seed=0, run_dir=None, sample_prompt=None,
              log=print):
    """Documents, tokenizer, config, model, collator and blocks for one run (see above).

    tokenizer  a path for npplm.load_tokenizer, or None: train one (saved to
               run_dir/tokenizer/), or reuse run_dir/tokenizer/ when it exists (a resumed run)
    overrides  config fields over the preset (None: the default run's for the family)
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
    if overrides is None:
        overrides = dict(DEFAULT_OVERRIDES.get(family, {})) if preset == fam.default_preset \
            else {}

    # 1. Documents.
    if data is None:
        docs, corpus = stdlib_documents(max_chars), "the Python standard library's source"
    else:
        docs, corpus = read_documents(data, max_chars), str(data)
    train_docs, val_docs = split_documents(docs, val_fraction, seed)
    log(f"corpus: {corpus}: {len(docs):,} documents, {sum(map(len, docs)):,} characters "
        f"({len(train_docs):,} train / {len(val_docs):,} validation documents)")

    # 2. Tokenizer.
    from npplm import load_tokenizer

    own = None if run_dir is None else pathlib.Path(run_dir) / "tokenizer"
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    elif own is not None and own.is_dir():
        tok = load_tokenizer(own)
    else:
        tok = train_tokenizer(fam.tokenizer, train_docs, vocab_size, log)
    if own is not None and not own.is_dir():
        tok.save(own)

    # 3. Config: the preset, fitted to the tokenizer and the block size.
    fitted = {"vocab_size": tok.vocab_size, fam.positions: block_size}
    for name, token in fam.special_ids.items():
        fitted[name] = tok.token_to_id(token)
        if fitted[name] is None:
            raise ValueError(f"the tokenizer has no {token!r} token, which {family} needs as "
                             f"{name}")
    config = make_config(family, preset, {**fitted, **overrides})
    n_params = check_memory(family, config)

    # 4. Model and collator.
    model = fam.model_class(objective, config)(config, seed=seed)
    collator = COLLATORS[objective](family, tok, config)
    log(f"model: {type(model).__name__} ({preset}"
        + "".join(f", {k}={v}" for k, v in overrides.items())
        + f"), {n_params:,} parameters, vocabulary {tok.vocab_size}, block {block_size}")

    # 5. Blocks.
    sep = tok.token_to_id(EOT)
    train = pack(tokenize_documents(tok, train_docs), block_size, sep, "training split")
    val = pack(tokenize_documents(tok, val_docs), block_size, sep, "validation split")
    log(f"data: {train.shape[0]:,} training and {val.shape[0]:,} validation blocks of "
        f"{block_size} tokens ({train.size:,} training tokens)")

    sample = None
    if hasattr(model, "generate"):
        sample = text_sampler(tok, val[0], block_size, sample_prompt, seed)
    info = dict(family=family, preset=preset, objective=objective, overrides=overrides,
                block_size=block_size, vocab_size=tok.vocab_size, corpus=corpus,
                max_chars=max_chars, val_fraction=val_fraction, seed=seed,
                parameters=n_params, architecture=type(model).__name__)
    return Run(model, tok, collator, train, val, perplexity=True, sample=sample, info=info)


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
        return tokenizer.decode(out[0])

    return sample


__all__ = ["FAMILIES", "DataError", "Family", "Run", "build_run", "make_config",
           "parse_overrides"]
