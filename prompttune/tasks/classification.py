"""Classification of single sentences and sentence pairs.

The task decides how model outputs become label scores; it never knows which method produced them.
Three readouts:

- `verbalizer`: LM-head logits at the readout position (the mask for a masked LM, the next token
  for a causal LM, the first decoder token for a seq2seq model), restricted to each label's words
  (PET, Schick & Schütze 2021). A label with several words scores log(sum of their probabilities).
- `head`: a small trained linear head over pooled hidden states (mean over the real tokens for
  encoders and encoder-decoders, the last real token for decoders). Used when the backbone has no LM
  head, and by the linear probe.
- `similarity`: zero-shot for sentence encoders without an LM head: cosine similarity between the
  input's embedding and each label's description (the template's text around `{mask}` with the
  label word in it, e.g. "It was great."), mean-pooled as sentence-transformers does.
"""

from __future__ import annotations

import math
import random
import re
import statistics
import string
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import TypedDict

from ..config import ConfigBase, check
from ..core.backbone import DECODER, ENCODER, ENCODER_DECODER, Backbone, BackboneOutput, ModelInputs, word_for_tokenizer
from ..core.vocabulary import first_plain_token
from ..errors import ConfigError, DataError
from ..options import CALIBRATIONS, ClassificationOptions, Endpoint
from .base import Task, register
from .chat import chat_wrap
from .data import Columns, Example, label_set, load_examples, pick_demonstrations
from .metrics import classification_metrics

READOUTS = ("verbalizer", "head", "similarity")


class ClassificationResult(TypedDict):
    label: str
    probabilities: dict[str, float]


PLACEHOLDERS = ("text", "text_pair", "mask", "prompt")
SIMILARITY_SCALE = 20.0  # cosine similarities -> logits, as sentence-transformers' ranking losses do


@dataclass(frozen=True)
class ClassificationConfig(ConfigBase):
    labels: tuple[str, ...]
    """Label values in class order, as they appear in the data's label column."""
    template: str | None = None
    """Text around the input, with {text}, optionally {text_pair}, and {mask} where the label word
    goes, e.g. "Review: {text} It was {mask}."; None uses the backbone's default."""
    verbalizer: tuple[tuple[str, ...], ...] | None = None
    """Words for each label, in label order; None uses the label values themselves."""
    readout: str = "head"
    """verbalizer | head | similarity (resolved from the method and backbone when a prompt is made)."""
    max_length: int = 256
    """Tokens per input, virtual tokens not counted; text fields are truncated, the template never.
    Where the model has fewer positions than the prompt plus `max_length` (learned positions: BERT,
    GPT-2, BART), inputs are cut to what is left after the prompt."""
    pair: bool = False
    """Whether inputs are sentence pairs."""
    prompt_slots: int = 0
    """Trigger-token slots at {prompt} in the template, filled by a searched prompt (autoprompt,
    pez); without {prompt} in the template they go before the input."""
    instruction: str | None = None
    """Text before everything else (the system message with `chat`), e.g. "Is this review positive
    or negative?"."""
    chat: bool = False
    """Wrap the prompt in the tokenizer's chat template (decoders that have one): `instruction` as
    the system message, the template as the user's message, the label read at the assistant's
    first token (label words are then written without a leading space)."""
    demonstrations: tuple[tuple[str, str | None, str], ...] = ()
    """(text, text_pair, label) examples shown before the input with their label word filled in
    (k-shot in-context learning; as earlier user and assistant turns with `chat`)."""
    calibrate: str | None = None
    """content_free | domain: label scores less those of inputs without content (a prompt that
    trains nothing, read by its verbalizer; see `ClassificationOptions.calibrate`)."""
    calibration: tuple[float, ...] | None = None
    """With `calibrate`: the label log-probabilities the prompt gives inputs without content,
    measured when the prompt is made and subtracted from every input's label scores."""

    def __post_init__(self):
        check(len(self.labels) >= 2, "labels", f"need at least two labels, got {list(self.labels)}")
        check(len(set(self.labels)) == len(self.labels), "labels", f"duplicate labels in {list(self.labels)}")
        check(self.readout in READOUTS, "readout", f"must be one of {READOUTS}, got {self.readout!r}")
        check(isinstance(self.max_length, int) and self.max_length >= 8, "max_length", "must be an integer >= 8")
        if self.verbalizer is not None:
            check(
                len(self.verbalizer) == len(self.labels),
                "verbalizer",
                f"has {len(self.verbalizer)} entries for {len(self.labels)} labels",
            )
            for label, words in zip(self.labels, self.verbalizer):
                check(len(words) > 0 and all(w.strip() for w in words), "verbalizer", f"label {label!r} has no words")
        if self.template is not None:
            fields = template_fields(self.template)
            check("text" in fields, "template", f"must contain {{text}}: {self.template!r}")
            check(
                ("text_pair" in fields) == self.pair,
                "template",
                "needs {text_pair} exactly when the data has a text-pair column",
            )
            check(fields.count("mask") <= 1, "template", "at most one {mask}")
            check(fields.count("prompt") <= 1, "template", "at most one {prompt}")
        check(
            isinstance(self.prompt_slots, int) and self.prompt_slots >= 0,
            "prompt_slots",
            "must be a non-negative integer",
        )
        check(
            self.instruction is None or (isinstance(self.instruction, str) and self.instruction.strip()),
            "instruction",
            "must be non-empty text",
        )
        check(isinstance(self.chat, bool), "chat", "must be true or false")
        for demo in self.demonstrations:
            check(
                len(demo) == 3 and isinstance(demo[0], str) and demo[2] in self.labels,
                "demonstrations",
                f"each is (text, text_pair, label) with a label from {list(self.labels)}, got {demo!r}",
            )
            check(
                (demo[1] is not None) == self.pair, "demonstrations", "need a text pair exactly when the data has one"
            )
        check(self.calibrate is None or self.calibrate in CALIBRATIONS, "calibrate", f"must be one of {CALIBRATIONS}")
        if self.calibration is not None:
            check(self.calibrate, "calibration", "is measured only for a prompt made with calibrate")
            check(
                len(self.calibration) == len(self.labels)
                and all(isinstance(x, float) and math.isfinite(x) for x in self.calibration),
                "calibration",
                f"must be {len(self.labels)} finite log-probabilities, one per label",
            )

    def words(self) -> tuple[tuple[str, ...], ...]:
        return self.verbalizer if self.verbalizer is not None else tuple((label,) for label in self.labels)


