"""A tokenizer.json pipeline around a BPE or Unigram model: GPT-1, LLaMA-1/2, T5, ALBERT.

A Hugging Face tokenizer.json describes a tokenizer as five stages, and `Tokenizer` runs
them in the same order as the `tokenizers` library (whose ids we match):

  1. added tokens   "<s>", "</s>", "[CLS]" ... are cut out of the raw text first
                    (added_tokens.py); those marked normalized=True are cut from the
                    normalized text instead.
  2. normalizer     each remaining piece is rewritten (normalizers.py): LLaMA-2 prepends
                    "▁" and turns spaces into "▁": "Hi there" -> "▁Hi▁there".
  3. pre-tokenizer  the piece is cut into words (pre_tokenizers.py): T5's Metaspace gives
                    "▁Hi", "▁there"; LLaMA-2's files have none, the whole piece is a word.
  4. model          each word becomes ids: BPE merges (bpe.py) or the Unigram model's best
                    segmentation (unigram.py).
  5. template       special tokens around the ids: LLaMA "<s> $A", T5 "$A </s>", ALBERT
                    "[CLS] $A [SEP] $B [SEP]" with token_type_ids 0 then 1.
Decoding maps ids to tokens (skipping special tokens if asked) and runs the decoder chain
(decoders.py).

A word's ids are cached (base.WordCache: word -> ids). A BPE model without pre-tokenizer
(LLaMA-2) sees whole lines as words; when no vocabulary entry holds a "▁" after another
character, no merge can join across the start of a "▁word", so we cut lines there first and
cache the words: the ids are the same, the cache is what makes it fast.

Recipes at the end train the layouts of GPT-1 (train_bpe), LLaMA-2 (train_sentencepiece_bpe)
and T5 (train_unigram) in a few lines.
"""

import itertools
import re
from collections import Counter

import npplm.tokenizers.decoders as decoders
import npplm.tokenizers.normalizers as normalizers
import npplm.tokenizers.pre_tokenizers as pre_tokenizers
from npplm.tokenizers.added_tokens import AddedToken, added_token_pattern, split_on_added
from npplm.tokenizers.base import BaseTokenizer, WordCache
from npplm.tokenizers.bpe import BPE, BYTE_FALLBACK_TOKENS, BPETrainer
from npplm.tokenizers.templates import Template
from npplm.tokenizers.unigram import Unigram, UnigramTrainer, stable_float


