"""`npplm eval` as a function: each family's held-out metric, on the run's own held-out
split unless other text is given.

    evaluate("runs/gpt-default")                  # the run's validation documents
    evaluate("path/to/checkpoint", data="wiki.txt")

| model (its family)       | what is reported (evaluation.py)                          |
| ------------------------ | --------------------------------------------------------- |
| GPT, LLaMA (causal LMs)  | perplexity with a sliding window, NLL per token, bits per byte |
| BERT, RoBERTa, ALBERT    | masked-LM loss (the objective's 15% masks, from a seed) and |
|                          | pseudo-perplexity (every token masked in turn; first blocks) |
| T5                       | span-corruption loss per target token, and its exp         |
| GLM                      | blank-infilling loss (the run's objective) per target token |

Which text: a model from a run folder (the run folder itself, or one of its checkpoints)
is scored by default on the run's held-out split, rebuilt from run.json (the same corpus,
max_chars, split fraction and seed give the same documents the run validated on, none of
which it trained on). `data` (a file or a folder) replaces it; a model that is not from a
run (a Hugging Face folder, a GGUF file) needs `data`.
"""

import math

import numpy as np

from npplm.generation import GenerationMixin
from npplm.training.data import first_chars, join, read_documents
from npplm.training.evaluation import (
    objective_loss,
    perplexity,
    pseudo_perplexity,
    window_count,
)
from npplm.training.recipe import (
    FAMILIES,
    STDLIB_CORPUS,
    causal_documents,
    make_collator,
    make_examples,
    read_corpus,
)
from npplm.training.run_folder import load_model, read_recipe, resolve_model, run_of

PSEUDO_PERPLEXITY_BLOCKS = 16  # one forward pass per token: the first blocks only
ENCODERS = ("bert", "roberta", "albert")


def family_of(model):
    """The FAMILIES key of a model's class: the npplm.models module it is defined in."""
    family = type(model).__module__.rpartition(".")[2]
    if family not in FAMILIES:
        raise ValueError(f"{type(model).__name__} belongs to no family npplm evaluates")
    return family


def _progress(total, unit, enabled):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc="evaluating", disable=not enabled,
                dynamic_ncols=True, leave=False)


def held_out_documents(path, data=None, max_chars=None):
    """(documents, a description, the run's recipe or None) to score the model at `path` on."""
    run = run_of(resolve_model(path))
    recipe = read_recipe(run)["recipe"] if run is not None else None
    if data is not None:
        return read_documents(data, max_chars), str(data), recipe
    if recipe is None:
        raise ValueError(f"{path} is not from an npplm run, so it has no held-out split: "
                         "give the text to score with --data")
    _, _, val = read_corpus(recipe)
    corpus = "the standard library" if recipe["corpus"] == STDLIB_CORPUS else recipe["corpus"]
    val = first_chars(val, max_chars)
    documents = f"{len(val):,} document{'' if len(val) == 1 else 's'}"
    return val, f"the held-out split of {run} ({documents} of {corpus})", recipe


def evaluate(path, data=None, *, max_chars=None, window=None, stride=None, batch_size=8,
             seed=0, progress=False):
    """The held-out metrics of the model at `path` (a run folder, a checkpoint folder, a
    Hugging Face folder or a GGUF file), as a dict with "metric" naming the headline
    number, "value" it, "tokens" scored, "data" describing the text, and the rest per
    family (see the module docstring). window, stride: a causal LM's sliding window
    (default: its context, and half of it)."""
    if window is not None and window < 2:
        raise ValueError(f"--window {window} must be at least 2 tokens (one to read, one "
                         "to predict)")
    if stride is not None and stride < 1:
        raise ValueError(f"--stride {stride} must be a positive number of tokens")
    docs, described, recipe = held_out_documents(path, data, max_chars)
    if not docs or not any(d.strip() for d in docs):
        raise ValueError(f"{described} holds no text to score")
    checkpoint = resolve_model(path)
    model, tok = load_model(checkpoint)
    family = family_of(model)
    result = {"model": str(checkpoint), "data": described, "family": family}
    if isinstance(model, GenerationMixin):
        result.update(_causal(model, tok, family, docs, window, stride, batch_size, progress))
        return result
    if window is not None or stride is not None:
        raise ValueError(f"--window and --stride set a causal LM's sliding window; "
                         f"{type(model).__name__} is not one")
    block_size = recipe["block_size"] if recipe else min(model.context_length or 128, 128)
    if family in ENCODERS:
        if not type(model).__name__.endswith(("ForMaskedLM", "ForPreTraining")):
            raise ValueError(f"{type(model).__name__} has no masked-LM head to score text with")
        result.update(_masked_lm(model, tok, family, docs, block_size, seed, batch_size,
                                 progress))
    else:
        objective = recipe["objective"] if recipe else next(iter(FAMILIES[family].objectives))
        examples = make_examples(family, objective, tok, docs, block_size, seed, "text to score")
        collator = make_collator(family, objective, tok, model.config, None, seed)
        with _progress(len(examples), "example", progress) as bar:
            nll, count = objective_loss(model, collator, examples, seed, batch_size, bar.update)
        name = "span-corruption loss" if family == "t5" else "blank-infilling loss"
        result.update(metric=name, value=nll, tokens=count, perplexity=math.exp(min(nll, 700)),
                      objective=objective)
    return result


