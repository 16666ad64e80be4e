"""OpenAI-compatible endpoints of `prompttune serve`, so that OpenAI's clients use registry prompts
as models: `GET /v1/models`, `POST /v1/completions` and `POST /v1/chat/completions`, where `model`
is `NAME`, `NAME@VERSION` or `NAME@ALIAS`.

Completions for different prompts are decoded together: on a decoder-only model in the continuous
batch (prompttune/inference/continuous.py), which a request joins at the next decoding step, and on
an encoder-decoder in the micro-batcher's mixed batches, like `/v1/generate`. Sampling follows
OpenAI's parameters (`temperature` 0 is greedy decoding; otherwise sampling with `temperature` and
`top_p`; `n` sequences per prompt; `seed` seeds the request's own draws in the continuous batch, and
the batch it runs in otherwise; `stop` cuts a completion before the first to appear of up to 4
strings of at most 500 characters, each character read once per string), and each
answer carries `finish_reason` ("stop" at the end-of-sequence token or a stop string, "length" at
`max_tokens`) and `usage`. A chat completion sends one user message, which the prompt reads as its
source (a prompt made with `--chat` wraps it in the model's chat template itself). Errors have
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, and its statuses. What is not
served (echo, penalties, logit bias, suffix) is a 400 that names the parameter.

Log-probabilities (`logprobs` 0-5 on a completion; `logprobs` and `top_logprobs` 0-20 on a chat
completion) are served where the continuous batch decodes, without `stream`: each token's
log-probability under the model's own distribution at its step (before temperature and top-p, as
vLLM reports them by default), and the most likely alternatives, for the tokens of the text
returned (a stop string cuts them with it).

With `stream`, the answer is server-sent events, token by token as the batch decodes: OpenAI's
chunks (`text_completion` or `chat.completion.chunk`), the last of each choice with its
`finish_reason`, `usage` in a final chunk when `stream_options.include_usage` asks, then
`data: [DONE]`. A client that goes away stops its sequences at the next decoding step; the others
in its batch go on.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "invalid_request_error",
        409: "invalid_request_error",
        413: "invalid_request_error",
        422: "invalid_request_error",
        500: "server_error",
    }

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.TYPES.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code,
            }
        }


OPENAI_PATHS = ("/v1/models", "/v1/completions", "/v1/chat/completions")

STOP_STRINGS, STOP_CHARS = 4, 500
StopText = Annotated[str, StringConstraints(min_length=1, max_length=STOP_CHARS)]


class _Request(BaseModel):
    # Strict: a number is a JSON number ("5" and true are not 5), as OpenAI's API reads it.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    model: str = Field(max_length=300, description="NAME, NAME@VERSION or NAME@ALIAS in the registry")
    max_tokens: int | None = Field(16, ge=1, le=1024)
    temperature: float | None = Field(1.0, ge=0, le=2)
    top_p: float | None = Field(1.0, gt=0, le=1)
    n: int | None = Field(1, ge=1, le=16)
    stop: StopText | Annotated[list[StopText], Field(max_length=STOP_STRINGS)] | None = Field(
        None,
        description=f"up to {STOP_STRINGS} strings of 1 to {STOP_CHARS} characters; a completion ends before "
        "the first of them to appear",
    )
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool | None = False
    stream_options: dict | None = None
    logprobs: int | bool | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    logit_bias: dict | None = None
    user: str | None = Field(None, max_length=256)

    @field_validator("stop", mode="before")
    @classmethod
    def _bounded_stop(cls, value):
        """Stop strings bounded in count and length, with one message (not one per branch of the union)."""
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list):
            if len(items) > STOP_STRINGS:
                raise PydanticCustomError(
                    "stop_strings", "{count} strings; at most {most}", {"count": len(items), "most": STOP_STRINGS}
                )
            for i, stop in enumerate(items):
                if isinstance(stop, str) and not 1 <= len(stop) <= STOP_CHARS:
                    raise PydanticCustomError(
                        "stop_length",
                        "string {i} has {length} characters; each is 1 to {most}",
                        {"i": i, "length": len(stop), "most": STOP_CHARS},
                    )
        return value


class CompletionRequest(_Request):
    prompt: str | list[str] = Field(description="a source text, or a list of them")
    echo: bool | None = False
    best_of: int | None = Field(None, ge=1, le=16)
    suffix: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list | None = None
    name: str | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    top_logprobs: int | None = None


UNSERVED = {
    "echo": "echo is not served",
    "suffix": "a suffix is not served",
    "logit_bias": "logit bias is not served",
    "presence_penalty": "presence_penalty is not served (send 0)",
    "frequency_penalty": "frequency_penalty is not served (send 0)",
}


def stop_strings(body: _Request) -> list[str]:
    """`stop` as a list (OpenAI takes one string or several)."""
    return [body.stop] if isinstance(body.stop, str) else list(body.stop or [])


def check_served(body: _Request) -> None:
    """A 400 for a parameter this server does not honour, rather than an answer that ignores it."""
    for name, why in UNSERVED.items():
        value = getattr(body, name, None)
        if value not in (None, False, 0, 0.0, {}):
            raise OpenAIError(400, f"{name}: {why}", param=name, code="unsupported_parameter")
    best_of = getattr(body, "best_of", None)
    if best_of is not None and best_of != (body.n or 1):
        raise OpenAIError(
            400, "best_of: only best_of equal to n is served", param="best_of", code="unsupported_parameter"
        )
    top = getattr(body, "top_logprobs", None)
    if isinstance(body, ChatRequest):
        if body.logprobs not in (None, True, False):
            raise OpenAIError(400, "logprobs: true or false in a chat completion", param="logprobs")
        if top is not None and (isinstance(top, bool) or not 0 <= top <= 20):
            raise OpenAIError(400, "top_logprobs: an integer from 0 to 20", param="top_logprobs")
        if top and not body.logprobs:
            raise OpenAIError(400, "top_logprobs: needs logprobs true", param="top_logprobs")
    elif body.logprobs is not None and (isinstance(body.logprobs, bool) or not 0 <= body.logprobs <= 5):
        raise OpenAIError(400, "logprobs: an integer from 0 to 5 in a completion", param="logprobs")
    if body.stream and requested_logprobs(body) is not None:
        raise OpenAIError(400, "logprobs: served without stream", param="logprobs", code="unsupported_parameter")


def requested_logprobs(body: _Request) -> int | None:
    """How many most likely tokens to list at each position (0: only the chosen token's
    log-probability), or None where the request asks for no log-probabilities."""
    if isinstance(body, ChatRequest):
        return (body.top_logprobs or 0) if body.logprobs else None
    return None if body.logprobs is None else int(body.logprobs)


def choice_logprobs(sequence: dict, text: str, tokenizer, top: int, chat: bool) -> dict:
    """OpenAI's `logprobs` of one choice, for the tokens of its (possibly stop-cut) text: for a
    completion `tokens`, `token_logprobs`, `top_logprobs` and `text_offset` (into the completion);
    for a chat completion `content`, one entry per token with its bytes and its top alternatives.
    A token's text is what it adds after the token before it (its leading space included, which
    decoding a token alone loses with some tokenizers)."""
    ids, entries = sequence["token_ids"], sequence["logprobs"]

    def pieces_after(i: int, tokens: list[int]) -> list[str]:
        """The text each of `tokens` adds at position i, after the token before it."""
        if i == 0:
            return [tokenizer.decode([t]) for t in tokens]
        previous = ids[i - 1]
        skip = len(tokenizer.decode([previous]))
        return [tokenizer.decode([previous, t])[skip:] for t in tokens]

    pieces = [pieces_after(i, [token])[0] for i, token in enumerate(ids)]
    lead = len(pieces[0]) - len(pieces[0].lstrip()) if pieces else 0  # the answer's text is stripped
    offsets, at = [], -lead
    for p in pieces:
        offsets.append(max(at, 0))
        at += len(p)
    kept = len(ids) if text == sequence["text"] else sum(1 for o in offsets if o < len(text))
    rows = []
    for i in range(kept):
        _, logprob, alternatives = entries[i]
        texts = pieces_after(i, [t for t, _ in alternatives])
        rows.append((pieces[i], logprob, [(text, lp) for text, (_, lp) in zip(texts, alternatives)]))
    if chat:

        def entry(token: str, logprob: float) -> dict:
            return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

        return {
            "content": [{**entry(t, lp), "top_logprobs": [entry(a, alp) for a, alp in alts]} for t, lp, alts in rows],
            "refusal": None,
        }
    return {
        "tokens": [t for t, _, _ in rows],
        "token_logprobs": [lp for _, lp, _ in rows],
        "top_logprobs": None if not top else [dict(alts) for _, _, alts in rows],
        "text_offset": offsets[:kept],
    }


def generation_options(body: _Request) -> dict:
    """transformers' decoding options for an OpenAI request (one sequence per prompt with greedy
    decoding: `n` copies are made of it)."""
    options = {"max_new_tokens": body.max_tokens or 16, "num_beams": 1}  # OpenAI's decoding has no beams
    temperature = 1.0 if body.temperature is None else body.temperature
    if temperature > 0:
        options.update(do_sample=True, temperature=max(temperature, 0.001))
        if body.top_p is not None and body.top_p < 1:
            options["top_p"] = body.top_p
        if (body.n or 1) > 1:
            options["num_return_sequences"] = body.n
    if body.seed is not None:
        options["seed"] = body.seed
    return options


def completion_response(model: str, sequences: list[list[dict]], body: _Request, chat: bool, tokenizer=None) -> dict:
    stops = stop_strings(body)
    top = requested_logprobs(body)
    n = body.n or 1
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for per_prompt in sequences:
        prompt_tokens += per_prompt[0]["prompt_tokens"]
        drawn = per_prompt if len(per_prompt) == n else per_prompt * n  # greedy: n copies of the one sequence
        for sequence in drawn[:n]:
            text, reason = cut_at_stop(sequence, stops)
            completion_tokens += sequence["tokens"]
            index = len(choices)
            logprobs = None if top is None else choice_logprobs(sequence, text, tokenizer, top, chat)
            if chat:
                choices.append(
                    {
                        "index": index,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": logprobs,
                        "finish_reason": reason,
                    }
                )
            else:
                choices.append({"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason})
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "system_fingerprint": None,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chat_source(messages: list[ChatMessage]) -> str:
    """The one user message a chat completion sends, which the prompt reads as its source."""
    if len(messages) != 1 or messages[0].role != "user":
        raise OpenAIError(
            400,
            "messages: send one user message; a registry prompt reads it as its source (its own "
            "instruction and chat wrapping, if it was made with them, come from the prompt)",
            param="messages",
        )
    content = messages[0].content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
            raise OpenAIError(400, "messages[0].content: only text parts are served", param="messages")
        content = "".join(parts)
    if not isinstance(content, str) or not content.strip():
        raise OpenAIError(400, "messages[0].content: the message is empty", param="messages")
    return content


def model_list(registry) -> dict:
    """Every prompt in the registry, by NAME (its latest version), NAME@VERSION and NAME@ALIAS."""
    import datetime as dt

    data = []
    for entry in registry.list():
        name = entry["name"]
        for row in registry.list(name):
            pushed = int(dt.datetime.fromisoformat(row["pushed"]).timestamp())
            ids = [f"{name}@{row['version']}"] + [f"{name}@{alias}" for alias in row.get("aliases") or []]
            if row["version"] == entry["latest"]:
                ids.insert(0, name)
            for model_id in ids:
                data.append(
                    {
                        "id": model_id,
                        "object": "model",
                        "created": pushed,
                        "owned_by": "prompttune",
                        "task": row["task"],
                        "method": row["method"],
                        "base_model": (row.get("base_model") or {}).get("name_or_path"),
                    }
                )
    return {"object": "list", "data": data}


class TokenStream:
    """One streamed request's side of a batch: the worker thread hands it each token as it is
    decoded (`token`), the event loop reads them from `queue`; `stopped` ends its sequences."""

    def __init__(self, loop):
        import asyncio

        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.stopped = False

    def token(self, prompt: int, sequence: int, token: int, end: bool) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (prompt, sequence, token, end))

    def prompt(self, prompt: int, tokens: int) -> None:
        """The length of a prompt's input, as its batch starts (sequence -1 in the queue)."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (prompt, -1, tokens, False))