class Tokenizer(BaseTokenizer):
    """Added tokens, normalizer, pre-tokenizer, a BPE or Unigram model, template, decoder.

    model            a bpe.BPE or unigram.Unigram (anything with .vocab, .segment(word)
                     -> ids and .to_json())
    normalizer       normalizer steps, applied in order (default: none)
    pre_tokenizer    pre-tokenizer steps, applied in order (default: none, one word)
    decoder          decoder steps (a chain), or None to join tokens with spaces
    added_tokens     AddedTokens (added_tokens.AddedToken) cut from the text first
    single, pair     templates as in WordPieceTokenizer: ("$A" | "$B" | token, type id)
    pad_token        the token padding fills batches with (None: id 0, as in tokenizers)
    model_max_length what truncation=True cuts to when no max_length is given
    roles            {role: token} for bos_token, eos_token, unk_token, sep_token,
                     cls_token, mask_token (base.SPECIAL_TOKEN_ROLES); the others are None

    The public interface is BaseTokenizer's (base.py): encode(text, pair) -> Encoding;
    encode_batch(texts) (or calling the tokenizer) -> {"input_ids", "attention_mask",
    "token_type_ids"} int64 (B, T) arrays; decode(ids, skip_special_tokens=False) (special
    tokens kept by default, as in transformers); tokenize(text); save(path), and
    npplm.load_tokenizer reads it back.
    """

    def __init__(self, model, *, normalizer=(), pre_tokenizer=(), decoder=None,
                 added_tokens=(), single=None, pair=None, pad_token=None,
                 model_max_length=512, roles=None):
        self.model = model
        self.normalizer = tuple(normalizer)
        self.pre_tokenizer = tuple(pre_tokenizer)
        self.decoder = None if decoder is None else tuple(decoder)
        self._set_vocabulary(model.vocab, added_tokens, single, pair, pad_token,
                             model_max_length, normalize=self._normalize, roles=roles)
        self._raw_added = added_token_pattern([t for t in self.added_tokens
                                               if not t.normalized])
        self._normalized_added = added_token_pattern(
            [t for t in self.added_tokens if t.normalized], self._normalize)
        self._word_ids = WordCache(lambda word: tuple(self.model.segment(word)))
        self._cut = _word_starts(model, self.pre_tokenizer)

    def _normalize(self, text):
        return normalizers.normalize(self.normalizer, text)

    def _segments(self, text):
        """Steps 1 and 2: [(normalized piece, AddedToken or None, starts the text)]."""
        out = []
        for piece, token in split_on_added(text, self._raw_added):
            if token is not None:
                out.append((piece, token, False))
                continue
            at_start = not out
            piece = self._normalize(piece)
            for i, (part, t) in enumerate(split_on_added(piece, self._normalized_added)):
                out.append((part, t, at_start and i == 0))
        return out

    def words(self, text):
        """Steps 1 to 3 without the added tokens: the words the model segments."""
        out = []
        for piece, token, at_start in self._segments(text):
            if token is None:
                words = pre_tokenizers.pre_tokenize(self.pre_tokenizer, piece, at_start)
                cut = self._cut or (lambda word: (word,))
                out.extend(w for word in words for w in cut(word) if w)
        return out

    def _encode_one(self, text):
        """Steps 1 to 4: the ids of one text, without special tokens."""
        word_ids = self._word_ids.__getitem__
        ids = []
        for piece, token, at_start in self._segments(text):
            if token is not None:
                ids.append(token.id)
                continue
            words = pre_tokenizers.pre_tokenize(self.pre_tokenizer, piece, at_start)
            if self._cut is not None:
                words = [part for word in words for part in self._cut(word)]
            for word in words:
                if word:
                    ids.extend(word_ids(word))
        return ids

    def _text_of(self, tokens):
        return decoders.decode(self.decoder, tokens)

    # -- saving -----------------------------------------------------------------------------

    def to_tokenizer_json(self):
        """This tokenizer as a Hugging Face tokenizer.json dictionary."""
        def stage(steps, key, to_json=lambda s: s.to_json()):
            if steps is None or (not steps and key != "decoders"):
                return None
            if len(steps) == 1:
                return to_json(steps[0])
            return {"type": "Sequence", key: [to_json(s) for s in steps]}

        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": self._added_tokens_json(),
            "normalizer": stage(self.normalizer, "normalizers"),
            "pre_tokenizer": stage(self.pre_tokenizer, "pretokenizers", pre_tokenizers.to_json),
            "post_processor": self._post_processor_json(),
            "decoder": stage(self.decoder, "decoders"),
            "model": self.model.to_json(),
        }

    def __repr__(self):
        return (f"Tokenizer({type(self.model).__name__}, vocab_size={self.vocab_size}, "
                f"normalizer={self.normalizer!r}, pre_tokenizer={self.pre_tokenizer!r})")


def _word_starts(model, pre_tokenizer):
    """A function cutting a word where no merge can cross (see the module docstring).

    Only for a BPE model whose words are whole lines (no pre-tokenizer, or a Metaspace
    that does not split), without prefix, suffix or ignore_merges, whose vocabulary holds
    "▁" and no entry with "▁" after another character. Otherwise None: words stay whole.
    """
    if not isinstance(model, BPE) or model.continuing_subword_prefix or \
            model.end_of_word_suffix or model.ignore_merges:
        return None
    steps = [s for s in pre_tokenizer if not isinstance(s, pre_tokenizers.Metaspace)]
    spaces = [s.replacement for s in pre_tokenizer if isinstance(s, pre_tokenizers.Metaspace)]
    if steps or any(s.split for s in pre_tokenizer) or len(set(spaces)) > 1:
        return None
    space = spaces[0] if spaces else "▁"
    if space not in model.vocab or any(space in t.lstrip(space) for t in model.vocab):
        return None
    return re.compile(f"(?<=[^{re.escape(space)}])(?={re.escape(space)})").split


# --- Recipes: train a tokenizer of a known layout --------------------------------------------


def _added(vocab, tokens):
    return [AddedToken(t, vocab[t]) for t in dict.fromkeys(tokens)]


def train_bpe(texts, vocab_size=40478, *, lowercase=True, end_of_word_suffix="</w>",
              min_frequency=2, special_tokens=("<unk>",), unk_token="<unk>"):
    """GPT-1's layout: BERT's normalizer and split, BPE with "</w>" word ends, trained.

    The words are counted after normalization and pre-tokenization; BPETrainer learns the
    merges; decoding turns "</w>" into spaces.
    """
    normalizer = (normalizers.BertNormalizer(lowercase=lowercase),)
    pre_tokenizer = (pre_tokenizers.BertPreTokenizer(),)
    trainer = BPETrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                         special_tokens=tuple(special_tokens),
                         end_of_word_suffix=end_of_word_suffix)
    vocab, merges = trainer.train(_word_counts(texts, normalizer, pre_tokenizer))
    model = BPE(vocab, merges, unk_token=unk_token, end_of_word_suffix=end_of_word_suffix)
    return Tokenizer(model, normalizer=normalizer, pre_tokenizer=pre_tokenizer,
                     decoder=(decoders.BPEDecoder(end_of_word_suffix or ""),),
                     added_tokens=_added(vocab, special_tokens))


