"""What a prompt adds to the rows it applies to, and how it is attached to a batch.

Every method that changes the model's input describes its contribution as `PromptParts`: virtual
token embeddings placed before the input (soft prompts, P-tuning) and per-layer key/value prefixes
(prefix tuning, deep prompt tuning). `attach` puts them into a batch's `ModelInputs`, either one
prompt for every row (training, a single prompt's inference) or a different prompt per row (mixed
batches: `owner[b]` names row b's prompt). Both go through the same code.

Prompts of different lengths in one batch are padded and masked, not recomputed:

- virtual tokens: a row whose prompt is shorter than the longest gets masked filler slots at the very
  start of the row (positions are counted from the attention mask, so they shift nothing), or at its
  very end for models that take no position ids and count positions from the start of the sequence.
- prefixes: each prompt's prefix is right-aligned in the longest prefix length; the unused slots
  before it are masked. Positions are counted from the attention mask, so each row's input starts
  right after its own prefix, as it does alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .backbone import ModelInputs
from .kv_prefix import SELF, Prefix
from .virtual_tokens import insert_virtual_tokens


@dataclass
class PromptParts:
    virtual: torch.Tensor | None = None
    """(N, D) virtual-token embeddings placed immediately before the input's first token."""
    prefix: dict[str, torch.Tensor] | None = None
    """site -> (L, 2, H_kv, P, d) keys and values prepended at every attention layer of the site."""

    @property
    def num_virtual(self) -> int:
        return 0 if self.virtual is None else self.virtual.shape[0]

    @property
    def prefix_length(self) -> int:
        return 0 if not self.prefix else next(iter(self.prefix.values())).shape[3]

    def detached(self) -> PromptParts:
        return PromptParts(
            None if self.virtual is None else self.virtual.detach(),
            None if self.prefix is None else {k: v.detach() for k, v in self.prefix.items()},
        )


def computed_once(parts: PromptParts, backbone) -> PromptParts:
    """In a causal decoder that computes prompts once (`backbone.prompts_once`): the virtual tokens
    as the keys and values they give at every layer (`Backbone.prompt_states`), after the
    prompt's own prefix; elsewhere, the parts as they are."""
    if parts.num_virtual == 0 or not getattr(backbone, "prompts_once", False):
        return parts
    before = parts.prefix[SELF] if parts.prefix else None
    states = backbone.prompt_states(parts.virtual, before)
    prefix = states if before is None else torch.cat([before.to(states.dtype), states], dim=3)
    return PromptParts(virtual=None, prefix={SELF: prefix})


def attach(
    inputs: ModelInputs,
    parts: list[PromptParts],
    owner: torch.Tensor | None = None,
    filler_last: bool = False,
    backbone=None,
) -> ModelInputs:
    """`inputs` with each row's prompt attached. `owner` (B,) indexes `parts` per row; None means
    `parts[0]` for every row (kept at batch size 1 and broadcast, never copied per row).
    `filler_last` puts the filler of shorter virtual prompts at the end of the row (the backbone's
    `pads_right_only`). With `backbone`, a decoder's virtual tokens are computed once and attached
    as a prefix (`computed_once`)."""
    if owner is None and len(parts) != 1:
        raise ValueError("attach: several prompts need `owner`, the prompt of each row")
    if backbone is not None:
        parts = [computed_once(p, backbone) for p in parts]
    inputs = _attach_virtual(inputs, parts, owner, filler_last)
    return _attach_prefix(inputs, parts, owner)


def _attach_virtual(
    inputs: ModelInputs, parts: list[PromptParts], owner: torch.Tensor | None, filler_last: bool
) -> ModelInputs:
    longest = max(p.num_virtual for p in parts)
    if longest == 0:
        return inputs
    embeds = inputs.inputs_embeds
    batch, dim = embeds.shape[0], embeds.shape[-1]
    mask_dtype = inputs.attention_mask.dtype
    if owner is None:
        virtual = parts[0].virtual.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        virtual_mask = None
    else:
        # One (N_max, D) block per prompt, its tokens first and masked filler after, then per row.
        blocks, masks = [], []
        for p in parts:
            n = p.num_virtual
            block = embeds.new_zeros(longest, dim)
            if n:
                block = torch.cat([p.virtual.to(embeds.dtype), block[n:]])
            blocks.append(block)
            masks.append(torch.arange(longest, device=embeds.device) < n)
        virtual = torch.stack(blocks)[owner]
        virtual_mask = torch.stack(masks)[owner].to(mask_dtype)
    new_embeds, mask, types, real_index = insert_virtual_tokens(
        embeds,
        inputs.attention_mask,
        virtual,
        virtual_mask,
        token_type_ids=inputs.token_type_ids,
        filler_last=filler_last,
    )
    readout = inputs.readout_index
    if readout is not None and inputs.decoder_input_ids is None:  # (an encoder-decoder reads a decoder position)
        readout = real_index.gather(1, readout.unsqueeze(1)).squeeze(1)
    previous = inputs.real_index
    real_index = real_index if previous is None else real_index.gather(1, previous)
    return replace(
        inputs,
        inputs_embeds=new_embeds,
        attention_mask=mask,
        token_type_ids=types,
        readout_index=readout,
        real_index=real_index,
    )


def _attach_prefix(inputs: ModelInputs, parts: list[PromptParts], owner: torch.Tensor | None) -> ModelInputs:
    longest = max(p.prefix_length for p in parts)
    if longest == 0:
        return inputs
    batch = inputs.inputs_embeds.shape[0]
    dtype = inputs.inputs_embeds.dtype
    mask_dtype, device = inputs.attention_mask.dtype, inputs.attention_mask.device
    if owner is None:
        # One prefix for every row: batch dimension 1, expanded where keys and values are joined.
        kv = {site: t.unsqueeze(2).to(dtype) for site, t in parts[0].prefix.items()}
        mask = torch.ones(batch, longest, dtype=mask_dtype, device=device)
        return replace(inputs, prefix=Prefix(kv, mask))
    sites = next(p.prefix for p in parts if p.prefix)
    kv = {}
    for site, example in sites.items():
        layers, _, heads, _, size = example.shape
        blocks = []
        for p in parts:
            block = example.new_zeros(layers, 2, heads, longest, size, dtype=dtype)
            if p.prefix:
                n = p.prefix_length
                block = torch.cat([block[:, :, :, : longest - n], p.prefix[site].to(dtype)], dim=3)
            blocks.append(block)
        kv[site] = torch.stack(blocks, dim=2)[:, :, owner]  # (L, 2, B, H, P_max, d)
    masks = torch.stack([torch.arange(longest, device=device) >= longest - p.prefix_length for p in parts])
    return replace(inputs, prefix=Prefix(kv, masks[owner].to(mask_dtype)))
