"""`npplm train` as a function: a recipe, trained in a run folder that a typo cannot destroy.

    from npplm.training import TrainConfig
    from npplm.training.pretrain import pretrain

    result = pretrain("runs/mine", TrainConfig(steps=100), family="llama", max_chars=200_000)
    result.history, result.trainer.last_checkpoint

In order, and nothing is written or removed before step 4:

    1. the request is resolved and every value checked (recipe.resolve_request);
    2. the folder must be absent, empty, or an npplm run (run_folder.check_usable), and
       is locked for the whole run (a second process is refused with the holder's pid);
    3. a folder holding a run is resumed only when it was asked the same (its run.json's
       request equals this one), reusing its tokenizer; otherwise it is refused, or with
       overwrite=True replaced; the whole run is then built in memory (recipe.build_run):
       corpus, tokenizer, model, examples;
    4. only now: the previous run is cleared (overwrite), run.json and the tokenizer are
       written, and the Trainer fits, resuming from the newest checkpoint.

On several MPI ranks (`mpiexec -n N`, npplm/distributed) rank 0 does steps 1-4 alone; the
others wait for it (or stop with its error), then build the same run with the tokenizer
rank 0 saved, and all train together; only rank 0 writes.
"""

import contextlib
import dataclasses
import os
import pathlib
import shutil
from dataclasses import dataclass

from npplm.distributed import current_world
from npplm.tokenizers import load_tokenizer
from npplm.training.recipe import build_run, resolve_request
from npplm.training.run_folder import RunFolderError, claimed
from npplm.training.trainer import Trainer


@dataclass
class Pretraining:
    """What pretrain returns: the run it built, its trainer, the metrics records of this
    process, and the step it resumed from (0: a new run)."""

    run: object
    trainer: Trainer
    history: list
    resumed_from: int


def save_tokenizer(tokenizer, folder):
    """tokenizer.save into `folder`, atomically: written beside it, then renamed."""
    folder = pathlib.Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save(tmp)
    os.replace(tmp, folder)


def pretrain(out, config, *, overwrite=False, progress=False, sample_prompt=None, log=print,
             **request):
    """Train the recipe `request` (the arguments of recipe.resolve_request: family, preset,
    objective, data, block_size, vocab_size, overrides, tokenizer, max_chars, val_fraction,
    seed, masking) with `config` (a TrainConfig) in the run folder `out`; see the module
    docstring. Raises ValueError / FileNotFoundError for a bad request, RunFolderError for
    an unusable folder, TrainingDiverged, and KeyboardInterrupt after saving on Ctrl-C."""
    resolved = resolve_request(**request)
    out = pathlib.Path(out)
    world = current_world()
    with contextlib.ExitStack() as held:
        if world.is_main:
            with world.telling_the_others("rank 0 could not start the run"):
                claim = held.enter_context(claimed(out, resolved, overwrite=overwrite, log=log))
                reuse = None
                if claim.resuming and (out / "tokenizer").is_dir():
                    reuse = load_tokenizer(out / "tokenizer")  # trained from this same request
                run = build_run(**{**request, "tokenizer": reuse or request.get("tokenizer")},
                                sample_prompt=sample_prompt, log=log)
                run.info.update(resolved)  # what was asked, also when the tokenizer was reused
                claim.commit({"recipe": run.info, "train_config": dataclasses.asdict(config)})
                if not (out / "tokenizer").is_dir():
                    save_tokenizer(run.tokenizer, out / "tokenizer")
        else:  # several ranks: rank 0 has claimed the folder and saved the tokenizer
            world.wait_for_main()
            log = lambda *args, **kwargs: None  # noqa: E731
            run = build_run(**{**request, "tokenizer": load_tokenizer(out / "tokenizer")},
                            sample_prompt=sample_prompt, log=log)
            run.info.update(resolved)
        examples = config.steps * config.batch_size * config.grad_accum
        ranks = f" on {world.size} ranks" if world.size > 1 else ""
        log(f"training {config.steps} steps of {config.batch_size * config.grad_accum} examples "
            f"({examples / len(run.train):.2f} epochs){ranks}; run folder {out}")
        trainer = Trainer(run.model, run.collator, run.train, run.val, config, run_dir=out,
                          perplexity=run.perplexity, sample=run.sample, progress=progress,
                          log=log, run_info=run.info, tokenizer=run.tokenizer, world=world)
        history = trainer.fit(resume=True)
        return Pretraining(run, trainer, history, trainer.resumed_from)


__all__ = ["Pretraining", "RunFolderError", "pretrain", "save_tokenizer"]
