"""What the server's routers share: the prompt service and its limits, the micro-batcher and the
continuous batch's step loop, the metrics, and the steps every endpoint takes (resolve a prompt,
submit rows, say what went wrong without naming the server's files)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..artifacts.registry import BadSpec, RegistryError, StoreDamaged
from ..errors import ArtifactError, PromptTuneError, quoted
from ..inference import continuous
from ..options import Endpoint
from ..storage import StorageError
from .batcher import MicroBatcher, StepLoop, settle
from .limits import Limits
from .metrics import Metrics
from .service import CannotLoad, PromptService, WrongModel, WrongTask

log = logging.getLogger("prompttune.serving.server")

bearer = HTTPBearer(auto_error=False, description="Needed when the server was started with a token")


def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """Declares the bearer token in the OpenAPI schema; the request gate has checked it already,
    before the body was read."""


class Server:
    """One app's service, limits, batching and metrics (`app.state.server`)."""

    def __init__(self, service: PromptService | None, limits: Limits, metrics: Metrics):
        self.service, self.limits, self.metrics = service, limits, metrics
        self.batcher = MicroBatcher(
            lambda key, items: service.run(key, items), limits.max_batch_size, limits.max_wait_ms, metrics.on_batch
        )
        self.steps = None
        if service is not None and service.decoder is not None and limits.continuous:
            service.decoder.on_admit, service.decoder.on_step = metrics.on_batch, metrics.decoding_rows.observe
            self.steps = StepLoop(service.decoder, service._lock)

    async def start(self) -> None:
        await self.batcher.start()
        if self.steps is not None:
            self.steps.start()

    async def stop(self) -> None:
        if self.steps is not None:
            self.steps.stop()
        await self.batcher.stop()

    def continuous(self, options: dict) -> bool:
        """Whether a generation with these options is decoded in the continuous batch."""
        return self.steps is not None and self.service.continuous(options)

    def public(self, error: Exception) -> str:
        """An error's message without the registry's place on disk."""
        text = str(error)
        root = self.service.registry.root
        for place in {str(root), str(root.resolve())}:
            text = text.replace(place, "the registry")
        return text

    async def resolve(self, spec: str, endpoint: Endpoint) -> tuple[str, dict]:
        """(NAME@VERSION, its registry record) of a prompt that `endpoint` serves, or the HTTP error
        that says why not."""
        try:
            return await run_in_threadpool(self.service.resolve, spec, endpoint)
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
            raise HTTPException(404, self.public(error)) from None
        except WrongTask as error:
            raise HTTPException(400, str(error)) from None
        except WrongModel as error:
            raise HTTPException(409, str(error)) from None
        except (ArtifactError, StorageError) as error:
            log.error("cannot serve %s: %s", quoted(spec), error)
            raise HTTPException(
                500, f"{quoted(spec)}: the prompt's files cannot be loaded; the server log has the details"
            ) from None

    async def submit(self, key: tuple, items: list):
        """The results of rows run on the model: in the continuous batch (OpenAI requests it can
        decode) or in the micro-batcher's next batch."""
        try:
            if key[0] == "openai":
                options = dict(key[1])
                logprobs = options.pop("logprobs", None)
                if self.continuous(options):
                    return await self._decode(options, items, logprobs)
            return await self.batcher.submit(key, items)
        except CannotLoad as error:
            log.error("cannot load %s", error)
            raise HTTPException(
                500, f"{error.key}: the prompt's files cannot be loaded; the server log has the details"
            ) from None
        except PromptTuneError as error:
            raise HTTPException(400, self.public(error)) from None
        except Exception:
            log.exception("request failed on the model")
            raise HTTPException(500, "the model failed on this request; see the server log") from None

    async def _decode(self, options: dict, items: list, logprobs: int | None = None) -> list:
        """Rows decoded in the continuous batch (`continuous.Request`), joined at its next step;
        items as `PromptService.run` takes them, streams included."""
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
        self.steps.submit(request)
        return await future


def server(request: Request) -> Server:
    """The app's `Server`, for a route's dependencies."""
    return request.app.state.server