class StopScanner:
    """The first stop string in a text read as it grows, and how many characters at its end could
    begin one: each character is looked at once per stop string (Knuth-Morris-Pratt), so the cost
    is the text's length times the number of stop strings, however long the stop strings are.

    A completion is cut before the stop string that ends first in its text (of two that end at the
    same character, the longer)."""

    def __init__(self, stops: list[str]):
        self.stops = list(stops)
        self.tables = [self._failure(s) for s in self.stops]
        self._reset()

    @staticmethod
    def _failure(stop: str) -> list[int]:
        table, k = [0] * len(stop), 0
        for i in range(1, len(stop)):
            while k and stop[i] != stop[k]:
                k = table[k - 1]
            if stop[i] == stop[k]:
                k += 1
            table[i] = k
        return table

    def _reset(self) -> None:
        self.text = ""
        self.states = [0] * len(self.stops)  # per stop: how much of it the text ends with
        self.cut: int | None = None  # where the text is cut, once a stop string has been read

    def feed(self, text: str) -> None:
        """Read `text`, the whole text so far (usually what was read before and more)."""
        if self.cut is not None and text.startswith(self.text):
            return
        if not text.startswith(self.text):  # the end of the text was decoded anew: read it again
            self._reset()
        for position in range(len(self.text), len(text)):
            char = text[position]
            ended = None
            for i, stop in enumerate(self.stops):
                k, table = self.states[i], self.tables[i]
                while k and char != stop[k]:
                    k = table[k - 1]
                if char == stop[k]:
                    k += 1
                if k == len(stop):
                    if ended is None or len(stop) > len(self.stops[ended]):
                        ended = i
                    k = table[k - 1]
                self.states[i] = k
            if ended is not None:
                self.text = text[: position + 1]
                self.cut = position + 1 - len(self.stops[ended])
                return
        self.text = text

    @property
    def held(self) -> int:
        """How many characters at the end of the text read could begin a stop string."""
        return max(self.states, default=0)


