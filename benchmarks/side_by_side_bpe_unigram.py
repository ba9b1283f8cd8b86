"""npplm's character-level BPE, SentencePiece BPE and Unigram beside Hugging Face `tokenizers`.

    .venv/bin/python benchmarks/side_by_side_bpe_unigram.py [--megabytes 1] [--vocab 8000]

The text is side_by_side_tokenizers.py's (1 MB of standard-library docstrings, in
paragraphs). Three layouts, each trained by both libraries on that text with the same
settings and vocabulary size:
  gpt1     BERT normalizer and split, BPE with "</w>" word ends    (npplm: train_bpe)
  llama2   "▁" for spaces, BPE with byte fallback, no pre-tokenizer (train_sentencepiece_bpe)
  t5       whitespace split + Metaspace, Unigram                    (train_unigram)
Training: wall time of each library's trainer on the same words (tokenizers' median of 3
runs, ours one run; tokenizers uses every core), and the share of tokenizers' vocabulary
that ours holds. Encoding: both libraries load the
tokenizer.json that `tokenizers` trained, their ids are checked equal, then MB/s of ours
warm (word cache filled) and cold (freshly loaded), of `tokenizers` one paragraph at a time
(one thread) and with encode_batch (all cores), medians of 5 runs. Ratios are theirs over
ours: above 1, Rust is faster.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # run as a script
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from side_by_side_tokenizers import stdlib_paragraphs  # noqa: E402

from npplm import load_tokenizer  # noqa: E402
from npplm.tokenizers.bpe import BYTE_FALLBACK_TOKENS  # noqa: E402
from npplm.tokenizers.pipeline import (  # noqa: E402
    train_bpe,
    train_sentencepiece_bpe,
    train_unigram,
)


def train_theirs(layout, texts, vocab_size):
    """tokenizers' Tokenizer of one layout, trained on texts (as our recipes lay it out)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from tokenizers import pre_tokenizers as pre

    if layout == "gpt1":
        tok = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre.BertPreTokenizer()
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                      special_tokens=["<unk>"], end_of_word_suffix="</w>",
                                      show_progress=False)
    elif layout == "llama2":
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
        tok.pre_tokenizer = pre.Metaspace(prepend_scheme="never")  # the training words
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=2, show_progress=False,
            special_tokens=["<unk>", "<s>", "</s>", *BYTE_FALLBACK_TOKENS])
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre.Sequence([pre.WhitespaceSplit(), pre.Metaspace()])
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, unk_token="<unk>",
                                          special_tokens=["<pad>", "</s>", "<unk>"],
                                          show_progress=False)
    tok.train_from_iterator(texts, trainer)
    if layout == "llama2":
        tok.pre_tokenizer = None
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", 1)])
    return tok


OURS = {"gpt1": lambda texts, n: train_bpe(texts, n),
        "llama2": lambda texts, n: train_sentencepiece_bpe(texts, n),
        "t5": lambda texts, n: train_unigram(texts, n)}


def seconds(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(layout, paragraphs, size, vocab_size):
    """(our training s, theirs, share of their vocabulary in ours, MB/s: ours warm, ours
    cold, theirs one thread, theirs batch)."""
    import tokenizers

    start = time.perf_counter()
    trained = OURS[layout](paragraphs, vocab_size)
    ours_train = time.perf_counter() - start
    theirs_train = seconds(lambda: train_theirs(layout, paragraphs, vocab_size), 3)

    folder = pathlib.Path(tempfile.mkdtemp())
    data = json.loads(train_theirs(layout, paragraphs, vocab_size).to_str())
    vocab = data["model"]["vocab"]
    theirs_vocab = {t for t, _ in vocab} if layout == "t5" else set(vocab)
    same = len(set(trained.vocab) & theirs_vocab) / len(theirs_vocab)
    if layout == "llama2":
        data["added_tokens"] = data["added_tokens"][:3]  # byte pieces: plain entries
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    theirs = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    ours = load_tokenizer(folder)
    if [ours.encode(p).ids for p in paragraphs] != [
            e.ids for e in theirs.encode_batch(paragraphs)]:
        sys.exit(f"{layout}: the two libraries disagree on this text: fix that first")

    def cold():
        fresh = load_tokenizer(folder)
        start = time.perf_counter()
        for p in paragraphs:
            fresh.encode(p)
        return time.perf_counter() - start

    warm = size / seconds(lambda: [ours.encode(p) for p in paragraphs], 5) / 1e6
    cold_mbs = size / statistics.median(cold() for _ in range(3)) / 1e6
    one = size / seconds(lambda: [theirs.encode(p) for p in paragraphs], 5) / 1e6
    batch = size / seconds(lambda: theirs.encode_batch(paragraphs), 5) / 1e6
    return ours_train, theirs_train, same, warm, cold_mbs, one, batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--vocab", type=int, default=8000)
    args = parser.parse_args()

    import tokenizers

    paragraphs, size = stdlib_paragraphs(args.megabytes)
    print(f"machine : {platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, tokenizers {tokenizers.__version__}")
    print(f"text    : {size / 1e6:.2f} MB, {len(paragraphs)} paragraphs; vocabulary "
          f"{args.vocab}\n")
    print(f"{'layout':<8}{'train s ours':>13}{'theirs':>8}{'ratio':>7}{'same vocab':>11}  |  "
          f"{'MB/s warm':>10}{'cold':>6}{'theirs 1T':>10}{'batch':>7}{'1T/warm':>9}"
          f"{'batch/warm':>11}")
    for layout in ("gpt1", "llama2", "t5"):
        ours_train, theirs_train, same, warm, cold, one, batch = compare(
            layout, paragraphs, size, args.vocab)
        print(f"{layout:<8}{ours_train:>13.2f}{theirs_train:>8.2f}"
              f"{ours_train / theirs_train:>7.1f}{same:>11.2%}  |  {warm:>10.2f}{cold:>6.2f}"
              f"{one:>10.2f}{batch:>7.2f}{one / warm:>9.2f}{batch / warm:>11.2f}")
    print("\nratios: theirs / ours (training: our seconds over theirs); above 1, Rust is faster")


if __name__ == "__main__":
    main()
