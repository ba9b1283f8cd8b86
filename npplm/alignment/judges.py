"""Judges: what scores a response in RLHF (ppo.py), as one function of text.

A judge is any callable judge(prompts, responses) -> scores: prompts as the data gave them
(strings, or lists of chat messages), responses the decoded strings without their EOS,
scores one finite number per response, higher is better. Three kinds:

    a reward model   RewardModelJudge: a checkpoint of `npplm reward` (or any Hugging Face
                     *ForSequenceClassification with one label), reading each prompt and
                     response laid out exactly as the reward model was trained on them
    a built-in       by name (BUILTIN): "python" scores Python code by a rule anyone can
                     check, so that RLHF can be watched working without a reward model
    your own         any Python function, e.g. a call to a bigger model or a unit test

`check_scores` is applied to whatever a judge returns: a wrong count or a NaN stops the run
with the culprit named, before anything is learned from it.
"""

import warnings

import numpy as np

from autograd import no_grad, to_numpy


def _compiles(source):
    with warnings.catch_warnings():  # "invalid escape sequence" and the like: still Python
        warnings.simplefilter("ignore")
        try:
            compile(source, "<judge>", "exec")
        except (SyntaxError, ValueError):
            return False
    return True


def python_line(line):
    """Whether one stripped line is Python on its own: a statement (also one that belongs in
    a function body: return, yield), or a block header (def, if, for, else, except, ...)
    that `pass` would complete."""
    return (_compiles(line) or _compiles(f"def _():\n {line}")
            or _compiles(f"{line}\n pass") or _compiles(f"if 1:\n pass\n{line}\n pass")
            or _compiles(f"try:\n pass\n{line}\n pass"))


def python_lines(prompts, responses):
    """The built-in judge "python": the fraction of a response's lines that are Python on
    their own (python_line), counting neither blank lines nor comments; 0 for a response
    with no such line. The last line counts too, so a response cut off mid-statement loses
    a little. Deterministic and checkable by reading."""
    scores = []
    for response in responses:
        lines = [s.strip() for s in response.splitlines()]
        lines = [s for s in lines if s and not s.startswith("#")]
        scores.append(sum(map(python_line, lines)) / len(lines) if lines else 0.0)
    return scores


BUILTIN = {"python": python_lines}


def check_scores(scores, n, responses=None):
    """The judge's scores as a float32 array (n,); ValueError naming a wrong count, a
    non-number or a NaN / infinite score (and the response it was given)."""
    try:
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"the judge returned {type(scores).__name__} {scores!r:.80}: it must "
                         f"return {n} numbers, one per response") from None
    if values.size != n:
        raise ValueError(f"the judge returned {values.size} scores for {n} responses: it must "
                         "return one per response")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        shown = "" if responses is None else f" (response {responses[i]!r:.80})"
        raise ValueError(f"the judge's score for response {i} is {values[i]}{shown}: scores "
                         "must be finite numbers")
    return values.astype(np.float32)


class RewardModelJudge:
    """A reward model as a judge: r(x, y) read at the last token of prompt + response, as
    `npplm reward` trained it (npplm.alignment.reward).

    Each (prompt, response) is tokenized as a preference example's prompt + chosen is
    (data.completion_ids: a string response gets the EOS, a chat prompt gets the response
    as the assistant's turn through the chat template), so the model reads the response in
    the layout it learned to score, whatever tokenizer the policy uses."""

    def __init__(self, path, batch_size=8):
        from npplm.models.base import SequenceClassifierMixin
        from npplm.training.run_folder import load_model

        self.path = str(path)
        self.model, self.tokenizer = load_model(path)
        if not isinstance(self.model, SequenceClassifierMixin) \
                or self.model.config.num_labels != 1:
            raise ValueError(f"{path} holds a {type(self.model).__name__}, not a reward model "
                             "(a *ForSequenceClassification with one label, from "
                             "`npplm reward`)")
        self.model.eval()
        self.batch_size = batch_size

    def ids(self, prompt, response):
        from npplm.alignment.data import completion_ids

        answer = response if isinstance(prompt, str) else [{"role": "assistant",
                                                            "content": response}]
        return completion_ids(self.tokenizer, prompt, answer)[1]

    def __call__(self, prompts, responses):
        from npplm.objectives.batching import pad_rows

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts and {len(responses)} responses")
        rows = [self.ids(p, r) for p, r in zip(prompts, responses)]
        limit = self.model.context_length
        if max(map(len, rows)) > limit:
            raise ValueError(f"a prompt and response of {max(map(len, rows))} tokens exceed "
                             f"the reward model's context, {limit} (shorten --max-new-tokens)")
        pad = self.model.config.pad_token_id
        scores = []
        with no_grad():
            for lo in range(0, len(rows), self.batch_size):
                part = rows[lo:lo + self.batch_size]
                ids = pad_rows(part, pad)  # (b, T), right-padded
                mask = (np.arange(ids.shape[1]) < np.array([len(r) for r in part])[:, None])
                logits = self.model(ids, attention_mask=mask.astype(np.int64)).logits
                scores.append(to_numpy(logits.data)[:, 0])
        return np.concatenate(scores).astype(np.float32)


def resolve_judge(judge):
    """(callable judge, its name): a callable as it is, a built-in by name, else the path of
    a reward model."""
    if callable(judge):
        return judge, getattr(judge, "__name__", type(judge).__name__)
    if judge in BUILTIN:
        return BUILTIN[judge], judge
    return RewardModelJudge(judge), str(judge)

