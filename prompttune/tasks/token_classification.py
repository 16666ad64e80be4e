"""Token classification: a tag for every word, e.g. named-entity recognition (CoNLL-2003).

- Data: CoNLL-style files (one token per line, the token first and its tag last, blank lines between
  sentences, `-DOCSTART-` lines skipped; `.txt`, `.conll`, `.iob`, `.bio`) or rows with a list of
  tokens and a list of tags (JSONL, a datasets folder; columns `tokens` and `tags` unless given).
  Tags are IOB2 (`O`, `B-TYPE`, `I-TYPE`); the label set is the training file's.
- A word's tag is read at its first sub-token (the others are not scored), by a trained linear head
  over the frozen model's last hidden states, as P-tuning v2 does for NER.
- Metrics: entity-level precision, recall and F1 by seqeval (conlleval's counting), per entity type,
  and word accuracy. Words cut off by `max_length` are predicted `O` and still counted.
- Predictions: each word's tag and the entities, with character offsets into the input text (raw
  text is split into words and punctuation first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import TypedDict

from ..config import ConfigBase, check
from ..core.backbone import Backbone, BackboneOutput, ModelInputs
from ..errors import ConfigError, DataError
from ..options import Endpoint, TokenClassificationOptions
from .base import Task, register

IGNORE = -100
CONLL_SUFFIXES = (".txt", ".conll", ".iob", ".bio", ".iob2")
TAG = re.compile(r"O|[BI]-\S+")
WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")


@dataclass(frozen=True)
class TokenExample:
    """A sentence: its words, their tags (None when predicting) and where each word is in `text`."""

    text: str
    tokens: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    tags: tuple[str, ...] | None = None
    origin: str = ""  # where the sentence came from, for error messages

    @classmethod
    def from_tokens(cls, tokens, tags=None, origin: str = "") -> TokenExample:
        spans, start = [], 0
        for token in tokens:
            spans.append((start, start + len(token)))
            start += len(token) + 1
        return cls(" ".join(tokens), tuple(tokens), tuple(spans), tuple(tags) if tags is not None else None, origin)

    @classmethod
    def from_text(cls, text: str, origin: str = "") -> TokenExample:
        """Raw text split into words and punctuation marks, as CoNLL files are."""
        found = list(WORD.finditer(text))
        if not found:
            raise DataError(f"{origin}: the text has no words")
        return cls(text, tuple(m.group() for m in found), tuple(m.span() for m in found), None, origin)


class Entity(TypedDict):
    text: str
    label: str
    start: int
    end: int
    score: float


class TaggingResult(TypedDict):
    tokens: list[str]
    tags: list[str]
    entities: list[Entity]


@dataclass(frozen=True)
class TokenClassificationConfig(ConfigBase):
    labels: tuple[str, ...]
    """The tags in class order (IOB2: O, B-TYPE, I-TYPE), from the training file unless given."""
    max_length: int = 256
    """Sub-word tokens per sentence, virtual tokens not counted; words past it are predicted O.
    Where the model has fewer positions than the prompt plus `max_length`, sentences are cut to
    what is left after the prompt."""

    def __post_init__(self):
        check(len(self.labels) >= 2, "labels", f"need at least two tags, got {list(self.labels)}")
        check(len(set(self.labels)) == len(self.labels), "labels", f"duplicate tags in {list(self.labels)}")
        bad = [t for t in self.labels if not TAG.fullmatch(t)]
        check(not bad, "labels", f"tags are IOB2 (O, B-TYPE, I-TYPE); got {bad}")
        check(isinstance(self.max_length, int) and self.max_length >= 8, "max_length", "must be an integer >= 8")


@register
class TokenClassificationTask(Task):
    name = "token_classification"
    Config = TokenClassificationConfig
    Options = TokenClassificationOptions
    default_metric = "f1"
    metrics = ("f1", "precision", "recall", "accuracy")
    endpoint = Endpoint.CLASSIFY
    result_type = TaggingResult

    def __init__(self, config: TokenClassificationConfig, backbone: Backbone):
        super().__init__()
        if not getattr(backbone.tokenizer, "is_fast", False):
            raise ConfigError("--task token_classification: needs a fast tokenizer (sub-word offsets)")
        self.config = config
        self.tokenizer = backbone.tokenizer
        self.pad_right = backbone.pads_right_only or self.tokenizer.padding_side == "right"
        self.tag_index = {tag: i for i, tag in enumerate(config.labels)}
        self.outside = self.tag_index.get("O", 0)
        self.max_length = config.max_length  # lowered by `fit_positions`
        self.position_problem = None
        self.head = nn.Linear(backbone.hidden_size, len(config.labels))

    # ---- data ---------------------------------------------------------------------------------

    @classmethod
    def read_examples(cls, path: str, columns: dict, labelled: bool = True) -> list[TokenExample]:
        if Path(path).is_file() and Path(path).suffix.lower() in CONLL_SUFFIXES:
            sentences = _read_conll(Path(path), labelled)
        else:
            sentences = _read_rows(path, columns["text"], columns["label"] if labelled else None)
        if not sentences:
            raise DataError(f"{path}: no sentences")
        return [
            TokenExample.from_tokens(tokens, tags if labelled else None, where) for where, tokens, tags in sentences
        ]

    @classmethod
    def read_records(cls, path: str) -> list[dict]:
        if Path(path).is_file() and Path(path).suffix.lower() in CONLL_SUFFIXES:
            return [{"tokens": list(tokens), "tags": list(tags)} for _, tokens, tags in _read_conll(Path(path), True)]
        return super().read_records(path)

    @classmethod
    def examples_from_texts(cls, texts: list[str]) -> list[TokenExample]:
        return [TokenExample.from_text(text, f"argument {n}") for n, text in enumerate(texts, 1)]

    @classmethod
    def example_from_input(cls, text: str, text_pair: str | None = None, origin: str = "") -> TokenExample:
        if text_pair is not None:
            raise DataError(f"{origin}: a token classification prompt tags one text; text_pair is not read")
        return TokenExample.from_text(text, origin)

    @classmethod
    def sweep_options(cls, path: str, columns: dict) -> dict:
        """The tags of the whole training file: a small subset may lack a rare one."""
        return {"labels": list(_tag_order({t for e in cls.read_examples(path, columns) for t in e.tags}))}

    @classmethod
    def new_config(
        cls,
        options: TokenClassificationOptions | dict,
        train_examples: list[TokenExample],
        eval_examples: list[TokenExample] | None,
        seed: int,
        train_name: str = "the training data",
        columns: dict | None = None,
    ) -> TokenClassificationConfig:
        options = cls.check_options(options)
        labels = options.labels
        if labels:
            tags = tuple(str(t) for t in labels)
        else:
            tags = _tag_order({t for e in train_examples for t in e.tags})
        known = set(tags)
        for example in list(train_examples) + list(eval_examples or []):
            unknown = next((t for t in example.tags if t not in known), None)
            if unknown is not None:
                raise ConfigError(
                    f"{example.origin}: tag {unknown!r} is not one of {train_name}'s tags {list(tags)} "
                    "(pass --labels to fix the set)"
                )
        return TokenClassificationConfig(labels=tags, max_length=options.max_length)

    # ---- a new prompt -------------------------------------------------------------------------

    @staticmethod
    def configure(config, method, backbone: Backbone, readout: str = "auto", prompt_slots: int = 0):
        if prompt_slots:
            raise ConfigError(f"--method {method.name}: searched prompts are made for classification")
        if not method.trains:
            raise ConfigError(
                f"--method {method.name}: trains nothing, and token classification reads tags with a "
                "trained head; use soft_prompt, prefix, deep_prompt, p_tuning, linear_probe or full_finetune"
            )
        return config

    def fit_positions(self, available: int, taken: int, limit: int) -> str | None:
        if available < 8:
            self.position_problem = (
                f"the prompt takes {taken} of the model's {limit} positions, leaving {available} "
                "for the sentence (at least 8 needed); use fewer virtual tokens"
            )
            return self.position_problem
        self.max_length = min(self.config.max_length, available)
        return None

    # ---- data -> tensors ----------------------------------------------------------------------

    def encode(self, example: TokenExample) -> dict:
        """Sub-word ids, where each word's first sub-token is (-1: cut off by max_length) and, with
        tags, the tag of each word and each position's training label (-100 where none)."""
        if self.position_problem:
            raise DataError(f"{example.origin}: {self.position_problem}")
        encoded = self.tokenizer(example.text, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        first = [-1] * len(example.tokens)
        word = 0
        for position, (start, end) in enumerate(encoded["offset_mapping"]):
            if end <= start:
                continue  # a special token
            while word < len(example.spans) and example.spans[word][1] <= start:
                word += 1
            if (
                word < len(example.spans)
                and first[word] == -1
                and start < example.spans[word][1]
                and end > example.spans[word][0]
            ):
                first[word] = position
        feature = {"input_ids": ids, "word_index": first}
        if example.tags is not None:
            if len(example.tags) != len(example.tokens):
                raise DataError(f"{example.origin}: {len(example.tokens)} tokens but {len(example.tags)} tags")
            try:
                word_labels = [self.tag_index[t] for t in example.tags]
            except KeyError as error:
                raise DataError(
                    f"{example.origin}: tag {error.args[0]!r} is not one of this prompt's tags "
                    f"{list(self.config.labels)}"
                ) from None
            labels = [IGNORE] * len(ids)
            for position, tag in zip(first, word_labels):
                if position >= 0:
                    labels[position] = tag
            feature.update(word_labels=word_labels, labels=labels)
        return feature

    def training_features(self, examples: list[TokenExample]) -> list[dict]:
        features = []
        for example in examples:
            if example.tags is None:
                raise DataError(f"{example.origin}: no tags to train on")
            features.append(self.encode(example))
        return features

    def collate(
        self, features: list[dict], with_labels: bool = True, for_generation: bool = False, pad_to: int | None = None
    ) -> dict:
        """Padded to the longest row (or `pad_to`) on the backbone's side; word positions moved with
        the padding, and padded with -1."""
        length = max([len(f["input_ids"]) for f in features] + [pad_to or 0])
        words = max(len(f["word_index"]) for f in features)
        pad = self.tokenizer.pad_token_id
        ids, mask, index, labels, word_labels = [], [], [], [], []
        for f in features:
            n = len(f["input_ids"])
            fill = length - n
            offset = 0 if self.pad_right else fill
            side = (
                (lambda row, value, fill=fill: row + [value] * fill)
                if self.pad_right
                else (lambda row, value, fill=fill: [value] * fill + row)
            )
            ids.append(side(f["input_ids"], pad))
            mask.append(side([1] * n, 0))
            index.append(
                [i + offset if i >= 0 else -1 for i in f["word_index"]] + [-1] * (words - len(f["word_index"]))
            )
            if "labels" in f:
                labels.append(side(f["labels"], IGNORE))
                word_labels.append(f["word_labels"] + [-1] * (words - len(f["word_labels"])))
        batch = {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.tensor(mask),
            "word_index": torch.tensor(index),
        }
        if with_labels and len(labels) == len(features):
            batch["labels"] = torch.tensor(labels)
            batch["word_labels"] = torch.tensor(word_labels)
        return batch

    # ---- outputs -> scores --------------------------------------------------------------------

    def model_inputs(self, batch: dict, embeds: torch.Tensor) -> ModelInputs:
        return ModelInputs(inputs_embeds=embeds, attention_mask=batch["attention_mask"])

    def logits(self, output: BackboneOutput, inputs: ModelInputs, batch: dict) -> torch.Tensor:
        """(B, T, C) tag scores at every real position."""
        return self.head(output.hidden.to(self.head.weight.dtype))

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=IGNORE
        )

    def loss_units(self, batch: dict) -> int:
        """What `loss` averages over: the words read (their first sub-tokens)."""
        return int((batch["labels"] != IGNORE).sum())

    def word_scores(self, logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, W) predicted tag and its probability per word (-1 beyond a row's words; O for words
        cut off by max_length)."""
        index = batch["word_index"]
        probs = logits.float().softmax(-1)
        gathered = probs.gather(1, index.clamp(min=0).unsqueeze(-1).expand(-1, -1, probs.shape[-1]))  # (B, W, C)
        score, tag = gathered.max(-1)
        cut = index < 0
        tag = tag.masked_fill(cut, self.outside)
        score = score.masked_fill(cut, 0.0)
        return tag, score

    def scored_outputs(self, model, examples: list[TokenExample], batch_size: int = 64, accelerator=None) -> list:
        """(gold tags, predicted tags) per example, one per word; with an accelerator, evaluation
        is sharded across processes."""
        predicted, gold = [], []
        for example in examples:
            if example.tags is None:
                raise DataError(f"{example.origin}: no tags to score against")
        for logits, batch in model.batched_logits([self.encode(e) for e in examples], batch_size, accelerator):
            tags, _ = self.word_scores(logits, batch)
            truth = batch["word_labels"]
            tags = tags.masked_fill(truth < 0, -1)
            if accelerator is not None:
                tags = accelerator.pad_across_processes(tags, dim=1, pad_index=-1)
                truth = accelerator.pad_across_processes(truth, dim=1, pad_index=-1)
                tags, truth = accelerator.gather_for_metrics((tags, truth))
            for row_tags, row_truth in zip(tags.tolist(), truth.tolist()):
                predicted.append([self.config.labels[t] for t in row_tags if t >= 0])
                gold.append([self.config.labels[t] for t in row_truth if t >= 0])
        return list(zip(gold, predicted))

    def score(self, outputs: list, examples: list[TokenExample]) -> dict:
        """Entity precision, recall and F1 (seqeval) and word accuracy."""
        return tagging_metrics([g for g, _ in outputs], [p for _, p in outputs])

    def results(self, logits: torch.Tensor, batch: dict, examples: list[TokenExample]) -> list[dict]:
        """Per row: its words, their tags and the entities with character offsets into its text."""
        from seqeval.metrics.sequence_labeling import get_entities

        tags, scores = self.word_scores(logits, batch)
        out = []
        for example, row_tags, row_scores in zip(examples, tags.tolist(), scores.tolist()):
            n = len(example.tokens)
            names = [self.config.labels[t] for t in row_tags[:n]]
            entities = []
            for label, first, last in get_entities(names):
                start, end = example.spans[first][0], example.spans[last][1]
                entities.append(
                    {
                        "text": example.text[start:end],
                        "label": label,
                        "start": start,
                        "end": end,
                        "score": round(sum(row_scores[first : last + 1]) / (last - first + 1), 6),
                    }
                )
            out.append({"tokens": list(example.tokens), "tags": names, "entities": entities})
        return out

    def predict(self, model, examples: list[TokenExample], batch_size: int = 64) -> list[dict]:
        rows = []
        features = [self.encode(e) for e in examples]
        start = 0
        for logits, batch in model.batched_logits(features, batch_size):
            part = examples[start : start + logits.shape[0]]
            start += len(part)
            rows.extend({"text": e.text, **r} for e, r in zip(part, self.results(logits, batch, part)))
        return rows

    @classmethod
    def predicted_labels(cls, result: dict) -> list[str]:
        return [entity["label"] for entity in result["entities"]]


def tagging_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Entity-level micro precision, recall and F1 and per-type scores (seqeval, conlleval's
    counting), and word accuracy."""
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    return {
        "f1": float(f1_score(gold, predicted, zero_division=0)),
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(gold, predicted)),
        "per_type": {
            name: {k: float(v) for k, v in values.items()}
            for name, values in report.items()
            if not name.endswith(" avg")
        },
        "count": len(gold),
    }


