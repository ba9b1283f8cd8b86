"""Load on `npplm serve`: N concurrent streaming clients for a fixed time, on the loopback.

    .venv/bin/python benchmarks/serve_load.py [--model PATH] [--clients 16] [--seconds 30]
        [--max-tokens 64] [--max-batch 8]

Starts a server process on a free loopback port (default model: SmolLM2-135M-Instruct, as
`npplm serve`), then runs `--clients` threads, each asking the official `openai` client for
streamed chat completions one after another (a different question each time, from the
standard library's docstring questions, temperature 0) until `--seconds` have passed; the
requests running at that moment finish. Prints the requests, errors, the aggregate
completion tokens/s (all clients' tokens over the wall time) and the time to first token
(p50, p95) and stops the server. Bounded: --clients <= 64 and --seconds <= 600.
"""

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, port, max_batch):
    command = [sys.executable, "-m", "npplm", "serve", "--port", str(port), "--max-queue", "256",
               "--max-batch", str(max_batch)]
    if model:
        command += ["--model", model]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited before answering /health")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not answer /health within 180 s")


def main(argv=None):
    import openai

    from npplm.alignment.docstrings import question_prompts

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="default: the server's (SmolLM2)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=8,
                   help="the server's --max-batch (1: one request at a time)")
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 64 and 0 < args.seconds <= 600):
        raise SystemExit("--clients must lie in [1, 64] and --seconds in (0, 600]")
    questions = [row["prompt"] for row in question_prompts("validation", conversational=True)]
    port = free_port()
    server = start_server(args.model, port, args.max_batch)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                               max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        lock, results, errors = threading.Lock(), [], []
        start = time.perf_counter()
        end = start + args.seconds

        def run(worker):
            k = worker
            while time.perf_counter() < end:
                sent = time.perf_counter()
                first, tokens = None, 0
                try:
                    for chunk in client.chat.completions.create(
                            model=model, messages=questions[k % len(questions)],
                            max_tokens=args.max_tokens, temperature=0, stream=True,
                            stream_options={"include_usage": True}):
                        if chunk.choices and chunk.choices[0].delta.content and first is None:
                            first = time.perf_counter() - sent
                        if chunk.usage is not None:
                            tokens = chunk.usage.completion_tokens
                    with lock:
                        results.append((first, tokens))
                except Exception as e:  # counted and shown, never hidden
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                k += args.clients

        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    firsts = sorted(f for f, _ in results if f is not None)
    tokens = sum(n for _, n in results)
    p95 = firsts[min(len(firsts) - 1, int(0.95 * len(firsts)))] if firsts else float("nan")
    print(f"{model}, --max-batch {args.max_batch}: {args.clients} clients for "
          f"{args.seconds:.0f} s (wall {wall:.1f} s): "
          f"{len(results)} requests, {len(errors)} errors, {tokens} completion tokens, "
          f"{tokens / wall:.1f} tokens/s in all; time to first token p50 "
          f"{statistics.median(firsts) if firsts else float('nan'):.2f} s, p95 {p95:.2f} s")
    for error in errors[:5]:
        print("  error:", error)
    return {"requests": len(results), "errors": len(errors), "tokens_per_s": tokens / wall}


if __name__ == "__main__":
    main()
