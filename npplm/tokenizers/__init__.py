"""Tokenizers, written out: text in, ids out, and back.

    base.py        what every tokenizer shares: ids and tokens, templates, truncation,
                   padded batches, saving, equality (BaseTokenizer, Encoding)
    wordpiece.py   BERT's tokenizer: BasicTokenizer (clean, CJK, accents, case, split),
                   WordPiece (greedy longest-match-first), WordPieceTokenizer (added
                   tokens, [CLS]/[SEP] templates, decoding) and WordPieceTrainer /
                   train_wordpiece (a vocabulary from a corpus)
    bpe.py         character-level BPE: the BPE model (merges in rank order, "</w>" or "##"
                   spellings, unknown tokens, "<0x..>" byte fallback) and BPETrainer
                   (repeatedly merge the most frequent pair)
    byte_level_bpe.py  GPT-2 / RoBERTa / LLaMA-3 / SmolLM2 byte-level BPE: the byte table,
                   the pre-tokenization regexes, ByteLevelBPETokenizer and
                   ByteLevelBPETrainer / train_byte_level_bpe
    unigram.py     SentencePiece's Unigram model (T5, ALBERT): Viterbi segmentation and
                   UnigramTrainer (seeds, EM, pruning)
    normalizers.py, pre_tokenizers.py, decoders.py   the stages of a tokenizer.json:
                   Prepend, Replace, NFKC, Metaspace, WhitespaceSplit, ByteFallback, Fuse ...
    precompiled.py SentencePiece's compiled normalization rules ("Precompiled", T5 and
                   ALBERT files): the darts-clone double-array trie they are stored in
    pipeline.py    Tokenizer: added tokens, normalizer, pre-tokenizer, a BPE or Unigram
                   model, template, decoder; recipes train_bpe (GPT-1),
                   train_sentencepiece_bpe (LLaMA-1/2) and train_unigram (T5)
    loading.py     load_tokenizer(path): a Hugging Face tokenizer.json, a vocab.txt or a
                   GGUF file
    chat_template.py   chat templates rendered with Jinja2's sandbox

Hugging Face `tokenizers` is the oracle the tests compare with, id for id; nothing here
imports it.
"""

from npplm.tokenizers.bpe import BPE, BPETrainer
from npplm.tokenizers.byte_level_bpe import (
    ByteLevelBPETokenizer,
    ByteLevelBPETrainer,
    train_byte_level_bpe,
)
from npplm.tokenizers.loading import TokenizerFormatError, load_tokenizer
from npplm.tokenizers.pipeline import (
    Tokenizer,
    train_bpe,
    train_sentencepiece_bpe,
    train_unigram,
)
from npplm.tokenizers.unigram import Unigram, UnigramTrainer
from npplm.tokenizers.wordpiece import (
    AddedToken,
    BasicTokenizer,
    Encoding,
    WordPiece,
    WordPieceDecoder,
    WordPieceTokenizer,
    WordPieceTrainer,
    train_wordpiece,
)

__all__ = ["BPE", "AddedToken", "BPETrainer", "BasicTokenizer", "ByteLevelBPETokenizer",
           "ByteLevelBPETrainer", "Encoding", "Tokenizer", "TokenizerFormatError", "Unigram",
           "UnigramTrainer", "WordPiece", "WordPieceDecoder", "WordPieceTokenizer",
           "WordPieceTrainer", "load_tokenizer", "train_bpe", "train_byte_level_bpe",
           "train_sentencepiece_bpe", "train_unigram", "train_wordpiece"]
