"""Load a tokenizer: WordPiece, byte-level BPE, character-level and SentencePiece BPE, or
Unigram, from a tokenizer.json, a BERT vocab.txt or a GGUF file.

    load_tokenizer("path/to/model")                 a directory: its tokenizer.json, else
                                                    its vocab.txt
    load_tokenizer("path/to/tokenizer.json")        the `tokenizers` format
    load_tokenizer("path/to/vocab.txt")             one token per line, the id = line number
    load_tokenizer("path/to/model.gguf")            the tokenizer.ggml.* metadata: byte-level
                                                    BPE ("gpt2") or LLaMA-1/2's SentencePiece
                                                    BPE ("llama"), see _from_gguf

A tokenizer.json names each stage with a "type". We read three families and refuse the
other types with a TokenizerFormatError naming the file, the stage and the value, rather
than tokenize differently:
  - WordPiece (BERT): model WordPiece, normalizer BertNormalizer, pre_tokenizer
    BertPreTokenizer, post_processor TemplateProcessing or BertProcessing, decoder WordPiece.
  - byte-level BPE (GPT-2, RoBERTa, LLaMA-3, SmolLM2, Qwen2): model BPE with a
    pre_tokenizer ByteLevel, or a Sequence of Split, Digits and a last ByteLevel;
    normalizer null or those of normalizers.py, alone or in a Sequence (Qwen2: NFC);
    post_processor ByteLevel, RobertaProcessing, TemplateProcessing or a Sequence of them;
    decoder ByteLevel.
  - pipelines (pipeline.Tokenizer): model Unigram (T5, ALBERT) or any other BPE (GPT-1,
    LLaMA-1/2 with byte_fallback), with the normalizers, pre-tokenizers and decoders of
    normalizers.py, pre_tokenizers.py and decoders.py, alone or in a Sequence, among them
    SentencePiece's compiled "Precompiled" normalizer of real T5 and ALBERT files
    (precompiled.py). Not read: BPE dropout.

A vocab.txt carries no settings; they come from tokenizer_config.json and
special_tokens_map.json beside it when present (transformers' files: do_lower_case,
strip_accents, tokenize_chinese_chars, the special tokens, model_max_length,
clean_up_tokenization_spaces), else BERT's defaults: uncased, [UNK] [CLS] [SEP] [PAD]
[MASK]. `never_split` is not read.

The roles of the special tokens (tok.bos_token, tok.eos_token ..., base.SPECIAL_TOKEN_ROLES)
are those the same two files name, for every format but GGUF, whose metadata names its bos,
eos, unknown and padding tokens; a role they do not name is None (WordPiece: BERT's where
the vocabulary has them). A role naming a token outside the vocabulary is not read:
transformers would add that token to the vocabulary, npplm does not.

model_max_length (the length truncation=True cuts to) is tokenizer_config.json's when
present, as in transformers, else the max_length of tokenizer.json's "truncation", else 512
(1024 for byte-level BPE). tokenizer.json's "padding" is not read: padding is chosen per
call. Numbers are read as tokenizers reads them (unigram.json_float).
"""

import json
import pathlib

import regex

import npplm.tokenizers.byte_level_bpe as byte_level_bpe
import npplm.tokenizers.decoders as decoders
import npplm.tokenizers.normalizers as normalizers
import npplm.tokenizers.pre_tokenizers as pre_tokenizers
from npplm.tokenizers.added_tokens import AddedToken
from npplm.tokenizers.base import SPECIAL_TOKEN_ROLES
from npplm.tokenizers.bpe import BPE
from npplm.tokenizers.byte_level_bpe import ByteLevel, ByteLevelBPETokenizer, Digits, Split
from npplm.tokenizers.pipeline import Tokenizer, sentencepiece_steps
from npplm.tokenizers.unigram import Unigram, json_float
from npplm.tokenizers.wordpiece import BERT_PAIR, BERT_SINGLE, BasicTokenizer, WordPieceTokenizer


class TokenizerFormatError(ValueError):
    """A tokenizer file is malformed or describes a tokenizer npplm does not implement."""


