"""The frozen model, and the one place that knows each model family's quirks.

Methods and tasks never branch on model classes: they ask a `Backbone` for embeddings, run it on
`ModelInputs`, and read hidden states or LM-head logits from what it returns. Everything that differs
between BERT, GPT-2, Llama, T5 and BART (where the embeddings are, whether position ids can be passed,
which padding side is safe, how the first decoder token is fed) is decided here.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from . import kv_prefix
from .batching import packed_layout
from .kv_prefix import PREFIX_KWARG, Prefix
from .weights import resolve_model

ENCODER, DECODER, ENCODER_DECODER = "encoder", "decoder", "encoder_decoder"


@dataclass
class ModelInputs:
    """What goes into the frozen model for one batch, after the method has had its say.

    All tensors are (B, T, ...) over the *current* sequence, virtual tokens included. `real_index`
    maps each original token position to its place in the current sequence, so outputs can be handed
    to the task without the virtual positions.
    """

    inputs_embeds: torch.Tensor  # (B, T, D)
    attention_mask: torch.Tensor  # (B, T) 1 = attend
    token_type_ids: torch.Tensor | None = None  # (B, T)
    readout_index: torch.Tensor | None = None  # (B,) position whose LM logits score the labels
    real_index: torch.Tensor | None = None  # (B, T0) original position -> current position
    prefix: Prefix | None = None  # per-layer key/value prefixes (prefix methods)
    decoder_input_ids: torch.Tensor | None = None  # (B, Td) teacher-forced decoder input (encoder-decoders)
    full_logits: bool = False  # LM logits at every position (generation) instead of the readout only
    slot_index: torch.Tensor | None = None  # (B, N) positions of a searched prompt's trigger tokens
    extra: dict = field(default_factory=dict)


@dataclass
class BackboneOutput:
    hidden: torch.Tensor  # (B, T, D) last hidden state of the (encoder) sequence
    readout_logits: torch.Tensor | None  # (B, V) LM logits at the readout position, if any
    logits: torch.Tensor | None = None  # (B, T or Td, V) with `full_logits`: every (decoder) position


class Backbone(nn.Module):
    """A frozen pretrained model with its tokenizer, and the facts methods need about it."""

    def __init__(self, model, tokenizer, name_or_path: str = "", weights_sha256: str | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path or getattr(model.config, "_name_or_path", "")
        self.weights_sha256 = weights_sha256
        config = model.config
        if getattr(config, "is_encoder_decoder", False):
            self.kind = ENCODER_DECODER
        elif getattr(config, "is_decoder", False) or _is_causal(model):
            self.kind = DECODER
        else:
            self.kind = ENCODER
        self.has_lm_head = model.get_output_embeddings() is not None
        # What the model's forward calls its key/value cache: `cache` from transformers 5.24 on,
        # `past_key_values` before (the name `generate` takes too).
        self._cache_argument = cache_argument(model.forward) or "past_key_values"
        accepted = inspect.signature(model.forward).parameters
        self._accepts_position_ids = "position_ids" in accepted
        self._accepts_token_types = "token_type_ids" in accepted
        self._readout_positions: torch.Tensor | None = None
        self._readout_packed = False
        if self.has_lm_head:
            # Only the readout position goes through the (vocabulary-sized) output projection:
            # full (B, T, V) logits would dominate memory for a 30k-50k vocabulary.
            model.get_output_embeddings().register_forward_pre_hook(self._select_readout)
        if tokenizer.pad_token is None:
            # Decoders (GPT-2, Llama) ship without a pad token; padded positions are masked anyway.
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.max_positions = self._max_positions()
        self.attention_sites = self._find_attention_sites()
        for site, _, module in self.attention_sites:
            module.register_forward_pre_hook(_prefix_injector(site, cache_argument(module.forward)), with_kwargs=True)
        self._prefix_layout: dict | None = None
        self.gradient_checkpointing = False
        # A causal decoder computes the keys and values of virtual tokens placed before the input
        # once per batch and attaches them to the rows as a prefix (`prompt_states`); off, every
        # row reads them again (the same outputs, B times the work).
        self.prompts_once = self.kind == DECODER
        # A causal decoder runs a batch's rows packed into fewer sequences of their real tokens
        # (little padding), each row attending to the shared prefix and to itself (`_forward_packed`); off,
        # the padded batch runs as it is (the same outputs, the padding's work besides).
        self.packs_rows = (
            self.kind == DECODER
            and self._accepts_position_ids
            and getattr(self.config, "_attn_implementation", None) in ("sdpa", "eager")
        )

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        head: str = "auto",
        dtype: torch.dtype | str | None = None,
        device_map: str | dict | None = None,
        gguf_file: str | None = None,
    ) -> Backbone:
        """Load model and tokenizer (prompttune/core/weights.py says from where: a hub id, a folder, an
        offline copy, a GGUF file). `head`: "auto" keeps the LM head when the checkpoint has one
        (its `architectures` says so), "lm" insists on one, "none" loads the bare model. `dtype`:
        float32, bfloat16 or float16 (default: as stored). `device_map`: "auto" spreads the model
        over the GPUs there are, then the CPU (Accelerate's big-model loading)."""
        from transformers import AutoConfig, AutoTokenizer

        path, sha = resolve_model(name, gguf_file)
        if gguf_file is not None:
            name = str(Path(name) / gguf_file)  # what the artifact records, to load it again
        try:
            config = AutoConfig.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise ModelError(
                f"--model {name}: cannot load config/tokenizer from {path}: {_first_line(error)}"
            ) from None
        model_class = _model_class(config, head, name)
        kwargs = {}
        if dtype is not None:
            kwargs["dtype"] = parse_dtype(dtype)
        if device_map is not None:
            kwargs["device_map"] = device_map
        try:
            model = model_class.from_pretrained(path, config=config, **kwargs)
        except (OSError, ValueError) as error:
            raise ModelError(f"--model {name}: cannot load weights from {path}: {_first_line(error)}") from None
        backbone = cls(model, tokenizer, name_or_path=name, weights_sha256=sha)
        backbone.freeze()
        return backbone

    def freeze(self) -> None:
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True):
        # Dropout in the frozen model stays off unless the model is actually being trained
        # (full fine-tuning): prompt tuning follows the frozen model's inference behaviour.
        super().train(mode)
        trainable = any(p.requires_grad for p in self.model.parameters())
        self.model.train(mode and trainable)
        return self

    # ---- facts --------------------------------------------------------------------------------

    @property
    def config(self):
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def device(self) -> torch.device:
        return self.input_embeddings.weight.device

    @property
    def pads_right_only(self) -> bool:
        """Whether left padding would change results: models with absolute positions that cannot
        be given position ids (BART's encoder) must see their tokens from position 0."""
        return not self._accepts_position_ids and self.kind != DECODER

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        # get_input_embeddings() already includes any scaling (BART's scaled word embedding).
        return self.input_embeddings(input_ids)

    def _max_positions(self) -> int | None:
        """Positions the model can read where it learned one embedding per position (BERT, GPT-2,
        BART); None where positions are relative or rotary (T5, Llama) and nothing breaks past the
        trained length."""
        learned = any(
            isinstance(m, nn.Embedding) and ("position" in name or name.endswith("wpe"))
            for name, m in self.model.named_modules()
        )
        if not learned:
            return None
        limit = getattr(self.config, "n_positions", None) or getattr(self.config, "max_position_embeddings", None)
        return int(limit) if limit else None

    def _find_attention_sites(self) -> list[tuple[str, int, nn.Module]]:
        """(site, layer index, module) for every attention module that takes a key/value cache:
        site is "self" for decoder-only and encoder-only models; "encoder", "decoder" or "cross"
        for encoder-decoders."""
        encoder = set()
        if self.kind == ENCODER_DECODER:
            encoder = {id(m) for m in self.model.get_encoder().modules()}
        sites = []
        for name, module in self.model.named_modules():
            if "Attention" not in type(module).__name__ or getattr(module, "layer_idx", None) is None:
                continue
            if cache_argument(module.forward) is None:
                continue
            if self.kind != ENCODER_DECODER:
                site = kv_prefix.SELF
            elif id(module) in encoder:
                site = kv_prefix.ENCODER_SITE
            elif name.split(".")[-1] in CROSS_ATTENTION_NAMES:
                site = kv_prefix.CROSS_SITE
            else:
                site = kv_prefix.DECODER_SITE
            sites.append((site, int(module.layer_idx), module))
        return sites

    def prefix_layout(self) -> dict[str, tuple[int, int, int]]:
        """site -> (layers, key/value heads, head size) of the keys and values a prefix must supply,
        measured by running one token through the model (so grouped-query attention's KV-head
        count and every family's head size come from the model itself)."""
        if self._prefix_layout is None:
            token = self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else 0
            activations = self.key_value_activations(torch.full((1, 1), token, dtype=torch.long))
            self._prefix_layout = {site: (kv.shape[0], kv.shape[3], kv.shape[5]) for site, kv in activations.items()}
        return self._prefix_layout

    @torch.no_grad()
    def key_value_activations(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """site -> (L, 2, 1, H_kv, N, d): the keys and values every attention layer computes for the
        N tokens `ids` (1, N) when the model reads them as its input (for an encoder-decoder, as the
        encoder's input and as the decoder's; cross-attention sees the encoder's states of them).
        A prefix initialised from these starts as the activations of real words (Li & Liang 2021)."""
        if not self.attention_sites:
            raise ModelError(
                f"{self.config.model_type}: no attention layer here takes a key/value cache; "
                "prefix methods cannot be applied to it"
            )
        record: dict = {}
        caches = kv_prefix.recording_caches([(s, layer) for s, layer, _ in self.attention_sites], record)
        ids = ids.to(self.device)
        kwargs = {"inputs_embeds": self.embed(ids), "attention_mask": torch.ones_like(ids), PREFIX_KWARG: caches}
        if self._accepts_position_ids:
            kwargs["position_ids"] = self.position_ids(kwargs["attention_mask"])
        if self.kind == ENCODER_DECODER:
            kwargs["decoder_input_ids"] = ids
        was_training = self.model.training
        self.model.eval()
        try:
            self.model(**kwargs)
        finally:
            self.model.train(was_training)
        out = {}
        for site in sorted({s for s, _ in record}):
            layers = sorted(layer for s, layer in record if s == site)
            shapes = {tuple(record[(site, layer)][0].shape) for layer in layers}
            if len(shapes) != 1 or layers != list(range(len(layers))):
                raise ModelError(
                    f"{self.config.model_type}: {site} attention layers differ in key/value shape "
                    f"({sorted(shapes)}); prefix methods need one shape per site"
                )
            out[site] = torch.stack([torch.stack(record[(site, layer)]) for layer in layers])  # (L, 2, 1, H, N, d)
        return out

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each transformer layer's activations during backward instead of keeping them.

        Implemented around the layers rather than through transformers' switch, which drops any
        cache (and so any prefix) while checkpointing and only acts in training mode; here the frozen
        model stays in eval mode (no dropout) and prefixes reach the attention layers as a
        keyword argument that the recomputation receives again."""
        from torch.utils.checkpoint import checkpoint
        from transformers.modeling_layers import GradientCheckpointingLayer

        names = [n for n, m in self.model.named_modules() if isinstance(m, GradientCheckpointingLayer)]
        outermost = [n for n in names if not any(n.startswith(other + ".") for other in names)]
        if not outermost:
            raise ConfigError(f"gradient_checkpointing: {type(self.model).__name__} has no checkpointable layers")
        for name in outermost:
            layer = self.model.get_submodule(name)
            if enabled and "forward" not in vars(layer):

                def run(*args, _forward=layer.forward, **kwargs):
                    if torch.is_grad_enabled():
                        return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
                    return _forward(*args, **kwargs)

                layer.forward = run
            elif not enabled and "forward" in vars(layer):
                del layer.forward
        self.gradient_checkpointing = enabled

    def fingerprint(self) -> dict:
        """What identifies this base model, recorded in artifacts and checked when they load.
        Computed once and kept while the input embeddings and the tokenizer stay as they are (a
        change to the embeddings in place, as full fine-tuning makes, is seen by its version)."""
        weight = self.input_embeddings.weight
        tokenizer = self.tokenizer
        key = (
            self.name_or_path,
            self.weights_sha256,
            weight.data_ptr(),
            weight._version,
            tuple(weight.shape),
            len(tokenizer),
            tuple(sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items())),
        )
        cached = getattr(self, "_fingerprint", None)
        if cached is None or cached[0] != key:
            cached = (key, self._compute_fingerprint())
            self._fingerprint = cached
        return dict(cached[1])

    def _compute_fingerprint(self) -> dict:
        config = self.config
        embedding = self.input_embeddings.weight.detach()
        return {
            "name_or_path": self.name_or_path,
            "model_type": config.model_type,
            "architecture": type(self.model).__name__,
            "kind": self.kind,
            "hidden_size": self.hidden_size,
            "num_layers": _num_layers(config),
            "vocab_size": int(embedding.shape[0]),
            "weights_sha256": self.weights_sha256,
            "embedding_sha256": embedding_fingerprint(embedding),
            "tokenizer_sha256": tokenizer_fingerprint(self.tokenizer),
        }

    # ---- running ------------------------------------------------------------------------------

    def position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor:
        # Positions count attended tokens only, so left padding and virtual tokens leave the real
        # tokens' positions as they would be without padding (what `generate` does for decoders).
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def prompt_states(self, virtual: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """(L, 2, H_kv, N, d): what every layer of a causal decoder computes as keys and values for
        the virtual tokens `virtual` (N, D) at the start of a sequence, after `prefix` (L, 2, H_kv,
        P, d) when the method has one. In a causal decoder tokens never see what comes after them,
        so these are the same for every row: computed once (one row of N tokens) and attached to
        the rows as a prefix, the rows cost P + B*T tokens instead of B*(P+T). Gradients flow back
        to the prompt through this one pass."""
        layers, heads, size = self.prefix_layout()[kv_prefix.SELF]
        dtype = self.input_embeddings.weight.dtype
        if prefix is None:
            prefix = virtual.new_zeros(layers, 2, heads, 0, size)
        record: dict = {}
        cache = kv_prefix.capturing_cache(prefix.unsqueeze(2).to(dtype), record)
        n, before = virtual.shape[0], prefix.shape[3]
        mask = torch.ones(1, before + n, dtype=torch.long, device=self.device)
        base = self.model.base_model
        kwargs = {
            "inputs_embeds": virtual.unsqueeze(0).to(dtype),
            "attention_mask": mask,
            cache_argument(base.forward) or "past_key_values": cache,
            "use_cache": False,
            PREFIX_KWARG: {kv_prefix.SELF: cache},
        }
        if self._accepts_position_ids:
            kwargs["position_ids"] = self.position_ids(mask)[:, -n:]
        base(**kwargs)  # the transformer only: no vocabulary projection
        return torch.stack([torch.stack(record[i]) for i in range(layers)]).squeeze(2)

    def decoder_start_ids(self, batch_size: int) -> torch.Tensor:
        start = self.config.decoder_start_token_id
        if start is None:
            start = (
                self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.pad_token_id
            )
        return torch.full((batch_size, 1), start, dtype=torch.long, device=self.device)

    def forward(self, inputs: ModelInputs) -> BackboneOutput:
        if self._packable(inputs):
            return self._forward_packed(inputs)
        return self._forward_padded(inputs)

    def _forward_padded(self, inputs: ModelInputs) -> BackboneOutput:
        batch_size, length = inputs.inputs_embeds.shape[:2]
        mask = inputs.attention_mask
        kwargs = {"inputs_embeds": inputs.inputs_embeds}
        if inputs.prefix is not None:
            # A prefix counts as P tokens before the input: the attention mask covers it, and the
            # input's positions start after it (as in Li & Liang's GPT-2 and P-tuning v2's BERT).
            caches = kv_prefix.training_caches(inputs.prefix)
            kwargs[PREFIX_KWARG] = caches
            mask = torch.cat([inputs.prefix.mask.to(mask.dtype), mask], dim=1)
            if self.kind == DECODER:
                kwargs[self._cache_argument] = caches[kv_prefix.SELF]  # causal mask and positions count it
            elif self.kind == ENCODER_DECODER:
                kwargs[self._cache_argument] = caches[kv_prefix.DECODER_SITE]
        kwargs["attention_mask"] = mask
        if self._accepts_position_ids:
            kwargs["position_ids"] = self.position_ids(mask)[:, -length:]
        if inputs.token_type_ids is not None and self._accepts_token_types:
            kwargs["token_type_ids"] = inputs.token_type_ids
        if self.kind != ENCODER:
            kwargs["use_cache"] = False  # one forward per batch; generation goes through `generate`
        readout = inputs.readout_index
        if self.kind == ENCODER_DECODER:
            if inputs.decoder_input_ids is not None:
                # Teacher-forced (generation), or where a verbalizer reads a decoder position.
                kwargs["decoder_input_ids"] = inputs.decoder_input_ids
            else:
                # No decoder input: the first decoder token (read by nothing but a verbalizer).
                kwargs["decoder_input_ids"] = self.decoder_start_ids(batch_size)
                readout = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        if inputs.full_logits:
            readout = None
        if not self.has_lm_head:
            if inputs.full_logits:
                raise ConfigError("this backbone has no LM head, so it cannot produce token logits")
            out = self.model(**kwargs)
            hidden = out.encoder_last_hidden_state if self.kind == ENCODER_DECODER else out.last_hidden_state
            return BackboneOutput(hidden=hidden, readout_logits=None)
        self._readout_positions = readout
        try:
            out = self.model(**kwargs, output_hidden_states=True)
        finally:
            self._readout_positions = None
        hidden = out.encoder_last_hidden_state if self.kind == ENCODER_DECODER else out.hidden_states[-1]
        if inputs.full_logits:
            return BackboneOutput(hidden=hidden, readout_logits=None, logits=out.logits)
        logits = out.logits[:, 0] if readout is not None else None  # (B, V): the hook kept one position
        return BackboneOutput(hidden=hidden, readout_logits=logits)

    def _packable(self, inputs: ModelInputs) -> bool:
        """Rows that can run packed: several, with one prefix for all (or none), no virtual tokens
        between padding and input, and an LM head if logits are wanted."""
        prefix = inputs.prefix
        shared = prefix is None or (all(kv.shape[2] == 1 for kv in prefix.kv.values()) and bool(prefix.mask.all()))
        return (
            self.packs_rows
            and inputs.inputs_embeds.shape[0] > 1
            and shared
            and inputs.real_index is None
            and inputs.token_type_ids is None
            and (self.has_lm_head or not inputs.full_logits)
        )

    def _forward_packed(self, inputs: ModelInputs) -> BackboneOutput:
        """A causal decoder's batch run as packed sequences of every row's real tokens: rows are put
        whole, longest first, into the fewest sequences as long as the batch is wide (first fit), so
        there is less padding than in the batch and attention stays within a sequence. Each token
        attends to the prefix and to the tokens of its own row up to itself (a block-diagonal causal
        mask), with the positions it has in its own row; the outputs, given back in the batch's shape,
        equal the padded forward's."""
        embeds, mask = inputs.inputs_embeds, inputs.attention_mask.bool()
        batch_size, length = mask.shape
        device = embeds.device
        before = inputs.prefix.length if inputs.prefix is not None else 0
        layout = packed_layout(mask.sum(1).tolist())
        if layout is None:
            return self._forward_padded(inputs)
        home, start, count, width = layout
        rows, columns = mask.nonzero(as_tuple=True)  # every row's tokens, row after row
        rank = (mask.long().cumsum(-1) - 1)[rows, columns]  # each token's place in its row
        slot = torch.tensor(home, device=device)[rows] * width + torch.tensor(start, device=device)[rows] + rank
        where = torch.zeros(batch_size, length, dtype=torch.long, device=device)  # (B, T) -> packed slot
        where[rows, columns] = slot
        owner = torch.full((count * width,), -1, dtype=torch.long, device=device)
        owner[slot] = rows
        owner = owner.view(count, width)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        allowed = (owner.unsqueeze(2) == owner.unsqueeze(1)) & causal  # (S, W, W); filler attends to filler
        allowed = torch.cat([allowed.new_ones(count, width, before), allowed], dim=2)
        additive = torch.zeros(count, 1, width, before + width, dtype=embeds.dtype, device=device)
        additive = additive.masked_fill(~allowed.unsqueeze(1), torch.finfo(embeds.dtype).min)
        positions = torch.zeros(count * width, dtype=torch.long, device=device)
        positions[slot] = before + rank
        packed = embeds.new_zeros(count * width, embeds.shape[-1]).index_copy(0, slot, embeds[rows, columns])
        kwargs = {
            "inputs_embeds": packed.view(count, width, -1),
            "attention_mask": additive,
            "position_ids": positions.view(count, width),
            "use_cache": False,
        }
        if inputs.prefix is not None:
            caches = kv_prefix.training_caches(inputs.prefix)
            kwargs[PREFIX_KWARG] = caches
            kwargs[self._cache_argument] = caches[kv_prefix.SELF]
        flat = where.view(-1)

        def unpack(states: torch.Tensor) -> torch.Tensor:  # (S, W, X) -> (B, T, X); padding holds some token
            return states.reshape(count * width, -1).index_select(0, flat).view(batch_size, length, -1)

        readout = (
            None
            if inputs.full_logits or inputs.readout_index is None
            else where[torch.arange(batch_size, device=device), inputs.readout_index]
        )
        if not self.has_lm_head:
            return BackboneOutput(hidden=unpack(self.model(**kwargs).last_hidden_state), readout_logits=None)
        self._readout_positions, self._readout_packed = readout, True
        try:
            out = self.model(**kwargs, output_hidden_states=True)
        finally:
            self._readout_positions, self._readout_packed = None, False
        hidden = unpack(out.hidden_states[-1])
        if inputs.full_logits:
            return BackboneOutput(hidden=hidden, readout_logits=None, logits=unpack(out.logits))
        logits = out.logits[:, 0] if readout is not None else None
        return BackboneOutput(hidden=hidden, readout_logits=logits)

    def encode(self, inputs: ModelInputs):
        """Run an encoder-decoder's encoder on prepared inputs: (encoder outputs, the attention mask
        the decoder's cross-attention uses, prefix slots included)."""
        mask = inputs.attention_mask
        kwargs = {}
        if inputs.prefix is not None:
            kwargs[PREFIX_KWARG] = kv_prefix.training_caches(inputs.prefix)
            mask = torch.cat([inputs.prefix.mask.to(mask.dtype), mask], dim=1)
        out = self.model.get_encoder()(inputs_embeds=inputs.inputs_embeds, attention_mask=mask, **kwargs)
        return out, mask

    @torch.no_grad()
    def generate(self, inputs: ModelInputs, **options) -> torch.Tensor:
        """Generated token ids (B x num_return_sequences, N), new tokens only, for inputs prepared
        by a method (virtual tokens inserted, prefix attached). `options` go to transformers'
        `generate` (max_new_tokens, num_beams, do_sample, top_p, ...).

        A prefix is placed in the KV cache before the first step and read from it at every step;
        virtual tokens are processed once in the first step and cached like the input."""
        if not self.has_lm_head or self.kind == ENCODER:
            raise ConfigError(f"generation needs a decoder with an LM head; {type(self.model).__name__} has none")
        batch_size = inputs.inputs_embeds.shape[0]
        options.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        expand = max(int(options.get("num_beams") or 1), int(options.get("num_return_sequences") or 1))
        prefix = inputs.prefix.repeat_rows(expand) if inputs.prefix is not None else None
        rows = batch_size * expand  # sequences `generate` runs: the cache needs one row each
        limit = self.max_positions
        new_tokens = int(options.get("max_new_tokens") or 0)
        length = inputs.inputs_embeds.shape[1] + (inputs.prefix.length if inputs.prefix is not None else 0)
        if self.kind == DECODER and limit and length + new_tokens > limit:
            raise ConfigError(
                f"generation: {length} input and prompt positions + {new_tokens} new tokens exceed the "
                f"model's {limit} positions; lower max_new_tokens (or --max-target-length) or the input length"
            )
        if self.kind == DECODER:
            embeds, mask, kwargs = inputs.inputs_embeds, inputs.attention_mask, {}
            if prefix is not None:
                # `generate` takes the first cache-length inputs as already processed: P zero
                # placeholders stand for the prefix the cache holds.
                placeholder = embeds.new_zeros(batch_size, inputs.prefix.length, embeds.shape[-1])
                embeds = torch.cat([placeholder, embeds], dim=1)
                mask = torch.cat([inputs.prefix.mask.to(mask.dtype), mask], dim=1)
                kwargs[self._cache_argument] = kv_prefix.filled_cache(prefix.kv[kv_prefix.SELF], rows)
            return self.model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs, **options)
        encoded, mask = self.encode(inputs)
        kwargs = {}
        if prefix is not None:
            kwargs[self._cache_argument] = kv_prefix.filled_encoder_decoder_cache(
                prefix.kv[kv_prefix.DECODER_SITE], prefix.kv[kv_prefix.CROSS_SITE], rows
            )
        out = self.model.generate(
            encoder_outputs=encoded,
            attention_mask=mask,
            decoder_input_ids=self.decoder_start_ids(batch_size),
            **kwargs,
            **options,
        )
        return out[:, 1:]  # without the decoder start token

    def _select_readout(self, module, args):
        """Forward pre-hook on the output projection: keep only each row's readout position."""
        positions = self._readout_positions
        if positions is None:
            return None
        hidden = args[0]  # (B, T, D), or (S, W, D) for packed rows, read at their slots
        if self._readout_packed:
            hidden = hidden.reshape(1, -1, hidden.shape[-1]).expand(positions.shape[0], -1, -1)
        index = positions.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        return (hidden.gather(1, index),) + tuple(args[1:])  # (B, 1, D)


