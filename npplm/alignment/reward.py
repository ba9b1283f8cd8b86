"""The reward model: a scalar score trained to rank the chosen answer above the rejected.

InstructGPT's second step (Ouyang et al., 2022, eq. 1): a copy of the policy whose LM head
is replaced by a scalar head, read at the last token of prompt + answer
(`*ForSequenceClassification`, `score.weight`, npplm/models), trained on pairs with the
Bradley-Terry loss (losses.reward_loss)

    L = -mean log sigmoid(r(x, y_w) - r(x, y_l) - m) [+ c mean((r_w + r_l)^2)]

m an optional margin (Llama 2), c TRL's center_rewards_coefficient. Each batch is one
(2B, T) forward: the chosen rows, then the rejected ones (data.PreferenceCollator). Held
out: the pair accuracy, P(r_w > r_l).
"""

from npplm.alignment.data import PreferenceCollator, tokenize_preference
from npplm.alignment.losses import preference_metrics, reward_loss
from npplm.alignment.stage import (
    DEFAULT_DATA,
    load_policy,
    over_pairs,
    plot_metrics,
    run_stage,
    subset,
    train_and_validation,
)


def reward_model_from(policy, pad_token_id, seed=0):
    """A reward model (one score) with a copy of the causal LM's backbone under a fresh
    score head, as InstructGPT starts its reward model from the SFT model."""
    from npplm.models import chatglm, gpt, llama, qwen2

    heads = {gpt.GPT2LMHeadModel: gpt.GPT2ForSequenceClassification,
             llama.LlamaForCausalLM: llama.LlamaForSequenceClassification,
             qwen2.Qwen2ForCausalLM: qwen2.Qwen2ForSequenceClassification,
             chatglm.GlmForCausalLM: chatglm.GlmForSequenceClassification}
    if type(policy) not in heads:
        raise ValueError(f"no reward model for a {type(policy).__name__}: GPT-2, LLaMA, "
                         "Qwen2 and GLM-4 have one")
    return heads[type(policy)].from_backbone(policy, num_labels=1, seed=seed,
                                             pad_token_id=pad_token_id)


def rewards(model, batch):
    """(chosen rewards (B,), rejected rewards (B,)) of a (2B, T) preference batch."""
    scores = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    B = batch["input_ids"].shape[0] // 2
    return scores[:B], scores[B:]


def held_out_metrics(model, collator, examples):
    """TRL's rewards/* metrics over every held-out pair (accuracy: P(r_w > r_l))."""
    return preference_metrics(*over_pairs(rewards, model, collator, examples))


def train_reward_model(model, out, config, *, data=None, max_length=256, margin=None,
                       center_rewards_coefficient=None, eval_pairs=64, overwrite=False,
                       progress=False, log=print):
    """Train a reward model from the causal LM at `model` on preference pairs (`data`: a
    JSONL file of {"prompt", "chosen", "rejected"}; None: the docstring pairs) into the
    run folder `out`; the held-out accuracy is measured on `eval_pairs` held-out pairs (a
    seeded subset). Returns the Trainer."""
    request = {"stage": "reward", "model": str(model), "data": str(data or DEFAULT_DATA),
               "max_length": max_length, "margin": margin,
               "center_rewards_coefficient": center_rewards_coefficient}
    policy, tokenizer = load_policy(model, max_length)
    scorer = reward_model_from(policy, tokenizer.pad_id, seed=config.seed)
    rows_train, rows_val = train_and_validation(data, "preference", config.seed,
                                                conversational=tokenizer.chat_template is not None)
    train, stats = tokenize_preference(rows_train, tokenizer, max_length)
    val, _ = tokenize_preference(subset(rows_val, eval_pairs, config.seed), tokenizer,
                                 max_length)
    log(f"training data: {stats}")
    collator = PreferenceCollator(tokenizer.pad_id)

    def loss_fn(model, batch):
        chosen, rejected = rewards(model, batch)
        return reward_loss(chosen, rejected, margin=margin,
                           center_rewards_coefficient=center_rewards_coefficient)

    trainer = run_stage(out, request, config, scorer, tokenizer, collator, (train, val),
                        loss_fn=loss_fn, overwrite=overwrite, progress=progress, log=log,
                        eval_metrics=lambda m: held_out_metrics(m, collator, val))
    plot_metrics(trainer.history, ["rewards/accuracies", "rewards/margins"],
                 trainer.run_dir / "rewards.png", "reward model, held out")
    return trainer