def template_fields(template: str) -> list[str]:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ConfigError(f"template: cannot parse {template!r}: {error}") from None
    unknown = [f for f in fields if f not in PLACEHOLDERS]
    if unknown:
        raise ConfigError(f"template: unknown placeholder(s) {unknown}; use {{text}}, {{text_pair}}, {{mask}}")
    return fields


def default_template(kind: str, pair: bool) -> str:
    if kind in (ENCODER, ENCODER_DECODER):
        return "{text} {text_pair} {mask}" if pair else "{text} {mask}"
    return "{text} {text_pair}" if pair else "{text}"


def parse_verbalizer(spec: str | dict | None, labels: tuple[str, ...]) -> tuple[tuple[str, ...], ...] | None:
    """`{"0": ["terrible"], "1": ["great", "good"]}` (JSON) or `0:terrible,1:great|good`."""
    import json

    if spec is None:
        return None
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as error:
                raise ConfigError(f"--verbalizer: not valid JSON: {error.msg}") from None
        else:
            parsed = {}
            for item in text.split(","):
                if ":" not in item:
                    raise ConfigError(f"--verbalizer: expected LABEL:WORD[|WORD...], got {item!r}")
                label, words = item.split(":", 1)
                parsed[label.strip()] = [w.strip() for w in words.split("|")]
            spec = parsed
    spec = {str(k): ([v] if isinstance(v, str) else list(v)) for k, v in spec.items()}
    missing = [label for label in labels if label not in spec]
    extra = [label for label in spec if label not in labels]
    if missing or extra:
        raise ConfigError(f"--verbalizer: labels {list(labels)} expected; missing {missing}, unknown {extra}")
    return tuple(tuple(spec[label]) for label in labels)


def resolve_readout(method, backbone: Backbone, requested: str = "auto") -> str:
    """Which readout a new prompt uses: the verbalizer where the backbone has an LM head, a trained
    head where it does not (or where the method asks for one), similarity for zero-shot encoders."""
    if requested != "auto":
        if not method.trains and requested == "head":
            raise ConfigError(
                f"readout: {method.name} trains nothing, so it cannot use an untrained head; "
                "use verbalizer (LM head) or similarity"
            )
        return requested
    if method.readout == "head":
        return "head"
    if backbone.has_lm_head:
        return "verbalizer"
    return "similarity" if method.readout == "zero_shot" else "head"


