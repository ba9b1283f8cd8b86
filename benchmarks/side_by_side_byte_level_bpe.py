"""npplm's byte-level BPE beside Hugging Face `tokenizers` (Rust), in one process: MB/s.

    .venv/bin/python benchmarks/side_by_side_byte_level_bpe.py

The text is side_by_side_tokenizers.py's (1 MB of standard-library docstrings). The
tokenizer: a GPT-2-style byte-level BPE of 8000 ids trained by `tokenizers` on that text and
saved as tokenizer.json, which both libraries then load; their ids are checked equal first.
Cases: ours warm (word cache filled) and cold (freshly loaded), `tokenizers` encoding one
paragraph at a time (one thread) and with encode_batch (all cores). Medians of 5 runs.
"""

import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # run as a script

from side_by_side_tokenizers import stdlib_paragraphs  # noqa: E402


def median_seconds(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    from tokenizers import ByteLevelBPETokenizer, Tokenizer

    from npplm import load_tokenizer

    paragraphs, size = stdlib_paragraphs(1.0)
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(paragraphs, vocab_size=8000, show_progress=False)
    folder = pathlib.Path(tempfile.mkdtemp())
    trainer.save(str(folder / "tokenizer.json"))
    theirs, ours = Tokenizer.from_file(str(folder / "tokenizer.json")), load_tokenizer(folder)
    assert [ours.encode(p).ids for p in paragraphs] == [
        e.ids for e in theirs.encode_batch(paragraphs)], "ids differ: fix parity first"

    def cold():
        fresh = load_tokenizer(folder)
        t = time.perf_counter()
        for p in paragraphs:
            fresh.encode(p)
        return time.perf_counter() - t

    mbps = {
        "npplm encode, warm": size / median_seconds(lambda: [ours.encode(p) for p in paragraphs]),
        "npplm encode, cold": size / statistics.median(cold() for _ in range(3)),
        "tokenizers encode loop": size / median_seconds(
            lambda: [theirs.encode(p) for p in paragraphs]),
        "tokenizers encode_batch": size / median_seconds(lambda: theirs.encode_batch(paragraphs)),
    }
    print(f"{size / 1e6:.2f} MB of text, byte-level BPE with 8000 ids")
    for name, rate in mbps.items():
        print(f"  {name:<26} {rate / 1e6:6.2f} MB/s")
    warm = mbps["npplm encode, warm"]
    print(f"tokenizers / npplm: {mbps['tokenizers encode loop'] / warm:.2f} (one thread), "
          f"{mbps['tokenizers encode_batch'] / warm:.2f} (encode_batch)")


if __name__ == "__main__":
    main()
