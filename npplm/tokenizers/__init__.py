"""Tokenizers, written out: text in, ids out, and back.

What every tokenizer shares, and the stages a tokenizer.json names:

    base.py        ids and tokens, templates, truncation, padded batches, decode, saving,
                   equality (BaseTokenizer, Encoding), and the word -> ids cache (WordCache)
    unicode.py     Unicode as tokenizers 0.23 sees it: whitespace, punctuation, control,
                   CJK, accents, combining marks, NFD, lowercasing, Oniguruma's \\p{L} /
                   \\p{N} and Rust's \\w, as Python's tables corrected to the reference's
    added_tokens.py    AddedToken, and cutting a text on its added tokens ("[MASK]", "<s>")
    normalizers.py, pre_tokenizers.py, decoders.py   the stages of a tokenizer.json:
                   BertNormalizer, Prepend, Replace, NFKC, Lowercase, StripAccents ...;
                   BertPreTokenizer, Metaspace, WhitespaceSplit, Whitespace ...; WordPiece,
                   BPEDecoder, ByteFallback, Fuse, Strip, Metaspace ...
    precompiled.py SentencePiece's compiled normalization rules ("Precompiled", T5 and
                   ALBERT files): the darts-clone double-array trie they are stored in

The models, each with its trainer, and the tokenizers built from them:

    wordpiece.py   BERT's tokenizer: WordPiece (greedy longest-match-first),
                   WordPieceTokenizer (added tokens, BasicTokenizer = BertNormalizer +
                   BertPreTokenizer, WordPiece, [CLS]/[SEP] templates, the WordPiece
                   decoder) and WordPieceTrainer / train_wordpiece
    bpe.py         character-level BPE: the BPE model (merges in rank order, "</w>" or "##"
                   spellings, unknown tokens, "<0x..>" byte fallback) and BPETrainer
                   (repeatedly merge the most frequent pair)
    byte_level_bpe.py  GPT-2 / RoBERTa / LLaMA-3 / SmolLM2 byte-level BPE: the byte table,
                   the pre-tokenization regexes (ByteLevel, Split, Digits),
                   ByteLevelBPETokenizer and ByteLevelBPETrainer / train_byte_level_bpe
    unigram.py     SentencePiece's Unigram model (T5, ALBERT): Viterbi segmentation and
                   UnigramTrainer (seeds, EM, pruning)
    pipeline.py    Tokenizer: added tokens, normalizer, pre-tokenizer, a BPE or Unigram
                   model, template, decoder; recipes train_bpe (GPT-1),
                   train_sentencepiece_bpe (LLaMA-1/2) and train_unigram (T5)
    templates.py   the special tokens each family's tokenizer adds ("<s> $A </s>") and
                   the role of each (bos_token, eos_token, ...): Template, and GPT2, LLAMA,
                   BERT, ROBERTA, ALBERT, T5, GLM, which every trainer takes (template=...)
    loading.py     load_tokenizer(path): a Hugging Face tokenizer.json, a vocab.txt or a
                   GGUF file
    gguf_vocab.py  to_gguf(tokenizer): a byte-level BPE ("gpt2") or LLaMA SentencePiece BPE
                   ("llama") tokenizer as GGUF's tokenizer.ggml.* metadata, what loading.py
                   reads back
    chat_template.py   chat templates rendered with Jinja2's sandbox

decode(ids) keeps special tokens unless skip_special_tokens=True, as transformers' does.

Hugging Face `tokenizers` is the oracle the tests compare with, id for id; nothing here
imports it.
"""

from npplm.tokenizers.added_tokens import AddedToken
from npplm.tokenizers.base import Encoding
from npplm.tokenizers.bpe import BPE, BPETrainer
from npplm.tokenizers.byte_level_bpe import (
    ByteLevelBPETokenizer,
    ByteLevelBPETrainer,
    train_byte_level_bpe,
)
from npplm.tokenizers.decoders import WordPiece as WordPieceDecoder
from npplm.tokenizers.loading import TokenizerFormatError, load_tokenizer
from npplm.tokenizers.pipeline import (
    Tokenizer,
    train_bpe,
    train_sentencepiece_bpe,
    train_unigram,
)
from npplm.tokenizers.templates import Template
from npplm.tokenizers.unigram import Unigram, UnigramTrainer
from npplm.tokenizers.wordpiece import (
    BasicTokenizer,
    WordPiece,
    WordPieceTokenizer,
    WordPieceTrainer,
    train_wordpiece,
)

__all__ = ["BPE", "AddedToken", "BPETrainer", "BasicTokenizer", "ByteLevelBPETokenizer",
           "ByteLevelBPETrainer", "Encoding", "Template", "Tokenizer", "TokenizerFormatError",
           "Unigram", "UnigramTrainer", "WordPiece", "WordPieceDecoder", "WordPieceTokenizer",
           "WordPieceTrainer", "load_tokenizer", "train_bpe", "train_byte_level_bpe",
           "train_sentencepiece_bpe", "train_unigram", "train_wordpiece"]
