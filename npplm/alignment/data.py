"""Alignment data: Hugging Face TRL's dataset formats, read from JSONL, tokenized for training.

One JSON object per line, in one of TRL's formats (its "dataset formats" guide), each known
by its keys:

    language modelling   {"text": "..."}
    prompt-completion    {"prompt": "...", "completion": "..."}
    conversational       {"messages": [{"role": "user", "content": "..."}, ...]}
    preference           {"prompt": "...", "chosen": "...", "rejected": "..."}
    prompt-only          {"prompt": "..."}

Prompt, completion, chosen and rejected are either strings ("standard") or lists of chat
messages ("conversational": {"role": system | user | assistant | tool, "content": str}),
which the tokenizer's own chat template lays out. SFT takes the first three formats; DPO and
reward modelling take preference pairs; RLHF (ppo.py) takes prompts only, and generates.

Supervised fine-tuning (SFT) trains the causal-LM loss on the completion only:

    L_SFT = - 1/|C| sum_{t in C} log P(x_t | x_<t),   C = the trained (completion) positions

Which positions are in C is the whole content of this module's SFT half, and it follows
TRL's `SFTTrainer._prepare_dataset` (trl/trainer/sft_trainer.py, `tokenize_fn`, `add_eos`,
`build_labels`, `truncate`):

- text: every token is trained on. TRL appends `eos_token` to the text, then tokenizes it
  with the tokenizer's template (add_special_tokens=True: LLaMA's <s> in front). We append
  the EOS *id* after tokenizing, which gives the same ids (an added token is cut from the
  text before BPE runs) and works whatever the EOS token's spelling.
- prompt-completion: the prompt and prompt + completion are tokenized separately (EOS
  appended to the completion as above); the tokens after the prompt's length are the
  completion. When the prompt's ids are not a prefix of the whole's (BPE merged a token
  across the boundary, e.g. a prompt ending in a space), TRL warns and still cuts at the
  prompt's length; so do we, counting such examples in DataStats.boundary_mismatches.
- conversational: the chat template renders the prompt with add_generation_prompt=True
  (it ends with the assistant's header, `<|im_start|>assistant\\n` in SmolLM2) and the whole
  conversation without; the ids are encoded with add_special_tokens=False, because the
  template already wrote every special token (adding BOS again would double it; TRL does
  the same). No EOS is appended: the template ends the assistant's turn with its own
  end-of-turn token (`<|im_end|>`), which is inside the completion and so is trained on:
  the model learns to stop. So is what the template writes after it (SmolLM2's "\\n"),
  as in TRL.
- `messages` without assistant_only_loss: every token is trained on, system and user turns
  included (TRL's language-modelling case).
- assistant_only_loss: only the assistant turns. TRL asks the template for them: a template
  that wraps the assistant's output in `{% generation %}` ... `{% endgeneration %}` makes
  transformers return an `assistant_masks`. Real templates (SmolLM2's among them) have no
  such markers, so we find the turns by rendering prefixes of the conversation instead:
  assistant turn i spans from the end of render(messages[:i], add_generation_prompt=True)
  (everything up to and including the assistant's header) to the end of
  render(messages[:i + 1]) (its content, its end-of-turn token and what follows it up to the
  next turn). That is TRL's training templates' span (trl/chat_templates/
  qwen2_5_training.jinja wraps "\\n" + content + "<|im_end|>\\n"), less the newline that our
  header already holds. It needs a template that renders a conversation's prefix as a
  prefix of the whole, which ChatML templates do; one that does not is refused.
- truncation (TRL's default truncation_mode="keep_start"): the first max_length tokens are
  kept; an example left with no trained token (its prompt fills max_length) is dropped and
  counted.

Preference pairs (DPO, reward modelling) follow TRL's `DPOTrainer._prepare_dataset`
(trl/trainer/dpo_trainer.py): the prompt, prompt + chosen and prompt + rejected are
tokenized as above (EOS appended to standard chosen/rejected), and the completions are what
follows the prompt's length. Truncation is per pair (see tokenize_preference).

Collators turn the examples into batches (npplm's convention, npplm/objectives/: collator(
examples, rng) -> dict of int64 NumPy arrays, right-padded). Padding is known by position,
never by id: SmolLM2 pads with its EOS `<|im_end|>`, and the EOS that ends a completion must
still be a label.
"""

