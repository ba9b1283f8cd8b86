"""What the three stages (sft.py, reward.py, dpo.py) share: the model to start from, the
data, the held-out split, and the run folder they train in.

A stage's run folder is a training run's (npplm.training.run_folder): run.json (here
{"stage": request, "train_config": ...}), checkpoints/ (config.json, model.safetensors,
the tokenizer with its chat template, the optimizer state), metrics.jsonl and plots. The
newest checkpoint is what `npplm generate/chat --model OUT`, the next stage's `--model OUT`
and transformers load; a model read from a GGUF file is saved as safetensors. Running the
same command again resumes; another request in the same folder is refused (--overwrite
replaces it), and nothing is written before the model and the data are ready.
"""

import dataclasses
import pathlib

import numpy as np

from autograd import no_grad, to_numpy
from npplm.alignment.data import SFT_FORMATS, read_examples
from npplm.alignment.docstrings import instruction_pairs, preference_pairs
from npplm.training.run_folder import claimed, load_model
from npplm.training.trainer import Trainer

DEFAULT_DATA = "the standard library's docstrings"  # what `data=None` means in a request
VAL_FRACTION = 0.1


def load_policy(path, max_length=None):
    """(causal LM, its tokenizer) of a run folder, a checkpoint or Hugging Face folder, or
    a GGUF file; ValueError for a model that is not a causal LM, or whose context is
    shorter than max_length (the longest example the stage will feed it)."""
    from npplm.generation import GenerationMixin

    model, tokenizer = load_model(path, dequantize=True)  # trained: float32 weights
    if not isinstance(model, GenerationMixin):
        raise ValueError(f"{path} holds a {type(model).__name__}: alignment starts from a "
                         "causal language model (GPT, LLaMA)")
    if max_length is not None and max_length > model.context_length:
        raise ValueError(f"--max-length {max_length} exceeds the context of {path}, "
                         f"{model.context_length} tokens")
    return model, tokenizer


def train_and_validation(data, kind, seed=0, conversational=False):
    """(training rows, held-out rows) of a JSONL file, or of the docstring sets when data is
    None (as chat messages when conversational: for a model with a chat template, which
    was trained on its turns). kind: "sft" (instruction pairs) or "preference". A file is
    split at random (10% held out, from `seed`); the docstring sets by package
    (docstrings.py)."""
    if data is None:
        make = instruction_pairs if kind == "sft" else preference_pairs
        return (make("train", conversational=conversational),
                make("validation", conversational=conversational))
    formats = ("preference",) if kind == "preference" else SFT_FORMATS
    return split_rows(read_examples(data, formats)[0], data, seed)


def split_rows(rows, data, seed=0):
    """(training rows, held-out rows) of a file's rows: 10% held out at random, from `seed`."""
    if len(rows) < 2:
        raise ValueError(f"{data} holds {len(rows)} example: at least 2 are needed (one held out)")
    order = np.random.default_rng([seed, 17]).permutation(len(rows))
    n_val = max(1, int(round(VAL_FRACTION * len(rows))))
    return [rows[i] for i in sorted(order[n_val:])], [rows[i] for i in sorted(order[:n_val])]


def subset(examples, n, seed=0):
    """At most n of the examples, a seeded choice kept in order (all when fewer)."""
    if len(examples) <= n:
        return list(examples)
    keep = np.sort(np.random.default_rng([seed, 23]).choice(len(examples), n, replace=False))
    return [examples[i] for i in keep]


def over_pairs(score, model, collator, examples, batch_size=8):
    """(chosen (N,), rejected (N,)) float32 arrays of score(model, batch) -> (chosen (B,),
    rejected (B,)) over every preference pair, in eval mode and without gradients."""
    chosen, rejected = [], []
    model.eval()
    with no_grad():
        for lo in range(0, len(examples), batch_size):
            c, r = score(model, collator(examples[lo:lo + batch_size]))
            chosen.append(to_numpy(c.data))
            rejected.append(to_numpy(r.data))
    model.train()
    return (np.concatenate(chosen).astype(np.float32),
            np.concatenate(rejected).astype(np.float32))


def run_stage(out, request, config, model, tokenizer, collator, examples, *, loss_fn=None,
              eval_metrics=None, overwrite=False, progress=False, log=print):
    """Train `model` in the run folder `out` under the folder rules (run_folder.claimed):
    examples is (training, held-out), or a function returning them, called once the folder
    is known to be usable and before anything is written (DPO computes its reference
    log-probs there); then run.json is written and the Trainer fits, resuming from the
    newest checkpoint. Returns the Trainer."""
    with claimed(out, request, key="stage", overwrite=overwrite, log=log) as claim:
        train, val = examples() if callable(examples) else examples
        claim.commit({"stage": request, "train_config": dataclasses.asdict(config)})
        log(f"{request['stage']}: {len(train):,} training and {len(val):,} held-out examples; "
            f"{config.steps} steps of {config.batch_size * config.grad_accum}; run folder {out}")
        trainer = Trainer(model, collator, train, val, config, run_dir=out, perplexity=False,
                          progress=progress, log=log, run_info=request, tokenizer=tokenizer,
                          loss_fn=loss_fn, eval_metrics=eval_metrics)
        trainer.fit(resume=True)
    return trainer


def plot_metrics(history, names, path, title):
    """The logged values of `names` against step, to a PNG (atomically); names a list of
    metric names (one panel) or a list of such lists (panels side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from npplm.io.files import atomic_path

    panels = [names] if isinstance(names[0], str) else names
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.0), dpi=100,
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for name in panel:
            points = [(r["step"], r[name]) for r in history if name in r]
            if points:
                ax.plot(*zip(*points), "o-", label=name, lw=1.5, ms=3)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(pathlib.Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
