"""Tokenizers, written out: text in, ids out, and back.

    wordpiece.py   BERT's tokenizer: BasicTokenizer (clean, CJK, accents, case, split),
                   WordPiece (greedy longest-match-first), WordPieceTokenizer (added
                   tokens, [CLS]/[SEP] templates, batches, decoding, saving) and
                   WordPieceTrainer / train_wordpiece (a vocabulary from a corpus)
    byte_level_bpe.py  GPT-2 / RoBERTa / LLaMA-3 / SmolLM2 byte-level BPE: the byte table,
                   the pre-tokenization regexes, merges in rank order, ByteLevelBPETokenizer
                   and ByteLevelBPETrainer / train_byte_level_bpe
    loading.py     load_tokenizer(path): a Hugging Face tokenizer.json or a vocab.txt

Hugging Face `tokenizers` is the oracle the tests compare with, id for id; nothing here
imports it.
"""

from npplm.tokenizers.byte_level_bpe import (
    ByteLevelBPETokenizer,
    ByteLevelBPETrainer,
    train_byte_level_bpe,
)
from npplm.tokenizers.loading import TokenizerFormatError, load_tokenizer
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

__all__ = ["AddedToken", "BasicTokenizer", "ByteLevelBPETokenizer", "ByteLevelBPETrainer",
           "Encoding", "TokenizerFormatError", "WordPiece", "WordPieceDecoder",
           "WordPieceTokenizer", "WordPieceTrainer", "load_tokenizer", "train_byte_level_bpe",
           "train_wordpiece"]
