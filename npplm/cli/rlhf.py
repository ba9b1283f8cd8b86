"""`npplm ppo`: thin over npplm.alignment.train_ppo."""

from npplm.cli.common import (
    add_command,
    checking_arguments,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)

DEFAULT_MODEL = "runs/gpt-default"  # where `npplm train` puts its default GPT-2

DESCRIPTION = f"""\
RLHF with PPO (InstructGPT's third step): the policy samples responses to prompts, a judge
scores them, and PPO raises the score minus beta x the KL to the reference model, with GAE
advantages from a separate value model. With no arguments: the GPT-2 of `npplm train` in
{DEFAULT_MODEL} (trained first, about two minutes, if that folder holds none) continues
`def` lines of the standard library, judged by the built-in "python" judge (the fraction of
a response's lines that are Python on their own); a few minutes on two cores.

--reward is a judge: "python", or a reward model from `npplm reward` (run folder or
checkpoint), which must share the policy's tokenizer. Prompts: JSONL of {{"prompt": ...}}
(a string, or chat messages for a model with a chat template). The run folder holds
metrics.jsonl (TRL's names: objective/kl, objective/scores, policy/clipfrac, ...),
rewards.png (score and KL against iteration), and checkpoints of the policy (which `npplm
generate --model` loads) with the critic; running the same command again resumes."""


def add_parser(sub):
    p = add_command(sub, "ppo", "RLHF: PPO against a judge or a reward model", DESCRIPTION)
    what = p.add_argument_group("models, judge and prompts")
    what.add_argument("--model", metavar="PATH",
                      help=f"the policy to start from: a run folder, a checkpoint or Hugging "
                           f"Face folder, or a .gguf file (default: {DEFAULT_MODEL})")
    what.add_argument("--reward", default="python", metavar="{PATH,python}",
                      help="the judge: a reward model's run folder or checkpoint, or the "
                           "built-in 'python'")
    what.add_argument("--ref", metavar="PATH", help="the reference model of the KL penalty "
                                                    "(default: --model)")
    what.add_argument("--data", metavar="FILE.jsonl",
                      help="prompts, one {\"prompt\": ...} a line (default: the standard "
                           "library's def lines, or its docstring questions for a chat model)")
    roll = p.add_argument_group("rollouts")
    roll.add_argument("--max-new-tokens", type=positive_int, default=32,
                      help="tokens per response at most")
    roll.add_argument("--temperature", type=positive_float, default=1.0,
                      help="sampling temperature (also in the log-probs)")
    roll.add_argument("--top-k", type=positive_int, help="sample from the k likeliest tokens")
    roll.add_argument("--top-p", type=probability, help="sample from the nucleus of mass p")
    roll.add_argument("--missing-eos-penalty", type=float,
                      help="subtracted from the score of a response that never ended")
    roll.add_argument("--score-clip", type=positive_float, help="clip scores to [-c, c]")
    ppo = p.add_argument_group("PPO")
    ppo.add_argument("--steps", type=positive_int, default=40,
                     help="iterations (a rollout batch and its updates each)")
    ppo.add_argument("--batch-size", type=positive_int, default=32, help="episodes per rollout")
    ppo.add_argument("--mini-batch-size", type=positive_int, default=8,
                     help="episodes per gradient step")
    ppo.add_argument("--ppo-epochs", type=positive_int, default=2,
                     help="passes over each rollout batch")
    ppo.add_argument("--lr", type=positive_float, default=1e-4, help="the policy's learning rate")
    ppo.add_argument("--critic-lr", type=positive_float,
                     help="the value model's learning rate (default: --lr)")
    ppo.add_argument("--kl-coef", type=non_negative_float, default=0.05,
                     help="beta, the KL penalty's weight (the adaptive controller's start)")
    ppo.add_argument("--kl-estimator", choices=("k1", "k3"), default="k1",
                     help="the per-token KL estimate: log pi/pi_ref, or (r - 1) - log r")
    ppo.add_argument("--kl-target", type=positive_float,
                     help="adapt beta towards this KL per response (Ziegler et al.)")
    ppo.add_argument("--kl-horizon", type=positive_int, default=10000,
                     help="the adaptive controller's horizon, in episodes")
    ppo.add_argument("--gamma", type=probability, default=1.0, help="GAE's discount")
    ppo.add_argument("--lam", type=probability, default=0.95, help="GAE's lambda")
    ppo.add_argument("--cliprange", type=positive_float, default=0.2,
                     help="the policy ratio's clip, 1 +- eps")
    ppo.add_argument("--cliprange-value", type=positive_float, default=0.2,
                     help="the value change's clip")
    ppo.add_argument("--vf-coef", type=non_negative_float, default=0.1,
                     help="the value loss's weight")
    ppo.add_argument("--whiten-rewards", action="store_true",
                     help="scale the per-token rewards to variance 1")
    ppo.add_argument("--ptx-coef", type=non_negative_float, default=0.0,
                     help="PPO-ptx: the weight of the LM loss on the standard library's source")
    run = p.add_argument_group("run folder and output")
    run.add_argument("--out", metavar="DIR", default="runs/ppo", help="the run folder")
    run.add_argument("--eval-every", type=non_negative_int, default=10,
                     help="iterations between held-out evaluations (0: first and last only)")
    run.add_argument("--eval-prompts", type=positive_int, default=64,
                     help="held-out prompts scored at each evaluation")
    run.add_argument("--save-every", type=non_negative_int, default=10,
                     help="iterations between checkpoints (0: only at the end)")
    run.add_argument("--seed", type=int, default=0, help="seeds the rollouts and the order")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the npplm run in --out (never a folder of other files)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_command)
    return p


