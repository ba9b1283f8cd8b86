"""What every tokenizer shares: ids and tokens, templates, truncation, batches, files.

WordPieceTokenizer (wordpiece.py), ByteLevelBPETokenizer (byte_level_bpe.py) and the
pipeline Tokenizer (pipeline.py) differ only in how one text becomes ids and tokens become
text. A subclass sets up its vocabulary with `_set_vocabulary` and defines

    _encode_one(text) -> [ids]      the text's ids, without special tokens
    _text_of(tokens) -> str         the text of a list of tokens (its decoder)
    to_tokenizer_json() -> dict      the Hugging Face tokenizer.json it saves

and gets the rest from here: token_to_id / id_to_token, tokenize, encode (template and
truncation), encode_batch (padding, the (B, T) arrays), decode, save and equality.
WordCache is the word -> ids cache every subclass puts in front of its model.

A template is a tuple of items ("$A" | "$B" | a special token, token_type_id): BERT's
single text is (("[CLS]", 0), ("$A", 0), ("[SEP]", 0)), a pair adds ("$B", 1), ("[SEP]", 1);
parse_template reads tokenizers' shorthand for it, "[CLS] $A [SEP] $B:1 [SEP]:1".

Special tokens also play roles, named as transformers names them (SPECIAL_TOKEN_ROLES):
tok.bos_token, tok.eos_token, tok.pad_token ... are the tokens playing them, or None. They
are read from and saved to tokenizer_config.json, where transformers looks for them.
"""

import itertools
import json
import pathlib
from typing import NamedTuple

import numpy as np


class Encoding(NamedTuple):
    """The ids of one text (or pair) and their segment: 0 for the first text, 1 the second."""

    ids: list
    token_type_ids: list


def truncate_longest_first(a, b, max_length):
    """Cut ids a (and b) to max_length in all, taking from the longer first (tokenizers').

    One sequence: its first max_length ids. Two, with n1 <= n2 their lengths: if they fit,
    nothing; if the shorter fits in half or less, the longer gets what is left
    (max_length - n1); otherwise both are cut, the shorter to max_length // 2 and the longer
    to the rest.
    """
    if b is None:
        return a[:max_length], None
    if len(a) + len(b) <= max_length:
        return a, b
    n1, n2 = sorted((len(a), len(b)))
    n2 = n1 if n1 > max_length else max(n1, max_length - n1)
    if n1 + n2 > max_length:
        n1, n2 = max_length // 2, max_length - max_length // 2
    if len(a) > len(b):
        n1, n2 = n2, n1
    return a[:n1], b[:n2]


class WordCache(dict):
    """word -> tuple of ids, filled on first sight (dict.__missing__); emptied when full.

    Running text repeats its words (1 MB of English docstrings has 7.4k distinct words in
    233k), so a tokenizer's model runs once per distinct word and the rest is a dict lookup.
    """

    def __init__(self, word_to_ids, capacity=1 << 20):
        super().__init__()
        self.word_to_ids = word_to_ids
        self.capacity = capacity

    def __missing__(self, word):
        if len(self) >= self.capacity:
            self.clear()
        ids = self[word] = self.word_to_ids(word)
        return ids


# The roles a special token can play, by transformers' names (tokenizer_config.json's keys).
SPECIAL_TOKEN_ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                       "cls_token", "mask_token")


def parse_template(text):
    """A template from tokenizers' shorthand: items apart by spaces, each "$A", "$B" or a
    special token, with ":<type id>" after it when that is not 0.

    "[CLS] $A [SEP] $B:1 [SEP]:1" -> (("[CLS]", 0), ("$A", 0), ("[SEP]", 0), ("$B", 1),
    ("[SEP]", 1)).
    """
    items = []
    for item in text.split():
        name, colon, type_id = item.rpartition(":")
        if not (colon and name and type_id.isdigit()):
            name, type_id = item, "0"
        items.append((name, int(type_id)))
    return tuple(items)


def template_json(items):
    """A template as tokenizer.json's TemplateProcessing writes it."""
    return [{"Sequence": {"id": name[1], "type_id": t}} if name in ("$A", "$B")
            else {"SpecialToken": {"id": name, "type_id": t}} for name, t in items]


