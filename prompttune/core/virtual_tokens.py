"""Placing virtual tokens in a padded batch.

Virtual tokens go immediately before each row's first real token, whichever side the padding is on:

    right padding   [x x x p p]  ->  [v v x x x p p]
    left padding    [p p x x x]  ->  [p p v v x x x]

so every row looks like an ordinary padded sequence whose first tokens are the virtual ones (PEFT puts
them at the very front, before left padding, issue 1093 there). Rows may carry prompts of different
lengths (mixed-task batches): a row with n of the N virtual slots gets N - n masked filler slots,
at the very start of the row, or at its very end with `filler_last` (for models that count positions
from the start of the sequence and take no position ids):

    [u p p v x x x]     filler first
    [v x x x p p u]     filler last
"""

from __future__ import annotations

import torch


def insert_virtual_tokens(
    embeds: torch.Tensor,  # (B, T, D)
    attention_mask: torch.Tensor,  # (B, T)
    virtual: torch.Tensor,  # (B, N, D), each row's prompt in its first n_b slots
    virtual_mask: torch.Tensor | None = None,  # (B, N), 1 for the first n_b slots of row b
    token_type_ids: torch.Tensor | None = None,  # (B, T)
    filler_last: bool = False,
):
    """Return (embeds, attention_mask, token_type_ids, real_index) over T + N positions.

    real_index[b, t] is the new position of original token t of row b.
    """
    batch, length, _ = embeds.shape
    n_virtual = virtual.shape[1]
    device = embeds.device
    if virtual_mask is None:
        virtual_mask = torch.ones(batch, n_virtual, dtype=attention_mask.dtype, device=device)
    used = virtual_mask.long().sum(-1, keepdim=True)  # (B, 1): n_b
    filler = n_virtual - used  # (B, 1)
    # First attended position of each row (0 for right padding, the pad count for left padding).
    has_tokens = attention_mask.bool().any(-1)
    start = torch.where(
        has_tokens, attention_mask.bool().long().argmax(-1), torch.zeros_like(has_tokens, dtype=torch.long)
    )
    start_ = start.unsqueeze(1)

    new_pos = torch.arange(length + n_virtual, device=device).unsqueeze(0)  # (1, T+N)
    shift = torch.zeros_like(filler) if filler_last else filler  # filler slots before the row
    pos = new_pos - shift  # position within the row's own layout [padding, n_b virtual, tokens]
    # Index into cat([real (T), virtual (N)]) along the sequence axis; filler reads the unused slots.
    in_filler = (pos < 0) | (pos >= length + used)
    filler_index = torch.where(pos < 0, length + used + new_pos, length + (pos - length))
    in_virtual = (pos >= start_) & (pos < start_ + used)
    source = torch.where(
        in_filler,
        filler_index,
        torch.where(in_virtual, length + (pos - start_), torch.where(pos < start_, pos, pos - used)),
    ).clamp(0, length + n_virtual - 1)  # (B, T+N)

    def take(real: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        both = torch.cat([real, fill], dim=1)
        if both.dim() == 3:
            return both.gather(1, source.unsqueeze(-1).expand(-1, -1, both.shape[-1]))
        return both.gather(1, source)

    new_embeds = take(embeds, virtual.to(embeds.dtype))
    new_mask = take(attention_mask, virtual_mask.to(attention_mask.dtype))
    new_types = None
    if token_type_ids is not None:
        new_types = take(token_type_ids, torch.zeros(batch, n_virtual, dtype=token_type_ids.dtype, device=device))
    old_pos = torch.arange(length, device=device).unsqueeze(0)
    real_index = shift + torch.where(old_pos < start_, old_pos, old_pos + used)  # (B, T)
    return new_embeds, new_mask, new_types, real_index


def gather_positions(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, T', ...) at index (B, T) -> (B, T, ...)."""
    if values.dim() == 3:
        return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return values.gather(1, index)
