"""Conditional generation: table-to-text (E2E, WebNLG), summarisation, any source -> target text.

- Decoder-only models read `source SEP target EOS` as one sequence (SEP is the tokenizer's EOS/BOS
  token unless `separator` is given, as Li & Liang do for GPT-2); the loss covers the target tokens
  and the final EOS only.
- Encoder-decoder models read the source in the encoder and are teacher-forced on the target in
  the decoder; the loss covers every target token.
- Generation goes through transformers' `generate` (greedy, beam search, sampling) with the prompt
  applied once per batch (see `Backbone.generate`). Scores: BLEU, chrF, ROUGE-1/2/L against every
  reference of a source (`metrics.generation_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import ConfigBase, check
from ..core.backbone import DECODER, ENCODER, ENCODER_DECODER, Backbone, BackboneOutput, ModelInputs
from ..decoding import check_decoding
from ..errors import ConfigError, DataError
from ..options import Endpoint, GenerationOptions
from .base import Task, register
from .chat import chat_wrap
from .data import Example, group_references, load_generation_examples, pick_generation_demonstrations
from .metrics import generation_metrics

IGNORE = -100
METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class GenerationConfig(ConfigBase):
    max_source_length: int = 256
    """Source tokens kept (the rest is cut), virtual tokens not counted. Where the model has fewer
    learned positions than the prompt, the source, the separator and `max_target_length` target
    tokens need, the source is cut to what is left."""
    max_target_length: int = 128
    """Target tokens kept in training, and the default number of new tokens when generating."""
    separator: str | None = None
    """Decoder-only models: the text between source and target; None: the tokenizer's EOS (or BOS) token."""
    num_beams: int = 1
    """Default beam width for evaluation and `generate` (1: greedy)."""
    instruction: str | None = None
    """Text before the source (the system message with `chat`), e.g. "Summarise the dialogue."."""
    chat: bool = False
    """Wrap the source in the tokenizer's chat template as the user's message (decoders that have
    one); the target is the assistant's answer, ended by the end-of-turn token."""
    demonstrations: tuple[tuple[str, str], ...] = ()
    """(source, target) pairs shown before every source (a k-shot prompt): earlier user and
    assistant turns with `chat`, else paragraphs of the source and its target on the next line,
    after the instruction. They are never cut; the source is."""

    def __post_init__(self):
        check(
            isinstance(self.max_source_length, int) and self.max_source_length >= 4, "max_source_length", "must be >= 4"
        )
        check(
            isinstance(self.max_target_length, int) and self.max_target_length >= 1, "max_target_length", "must be >= 1"
        )
        check(isinstance(self.num_beams, int) and self.num_beams >= 1, "num_beams", "must be >= 1")
        check(
            self.instruction is None or (isinstance(self.instruction, str) and self.instruction.strip()),
            "instruction",
            "must be non-empty text",
        )
        check(isinstance(self.chat, bool), "chat", "must be true or false")
        for demo in self.demonstrations:
            check(
                isinstance(demo, tuple) and len(demo) == 2 and all(isinstance(x, str) and x.strip() for x in demo),
                "demonstrations",
                "must be (source, target) pairs of non-empty text",
            )


def check_generation_options(options: dict, config: GenerationConfig) -> dict:
    """The options `generate` runs with (`decoding.check_decoding`), the prompt's defaults filled
    in: max_new_tokens from its max_target_length, its num_beams."""
    return check_decoding(options, config.max_target_length, config.num_beams)