def load_tokenizer(path):
    """A WordPieceTokenizer, ByteLevelBPETokenizer or pipeline Tokenizer from a directory, a
    tokenizer.json, a vocab.txt or a GGUF file."""
    path = pathlib.Path(path)
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (path / name).is_file():
                return load_tokenizer(path / name)
        raise FileNotFoundError(f"{path} holds neither tokenizer.json nor vocab.txt")
    if not path.is_file():
        raise FileNotFoundError(f"no such tokenizer file: {path}")
    if path.suffix == ".gguf":
        return _from_gguf(path)
    config = _transformers_config(path.parent)
    if path.suffix == ".json":
        tokenizer = _from_tokenizer_json(path, config)
    else:
        tokenizer = _from_vocab_file(path, config)
    tokenizer.chat_template = config.get("chat_template")  # transformers keeps it there
    return tokenizer


# Qwen2's Split regex (its tokenizer.json's, and transformers' Qwen2Converter's): LLaMA-3's
# with each digit a word of its own (\p{N}, not \p{N}{1,3}). llama.cpp's
# LLAMA_VOCAB_PRE_TYPE_QWEN2 spells the contractions '[sS]|'[tT]|... in place of (?i:...).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# llama.cpp's names for the pre-tokenizers of GGUF files with a "gpt2" (byte-level BPE) model.
# A GGUF file carries no normalizer: Qwen2's NFC is lost, and llama.cpp and transformers
# (AutoTokenizer with gguf_file) read "qwen2" files without it, as we do, so a text not in
# NFC ("e\u0301") may get other ids than from Qwen2's tokenizer.json.
_GGUF_PRE_TOKENIZERS = {
    "gpt-2": lambda: byte_level_bpe.gpt2_pre_tokenizer(),
    "llama-bpe": lambda: byte_level_bpe.llama3_pre_tokenizer(),
    "smollm": lambda: (byte_level_bpe.Digits(individual_digits=True), byte_level_bpe.ByteLevel()),
    "qwen2": lambda: (Split(QWEN2_PATTERN), ByteLevel(use_regex=False)),
}
# The pre-tokenizers whose BPE takes a word found whole in the vocabulary as one token
# (ignore_merges). LLaMA-3's tokenizer.json says so, and llama.cpp sets it for "llama-bpe":
# LLaMA-3's vocabulary, converted from tiktoken, holds words its merges do not reach in
# rank order. transformers' GGUF reader leaves it out, so on those words its ids differ
# from LLaMA-3's tokenizer.json and from llama.cpp; ours are theirs. (A vocabulary that BPE
# training learned, merges and words in one order, reaches every word it holds: there it
# changes nothing.)
_GGUF_IGNORE_MERGES = {"llama-bpe"}
# tokenizer.ggml.token_type values (llama.cpp's llama_token_type; gguf_vocab.py writes them)
_GGUF_UNKNOWN, _GGUF_CONTROL, _GGUF_USER_DEFINED = 2, 3, 4


def _from_gguf(path):
    """A tokenizer from a GGUF file's tokenizer.ggml.* metadata (npplm/tokenizers/
    gguf_vocab.py writes them; its docstring lists the keys).

    tokenizer.ggml.model "gpt2": a ByteLevelBPETokenizer, its pre-tokenizer named by
    tokenizer.ggml.pre (_GGUF_PRE_TOKENIZERS). "llama": LLaMA-1/2's SentencePiece BPE with
    byte fallback, the pipeline train_sentencepiece_bpe builds (_sentencepiece_from_gguf).

    Both: the tokens typed unknown (2), control (3) or user-defined (4) are added tokens,
    special but the last, matched whole in the text as llama.cpp matches those three
    types (SentencePiece's "<unk>" is a special added token of LLaMA-2's tokenizer.json
    too; a byte-level vocabulary has none); the bos, eos, unknown and padding ids name
    those roles; add_bos_token / add_eos_token give the template (_gguf_templates);
    tokenizer.chat_template the chat template.
    """
    from npplm.io.gguf import tokenizer_metadata

    meta = tokenizer_metadata(path)
    model = meta.get("tokenizer.ggml.model")
    if model == "gpt2":
        tokenizer = _byte_level_from_gguf(path, meta)
    elif model == "llama":
        tokenizer = _sentencepiece_from_gguf(path, meta)
    else:
        raise TokenizerFormatError(f"{path}: GGUF tokenizer model {model!r} is not supported "
                                   "(supported: 'gpt2', byte-level BPE; 'llama', "
                                   "SentencePiece BPE with byte fallback)")
    tokenizer.chat_template = meta.get("tokenizer.chat_template")
    return tokenizer


