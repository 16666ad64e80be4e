"""Many prompts over one frozen model: mixed-task batches and prompt ensembles.

A `PromptSet` holds prompts made for one base model and runs batches in which every row names its
own prompt: each prompt's task encodes its rows (its template, its verbalizer), each prompt's
virtual tokens and prefixes are attached to its rows in one batched forward (prompttune/core/parts.py),
and each prompt's task reads its rows' scores. A row's result equals running its prompt alone, up
to floating-point rounding. (Encoder-decoder models count positions from the length of the key/value
cache, one number per batch: there, rows share a forward with rows of the same prefix length.)

    prompts = PromptSet.load({"sentiment": "runs/sst2", "topic": "runs/trec"})
    prompts.classify([("sentiment", "a gripping film"), ("topic", "Who wrote Hamlet?")])

Ensembles (Lester et al. 2021, section 7.1) run several prompts for one task over the same inputs
as one mixed batch and combine them by mean probability or majority vote.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ..core.backbone import ENCODER_DECODER, Backbone, ModelInputs
from ..core.batching import length_groups
from ..core.parts import PromptParts, attach, computed_once
from ..errors import ConfigError
from ..methods.base import PromptMethod
from ..model import PromptModel, run_backbone
from ..options import Endpoint
from ..tasks.data import Example

Row = tuple[str, "Example | str"]


class PromptSet:
    """Prompts sharing one frozen backbone, run together in mixed batches."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.prompts: dict[str, PromptModel] = {}
        self._parts: dict[str, PromptParts] = {}

    @classmethod
    def load(cls, prompts: dict[str, str | os.PathLike], backbone: Backbone | None = None) -> PromptSet:
        """Load artifacts by name onto one backbone (the base model of the first, unless given)."""
        from ..artifacts.artifact import read_meta

        if not prompts:
            raise ConfigError("a prompt set needs at least one prompt")
        if backbone is None:
            first = next(iter(prompts.values()))
            backbone = Backbone.from_pretrained(read_meta(first)["base_model"]["name_or_path"])
        result = cls(backbone)
        for name, directory in prompts.items():
            result.add(name, directory)
        return result

    # ---- membership ---------------------------------------------------------------------------

    def add(self, name: str, prompt: PromptModel | str | os.PathLike) -> PromptModel:
        """Add a prompt: a loaded `PromptModel` on this set's backbone, or an artifact folder (loaded
        onto it; an artifact made for another base model is refused)."""
        from ..artifacts.artifact import load_prompt

        if not isinstance(prompt, PromptModel):
            prompt = load_prompt(Path(prompt), backbone=self.backbone)
        if prompt.backbone is not self.backbone:
            raise ConfigError(f"prompt {name!r}: made on another backbone object; load it onto this set's backbone")
        method = prompt.method
        if not method.shares_backbone:
            raise ConfigError(
                f"prompt {name!r}: {method.name} changes the model's own weights, so it cannot share "
                "one frozen model with other prompts"
            )
        if type(method).prepare is not PromptMethod.prepare:
            raise ConfigError(
                f"prompt {name!r}: {method.name} changes its inputs in its own way and cannot be "
                "mixed with other prompts in one batch"
            )
        prompt.eval()
        self.prompts[name] = prompt
        self._compute_parts(name)
        return prompt

    @torch.no_grad()
    def _compute_parts(self, name: str) -> None:
        """What the prompt adds to its rows, computed when it joins (a decoder's virtual tokens
        become keys and values once, not per batch) and again when the set moves."""
        self._parts[name] = computed_once(self.prompts[name].method.parts(self.backbone), self.backbone).detached()

    def to(self, *args, **kwargs) -> PromptSet:
        """Move the backbone and every prompt (`torch.nn.Module.to`'s arguments), and recompute what
        the set keeps of each prompt on the new device and type."""
        self.backbone.to(*args, **kwargs)
        for name, prompt in self.prompts.items():
            prompt.to(*args, **kwargs)
            self._compute_parts(name)
        return self

    def remove(self, name: str) -> None:
        self._get(name)
        del self.prompts[name], self._parts[name]

    def __contains__(self, name: str) -> bool:
        return name in self.prompts

    def __getitem__(self, name: str) -> PromptModel:
        return self._get(name)

    def __len__(self) -> int:
        return len(self.prompts)

    def _get(self, name: str) -> PromptModel:
        if name not in self.prompts:
            raise ConfigError(f"unknown prompt {name!r}; this set has {sorted(self.prompts)}")
        return self.prompts[name]

    # ---- running ------------------------------------------------------------------------------

    def _inputs(self, names: list[str], inputs: ModelInputs) -> ModelInputs:
        """Each row's prompt attached to its embedded row (one prompt: broadcast, as alone)."""
        distinct = list(dict.fromkeys(names))
        parts = [self._parts[n] for n in distinct]
        if all(p.num_virtual == 0 and p.prefix_length == 0 for p in parts):
            return inputs
        owner = None
        if len(distinct) > 1:
            index = {n: i for i, n in enumerate(distinct)}
            owner = torch.tensor([index[n] for n in names], device=self.backbone.device)
        return attach(inputs, parts, owner, filler_last=self.backbone.pads_right_only)

    def _check_endpoint(self, names: list[str], endpoint: Endpoint) -> None:
        for name in dict.fromkeys(names):
            task = self._get(name).task
            if task.endpoint is not endpoint:
                raise ConfigError(
                    f"prompt {name!r} is a {task.name} prompt, which is run by {task.endpoint.value!r}, not {endpoint.value!r}"
                )

    def _as_examples(self, rows: list[Row]) -> list[tuple[str, Example]]:
        """Rows given as text made into examples by their prompt's task."""
        out = []
        for i, (name, item) in enumerate(rows, 1):
            if isinstance(item, str):
                if not item.strip():
                    raise ConfigError(f"input {i}: the text is empty")
                item = type(self._get(name).task).examples_from_texts([item])[0]
                item = replace(item, origin=f"input {i}")
            out.append((name, item))
        return out

    def _forward_key(self, name: str):
        """Rows with equal keys may share a forward. Encoder-decoder models (T5, BART) place
        positions by the length of the key/value cache, one number per batch, so their rows share a
        forward only with rows of the same prefix length (every soft or hard prompt has length 0)."""
        if self.backbone.kind == ENCODER_DECODER:
            return self._parts[name].prefix_length
        return 0

    def _batches(
        self, names: list[str], lengths: list[int], batch_size: int, max_tokens: int | None = None, key=None
    ) -> list[list[int]]:
        """Row indices per forward, grouped by `_forward_key` (and `key`): at most `batch_size` rows
        and, with `max_tokens`, at most that many padded input tokens (rows x longest row). Rows are
        taken in order of length, whatever their prompt, so a forward pads little."""
        groups: dict = {}
        for i, name in enumerate(names):
            groups.setdefault((self._forward_key(name), key(name) if key else None), []).append(i)
        return [
            batch for members in groups.values() for batch in length_groups(members, lengths, batch_size, max_tokens)
        ]

    @torch.no_grad()
    def _score(self, rows: list[tuple[str, Example]], batch_size: int, max_tokens: int | None, each) -> None:
        """Run rows (made examples by `_as_examples`) of any tasks served by one forward ("classify":
        classification, token classification) in mixed batches; `each(name, rows, logits, batch)`
        gets each prompt's rows of a forward (their indices into `rows`), their scores and their own
        collated batch."""
        all_names = [n for n, _ in rows]
        self._check_endpoint(all_names, Endpoint.CLASSIFY)
        features = [self._get(n).task.encode(e) for n, e in rows]
        lengths = [len(f["input_ids"]) for f in features]
        device = self.backbone.device
        for chunk in self._batches(all_names, lengths, batch_size, max_tokens):
            names = [all_names[i] for i in chunk]
            width = max(lengths[i] for i in chunk)
            groups = {name: [j for j, n in enumerate(names) if n == name] for name in dict.fromkeys(names)}
            # Each prompt's task collates its own rows, all padded to one width on the backbone's side.
            own = {
                name: {
                    k: v.to(device)
                    for k, v in self._get(name)
                    .task.collate([features[chunk[j]] for j in local], with_labels=False, pad_to=width)
                    .items()
                }
                for name, local in groups.items()
            }
            shared = _shared(own, groups, len(chunk), device)
            inputs = self._inputs(
                names,
                ModelInputs(
                    inputs_embeds=self.backbone.embed(shared["input_ids"]),
                    attention_mask=shared["attention_mask"],
                    token_type_ids=shared.get("token_type_ids"),
                    readout_index=shared.get("readout_index"),
                    decoder_input_ids=shared.get("decoder_input_ids"),
                ),
            )
            output = run_backbone(self.backbone, inputs)
            for name, local in groups.items():
                idx = torch.tensor(local, device=device)
                sub = type(output)(
                    output.hidden[idx],
                    None if output.readout_logits is None else output.readout_logits[idx],
                    None if output.logits is None else output.logits[idx],
                )
                logits = self.prompts[name].task.logits(sub, None, own[name])
                each(name, [chunk[j] for j in local], logits, own[name])

    @torch.no_grad()
    def logits(self, rows: list[Row], batch_size: int = 64, max_tokens: int | None = None) -> list[torch.Tensor]:
        """Each row's scores under its own prompt (label logits (C,) for classification), in order;
        at most `batch_size` rows and `max_tokens` padded input tokens per forward."""
        out: list[torch.Tensor | None] = [None] * len(rows)

        def keep(name, indices, logits, batch):
            for i, row in zip(indices, logits.float().cpu()):
                out[i] = row

        self._score(self._as_examples(rows), batch_size, max_tokens, keep)
        return out

    def classify(self, rows: list[Row], batch_size: int = 64, max_tokens: int | None = None) -> list[dict]:
        """Per row: its prompt and what its task reads from the forward (for classification the
        predicted label and every label's probability; for token classification the entities)."""
        examples = self._as_examples(rows)
        results: list[dict | None] = [None] * len(rows)

        def read(name, indices, logits, batch):
            task = self.prompts[name].task
            for i, result in zip(indices, task.results(logits, batch, [examples[i][1] for i in indices])):
                results[i] = {"prompt": name, **result}

        self._score(examples, batch_size, max_tokens, read)
        return results

    @torch.no_grad()
    def generate(
        self,
        rows: list[Row],
        batch_size: int = 32,
        max_tokens: int | None = None,
        details: bool = False,
        on_token=None,
        on_prompt=None,
        stop_rows=None,
        **options,
    ) -> list[list]:
        """Per row: the texts its prompt generates for it (num_return_sequences of them), or with
        `details` a dict per sequence (`text`, `tokens` generated, `finished`: whether it ended with
        the end-of-sequence token) and the row's `prompt_tokens` in each. Rows whose prompts resolve
        to the same decoding options share one `generate` call. `on_token(row, sequence, token_id,
        is_end)` is told every token as it is decoded (not with beam search); a row for which
        `stop_rows(row)` turns true stops being decoded at the next step; `on_prompt(row, tokens)` is
        told each row's input length as its batch starts."""
        rows = self._as_examples(rows)
        self._check_endpoint([n for n, _ in rows], Endpoint.GENERATE)
        names_all = [n for n, _ in rows]
        resolved = {n: self.prompts[n].task.generation_options(**options) for n in dict.fromkeys(names_all)}
        results: list[list[str] | None] = [None] * len(rows)
        encoded = [self.prompts[n].task.encode(e) for n, e in rows]
        lengths = [len(f["input_ids"]) for f in encoded]
        for chunk in self._batches(
            names_all, lengths, batch_size, max_tokens, key=lambda n: repr(sorted(resolved[n].items()))
        ):
            names = [names_all[i] for i in chunk]
            task = self.prompts[names[0]].task
            features = [encoded[i] for i in chunk]
            batch = {
                k: v.to(self.backbone.device)
                for k, v in task.collate(features, with_labels=False, for_generation=True).items()
            }
            inputs = self._inputs(names, task.model_inputs(batch, self.backbone.embed(batch["input_ids"])))
            extra = {}
            if on_prompt is not None:
                for i in chunk:
                    on_prompt(i, lengths[i])
            if on_token is not None or stop_rows is not None:
                expand = int(resolved[names[0]].get("num_return_sequences") or 1)
                if on_token is not None:
                    extra["streamer"] = _RowStreamer(chunk, expand, on_token, task.eos_id)
                if stop_rows is not None:
                    extra["stopping_criteria"] = StoppingCriteriaList([_StopRows(chunk, expand, stop_rows)])
            ids = self.backbone.generate(replace(inputs, full_logits=False), **resolved[names[0]], **extra)
            texts = task.decode_details(ids) if details else task.decode(ids)
            per_row = len(texts) // len(chunk)
            for j, i in enumerate(chunk):
                results[i] = texts[j * per_row : (j + 1) * per_row]
                if details:
                    for sequence in results[i]:
                        sequence["prompt_tokens"] = lengths[i]
        return results

    # ---- ensembles ----------------------------------------------------------------------------

    def ensemble(
        self, names: list[str], examples: list[Example | str], combine: str = "mean", batch_size: int = 64
    ) -> dict:
        """Several classification prompts with the same labels over the same inputs, run as mixed
        batches. Returns `labels`, each member's probabilities (N, C) under `members`, and the
        ensemble's `probabilities` (mean) and `predictions` (argmax of the mean, or majority vote
        with ties going to the higher mean probability)."""
        if combine not in ("mean", "vote"):
            raise ConfigError(f"--combine: must be mean or vote, got {combine!r}")
        if len(names) < 2:
            raise ConfigError(f"an ensemble needs at least two prompts, got {names}")
        if len(set(names)) != len(names):
            raise ConfigError(f"an ensemble lists a prompt twice: {names}")
        for name in names:
            task = self._get(name).task
            if not task.ensembles:
                raise ConfigError(f"prompt {name!r} is a {task.name} prompt; ensembles combine classification prompts")
        labels = self.prompts[names[0]].task.config.labels
        for name in names[1:]:
            other = self.prompts[name].task.config.labels
            if other != labels:
                raise ConfigError(
                    f"prompt {name!r} has labels {list(other)}, {names[0]!r} has {list(labels)}; "
                    "an ensemble's members must share their labels"
                )
        examples = [e for _, e in self._as_examples([(names[0], e) for e in examples])]
        # Every member's row for an input sits in the same batch: K rows per input.
        rows = [(name, e) for e in examples for name in names]
        probs = (
            torch.stack([x.softmax(-1) for x in self.logits(rows, batch_size * len(names))])
            if rows
            else torch.zeros(0, len(labels))
        )
        probs = probs.view(len(examples), len(names), len(labels))
        mean, predictions = combine_members(probs, combine)
        return {
            "labels": labels,
            "members": {n: probs[:, k] for k, n in enumerate(names)},
            "probabilities": mean,
            "predictions": predictions,
            "combine": combine,
        }