def default_model():
    """DEFAULT_MODEL, pre-trained first with `npplm train`'s defaults if it holds no
    checkpoint yet."""
    import argparse

    from npplm.cli import train
    from npplm.training.checkpointing import latest_checkpoint

    if latest_checkpoint(DEFAULT_MODEL) is None:
        print(f"no policy in {DEFAULT_MODEL} yet: pre-training it with `npplm train` first")
        sub = argparse.ArgumentParser().add_subparsers()
        train.add_parser(sub)
        train.run_command(sub.choices["train"].parse_args(["--out", DEFAULT_MODEL]))
    return DEFAULT_MODEL


def run_command(args):
    import pathlib

    from npplm import alignment
    from npplm.training.run_folder import resolve_model

    with checking_arguments():
        config = alignment.PPOConfig(
            steps=args.steps, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
            ppo_epochs=args.ppo_epochs, lr=args.lr, critic_lr=args.critic_lr,
            max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, kl_coef=args.kl_coef,
            kl_estimator=args.kl_estimator, kl_target=args.kl_target,
            kl_horizon=args.kl_horizon, gamma=args.gamma, lam=args.lam,
            cliprange=args.cliprange, cliprange_value=args.cliprange_value,
            vf_coef=args.vf_coef, whiten_rewards=args.whiten_rewards,
            missing_eos_penalty=args.missing_eos_penalty, score_clip=args.score_clip,
            ptx_coef=args.ptx_coef, eval_every=args.eval_every, eval_prompts=args.eval_prompts,
            save_every=args.save_every, seed=args.seed)
        for name in ("model", "ref"):
            if getattr(args, name) is not None:
                resolve_model(getattr(args, name))  # named before any work
        if args.reward != "python":
            resolve_model(args.reward)
        if args.data is not None and not pathlib.Path(args.data).is_file():
            raise FileNotFoundError(f"--data {args.data}: no such file")
    model = args.model or default_model()
    trainer = alignment.train_ppo(model, args.out, config, reward=args.reward, ref=args.ref,
                                  data=args.data, overwrite=args.overwrite,
                                  progress=not args.quiet)
    evals = [r for r in trainer.history if "eval/scores" in r]
    if evals:
        first, last = evals[0], evals[-1]
        print(f"held out: score {first['eval/scores']:.4f} -> {last['eval/scores']:.4f}; "
              f"KL to the reference {last['eval/kl']:.3f}")
    print(f"checkpoint: {trainer.last_checkpoint}; metrics: {trainer.run_dir / 'metrics.jsonl'};"
          f" plot: {trainer.run_dir / 'rewards.png'}")