def _gguf_vocabulary(path, meta):
    """(tokens in id order, token types, AddedTokens, {role: token}) of a GGUF tokenizer;
    the roles are those of the bos, eos, unknown and padding ids the file names."""
    if "tokenizer.ggml.tokens" not in meta:
        raise TokenizerFormatError(f"{path}: the GGUF file has no tokenizer.ggml.tokens")
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    added = [AddedToken(t, i, special=k != _GGUF_USER_DEFINED) for i, (t, k) in
             enumerate(zip(tokens, types))
             if k in (_GGUF_UNKNOWN, _GGUF_CONTROL, _GGUF_USER_DEFINED)]
    named = {}
    for role, name in (("pad_token", "padding"), ("bos_token", "bos"), ("eos_token", "eos"),
                       ("unk_token", "unknown")):
        i = meta.get(f"tokenizer.ggml.{name}_token_id")
        if i is None:
            continue
        if not 0 <= i < len(tokens):
            raise TokenizerFormatError(f"{path}: tokenizer.ggml.{name}_token_id = {i} is not "
                                       f"one of the {len(tokens)} token ids")
        named[role] = tokens[i]
    return tokens, types, added, named


def _gguf_templates(meta, named, add_bos):
    """(single, pair) templates from tokenizer.ggml.add_bos_token / add_eos_token.

    add_bos: what a file without add_bos_token gets. The pair repeats the bos token
    before the second text, both of type id 1, as LLaMA's tokenizer.json and
    transformers' (TokenizersBackend.update_post_processor) do:
    "<s> $A </s> <s>:1 $B:1 </s>:1". A flag naming a role the file gives no id is dropped,
    as transformers drops it.
    """
    bos = named.get("bos_token") if meta.get("tokenizer.ggml.add_bos_token", add_bos) else None
    eos = named.get("eos_token") if meta.get("tokenizer.ggml.add_eos_token", False) else None
    if bos is None and eos is None:
        return None, None  # the tokenizer's defaults: $A, and $A $B:1

    def around(text, type_id):
        return ([(bos, type_id)] if bos else []) + [(text, type_id)] + (
            [(eos, type_id)] if eos else [])

    return around("$A", 0), around("$A", 0) + around("$B", 1)


def _byte_level_from_gguf(path, meta):
    """A ByteLevelBPETokenizer from a "gpt2" GGUF file. A file without add_bos_token adds
    no bos token, as npplm read every "gpt2" file before it read the flag (llama.cpp's
    converter writes it: SmolLM2's says false)."""
    pre = meta.get("tokenizer.ggml.pre", "gpt-2")
    if pre not in _GGUF_PRE_TOKENIZERS:
        raise TokenizerFormatError(f"{path}: GGUF pre-tokenizer {pre!r} is not supported "
                                   f"(supported: {', '.join(sorted(_GGUF_PRE_TOKENIZERS))})")
    tokens, _, added, named = _gguf_vocabulary(path, meta)
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    single, pair = _gguf_templates(meta, named, add_bos=False)
    return byte_level_bpe.ByteLevelBPETokenizer(
        {t: i for i, t in enumerate(tokens)}, merges, pre_tokenizer=_GGUF_PRE_TOKENIZERS[pre](),
        added_tokens=added, single=single, pair=pair, pad_token=named.pop("pad_token", None),
        ignore_merges=pre in _GGUF_IGNORE_MERGES, roles=named)