@register
class ClassificationTask(Task):
    name = "classification"
    Config = ClassificationConfig
    Options = ClassificationOptions
    default_metric = "accuracy"
    metrics = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
    endpoint = Endpoint.CLASSIFY
    result_type = ClassificationResult
    ensembles = True

    # ---- data ---------------------------------------------------------------------------------

    @classmethod
    def read_examples(cls, path: str, columns: dict, labelled: bool = True) -> list[Example]:
        examples = load_examples(
            path,
            Columns(text=columns["text"], text_pair=columns["text_pair"], label=columns["label"]),
            require_labels=labelled,
        )
        # Labels play no part in prediction (and may include unseen ones).
        return examples if labelled else [replace(e, label=None) for e in examples]

    @classmethod
    def new_config(
        cls,
        options: ClassificationOptions | dict,
        train_examples: list[Example],
        eval_examples: list[Example] | None,
        seed: int,
        train_name: str = "the training data",
        columns: dict | None = None,
    ) -> ClassificationConfig:
        options = cls.check_options(options)
        labels = options.labels
        label_names = tuple(str(x) for x in labels) if labels else label_set(train_examples)
        if eval_examples and not labels:
            unseen = sorted({e.label for e in eval_examples} - set(label_names))
            if unseen:
                first = next(e for e in eval_examples if e.label in unseen)
                column = f", column {columns['label']!r}" if columns else ""
                raise ConfigError(
                    f"{first.origin}{column}: label {first.label!r} never occurs in {train_name}; "
                    f"training labels are {list(label_names)} (pass --labels to fix the set)"
                )
        demonstrations = tuple(
            (e.text, e.text_pair, e.label)
            for e in pick_demonstrations(train_examples, options.shots, seed, label_names)
        )
        return ClassificationConfig(
            labels=label_names,
            template=options.template,
            verbalizer=parse_verbalizer(options.verbalizer, label_names),
            max_length=options.max_length,
            pair=any(e.text_pair is not None for e in train_examples),
            instruction=options.instruction,
            chat=options.chat,
            demonstrations=demonstrations,
            calibrate=options.calibrate,
        )

    @classmethod
    def sample(cls, records: list[dict], size: int, rng, columns: dict) -> list[dict]:
        """`size` rows of every label (fewer where a label has fewer)."""
        by_label: dict[str, list] = {}
        for r in records:
            by_label.setdefault(str(r.get(columns["label"])), []).append(r)
        chosen = [r for label in sorted(by_label) for r in rng.sample(by_label[label], min(size, len(by_label[label])))]
        rng.shuffle(chosen)
        return chosen

    def __init__(self, config: ClassificationConfig, backbone: Backbone):
        super().__init__()
        self.config = config
        self.__dict__["_backbone"] = backbone  # not a submodule: the task's state is its own
        self.kind = backbone.kind
        self.tokenizer = backbone.tokenizer
        self.pad_right = backbone.pads_right_only or self.tokenizer.padding_side == "right"
        self.label_index = {label: i for i, label in enumerate(config.labels)}
        self.max_length = config.max_length  # lowered by `fit_positions` where the model has fewer positions
        self.position_problem = None
        self.template = config.template
        if config.readout == "verbalizer":
            if not backbone.has_lm_head:
                raise ConfigError("readout: verbalizer needs a backbone with an LM head; this one has none")
            self.template = config.template or default_template(backbone.kind, config.pair)
            if backbone.kind == ENCODER and "mask" not in template_fields(self.template):
                raise ConfigError(f"template: a masked LM reads the label at {{mask}}; {self.template!r} has none")
            ids, owners = self._verbalizer_ids(backbone)
            self.register_buffer("word_ids", torch.tensor(ids), persistent=False)
            self.register_buffer("word_owner", torch.tensor(owners), persistent=False)
        elif config.readout == "head":
            self.head = nn.Linear(backbone.hidden_size, len(config.labels))
        else:  # similarity
            self.register_buffer("prototypes", torch.zeros(len(config.labels), backbone.hidden_size))
        if self.template is not None and backbone.kind == DECODER and "mask" in template_fields(self.template):
            # A causal LM predicts the label word as the next token: the prompt stops at {mask}.
            self.template = self.template[: self.template.index("{mask}")].rstrip()
        self.slot_filler = None
        if config.template is not None and "prompt" in template_fields(config.template) and not config.prompt_slots:
            raise ConfigError(
                "template: {prompt} marks where a searched prompt's trigger tokens go (--method autoprompt or pez)"
            )
        if config.prompt_slots:
            if config.readout == "similarity":
                raise ConfigError("readout: trigger tokens need a verbalizer or a trained head, not similarity")
            self.template = self.template or "{text}"
            if "prompt" not in template_fields(self.template):
                self.template = "{prompt} " + self.template
            # Trigger slots are encoded as copies of one ordinary token, found again by offsets.
            self.slot_filler = first_plain_token(self.tokenizer)
            self.slot_text = self.tokenizer.decode([self.slot_filler] * config.prompt_slots)
        self.mask_text = {
            ENCODER: self.tokenizer.mask_token,
            DECODER: "",
            ENCODER_DECODER: self.tokenizer.mask_token or _sentinel(self.tokenizer),
        }[backbone.kind]
        # Encoder-decoders read the label where the decoder predicts the masked span: T5 after its
        # first sentinel (it answers "<extra_id_0> span"), BART at the mask's own position (it
        # rewrites the whole input); without a mask in the input, at the first decoder token.
        self.decoder_start = int(backbone.decoder_start_ids(1)[0, 0]) if self.kind == ENCODER_DECODER else None
        self.mask_id = self.tokenizer.convert_tokens_to_ids(self.mask_text) if self.mask_text else None
        self.wrap_prefix, self.wrap_suffix = self._wrap(backbone)
        self._set_calibration()

    # ---- set-up -------------------------------------------------------------------------------

    def _wrap(self, backbone: Backbone) -> tuple[str, str]:
        """The text around every input's formatted template: the instruction, the demonstrations,
        the chat template's turns."""
        config = self.config
        if not (config.instruction or config.demonstrations or config.chat):
            return "", ""
        if config.readout == "similarity":
            raise ConfigError("readout: instructions, demonstrations and chat templates need a verbalizer or a head")
        if self.template is None:
            self.template = "{text} {text_pair}" if config.pair else "{text}"
        if config.chat:
            turns = [(self._body(text, pair), self._label_word(label)) for text, pair, label in config.demonstrations]
            return chat_wrap(backbone, config.instruction, turns)
        parts = [config.instruction] if config.instruction else []
        parts += [self._demonstration(text, pair, label) for text, pair, label in config.demonstrations]
        return "\n\n".join(parts) + "\n\n", ""

    def _body(self, text: str, pair: str | None) -> str:
        return self.template.format(text=text, text_pair=pair or "", mask=self.mask_text, prompt="")

    def _label_word(self, label: str) -> str:
        return self.config.words()[self.config.labels.index(label)][0]

    def _demonstration(self, text: str, pair: str | None, label: str) -> str:
        """An example with its label word where the input's label goes."""
        template = self.config.template or ("{text} {text_pair}" if self.config.pair else "{text}")
        word = self._label_word(label)
        values = dict(text=text, text_pair=pair or "", prompt="")
        if "{mask}" in template:
            return template.format(mask=word, **values)
        return template.format(mask="", **values).rstrip() + " " + word

    @staticmethod
    def configure(
        config: ClassificationConfig, method, backbone: Backbone, readout: str = "auto", prompt_slots: int = 0
    ) -> ClassificationConfig:
        """A new prompt's config: the readout chosen for this method and backbone, and the trigger
        slots the method asks for."""
        config = config.replace(readout=resolve_readout(method, backbone, readout), prompt_slots=prompt_slots)
        if config.calibrate:
            if method.trains or prompt_slots:
                raise ConfigError(
                    f"--calibrate: contextual calibration is for prompts that train nothing (hard_prompt); "
                    f"--method {method.name} learns its own label balance from the training data"
                )
            if config.readout != "verbalizer":
                raise ConfigError(
                    f"--calibrate: needs label words read from the LM head (readout verbalizer), "
                    f"not readout {config.readout}"
                )
        return config

    @torch.no_grad()
    def measure(self, model, examples: list[Example] | None = None, seed: int | None = None) -> None:
        """With `calibrate`: the label log-probabilities `model` (this task's new prompt) gives
        inputs without content, their probabilities averaged, kept in the config. content_free:
        Zhao et al.'s "N/A" and the empty text (not their "[MASK]", which a masked LM would read as
        the label's place); domain: texts of random words from `examples` (the training data)."""
        kind = self.config.calibrate
        if kind is None or self.config.calibration is not None:
            return
        if kind == "content_free":
            probes = [
                Example(text=c, text_pair=c if self.config.pair else None, origin=f"content-free input {c!r}")
                for c in ("N/A", "")
            ]
        else:
            probes = domain_probes(examples, self.config.pair, seed)
        rows = torch.cat(
            [
                logits.float().softmax(-1).cpu()
                for logits, _ in model.batched_logits([self.encode(e) for e in probes], len(probes))
            ]
        )
        self.config = self.config.replace(calibration=tuple(float(x) for x in rows.mean(0).log()))
        self._set_calibration()

    def _set_calibration(self) -> None:
        """The config's calibration as a tensor beside the label word ids (only a verbalizer has one)."""
        values = self.config.calibration
        self.register_buffer(
            "calibration",
            None if values is None else torch.tensor(values, device=self.word_ids.device),
            persistent=False,
        )

    def init_words(self) -> dict[str, tuple[str, ...]]:
        return dict(zip(self.config.labels, self.config.words()))

    def trigger_slot(self) -> int | None:
        return self.slot_filler

    def template_with_prompt(self, text: str) -> ClassificationTask:
        """This task with `text` where the trigger slots were, its trained head kept."""
        template = self.template.replace("{prompt}", text.replace("{", "{{").replace("}", "}}"))
        task = type(self)(self.config.replace(template=template, prompt_slots=0), self._backbone)
        task.load_state_dict(self.state_dict(), strict=True)
        return task.to(self._backbone.device)

    def describe(self) -> dict:
        return {"template": self.template} if self.template else {}

    def outside_tensors(self) -> list[str]:
        config = self.config
        out = []
        if self.template:
            out.append(f"the template {self.template!r} around each input")
        if config.readout == "verbalizer":
            words = {label: list(words) for label, words in zip(config.labels, config.words())}
            out.append(
                f"the label words {words}, read as the next token's scores (the labels in order {list(config.labels)})"
            )
        if config.calibration is not None:
            lean = {label: round(math.exp(x), 4) for label, x in zip(config.labels, config.calibration)}
            out.append(
                f"calibration ({config.calibrate}): each label's probability divided by its probability for "
                f"inputs without content, {lean}"
            )
        return out + self.framing_outside_tensors(config, "input", "the label read at the assistant's first token")

    def fit_positions(self, available: int, taken: int, limit: int) -> str | None:
        """Cut inputs (template included) to the `available` positions the model has left after
        the prompt's `taken`; a problem to report where not even a short input fits."""
        if available < 8:
            self.position_problem = (
                f"the prompt takes {taken} of the model's {limit} positions, leaving {available} "
                "for the input (at least 8 needed); use fewer virtual tokens"
            )
            return self.position_problem
        self.max_length = min(self.config.max_length, available)
        return None

    def _verbalizer_ids(self, backbone: Backbone) -> tuple[list[int], list[int]]:
        """The first sub-token of each label word (LM-BFF style); distinct labels must not share one."""
        ids, owners, seen = [], [], {}
        for label_number, (label, words) in enumerate(zip(self.config.labels, self.config.words())):
            for word in words:
                spelled = (
                    word if self.config.chat else word_for_tokenizer(backbone, word)
                )  # a chat answer starts a line
                pieces = self.tokenizer(spelled, add_special_tokens=False)["input_ids"]
                if not pieces:
                    raise ConfigError(f"verbalizer: word {word!r} of label {label!r} has no tokens")
                token = pieces[0]
                if token in seen and seen[token][0] != label:
                    raise ConfigError(
                        f"verbalizer: {word!r} ({label!r}) and {seen[token][1]!r} ({seen[token][0]!r}) "
                        f"start with the same token {self.tokenizer.convert_ids_to_tokens(token)!r}"
                    )
                seen[token] = (label, word)
                ids.append(token)
                owners.append(label_number)
        return ids, owners

    @torch.no_grad()
    def initialize(self, backbone: Backbone) -> None:
        """Compute what a new prompt's task needs from the backbone (label prototypes)."""
        if self.config.readout != "similarity":
            return
        template = self.config.template or "{mask}"
        rows = []
        for words in self.config.words():
            descriptions = [_describe(template, w) for w in words]
            batch = self.collate([self.encode(Example(text=d)) for d in descriptions], with_labels=False)
            batch = {k: v.to(backbone.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            out = backbone(
                ModelInputs(backbone.embed(batch["input_ids"]), batch["attention_mask"], batch.get("token_type_ids"))
            )
            pooled = F.normalize(self.pool(out.hidden, batch["attention_mask"]).float(), dim=-1)
            rows.append(F.normalize(pooled.mean(0), dim=-1))
        self.prototypes.copy_(torch.stack(rows))

    # ---- data -> tensors ----------------------------------------------------------------------

    def encode(self, example: Example) -> dict:
        """Token ids for one example, text truncated so the template (and its mask) always fits."""
        tok = self.tokenizer
        if example.label is not None and example.label not in self.label_index:
            raise DataError(
                f"{example.origin}: unknown label {example.label!r}; expected one of {list(self.config.labels)}"
            )
        if example.text_pair is not None and not self.config.pair:
            raise DataError(f"{example.origin}: has a text pair but this prompt classifies single texts")
        if self.config.pair and example.text_pair is None:
            raise DataError(f"{example.origin}: this prompt classifies text pairs; the second text is missing")
        if self.position_problem:
            raise DataError(f"{example.origin}: {self.position_problem}")
        use_template = self.template is not None and self.config.readout != "similarity"
        slots = self.config.prompt_slots
        prompt_text = self.slot_text if slots else ""
        if use_template:
            # The chat template writes its own special tokens; otherwise the tokenizer adds them.
            specials = not self.config.chat
            prefix, suffix = self.wrap_prefix, self.wrap_suffix
            fixed = (
                prefix + self.template.format(text="", text_pair="", mask=self.mask_text, prompt=prompt_text) + suffix
            )
            budget = (
                self.max_length
                - (tok.num_special_tokens_to_add() if specials else 0)
                - len(tok(fixed, add_special_tokens=False)["input_ids"])
            )
            text, pair = _truncate(tok, example.text, example.text_pair, budget, self.max_length)
            values = dict(text=text, text_pair=pair or "", mask=self.mask_text, prompt=prompt_text)
            formatted = prefix + self.template.format(**values) + suffix
            pool_input = self.config.readout == "head" and self.kind != DECODER
            encoded = tok(
                formatted,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=specials,
                return_offsets_mapping=bool(slots) or pool_input,
            )
        else:
            encoded = tok(example.text, example.text_pair, truncation=True, max_length=self.max_length)
        ids = encoded["input_ids"]
        if not ids:
            raise DataError(f"{example.origin}: the text has no tokens")
        feature = {"input_ids": ids, "readout_index": self._readout(ids, example)}
        if self.kind == ENCODER_DECODER and self.config.readout == "verbalizer":
            feature["decoder_input_ids"], feature["decoder_index"] = self._decoder_readout(ids)
        if use_template and pool_input:
            # A head reads the input's own tokens: the template's words (and a searched prompt's
            # tokens) are context, not features, as virtual tokens are.
            spans = [
                _span(self.template, name, values, len(self.wrap_prefix))
                for name in ("text", "text_pair")
                if "{" + name + "}" in self.template
            ]
            pool = [int(any(a >= lo and b <= hi and b > a for lo, hi in spans)) for a, b in encoded["offset_mapping"]]
            feature["pool_mask"] = pool if any(pool) else [1] * len(ids)
        if slots:
            # The slots are the filler tokens inside the span where {prompt} was written.
            start, end = _span(self.template, "prompt", values, len(self.wrap_prefix))
            found = [
                i
                for i, (a, b) in enumerate(encoded["offset_mapping"])
                if a >= start and b <= end and b > a and ids[i] == self.slot_filler
            ]
            if len(found) != slots:
                raise DataError(
                    f"{example.origin}: the template's {slots} trigger slots came out as {len(found)} tokens"
                )
            feature["slot_index"] = found
            if len(feature.get("decoder_input_ids", ())) > 1 and self.tokenizer.mask_token is not None:
                # BART's decoder reads the input shifted by one: its slots hold the prompt's tokens too.
                feature["decoder_slot_index"] = [i + 1 for i in found]
        if "token_type_ids" in encoded and example.text_pair is not None and not use_template:
            feature["token_type_ids"] = encoded["token_type_ids"]
        if example.label is not None:
            feature["label"] = self.label_index[example.label]
        return feature

    def _readout(self, ids: list[int], example: Example) -> int:
        if self.config.readout == "verbalizer" and self.kind == ENCODER:
            if self.tokenizer.mask_token_id not in ids:
                raise DataError(
                    f"{example.origin}: the template's mask was truncated away (max_length {self.max_length})"
                )
            return ids.index(self.tokenizer.mask_token_id)
        # The last token that is not a special one appended by the tokenizer (e.g. an EOS).
        special = set(self.tokenizer.all_special_ids)
        last = len(ids) - 1
        while last > 0 and ids[last] in special and self.kind == DECODER:
            last -= 1
        return last

    def _decoder_readout(self, ids: list[int]) -> tuple[list[int], int]:
        """(decoder input, position whose logits score the labels) for an encoder-decoder."""
        if self.mask_id is None or self.mask_id not in ids:
            return [self.decoder_start], 0
        if self.tokenizer.mask_token is None:  # T5: "<extra_id_0>" then the span
            return [self.decoder_start, self.mask_id], 1
        return [self.decoder_start] + ids[:-1], ids.index(self.mask_id)  # BART: the input, shifted right

    def collate(
        self, features: list[dict], with_labels: bool = True, for_generation: bool = False, pad_to: int | None = None
    ) -> dict:
        """Dynamic padding to the longest row (or `pad_to`); the padding side follows the tokenizer,
        except for models that cannot take position ids with absolute positions (the backbone says
        which)."""
        length = max([len(f["input_ids"]) for f in features] + [pad_to or 0])
        pad = self.tokenizer.pad_token_id
        input_ids, mask, types, readout, slot_index, pool_mask = [], [], [], [], [], []
        for f in features:
            n = len(f["input_ids"])
            fill = length - n
            offset = 0 if self.pad_right else fill
            row_types = f.get("token_type_ids", [0] * n)
            if self.pad_right:
                input_ids.append(f["input_ids"] + [pad] * fill)
                mask.append([1] * n + [0] * fill)
                types.append(row_types + [0] * fill)
            else:
                input_ids.append([pad] * fill + f["input_ids"])
                mask.append([0] * fill + [1] * n)
                types.append([0] * fill + row_types)
            readout.append(f["readout_index"] + offset)
            # Rows without a template's pool mask (other prompts in a mixed batch) pool every token.
            row_pool = f.get("pool_mask", [1] * n)
            pool_mask.append(row_pool + [0] * fill if self.pad_right else [0] * fill + row_pool)
            if "slot_index" in f:
                slot_index.append([i + offset for i in f["slot_index"]])
        batch = {
            "input_ids": torch.tensor(input_ids),
            "attention_mask": torch.tensor(mask),
            "readout_index": torch.tensor(readout),
        }
        if any("token_type_ids" in f for f in features):
            batch["token_type_ids"] = torch.tensor(types)
        if slot_index:
            batch["slot_index"] = torch.tensor(slot_index)
        if any("pool_mask" in f for f in features):
            batch["pool_mask"] = torch.tensor(pool_mask)
        if any("decoder_input_ids" in f for f in features):
            # Right-padded (a decoder counts positions from its first token); the readout is a
            # decoder position.
            width = max(len(f.get("decoder_input_ids", ())) for f in features)
            batch["decoder_input_ids"] = torch.tensor(
                [f["decoder_input_ids"] + [pad] * (width - len(f["decoder_input_ids"])) for f in features]
            )
            batch["readout_index"] = torch.tensor([f["decoder_index"] for f in features])
            if any("decoder_slot_index" in f for f in features):
                batch["decoder_slot_index"] = torch.tensor([f["decoder_slot_index"] for f in features])
        if with_labels and all("label" in f for f in features):
            batch["labels"] = torch.tensor([f["label"] for f in features])
        return batch

    # ---- outputs -> scores --------------------------------------------------------------------

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) over real tokens only -> (B, D)."""
        if self.kind == DECODER:
            # Last real token: with left padding it is the last position, with right padding the
            # position before the first pad.
            last = torch.where(attention_mask[:, -1].bool(), hidden.shape[1] - 1, attention_mask.sum(-1) - 1)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)

    def model_inputs(self, batch: dict, embeds: torch.Tensor) -> ModelInputs:
        return ModelInputs(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
            readout_index=batch.get("readout_index"),
            slot_index=batch.get("slot_index"),
            decoder_input_ids=batch.get("decoder_input_ids"),
            extra={"decoder_slot_index": batch["decoder_slot_index"]} if "decoder_slot_index" in batch else {},
        )

    def logits(self, output: BackboneOutput, inputs: ModelInputs, batch: dict) -> torch.Tensor:
        """Label scores (B, C). `output.hidden` is already restricted to the real (non-virtual)
        positions, aligned with the batch's original `attention_mask`."""
        attention_mask = batch["attention_mask"]
        if self.config.readout == "verbalizer":
            log_probs = output.readout_logits.float().log_softmax(-1)[:, self.word_ids]  # (B, W)
            # Per label: log of the summed probabilities of its words.
            columns = [
                torch.logsumexp(log_probs[:, self.word_owner == c], dim=-1) for c in range(len(self.config.labels))
            ]
            scores = torch.stack(columns, dim=-1)  # (B, C)
            return scores if self.calibration is None else scores - self.calibration
        pooled = self.pool(output.hidden, batch.get("pool_mask", attention_mask))
        if self.config.readout == "head":
            return self.head(pooled.to(self.head.weight.dtype))
        return SIMILARITY_SCALE * F.normalize(pooled.float(), dim=-1) @ self.prototypes.T

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])

    def loss_units(self, batch: dict) -> int:
        """What `loss` averages over: the rows."""
        return int(batch["labels"].numel())

    def scored_outputs(self, model, examples: list[Example], batch_size: int = 64, accelerator=None) -> list:
        """(predicted, gold) label index per example; with an accelerator, evaluation is sharded
        across processes."""
        predictions, labels = [], []
        for logits, batch in model.batched_logits([self.encode(e) for e in examples], batch_size, accelerator):
            pred, gold = logits.argmax(-1), batch["labels"]
            if accelerator is not None:
                pred, gold = accelerator.gather_for_metrics((pred, gold))
            predictions.append(pred.cpu())
            labels.append(gold.cpu())
        if not predictions:
            return []
        return list(zip(torch.cat(predictions).tolist(), torch.cat(labels).tolist()))

    def score(self, outputs: list, examples: list[Example]) -> dict:
        """scikit-learn metrics (accuracy, macro P/R/F1, per class, confusion matrix)."""
        return classification_metrics([p for p, _ in outputs], [g for _, g in outputs], self.config.labels)

    # ---- results ------------------------------------------------------------------------------

    def results(self, logits: torch.Tensor, batch: dict, examples: list) -> list[dict]:
        """Each row's label and every label's probability."""
        labels = self.config.labels
        rows = []
        for probs in logits.float().softmax(-1).cpu().tolist():
            best = max(range(len(labels)), key=probs.__getitem__)
            rows.append({"label": labels[best], "probabilities": {label: p for label, p in zip(labels, probs)}})
        return rows

    def predict(self, model, examples: list[Example], batch_size: int = 64) -> list[dict]:
        """One dict per input: the text, the predicted label and every label's probability."""
        features = [self.encode(e) for e in examples]
        rows = []
        for logits, batch in model.batched_logits(features, batch_size):
            rows.extend(self.results(logits, batch, []))
        out = []
        for example, row in zip(examples, rows):
            entry = {"text": example.text}
            if example.text_pair is not None:
                entry["text_pair"] = example.text_pair
            entry.update(label=row["label"], probabilities={k: round(p, 6) for k, p in row["probabilities"].items()})
            out.append(entry)
        return out

    @classmethod
    def predicted_labels(cls, result: dict) -> list[str]:
        return [result["label"]]


