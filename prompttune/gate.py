"""What every request to prompttune's web apps (`prompttune serve` and the human-evaluation page)
passes before a route sees it, as one ASGI middleware:

1. the bearer token, where the app has one: checked from the headers, before any byte of the body
   is read (every path but those left open, `/health` and the like);
2. the body's size: refused from its Content-Length, or as soon as that many bytes of a chunked body
   have arrived (413);
3. the body's time: a client that declares more than it sends, or sends it a byte at a time, is
   answered 408 once `body_timeout` seconds have passed since its request began;
4. the body's text: JSON is UTF-8 (RFC 8259), so bytes that are not UTF-8, and `\\uD800`-style
   escapes that are half a surrogate pair (text no tokenizer, database or JSON encoder takes), are
   refused with the byte offset where they are (400, or 422 where the app answers malformed JSON
   with 422).

The body is read here, whole, and handed on to the app; each refusal closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable

# A \u escape of a surrogate code point (a candidate: it may be a valid pair, or not an escape at all).
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


def lone_surrogate(body: bytes) -> int | None:
    """The byte offset of the first JSON `\\u` escape in `body` that is half a surrogate pair
    without its other half, or None. Escaped backslashes are read as JSON reads them (`\\\\udfff` is
    a backslash and the letters 'udfff')."""
    if _SURROGATE.search(body) is None:  # the usual case, at the speed of a regular expression
        return None
    pending = None  # a high surrogate's escape, waiting for its low half right after it
    for match in _ESCAPE.finditer(body):
        code = match.group(1)
        value = int(code, 16) if code is not None else -1
        if pending is not None:
            if match.start() == pending[1] and 0xDC00 <= value <= 0xDFFF:
                pending = None
                continue
            return pending[0]
        if 0xD800 <= value <= 0xDBFF:
            pending = (match.start(), match.end())
        elif 0xDC00 <= value <= 0xDFFF:
            return match.start()
    return pending[0] if pending is not None else None


def utf8_problem(body: bytes) -> str | None:
    """Why `body` is not UTF-8, or None."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"request body: byte {error.start} is not UTF-8 ({error.reason}); JSON is sent as UTF-8"
    return None


def surrogate_problem(body: bytes) -> str | None:
    """Where `body` holds half a surrogate pair, or None."""
    at = lone_surrogate(body)
    if at is not None:
        escape = body[at : at + 6].decode("ascii")
        return (
            f"request body: the escape {escape} at byte {at} is half a UTF-16 surrogate pair without its other "
            "half, which is not text"
        )
    return None


ErrorBody = Callable[[str, int, str], dict]


def detail_body(path: str, status: int, message: str) -> dict:
    return {"detail": message}


class RequestGate:
    """ASGI middleware: token, then size, time and text of the body, before the app reads it.

    `error_body(path, status, message)` shapes a refusal as the app's other errors are shaped;
    `malformed_status(path)` is the status the app gives malformed JSON there (bad text gets it).
    """

    def __init__(
        self,
        app,
        max_bytes: int,
        body_timeout: float = 10.0,
        token: str | None = None,
        open_paths: tuple[str, ...] = ("/health",),
        error_body: ErrorBody = detail_body,
        malformed_status: Callable[[str], int] = lambda path: 422,
        size_hint: str = " (the server's --max-body-bytes)",
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.token = token.encode() if token else None
        self.open_paths = open_paths
        self.error_body = error_body
        self.malformed_status = malformed_status
        self.size_hint = size_hint

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        if self.token is not None and path not in self.open_paths and not self._authorised(headers):
            return await self._answer(
                send, path, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")]
            )
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await self._answer(send, path, 400, "Content-Length is not a number")
            if int(declared) > self.max_bytes:
                return await self._answer(
                    send, path, 413, f"request body of {int(declared)} bytes; at most {self.max_bytes}{self.size_hint}"
                )
        deadline = time.monotonic() + self.body_timeout
        body = bytearray()
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                return await self._answer(
                    send,
                    path,
                    408,
                    f"the request body did not arrive within {self.body_timeout:g} s ({len(body)} bytes came)",
                )
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await self._answer(send, path, 413, f"request body over {self.max_bytes} bytes{self.size_hint}")
            if not message.get("more_body", False):
                break
        body = bytes(body)
        problem = utf8_problem(body)
        if problem is None and _SURROGATE.search(body) is not None:
            # A candidate surrogate escape means a scan of every escape: in a worker thread, so that
            # a body of millions of escapes holds no other request.
            problem = await asyncio.to_thread(surrogate_problem, body)
        if problem is not None:
            return await self._answer(send, path, self.malformed_status(path), problem)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client to disconnect, as usual

        await self.app(scope, replay, send)

    def _authorised(self, headers: dict) -> bool:
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and secrets.compare_digest(credentials.strip(), self.token)

    async def _answer(self, send, path: str, status: int, message: str, extra: list | None = None) -> None:
        payload = json.dumps(self.error_body(path, status, message)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                    *(extra or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
