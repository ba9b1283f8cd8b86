"""`npplm train`: thin over npplm.training.pretrain.pretrain (--nproc: over
npplm.distributed.launch, which starts this same command under mpiexec)."""

from npplm.cli.common import (
    UsageError,
    add_command,
    checking_arguments,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

WARMUP = 30  # default warmup steps

DESCRIPTION = """\
Pre-train a model from scratch on its paper's objective, with a tokenizer trained on the
corpus. With no arguments: a 4-layer GPT-2 (width 128) with a 2048-id byte-level BPE on the
Python standard library's source, about two minutes on two cores.

The run folder (--out) holds run.json, the tokenizer, checkpoints, metrics.jsonl and
loss.png. Running the same command again resumes from its newest checkpoint; a folder
holding another run is refused, and --overwrite replaces only a folder that is an npplm
run, after every argument is checked. A folder is locked while a run trains in it."""


def add_parser(sub):
    p = add_command(sub, "train", "pre-train a model (default: a small GPT-2 on the stdlib)",
                    DESCRIPTION)
    what = p.add_argument_group("what to train")
    what.add_argument("--model", metavar="FAMILY", default="gpt",
                      help="gpt, llama, bert, roberta, albert, t5 or glm")
    what.add_argument("--preset", help="a config preset of the family, e.g. gpt2, tiny "
                                       "(default: the family's smallest, at laptop width)")
    what.add_argument("--objective", help="clm (gpt, llama); mlm+nsp or mlm (bert); mlm "
                                          "(roberta); mlm+sop or mlm (albert); span (t5); "
                                          "blank or gmask (glm) (default: the first)")
    what.add_argument("--masking", choices=("static", "dynamic"),
                      help="MLM masks fixed per example (BERT) or drawn anew each time "
                           "(RoBERTa) (default: as the family's paper)")
    what.add_argument("--set", nargs="+", metavar="KEY=VALUE", default=[],
                      help="config fields over the preset; on the default preset they adjust "
                           "its laptop shape, e.g. n_layer=2")
    data = p.add_argument_group("data and tokenizer")
    data.add_argument("--data", metavar="PATH", help="a text file or a folder of them (default: "
                                                     "the Python standard library's source)")
    data.add_argument("--max-chars", type=positive_int, default=2_000_000,
                      help="read at most this many characters of the corpus")
    data.add_argument("--tokenizer", metavar="PATH",
                      help="use this tokenizer instead of training one: a run folder's, a "
                           "model folder's, a tokenizer.json or a .gguf file")
    data.add_argument("--vocab-size", type=positive_int, default=2048,
                      help="ids of the tokenizer to train")
    data.add_argument("--block-size", type=positive_int, default=128, help="tokens per example")
    opt = p.add_argument_group("optimization")
    opt.add_argument("--steps", type=positive_int, default=300, help="optimizer updates")
    opt.add_argument("--batch-size", type=positive_int, default=16, help="examples per "
                                                                         "micro-batch")
    opt.add_argument("--grad-accum", type=positive_int, default=1,
                     help="micro-batches per update")
    opt.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="optimizer")
    opt.add_argument("--lr", type=positive_float, default=3e-3, help="peak learning rate")
    opt.add_argument("--min-lr", type=non_negative_float,
                     help="the cosine schedule's floor (default: lr / 10)")
    opt.add_argument("--warmup", type=non_negative_int,
                     help=f"linear warmup steps (default: {WARMUP}, or --steps if fewer)")
    opt.add_argument("--weight-decay", type=non_negative_float, default=0.1,
                     help="AdamW's decoupled weight decay, on matrices only")
    opt.add_argument("--clip", type=non_negative_float, default=1.0,
                     help="clip the gradient norm to this (0: no clipping)")
    opt.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                     help="bf16 / fp16: forward and backward in 16 bits on float32 master "
                          "weights (fp16 with loss scaling); on a CPU slower, for study")
    opt.add_argument("--loss-scaling", action="store_true",
                     help="dynamic loss scaling (torch.amp.GradScaler's rules): an update "
                          "with inf/NaN gradients is skipped and the scale halved")
    opt.add_argument("--spike-guard", type=positive_float, metavar="Z",
                     help="skip an update whose loss or gradient norm lies more than Z "
                          "standard deviations above the last 128 updates' (e.g. 6)")
    opt.add_argument("--spike-rewind", action="store_true",
                     help="with --spike-guard: when 5 updates in a row are spikes, go back to "
                          "a checkpoint about 100 steps earlier and skip 300 updates' batches "
                          "(PaLM's remedy) instead of stopping")
    opt.add_argument("--grad-checkpointing", action="store_true",
                     help="keep only each block's input and recompute the block in backward: "
                          "less memory for about a third more compute")
    opt.add_argument("--seed", type=int, default=0, help="seeds the data order, masks and "
                                                         "initialization")
    run = p.add_argument_group("run folder and output")
    run.add_argument("--out", metavar="DIR", help="the run folder (default: "
                                                  "runs/FAMILY-OBJECTIVE, OBJECTIVE being "
                                                  "'default' without --objective)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the npplm run in --out (never a folder of other files)")
    run.add_argument("--eval-every", type=non_negative_int, default=50,
                     help="steps between validation passes (0: only at the end)")
    run.add_argument("--eval-batches", type=positive_int, default=8,
                     help="validation batches per pass")
    run.add_argument("--save-every", type=non_negative_int, default=50,
                     help="steps between checkpoints (0: only at the end)")
    run.add_argument("--log-every", type=positive_int, default=10,
                     help="steps between lines of metrics.jsonl")
    run.add_argument("--prompt", help="the causal LMs' sample prompt (default: the start of a "
                                      "method on the stdlib, else validation text)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--dry-run", action="store_true",
                     help="write nothing, train nothing: print the memory a step takes "
                          "(weights, gradients, moments, activations with and without "
                          "--grad-checkpointing) beside the measured peak of real steps")
    ranks = p.add_argument_group("several processes (MPI; pip install 'npplm[mpi]')")
    ranks.add_argument("--nproc", type=positive_int, default=1,
                       help="train data-parallel on this many ranks of this machine (starts "
                            "mpiexec; or run `mpiexec -n N npplm train ...` yourself); each "
                            "rank takes its rows of every batch, and the run is the same")
    ranks.add_argument("--zero", action="store_true",
                       help="with several ranks: shard AdamW's moments over them (ZeRO-1)")
    p.set_defaults(func=run_command)
    return p