def sentencepiece_steps(space_prefix=True):
    """(normalizer, decoder) of LLaMA-1/2's SentencePiece layout as tokenizer.json stages:
    spaces become "▁" (and one goes before the text), decoding turns them back, reassembles
    byte-fallback pieces and strips that first space. space_prefix=False: no "▁" before the
    text and nothing stripped (a GGUF file's tokenizer.ggml.add_space_prefix = false).
    The one home of this layout: the trainer below, and GGUF reading and writing."""
    normalizer = ((normalizers.Prepend("▁"),) if space_prefix else ()) \
        + (normalizers.Replace(" ", "▁"),)
    decoder = (decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()) \
        + ((decoders.Strip(" ", 1, 0),) if space_prefix else ())
    return normalizer, decoder


def train_sentencepiece_bpe(texts, vocab_size=32000, *, special_tokens=("<unk>", "<s>", "</s>"),
                            unk_token="<unk>", bos_token="<s>", min_frequency=2,
                            byte_fallback=True, template=None):
    """LLaMA-1/2's layout: "▁" for spaces, BPE with byte fallback, "<s>" before the text.

    The vocabulary is the special tokens, the 256 byte pieces "<0x00>" ... "<0xFF>" (with
    byte_fallback), then the characters and merges BPETrainer learns from the words of the
    normalized text cut before each "▁" (SentencePiece trains on such words too).

    template: the special tokens encode adds and their roles (templates.LLAMA). Without
    one, bos_token goes before each text (nothing when it is None) and no role is named.
    """
    normalizer, decoder = sentencepiece_steps()
    cut = (pre_tokenizers.Metaspace(prepend_scheme="never"),)
    reserved = (*special_tokens, *(BYTE_FALLBACK_TOKENS if byte_fallback else ()))
    trainer = BPETrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                         special_tokens=reserved)
    vocab, merges = trainer.train(_word_counts(texts, normalizer, cut))
    model = BPE(vocab, merges, unk_token=unk_token, fuse_unk=True, byte_fallback=byte_fallback)
    if template is None and not bos_token:
        template = Template()
    elif template is None:  # LLaMA's template, without its roles
        template = Template(((bos_token, 0), ("$A", 0)),
                            ((bos_token, 0), ("$A", 0), (bos_token, 1), ("$B", 1)))
    return Tokenizer(model, normalizer=normalizer, decoder=decoder,
                     added_tokens=_added(vocab, special_tokens), **template.arguments())


def train_unigram(texts, vocab_size=32000, *, special_tokens=("<pad>", "</s>", "<unk>"),
                  unk_token="<unk>", eos_token="</s>", pad_token="<pad>", normalizer=(),
                  template=None):
    """T5's layout: whitespace split, Metaspace, a Unigram model, "</s>" after the text.

    (T5's own files normalize with SentencePiece's compiled nmt_nfkc table,
    normalizers.Precompiled, which only a SentencePiece model provides; pass
    normalizer=(normalizers.UnicodeForm("NFKC"),) for a close one.)

    template: the special tokens encode adds and their roles (templates.T5,
    templates.ALBERT). Without one, eos_token goes after each text (nothing when it is
    None), pad_token pads, and no other role is named.
    """
    pre_tokenizer = (pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace())
    trainer = UnigramTrainer(vocab_size=vocab_size, special_tokens=tuple(special_tokens),
                             unk_token=unk_token)
    pieces, unk_id = trainer.train(_word_counts(texts, normalizer, pre_tokenizer))
    # Scores that a saved tokenizer.json gives back exactly, to us and to tokenizers.
    model = Unigram([(t, stable_float(s)) for t, s in pieces], unk_id)
    if template is None and not eos_token:
        template = Template(pad_token=pad_token)
    elif template is None:  # T5's template, with its pad token only
        template = Template((("$A", 0), (eos_token, 0)),
                            (("$A", 0), (eos_token, 0), ("$B", 0), (eos_token, 0)),
                            pad_token=pad_token)
    return Tokenizer(model, normalizer=normalizer, pre_tokenizer=pre_tokenizer,
                     decoder=(decoders.Metaspace(),),
                     added_tokens=_added(model.vocab, special_tokens), **template.arguments())


def _word_counts(texts, normalizer, pre_tokenizer):
    """{word: count} of a corpus, normalized and pre-tokenized (tokenizers' training input)."""
    chain = itertools.chain.from_iterable
    return Counter(chain(pre_tokenizers.pre_tokenize(pre_tokenizer,
                                                     normalizers.normalize(normalizer, text))
                         for text in texts))