def _sentencepiece_from_gguf(path, meta):
    """LLaMA-1/2's tokenizer from a "llama" GGUF file: the pipeline train_sentencepiece_bpe
    builds (pipeline.py), its stages written out here as that recipe composes them.

        normalizer   Prepend("▁"), Replace(" ", "▁")   (tokenizer.ggml.add_space_prefix,
                     default true; false: Replace only, as transformers reads the flag)
        model        BPE(vocab, merges, unk_token, fuse_unk=True, byte_fallback=True)
        decoder      Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0) (no Strip
                     without the prefix space)
        template     "<s> $A" unless add_bos_token is false (llama.cpp and transformers
                     add the bos token to a SentencePiece vocabulary that does not say)

    The unknown token is the one typed unknown (2), else the unknown_token_id's. The merges
    are tokenizer.ggml.merges when the file has them (npplm writes them); llama.cpp's
    converter writes only scores, and those give the merges (_merges_from_scores).
    """
    tokens, types, added, named = _gguf_vocabulary(path, meta)
    vocab = {t: i for i, t in enumerate(tokens)}
    if "tokenizer.ggml.merges" in meta:
        merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    elif "tokenizer.ggml.scores" in meta:
        merges = _merges_from_scores(tokens, meta["tokenizer.ggml.scores"])
    else:
        raise TokenizerFormatError(f"{path}: a 'llama' GGUF tokenizer needs "
                                   "tokenizer.ggml.merges or tokenizer.ggml.scores to "
                                   "order its merges, and this file has neither")
    unk = next((t for t, k in zip(tokens, types) if k == _GGUF_UNKNOWN), named.get("unk_token"))
    normalizer, decoder = sentencepiece_steps(meta.get("tokenizer.ggml.add_space_prefix", True))
    try:
        model = BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    except ValueError as e:  # a merge whose pieces are not tokens
        raise TokenizerFormatError(f"{path}: tokenizer.ggml.merges: {e}") from None
    single, pair = _gguf_templates(meta, named, add_bos=True)
    return Tokenizer(model, normalizer=normalizer, decoder=decoder, added_tokens=added,
                     single=single, pair=pair, pad_token=named.pop("pad_token", None),
                     roles=named)


def _merges_from_scores(tokens, scores):
    """BPE merges in rank order from SentencePiece scores, as transformers derives them
    (tokenization_utils_base.generate_merges) for a GGUF file without merges.

    llama.cpp's SentencePiece tokenizer merges, among the adjacent pairs whose
    concatenation is a token, the one whose token has the highest score, the leftmost of
    equals. So every split of a token into two tokens is a merge, ranked by the token's
    score, highest first; among equal scores the longer left piece, then the longer right
    piece, then the token's id and the pieces' ids come first. (BPE breaks a tie of scores
    by rank where llama.cpp takes the leftmost pair: "a" "aa" "a" becomes "aaa" "a" there
    and "a" "aaa" here. A vocabulary whose tokens have distinct scores, as LLaMA's, ties
    only on two splits of one token.)
    """
    ids = {t: i for i, t in enumerate(tokens)}
    found = []  # (score, left, right) in token id order, a token's splits by piece ids
    for token, score in zip(tokens, scores):
        splits = [(token[:k], token[k:]) for k in range(1, len(token))
                  if token[:k] in ids and token[k:] in ids]
        splits.sort(key=lambda p: (ids[p[0]], ids[p[1]]))
        found.extend((score, a, b) for a, b in splits)
    found.sort(key=lambda m: (-m[0], -len(m[1]), -len(m[2])))  # stable: ties keep the order
    return [(a, b) for _, a, b in found]


def _read_json(path):
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_float=json_float)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerFormatError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise TokenizerFormatError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def _transformers_config(directory):
    """special_tokens_map.json updated by tokenizer_config.json, where they exist."""
    config = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (directory / name).is_file():
            config.update(_read_json(directory / name))
    for key, value in config.items():  # a special token may be stored as an AddedToken dict
        if key.endswith("_token") and isinstance(value, dict) and "content" in value:
            config[key] = value["content"]
    return config


def _roles(config, vocab, added=()):
    """{role: token} of the roles but padding (its own argument) that config names with a
    token of the vocabulary (token -> id) or of the added tokens."""
    known = {*vocab, *(t.content for t in added)}
    named = {role: config.get(role) for role in SPECIAL_TOKEN_ROLES if role != "pad_token"}
    return {role: token for role, token in named.items()
            if isinstance(token, str) and token in known}


def _kind(path, data, stage):
    """The "type" of a stage of a tokenizer.json (None when the stage is null)."""
    value = data.get(stage)
    if value is None:
        return None
    if not isinstance(value, dict) or "type" not in value:
        raise TokenizerFormatError(f"{path}: {stage} is not an object with a 'type'")
    return value["type"]


def _unsupported(path, stage, kind, supported, family="BERT's WordPiece tokenizers"):
    return TokenizerFormatError(
        f"{path}: {stage} type {kind!r} is not supported; npplm.load_tokenizer reads "
        f"{family} ({stage}: {supported})")


