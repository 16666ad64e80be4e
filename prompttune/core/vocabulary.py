"""Vocabulary tokens that can stand anywhere in a prompt's text: what searched prompts are built from."""

from __future__ import annotations

from ..errors import ConfigError


def first_plain_token(tokenizer) -> int:
    """The first vocabulary token that is no special token and reads back as itself, alone and
    repeated (a stand-in for trigger tokens before they are chosen)."""
    return next(iter(plain_tokens(tokenizer, limit=1)))


def plain_tokens(tokenizer, limit: int | None = None) -> list[int]:
    """Vocabulary tokens that can stand anywhere in a prompt's text: not special, and decoding then
    re-encoding gives the token back, alone and twice in a row (so a searched prompt written out
    as text is read back as the same tokens)."""
    special = set(tokenizer.all_special_ids)
    found = []
    for token in sorted(tokenizer.get_vocab().values()):
        if token in special:
            continue
        text = tokenizer.decode([token])
        if not text.strip():
            continue
        if tokenizer(text, add_special_tokens=False)["input_ids"] != [token]:
            continue
        if tokenizer(tokenizer.decode([token, token]), add_special_tokens=False)["input_ids"] != [token, token]:
            continue
        found.append(token)
        if limit is not None and len(found) >= limit:
            break
    if not found:
        raise ConfigError("the tokenizer has no plain tokens to build a searched prompt from")
    return found
