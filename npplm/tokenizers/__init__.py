"""Tokenizers, written out: text in, ids out, and back.

    wordpiece.py   BERT's tokenizer: BasicTokenizer (clean, CJK, accents, case, split),
                   WordPiece (greedy longest-match-first), WordPieceTokenizer (added
                   tokens, [CLS]/[SEP] templates, batches, decoding, saving) and
                   WordPieceTrainer / train_wordpiece (a vocabulary from a corpus)
    loading.py     load_tokenizer(path): a Hugging Face tokenizer.json or a vocab.txt

Hugging Face `tokenizers` is the oracle the tests compare with, id for id; nothing here
imports it.
"""

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

__all__ = ["AddedToken", "BasicTokenizer", "Encoding", "TokenizerFormatError", "WordPiece",
           "WordPieceDecoder", "WordPieceTokenizer", "WordPieceTrainer", "load_tokenizer",
           "train_wordpiece"]