def _tag_order(tags: set[str]) -> tuple[str, ...]:
    """O first, then by entity type, B before I."""
    return tuple(sorted(tags, key=lambda t: (t != "O", t[2:], t[:1])))


def _check_tags(tags: list[str], where: str) -> None:
    for tag in tags:
        if not isinstance(tag, str) or not TAG.fullmatch(tag):
            raise DataError(f"{where}: tag {tag!r} is not IOB2 (O, B-TYPE or I-TYPE)")


def _read_conll(path: Path, labelled: bool) -> list[tuple[str, list[str], list[str] | None]]:
    """(where, tokens, tags) per sentence of a CoNLL-style file."""
    from .data import _text_of

    sentences, tokens, tags, first_line = [], [], [], 0
    lines = _text_of(path).splitlines()
    for number, line in enumerate(lines + [""], 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                sentences.append((f"{path}, line {first_line}", tokens, tags if labelled else None))
            tokens, tags = [], []
            continue
        if labelled and len(fields) < 2:
            raise DataError(f"{path}, line {number}: expected a token and its tag, got {line.strip()!r}")
        if labelled:
            _check_tags([fields[-1]], f"{path}, line {number}")
            tags.append(fields[-1])
        if not tokens:
            first_line = number
        tokens.append(fields[0])
    return sentences


def _read_rows(path: str, token_column: str, tag_column: str | None) -> list[tuple[str, list[str], list[str] | None]]:
    from .data import read_rows

    name, rows = read_rows(path)
    out = []
    for where, record in rows:
        tokens = record.get(token_column)
        if token_column not in record:
            raise DataError(f"{name}: missing column {token_column!r}; columns are {sorted(record)}")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t.strip() for t in tokens):
            raise DataError(f"{where}, column {token_column!r}: expected a non-empty list of tokens")
        tags = None
        if tag_column is not None:
            if tag_column not in record:
                raise DataError(f"{name}: missing column {tag_column!r}; columns are {sorted(record)}")
            tags = record[tag_column]
            if not isinstance(tags, list) or len(tags) != len(tokens):
                raise DataError(f"{where}, column {tag_column!r}: expected a list of {len(tokens)} tags, one per token")
            _check_tags(tags, f"{where}, column {tag_column!r}")
        out.append((where, [t.strip() for t in tokens], tags))
    return out