def _from_tokenizer_json(path, config):
    data = _read_json(path)
    kind = _kind(path, data, "model")
    if kind not in ("WordPiece", "BPE", "Unigram"):
        raise _unsupported(path, "model", kind, "WordPiece, BPE or Unigram", "tokenizers")
    if kind == "WordPiece":
        build = _build_from_json
    elif kind == "BPE" and _has_byte_level(data):
        build = _byte_level_bpe_from_json
    else:
        build = _pipeline_from_json
    try:
        return build(path, data, config)
    except TokenizerFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise TokenizerFormatError(f"{path}: malformed tokenizer.json: "
                                   f"{type(e).__name__}: {e}") from None


def _build_from_json(path, data, config):
    model = data["model"]
    vocab = model["vocab"]
    if not isinstance(vocab, dict) or not vocab or not all(
            isinstance(i, int) and i >= 0 for i in vocab.values()):
        raise TokenizerFormatError(f"{path}: model.vocab must map tokens to ids >= 0")

    kind = _kind(path, data, "normalizer")
    if kind is None:
        basic = BasicTokenizer(lowercase=False, strip_accents=False, clean_text=False,
                               handle_chinese_chars=False)
    elif kind == "BertNormalizer":
        n = data["normalizer"]
        basic = BasicTokenizer(lowercase=n.get("lowercase", True),
                               strip_accents=n.get("strip_accents"),
                               clean_text=n.get("clean_text", True),
                               handle_chinese_chars=n.get("handle_chinese_chars", True))
    else:
        raise _unsupported(path, "normalizer", kind, "BertNormalizer or null")

    kind = _kind(path, data, "pre_tokenizer")
    if kind != "BertPreTokenizer":
        raise _unsupported(path, "pre_tokenizer", kind, "BertPreTokenizer")

    added = _added_tokens(data.get("added_tokens") or [], vocab)

    single, pair = _templates(path, data, vocab, added)

    kind = _kind(path, data, "decoder")
    if kind is None:
        decoder = None
    elif kind == "WordPiece":
        decoder = decoders.WordPiece.from_json(data["decoder"])
    else:
        raise _unsupported(path, "decoder", kind, "WordPiece or null")

    padding = data.get("padding") or {}
    truncation = data.get("truncation") or {}
    # A config naming no role but padding leaves WordPieceTokenizer's default: BERT's.
    named = any(config.get(role) for role in SPECIAL_TOKEN_ROLES if role != "pad_token")
    return WordPieceTokenizer(
        vocab, basic=basic, unk_token=model.get("unk_token", "[UNK]"),
        continuing_subword_prefix=model.get("continuing_subword_prefix", "##"),
        max_input_chars_per_word=model.get("max_input_chars_per_word", 100),
        added_tokens=added, single=single, pair=pair,
        pad_token=config.get("pad_token", padding.get("pad_token", "[PAD]")), decoder=decoder,
        model_max_length=config.get("model_max_length", truncation.get("max_length", 512)),
        roles=_roles(config, vocab, added) if named else None)


def _added_tokens(entries, vocab):
    """AddedTokens of tokenizer.json's "added_tokens", with the ids tokenizers gives them.

    tokenizers does not take the ids from the file: a token in the vocabulary gets its id
    there, a new one the next id after the vocabulary and the tokens added before it. A file
    it wrote holds those same ids.
    """
    ids = {}
    for t in entries:
        content = t["content"]
        if content not in ids and content not in vocab:
            top = max(ids.values(), default=-1)
            ids[content] = top + 1 if top >= len(vocab) else len(vocab)
        ids.setdefault(content, vocab.get(content))
    return [AddedToken(content=t["content"], id=ids[t["content"]],
                       special=t.get("special", False),
                       normalized=t.get("normalized", not t.get("special", False)),
                       single_word=t.get("single_word", False), lstrip=t.get("lstrip", False),
                       rstrip=t.get("rstrip", False)) for t in entries]


