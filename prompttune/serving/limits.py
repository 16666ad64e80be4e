"""A server's limits: what one request may ask for and how requests are batched."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigBase, check, check_optional_count


@dataclass(frozen=True)
class Limits(ConfigBase):
    """What one server accepts and how it batches: `prompttune serve`'s flags are these fields."""

    max_batch_size: int = 64
    """rows per model forward"""
    max_wait_ms: float = 5.0
    """how long a request waits for others to batch with"""
    max_inputs: int = 64
    """inputs per request (at most max_batch_size)"""
    max_chars: int = 8192
    """characters per input"""
    max_loaded: int = 256
    """prompt versions kept loaded"""
    max_batch_tokens: int | None = None
    """run joined rows in order of length, at most this many padded tokens per forward (default:
    one forward per joined batch)"""
    max_body_bytes: int | None = None
    """largest request body, refused with 413 before it is read (default: room for max_inputs pairs
    of max_chars characters, each written as a 6-byte JSON escape, and 64 KiB besides)"""
    max_request_tokens: int = 8192
    """tokens one generation request may decode: inputs x beams or sequences x new tokens"""
    body_timeout_s: float = field(default=10.0, metadata={"flag": "body-timeout"})
    """seconds a request's body may take to arrive; then 408 (a client that declares more than it sends)"""
    continuous: bool = True
    """decode OpenAI requests on a decoder-only model in a continuous batch, each joining it at its
    next step (false: in the micro-batcher's batches, each decoded from start to end)"""

    def __post_init__(self):
        for name in ("max_batch_size", "max_inputs", "max_chars", "max_loaded", "max_request_tokens"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value > 0, name, "must be >= 1")
        check_optional_count(self.max_batch_tokens, "max_batch_tokens")
        check_optional_count(self.max_body_bytes, "max_body_bytes")
        check(self.max_wait_ms >= 0, "max_wait_ms", f"must be >= 0, got {self.max_wait_ms}")
        check(self.body_timeout_s > 0, "body_timeout_s", f"must be > 0, got {self.body_timeout_s}")
        check(
            self.max_inputs <= self.max_batch_size,
            "max_inputs",
            f"{self.max_inputs} exceeds max_batch_size {self.max_batch_size} (a request's inputs run in one batch)",
        )

    @property
    def body_bytes(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_inputs * (2 * self.max_chars * 6 + 64) + 65536
