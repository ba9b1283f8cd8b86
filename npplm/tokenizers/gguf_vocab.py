"""Our tokenizers as GGUF metadata: the `tokenizer.ggml.*` keys llama.cpp reads a vocabulary from.

The inverse of loading._from_gguf. A GGUF file carries its tokenizer as metadata entries
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md, "Tokenizer"), and llama.cpp
knows a handful of tokenizer families by name. Two of them are ours:

  model "gpt2"   byte-level BPE (GPT-2, SmolLM2, LLaMA-3, Qwen2): ByteLevelBPETokenizer.
      tokens       the vocabulary in id order, byte-level spelled ("Ġthe"); an added token
                   as its text ("<|im_start|>")
      token_type   1 normal, 3 control (a special added token: llama.cpp's converter marks
                   them so, and never lets text spell one), 4 user-defined (an added token
                   that is not special), 5 unused (an id no token has: padding up to the
                   model's vocabulary, "[PAD<id>]" as the converter names them)
      merges       "a b" strings in rank order
      normalizer   none in GGUF: a tokenizer with one is refused, but for Qwen2's NFC,
                   which is dropped as llama.cpp's converter drops it (loading.py: a text
                   not in NFC may then get other ids)
      pre          llama.cpp's name for the pre-tokenization regexes ("gpt-2", "llama-bpe",
                   "smollm", ...): found by building each pre-tokenizer loading.py knows
                   by name and comparing it, step by step, with ours. A tokenizer whose
                   steps are none of them cannot be written (ValueError naming them):
                   llama.cpp would cut its text into other words.

  model "llama"  SentencePiece-style BPE with byte fallback (LLaMA-1/2, `npplm train
                 --family llama`): a pipeline Tokenizer whose normalizer is LLaMA's
                 (prepend "▁", spaces to "▁") and whose model is a BPE with byte_fallback.
      tokens       the vocabulary in id order ("▁the", "<0x0A>")
      scores       llama.cpp's SentencePiece tokenizer merges, among the adjacent pairs
                   whose concatenation is a token, the one whose token has the highest
                   score. BPE merges the pair of lowest rank. So a token made by merge r
                   (its first, should a pair be listed twice) scores -(r + 1), which orders
                   the merges as the ranks do; single characters score 0 (no pair makes
                   them); control, unknown and byte tokens score -1e9, the last any pair
                   could make (no merge makes them)
      token_type   as above, and 2 unknown (the unk token), 6 byte ("<0x00>" .. "<0xFF>")
      merges       also written: llama.cpp ignores them for this model, a reader that
                   takes them rebuilds our BPE exactly
      add_space_prefix  true: LLaMA's normalizer puts "▁" before the text

Both: bos_token_id, eos_token_id, unknown_token_id, padding_token_id where the tokenizer
names those roles; add_bos_token / add_eos_token from its one-text template ("<s> $A" adds
a bos token; a template with any other special token cannot be written, ValueError); and
tokenizer.chat_template, the Jinja template, when the tokenizer has one.
"""

import re

from npplm.tokenizers.bpe import BPE
from npplm.tokenizers.byte_level_bpe import ByteLevelBPETokenizer
from npplm.tokenizers.normalizers import UnicodeForm
from npplm.tokenizers.pipeline import Tokenizer, sentencepiece_steps

# llama.cpp's token types (gguf.TokenType; llama_token_type in llama.cpp's llama-vocab.h).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The normalizer of LLaMA-1/2's tokenizer.json, and of train_sentencepiece_bpe.
LLAMA_NORMALIZER = sentencepiece_steps()[0]
LAST_SCORE = -1e9  # the score of a token that no merge makes (see the module docstring)
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


def to_gguf(tokenizer, vocab_size=None):
    """{GGUF metadata key: value} of a tokenizer: every `tokenizer.ggml.*` entry and
    `tokenizer.chat_template` when it has one (the module docstring lists them).

    vocab_size: the model's vocabulary V, when larger than the tokenizer's (embeddings
    are often padded: Qwen2's 151936 rows for 151665 tokens); llama.cpp wants one token
    per row, so ids past the tokenizer's are written as unused "[PAD<id>]" tokens.
    Raises ValueError naming what cannot be expressed: a tokenizer family other than
    byte-level BPE or LLaMA's SentencePiece BPE, an unknown pre-tokenizer, a template
    adding other than a bos token before the text and an eos token after it, or a
    tokenizer with more ids than the model has rows.
    """
    n = tokenizer.vocab_size if vocab_size is None else int(vocab_size)
    if n < tokenizer.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids, more than the "
                         f"model's {n} embedding rows")
    if isinstance(tokenizer, ByteLevelBPETokenizer):
        normalizer = tuple(getattr(tokenizer, "normalizer", ()))
        if normalizer not in ((), (UnicodeForm("NFC"),)):
            raise ValueError(f"normalizer {normalizer!r} cannot be written to GGUF, which "
                             "carries no normalizer (NFC alone is dropped, as llama.cpp's "
                             "converter drops Qwen2's)")
        meta = {"tokenizer.ggml.model": "gpt2",
                "tokenizer.ggml.pre": pre_tokenizer_name(tokenizer.pre_tokenizer)}
        meta.update(_vocabulary(tokenizer, n, scores=False))
    elif _is_sentencepiece_bpe(tokenizer):
        meta = {"tokenizer.ggml.model": "llama"}
        meta.update(_vocabulary(tokenizer, n, scores=True))
        meta["tokenizer.ggml.add_space_prefix"] = True
    else:
        raise ValueError(f"a {_describe(tokenizer)} cannot be written to GGUF: npplm writes "
                         "byte-level BPE (model 'gpt2') and LLaMA's SentencePiece BPE with "
                         "byte fallback (model 'llama')")
    meta.update(_special_ids(tokenizer))
    if tokenizer.chat_template is not None:
        meta["tokenizer.chat_template"] = tokenizer.chat_template
    return meta