def _templates(path, data, vocab, added):
    """The (single, pair) templates of tokenizer.json's post_processor."""
    kind = _kind(path, data, "post_processor")
    post = data.get("post_processor")
    if kind is None:
        return (("$A", 0),), (("$A", 0), ("$B", 1))
    if kind == "BertProcessing":
        cls, sep = post["cls"][0], post["sep"][0]
        rename = {"[CLS]": cls, "[SEP]": sep}
        return ([(rename.get(n, n), t) for n, t in BERT_SINGLE],
                [(rename.get(n, n), t) for n, t in BERT_PAIR])
    if kind != "TemplateProcessing":
        raise _unsupported(path, "post_processor", kind,
                           "TemplateProcessing, BertProcessing or null")
    ids = {**vocab, **{t.content: t.id for t in added}}

    def items(template):
        out = []
        for item in template:
            if "Sequence" in item:
                out.append(("$" + item["Sequence"]["id"], item["Sequence"]["type_id"]))
                continue
            name = item["SpecialToken"]["id"]
            special = post["special_tokens"][name]
            if special["tokens"] != [name] or special["ids"] != [ids.get(name)]:
                raise TokenizerFormatError(
                    f"{path}: the template token {name!r} stands for {special['tokens']} = "
                    f"ids {special['ids']}; npplm supports a special token standing for "
                    "itself")
            out.append((name, item["SpecialToken"]["type_id"]))
        return out

    return items(post["single"]), items(post["pair"])


def _from_vocab_file(path, config):
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise TokenizerFormatError(f"{path} is not a UTF-8 vocabulary file: {e}") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab = {}
    for i, line in enumerate(lines):  # a repeated token keeps its last line, as in HF
        vocab[line.removesuffix("\r")] = i
    if not vocab:
        raise TokenizerFormatError(f"{path} is an empty vocabulary")
    if config.get("do_basic_tokenize", True) is False:
        raise TokenizerFormatError(f"{path.parent / 'tokenizer_config.json'}: "
                                   "do_basic_tokenize=False is not supported")
    lowercase = config.get("do_lower_case", True)
    basic = BasicTokenizer(lowercase=lowercase, strip_accents=config.get("strip_accents"),
                           handle_chinese_chars=config.get("tokenize_chinese_chars", True))
    names = {key: config.get(key, default) for key, default in (
        ("pad_token", "[PAD]"), ("unk_token", "[UNK]"), ("cls_token", "[CLS]"),
        ("sep_token", "[SEP]"), ("mask_token", "[MASK]"))}
    specials = [*names.values(), *config.get("additional_special_tokens", [])]
    added = [AddedToken(t, vocab[t]) for t in dict.fromkeys(specials) if t in vocab]
    cls, sep = names["cls_token"], names["sep_token"]
    if cls in vocab and sep in vocab:
        single = [(cls, 0), ("$A", 0), (sep, 0)]
        pair = [(cls, 0), ("$A", 0), (sep, 0), ("$B", 1), (sep, 1)]
    else:
        single, pair = [("$A", 0)], [("$A", 0), ("$B", 1)]
    return WordPieceTokenizer(
        vocab, basic=basic, unk_token=names["unk_token"], added_tokens=added, single=single,
        pair=pair, pad_token=names["pad_token"],
        decoder=decoders.WordPiece(cleanup=config.get("clean_up_tokenization_spaces", True)),
        model_max_length=config.get("model_max_length", 512),
        roles=_roles({**config, **names}, vocab))


# --- Byte-level BPE (GPT-2, RoBERTa, LLaMA-3, SmolLM2, Qwen2) -------------------------------

_BPE_FAMILY = "byte-level BPE tokenizers"


def _byte_level_bpe_from_json(path, data, config):
    """A ByteLevelBPETokenizer from a tokenizer.json whose model is "BPE"."""
    steps = _byte_level_steps(path, data)  # first: is it byte-level at all?
    model = data["model"]
    vocab = model["vocab"]
    if not isinstance(vocab, dict) or not vocab or not all(
            isinstance(i, int) and i >= 0 for i in vocab.values()):
        raise TokenizerFormatError(f"{path}: model.vocab must map tokens to ids >= 0")
    merges = _merges(path, model)
    for key, expected in (("continuing_subword_prefix", None), ("end_of_word_suffix", None),
                          ("byte_fallback", False), ("dropout", None)):
        if model.get(key, expected) not in (expected, "", 0.0):
            raise TokenizerFormatError(f"{path}: model.{key} = {model[key]!r} is not "
                                       f"supported; npplm reads {_BPE_FAMILY}")

    normalizer = _pipeline_steps(path, data, "normalizer", "normalizers", normalizers.FROM_JSON,
                                 _BPE_FAMILY)

    kind = _kind(path, data, "decoder")
    if kind != "ByteLevel":
        raise _unsupported(path, "decoder", kind, "ByteLevel", _BPE_FAMILY)

    added = _added_tokens(data.get("added_tokens") or [], vocab)
    single, pair = _bpe_templates(path, data, vocab, added)
    padding = data.get("padding") or {}
    truncation = data.get("truncation") or {}
    return ByteLevelBPETokenizer(
        vocab, merges, normalizer=normalizer, pre_tokenizer=steps, added_tokens=added,
        single=single, pair=pair,
        pad_token=config.get("pad_token", padding.get("pad_token")),
        model_max_length=config.get("model_max_length", truncation.get("max_length", 1024)),
        ignore_merges=bool(model.get("ignore_merges", False)),
        roles=_roles(config, vocab, added))