def cut_at_stop(sequence: dict, stops: list[str]) -> tuple[str, str]:
    """(text, finish_reason) of one generated sequence, cut before its first stop string."""
    text = sequence["text"]
    scanner = StopScanner(stops)
    scanner.feed(text)
    if scanner.cut is not None:
        return text[: scanner.cut], "stop"
    return text, "stop" if sequence["finished"] else "length"


class StreamText:
    """A streamed sequence's text: what to send as tokens arrive, cut before a stop string."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.scanner = tokenizer, StopScanner(stops)
        self.ids: list[int] = []
        self.sent = 0
        self.done = False
        self.reason: str | None = None

    def add(self, token: int, end: bool) -> str:
        """The new text to send after `token` ("" while a character or a possible stop is incomplete)."""
        if self.done:
            return ""
        if end:
            self.done, self.reason = True, "stop"
            return self._flush(final=True)
        self.ids.append(token)
        return self._flush(final=False)

    def _flush(self, final: bool) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        # A character split across tokens decodes as U+FFFD until its last token comes.
        complete = text if final else text.rstrip("\ufffd")
        self.scanner.feed(complete)
        if self.scanner.cut is not None:
            text, self.done, self.reason, final = complete[: self.scanner.cut], True, "stop", True
        if not final:
            if len(complete) < len(text):
                return ""
            text = text[: len(text) - self.scanner.held]
        new, self.sent = text[self.sent :], max(self.sent, len(text))
        return new

    def finish(self, reached_limit: bool) -> str:
        """What is left to send when decoding ends, and the reason it ended."""
        if self.done:
            return ""
        rest = self._flush(final=True)
        self.done, self.reason = True, "length" if reached_limit else "stop"
        return rest
