"""The micro-batcher on its own: requests that arrive together are joined per key within the batch
size, each gets its own results, and a failing request fails alone."""

import asyncio
import threading

import pytest

from prompttune.serving.batcher import MicroBatcher

pytestmark = pytest.mark.same_on_every_transformers  # reaches no transformers code


def run(coroutine):
    return asyncio.run(coroutine)


def test_requests_arriving_together_share_a_batch_per_key():
    calls = []
    model_threads = set()

    def work(key, items):
        calls.append((key, list(items)))
        model_threads.add(threading.current_thread().name)
        return [f"{key}:{x}" for x in items]

    async def scenario():
        batcher = MicroBatcher(work, max_batch_size=5, max_wait_ms=50)
        await batcher.start()
        try:
            return await asyncio.gather(
                batcher.submit("a", [1, 2]),
                batcher.submit("b", [3]),
                batcher.submit("a", [4]),
                batcher.submit("a", [5, 6]),
                batcher.submit("a", [7]),
            )
        finally:
            await batcher.stop()

    results = run(scenario())
    assert results == [["a:1", "a:2"], ["b:3"], ["a:4"], ["a:5", "a:6"], ["a:7"]]
    # Key "a": 6 items arrive together; the batch takes whole requests up to 5 items, in order.
    assert calls[0] == ("a", [1, 2, 4, 5, 6])
    assert sorted(calls[1:]) == [("a", [7]), ("b", [3])]
    assert len(model_threads) == 1 and next(iter(model_threads)).startswith("prompttune-model")


def test_a_failing_request_fails_alone():
    def work(key, items):
        if "bad" in items:
            raise ValueError("cannot read 'bad'")
        return [x.upper() for x in items]

    async def scenario():
        batcher = MicroBatcher(work, max_batch_size=8, max_wait_ms=50)
        await batcher.start()
        try:
            return await asyncio.gather(
                batcher.submit("k", ["x"]),
                batcher.submit("k", ["bad"]),
                batcher.submit("k", ["y", "z"]),
                return_exceptions=True,
            )
        finally:
            await batcher.stop()

    ok, failed, other = run(scenario())
    assert ok == ["X"] and other == ["Y", "Z"]
    assert isinstance(failed, ValueError) and "bad" in str(failed)


def test_limits():
    async def scenario():
        batcher = MicroBatcher(lambda key, items: items, max_batch_size=2, max_wait_ms=1)
        with pytest.raises(RuntimeError, match="not started"):
            await batcher.submit("k", [1])
        await batcher.start()
        try:
            with pytest.raises(ValueError, match="at most 2"):
                await batcher.submit("k", [1, 2, 3])
            assert await batcher.submit("k", []) == []
        finally:
            await batcher.stop()

    run(scenario())
    with pytest.raises(ValueError):
        MicroBatcher(lambda key, items: items, max_batch_size=0)