def _causal(model, tok, family, docs, window, stride, batch_size, progress):
    """Perplexity, NLL and bits per byte of a causal LM over the documents, joined by the
    family's document separator as in training."""
    ids = join(*causal_documents(family, tok, docs))  # (N,) as in training
    context = model.context_length
    window = context if window is None else window
    if window > context:
        raise ValueError(f"--window {window} exceeds the model's context of {context} tokens")
    stride = window // 2 if stride is None else stride
    if stride > window:
        raise ValueError(f"--stride {stride} exceeds the window of {window} tokens")
    with _progress(window_count(len(ids), window, stride), "window", progress) as bar:
        ppl, nll, count = perplexity(model, ids, window, stride, batch_size, bar.update)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    return dict(metric="perplexity", value=ppl, tokens=count, nll=nll,
                bits_per_byte=nll * count / math.log(2) / n_bytes, window=min(window, len(ids)),
                stride=stride)


def _masked_lm(model, tok, family, docs, block_size, seed, batch_size, progress):
    """MLM loss over every block, pseudo-perplexity over the first blocks."""
    blocks = make_examples(family, "mlm", tok, docs, block_size, seed, "text to score")
    collator = make_collator(family, "mlm", tok, model.config, "static", seed)
    first = blocks[:PSEUDO_PERPLEXITY_BLOCKS]
    skip = {int(t) for t in (collator.pad_id, *collator.special_ids)}
    with _progress(len(blocks) + len(first), "block", progress) as bar:
        mlm, count = objective_loss(model, collator, blocks, seed, batch_size, bar.update)
        pppl, _, scored = pseudo_perplexity(model, first, collator.mask_id, skip,
                                            token_type_ids=family != "roberta",
                                            progress=bar.update)
    return dict(metric="masked-LM loss", value=mlm, tokens=count, pseudo_perplexity=pppl,
                pseudo_perplexity_tokens=scored, pseudo_perplexity_blocks=len(first),
                blocks=int(np.asarray(blocks).shape[0]))


def describe(result):
    """One line (or two) for the command line."""
    head = f"{result['model']} on {result['data']}:"
    if result["metric"] == "perplexity":
        return (f"{head}\n  perplexity {result['value']:.3f} over {result['tokens']:,} tokens "
                f"(window {result['window']}, stride {result['stride']}); mean NLL "
                f"{result['nll']:.4f} nats/token, {result['bits_per_byte']:.3f} bits/byte")
    if result["metric"] == "masked-LM loss":
        return (f"{head}\n  masked-LM loss {result['value']:.4f} nats/token over "
                f"{result['tokens']:,} masked tokens of {result['blocks']:,} blocks; "
                f"pseudo-perplexity {result['pseudo_perplexity']:.2f} over "
                f"{result['pseudo_perplexity_tokens']:,} tokens (the first "
                f"{result['pseudo_perplexity_blocks']} blocks, each token masked in turn)")
    return (f"{head}\n  {result['metric']} ({result['objective']}) {result['value']:.4f} "
            f"nats/token over {result['tokens']:,} target tokens; perplexity of the targets "
            f"{result['perplexity']:.2f}")


__all__ = ["PSEUDO_PERPLEXITY_BLOCKS", "describe", "evaluate", "family_of"]