DOMAIN_PROBES = 20  # Fei et al.'s number of random in-domain texts


def domain_probes(examples: list[Example] | None, pair: bool, seed: int | None) -> list[Example]:
    """Fei et al.'s domain-context inputs: texts of words drawn at random (with the seed) from the
    training texts, each as long as their mean, a text pair from the second texts' own words."""
    if not examples:
        raise ConfigError("--calibrate domain: draws its texts from the training data's words; no training data given")
    rng = random.Random(0 if seed is None else seed)
    fields = [[e.text for e in examples]] + ([[e.text_pair or "" for e in examples]] if pair else [])
    pools = [[w for t in texts for w in t.split()] for texts in fields]
    if not all(pools):
        raise ConfigError("--calibrate domain: the training texts have no words to draw from")
    lengths = [max(1, round(statistics.mean(len(t.split()) for t in texts))) for texts in fields]
    probes = []
    for i in range(DOMAIN_PROBES):
        texts = [" ".join(rng.choices(pool, k=n)) for pool, n in zip(pools, lengths)]
        probes.append(Example(text=texts[0], text_pair=texts[1] if pair else None, origin=f"domain probe {i + 1}"))
    return probes


def _span(template: str, name: str, values: dict, offset: int = 0) -> tuple[int, int]:
    """Character span of placeholder `name`'s value in `template.format(**values)`, placed
    `offset` characters into the text."""
    start = offset + len(template[: template.index("{" + name + "}")].format(**values))
    return start, start + len(values[name])


