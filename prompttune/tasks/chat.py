"""The text around an input that the model's chat template writes: a system message, earlier turns,
and the start of the assistant's answer, where the prompt is read or the target begins."""

from __future__ import annotations

from ..core.backbone import DECODER, Backbone
from ..errors import ConfigError

_MARKER = "\u0000PROMPTTUNE-INPUT\u0000"


def chat_wrap(backbone: Backbone, instruction: str | None, turns: list[tuple[str, str]] = ()) -> tuple[str, str]:
    """(text before, text after) the user's last message: `instruction` as the system message,
    `turns` as earlier (user, assistant) exchanges, and the generation prompt at the end."""
    tokenizer = backbone.tokenizer
    if backbone.kind != DECODER or not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"chat: {type(backbone.model).__name__}'s tokenizer has no chat template; use --instruction without --chat"
        )
    messages = [{"role": "system", "content": instruction}] if instruction else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": _MARKER})
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if rendered.count(_MARKER) != 1:
        raise ConfigError("chat: the tokenizer's chat template does not keep the user's message as it is")
    before, after = rendered.split(_MARKER)
    return before, after
