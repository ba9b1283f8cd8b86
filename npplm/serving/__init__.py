"""Serving: a model behind OpenAI's HTTP API, for the `openai` client, curl or a browser.

    engine.py    the thread that owns the model and decodes queued requests, continuously
                 batched, streaming text as it comes, with stop sequences, cancellation and
                 per-request logs
    protocol.py  OpenAI's request fields checked, its response and error shapes
    app.py       the FastAPI routes (/v1/chat/completions, /v1/completions, /v1/models,
                 /health, /metrics) and serve(), which runs them under uvicorn

`npplm serve` is thin over serve(). This floor sits above inference and below the command
line.
"""

from npplm.serving.app import create_app, serve
from npplm.serving.engine import BatchingEngine, Engine, Finished, Job, QueueFull

__all__ = ["BatchingEngine", "Engine", "Finished", "Job", "QueueFull", "create_app", "serve"]