def _merges(path, model):
    """model.merges of a BPE tokenizer.json: "a b" strings or ["a", "b"] pairs."""
    merges = []
    for rank, merge in enumerate(model.get("merges", [])):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if not isinstance(pair, list) or len(pair) != 2 or not all(
                isinstance(t, str) for t in pair):
            raise TokenizerFormatError(f"{path}: model.merges[{rank}] = {merge!r} is not a "
                                       "pair of tokens")
        merges.append(tuple(pair))
    return merges


def _has_byte_level(data):
    """Whether a tokenizer.json's pre-tokenizer is, or ends a Sequence with, ByteLevel."""
    config = data.get("pre_tokenizer")
    if not isinstance(config, dict):
        return False
    entries = config.get("pretokenizers", []) if config.get("type") == "Sequence" else [config]
    return any(isinstance(e, dict) and e.get("type") == "ByteLevel" for e in entries)


def _byte_level_steps(path, data):
    """The pre-tokenizer steps: ByteLevel alone, or a Sequence of Split / Digits ending in it.

    (A BPE model without a ByteLevel pre-tokenizer is read by _pipeline_from_json.)
    """
    kind = _kind(path, data, "pre_tokenizer")
    config = data.get("pre_tokenizer")
    entries = config.get("pretokenizers", []) if kind == "Sequence" else [config]
    kinds = [e.get("type") if isinstance(e, dict) else None for e in entries]
    supported = "ByteLevel, or a Sequence of Split, Digits and a last ByteLevel"
    if kinds[-1] != "ByteLevel":
        raise _unsupported(path, "pre_tokenizer", f"Sequence ending in {kinds[-1]}",
                           supported, _BPE_FAMILY)
    steps = []
    for entry, step_kind in zip(entries, kinds):
        if step_kind == "ByteLevel":
            steps.append(ByteLevel(add_prefix_space=entry.get("add_prefix_space", True),
                                   use_regex=entry.get("use_regex", True)))
        elif step_kind == "Digits":
            steps.append(Digits(individual_digits=entry.get("individual_digits", False)))
        elif step_kind == "Split":
            pattern = entry["pattern"]
            behavior = entry.get("behavior", "Isolated")
            if entry.get("invert", False) or behavior not in ("Isolated", "Removed"):
                raise _unsupported(path, "pre_tokenizer", f"Split {behavior} invert="
                                   f"{entry.get('invert')}", "Split Isolated or Removed, "
                                   "not inverted", _BPE_FAMILY)
            if "Regex" in pattern:
                regex_text = pattern["Regex"]
            else:
                regex_text = regex.escape(pattern["String"])
            try:
                steps.append(Split(regex_text, behavior.lower()))
            except regex.error as e:
                raise TokenizerFormatError(f"{path}: Split pattern {regex_text!r} does not "
                                           f"compile: {e}") from None
        else:
            raise _unsupported(path, "pre_tokenizer", step_kind, supported, _BPE_FAMILY)
    return steps