def _describe(template: str, word: str) -> str:
    """A label's description for similarity scoring: the template without the input fields."""
    text = template.replace("{text_pair}", "").replace("{text}", "").replace("{mask}", word)
    return re.sub(r"\s+", " ", text).strip() or word


def _sentinel(tokenizer) -> str:
    token = "<extra_id_0>"
    return token if token in tokenizer.get_vocab() else ""


def _truncate(tokenizer, text: str, pair: str | None, budget: int, max_length: int) -> tuple[str, str | None]:
    """Cut the longer text field, token by token, until both fit in `budget` tokens; cut on the
    character offset of the last kept token so the result is still the user's text."""
    if budget < 2:
        raise ConfigError(
            f"max_length: the template (with its instruction, demonstrations and chat turns) leaves "
            f"{max(budget, 0)} of {max_length} tokens for the input; raise --max-length"
        )

    def encode(s):
        return tokenizer(s, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    offsets = [encode(text), encode(pair) if pair is not None else []]
    keep = [len(offsets[0]), len(offsets[1])]
    while sum(keep) > budget:
        longest = 0 if keep[0] >= keep[1] else 1
        keep[longest] -= 1
    fields = [text, pair]
    for i in (0, 1):
        if fields[i] is not None and keep[i] < len(offsets[i]):
            fields[i] = fields[i][: offsets[i][keep[i] - 1][1]] if keep[i] > 0 else ""
    return fields[0], fields[1]