@register
class GenerationTask(Task):
    name = "generation"
    Config = GenerationConfig
    Options = GenerationOptions
    default_metric = "bleu"
    metrics = METRICS
    endpoint = Endpoint.GENERATE

    # ---- data ---------------------------------------------------------------------------------

    @classmethod
    def read_examples(cls, path: str, columns: dict, labelled: bool = True) -> list[Example]:
        return load_generation_examples(
            path, columns["source"], columns["target"] if labelled else None, require_targets=labelled
        )

    @classmethod
    def new_config(
        cls,
        options: GenerationOptions | dict,
        train_examples: list[Example],
        eval_examples: list[Example] | None,
        seed: int,
        train_name: str = "the training data",
        columns: dict | None = None,
    ) -> GenerationConfig:
        options = cls.check_options(options)
        demonstrations = tuple(
            (e.text, e.targets[0]) for e in pick_generation_demonstrations(train_examples, options.shots, seed)
        )
        return GenerationConfig(
            max_source_length=options.max_length,
            max_target_length=options.max_target_length,
            num_beams=options.num_beams,
            instruction=options.instruction,
            chat=options.chat,
            demonstrations=demonstrations,
        )

    @classmethod
    def sample_eval(cls, records: list[dict], size: int, rng, columns: dict) -> list[dict]:
        """`size` distinct sources with every row of each, so that a source keeps all its references
        (E2E has several rows per meaning representation)."""
        import json

        key = columns["source"]
        sources = list(dict.fromkeys(json.dumps(r.get(key), sort_keys=True) for r in records))
        chosen = set(rng.sample(sources, min(size, len(sources))))
        return [r for r in records if json.dumps(r.get(key), sort_keys=True) in chosen]

    def __init__(self, config: GenerationConfig, backbone: Backbone):
        super().__init__()
        if backbone.kind == ENCODER or not backbone.has_lm_head:
            raise ConfigError(
                f"--task generation needs a decoder-only or encoder-decoder model with an LM head; "
                f"{type(backbone.model).__name__} is an encoder"
            )
        self.config = config
        self.kind = backbone.kind
        self.tokenizer = backbone.tokenizer
        self.max_source_length = config.max_source_length  # lowered by `fit_positions`
        self.position_problem = None
        self.decoder_start = int(backbone.decoder_start_ids(1)[0, 0]) if self.kind == ENCODER_DECODER else None
        tok = self.tokenizer
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if self.eos_id is None:
            raise ConfigError("--task generation: the tokenizer has no end-of-sequence token")
        if config.separator is not None:
            self.separator_ids = tok(config.separator, add_special_tokens=False)["input_ids"]
        else:
            sep = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
            self.separator_ids = [sep]
        self.wrap_prefix, self.wrap_suffix = self._wrap(backbone)
        if config.chat:
            self.separator_ids = []  # the chat template's assistant turn separates source and target
        self.wrap_tokens = len(tok(self.wrap_prefix + self.wrap_suffix, add_special_tokens=False)["input_ids"])

    def _wrap(self, backbone: Backbone) -> tuple[str, str]:
        """The text around every source: the instruction and the demonstrations, or the chat
        template's turns."""
        config = self.config
        if config.chat:
            return chat_wrap(backbone, config.instruction, list(config.demonstrations))
        before = config.instruction + "\n\n" if config.instruction else ""
        before += "".join(f"{source}\n{target}\n\n" for source, target in config.demonstrations)
        return before, ""

    # ---- what other parts ask of a task ----------------------------------------------------------

    def outside_tensors(self) -> list[str]:
        config = self.config
        out = []
        if self.kind == DECODER and self.separator_ids and not config.chat:
            out.append(
                f"the separator between source and target: prompttune reads `source{self.tokenizer.decode(self.separator_ids)}"
                f"target`, so give the source followed by {self.tokenizer.decode(self.separator_ids)!r} "
                f"(token ids {self.separator_ids}) and the continuation is the target"
            )
        return out + self.framing_outside_tensors(config, "source", "the target is the assistant's answer")

    def fit_positions(self, available: int, taken: int, limit: int) -> str | None:
        """Cut sources so that the prompt, the source, the separator and a whole target (in training,
        or `max_target_length` new tokens) fit the model's `limit` positions (`available` left after
        the prompt's `taken`); a problem to report where not even a short source fits."""
        room = available - self.wrap_tokens
        if self.kind == DECODER:
            room -= len(self.separator_ids) + self.config.max_target_length + 1  # the target and its EOS
        if room < 4:
            self.position_problem = (
                f"the prompt ({taken} positions) and max_target_length {self.config.max_target_length} leave {room} of "
                f"the model's {limit} positions for the source (at least 4 needed); lower --max-target-length or "
                "use fewer virtual tokens"
            )
            return self.position_problem
        self.max_source_length = min(self.config.max_source_length, room)
        return None

    # ---- data -> tensors ----------------------------------------------------------------------

    def training_features(self, examples: list[Example]) -> list[dict]:
        """One feature per (source, reference) pair."""
        features = []
        for example in examples:
            if not example.targets:
                raise DataError(f"{example.origin}: no target text to train on")
            features.extend(self.encode(example, target) for target in example.targets)
        return features

    def encode(self, example: Example, target: str | None = None) -> dict:
        tok = self.tokenizer
        cfg = self.config
        if self.position_problem:
            raise DataError(f"{example.origin}: {self.position_problem}")
        if self.wrap_prefix or self.wrap_suffix:
            # The source is cut to its own budget, then wrapped (the wrapping is never cut).
            text = _cut(tok, example.text, self.max_source_length)
            source = tok(self.wrap_prefix + text + self.wrap_suffix, add_special_tokens=not cfg.chat)["input_ids"]
        else:
            source = tok(example.text, truncation=True, max_length=self.max_source_length)["input_ids"]
        if not source:
            raise DataError(f"{example.origin}: the source has no tokens")
        if self.kind == DECODER:
            prompt = source + self.separator_ids
            if target is None:
                return {"input_ids": prompt}
            # Byte-level BPE spells a word after a space differently: the target reads as a
            # continuation (a chat answer starts its own line).
            spelled = target if cfg.chat else " " + target
            ids = tok(spelled, add_special_tokens=False)["input_ids"][: cfg.max_target_length] + [self.eos_id]
            return {"input_ids": prompt + ids, "labels": [IGNORE] * len(prompt) + ids}
        feature = {"input_ids": source}
        if target is not None:
            labels = tok(target, truncation=True, max_length=cfg.max_target_length)["input_ids"]
            if not labels or labels[-1] != self.eos_id:
                labels = labels[: cfg.max_target_length - 1] + [self.eos_id]
            feature["labels"] = labels
            feature["decoder_input_ids"] = [self.decoder_start] + labels[:-1]
        return feature

    def collate(self, features: list[dict], with_labels: bool = True, for_generation: bool = False) -> dict:
        """Pads to the longest row. Decoder-only inputs for generation are padded on the left, so
        new tokens follow each row's last token; otherwise the tokenizer's side is used (positions
        are computed from the attention mask, so it does not change results)."""
        pad = self.tokenizer.pad_token_id
        left = self.kind == DECODER and (for_generation or self.tokenizer.padding_side == "left")

        def pad_rows(rows, value):
            width = max(len(r) for r in rows)
            if left:
                return torch.tensor([[value] * (width - len(r)) + r for r in rows])
            return torch.tensor([r + [value] * (width - len(r)) for r in rows])

        ids = [f["input_ids"] for f in features]
        batch = {"input_ids": pad_rows(ids, pad), "attention_mask": pad_rows([[1] * len(r) for r in ids], 0)}
        if with_labels and all("labels" in f for f in features):
            batch["labels"] = pad_rows([f["labels"] for f in features], IGNORE)
            if self.kind == ENCODER_DECODER:
                batch["decoder_input_ids"] = pad_rows([f["decoder_input_ids"] for f in features], pad)
        return batch

    # ---- model inputs and outputs -------------------------------------------------------------

    def model_inputs(self, batch: dict, embeds: torch.Tensor) -> ModelInputs:
        return ModelInputs(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            decoder_input_ids=batch.get("decoder_input_ids"),
            full_logits=True,
        )

    def logits(self, output: BackboneOutput, inputs: ModelInputs, batch: dict) -> torch.Tensor:
        """(B, T, V): for decoder-only models the logits at the input's own positions (virtual
        ones removed), for encoder-decoders the decoder's."""
        return output.logits

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        labels = batch["labels"]
        if self.kind == DECODER:
            logits, labels = logits[:, :-1], labels[:, 1:]  # position t predicts token t + 1
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)

    def loss_units(self, batch: dict) -> int:
        """What `loss` averages over: the target tokens."""
        labels = batch["labels"][:, 1:] if self.kind == DECODER else batch["labels"]
        return int((labels != IGNORE).sum())

    # ---- generation and evaluation ------------------------------------------------------------

    def generation_options(self, **options) -> dict:
        options = check_generation_options(options, self.config)
        options.setdefault("eos_token_id", self.eos_id)
        return options

    def generate_texts(self, model, examples: list[Example], batch_size: int = 32, **options) -> list[str]:
        """Generated text for each example's source under `model` (a prompt of this task), in order
        (num_return_sequences > 1: that many per example, one after another)."""
        from torch.utils.data import DataLoader

        features = [self.encode(e) for e in examples]
        loader = DataLoader(
            features,
            batch_size=batch_size,
            collate_fn=lambda rows: self.collate(rows, with_labels=False, for_generation=True),
        )
        was_training = model.training
        model.eval()
        texts = []
        try:
            with torch.no_grad():
                for batch in loader:
                    batch = {k: v.to(model.backbone.device) for k, v in batch.items()}
                    texts.extend(self.decode(model.generate(batch, **options)))
        finally:
            model.train(was_training)
        return texts

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def decode_details(self, ids: torch.Tensor) -> list[dict]:
        """Per generated sequence: its text, the tokens it generated up to its end-of-sequence
        token, and whether it reached one (False: it stopped at the token limit)."""
        pad = self.tokenizer.pad_token_id
        out = []
        for row, text in zip(ids.tolist(), self.decode(ids)):
            end = row.index(self.eos_id) if self.eos_id in row else None
            # A sequence stopped early (a client gone) is padded from there.
            stop = row.index(pad) if pad is not None and pad in row else len(row)
            out.append(
                {"text": text, "tokens": min(stop, len(row) if end is None else end), "finished": end is not None}
            )
        return out

    def scored_outputs(self, model, examples: list[Example], batch_size: int = 32, accelerator=None) -> list[str]:
        """The text generated for each example's source, each distinct source generated once."""
        grouped = self._with_references(examples)
        hypotheses = dict(zip((e.text for e in grouped), self.generate_texts(model, grouped, batch_size=batch_size)))
        return [hypotheses[e.text] for e in examples]

    def score(self, outputs: list[str], examples: list[Example]) -> dict:
        """BLEU, chrF and ROUGE of each distinct source's text against all its references."""
        generated = dict(zip((e.text for e in examples), outputs))
        grouped = self._with_references(examples)
        return generation_metrics([generated[e.text] for e in grouped], [list(e.targets) for e in grouped])

    @staticmethod
    def _with_references(examples: list[Example]) -> list[Example]:
        grouped = group_references(examples)
        missing = [e for e in grouped if not e.targets]
        if missing:
            raise DataError(f"{missing[0].origin}: no reference text to score against")
        return grouped


def _cut(tokenizer, text: str, tokens: int) -> str:
    """`text` cut after its first `tokens` tokens (at a character offset, so it stays the user's text)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return text if len(offsets) <= tokens else text[: offsets[tokens - 1][1]]
