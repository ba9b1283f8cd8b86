"""`npplm quantize`: a LLaMA or Qwen2 model to one GGUF file, thin over
npplm.models.gguf_export.write_gguf.

The model is loaded in float32 (dequantize=True) from anything --model names: a run
folder of `npplm train --model llama` or of `npplm sft`, a checkpoint or Hugging Face
folder, or a .gguf file. A .gguf file's weights are already quantised (SmolLM2's, the
default, are Q4_1): writing them again is allowed, and said on stderr, since the new type's
rounding is added to the old one's.

--out is never replaced unless --overwrite is given, and never when it is a folder; the
file is written beside it under a temporary name and moved into place when complete, so
nothing that was there is touched by a failed run.
"""

import pathlib

from npplm.cli.common import UsageError, add_command, checking_arguments, say
from npplm.cli.generate import MODEL_HELP, default_model_path

TYPES = ("q8_0", "q4_0", "q4_1", "q4_k", "q6_k")


def add_parser(sub):
    p = add_command(sub, "quantize", "write a LLaMA or Qwen2 model to a quantised GGUF file",
                    "Quantise a LLaMA-family model (LLaMA, Qwen2) to one GGUF file holding its "
                    "weights, tokenizer and chat template, which `npplm chat --model FILE`, "
                    "llama.cpp and transformers read. Every matrix is stored as --type; a "
                    "matrix whose width is not a multiple of 256 falls back from q4_k to "
                    "q4_1 and from q6_k to q8_0 (then f16 if not a multiple of 32); norms "
                    "and biases stay f32. Prints one line: the tensors per type, the size.")
    p.add_argument("--model", metavar="PATH", help=MODEL_HELP)
    p.add_argument("--type", choices=TYPES, default="q8_0",
                   help="the block format of the matrices: 8-bit q8_0, 4-bit q4_0 / q4_1, "
                        "the 256-weight super-blocks q4_k (4.5 bits) and q6_k (6.6 bits)")
    p.add_argument("--out", metavar="FILE.gguf", required=True, help="the file to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it exists (a file only)")
    p.set_defaults(func=run_command)
    return p


def check_out(out, overwrite):
    """The --out path, or UsageError: a .gguf name, in an existing folder, not a folder
    itself, and not an existing file unless overwrite."""
    out = pathlib.Path(out)
    if out.suffix != ".gguf":
        raise UsageError(f"--out {out}: the file name must end in .gguf")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: name a file")
    if out.exists() and not overwrite:
        raise UsageError(f"--out {out} exists: pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: no such folder {out.parent}")
    return out


def run_command(args):
    from npplm.models.gguf_export import write_gguf
    from npplm.training.run_folder import load_model, resolve_model

    out = check_out(args.out, args.overwrite)
    model_path = args.model or default_model_path()
    with checking_arguments():
        source = resolve_model(model_path)
    model, tokenizer = load_model(model_path, log=say, dequantize=True)
    already = _block_types(source)
    if already:
        say(f"note: {source.name} is already quantised ({', '.join(already)}): its "
            f"dequantised weights are quantised again, {args.type}'s rounding added to it")
    with checking_arguments():  # a family, tokenizer or config that cannot be written
        summary = write_gguf(model, tokenizer, out, args.type)
    print(summary.line())


def _block_types(path):
    """The block formats a .gguf file's tensors are stored in (none for a folder)."""
    if path.suffix != ".gguf":
        return []
    from npplm.io.gguf import open_reader

    names = {t.tensor_type.name for t in open_reader(path).tensors}
    return sorted(names - {"F32", "F16", "BF16"})
