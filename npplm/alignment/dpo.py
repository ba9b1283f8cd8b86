"""Direct preference optimisation: the policy trained on preference pairs, no reward model.

Rafailov et al. (2023): the RLHF objective's optimal policy satisfies r(x, y) = beta log
pi(y|x) / pi_ref(y|x) + beta log Z(x), so the Bradley-Terry loss can be written in the
policy itself (their eq. 7):

    L = -log sigmoid(beta [log pi(y_w|x)/pi_ref(y_w|x) - log pi(y_l|x)/pi_ref(y_l|x)])

(and the hinge, IPO and robust variants, losses.dpo_loss). The reference pi_ref is the
starting policy, frozen. Its log-probabilities of every training and held-out pair are
computed once, before the first step, from the model the stage starts from (`--model`,
loaded afresh, also when a run resumes): training then needs no second model in memory.
Held out: TRL's rewards/chosen, rewards/rejected, rewards/accuracies (implicit rewards
ranking the pair right) and rewards/margins.
"""

import numpy as np

from npplm.alignment.data import PreferenceCollator, tokenize_preference
from npplm.alignment.losses import dpo_loss, preference_metrics, sequence_logps
from npplm.alignment.stage import (
    DEFAULT_DATA,
    load_policy,
    over_pairs,
    plot_metrics,
    run_stage,
    subset,
    train_and_validation,
)


def pair_logps(model, batch):
    """(chosen (B,), rejected (B,)) summed completion log-probs of a (2B, T) batch."""
    logps = sequence_logps(model, batch["input_ids"], batch["attention_mask"],
                           batch["completion_mask"])  # (2B,)
    B = batch["input_ids"].shape[0] // 2
    return logps[:B], logps[B:]


class WithReference:
    """A preference example with its reference log-probs, for ReferenceCollator."""

    def __init__(self, example, ref_chosen, ref_rejected):
        self.prompt_ids, self.chosen_ids = example.prompt_ids, example.chosen_ids
        self.rejected_ids = example.rejected_ids
        self.ref_chosen, self.ref_rejected = float(ref_chosen), float(ref_rejected)


class ReferenceCollator(PreferenceCollator):
    """PreferenceCollator's (2B, T) batch plus each pair's reference log-probs (B,)."""

    def __call__(self, examples, rng=None):
        batch = super().__call__(examples, rng)
        batch["ref_chosen_logps"] = np.array([e.ref_chosen for e in examples], np.float32)
        batch["ref_rejected_logps"] = np.array([e.ref_rejected for e in examples], np.float32)
        return batch


def train_dpo(model, out, config, *, data=None, max_length=256, beta=0.1, loss_type="sigmoid",
              label_smoothing=0.0, eval_pairs=64, overwrite=False, progress=False, log=print):
    """DPO of the causal LM at `model` on preference pairs (`data`: a JSONL file of
    {"prompt", "chosen", "rejected"}; None: the docstring pairs) into the run folder `out`,
    the starting model as the reference. The run sees steps x batch x accumulation pairs (a
    seeded subset when the data holds more: the reference scores only those), and is
    measured on `eval_pairs` held-out pairs. Returns the Trainer."""
    request = {"stage": "dpo", "model": str(model), "data": str(data or DEFAULT_DATA),
               "max_length": max_length, "beta": beta, "loss_type": loss_type,
               "label_smoothing": label_smoothing}
    dpo_loss(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), beta, loss_type,
             label_smoothing, np.ones(1), np.ones(1))  # the options, checked before any work
    policy, tokenizer = load_policy(model, max_length)
    rows_train, rows_val = train_and_validation(data, "preference", config.seed,
                                                conversational=tokenizer.chat_template is not None)
    seen = config.steps * config.batch_size * config.grad_accum
    pairs, stats = tokenize_preference(subset(rows_train, seen, config.seed), tokenizer,
                                       max_length)
    held_out, _ = tokenize_preference(subset(rows_val, eval_pairs, config.seed), tokenizer,
                                      max_length)
    log(f"training data: {stats}")
    collator = ReferenceCollator(tokenizer.pad_id)
    held = []  # the held-out pairs with their reference log-probs, for `metrics`

    def with_reference():  # the frozen reference: the starting policy, before any step
        log(f"reference log-probs of {len(pairs) + len(held_out):,} pairs ...")
        base = PreferenceCollator(tokenizer.pad_id)
        train, val = ([WithReference(e, c, r) for e, c, r in
                       zip(rows, *over_pairs(pair_logps, policy, base, rows))]
                      for rows in (pairs, held_out))
        held.extend(val)
        return train, val

    def loss_fn(model, batch):
        chosen, rejected = pair_logps(model, batch)
        lengths = batch["completion_mask"].sum(axis=1)
        B = len(batch["ref_chosen_logps"])
        losses, _, _ = dpo_loss(chosen, rejected, batch["ref_chosen_logps"],
                                batch["ref_rejected_logps"], beta, loss_type, label_smoothing,
                                lengths[:B], lengths[B:])
        return losses.mean()

    def metrics(model):  # the implicit rewards beta log pi / pi_ref of the held-out pairs
        chosen, rejected = over_pairs(pair_logps, model, collator, held)
        return preference_metrics(beta * (chosen - [e.ref_chosen for e in held]),
                                  beta * (rejected - [e.ref_rejected for e in held]))

    trainer = run_stage(out, request, config, policy, tokenizer, collator, with_reference,
                        loss_fn=loss_fn, eval_metrics=metrics, overwrite=overwrite,
                        progress=progress, log=log)
    plot_metrics(trainer.history, ["rewards/accuracies", "rewards/margins"],
                 trainer.run_dir / "rewards.png", "DPO implicit rewards, held out")
    return trainer
