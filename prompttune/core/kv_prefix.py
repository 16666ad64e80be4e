"""Per-layer key/value prefixes expressed in transformers' own Cache API.

A prefix (Li & Liang 2021; P-tuning v2) is a set of keys and values that every attention layer
attends to before the input's own. transformers' `Cache` objects already carry exactly that, so a
prefix is given to the model as a cache whose layers hold it:

- `PrefixLayer` is a read-only cache layer: `update` returns the prefix joined to the new keys and
  values and stores nothing. The same forward can therefore be run twice (gradient checkpointing
  recomputes it during backward) and see the same prefix both times.
- `PrefixEncoderDecoderCache` pairs a decoder self-attention prefix with a cross-attention prefix.
  Its cross-attention entries never count as "already computed", so every forward projects the
  encoder states afresh and appends them after the prefix.
- For generation, `filled_cache` builds an ordinary growing `DynamicCache` that starts out holding
  the prefix; `generate` then appends each new token's keys and values after it, so the prefix is
  computed once per batch and read from the cache at every step.

Shapes: a site's prefix is (L, 2, B, H_kv, P, d): layers, key/value, batch, key/value heads (the
KV-head count under grouped-query attention), prefix length, head size. B may be 1 for a prefix
shared by every row; it is expanded (a view, no copy) where the keys and values are joined, so the
backward pass sums the gradient over the batch instead of materialising a batch-sized tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache

#: The keyword argument that carries prefixes through a model's forward down to its attention
#: modules (transformers passes unknown keyword arguments through every layer, and gradient
#: checkpointing keeps them for the recomputation).
PREFIX_KWARG = "prompttune_prefix"

#: Where prefixes go. Decoder-only and encoder-only models have one self-attention site; an
#: encoder-decoder has the encoder's self-attention, the decoder's self-attention and the decoder's
#: cross-attention (Li & Liang 2021, section 4.1).
SELF, ENCODER_SITE, DECODER_SITE, CROSS_SITE = "self", "encoder", "decoder", "cross"


@dataclass
class Prefix:
    """Keys and values per site, each (L, 2, B, H_kv, P, d), and which prefix slots each row uses."""

    kv: dict[str, torch.Tensor]
    mask: torch.Tensor  # (B, P): 1 where the row has a prefix entry

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def repeat_rows(self, times: int) -> Prefix:
        """Each row repeated `times` times in place (beam search and sampled sequences)."""
        kv = {k: v if v.shape[2] == 1 else v.repeat_interleave(times, dim=2) for k, v in self.kv.items()}
        return Prefix(kv, self.mask.repeat_interleave(times, 0))


class PrefixLayer(DynamicLayer):
    """A cache layer holding a fixed prefix; `update` returns prefix + new states and keeps nothing."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        batch = key_states.shape[0]
        # The layer may sit on another device than the prompt (a model spread by a device map).
        keys = self.keys.to(device=key_states.device, dtype=key_states.dtype).expand(batch, -1, -1, -1)
        values = self.values.to(device=value_states.device, dtype=value_states.dtype).expand(batch, -1, -1, -1)
        return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)


class CapturingPrefixLayer(PrefixLayer):
    """A prefix layer that also keeps, with their gradients, the keys and values the layer computes
    for its input: how a decoder's virtual tokens become a prefix (computed once, attached to every
    row)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, record: dict, index: int):
        super().__init__(keys, values)
        self.record, self.index = record, index

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        self.record[self.index] = (key_states, value_states)
        return super().update(key_states, value_states)


def capturing_cache(kv: torch.Tensor, record: dict) -> Cache:
    """A read-only cache over the prefix (L, 2, 1, H, P, d) (P may be 0) whose layers fill
    `record[layer] = (keys, values)` with what they compute for the input."""
    return Cache(layers=[CapturingPrefixLayer(*layer.unbind(0), record, i) for i, layer in enumerate(kv.unbind(0))])


class _NeverComputed(dict):
    """`is_updated` of a cross-attention cache that always recomputes the encoder's keys/values."""

    def get(self, key, default=None):
        return False

    def __getitem__(self, key):
        return False

    def __setitem__(self, key, value):
        pass


class PrefixEncoderDecoderCache(EncoderDecoderCache):
    def __init__(self, self_attention: Cache, cross_attention: Cache):
        super().__init__(self_attention, cross_attention)
        self.is_updated = _NeverComputed()


def prefix_cache(kv: torch.Tensor) -> Cache:
    """A read-only cache over (L, 2, B, H, P, d). `unbind` rather than indexing: its backward
    stacks the layers' gradients once instead of filling a zero tensor per layer."""
    return Cache(layers=[PrefixLayer(*layer.unbind(0)) for layer in kv.unbind(0)])


def filled_cache(kv: torch.Tensor, batch_size: int) -> DynamicCache:
    """A growing cache that starts with the prefix, one row per sequence (for `generate`)."""
    cache = DynamicCache()
    for index, layer in enumerate(kv.unbind(0)):
        keys, values = (t.expand(batch_size, -1, -1, -1).contiguous() for t in layer.unbind(0))
        cache.update(keys, values, index)
    return cache


def filled_encoder_decoder_cache(decoder: torch.Tensor, cross: torch.Tensor, batch_size: int) -> EncoderDecoderCache:
    """Decoder and cross-attention caches starting with their prefixes. Cross-attention entries are
    marked not yet computed, so the first decoding step appends the encoder's keys and values after
    the prefix; later steps read them from the cache."""
    cache = EncoderDecoderCache(filled_cache(decoder, batch_size), filled_cache(cross, batch_size))
    for layer in range(cross.shape[0]):
        cache.is_updated[layer] = False
    return cache


def training_caches(prefix: Prefix) -> dict[str, Cache]:
    """The cache each attention site receives during a (re-computable) forward."""
    if SELF in prefix.kv:
        return {SELF: prefix_cache(prefix.kv[SELF])}
    caches = {}
    if ENCODER_SITE in prefix.kv:
        caches[ENCODER_SITE] = prefix_cache(prefix.kv[ENCODER_SITE])
    decoder = PrefixEncoderDecoderCache(prefix_cache(prefix.kv[DECODER_SITE]), prefix_cache(prefix.kv[CROSS_SITE]))
    caches[DECODER_SITE] = caches[CROSS_SITE] = decoder
    return caches


class _RecordingLayer(DynamicLayer):
    """Records the keys and values a layer produces for the current input; changes nothing."""

    def __init__(self, record: dict, site: str, layer: int):
        super().__init__()
        self.record, self.site, self.layer = record, site, layer

    def update(self, key_states, value_states, *args, **kwargs):
        self.record[(self.site, self.layer)] = (key_states.detach(), value_states.detach())
        return key_states, value_states


def recording_caches(sites: list[tuple[str, int]], record: dict) -> dict[str, Cache]:
    """Caches that fill `record[(site, layer)] = (keys, values)` during a forward."""

    def cache(site):
        count = 1 + max((layer for s, layer in sites if s == site), default=-1)
        return Cache(layers=[_RecordingLayer(record, site, i) for i in range(count)])

    names = {s for s, _ in sites}
    if SELF in names:
        return {SELF: cache(SELF)}
    caches = {ENCODER_SITE: cache(ENCODER_SITE)}
    decoder = PrefixEncoderDecoderCache(cache(DECODER_SITE), cache(CROSS_SITE))
    caches[DECODER_SITE] = caches[CROSS_SITE] = decoder
    return caches
