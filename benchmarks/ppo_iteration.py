"""Where the time of one PPO iteration goes, and the rollout's speed beside plain `generate`.

    .venv/bin/python benchmarks/ppo_iteration.py [--model PATH] [--reward JUDGE]
        [--iterations N] [--batch-size B] [--max-new-tokens N]

An iteration of npplm.alignment.ppo is four phases: the rollout (the policy samples B
responses with the cached generate), scoring (the judge), the reference pass (no-gradient
forwards of the policy, the reference and the critic over prompt + response) and the
update (ppo_epochs x B / mini_batch_size forward + backward steps of the policy and the
critic). This runs `--iterations` of them after one warm-up, prints each phase's median
seconds and share, and the rollout's tokens/s (B x decode steps / rollout seconds) beside
`policy.generate` timed on the same prompts with the same settings, which the rollout is
built on and should equal (timed on the same prompts, with the same seeds; the policy
there is the starting one, whose responses are as long). Default: the GPT-2 of
`npplm train` (runs/gpt-default) with the
"python" judge, PPO's defaults (B = 32, 32 new tokens).
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

PHASES = ("rollout", "score", "reference", "update")


def main(argv=None):
    from autograd import no_grad
    from npplm.alignment import PPOConfig
    from npplm.alignment.judges import resolve_judge
    from npplm.alignment.ppo import PPOTrainer, critic_from, left_pad, prompt_rows
    from npplm.alignment.stage import load_policy

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/gpt-default")
    p.add_argument("--reward", default="python", help="a judge: 'python' or a reward model")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mini-batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    args = p.parse_args(argv)
    from npplm import runtime

    runtime.configure()  # the thread settings every npplm training loop applies first

    config = PPOConfig(steps=args.iterations + 1, batch_size=args.batch_size,
                       mini_batch_size=min(args.mini_batch_size, args.batch_size),
                       max_new_tokens=args.max_new_tokens)
    policy, tokenizer = load_policy(args.model)
    reference, _ = load_policy(args.model)
    policy_at_start, _ = load_policy(args.model)  # generate's side: the same weights, unchanged
    judge, name = resolve_judge(args.reward)
    critic = critic_from(policy, tokenizer, judge, log=lambda *_: None)
    train, _ = prompt_rows(None, tokenizer)
    trainer = PPOTrainer(policy, reference, critic, tokenizer, judge, train, [], config,
                         log=lambda *_: None, drop_long=True)
    print(f"{platform.processor() or platform.machine()}, {args.model}, judge {name}: "
          f"B = {args.batch_size}, {args.max_new_tokens} new tokens, minibatches of "
          f"{config.mini_batch_size}, {config.ppo_epochs} epochs")
    records = [trainer.iteration() for _ in range(args.iterations + 1)][1:]  # after a warm-up
    seconds = {k: statistics.median(r[f"time/{k}"] for r in records) for k in PHASES}
    total = sum(seconds.values())
    for k in PHASES:
        print(f"  {k:10s} {seconds[k]:7.3f} s  {100 * seconds[k] / total:5.1f}%")
    print(f"  {'iteration':10s} {total:7.3f} s")
    rollout_speed = statistics.median(r["rollout_tokens_per_s"] for r in records)

    # Plain generate on each measured iteration's prompts, with its seed: the same tokens.
    speeds = []
    for k in range(1, args.iterations + 1):
        prompts = [trainer.train[i] for i in trainer.order.indices(k * args.batch_size,
                                                                   args.batch_size)]
        ids, mask = left_pad([q.ids for q in prompts], trainer.pad)
        with no_grad():
            start = time.perf_counter()
            out = policy_at_start.generate(
                ids, config.max_new_tokens, attention_mask=mask, temperature=config.temperature,
                eos_token_id=sorted(trainer.eos) or None, pad_token_id=trainer.pad,
                seed=[config.seed, 1, k])
            elapsed = time.perf_counter() - start
        speeds.append((out.shape[1] - ids.shape[1]) * len(ids) / elapsed)
    generate_speed = statistics.median(speeds)
    print(f"rollout {rollout_speed:,.0f} tokens/s; plain generate {generate_speed:,.0f} "
          f"tokens/s; ratio {rollout_speed / generate_speed:.2f}")
    return seconds, rollout_speed, generate_speed


if __name__ == "__main__":
    main()
