"""The HTTP side: FastAPI routes over the engine, OpenAI's paths and shapes.

    GET  /health                 {"status": "ok", "model": ...}
    GET  /v1/models              the one model served
    POST /v1/chat/completions    messages through the model's own chat template
    POST /v1/completions         a prompt continued as it is
    GET  /metrics                request and token counters, the queue's length
    GET  /                       the chat page (static/chat.html: one file, no build step,
                                 nothing fetched from elsewhere), streaming its answers

A streamed request (`"stream": true`) is answered with server-sent events, `data: {chunk}`
lines ending in `data: [DONE]`, each text piece as soon as the engine emits it; a client
that disconnects mid-stream cancels its job. The engine's thread hands events to the
request's asyncio queue with `call_soon_threadsafe`.
"""

import asyncio
import json
import logging
import pathlib

from npplm.serving.engine import BatchingEngine, Engine, Job, QueueFull
from npplm.serving.protocol import (
    APIError,
    Reply,
    check_model,
    messages_of,
    prompt_of,
    sampling,
)

log = logging.getLogger("npplm.serving")
CHAT_PAGE = pathlib.Path(__file__).with_name("static") / "chat.html"  # served at /


def create_app(engine, model_name):
    """The FastAPI application serving `engine`'s model under the id `model_name`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

    app = FastAPI(title="npplm", docs_url=None, redoc_url=None)
    context = engine.model.context_length or 1 << 30

    @app.exception_handler(APIError)
    async def api_error(request, error):
        return JSONResponse(error.body(), status_code=error.status)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return CHAT_PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model",
                                            "created": 0, "owned_by": "npplm"}]}

    @app.get("/metrics")
    async def metrics():
        return {**engine.counters, "queued": engine.jobs.qsize()}

    async def body_of(request):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}",
                           code="invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object", code="invalid_json")
        check_model(body, model_name)
        return body

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await body_of(request)
        messages = messages_of(body)
        tokenizer = engine.tokenizer
        if getattr(tokenizer, "chat_template", None) is None:
            raise APIError(400, f"the model {model_name!r} has no chat template; use "
                           "/v1/completions", code="no_chat_template")
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        except Exception as e:  # a role or layout the template refuses
            raise APIError(400, f"the chat template cannot render these messages: {e}",
                           param="messages", code="invalid_value") from None
        ids = list(tokenizer.encode(text, add_special_tokens=False).ids)
        return await answer(request, body, ids, Reply(model_name, chat=True))

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await body_of(request)
        ids = list(engine.tokenizer.encode(prompt_of(body)).ids)
        return await answer(request, body, ids, Reply(model_name, chat=False))

    async def answer(request, body, ids, reply):
        job = Job(ids, **sampling(body, len(ids), context), id=reply.id)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        try:
            engine.submit(job, lambda event: loop.call_soon_threadsafe(events.put_nowait,
                                                                       event))
        except QueueFull as e:
            raise APIError(503, str(e), code="server_busy", kind="server_error") from None
        if body.get("stream", False):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(stream(job, events, reply, include_usage),
                                     media_type="text/event-stream")
        pieces = []
        while True:
            kind, value = await events.get()
            if kind == "text":
                pieces.append(value)
            elif kind == "error":
                raise APIError(500, value, kind="server_error")
            else:
                return reply.whole("".join(pieces), value)

    async def stream(job, events, reply, include_usage):
        def sse(obj):
            return f"data: {json.dumps(obj)}\n\n"

        try:
            if reply.chat:
                yield sse(reply.chunk(first=True))
            while True:
                kind, value = await events.get()
                if kind == "text":
                    yield sse(reply.chunk(text=value))
                elif kind == "error":
                    yield sse(APIError(500, value, kind="server_error").body())
                    break
                else:
                    yield sse(reply.chunk(finished=value))
                    if include_usage:
                        yield sse(reply.usage_chunk(value))
                    break
            yield "data: [DONE]\n\n"
        finally:  # the client went away (or we are done): nothing more to decode for it
            job.cancel()

    return app


def serve(model_path, host="127.0.0.1", port=8000, max_queue=64, timeout=600.0, max_batch=8,
          log_level="info", kv_cache_dtype=None):
    """Load the model at `model_path` and serve it until interrupted (uvicorn).
    kv_cache_dtype: what the KV caches store (None: the model's dtype; "int8")."""
    import uvicorn

    from npplm import runtime
    from npplm.generation import GenerationMixin
    from npplm.quantization import is_quantized
    from npplm.training.run_folder import load_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    runtime.configure()  # the engine's thread is the only one that runs the model's kernels
    model, tokenizer = load_model(model_path, log=log.info)
    if is_quantized(model):  # ~200 short kernels a token: the spinning pool (runtime, 2b)
        runtime.use_spinning_thread_pool()
    if not isinstance(model, GenerationMixin):
        raise ValueError(f"{model_path} holds a {type(model).__name__}: the server takes a "
                         "decoder-only model (GPT, LLaMA)")
    name = pathlib.Path(model_path).name.removesuffix(".gguf")
    engine = (BatchingEngine(model, tokenizer, max_queue=max_queue, timeout=timeout,
                             max_batch=max_batch, kv_cache_dtype=kv_cache_dtype)
              if max_batch > 1 else
              Engine(model, tokenizer, max_queue=max_queue, timeout=timeout,
                     kv_cache_dtype=kv_cache_dtype))
    log.info("serving %s as %r on http://%s:%d", model_path, name, host, port)
    uvicorn.run(create_app(engine, name), host=host, port=port, log_level=log_level)