# Names of the cross-attention modules in the decoders of encoder-decoder families (T5, BART and
# its relatives, BERT-style decoders).
CROSS_ATTENTION_NAMES = ("EncDecAttention", "encoder_attn", "crossattention")


def cache_argument(function) -> str | None:
    """The parameter a forward takes its key/value cache by (`cache` from transformers 5.24 on,
    `past_key_values` before), or None where it takes none."""
    parameters = inspect.signature(function).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _prefix_injector(site: str, argument: str):
    """Forward pre-hook for an attention module: when the forward carries prefixes, hand this
    module its site's cache by the name its forward takes (the model may have dropped or never
    passed one: T5's encoder, a layer under gradient checkpointing)."""

    def hook(module, args, kwargs):
        caches = kwargs.pop(PREFIX_KWARG, None)
        if caches is not None and site in caches:
            kwargs[argument] = caches[site]
        return args, kwargs

    return hook


def embedding_fingerprint(weight: torch.Tensor, max_rows: int = 8192) -> str:
    """sha256 of an evenly spaced sample of embedding rows, rounded to bf16: the same for a
    checkpoint loaded in float32 or bfloat16, and bounded in cost for 100k+ vocabularies."""
    rows = weight[:: max(1, weight.shape[0] // max_rows)]
    as_bf16 = rows.to(device="cpu", dtype=torch.bfloat16).contiguous().view(torch.int16)
    return hashlib.sha256(as_bf16.numpy().tobytes()).hexdigest()


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    specials = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    payload = json.dumps({"vocab": vocab, "special": specials}, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _is_causal(model) -> bool:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = model.config.model_type
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _num_layers(config) -> int:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, key, None) is not None:
            return int(getattr(config, key))
    return 0


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelError(f"--dtype: {dtype!r} is not one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _model_class(config, head: str, name: str):
    """Pick the transformers class from the checkpoint's own `architectures`, so a sentence encoder
    saved as `BertModel` is not given a randomly initialised LM head."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if head not in ("auto", "lm", "none"):
        raise ModelError(f"head must be auto, lm or none, got {head!r}")
    if head == "none":
        return AutoModel
    architectures = getattr(config, "architectures", None) or []
    saved_with_head = any(
        a.endswith(("LMHeadModel", "ForCausalLM", "ForMaskedLM", "ForConditionalGeneration", "ForPreTraining"))
        for a in architectures
    )
    if head == "auto" and architectures and not saved_with_head:
        return AutoModel
    if getattr(config, "is_encoder_decoder", False):
        return AutoModelForSeq2SeqLM
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not any(
        "Causal" in a or "LMHead" in a for a in architectures
    ):
        return AutoModelForMaskedLM
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForCausalLM
    if head == "lm":
        raise ModelError(f"--model {name}: {config.model_type} has no language-modelling head in transformers")
    return AutoModel


def word_for_tokenizer(backbone: Backbone, word: str) -> str:
    """Byte-level BPE vocabularies (GPT-2, BART, Llama) spell a word after a space differently;
    label words are read after a space, so embed them that way."""
    return " " + word if backbone.kind != ENCODER else word