def _bpe_templates(path, data, vocab, added):
    """The templates of a BPE tokenizer.json: null, ByteLevel (ids unchanged), Roberta-,
    Bert- or TemplateProcessing, or a Sequence of ByteLevel and one of those."""
    kind = _kind(path, data, "post_processor")
    post = data.get("post_processor")
    entries = post.get("processors", []) if kind == "Sequence" else [post]
    entries = [e for e in entries if e is not None and e.get("type") != "ByteLevel"]
    if len(entries) > 1:
        raise _unsupported(path, "post_processor", kind, "at most one template in a "
                           "Sequence", _BPE_FAMILY)
    if not entries:
        return None, None
    entry = entries[0]
    if entry.get("type") == "RobertaProcessing":
        cls, sep = entry["cls"][0], entry["sep"][0]
        # tokenizers gives every id of a RoBERTa pair type id 0.
        return ((cls, 0), ("$A", 0), (sep, 0)), ((cls, 0), ("$A", 0), (sep, 0), (sep, 0),
                                                 ("$B", 0), (sep, 0))
    if entry.get("type") in ("TemplateProcessing", "BertProcessing"):
        return _templates(path, {"post_processor": entry}, vocab, added)
    raise _unsupported(path, "post_processor", entry.get("type"),
                       "TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, "
                       "a Sequence of them, or null", _BPE_FAMILY)


# --- BPE and Unigram pipelines (GPT-1, LLaMA-1/2, T5, ALBERT) ---------------------------------

_PIPELINE_FAMILY = "BPE and Unigram pipelines"


def _pipeline_steps(path, data, stage, key, known, family=_PIPELINE_FAMILY):
    """The steps of one stage: a single entry, a Sequence of them, or () for null."""
    kind = _kind(path, data, stage)
    if kind is None:
        return ()
    entry = data[stage]
    entries = entry.get(key, []) if kind == "Sequence" else [entry]
    steps = []
    for e in entries:
        step_kind = e.get("type") if isinstance(e, dict) else None
        if step_kind not in known:
            raise _unsupported(path, stage, step_kind, ", ".join(sorted(known)) + ", Sequence",
                               family)
        try:
            steps.append(known[step_kind](e))
        except (ValueError, regex.error) as error:
            raise TokenizerFormatError(f"{path}: {stage} {step_kind}: {error}") from None
    return tuple(steps)


def _pipeline_from_json(path, data, config):
    """A pipeline.Tokenizer from a tokenizer.json whose model is Unigram or a BPE that is not
    byte-level."""
    entry = data["model"]
    if entry["type"] == "Unigram":
        vocab = entry["vocab"]
        if not isinstance(vocab, list) or not vocab or not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                and isinstance(p[1], (int, float)) for p in vocab):
            raise TokenizerFormatError(f"{path}: model.vocab of a Unigram model must be a "
                                       "non-empty list of [token, score] pairs")
        model = Unigram(vocab, unk_id=entry.get("unk_id"),
                        byte_fallback=entry.get("byte_fallback", False))
    else:
        vocab = entry["vocab"]
        if not isinstance(vocab, dict) or not vocab or not all(
                isinstance(i, int) and i >= 0 for i in vocab.values()):
            raise TokenizerFormatError(f"{path}: model.vocab must map tokens to ids >= 0")
        if entry.get("dropout") not in (None, 0.0):
            raise TokenizerFormatError(f"{path}: model.dropout = {entry['dropout']!r} is not "
                                       "supported (encoding would be random)")
        model = BPE(vocab, _merges(path, entry), unk_token=entry.get("unk_token"),
                    fuse_unk=entry.get("fuse_unk", False),
                    byte_fallback=entry.get("byte_fallback", False),
                    continuing_subword_prefix=entry.get("continuing_subword_prefix"),
                    end_of_word_suffix=entry.get("end_of_word_suffix"),
                    ignore_merges=entry.get("ignore_merges", False))
    normalizer = _pipeline_steps(path, data, "normalizer", "normalizers", normalizers.FROM_JSON)
    pre_tokenizer = _pipeline_steps(path, data, "pre_tokenizer", "pretokenizers",
                                    pre_tokenizers.FROM_JSON)
    decoder = (None if data.get("decoder") is None else
               _pipeline_steps(path, data, "decoder", "decoders", decoders.FROM_JSON))
    added = _added_tokens(data.get("added_tokens") or [], model.vocab)
    single, pair = _bpe_templates(path, data, model.vocab, added)
    padding = data.get("padding") or {}
    truncation = data.get("truncation") or {}
    return Tokenizer(model, normalizer=normalizer, pre_tokenizer=pre_tokenizer, decoder=decoder,
                     added_tokens=added, single=single, pair=pair,
                     pad_token=config.get("pad_token", padding.get("pad_token")),
                     model_max_length=config.get("model_max_length",
                                                 truncation.get("max_length", 512)),
                     roles=_roles(config, model.vocab, added))
