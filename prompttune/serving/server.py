"""`prompttune serve`: one frozen model, every prompt in a registry, over HTTP.

    prompttune serve --model all-MiniLM-L6-v2 --registry ./registry --port 8000

- `POST /v1/classify` and `POST /v1/generate` take `prompt: "NAME[@VERSION|@ALIAS]"` and a list of
  inputs. The prompt is looked up in the registry on every request, so a version pushed while the
  server runs is served at once, without a restart; a version is loaded onto the model the first
  time it is asked for (at most `max_loaded` stay loaded, least recently used first out).
- Requests that arrive together, for any prompts, are joined into one mixed batch (prompttune/serving/batcher.py,
  prompttune/inference/mixed.py): at most `max_batch_size` rows, waiting at most `max_wait_ms` for company. With
  `max_batch_tokens`, the joined rows are run in order of length, in forwards of at most that many
  padded tokens (less padding; on a CPU, where a forward's cost grows with its tokens, faster).
- On a decoder-only model, the OpenAI endpoints' requests are decoded in a continuous batch
  (prompttune/inference/continuous.py) that a request joins at the next decoding step, in its own
  thread (`StepLoop`), taking the model's lock one step at a time.
- `GET /v1/prompts`, `GET /health`, and `GET /metrics` for Prometheus: requests and latency per
  endpoint and status, rows and requests per batch, and every prompt's predicted labels, so a drift
  in what a prompt predicts shows on a dashboard.
- Work per request is bounded before anything is parsed or run (prompttune/gate.py): the
  bearer token is checked before the body is read; a body larger than `max_body_bytes` is refused
  from its Content-Length (or as soon as that many bytes have arrived), one slower than
  `body_timeout_s` gets a 408, one that is not Unicode text a 400/422; the number and length of
  inputs are checked before the inputs are validated, and a generation request may decode at most
  `max_request_tokens` tokens (inputs x beams or sequences x new tokens). Nothing a request sends is
  decoded or scanned on the event loop that answers the others (see docs/promises.md).
- Bad requests get a 4xx status and a message: unknown prompt or version (404), a name no prompt can
  have (400), a prompt of the wrong task or made for another base model (400/409), too many, too
  long or too costly inputs (413), malformed JSON or fields (422), a missing or wrong bearer token
  (401). Messages quote at most a short prefix of what was sent, and never name the server's files.
  A prompt whose stored files are damaged gets a 500 that says so (the server log has the details);
  the server and the requests batched with it carry on.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..artifacts.artifact import check_base_model
from ..artifacts.registry import BadSpec, Registry, RegistryError, StoreDamaged
from ..core.backbone import Backbone
from ..errors import ArtifactError, PromptTuneError, quoted
from ..gate import RequestGate
from ..inference import continuous
from ..inference.mixed import PromptSet
from ..storage import StorageError
from ..tasks import task_class
from ..tasks.data import Example
from ..tasks.generation import check_generation_options
from . import openai_api
from .batcher import MicroBatcher, StepLoop, settle
from .openai_api import OpenAIError

log = logging.getLogger("prompttune.serving.server")


# ---- the HTTP schema ------------------------------------------------------------------------------

# A text must hold something besides white space (Python's notion of it, which the server applies).
Text = Annotated[str, StringConstraints(pattern=r"\S"), Field(description="text with at least one non-space character")]
PromptName = Annotated[
    str,
    StringConstraints(max_length=300),
    Field(description="NAME, NAME@VERSION or NAME@ALIAS in the registry", examples=["sentiment@production"]),
]


class _Strict(BaseModel):
    # Strict: a number is a JSON number and a flag a JSON boolean ("5" is not 5, 1 is not true).
    model_config = ConfigDict(extra="forbid", regex_engine="python-re", allow_inf_nan=False, strict=True)


class TooLarge(Exception):
    """A request over the server's limits: answered 413 before its inputs are validated or run."""


class _Bounded(_Strict):
    """Counts and lengths of `inputs` checked before any input is validated (a list of millions of
    items is refused at once); a subclass made per server carries its limits."""

    limits: ClassVar[Limits | None] = None

    @model_validator(mode="before")
    @classmethod
    def _within_limits(cls, data):
        limits = cls.limits
        if limits is None or not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
            return data
        inputs = data["inputs"]
        if len(inputs) > limits.max_inputs:
            raise TooLarge(f"{len(inputs)} inputs; at most {limits.max_inputs} per request")
        for i, item in enumerate(inputs):
            texts = (
                [item]
                if isinstance(item, str)
                else [item.get(k) for k in ("text", "text_pair")]
                if isinstance(item, dict)
                else []
            )
            for text in texts:
                if isinstance(text, str) and len(text) > limits.max_chars:
                    raise TooLarge(f"input {i}: {len(text)} characters; at most {limits.max_chars} per text")
        return data