def run_command(args):
    from npplm.distributed import current_world
    from npplm.distributed.launch import relaunch, without_option
    from npplm.training import TrainConfig, TrainingDiverged
    from npplm.training.pretrain import pretrain
    from npplm.training.recipe import parse_overrides, resolve_request
    from npplm.training.run_folder import check_usable

    with checking_arguments():
        if args.warmup is not None and args.warmup > args.steps:
            raise UsageError(f"--warmup {args.warmup} exceeds --steps {args.steps}")
        warmup = min(WARMUP, args.steps) if args.warmup is None else args.warmup
        config = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
            optimizer=args.optimizer, lr=args.lr, min_lr=args.min_lr,
            warmup_steps=warmup, weight_decay=args.weight_decay,
            clip_grad_norm=args.clip or None, eval_every=args.eval_every,
            eval_batches=args.eval_batches, save_every=args.save_every,
            log_every=args.log_every, seed=args.seed, zero=args.zero,
            gradient_checkpointing=args.grad_checkpointing, loss_scaling=args.loss_scaling,
            precision=args.precision,
            spike_guard=args.spike_guard, spike_rewind=args.spike_rewind)
        request = dict(family=args.model, preset=args.preset, objective=args.objective,
                       data=args.data, block_size=args.block_size, vocab_size=args.vocab_size,
                       overrides=parse_overrides(args.set), tokenizer=args.tokenizer,
                       max_chars=args.max_chars, seed=args.seed, masking=args.masking)
        resolve_request(**request)
        out = args.out or f"runs/{args.model}-{args.objective or 'default'}"
        world = current_world()
        if world.size == 1 and not args.dry_run:  # (several ranks: rank 0's claim checks
            check_usable(out, args.overwrite)  # it and tells the others)
        ranks = max(args.nproc, world.size)
        if args.batch_size < ranks:
            raise UsageError(f"--batch-size {args.batch_size} cannot be split over {ranks} "
                             "ranks")
        if args.zero and args.optimizer != "adamw":
            raise UsageError("--zero shards AdamW's moments; it needs --optimizer adamw")
        if args.nproc > 1 and world.size > 1 and args.nproc != world.size:
            raise UsageError(f"--nproc {args.nproc}, but mpiexec started {world.size} ranks")
    if args.dry_run:
        from npplm.training.memory import dry_run, too_large_account
        from npplm.training.recipe import ModelTooLarge, build_run

        try:
            run = build_run(**request, log=print)
        except ModelTooLarge as e:  # the account its parameter count gives
            too_large_account(e.parameters, e.memory, config, log=print)
            return None
        dry_run(run, config)
        return None
    if args.nproc > 1 and world.size == 1:  # start this command on N ranks; they print
        return relaunch(args.nproc, without_option(args.argv, "--nproc"))
    try:
        result = pretrain(out, config, overwrite=args.overwrite, progress=not args.quiet,
                          sample_prompt=args.prompt, **request)
    except TrainingDiverged as e:
        raise RuntimeError(f"stopped: {e}") from e
    if not world.is_main:
        return None  # rank 0 reports
    history, trainer = result.history, result.trainer
    evals = [r for r in history if "val_loss" in r]
    if evals:
        first, last = evals[0], evals[-1]
        if "val_ppl" in last:
            print(f"validation perplexity: {first['val_ppl']:.1f} at step {first['step']} -> "
                  f"{last['val_ppl']:.2f} at step {last['step']} (a uniform guess: "
                  f"{result.run.tokenizer.vocab_size})")
        else:
            print(f"validation loss: {first['val_loss']:.3f} -> {last['val_loss']:.3f}")
    print(f"checkpoint: {trainer.last_checkpoint}; metrics: {trainer.run_dir / 'metrics.jsonl'};"
          f" loss curve: {trainer.run_dir / 'loss.png'}")
