"""Supervised fine-tuning: the causal-LM loss on the answers only.

InstructGPT's first step (Ouyang et al., 2022, section 3.5): fine-tune the pre-trained
model on demonstrations, prompt -> answer. The loss is the causal LM's cross-entropy

    L = -(1 / N) sum over answer tokens t of log pi(y_t | x, y_<t)

where N counts the answer tokens of the whole update: prompt, system and user tokens and
padding are never labels (-100, data.SFTCollator), the answer's end-of-turn / EOS token
always is (so the model learns to stop), and with gradient accumulation each micro-batch
is weighted by its share of the answer tokens (the Trainer's exact accumulation), so k
micro-batches give the update of the whole batch.

    sft("path/to/model", "runs/sft", TrainConfig(steps=100))   # the docstring pairs

The held-out number is the validation loss: the answers' negative log-likelihood per token.
"""

from npplm.alignment.data import SFTCollator, tokenize_sft
from npplm.alignment.stage import (
    DEFAULT_DATA,
    load_policy,
    plot_metrics,
    run_stage,
    train_and_validation,
)


def sft(model, out, config, *, data=None, max_length=256, assistant_only_loss=False,
        overwrite=False, progress=False, log=print):
    """Fine-tune the causal LM at `model` (a run, checkpoint, Hugging Face folder or GGUF
    file) on prompt -> answer examples (`data`: a JSONL file in TRL's text,
    prompt-completion or messages format; None: the standard library's docstring pairs)
    into the run folder `out`. Returns the Trainer (its history, last checkpoint)."""
    request = {"stage": "sft", "model": str(model), "data": str(data or DEFAULT_DATA),
               "max_length": max_length, "assistant_only_loss": assistant_only_loss}
    policy, tokenizer = load_policy(model, max_length)
    rows_train, rows_val = train_and_validation(data, "sft", config.seed,
                                                conversational=tokenizer.chat_template is not None)
    train, stats = tokenize_sft(rows_train, tokenizer, max_length, assistant_only_loss)
    val, _ = tokenize_sft(rows_val, tokenizer, max_length, assistant_only_loss)
    log(f"training data: {stats}")
    trainer = run_stage(out, request, config, policy, tokenizer, SFTCollator(tokenizer.pad_id),
                        (train, val), overwrite=overwrite, progress=progress, log=log)
    plot_metrics(trainer.history, ["loss", "val_loss"], trainer.run_dir / "sft.png",
                 "SFT: answer NLL per token")
    return trainer