class TextPair(_Strict):
    text: Text = Field(description="the input text")
    text_pair: Text | None = Field(None, description="the second text, for prompts that classify pairs")


class ClassifyRequest(_Bounded):
    prompt: PromptName
    inputs: list[Text | TextPair] = Field(
        min_length=1, description="texts, or objects with text and text_pair (at most the server's --max-inputs)"
    )


def _classify_results():
    """What /v1/classify answers per input: the result shape of every task it serves (a label and
    its probabilities for classification; tokens, tags and entities for token classification)."""
    from typing import Union

    from ..tasks import TASKS

    shapes = tuple(cls.result_type for cls in TASKS.values() if cls.endpoint == "classify")
    return Union[shapes] if len(shapes) > 1 else shapes[0]  # noqa: UP007 (a union built from a tuple)


class ClassifyResponse(BaseModel):
    prompt: str = Field(description="the version that answered, NAME@VERSION")
    results: list[_classify_results()]


class GenerateRequest(_Bounded):
    prompt: PromptName
    inputs: list[Text] = Field(min_length=1, description="source texts (at most the server's --max-inputs)")
    max_new_tokens: int | None = Field(None, ge=1, le=1024, description="default: the prompt's max target length")
    num_beams: int | None = Field(None, ge=1, le=16, description="default: the prompt's (1 = greedy)")
    do_sample: bool = False
    top_k: int | None = Field(None, ge=1, le=1_000_000)
    top_p: float | None = Field(None, gt=0, le=1)
    temperature: float | None = Field(None, ge=0.001, le=100)
    num_return_sequences: int | None = Field(
        None, ge=1, le=16, description="more than 1 needs do_sample, or num_beams at least as large"
    )
    repetition_penalty: float | None = Field(None, ge=0.01, le=100)
    no_repeat_ngram_size: int | None = Field(None, ge=0, le=1024)
    length_penalty: float | None = Field(None, ge=-10, le=10)


class Generation(BaseModel):
    generations: list[str]


class GenerateResponse(BaseModel):
    prompt: str = Field(description="the version that answered, NAME@VERSION")
    results: list[Generation]


class PromptInfo(BaseModel):
    name: str
    latest: int
    versions: int
    method: str
    task: str
    pushed: str
    aliases: dict[str, int]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


