"""`prompttune serve`: one frozen model, every prompt in a registry, over HTTP.

    prompttune serve --model all-MiniLM-L6-v2 --registry ./registry --port 8000

- `POST /v1/classify` and `POST /v1/generate` take `prompt: "NAME[@VERSION|@ALIAS]"` and a list of
  inputs. The prompt is looked up in the registry on every request, so a version pushed while the
  server runs is served at once, without a restart; a version is loaded onto the model the first
  time it is asked for (at most `max_loaded` stay loaded, least recently used first out).
- Requests that arrive together, for any prompts, are joined into one mixed batch (prompttune/batcher.py,
  prompttune/mixed.py): at most `max_batch_size` rows, waiting at most `max_wait_ms` for company. With
  `max_batch_tokens`, the joined rows are run in order of length, in forwards of at most that many
  padded tokens (less padding; on a CPU, where a forward's cost grows with its tokens, faster).
- `GET /v1/prompts`, `GET /health`, and `GET /metrics` for Prometheus: requests and latency per
  endpoint and status, rows and requests per batch, and every prompt's predicted labels, so a drift
  in what a prompt predicts shows on a dashboard.
- Bad requests get a 4xx status and a message: unknown prompt or version (404), a prompt of the wrong
  task or made for another base model (400/409), too many or too long inputs (413), malformed JSON
  or fields (422), a missing or wrong bearer token (401). A request that fails on the model gets its
  own error; the server and the requests batched with it carry on.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .artifact import check_base_model
from .backbone import Backbone
from .batcher import MicroBatcher
from .data import Example
from .errors import ArtifactError, PromptTuneError
from .mixed import PromptSet
from .registry import Registry, RegistryError

log = logging.getLogger("prompttune.server")


# ---- the HTTP schema ------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPair(_Strict):
    text: str = Field(description="the input text")
    text_pair: str | None = Field(None, description="the second text, for prompts that classify pairs")


class ClassifyRequest(_Strict):
    prompt: str = Field(description="NAME, NAME@VERSION or NAME@ALIAS in the registry", examples=["sentiment@production"])
    inputs: list[str | TextPair] = Field(min_length=1, description="texts, or objects with text and text_pair")


class Classification(BaseModel):
    label: str
    probabilities: dict[str, float]


class ClassifyResponse(BaseModel):
    prompt: str = Field(description="the version that answered, NAME@VERSION")
    results: list[Classification]


class GenerateRequest(_Strict):
    prompt: str = Field(description="NAME, NAME@VERSION or NAME@ALIAS in the registry")
    inputs: list[str] = Field(min_length=1, description="source texts")
    max_new_tokens: int | None = Field(None, ge=1, le=1024, description="default: the prompt's max target length")
    num_beams: int | None = Field(None, ge=1, le=16)
    do_sample: bool = False
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    temperature: float | None = Field(None, gt=0)
    num_return_sequences: int | None = Field(None, ge=1, le=16)
    repetition_penalty: float | None = Field(None, gt=0)
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    length_penalty: float | None = None


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


class Health(BaseModel):
    status: str
    model: str
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


class PromptService:
    """Registry versions loaded on demand onto one backbone and run in mixed batches. `run` is
    called from one worker thread at a time (the batcher's)."""

    def __init__(self, backbone: Backbone, registry: Registry, max_loaded: int = 256, max_tokens: int | None = None):
        self.backbone = backbone
        self.max_tokens = max_tokens
        self.registry = registry
        self.prompts = PromptSet(backbone)
        self.max_loaded = max_loaded
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._fingerprint = backbone.fingerprint()
        self._lock = threading.Lock()

    def resolve(self, spec: str, task: str) -> str:
        """NAME@VERSION for `spec`, checked to be a `task` prompt made for this model."""
        record = self.registry.show(spec)
        key = f"{record['name']}@{record['version']}"
        if record["task"] != task:
            raise WrongTask(f"{key} is a {record['task']} prompt; use /v1/{'classify' if record['task'] == 'classification' else 'generate'}")
        try:
            check_base_model({"base_model": record["base_model"]}, self.backbone, key, actual=self._fingerprint)
        except ArtifactError as error:
            raise WrongModel(str(error)) from None
        return key

    def _ensure_loaded(self, keys: set[str]) -> None:
        for key in keys:
            if key in self.prompts:
                self._recent.move_to_end(key)
                continue
            self.prompts.add(key, self.registry.checkout(key))
            self._recent[key] = None
        while len(self._recent) > max(self.max_loaded, len(keys)):
            old, _ = self._recent.popitem(last=False)
            self.prompts.remove(old)

    def run(self, key: tuple, items: list) -> list:
        with self._lock:
            self._ensure_loaded({name for name, _ in items})
            if key[0] == "classify":
                return self.prompts.classify(items, batch_size=len(items), max_tokens=self.max_tokens)
            return self.prompts.generate(items, batch_size=len(items), max_tokens=self.max_tokens, **dict(key[1]))

    @property
    def loaded(self) -> int:
        return len(self.prompts)


class WrongTask(PromptTuneError):
    pass


class WrongModel(PromptTuneError):
    pass


# ---- the app --------------------------------------------------------------------------------------

def create_app(service: PromptService, limits: Limits = Limits(), token: str | None = None) -> FastAPI:
    metrics = CollectorRegistry()
    requests_total = Counter("prompttune_requests_total", "HTTP requests", ["endpoint", "status"], registry=metrics)
    latency = Histogram("prompttune_request_seconds", "Request latency", ["endpoint"], registry=metrics,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    batch_rows = Histogram("prompttune_batch_rows", "Rows per model forward", registry=metrics,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
    batch_requests = Histogram("prompttune_batch_requests", "Requests joined per model forward", registry=metrics,
                               buckets=(1, 2, 4, 8, 16, 32, 64))
    predictions = Counter("prompttune_predictions_total", "Predicted labels per prompt version", ["prompt", "label"],
                          registry=metrics)
    generated = Counter("prompttune_generated_sequences_total", "Generated sequences per prompt version", ["prompt"],
                        registry=metrics)
    loaded = Gauge("prompttune_loaded_prompts", "Prompt versions loaded onto the model", registry=metrics)
    loaded.set_function(lambda: service.loaded if service is not None else 0)

    def on_batch(rows: int, joined: int) -> None:
        batch_rows.observe(rows)
        batch_requests.observe(joined)

    batcher = MicroBatcher(lambda key, items: service.run(key, items), limits.max_batch_size, limits.max_wait_ms, on_batch)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="prompttune", version=__version__, lifespan=lifespan,
                  description="Many prompts over one frozen language model: classification and generation with "
                              "prompts from a versioned registry, batched across prompts.")
    bearer = HTTPBearer(auto_error=False, description="Needed when the server was started with a token")

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def record(request: Request, call_next):
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - reported as a 500, the server carries on
            log.exception("unhandled error on %s", request.url.path)
            response = JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        requests_total.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    def check_inputs(count: int, lengths: list[int]) -> None:
        if count > limits.max_inputs:
            raise HTTPException(413, f"{count} inputs; at most {limits.max_inputs} per request")
        for i, n in enumerate(lengths):
            if n > limits.max_chars:
                raise HTTPException(413, f"input {i}: {n} characters; at most {limits.max_chars}")

    async def resolve(spec: str, task: str) -> str:
        try:
            return await run_in_threadpool(service.resolve, spec, task)
        except RegistryError as error:
            raise HTTPException(404, str(error)) from None
        except WrongTask as error:
            raise HTTPException(400, str(error)) from None
        except WrongModel as error:
            raise HTTPException(409, str(error)) from None

    async def submit(key: tuple, items: list):
        try:
            return await batcher.submit(key, items)
        except PromptTuneError as error:
            raise HTTPException(400, str(error)) from None
        except Exception:  # noqa: BLE001 - this request fails alone
            log.exception("request failed on the model")
            raise HTTPException(500, "the model failed on this request; see the server log") from None

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS, dependencies=[Depends(authorised)],
              summary="Classify texts with a registry prompt")
    async def classify(body: ClassifyRequest) -> ClassifyResponse:
        inputs = [TextPair(text=x) if isinstance(x, str) else x for x in body.inputs]
        check_inputs(len(inputs), [len(x.text) + len(x.text_pair or "") for x in inputs])
        for i, x in enumerate(inputs):
            if not x.text.strip():
                raise HTTPException(400, f"input {i}: the text is empty")
        key = await resolve(body.prompt, "classification")
        items = [(key, Example(text=x.text, text_pair=x.text_pair, source=f"input {i}")) for i, x in enumerate(inputs)]
        results = await submit(("classify",), items)
        for r in results:
            predictions.labels(key, r["label"]).inc()
        return ClassifyResponse(prompt=key, results=[Classification(label=r["label"], probabilities=r["probabilities"])
                                                      for r in results])

    @app.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS, dependencies=[Depends(authorised)],
              summary="Generate text with a registry prompt")
    async def generate(body: GenerateRequest) -> GenerateResponse:
        check_inputs(len(body.inputs), [len(x) for x in body.inputs])
        for i, x in enumerate(body.inputs):
            if not x.strip():
                raise HTTPException(400, f"input {i}: the text is empty")
        options = body.model_dump(exclude={"prompt", "inputs"}, exclude_none=True)
        if not options.get("do_sample"):
            options.pop("do_sample", None)
        rows = len(body.inputs) * max(options.get("num_beams", 1), options.get("num_return_sequences", 1))
        if rows > limits.max_batch_size * 16:
            raise HTTPException(413, f"{rows} sequences to decode; at most {limits.max_batch_size * 16} per request")
        key = await resolve(body.prompt, "generation")
        items = [(key, Example(text=x, source=f"input {i}")) for i, x in enumerate(body.inputs)]
        results = await submit(("generate", tuple(sorted(options.items()))), items)
        generated.labels(key).inc(sum(len(r) for r in results))
        return GenerateResponse(prompt=key, results=[Generation(generations=r) for r in results])

    @app.get("/v1/prompts", response_model=list[PromptInfo], responses=ERRORS, dependencies=[Depends(authorised)],
             summary="Every prompt in the registry")
    async def prompts() -> list[PromptInfo]:
        return [PromptInfo(**row) for row in await run_in_threadpool(service.registry.list)]

    @app.get("/health", response_model=Health, summary="Liveness, the model and how many prompts are loaded")
    async def health() -> Health:
        return Health(status="ok", model=service.backbone.name_or_path, version=__version__, loaded_prompts=service.loaded)

    @app.get("/metrics", dependencies=[Depends(authorised)], summary="Prometheus metrics",
             response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(model: str, registry: str | None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          limits: Limits = Limits(), device: str | None = None, log_level: str = "info") -> None:
    import uvicorn

    backbone = Backbone.from_pretrained(model)
    if device:
        backbone.to(device)
    service = PromptService(backbone, Registry(registry), limits.max_loaded, limits.max_batch_tokens)
    app = create_app(service, limits, token)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def openapi_schema() -> dict:
    """The HTTP API's OpenAPI schema, as the server publishes it at /openapi.json."""
    return create_app(None).openapi()  # type: ignore[arg-type] - the schema needs no model


if __name__ == "__main__":  # python -m prompttune.server > docs/openapi.json
    import json
    import sys

    json.dump(openapi_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
