"""`npplm ppo` through the command line: a short run on a tiny trained GPT-2 that resumes,
and its errors in one line before any work."""

import json


def test_ppo_runs_resumes_and_its_policy_generates(npplm, family_runs, tmp_path):
    out = tmp_path / "ppo"
    args = ["ppo", "--model", family_runs["gpt"], "--out", out, "--steps", "2", "--batch-size",
            "4", "--mini-batch-size", "2", "--eval-prompts", "4", "--max-new-tokens", "8",
            "--quiet"]
    result = npplm(*args)
    assert result.code == 0, result.err
    assert "held out: score" in result.out and "rewards.png" in result.out
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "episode" in r] == [1, 2]
    again = npplm(*args)  # the same request: resumed, nothing left to do
    assert again.code == 0 and "resuming from" in again.out + again.err
    generated = npplm("generate", "--model", out, "--prompt", "def f(x):", "--max-new-tokens",
                      "4")
    assert generated.code == 0, generated.err


def test_ppo_errors_are_one_line(npplm, family_runs, tmp_path):
    bad = npplm("ppo", "--model", family_runs["gpt"], "--batch-size", "2",
                "--mini-batch-size", "4", "--out", tmp_path / "x")
    assert bad.code == 2
    assert bad.err.strip().count("\n") == 0
    assert "mini_batch_size=4 exceeds batch_size=2" in bad.err
    missing = npplm("ppo", "--model", family_runs["gpt"], "--reward", tmp_path / "nope",
                    "--out", tmp_path / "y")
    assert missing.code != 0 and "no such file or folder" in missing.err
    other = npplm("ppo", "--model", family_runs["gpt"], "--reward", family_runs["llama"],
                  "--out", tmp_path / "z", "--quiet")
    assert other.code == 1 and "not a reward model" in other.err
    assert not (tmp_path / "z").exists()
