"""Load a WordPiece tokenizer from a Hugging Face tokenizer.json or a BERT vocab.txt.

    load_tokenizer("path/to/model")                 a directory: its tokenizer.json, else
                                                    its vocab.txt
    load_tokenizer("path/to/tokenizer.json")        the `tokenizers` format
    load_tokenizer("path/to/vocab.txt")             one token per line, the id = line number

A tokenizer.json names each stage with a "type"; we read the ones BERT uses (model
WordPiece, normalizer BertNormalizer, pre_tokenizer BertPreTokenizer, post_processor
TemplateProcessing or BertProcessing, decoder WordPiece) and refuse the others with a
TokenizerFormatError naming the file and the value, rather than tokenize differently.

A vocab.txt carries no settings; they come from tokenizer_config.json and
special_tokens_map.json beside it when present (transformers' files: do_lower_case,
strip_accents, tokenize_chinese_chars, the special tokens, model_max_length,
clean_up_tokenization_spaces), else BERT's defaults: uncased, [UNK] [CLS] [SEP] [PAD]
[MASK]. `never_split` is not read.

model_max_length (the length truncation=True cuts to) is tokenizer_config.json's when
present, as in transformers, else the max_length of tokenizer.json's "truncation", else 512.
tokenizer.json's "padding" is not read: padding is chosen per call.
"""

import json
import pathlib

from npplm.tokenizers.wordpiece import (
    BERT_PAIR,
    BERT_SINGLE,
    AddedToken,
    BasicTokenizer,
    WordPieceDecoder,
    WordPieceTokenizer,
)


class TokenizerFormatError(ValueError):
    """A tokenizer file is malformed or describes a tokenizer npplm does not implement."""


def load_tokenizer(path):
    """A WordPieceTokenizer from a directory, a tokenizer.json or a vocab.txt."""
    path = pathlib.Path(path)
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (path / name).is_file():
                return load_tokenizer(path / name)
        raise FileNotFoundError(f"{path} holds neither tokenizer.json nor vocab.txt")
    if not path.is_file():
        raise FileNotFoundError(f"no such tokenizer file: {path}")
    config = _transformers_config(path.parent)
    if path.suffix == ".json":
        return _from_tokenizer_json(path, config)
    return _from_vocab_file(path, config)


def _read_json(path):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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


def _kind(path, data, stage):
    """The "type" of a stage of a tokenizer.json (None when the stage is null)."""
    value = data.get(stage)
    if value is None:
        return None
    if not isinstance(value, dict) or "type" not in value:
        raise TokenizerFormatError(f"{path}: {stage} is not an object with a 'type'")
    return value["type"]


def _unsupported(path, stage, kind, supported):
    return TokenizerFormatError(
        f"{path}: {stage} type {kind!r} is not supported; npplm.load_tokenizer reads BERT's "
        f"WordPiece tokenizers ({stage}: {supported})")


def _from_tokenizer_json(path, config):
    data = _read_json(path)
    kind = _kind(path, data, "model")
    if kind != "WordPiece":
        raise _unsupported(path, "model", kind, "WordPiece")
    try:
        return _build_from_json(path, data, config)
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
        d = data["decoder"]
        decoder = WordPieceDecoder(prefix=d.get("prefix", "##"), cleanup=d.get("cleanup", True))
    else:
        raise _unsupported(path, "decoder", kind, "WordPiece or null")

    padding = data.get("padding") or {}
    truncation = data.get("truncation") or {}
    return WordPieceTokenizer(
        vocab, basic=basic, unk_token=model.get("unk_token", "[UNK]"),
        continuing_subword_prefix=model.get("continuing_subword_prefix", "##"),
        max_input_chars_per_word=model.get("max_input_chars_per_word", 100),
        added_tokens=added, single=single, pair=pair,
        pad_token=config.get("pad_token", padding.get("pad_token", "[PAD]")), decoder=decoder,
        model_max_length=config.get("model_max_length", truncation.get("max_length", 512)))


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
        decoder=WordPieceDecoder(cleanup=config.get("clean_up_tokenization_spaces", True)),
        model_max_length=config.get("model_max_length", 512))
