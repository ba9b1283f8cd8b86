"""The OpenAI API's shapes: requests checked into engine Jobs, responses and errors built.

What clients send (the fields the `openai` package and the tools built on it use):

    POST /v1/chat/completions  {"model", "messages": [{"role", "content"}], "max_tokens" or
                               "max_completion_tokens", "temperature", "top_p", "stop", "seed",
                               "n": 1, "stream", "stream_options": {"include_usage"}}
    POST /v1/completions       {"model", "prompt": str, the same sampling fields}

Unknown fields are ignored, as OpenAI ignores them; a known field of the wrong type or out
of range is a 400 naming it. An error is OpenAI's JSON shape,
{"error": {"message", "type", "param", "code"}}, with the status: 400 bad parameters
(and a prompt over the context: code "context_length_exceeded"), 404 an unknown model, 503
a full queue.
"""

import math
import time
import uuid

MAX_STOPS = 4  # OpenAI's limit on `stop` sequences
DEFAULT_MAX_TOKENS = 256  # when the request names none (capped by the context)


class APIError(Exception):
    """An error answered in OpenAI's shape: status, message, the parameter, a code."""

    def __init__(self, status, message, param=None, code=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (status, message, param,
                                                                       code, kind)

    def body(self):
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def _number(body, name, lo, hi, default, integer=False, lo_open=False):
    value = body.get(name)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) \
            or value < lo or value > hi or (lo_open and value == lo):
        what = "an integer" if integer else "a number"
        where = f"in ({lo}, {hi}]" if lo_open else f"in [{lo}, {hi}]"
        raise APIError(400, f"{name}={value!r} must be {what} {where}", param=name,
                       code="invalid_value")
    return value


def _stops(body):
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) \
            or len(stops) > MAX_STOPS:
        raise APIError(400, f"stop must be a non-empty string or a list of at most {MAX_STOPS} "
                       "of them", param="stop", code="invalid_value")
    return stops


def check_model(body, served):
    name = body.get("model")
    if name is None:
        raise APIError(400, "you must provide a model parameter", param="model",
                       code="missing_required_parameter")
    if name != served:
        raise APIError(404, f"The model {name!r} does not exist; this server serves "
                       f"{served!r}", param="model", code="model_not_found")


def sampling(body, prompt_tokens, context):
    """The Job settings of a request (max_new_tokens, temperature, top_p, seed, stop)."""
    if body.get("n", 1) != 1:
        raise APIError(400, f"n={body.get('n')!r}: this server writes one choice per request",
                       param="n", code="invalid_value")
    if not isinstance(body.get("stream", False), bool):
        raise APIError(400, "stream must be true or false", param="stream",
                       code="invalid_type")
    room = context - prompt_tokens
    if room < 1:
        raise APIError(400, f"This model's maximum context length is {context} tokens; the "
                       f"prompt has {prompt_tokens}, which leaves no room for a reply",
                       param="messages", code="context_length_exceeded")
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    max_tokens = _number(body, name, 1, 1 << 31, None, integer=True)
    if max_tokens is not None and max_tokens > room:
        raise APIError(400, f"This model's maximum context length is {context} tokens; the "
                       f"prompt has {prompt_tokens} and {name}={max_tokens} asks for more "
                       "than the rest", param=name, code="context_length_exceeded")
    return dict(max_new_tokens=max_tokens or min(DEFAULT_MAX_TOKENS, room),
                temperature=float(_number(body, "temperature", 0.0, 2.0, 1.0)),
                top_p=_number(body, "top_p", 0.0, 1.0, None, lo_open=True),
                seed=_number(body, "seed", -(1 << 63), (1 << 63) - 1, None, integer=True),
                stop=_stops(body))


def messages_of(body):
    """The chat messages, checked: a non-empty list of {"role", "content": str}. Content given
    as a list of text parts (the newer OpenAI form) is joined."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {role, content}",
                       param="messages", code="invalid_value")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise APIError(400, f"messages[{i}] must be an object with a role",
                           param=f"messages[{i}]", code="invalid_value")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str) for p in content):
                raise APIError(400, f"messages[{i}].content: only text parts are supported",
                               param=f"messages[{i}].content", code="invalid_value")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string",
                           param=f"messages[{i}].content", code="invalid_type")
        out.append({"role": m["role"], "content": content})
    return out


def prompt_of(body):
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise APIError(400, "prompt must be a non-empty string", param="prompt",
                       code="invalid_value")
    return prompt


# --- responses -----------------------------------------------------------------------------

class Reply:
    """The response shapes of one request, chat or text completion, whole or streamed."""

    def __init__(self, model, chat):
        self.model, self.chat = model, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def _head(self, obj):
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    @staticmethod
    def usage(finished):
        return {"prompt_tokens": finished.prompt_tokens,
                "completion_tokens": finished.completion_tokens,
                "total_tokens": finished.prompt_tokens + finished.completion_tokens}

    def whole(self, text, finished):
        reason = "length" if finished.finish_reason == "length" else "stop"
        choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                   "finish_reason": reason, "logprobs": None} if self.chat
                  else {"index": 0, "text": text, "finish_reason": reason, "logprobs": None})
        return {**self._head(self.object), "choices": [choice], "usage": self.usage(finished)}

    def chunk(self, text=None, finished=None, first=False):
        """One streamed chunk: the role first (chat), then text deltas, then the finish."""
        reason = None if finished is None else (
            "length" if finished.finish_reason == "length" else "stop")
        if self.chat:
            delta = {"role": "assistant", "content": ""} if first else (
                {} if text is None else {"content": text})
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        return {**self._head("text_completion"), "choices": [choice]}

    def usage_chunk(self, finished):
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": self.usage(finished)}