class BaseTokenizer:
    """The shared half of every tokenizer (see the module docstring)."""

    chat_template = None  # a Jinja2 template, where the model has one (GGUF metadata or
    # tokenizer_config.json's "chat_template"); saved back to tokenizer_config.json

    def apply_chat_template(self, messages, add_generation_prompt=True):
        """The prompt text of a conversation, laid out by the model's own template."""
        from npplm.tokenizers.chat_template import render_chat

        return render_chat(self.chat_template, messages, add_generation_prompt,
                           bos_token=self.bos_token, eos_token=self.eos_token)

    def _set_vocabulary(self, vocab, added_tokens, single, pair, pad_token, model_max_length,
                        normalize=None, roles=None):
        """vocab token -> id; added_tokens AddedTokens; single, pair templates (None: no
        special tokens); pad_token (None: id 0, tokenizers' default); normalize: the
        tokenizer's normalizer (str -> str), None when it has none; roles {role: token}
        for the other SPECIAL_TOKEN_ROLES (a role left out: None)."""
        self.vocab = dict(vocab)
        self.added_tokens = sorted(added_tokens, key=lambda t: t.id)
        self._added_by_content = {t.content: t for t in self.added_tokens}
        # id -> token; the added tokens win over the model's vocabulary, as in tokenizers,
        # which also names a token matched after normalization by its normalized form
        # ("New York" -> "new york" for a lowercasing normalizer), in tokens and decoding.
        size = max([*self.vocab.values(), *(t.id for t in self.added_tokens)]) + 1
        self._id_to_token = [None] * size
        for token, i in self.vocab.items():
            self._id_to_token[i] = token
        for t in self.added_tokens:
            normalized = normalize(t.content) if normalize and t.normalized else None
            self._id_to_token[t.id] = normalized or t.content
        self.special_tokens = {t.content for t in self.added_tokens if t.special}
        self._special_ids = {t.id for t in self.added_tokens if t.special}
        self.single = tuple((n, int(t)) for n, t in (single or (("$A", 0),)))
        self.pair = tuple((n, int(t)) for n, t in (pair or (("$A", 0), ("$B", 1))))
        for name, _ in self.single + self.pair:
            if name not in ("$A", "$B") and self.token_to_id(name) is None:
                raise ValueError(f"the template token {name!r} is not in the vocabulary")
        self.pad_token = pad_token
        self.pad_id = self.token_to_id(pad_token) if pad_token is not None else None
        if self.pad_id is None:
            self.pad_id = 0
        # The other roles only name tokens; padding also sets pad_id, so it has its argument.
        roles = dict(roles or {})
        for role, token in roles.items():
            if role not in SPECIAL_TOKEN_ROLES or role == "pad_token":
                raise ValueError(f"roles: {role!r} is not bos_token, eos_token, unk_token, "
                                 "sep_token, cls_token or mask_token (the pad token is its "
                                 "own argument, pad_token)")
            if token is not None and self.token_to_id(token) is None:
                raise ValueError(f"the {role} {token!r} is not in the vocabulary")
        for role in SPECIAL_TOKEN_ROLES:
            if role != "pad_token":
                setattr(self, role, roles.get(role))
        self.model_max_length = model_max_length

    # -- vocabulary -------------------------------------------------------------------------

    @property
    def special_tokens_map(self):
        """{role: token} for the SPECIAL_TOKEN_ROLES this tokenizer fills, as in transformers."""
        return {role: getattr(self, role) for role in SPECIAL_TOKEN_ROLES
                if getattr(self, role) is not None}

    @property
    def vocab_size(self):
        """Number of ids: the model's vocabulary plus added tokens outside it."""
        return len(self._id_to_token)

    def token_to_id(self, token):
        """The id of a token (added tokens first, then the vocabulary), or None."""
        if token in self._added_by_content:
            return self._added_by_content[token].id
        return self.vocab.get(token)

    def id_to_token(self, i):
        """The token of an id; IndexError naming the id when it has none."""
        i = int(i)
        if not 0 <= i < len(self._id_to_token) or self._id_to_token[i] is None:
            raise IndexError(f"token id {i} is out of range for a vocabulary of "
                             f"{self.vocab_size} ids")
        return self._id_to_token[i]

    def convert_ids_to_tokens(self, ids):
        return [self.id_to_token(i) for i in ids]

    # -- encoding ---------------------------------------------------------------------------

    def tokenize(self, text):
        """The pieces (strings) of a text, without special tokens."""
        return [self._id_to_token[i] for i in self._encode_one(text)]

    def num_special_tokens_to_add(self, pair=False):
        return sum(name not in ("$A", "$B") for name, _ in (self.pair if pair else self.single))

    def encode(self, text, text_pair=None, add_special_tokens=True, truncation=False,
               max_length=None):
        """Encoding(ids, token_type_ids) of a text, or of a pair of texts.

        truncation: cut to max_length (default `model_max_length`) ids in all, special
        tokens included; a pair loses ids from the longer text first ("longest first").
        """
        a = self._encode_one(text)
        b = None if text_pair is None else self._encode_one(text_pair)
        limit = self.model_max_length if max_length is None else max_length
        if truncation and limit is not None:
            n_special = self.num_special_tokens_to_add(b is not None) if add_special_tokens else 0
            if limit < n_special:
                raise ValueError(f"max_length={limit} leaves no room for the {n_special} "
                                 "special tokens")
            a, b = truncate_longest_first(a, b, limit - n_special)
        return self._apply_template(a, b, add_special_tokens)

    def _apply_template(self, a, b, add_special_tokens):
        """The template's items in order; without special tokens, only its texts, which
        keep their type ids (as tokenizers' TemplateProcessing does: T5's second text is 0)."""
        ids, type_ids = [], []
        for name, type_id in (self.single if b is None else self.pair):
            if name in ("$A", "$B"):
                part = a if name == "$A" else b
            elif add_special_tokens:
                part = [self.token_to_id(name)]
            else:
                continue
            ids += part
            type_ids += [type_id] * len(part)
        return Encoding(ids, type_ids)

    def encode_batch(self, texts, text_pairs=None, *, padding=True, truncation=True,
                     max_length=None, add_special_tokens=True):
        """{"input_ids", "attention_mask", "token_type_ids"}: int64 arrays of shape (B, T).

        padding: True or "longest" pads on the right to the longest row, with the pad id,
        type id 0 and attention 0; "max_length" pads to max_length (default
        model_max_length); False requires rows of equal length.
        truncation, max_length: as in encode (True cuts to model_max_length by default).
        A single string is a batch of one.
        """
        if isinstance(texts, str):
            texts = [texts]
            text_pairs = None if text_pairs is None else [text_pairs]
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text pairs")
        pairs = text_pairs if text_pairs is not None else [None] * len(texts)
        rows = [self.encode(t, p, add_special_tokens, truncation, max_length)
                for t, p in zip(texts, pairs)]
        longest = max((len(r.ids) for r in rows), default=0)
        if padding == "max_length":
            width = max(self.model_max_length if max_length is None else max_length, longest)
        elif padding in (True, "longest"):
            width = longest
        elif padding is False:
            if len({len(r.ids) for r in rows}) > 1:
                raise ValueError("rows have different lengths; use padding=True")
            width = longest
        else:
            raise ValueError(f"padding={padding!r}: use True, 'longest', 'max_length' or False")
        # Fill all rows at once: the real positions, row after row, are where the mask is set.
        lengths = np.array([len(r.ids) for r in rows], dtype=np.int64)    # (B,)
        real = np.arange(width) < lengths[:, None]                         # (B, T)
        total = int(lengths.sum())
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        input_ids[real] = np.fromiter(itertools.chain.from_iterable(r.ids for r in rows),
                                      dtype=np.int64, count=total)
        token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
        token_type_ids[real] = np.fromiter(
            itertools.chain.from_iterable(r.token_type_ids for r in rows), dtype=np.int64,
            count=total)
        attention_mask = real.astype(np.int64)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "token_type_ids": token_type_ids}

    __call__ = encode_batch

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens=False):
        """The text of a sequence of ids (a list or a 1-D array).

        skip_special_tokens: leave the special tokens out. False by default, as in
        transformers' decode (tokenizers' own Tokenizer.decode defaults to True).
        Special tokens are skipped by id; tokenizers compares strings, and so keeps a
        special token that is matched after normalization when normalizing changes it.
        Out-of-range ids raise IndexError naming the id (tokenizers drops them silently).
        """
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        tokens = [self.id_to_token(i) for i in ids
                  if not (skip_special_tokens and i in self._special_ids)]
        return self._text_of(tokens)

    def decode_batch(self, rows, skip_special_tokens=False):
        """[decode(row) for row in rows]: the texts of a (B, T) array or a list of rows."""
        return [self.decode(row, skip_special_tokens) for row in rows]

    # -- saving -----------------------------------------------------------------------------

    def _added_tokens_json(self):
        return [{"id": t.id, "content": t.content, "single_word": t.single_word,
                 "lstrip": t.lstrip, "rstrip": t.rstrip, "normalized": t.normalized,
                 "special": t.special} for t in self.added_tokens]

    def _post_processor_json(self):
        specials = sorted({n for n, _ in self.single + self.pair if n not in ("$A", "$B")})
        return {"type": "TemplateProcessing", "single": template_json(self.single),
                "pair": template_json(self.pair),
                "special_tokens": {n: {"id": n, "ids": [self.token_to_id(n)], "tokens": [n]}
                                   for n in specials}}

    def _tokenizer_config(self):
        """tokenizer_config.json: what tokenizer.json does not say, the roles of the special
        tokens above all. transformers' PreTrainedTokenizerFast (AutoTokenizer's choice for
        this class) runs tokenizer.json as it is written, template included."""
        config = {"tokenizer_class": "PreTrainedTokenizerFast",
                  "model_max_length": self.model_max_length, **self.special_tokens_map}
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        return config

    def _files(self):
        """{file name: text} that save writes."""
        return {"tokenizer.json": self.to_tokenizer_json(),
                "tokenizer_config.json": self._tokenizer_config()}

    def save(self, path):
        """Write tokenizer.json and tokenizer_config.json (WordPiece: also vocab.txt) into
        the directory `path`; npplm.load_tokenizer(path) reads them back to an equal
        tokenizer, and Hugging Face `tokenizers` and transformers read them too. Returns the
        paths written."""
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        files = self._files()
        for name, data in files.items():
            text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False,
                                                                 indent=2)
            (path / name).write_text(text, encoding="utf-8")
        return [path / name for name in files]

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return (self.to_tokenizer_json() == other.to_tokenizer_json()
                and self.special_tokens_map == other.special_tokens_map
                and self.model_max_length == other.model_max_length)

    __hash__ = None