def pre_tokenizer_name(steps):
    """llama.cpp's name for byte-level pre-tokenizer `steps` (the loader's table read
    backwards), or ValueError naming the steps and the names known."""
    from npplm.tokenizers.loading import _GGUF_PRE_TOKENIZERS  # the one table of names

    steps = tuple(steps)
    for name, build in _GGUF_PRE_TOKENIZERS.items():
        if tuple(build()) == steps:
            return name
    raise ValueError(f"pre-tokenizer {steps!r} has no GGUF name: llama.cpp knows the "
                     f"byte-level pre-tokenizers {', '.join(sorted(_GGUF_PRE_TOKENIZERS))} "
                     "(npplm.tokenizers.loading), and this one is none of them")


# --- the pieces -----------------------------------------------------------------------------


def _describe(tokenizer):
    model = getattr(tokenizer, "model", None)
    inside = f" ({type(model).__name__} model)" if model is not None else ""
    return f"{type(tokenizer).__name__}{inside}"


def _is_sentencepiece_bpe(tokenizer):
    """Whether a tokenizer is LLaMA-1/2's: LLaMA's normalizer, no pre-tokenizer, a plain
    BPE with byte fallback."""
    if not isinstance(tokenizer, Tokenizer) or not isinstance(tokenizer.model, BPE):
        return False
    model = tokenizer.model
    return (tokenizer.normalizer == LLAMA_NORMALIZER and tokenizer.pre_tokenizer == ()
            and model.byte_fallback and model.continuing_subword_prefix is None
            and model.end_of_word_suffix is None and not model.ignore_merges)


def _vocabulary(tokenizer, n, scores):
    """tokens, token_type, merges (and scores) for ids 0..n-1."""
    added = {t.id: t for t in tokenizer.added_tokens}
    unk = getattr(tokenizer.model, "unk_token", None)
    merges = tokenizer.model.merges
    made_by = {}  # token -> rank of the first merge making it
    for rank, (a, b) in enumerate(merges):
        made_by.setdefault(a + b, rank)
    tokens, types, token_scores = [], [], []
    for i in range(n):
        try:
            token = tokenizer.id_to_token(i)
        except IndexError:  # a hole in the ids, or a row past the tokenizer's
            token = None
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            token_scores.append(LAST_SCORE)
            continue
        if scores and token == unk:  # SentencePiece's unknown piece, an added token too
            kind = UNKNOWN
        elif i in added:
            kind = CONTROL if added[i].special else USER_DEFINED
        elif scores and _BYTE_TOKEN.fullmatch(token):
            kind = BYTE
        else:
            kind = NORMAL
        tokens.append(token)
        types.append(kind)
        if token in made_by and kind in (NORMAL, USER_DEFINED):
            token_scores.append(-float(made_by[token] + 1))
        else:
            token_scores.append(0.0 if kind in (NORMAL, USER_DEFINED) else LAST_SCORE)
    meta = {"tokenizer.ggml.tokens": tokens}
    if scores:
        meta["tokenizer.ggml.scores"] = token_scores
    meta["tokenizer.ggml.token_type"] = types
    if any(" " in a or " " in b for a, b in merges):  # "a b" would not split back
        raise ValueError("a merge holds a space; GGUF's 'a b' merge strings cannot hold it")
    meta["tokenizer.ggml.merges"] = [f"{a} {b}" for a, b in merges]
    return meta


def _template_ends(tokenizer):
    """(token before the text or None, token after it or None) of the one-text template."""
    names = [name for name, _ in tokenizer.single]
    at = names.index("$A") if "$A" in names else 0
    before, after = names[:at], names[at + 1:]
    if names.count("$A") != 1 or len(before) > 1 or len(after) > 1:
        raise ValueError(f"template {' '.join(names)!r}: GGUF says only whether a bos "
                         "token goes before the text and an eos token after it")
    return (before[0] if before else None), (after[0] if after else None)


def _special_ids(tokenizer):
    """bos, eos, unknown and padding ids, and add_bos_token / add_eos_token."""
    before, after = _template_ends(tokenizer)
    roles = {"bos": tokenizer.bos_token, "eos": tokenizer.eos_token,
             "unknown": tokenizer.unk_token, "padding": tokenizer.pad_token}
    for end, role in ((before, "bos"), (after, "eos")):
        if end is None:
            continue
        if roles[role] is None:
            roles[role] = end  # the template names it: that is the role it plays
        elif roles[role] != end:
            raise ValueError(f"the template adds {end!r} where GGUF can only add the "
                             f"{role} token, which is {roles[role]!r}")
    meta = {f"tokenizer.ggml.{role}_token_id": tokenizer.token_to_id(token)
            for role, token in roles.items() if token is not None}
    meta["tokenizer.ggml.add_bos_token"] = before is not None
    meta["tokenizer.ggml.add_eos_token"] = after is not None
    return meta