class ModelCard(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str
    task: str
    method: str
    base_model: str | None = None


class ModelList(BaseModel):
    object: str
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict | None = None
    finish_reason: str


class CompletionResponse(BaseModel):
    id: str
    object: str
    created: int
    model: str
    choices: list[CompletionChoice]
    system_fingerprint: str | None = None
    usage: Usage


class AssistantMessage(BaseModel):
    role: str
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict | None = None
    finish_reason: str


class ChatCompletionResponse(BaseModel):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    system_fingerprint: str | None = None
    usage: Usage


class Health(BaseModel):
    status: str
    version: str
    loaded_prompts: int


class Problem(BaseModel):
    detail: str


ERRORS = {status: {"model": Problem} for status in (400, 401, 404, 409, 413, 500)}


# ---- the model side -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_inputs: int = 64
    max_chars: int = 8192
    max_loaded: int = 256
    max_batch_tokens: int | None = None
    max_body_bytes: int | None = None
    """Largest request body; None: room for max_inputs pairs of max_chars characters, each written
    as JSON escapes (6 bytes a character), and 64 KiB besides."""
    max_request_tokens: int = 8192
    """Tokens one generation request may decode: inputs x max(num_beams, num_return_sequences) x
    max_new_tokens."""
    body_timeout_s: float = 10.0
    """Seconds a request's body may take to arrive (from the start of the request); then 408."""
    continuous: bool = True
    """Decode OpenAI requests on a decoder-only model in a continuous batch (False: in the
    micro-batcher's batches, each decoded from start to end)."""

    @property
    def body_bytes(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_inputs * (2 * self.max_chars * 6 + 64) + 65536


class PromptService:
    """Registry versions loaded on demand onto one backbone and run in mixed batches. `run` is
    called from one worker thread at a time (the batcher's)."""

    def __init__(
        self,
        backbone: Backbone,
        registry: Registry,
        max_loaded: int = 256,
        max_tokens: int | None = None,
        max_rows: int = 64,
    ):
        self.backbone = backbone
        self.max_tokens = max_tokens
        self.registry = registry
        self.prompts = PromptSet(backbone)
        self.max_loaded = max_loaded
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._fingerprint = backbone.fingerprint()
        self._lock = threading.Lock()
        # Decoder-only models decode OpenAI requests in a continuous batch: a request joins the
        # sequences already decoding at their next step.
        self.decoder = None
        if continuous.supports(backbone, {}):
            self.decoder = continuous.ContinuousDecoder(self.prompts, max_rows, prepare=self._ensure_loaded)

    def continuous(self, options: dict) -> bool:
        """Whether a generation request with these options joins the continuous batch."""
        return self.decoder is not None and continuous.supports(self.backbone, options)

    def resolve(self, spec: str, endpoint: str) -> tuple[str, dict]:
        """(NAME@VERSION, its registry record) for `spec`, checked to be a prompt of a task that
        `endpoint` serves, made for this model, and its files checked out and verified unless it is
        loaded already."""
        record = self.registry.show(spec)
        key = f"{record['name']}@{record['version']}"
        served_by = task_class(record["task"]).endpoint
        if served_by != endpoint:
            raise WrongTask(f"{key} is a {record['task']} prompt; use /v1/{served_by}")
        try:
            check_base_model({"base_model": record["base_model"]}, self.backbone, key, actual=self._fingerprint)
        except ArtifactError as error:
            raise WrongModel(str(error)) from None
        if key not in self.prompts:
            self.registry.checkout(key)
        return key, record

    def _ensure_loaded(self, keys: set[str]) -> None:
        for key in keys:
            if key in self.prompts:
                self._recent.move_to_end(key)
                continue
            try:
                self.prompts.add(key, self.registry.checkout(key))
            except (ArtifactError, RegistryError, StorageError) as error:
                raise CannotLoad(key, error) from None
            self._recent[key] = None
        while len(self._recent) > max(self.max_loaded, len(keys)):
            old, _ = self._recent.popitem(last=False)
            self.prompts.remove(old)

    def run(self, key: tuple, items: list) -> list:
        with self._lock:
            self._ensure_loaded({item[0] for item in items})
            if key[0] == "classify":
                return self.prompts.classify(items, batch_size=len(items), max_tokens=self.max_tokens)
            options = dict(key[1])
            seed = options.pop("seed", None)
            if seed is not None:  # the requests joined in this batch asked for the same seed
                torch.manual_seed(seed)
            # An item may carry a stream: its tokens as they are decoded, and a flag that stops it.
            rows = [(name, example) for name, example, *_ in items]
            links = [rest[0] if rest else None for _, _, *rest in items]  # (stream, the row's place in its request)
            streaming = {}
            if any(links):
                streaming = {
                    "on_token": lambda i, seq, tok, end: links[i] and links[i][0].token(links[i][1], seq, tok, end),
                    "on_prompt": lambda i, tokens: links[i] and links[i][0].prompt(links[i][1], tokens),
                    "stop_rows": lambda i: links[i] is not None and links[i][0].stopped,
                }
            return self.prompts.generate(
                rows,
                batch_size=len(rows),
                max_tokens=self.max_tokens,
                details=key[0] == "openai",
                **streaming,
                **options,
            )

    @property
    def loaded(self) -> int:
        return len(self.prompts)


class WrongTask(PromptTuneError):
    pass


class WrongModel(PromptTuneError):
    pass


class CannotLoad(PromptTuneError):
    """A registry version whose files cannot be loaded: the server's fault, not the client's."""

    def __init__(self, key: str, error: Exception):
        super().__init__(f"{key}: {error}")
        self.key = key


# ---- the app --------------------------------------------------------------------------------------


def _error_body(path: str, status: int, message: str) -> dict:
    """A refusal of the request gate, in the shape of the endpoint's other errors."""
    if path in openai_api.OPENAI_PATHS:
        return OpenAIError(status, message).body()
    if status == 422:  # the shape of FastAPI's own validation errors, as the schema declares them
        return {"detail": [{"loc": ["body"], "msg": message, "type": "value_error"}]}
    return {"detail": message}


UNION_BRANCHES = ("constrained-str", "str", "TextPair")


def _at(body, path: list):
    for part in path:
        try:
            body = body[part]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def _echo(value, limit: int = 80):
    """What a validation error quotes of the request: short values as they are, long ones cut."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"... ({len(value)} characters)"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters of JSON)"


def create_app(service: PromptService, limits: Limits = Limits(), token: str | None = None) -> FastAPI:
    metrics = CollectorRegistry()
    requests_total = Counter("prompttune_requests_total", "HTTP requests", ["endpoint", "status"], registry=metrics)
    latency = Histogram(
        "prompttune_request_seconds",
        "Request latency",
        ["endpoint"],
        registry=metrics,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )
    batch_rows = Histogram(
        "prompttune_batch_rows", "Rows per model forward", registry=metrics, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
    )
    batch_requests = Histogram(
        "prompttune_batch_requests",
        "Requests joined per model forward",
        registry=metrics,
        buckets=(1, 2, 4, 8, 16, 32, 64),
    )
    decoding_rows = Histogram(
        "prompttune_decoding_sequences",
        "Sequences per step of the continuous batch",
        registry=metrics,
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    )
    predictions = Counter(
        "prompttune_predictions_total", "Predicted labels per prompt version", ["prompt", "label"], registry=metrics
    )
    generated = Counter(
        "prompttune_generated_sequences_total", "Generated sequences per prompt version", ["prompt"], registry=metrics
    )
    loaded = Gauge("prompttune_loaded_prompts", "Prompt versions loaded onto the model", registry=metrics)
    loaded.set_function(lambda: service.loaded if service is not None else 0)
    active = Gauge(
        "prompttune_decoding_sequences_active",
        "Sequences in the continuous batch now, and requests waiting to join it",
        ["state"],
        registry=metrics,
    )
    decoder = service.decoder if service is not None else None
    active.labels("decoding").set_function(lambda: len(decoder.sequences) if decoder is not None else 0)
    active.labels("waiting").set_function(lambda: len(decoder.waiting) if decoder is not None else 0)

    # This server's limits, checked on the raw request before its inputs are validated.
    classify_request = type("ClassifyRequest", (ClassifyRequest,), {"limits": limits, "__module__": __name__})
    generate_request = type("GenerateRequest", (GenerateRequest,), {"limits": limits, "__module__": __name__})

    def on_batch(rows: int, joined: int) -> None:
        batch_rows.observe(rows)
        batch_requests.observe(joined)

    batcher = MicroBatcher(
        lambda key, items: service.run(key, items), limits.max_batch_size, limits.max_wait_ms, on_batch
    )
    steps = None
    if service is not None and service.decoder is not None and limits.continuous:
        service.decoder.on_admit, service.decoder.on_step = on_batch, decoding_rows.observe
        steps = StepLoop(service.decoder, service._lock)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        if steps is not None:
            steps.start()
        yield
        if steps is not None:
            steps.stop()
        await batcher.stop()

    async def decode(options: dict, items: list, logprobs: int | None = None) -> list:
        """Rows decoded in the continuous batch (`continuous.Request`), joined at its next step;
        items as `PromptService.run` takes them, streams included."""
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()
        stream = next((rest[0][0] for _, _, *rest in items if rest), None)
        request = continuous.Request(
            rows=[(name, example) for name, example, *_ in items],
            options=options,
            logprobs=logprobs,
            done=lambda results, error: loop.call_soon_threadsafe(settle, future, results, error),
            on_prompt=stream.prompt if stream else None,
            on_token=stream.token if stream else None,
            # A client that has gone away (its request cancelled, or its stream left) stops decoding.
            stopped=(lambda: future.cancelled() or stream.stopped) if stream else future.cancelled,
        )
        steps.submit(request)
        return await future

    app = FastAPI(
        title="prompttune",
        version=__version__,
        lifespan=lifespan,
        description="Many prompts over one frozen language model: classification, token classification "
        "and generation with prompts from a versioned registry, batched across prompts; "
        "generation prompts also as models of an OpenAI-compatible API (/v1/models, "
        "/v1/completions, /v1/chat/completions).",
    )
    bearer = HTTPBearer(auto_error=False, description="Needed when the server was started with a token")
    app.add_middleware(
        RequestGate,
        max_bytes=limits.body_bytes,
        body_timeout=limits.body_timeout_s,
        token=token,
        error_body=_error_body,
        malformed_status=lambda path: 400 if path in openai_api.OPENAI_PATHS else 422,
    )

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        """Declares the bearer token in the OpenAPI schema; the request gate has checked it already,
        before the body was read."""

    @app.middleware("http")
    async def record(request: Request, call_next):
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            log.exception("unhandled error on %s", request.url.path)
            response = JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        requests_total.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, error: TooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=413)

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, error: OpenAIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own and those its routing raises
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if request.url.path in openai_api.OPENAI_PATHS:  # OpenAI's clients read OpenAI's error shape
            shaped = OpenAIError(error.status_code, str(error.detail))
            return JSONResponse(shaped.body(), status_code=error.status_code, headers=error.headers)
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        if request.url.path in openai_api.OPENAI_PATHS:
            first = (error.errors() or [{}])[0]
            loc = [str(part) for part in first.get("loc", ()) if part != "body"]
            param = loc[0] if loc else None
            if first.get("type") == "json_invalid":  # its location is a character of the body, not a field
                at = loc[0] if loc else "?"
                reason = (first.get("ctx") or {}).get("error", "invalid JSON")
                message, param = f"body: not valid JSON at character {at} ({reason})", None
            elif first.get("type") == "extra_forbidden":
                message = f"Unrecognized request argument supplied: {param}"
            else:
                message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid')}"
            return JSONResponse(OpenAIError(400, message, param=param).body(), status_code=400)
        details = []
        for problem in error.errors():
            loc = list(problem.get("loc", ()))
            branch = next((i for i, part in enumerate(loc) if part in UNION_BRANCHES), None)
            if branch is not None:
                # An input is a text or a pair: report only the errors of the form it was sent in.
                item = _at(getattr(error, "body", None), loc[1:branch])
                if (loc[branch] == "TextPair") != isinstance(item, dict):
                    continue
                del loc[branch]
            entry = {"loc": loc, "msg": problem.get("msg", ""), "type": problem.get("type", "")}
            if problem.get("type") == "string_pattern_mismatch":
                entry["msg"] = "the text is empty or only white space"
            if "input" in problem:
                entry["input"] = _echo(problem["input"])
            details.append(entry)
        return JSONResponse({"detail": details}, status_code=422)

    def public(error: Exception) -> str:
        """An error's message without the registry's place on disk."""
        text = str(error)
        for root in {str(service.registry.root), str(service.registry.root.resolve())}:
            text = text.replace(root, "the registry")
        return text

    async def resolve(spec: str, endpoint: str) -> tuple[str, dict]:
        try:
            return await run_in_threadpool(service.resolve, spec, endpoint)
        except StoreDamaged as error:
            log.error("cannot serve %s: %s", quoted(spec), error)
            raise HTTPException(
                500,
                f"{quoted(spec)}: the registry's stored files for this prompt are damaged; "
                "the server log has the details",
            ) from None
        except BadSpec as error:
            raise HTTPException(400, str(error)) from None
        except RegistryError as error:
            raise HTTPException(404, public(error)) from None
        except WrongTask as error:
            raise HTTPException(400, str(error)) from None
        except WrongModel as error:
            raise HTTPException(409, str(error)) from None
        except (ArtifactError, StorageError) as error:
            log.error("cannot serve %s: %s", quoted(spec), error)
            raise HTTPException(
                500, f"{quoted(spec)}: the prompt's files cannot be loaded; the server log has the details"
            ) from None

    async def submit(key: tuple, items: list):
        try:
            if key[0] == "openai" and steps is not None:
                options = dict(key[1])
                logprobs = options.pop("logprobs", None)
                if service.continuous(options):
                    return await decode(options, items, logprobs)
            return await batcher.submit(key, items)
        except CannotLoad as error:
            log.error("cannot load %s", error)
            raise HTTPException(
                500, f"{error.key}: the prompt's files cannot be loaded; the server log has the details"
            ) from None
        except PromptTuneError as error:
            raise HTTPException(400, public(error)) from None
        except Exception:
            log.exception("request failed on the model")
            raise HTTPException(500, "the model failed on this request; see the server log") from None

    async def classify(body) -> ClassifyResponse:
        inputs = [TextPair(text=x) if isinstance(x, str) else x for x in body.inputs]
        key, record = await resolve(body.prompt, "classify")
        task = task_class(record["task"])
        try:
            items = [(key, task.example_from_input(x.text, x.text_pair, f"input {i}")) for i, x in enumerate(inputs)]
        except PromptTuneError as error:
            raise HTTPException(400, str(error)) from None
        results = await submit(("classify",), items)
        for r in results:
            for label in task.predicted_labels(r):
                predictions.labels(key, label).inc()
        return ClassifyResponse(prompt=key, results=[{k: v for k, v in r.items() if k != "prompt"} for r in results])

    async def generate(body) -> GenerateResponse:
        options = body.model_dump(exclude={"prompt", "inputs"}, exclude_none=True)
        if not options.get("do_sample"):
            options.pop("do_sample", None)
        key, record = await resolve(body.prompt, "generate")
        try:
            config = task_class(record["task"]).Config.from_dict(record["config"]["task_config"], where=key)
            settled = check_generation_options(options, config)
        except PromptTuneError as error:
            raise HTTPException(400, str(error)) from None
        sequences = max(settled["num_beams"], settled.get("num_return_sequences", 1))
        cost = len(body.inputs) * sequences * settled["max_new_tokens"]
        if cost > limits.max_request_tokens:
            raise HTTPException(
                413,
                f"this request decodes up to {cost} tokens ({len(body.inputs)} inputs x {sequences} "
                f"beams or sequences x {settled['max_new_tokens']} new tokens); at most "
                f"{limits.max_request_tokens} per request (the server's --max-request-tokens)",
            )
        items = [(key, Example(text=x, source=f"input {i}")) for i, x in enumerate(body.inputs)]
        results = await submit(("generate", tuple(sorted(options.items()))), items)
        generated.labels(key).inc(sum(len(r) for r in results))
        return GenerateResponse(prompt=key, results=[Generation(generations=r) for r in results])

    # The request models are this server's own subclasses (they carry its limits), so they are
    # attached here rather than named in the signatures.
    classify.__annotations__.update(body=classify_request, **{"return": ClassifyResponse})
    generate.__annotations__.update(body=generate_request, **{"return": GenerateResponse})
    app.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        responses=ERRORS,
        dependencies=[Depends(authorised)],
        summary="Classify texts, or tag their words, with a registry prompt",
    )(classify)
    app.post(
        "/v1/generate",
        response_model=GenerateResponse,
        responses=ERRORS,
        dependencies=[Depends(authorised)],
        summary="Generate text with a registry prompt",
    )(generate)

    @app.get(
        "/v1/prompts",
        response_model=list[PromptInfo],
        responses=ERRORS,
        dependencies=[Depends(authorised)],
        summary="Every prompt in the registry",
    )
    async def prompts() -> list[PromptInfo]:
        return [PromptInfo(**row) for row in await run_in_threadpool(service.registry.list)]

    # ---- OpenAI-compatible endpoints (prompttune/serving/openai_api.py) ------------------------

    openai_errors = {status: {"model": OpenAIErrorBody} for status in (400, 401, 404, 409, 413, 500)}

    async def openai_resolve(spec: str) -> tuple[str, dict]:
        try:
            return await resolve(spec, "generate")
        except HTTPException as error:
            code = {404: "model_not_found"}.get(error.status_code)
            raise OpenAIError(error.status_code, f"model: {error.detail}", param="model", code=code) from None

    async def openai_generate(body, sources: list[str], chat: bool) -> dict:
        if len(sources) > limits.max_inputs:
            raise OpenAIError(
                413, f"prompt: {len(sources)} prompts; at most {limits.max_inputs} per request", param="prompt"
            )
        for i, text in enumerate(sources):
            if not isinstance(text, str) or not text.strip():
                raise OpenAIError(400, f"prompt {i}: the text is empty or only white space", param="prompt")
            if len(text) > limits.max_chars:
                raise OpenAIError(
                    413, f"prompt {i}: {len(text)} characters; at most {limits.max_chars}", param="prompt"
                )
        options = openai_api.generation_options(body)
        cost = len(sources) * (body.n or 1) * options["max_new_tokens"]
        if cost > limits.max_request_tokens:
            raise OpenAIError(
                413,
                f"this request decodes up to {cost} tokens ({len(sources)} prompts x n {body.n or 1} "
                f"x max_tokens {options['max_new_tokens']}); at most {limits.max_request_tokens}",
                param="max_tokens",
            )
        key, record = await openai_resolve(body.model)
        try:
            config = task_class(record["task"]).Config.from_dict(record["config"]["task_config"], where=key)
            check_generation_options({k: v for k, v in options.items() if k != "seed"}, config)
        except PromptTuneError as error:
            raise OpenAIError(400, str(error)) from None
        top = openai_api.requested_logprobs(body)
        if top is not None:
            if not (steps is not None and service.continuous(options)):
                raise OpenAIError(
                    400,
                    "logprobs: served on decoder-only models with continuous batching (the "
                    "server's --batching continuous)",
                    param="logprobs",
                    code="unsupported_parameter",
                )
            options = {**options, "logprobs": top}
        batch_key = ("openai", tuple(sorted(options.items())))
        if body.stream:
            return stream_completion(key, sources, body, batch_key, options, chat)
        items = [(key, Example(text=text, source=f"prompt {i}")) for i, text in enumerate(sources)]
        try:
            sequences = await submit(batch_key, items)
        except HTTPException as error:
            raise OpenAIError(error.status_code, str(error.detail)) from None
        generated.labels(key).inc(sum(len(s) for s in sequences))
        return await run_in_threadpool(
            openai_api.completion_response, key, sequences, body, chat, service.backbone.tokenizer
        )

    def stream_completion(key: str, sources: list[str], body, batch_key: tuple, options: dict, chat: bool):
        """Server-sent events: each choice's text as its tokens are decoded, then its finish reason."""
        import asyncio

        loop = asyncio.get_running_loop()
        stream = openai_api.TokenStream(loop)
        items = [(key, Example(text=text, source=f"prompt {i}"), (stream, i)) for i, text in enumerate(sources)]
        n = body.n or 1
        drawn = options.get("num_return_sequences", 1)  # sequences decoded per prompt (greedy: 1, sent n times)
        stops = openai_api.stop_strings(body)
        tokenizer = service.backbone.tokenizer
        texts = {(p, q): openai_api.StreamText(tokenizer, stops) for p in range(len(sources)) for q in range(drawn)}
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def event(choices: list[dict], usage: dict | None = None) -> str:
            chunk = {"id": ident, "object": kind, "created": created, "model": key, "choices": choices}
            if usage is not None:
                chunk["usage"] = usage
            return f"data: {json.dumps(chunk)}\n\n"

        def choices_for(prompt: int, sequence: int, text: str | None, reason: str | None) -> list[dict]:
            indices = [prompt * n + sequence] if drawn == n else [prompt * n + c for c in range(n)]
            if chat:
                delta = {} if text is None else {"content": text}
                return [{"index": i, "delta": delta, "logprobs": None, "finish_reason": reason} for i in indices]
            return [{"index": i, "text": text or "", "logprobs": None, "finish_reason": reason} for i in indices]

        limit = options["max_new_tokens"]
        prompt_tokens: dict[int, int] = {}
        counts = {pq: 0 for pq in texts}

        def take(prompt: int, sequence: int, token: int, end: bool) -> str:
            """The text to send for one decoded token (or note a prompt's length: sequence -1)."""
            if sequence < 0:
                prompt_tokens[prompt] = token
                return ""
            state = texts[(prompt, sequence)]
            if state.done:
                return ""
            if not end:
                counts[(prompt, sequence)] += 1
            text = state.add(token, end)
            if not state.done and counts[(prompt, sequence)] >= limit:
                text += state.finish(reached_limit=True)
            return text

        def finals() -> list[str]:
            out = []
            for (p, q), state in texts.items():
                rest = state.finish(reached_limit=counts[(p, q)] >= limit) if not state.done else ""
                out.append(event(choices_for(p, q, rest if rest else None, state.reason)))
            if include_usage:
                used = sum(counts.values()) * (1 if drawn == n else n)
                given = sum(prompt_tokens.values())
                out.append(event([], {"prompt_tokens": given, "completion_tokens": used, "total_tokens": given + used}))
            return out + ["data: [DONE]\n\n"]

        def drain() -> list[tuple]:
            """The tokens waiting in the queue."""
            waiting = []
            while not stream.queue.empty():
                waiting.append(stream.queue.get_nowait())
            return waiting

        def taken(tokens: list[tuple]) -> list[str]:
            """The events for decoded tokens: their text is decoded and searched for stop strings in a
            worker thread, never on the event loop that answers every other request."""
            lines = []
            for prompt, sequence, token_id, end in tokens:
                text = take(prompt, sequence, token_id, end)
                if text:
                    lines.append(event(choices_for(prompt, sequence, text, None)))
            return lines

        async def events():
            batch = asyncio.ensure_future(submit(batch_key, items))
            # The batch may end after this stream has: its outcome is read, not left unobserved.
            batch.add_done_callback(lambda f: f.cancelled() or f.exception())
            completed = False
            try:
                if chat:
                    yield event(
                        [
                            {
                                "index": i,
                                "delta": {"role": "assistant", "content": ""},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                            for i in range(len(sources) * n)
                        ]
                    )
                while not all(t.done for t in texts.values()):
                    getter = asyncio.ensure_future(stream.queue.get())
                    done, _ = await asyncio.wait({getter, batch}, return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        break
                    for line in await run_in_threadpool(taken, [getter.result(), *drain()]):
                        yield line
                # Every sequence has ended (end of sequence, stop string, max_tokens): the answer is
                # complete without waiting for the rest of its batch, whose decoding of it stops.
                stream.stopped = True
                for line in await run_in_threadpool(taken, drain()):  # tokens handed over as the batch ended
                    yield line
                if not all(t.done for t in texts.values()) and batch.done():
                    try:
                        batch.result()
                    except HTTPException as error:
                        yield f"data: {json.dumps(OpenAIError(error.status_code, str(error.detail)).body())}\n\n"
                        completed = True
                        return
                generated.labels(key).inc(len(texts))
                for line in await run_in_threadpool(finals):
                    yield line
                completed = True
            finally:
                if not completed:
                    stream.stopped = True  # the client went away: its sequences stop at the next step

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get(
        "/v1/models",
        response_model=ModelList,
        responses=openai_errors,
        dependencies=[Depends(authorised)],
        summary="OpenAI API: every prompt in the registry as a model (NAME, NAME@VERSION, NAME@ALIAS)",
    )
    async def models() -> dict:
        return await run_in_threadpool(openai_api.model_list, service.registry)

    async def completions(body) -> dict:
        sources = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not sources:
            raise OpenAIError(400, "prompt: at least one prompt", param="prompt")
        openai_api.check_served(body)
        return await openai_generate(body, sources, chat=False)

    async def chat_completions(body) -> dict:
        openai_api.check_served(body)
        return await openai_generate(body, [openai_api.chat_source(body.messages)], chat=True)

    completions.__annotations__.update(body=openai_api.CompletionRequest, **{"return": CompletionResponse})
    chat_completions.__annotations__.update(body=openai_api.ChatRequest, **{"return": ChatCompletionResponse})
    streamed = {
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "the answer, or with stream true its server-sent events",
        }
    }
    app.post(
        "/v1/completions",
        response_model=CompletionResponse,
        responses={**openai_errors, **streamed},
        dependencies=[Depends(authorised)],
        summary="OpenAI API: complete texts with a registry prompt",
    )(completions)
    app.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        responses={**openai_errors, **streamed},
        dependencies=[Depends(authorised)],
        summary="OpenAI API: answer one user message with a registry prompt",
    )(chat_completions)

    @app.get("/health", response_model=Health, summary="Liveness, and how many prompts are loaded")
    async def health() -> Health:
        return Health(status="ok", version=__version__, loaded_prompts=service.loaded)

    @app.get(
        "/metrics",
        dependencies=[Depends(authorised)],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: {"model": Problem}},
    )
    async def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(
    model: str,
    registry: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    limits: Limits = Limits(),
    device: str | None = None,
    log_level: str = "info",
    dtype: str | None = None,
    device_map: str | None = None,
) -> None:
    import uvicorn

    from ..api import load_backbone

    backbone = load_backbone(model, device=device, dtype=dtype, device_map=device_map)
    service = PromptService(
        backbone, Registry(registry), limits.max_loaded, limits.max_batch_tokens, limits.max_batch_size
    )
    app = create_app(service, limits, token)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def openapi_schema() -> dict:
    """The HTTP API's OpenAPI schema, as the server publishes it at /openapi.json."""
    return create_app(None).openapi()  # type: ignore[arg-type] - the schema needs no model


if __name__ == "__main__":  # python -m prompttune.serving.server > docs/openapi.json
    import sys

    json.dump(openapi_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
