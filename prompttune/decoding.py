"""How text is decoded: every option of transformers' `generate` that prompttune passes on, defined
once with its meaning, its valid range and the most a server serves. The command line's flags
(`prompttune generate`, `prompttune human-eval create`), the server's `/v1/generate` request and
the check every generation runs (`check_decoding`) are derived from `Decoding`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .config import ConfigBase
from .errors import ConfigError


def _bounded(low, high=None, served=None, exclusive=False):
    """A decoding option's metadata: valid values lie in [low, high] ((low, high] where
    `exclusive`); a server accepts at most `served` (None: `high`)."""
    return field(default=None, metadata={"low": low, "high": high, "served": served, "exclusive": exclusive})


@dataclass(frozen=True)
class Decoding(ConfigBase):
    """Decoding options; None leaves an option to the prompt (its max target length, its beams) or
    to transformers. Bounds keep decoding finite: a temperature or penalty near 0 divides logits
    into inf and NaN."""

    max_new_tokens: int | None = _bounded(1, served=1024)
    """tokens to generate at most (default: the prompt's max target length)"""
    num_beams: int | None = _bounded(1, served=16)
    """beam search width (default: the prompt's, 1 = greedy)"""
    do_sample: bool = False
    """sample instead of greedy or beam search"""
    top_k: int | None = _bounded(1, served=1_000_000)
    """sample from the k most likely tokens only"""
    top_p: float | None = _bounded(0.0, 1.0, exclusive=True)
    """sample from the smallest set of tokens whose probabilities add up to p"""
    temperature: float | None = _bounded(0.001, 100.0)
    """divide the logits by this before sampling"""
    num_return_sequences: int | None = _bounded(1, served=16)
    """sequences per source; more than 1 needs do_sample, or num_beams at least as large"""
    repetition_penalty: float | None = _bounded(0.01, 100.0)
    """penalise tokens already generated (1 = none)"""
    no_repeat_ngram_size: int | None = _bounded(0, served=1024)
    """never repeat an n-gram of this size (0 = off)"""
    length_penalty: float | None = _bounded(-10.0, 10.0)
    """beam search: exponent on the length a beam's score is divided by"""


BOUNDED = tuple(f for f in dataclasses.fields(Decoding) if "low" in f.metadata)
NAMES = tuple(f.name for f in dataclasses.fields(Decoding))


def check_value(name: str, value, low, high, exclusive: bool) -> None:
    """Refuse `value` for the option `name` unless it is a number of the option's kind in its range."""
    integral = isinstance(low, int)
    if (
        isinstance(value, bool)
        or not isinstance(value, int if integral else (int, float))
        or (not integral and not math.isfinite(value))
    ):
        raise ConfigError(f"{name}: expected {'an integer' if integral else 'a finite number'}, got {value!r}")
    if value < low or (exclusive and value == low) or (high is not None and value > high):
        span = f"in ({low}, {high}]" if exclusive else f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"{name}: {value} is out of range; it must be {span}")


def check_decoding(options: dict, max_new_tokens: int, num_beams: int) -> dict:
    """The options `generate` runs with: None dropped, each known option checked against its
    bounds, the prompt's defaults filled in (`max_new_tokens`, `num_beams`), and combinations
    transformers cannot run refused with a message naming the field. Other keys pass unchanged."""
    options = {k: v for k, v in options.items() if v is not None}
    for f in BOUNDED:
        if f.name in options:
            check_value(f.name, options[f.name], f.metadata["low"], f.metadata["high"], f.metadata["exclusive"])
    options.setdefault("max_new_tokens", max_new_tokens)
    options.setdefault("num_beams", num_beams)
    options["do_sample"] = bool(options.get("do_sample", False))
    sequences = options.get("num_return_sequences", 1)
    beams = options["num_beams"]
    if sequences > beams and (beams > 1 or not options["do_sample"]):
        # Beam search, sampled or not, returns its best beams; only plain sampling draws any number.
        raise ConfigError(
            f"num_return_sequences: {sequences} different sequences need do_sample with num_beams 1, or "
            f"num_beams >= {sequences} (beam search returns its best beams); num_beams is {beams}"
        )
    return options


def request_fields() -> dict:
    """`Decoding`'s fields as pydantic fields of a server request: each option optional, bounded by
    its valid range and by the most a server serves, described by its docstring."""
    import typing

    from pydantic import Field

    from .config import field_docs

    docs = field_docs(Decoding)
    hints = typing.get_type_hints(Decoding)
    fields = {}
    for f in dataclasses.fields(Decoding):
        if "low" not in f.metadata:
            fields[f.name] = (hints[f.name], Field(f.default, description=docs[f.name]))
            continue
        m = f.metadata
        low = {"gt": m["low"]} if m["exclusive"] else {"ge": m["low"]}
        high = m["served"] if m["served"] is not None else m["high"]
        fields[f.name] = (hints[f.name], Field(None, le=high, description=docs[f.name], **low))
    return fields
