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
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..artifacts.registry import Registry
from ..gate import RequestGate
from . import openai_api
from .http_errors import add_error_handlers, error_body
from .limits import Limits
from .metrics import Metrics
from .routers import metrics, openai, prompts, registry
from .service import PromptService
from .state import Server

__all__ = ["Limits", "PromptService", "create_app", "openapi_schema", "serve"]

DESCRIPTION = (
    "Many prompts over one frozen language model: classification, token classification and generation with "
    "prompts from a versioned registry, batched across prompts; generation prompts also as models of an "
    "OpenAI-compatible API (/v1/models, /v1/completions, /v1/chat/completions)."
)


def create_app(service: PromptService | None, limits: Limits = Limits(), token: str | None = None) -> FastAPI:
    """The HTTP app over `service` (None: only its schema), its routers joined behind one request
    gate that checks the token and bounds the body before any route reads it."""
    metered = Metrics(service)
    state = Server(service, limits, metered)

    @asynccontextmanager
    async def lifespan(app):
        await state.start()
        yield
        await state.stop()

    app = FastAPI(title="prompttune", version=__version__, lifespan=lifespan, description=DESCRIPTION)
    app.state.server = state
    app.add_middleware(
        RequestGate,
        max_bytes=limits.body_bytes,
        body_timeout=limits.body_timeout_s,
        token=token,
        error_body=error_body,
        malformed_status=lambda path: 400 if path in openai_api.OPENAI_PATHS else 422,
    )
    metered.count_requests(app)
    add_error_handlers(app)
    app.include_router(prompts.router(limits))
    app.include_router(registry.router)
    app.include_router(openai.router)
    app.include_router(metrics.router)
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