def combine_members(probs: torch.Tensor, combine: str) -> tuple[torch.Tensor, list[int]]:
    """probs (N, K, C) of K members -> (mean probabilities (N, C), predicted class per input):
    argmax of the mean, or the majority vote with ties going to the higher mean probability."""
    mean = probs.mean(1)
    if combine == "mean":
        return mean, mean.argmax(-1).tolist()
    predictions = []
    for member_probs, averaged in zip(probs, mean):
        votes = Counter(member_probs.argmax(-1).tolist())
        top = max(votes.values())
        tied = [c for c, v in votes.items() if v == top]
        predictions.append(max(tied, key=lambda c: averaged[c].item()))
    return mean, predictions


def _shared(own: dict[str, dict], groups: dict[str, list[int]], size: int, device) -> dict:
    """One forward's inputs from each prompt's own collated rows (`own[name]`, rows `groups[name]`
    of the forward): the token ids, attention mask, token types and readout positions that every
    task's rows have, in the forward's row order."""
    first = next(iter(own.values()))
    width = first["input_ids"].shape[1]
    merged = {
        "input_ids": torch.zeros(size, width, dtype=torch.long, device=device),
        "attention_mask": torch.zeros(size, width, dtype=torch.long, device=device),
    }
    if any("token_type_ids" in b for b in own.values()):
        merged["token_type_ids"] = torch.zeros(size, width, dtype=torch.long, device=device)
    if any("readout_index" in b for b in own.values()):
        merged["readout_index"] = torch.zeros(size, dtype=torch.long, device=device)
    decoders = [b["decoder_input_ids"] for b in own.values() if "decoder_input_ids" in b]
    if decoders:
        # Encoder-decoder verbalizers: right-padded decoder inputs (a causal decoder never reads the
        # padding before its readout position); rows that read no decoder get the start token.
        merged["decoder_input_ids"] = torch.zeros(
            size, max(d.shape[1] for d in decoders), dtype=torch.long, device=device
        )
        merged["decoder_input_ids"][:, 0] = decoders[0][0, 0]
    for name, local in groups.items():
        idx = torch.tensor(local, device=device)
        for key, value in merged.items():
            if key in own[name]:
                part = own[name][key]
                if key == "decoder_input_ids":
                    value[idx, : part.shape[1]] = part
                else:
                    value[idx] = part
        if decoders and "decoder_input_ids" not in own[name] and "readout_index" in merged:
            merged["readout_index"][idx] = 0  # its readout, if any, is not a decoder position
    return merged


class _RowStreamer(BaseStreamer):
    """transformers' streamer interface over a batch of rows: each step's token of every sequence
    goes to `on_token(row, sequence, token_id, is_end)` (the prompt's ids, put first, are skipped)."""

    def __init__(self, rows: list[int], expand: int, on_token, eos_id: int):
        self.rows, self.expand, self.on_token, self.eos_id = rows, expand, on_token, eos_id

    def put(self, value) -> None:
        if value.dim() > 1:  # the input ids (or the decoder's start), before any new token
            return
        for j, token in enumerate(value.tolist()):
            self.on_token(self.rows[j // self.expand], j % self.expand, token, token == self.eos_id)

    def end(self) -> None:
        pass


class _StopRows(StoppingCriteria):
    """A stopping criterion that ends the sequences of rows `stop_rows(row)` names (a client gone)."""

    def __init__(self, rows: list[int], expand: int, stop_rows):
        self.rows, self.expand, self.stop_rows = rows, expand, stop_rows

    def __call__(self, input_ids, scores, **kwargs):
        return torch.tensor(
            [bool(self.stop_rows(self.rows[j // self.expand])) for j in range(input_ids.shape[0])],
            dtype=torch.bool,
            device=input_ids.device,
        )
