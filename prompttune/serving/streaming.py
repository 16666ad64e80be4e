"""An OpenAI completion streamed as server-sent events: each choice's text as its tokens are
decoded, stop strings searched off the event loop, then each choice's finish reason, the usage
when asked for, and `[DONE]`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..tasks.data import Example
from . import openai_api
from .openai_api import OpenAIError


class CompletionStream:
    """One streamed request: `sources` decoded with `options` in the batch `batch_key`."""

    def __init__(self, state, key: str, sources: list[str], body, batch_key: tuple, options: dict, chat: bool):
        self.state, self.key, self.chat, self.batch_key = state, key, chat, batch_key
        self.stream = openai_api.TokenStream(asyncio.get_running_loop())
        self.items = [
            (key, Example(text=text, origin=f"prompt {i}"), (self.stream, i)) for i, text in enumerate(sources)
        ]
        self.prompts = len(sources)
        self.n = body.n or 1
        self.drawn = options.get("num_return_sequences", 1)  # sequences decoded per prompt (greedy: 1, sent n times)
        stops = openai_api.stop_strings(body)
        tokenizer = state.service.backbone.tokenizer
        self.texts = {
            (p, q): openai_api.StreamText(tokenizer, stops) for p in range(self.prompts) for q in range(self.drawn)
        }
        self.ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.kind = "chat.completion.chunk" if chat else "text_completion"
        self.include_usage = bool((body.stream_options or {}).get("include_usage"))
        self.limit = options["max_new_tokens"]
        self.prompt_tokens: dict[int, int] = {}
        self.counts = {pq: 0 for pq in self.texts}

    def response(self) -> StreamingResponse:
        return StreamingResponse(self.events(), media_type="text/event-stream")

    def event(self, choices: list[dict], usage: dict | None = None) -> str:
        chunk = {"id": self.ident, "object": self.kind, "created": self.created, "model": self.key, "choices": choices}
        if usage is not None:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk)}\n\n"

    def choices_for(self, prompt: int, sequence: int, text: str | None, reason: str | None) -> list[dict]:
        n = self.n
        indices = [prompt * n + sequence] if self.drawn == n else [prompt * n + c for c in range(n)]
        if self.chat:
            delta = {} if text is None else {"content": text}
            return [{"index": i, "delta": delta, "logprobs": None, "finish_reason": reason} for i in indices]
        return [{"index": i, "text": text or "", "logprobs": None, "finish_reason": reason} for i in indices]

    def take(self, prompt: int, sequence: int, token: int, end: bool) -> str:
        """The text to send for one decoded token (or note a prompt's length: sequence -1)."""
        if sequence < 0:
            self.prompt_tokens[prompt] = token
            return ""
        state = self.texts[(prompt, sequence)]
        if state.done:
            return ""
        if not end:
            self.counts[(prompt, sequence)] += 1
        text = state.add(token, end)
        if not state.done and self.counts[(prompt, sequence)] >= self.limit:
            text += state.finish(reached_limit=True)
        return text

    def finals(self) -> list[str]:
        out = []
        for (p, q), state in self.texts.items():
            rest = state.finish(reached_limit=self.counts[(p, q)] >= self.limit) if not state.done else ""
            out.append(self.event(self.choices_for(p, q, rest if rest else None, state.reason)))
        if self.include_usage:
            used = sum(self.counts.values()) * (1 if self.drawn == self.n else self.n)
            given = sum(self.prompt_tokens.values())
            out.append(
                self.event([], {"prompt_tokens": given, "completion_tokens": used, "total_tokens": given + used})
            )
        return [*out, "data: [DONE]\n\n"]

    def drain(self) -> list[tuple]:
        """The tokens waiting in the queue."""
        waiting = []
        while not self.stream.queue.empty():
            waiting.append(self.stream.queue.get_nowait())
        return waiting

    def taken(self, tokens: list[tuple]) -> list[str]:
        """The events for decoded tokens: their text is decoded and searched for stop strings in a
        worker thread, never on the event loop that answers every other request."""
        lines = []
        for prompt, sequence, token_id, end in tokens:
            text = self.take(prompt, sequence, token_id, end)
            if text:
                lines.append(self.event(self.choices_for(prompt, sequence, text, None)))
        return lines

    def first(self) -> str:
        """A chat stream's first event: every choice's assistant role."""
        delta = {"role": "assistant", "content": ""}
        return self.event(
            [
                {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
                for i in range(self.prompts * self.n)
            ]
        )

    async def events(self):
        batch = asyncio.ensure_future(self.state.submit(self.batch_key, self.items))
        # The batch may end after this stream has: its outcome is read, not left unobserved.
        batch.add_done_callback(lambda f: f.cancelled() or f.exception())
        completed = False
        try:
            if self.chat:
                yield self.first()
            while not all(t.done for t in self.texts.values()):
                getter = asyncio.ensure_future(self.stream.queue.get())
                done, _ = await asyncio.wait({getter, batch}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                for line in await run_in_threadpool(self.taken, [getter.result(), *self.drain()]):
                    yield line
            # Every sequence has ended (end of sequence, stop string, max_tokens): the answer is
            # complete without waiting for the rest of its batch, whose decoding of it stops.
            self.stream.stopped = True
            for line in await run_in_threadpool(self.taken, self.drain()):  # tokens handed over as the batch ended
                yield line
            if not all(t.done for t in self.texts.values()) and batch.done():
                try:
                    batch.result()
                except HTTPException as error:
                    yield f"data: {json.dumps(OpenAIError(error.status_code, str(error.detail)).body())}\n\n"
                    completed = True
                    return
            self.state.metrics.generated.labels(self.key).inc(len(self.texts))
            for line in await run_in_threadpool(self.finals):
                yield line
            completed = True
        finally:
            if not completed:
                self.stream.stopped = True  # the client went away: its sequences stop at the next step