import json
import pathlib
import warnings
from dataclasses import dataclass

import numpy as np

from npplm.io.files import atomic_path
from npplm.objectives.batching import LABEL_PAD_ID, pad_rows

ROLES = ("system", "user", "assistant", "tool")

# Each format's keys, exactly (TRL's implicit-prompt preference {"chosen", "rejected"},
# whose prompt is the common start of the two conversations, is not supported).
FORMATS = {
    "text": ("text",),
    "prompt-completion": ("prompt", "completion"),
    "messages": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "prompt-only": ("prompt",),
}
SFT_FORMATS = ("text", "prompt-completion", "messages")


class DataFormatError(ValueError):
    """An alignment data file or example is malformed: bad JSON, wrong keys, empty answers."""


# --- JSONL files ---------------------------------------------------------------------------

def _jsonl_rows(path):
    """(line number, object) for every non-blank line of a JSONL file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}:{number}: not valid JSON ({e.msg}, column "
                                      f"{e.colno})") from None
            if not isinstance(row, dict):
                raise DataFormatError(f"{path}:{number}: each line must be one JSON object, "
                                      f"got {type(row).__name__}")
            rows.append((number, row))
    if not rows:
        raise DataFormatError(f"{path} is empty: no JSON object in it")
    return rows


def read_jsonl(path):
    """The objects of a JSONL file, one per non-blank line.

    Raises DataFormatError naming the file and line of a line that is not a JSON object, or
    for a file with no object at all.
    """
    return [row for _, row in _jsonl_rows(path)]


def read_examples(path, formats=None):
    """(examples, format): a JSONL file's examples, all checked (errors name file:line).

    formats: the formats accepted (e.g. SFT_FORMATS, or ("preference",)); None: any. All
    lines must share one format, as a TRL dataset's columns do.
    """
    examples, found = [], None
    for number, row in _jsonl_rows(path):
        where = f"{path}:{number}"
        kind = detect_format(row, where)
        if formats is not None and kind not in formats:
            raise DataFormatError(f"{where}: a {kind} example, but this needs "
                                  f"{' or '.join(formats)} examples")
        if found is not None and kind != found[0]:
            raise DataFormatError(f"{where}: a {kind} example after {found[0]} examples "
                                  f"(first at {found[1]}); one file holds one format")
        found = found or (kind, where)
        examples.append(row)
    return examples, found[0]


def write_jsonl(rows, path):
    """Write dicts as JSONL (UTF-8, one object a line), atomically: a temporary file in the
    same folder replaces `path` only once it is complete (npplm.io.files.atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# --- formats -------------------------------------------------------------------------------

def _where(where):
    return f"{where}: " if where else ""


def _check_messages(messages, key, where):
    if not isinstance(messages, list) or not messages:
        raise DataFormatError(f"{_where(where)}{key!r} must be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DataFormatError(f"{_where(where)}{key}[{i}] must be a message "
                                  f"{{'role': ..., 'content': ...}}, got {m!r}")
        missing, extra = {"role", "content"} - set(m), set(m) - {"role", "content"}
        if missing or extra:
            raise DataFormatError(f"{_where(where)}{key}[{i}]: "
                                  + _keys_message(missing, extra, "a message"))
        if m["role"] not in ROLES:
            raise DataFormatError(f"{_where(where)}{key}[{i}] has role {m['role']!r}, not one "
                                  f"of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise DataFormatError(f"{_where(where)}{key}[{i}]'s content must be a string")


def _keys_message(missing, extra, what):
    parts = []
    if missing:
        parts.append(f"missing key(s) {', '.join(sorted(missing))}")
    if extra:
        parts.append(f"unexpected key(s) {', '.join(sorted(extra))}")
    return f"{' and '.join(parts)} for {what}"


def _check_answer(value, key, where, conversational):
    """A completion, chosen or rejected answer: a non-blank string, or messages with a
    non-blank assistant message."""
    if conversational:
        _check_messages(value, key, where)
        if not any(m["role"] == "assistant" and m["content"].strip() for m in value):
            raise DataFormatError(f"{_where(where)}{key!r} has no non-empty assistant message")
    elif not isinstance(value, str):
        raise DataFormatError(f"{_where(where)}{key!r} must be a string, like the prompt")
    elif not value.strip():
        raise DataFormatError(f"{_where(where)}{key!r} is empty: there is nothing to train on")


def detect_format(example, where=""):
    """The format of one example, known by its keys: "text", "prompt-completion",
    "messages", "preference" or "prompt-only" (see the module docstring); its values are
    checked too.

    Raises DataFormatError naming the missing or unexpected keys, empty answers, and
    `where` (e.g. "data.jsonl:12").
    """
    if not isinstance(example, dict):
        raise DataFormatError(f"{_where(where)}an example must be a JSON object, got "
                              f"{type(example).__name__}")
    keys = set(example)
    kind = next((k for k, need in FORMATS.items() if keys == set(need)), None)
    if kind is None:
        # The closest format: the one sharing the most keys (ties: the smaller format).
        kind = max(FORMATS, key=lambda k: (len(keys & set(FORMATS[k])), -len(FORMATS[k])))
        need = set(FORMATS[kind])
        raise DataFormatError(
            f"{_where(where)}" + _keys_message(need - keys, keys - need, f"a {kind} example")
            + " (formats: " + "; ".join(f"{k} {{{', '.join(v)}}}" for k, v in FORMATS.items())
            + ")")
    if kind == "text":
        if not isinstance(example["text"], str) or not example["text"].strip():
            raise DataFormatError(f"{_where(where)}'text' must be a non-empty string")
    elif kind == "messages":
        _check_messages(example["messages"], "messages", where)
    else:
        conversational = not isinstance(example["prompt"], str)
        if conversational:
            _check_messages(example["prompt"], "prompt", where)
        if kind == "prompt-only":
            if not conversational and not example["prompt"].strip():
                raise DataFormatError(f"{_where(where)}'prompt' is empty: there is nothing to "
                                      "respond to")
            return kind
        answers = ("completion",) if kind == "prompt-completion" else ("chosen", "rejected")
        for key in answers:
            _check_answer(example[key], key, where, conversational)
    return kind


def is_conversational(example):
    """Whether an example's texts are chat messages (laid out by the chat template)."""
    return "messages" in example or not isinstance(example.get("prompt", ""), str)


# --- tokenization --------------------------------------------------------------------------

@dataclass
class DataStats:
    """What tokenization kept and dropped; str() is one line for the log.

    kept                examples returned
    truncated           of those, examples cut to max_length (they keep a trained token)
    dropped_truncated   examples whose every trained token lay past max_length (their
                        prompt alone fills it): nothing left to learn from
    dropped_empty       examples with no trained token even before truncation
    duplicates          preference pairs whose chosen and rejected ids are equal
    boundary_mismatches examples whose prompt ids are not a prefix of prompt + completion's
                        (kept; cut at the prompt's length, as TRL does)
    """

    kept: int = 0
    truncated: int = 0
    dropped_truncated: int = 0
    dropped_empty: int = 0
    duplicates: int = 0
    boundary_mismatches: int = 0

    def __str__(self):
        return (f"kept {self.kept} examples ({self.truncated} truncated); dropped "
                f"{self.dropped_truncated} truncated to no trained token, {self.dropped_empty} "
                f"with none, {self.duplicates} with chosen == rejected; "
                f"{self.boundary_mismatches} prompt/completion boundary mismatches")


@dataclass(frozen=True, eq=False)
class SFTExample:
    """One tokenized SFT example: T ids, and which of them are trained on."""

    input_ids: np.ndarray  # (T,) int64
    completion_mask: np.ndarray  # (T,) bool: True where the token is a label


@dataclass(frozen=True, eq=False)
class PreferenceExample:
    """One tokenized preference pair: the shared prompt and the two completions (their ids
    only, EOS or end-of-turn included)."""

    prompt_ids: np.ndarray  # (P,) int64
    chosen_ids: np.ndarray  # (C,) int64
    rejected_ids: np.ndarray  # (R,) int64


def _ids(tokenizer, text, add_special_tokens):
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)


def _chat_ids(tokenizer, messages, add_generation_prompt):
    """The ids of a conversation laid out by the chat template (which writes every special
    token itself, so none is added)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    return _ids(tokenizer, text, add_special_tokens=False), text


def _eos_id(tokenizer):
    eos = getattr(tokenizer, "eos_token", None)
    eos_id = None if eos is None else tokenizer.token_to_id(eos)
    if eos_id is None:
        raise ValueError("the tokenizer has no eos_token: SFT and DPO on plain text append it "
                         "to every answer, so that the model learns to stop")
    return eos_id


def _with_eos(ids, eos_id):
    """ids + [EOS], unless they end with it already (TRL's `add_eos`)."""
    return ids if ids and ids[-1] == eos_id else ids + [eos_id]


def encode_prompt(tokenizer, prompt):
    """A prompt's ids as TRL tokenizes it: a string with the tokenizer's template, messages
    laid out by the chat template up to the assistant's header."""
    if isinstance(prompt, str):
        return _ids(tokenizer, prompt, add_special_tokens=True)
    return _chat_ids(tokenizer, prompt, add_generation_prompt=True)[0]


def _whole_ids(tokenizer, prompt, answer):
    """prompt + answer's ids, tokenized as one text (TRL tokenizes it apart from the prompt):
    a string answer gets an EOS, a conversation ends with the template's end of turn."""
    if isinstance(prompt, str):
        return _with_eos(_ids(tokenizer, prompt + answer, add_special_tokens=True),
                         _eos_id(tokenizer))
    return _chat_ids(tokenizer, prompt + answer, add_generation_prompt=False)[0]


def completion_ids(tokenizer, prompt, answer):
    """(prompt ids, prompt + answer ids) as TRL tokenizes a prompt-completion or preference
    example: a string answer gets the EOS, a chat answer (a list of messages) the template's
    end of turn. What a reward model judging a response reads (judges.RewardModelJudge)."""
    return encode_prompt(tokenizer, prompt), _whole_ids(tokenizer, prompt, answer)


def assistant_mask(tokenizer, messages):
    """(T,) bool: True on the tokens of every assistant turn of a conversation (its content,
    its end-of-turn token and what the template writes after it), False on the system and
    user turns and on every role header.

    Found by rendering prefixes of the conversation (see the module docstring): turn i
    spans [len(ids(messages[:i] + the assistant header)), len(ids(messages[:i + 1]))).
    """
    ids, whole = _chat_ids(tokenizer, messages, add_generation_prompt=False)
    mask = np.zeros(len(ids), dtype=bool)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start_ids, start_text = _chat_ids(tokenizer, messages[:i], add_generation_prompt=True)
        end_ids, end_text = _chat_ids(tokenizer, messages[:i + 1], add_generation_prompt=False)
        if not (whole.startswith(start_text) and whole.startswith(end_text)):
            raise DataFormatError(
                f"the chat template does not render the first {i} messages as the start of the "
                "whole conversation (it lays out a prefix differently, e.g. a default system "
                "turn only when the first message is not the assistant's), so the assistant "
                "turns cannot be found for assistant_only_loss")
        mask[len(start_ids):len(end_ids)] = True
    return mask


def _truncate(ids, mask, max_length, stats):
    """Keep the first max_length tokens (TRL's keep_start); None when no trained token is
    left."""
    if not mask.any():
        stats.dropped_empty += 1
        return None
    if max_length is not None and len(ids) > max_length:
        ids, mask = ids[:max_length], mask[:max_length]
        if not mask.any():
            stats.dropped_truncated += 1
            return None
        stats.truncated += 1
    return SFTExample(ids, mask)


def _check_max_length(max_length):
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(
            max_length, int) or max_length < 2):
        raise ValueError(f"max_length must be an integer >= 2 or None, got {max_length!r}")


def _warn_mismatches(stats, n):
    if stats.boundary_mismatches:
        warnings.warn(f"{stats.boundary_mismatches} of {n} examples: the prompt's ids are not a "
                      "prefix of prompt + completion's (a token merged across the boundary); "
                      "the completion starts at the prompt's length, as in TRL", stacklevel=3)


def tokenize_sft(examples, tokenizer, max_length=None, assistant_only_loss=False):
    """(list of SFTExample, DataStats): SFT examples tokenized as TRL's SFTTrainer does.

    examples             dicts in the text, prompt-completion or messages format
    tokenizer            an npplm tokenizer; conversational examples need its chat_template
    max_length           keep the first max_length tokens (None: all); examples left with no
                         trained token are dropped (counted in the stats)
    assistant_only_loss  train on the assistant turns only (conversational examples)

    completion_mask is True on: every token of a text example (its EOS included); the
    completion of a prompt-completion example (after the prompt, EOS or end-of-turn
    included); every token of a messages example, or only its assistant turns with
    assistant_only_loss. See the module docstring for the rules and TRL's code they follow.
    """
    _check_max_length(max_length)
    out, stats = [], DataStats()
    for i, example in enumerate(examples):
        where = f"example {i}"
        kind = detect_format(example, where)
        if kind not in SFT_FORMATS:
            raise DataFormatError(f"{where}: a {kind} example; SFT takes "
                                  f"{', '.join(SFT_FORMATS)} examples")
        if assistant_only_loss and not is_conversational(example):
            raise DataFormatError(f"{where}: assistant_only_loss needs conversational examples "
                                  "(messages), but this one is plain text")
        if kind == "text":
            ids = _with_eos(_ids(tokenizer, example["text"], add_special_tokens=True),
                            _eos_id(tokenizer))
            mask = np.ones(len(ids), dtype=bool)
        elif kind == "messages":
            ids, _ = _chat_ids(tokenizer, example["messages"], add_generation_prompt=False)
            mask = np.ones(len(ids), dtype=bool)
            if assistant_only_loss:
                if not any(m["role"] == "assistant" for m in example["messages"]):
                    raise DataFormatError(f"{where}: assistant_only_loss, but the conversation "
                                          "has no assistant turn")
                mask = assistant_mask(tokenizer, example["messages"])
        else:
            prompt_ids = encode_prompt(tokenizer, example["prompt"])
            ids = _whole_ids(tokenizer, example["prompt"], example["completion"])
            stats.boundary_mismatches += ids[:len(prompt_ids)] != prompt_ids
            mask = np.arange(len(ids)) >= len(prompt_ids)
            if assistant_only_loss:  # TRL: both masks apply
                mask &= assistant_mask(tokenizer, example["prompt"] + example["completion"])
        kept = _truncate(np.asarray(ids, dtype=np.int64), mask, max_length, stats)
        if kept is not None:
            out.append(kept)
    stats.kept = len(out)
    _warn_mismatches(stats, len(examples))
    return out, stats


def tokenize_preference(examples, tokenizer, max_length=None, overflow="truncate"):
    """(list of PreferenceExample, DataStats): preference pairs tokenized as TRL's
    DPOTrainer does (module docstring); pairs whose chosen and rejected ids are equal carry
    no preference and are skipped (counted as duplicates).

    max_length bounds prompt + completion, per sequence. overflow says what happens past it:
      "truncate"  TRL's DPO (truncation_mode="keep_start", DataCollatorForPreference): the
                  prompt is kept whole and each completion cut to max_length - P; a pair
                  whose prompt alone fills max_length is dropped (DPOTrainer filters
                  len(prompt_ids) < max_length), and so is one whose two cut completions
                  became equal (no preference left)
      "drop"      TRL's RewardTrainer: a pair with either sequence longer than max_length is
                  dropped, since the reward is read at the last token, which must be the
                  completion's EOS
    """
    _check_max_length(max_length)
    if overflow not in ("truncate", "drop"):
        raise ValueError(f"overflow must be 'truncate' or 'drop', got {overflow!r}")
    out, stats = [], DataStats()
    for i, example in enumerate(examples):
        where = f"example {i}"
        kind = detect_format(example, where)
        if kind != "preference":
            raise DataFormatError(f"{where}: a {kind} example; preference training takes "
                                  "{prompt, chosen, rejected} examples")
        prompt_ids = encode_prompt(tokenizer, example["prompt"])
        P = len(prompt_ids)
        chosen = _whole_ids(tokenizer, example["prompt"], example["chosen"])
        rejected = _whole_ids(tokenizer, example["prompt"], example["rejected"])
        stats.boundary_mismatches += chosen[:P] != prompt_ids or rejected[:P] != prompt_ids
        chosen, rejected = chosen[P:], rejected[P:]
        if not chosen or not rejected:
            stats.dropped_empty += 1
            continue
        if chosen == rejected:
            stats.duplicates += 1
            continue
        if max_length is not None and P + max(len(chosen), len(rejected)) > max_length:
            if overflow == "drop" or P >= max_length:
                stats.dropped_truncated += 1
                continue
            chosen, rejected = chosen[:max_length - P], rejected[:max_length - P]
            if chosen == rejected:
                stats.dropped_truncated += 1
                continue
            stats.truncated += 1
        out.append(PreferenceExample(*(np.asarray(x, dtype=np.int64)
                                       for x in (prompt_ids, chosen, rejected))))
    stats.kept = len(out)
    _warn_mismatches(stats, len(examples))
    return out, stats


# --- collators -----------------------------------------------------------------------------

def _check_pad_id(pad_id):
    if isinstance(pad_id, bool) or not isinstance(pad_id, int | np.integer) or pad_id < 0:
        raise ValueError(f"pad_id must be a token id (an integer >= 0), got {pad_id!r}")
    return int(pad_id)


def _attention_mask(rows, T):
    lengths = np.array([len(r) for r in rows])  # (B,)
    return np.arange(T)[None, :] < lengths[:, None]  # (B, T) bool: True on tokens


class SFTCollator:
    """SFT batches of SFTExample: the causal-LM batch with only the completion as labels.

    collator(examples, rng) -> dict of int64 (B, T) arrays, right-padded with pad_id:
        input_ids       the tokens
        attention_mask  1 on tokens, 0 on padding
        labels          input_ids where completion_mask, else -100 (prompt, padding)

    Padding is known by position, so with pad_id == EOS id (SmolLM2, GPT-2) the padding is
    never a label and a completion's own EOS always is. `rng` is unused (no randomness).
    """

    # The model scores labels[:, 1:] against the logits before them (npplm's causal LMs
    # shift inside), so the trainer weighs micro-batches by those: the completion tokens.
    shifts_labels = True

    def __init__(self, pad_id):
        self.pad_id = _check_pad_id(pad_id)

    def __call__(self, examples, rng=None):
        if len(examples) == 0:
            raise ValueError("cannot collate an empty batch (0 examples)")
        rows = [np.asarray(e.input_ids, dtype=np.int64) for e in examples]
        input_ids = pad_rows(rows, self.pad_id)  # (B, T)
        trained = np.zeros(input_ids.shape, dtype=bool)  # (B, T); False on padding
        for b, e in enumerate(examples):
            if len(e.completion_mask) != len(rows[b]):
                raise ValueError(f"example {b}: completion_mask has {len(e.completion_mask)} "
                                 f"entries for {len(rows[b])} tokens")
            trained[b, :len(rows[b])] = e.completion_mask
        return {"input_ids": input_ids,
                "attention_mask": _attention_mask(rows, input_ids.shape[1]).astype(np.int64),
                "labels": np.where(trained, input_ids, LABEL_PAD_ID)}  # (B, T)


class PreferenceCollator:
    """Preference batches of PreferenceExample (DPO, reward models): one (2B, T) batch, the
    B prompt + chosen rows first, then the B prompt + rejected rows in the same order (TRL's
    DataCollatorForPreference), so one forward pass scores both.

    collator(examples, rng) -> dict of int64 (2B, T) arrays, right-padded with pad_id:
        input_ids        prompt + completion
        attention_mask   1 on tokens, 0 on padding
        completion_mask  1 on the completion's tokens (EOS included), 0 on prompt and padding

    A row's completion length is completion_mask.sum(-1); its last token is at
    attention_mask.sum(-1) - 1 (where a reward model reads its score).
    """

    def __init__(self, pad_id):
        self.pad_id = _check_pad_id(pad_id)

    def __call__(self, examples, rng=None):
        if len(examples) == 0:
            raise ValueError("cannot collate an empty batch (0 examples)")
        rows, completion = [], []
        for side in ("chosen_ids", "rejected_ids"):
            for e in examples:
                answer = getattr(e, side)
                rows.append(np.concatenate([e.prompt_ids, answer]).astype(np.int64))
                completion.append(np.arange(len(rows[-1])) >= len(e.prompt_ids))
        input_ids = pad_rows(rows, self.pad_id)  # (2B, T)
        T = input_ids.shape[1]
        return {"input_ids": input_ids,
                "attention_mask": _attention_mask(rows, T).astype(np.int64),  # (2B, T)
                "completion_mask": pad_rows(completion, 0)}  # (2B, T)
