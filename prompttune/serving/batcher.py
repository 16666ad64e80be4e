"""Dynamic batching of concurrent requests, independent of any model.

Requests arrive one by one, each a list of items. The batcher waits up to `max_wait_ms` after the
first pending request for others, joins requests that share a key (for example the decoding options
of a generation request) into one call of `run(items)` of at most `max_batch_size` items, and hands
each request its own slice of the results. `run` executes in a single worker thread, so the model
behind it sees one batch at a time and the event loop never blocks.

When a joined batch fails, each request in it is retried alone, so one bad request gets its own
error and the others their results.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger("prompttune.serving.batcher")


@dataclass
class _Request:
    key: Hashable
    items: list
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(
        self,
        run: Callable[[Hashable, list], list],
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, int], None] | None = None,
    ):
        """`run(key, items)` returns one result per item. `on_batch(items, requests)` is told the
        size of every batch that runs (for metrics)."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._pending: list[_Request] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompttune-model")

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for request in self._pending:
            if not request.future.done():
                request.future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, key: Hashable, items: list) -> list:
        """Results for `items`, in order, once the batch holding them has run."""
        if not items:
            return []
        if len(items) > self.max_batch_size:
            raise ValueError(f"{len(items)} items in one request; at most {self.max_batch_size}")
        if self._task is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(key, list(items), future))
        self._wakeup.set()
        return await future

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                first = self._pending[0]
                # Wait for company until the first request has waited max_wait, or the batch is full.
                while True:
                    size = sum(len(r.items) for r in self._pending if r.key == first.key)
                    remaining = first.arrived + self.max_wait - time.perf_counter()
                    if size >= self.max_batch_size or remaining <= 0:
                        break
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
                    except asyncio.TimeoutError:
                        pass
                    self._wakeup.clear()
                batch, size = [], 0
                for request in list(self._pending):
                    if request.key == first.key and size + len(request.items) <= self.max_batch_size:
                        batch.append(request)
                        size += len(request.items)
                for request in batch:
                    self._pending.remove(request)
                batch = [r for r in batch if not r.future.cancelled()]
                if batch:
                    await self._execute(first.key, batch)

    async def _execute(self, key: Hashable, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for request in batch for item in request.items]
        try:
            results = await loop.run_in_executor(self._executor, self.run, key, items)
            if self.on_batch is not None:
                self.on_batch(len(items), len(batch))
        except Exception as error:
            if len(batch) == 1:
                settle(batch[0].future, error=error)
                return
            for request in batch:
                await self._execute(key, [request])
            return
        start = 0
        for request in batch:
            settle(request.future, result=results[start : start + len(request.items)])
            start += len(request.items)


def settle(future: asyncio.Future, result=None, error: Exception | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class StepLoop:
    """A thread that calls `engine.step()` while `engine.busy`, holding `lock` for each step, and
    sleeps while there is nothing to do (a continuous batch: requests join between steps, and other
    work on the same model, such as the micro-batcher's, runs between them too)."""

    def __init__(self, engine, lock: threading.Lock):
        self.engine, self.lock = engine, lock
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="prompttune-decode", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the step in progress; requests still running or waiting fail."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        with self.lock:
            self.engine.fail_all(RuntimeError("the server is shutting down"), waiting=True)

    def submit(self, request) -> None:
        if self._closed:
            raise RuntimeError("the server is shutting down")
        self.engine.submit(request)
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            while self.engine.busy and not self._closed:
                with self.lock:
                    try:
                        self.engine.step()
                    except Exception as error:
                        log.exception("a decoding step failed")
                        self.engine.fail_all(error)
