"""Continuous batching for decoder-only models: sequences join a running batch between decoding
steps and leave it as they end.

`PromptSet.generate` decodes a batch from its first token to its last; a request that arrives
meanwhile waits for all of it. A `ContinuousDecoder` instead keeps one batch of sequences and, at
every step, first admits the requests that are waiting: their inputs (each with its own prompt's
virtual tokens and prefix) run through the model in one forward, and the key/value cache that forward
leaves is joined to the running batch's, the shorter of the two padded on the left with masked
columns. Then one step decodes the next token of every sequence in the batch, whatever prompt,
request or decoding options it has. A sequence leaves at its end-of-sequence token, at its
`max_new_tokens`, or when its request is stopped (a client gone); the cache columns no sequence
reads any more are dropped.

Each sequence keeps its own position count (the tokens it attends to), so its positions are the
ones it would have alone, and padding is masked out: a sequence decodes the tokens it would decode
alone, up to floating-point rounding. Sampled sequences draw from their request's own random
generator, so a seeded request draws the same tokens whatever it shares its batch with.

What a step honours: greedy decoding, or sampling with `temperature`, `top_k` and `top_p`;
`num_return_sequences` draws (the prompt's input is run once and its cache repeated); the
end-of-sequence token; `max_new_tokens`. `supports` says whether a request's options are these
(beam search and penalties go to `PromptSet.generate`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
from transformers.cache_utils import DynamicCache

from ..core import kv_prefix
from ..core.backbone import DECODER, Backbone
from ..errors import ConfigError
from ..options import Endpoint
from ..tasks.data import Example
from .mixed import PromptSet

#: Decoding options a step of the continuous batch honours.
OPTIONS = {
    "max_new_tokens",
    "num_beams",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "num_return_sequences",
    "eos_token_id",
    "seed",
    "pad_token_id",
}


def supports(backbone: Backbone, options: dict) -> bool:
    """Whether requests with these options can be decoded in a continuous batch on `backbone`:
    a decoder-only model that takes position ids, and no beam search or penalties."""
    return (
        backbone.kind == DECODER
        and backbone._accepts_position_ids
        and backbone.has_lm_head
        and set(options) <= OPTIONS
        and int(options.get("num_beams") or 1) == 1
    )


@dataclass
class Request:
    """One request: rows of (prompt name, example), decoded with `options` (transformers' names).

    `on_prompt(row, tokens)` is told each row's input length when it is admitted, `on_token(row,
    sequence, token_id, is_end)` every token as it is decoded, and `done(results, error)` once:
    per row a list of sequences, each {"text", "tokens", "finished", "prompt_tokens"} (as
    `PromptSet.generate(details=True)` gives), or the error that failed the request. While `stopped()`
    is true, its sequences stop at the next step."""

    rows: list[tuple[str, Example]]
    options: dict
    done: Callable[[list | None, Exception | None], None]
    on_prompt: Callable[[int, int], None] | None = None
    on_token: Callable[[int, int, int, bool], None] | None = None
    stopped: Callable[[], bool] = lambda: False
    logprobs: int | None = None
    """With a number k, each sequence also gets `logprobs`: per generated token (token_id,
    log-probability, the k most likely (token_id, log-probability)), read from the model's own
    distribution at that step (before temperature and top-p)."""
    results: list = field(default_factory=list)
    open: int = 0  # sequences still decoding


@dataclass
class _Sequence:
    request: Request
    row: int
    index: int  # which of the row's num_return_sequences
    task: object
    generator: torch.Generator | None
    warpers: LogitsProcessorList | None  # None: greedy
    eos: int | None
    limit: int
    prompt_tokens: int
    position: int  # the position of the next token
    tokens: list[int] = field(default_factory=list)
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)
    ended: bool = False  # at its end-of-sequence token
    finished: bool = False  # left the batch (ended, at its limit, or stopped)


class ContinuousDecoder:
    """A running batch over the prompts of a `PromptSet` (decoder-only backbone). `submit` may be
    called from any thread; `step` runs one admission and one decoding step, from one thread at a
    time (the caller holds whatever lock guards the model)."""

    def __init__(
        self,
        prompts: PromptSet,
        max_rows: int = 64,
        on_admit: Callable[[int, int], None] | None = None,
        prepare: Callable[[set[str]], None] | None = None,
        on_step: Callable[[int], None] | None = None,
    ):
        """`on_admit(rows, requests)` is told the size of each admitting forward and `on_step(rows)`
        the sequences of each decoding step (for metrics); `prepare(names)` runs before an admitting
        forward, to load the prompts it names into the set."""
        backbone = prompts.backbone
        if not supports(backbone, {}):
            raise ConfigError(
                f"continuous batching needs a decoder-only model that takes position ids; "
                f"{type(backbone.model).__name__} is not one"
            )
        if max_rows < 1:
            raise ConfigError("continuous batching: max_rows must be at least 1")
        self.prompts, self.backbone, self.max_rows = prompts, backbone, max_rows
        self.on_admit, self.prepare, self.on_step = on_admit, prepare, on_step
        self.waiting: deque[Request] = deque()
        self.sequences: list[_Sequence] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (B, T) over the cache's columns
        self.next_tokens: torch.Tensor | None = None  # (B,) each sequence's last token, fed at the next step
        self.steps = 0
        self.widest = 0  # the most sequences one step has decoded
        self._lock = threading.Lock()

    # ---- requests -----------------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        with self._lock:
            self.waiting.append(request)

    @property
    def busy(self) -> bool:
        return bool(self.sequences or self.waiting)

    def _take_waiting(self) -> list[Request]:
        """Requests to admit now: in order of arrival, while their sequences fit in `max_rows` (the
        first always, into an empty batch)."""
        taken, rows = [], len(self.sequences)
        with self._lock:
            while self.waiting:
                request = self.waiting[0]
                if request.stopped():
                    self.waiting.popleft()
                    request.done(None, ConfigError("the request was stopped before it started"))
                    continue
                need = len(request.rows) * _draws(request.options)
                if rows and rows + need > self.max_rows:
                    break
                taken.append(self.waiting.popleft())
                rows += need
        return taken

    # ---- one step -----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> None:
        """Admit what is waiting, then decode one token of every sequence in the batch."""
        admitted = self._take_waiting()
        if admitted:
            self._admit(admitted)
        self._drop_ended()
        if not self.sequences:
            return
        self.widest = max(self.widest, len(self.sequences))
        batch = len(self.sequences)
        self.mask = torch.cat([self.mask, self.mask.new_ones(batch, 1)], dim=1)
        positions = torch.tensor([[s.position] for s in self.sequences], device=self.backbone.device)
        try:
            output = self.backbone.model(
                input_ids=self.next_tokens.unsqueeze(1),
                attention_mask=self.mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self.backbone._cache_argument: self.cache},
            )
        except Exception as error:
            self.fail_all(error)
            return
        self.steps += 1
        if self.on_step is not None:
            self.on_step(batch)
        for s in self.sequences:
            s.position += 1
        self._choose(self.sequences, output.logits[:, -1])
        self._drop_ended()

    def _admit(self, requests: list[Request]) -> None:
        """Run the new requests' inputs in one forward (each alone if that fails) and join their
        caches to the batch."""
        try:
            self._prefill(requests)
        except Exception as error:
            if len(requests) == 1:
                requests[0].done(None, error)
                return
            for request in requests:  # alone, so that one bad request fails alone
                try:
                    self._prefill([request])
                except Exception as own:
                    request.done(None, own)

    def _prefill(self, requests: list[Request]) -> None:
        """Run the requests' inputs (and prompts) through the model once, and join a sequence per
        input and draw to the running batch, its first token chosen."""
        rows = [(request, i, name, example) for request in requests for i, (name, example) in enumerate(request.rows)]
        resolved, lengths, attended, logits, cache, mask = self._prompt_forward(rows)
        # Sampled rows with several draws: the row's cache is repeated once per draw.
        draws = [_draws(o) for o in resolved]
        repeat = torch.tensor(draws, device=logits.device)
        # (each layer where it lives: a model spread over devices keeps its cache layers on theirs)
        layers = [
            (
                layer.keys.repeat_interleave(repeat.to(layer.keys.device), 0),
                layer.values.repeat_interleave(repeat.to(layer.values.device), 0),
            )
            for layer in cache.layers
        ]
        mask = mask.repeat_interleave(repeat, 0)
        logits = logits.repeat_interleave(repeat, 0)
        for request in requests:
            request.results = [[] for _ in request.rows]
            request.open = 0
        new = self._sequences(rows, resolved, draws, lengths, attended, logits.device)
        for (request, i, _, _), length in zip(rows, lengths):
            if request.on_prompt is not None:
                request.on_prompt(i, length)
        if self.on_admit is not None:
            self.on_admit(len(rows), len(requests))
        self._join(new, layers, mask)
        self._choose(new, logits)

    def _prompt_forward(self, rows: list[tuple]):
        """(each row's decoding options, its input length, the positions it attends to, the last
        position's logits, the cache and the attention mask) after one forward over the rows' prompts and inputs; a row whose
        input and new tokens would exceed the model's positions is refused first."""
        prompts, backbone = self.prompts, self.backbone
        names = [name for _, _, name, _ in rows]
        if self.prepare is not None:
            self.prepare(set(names))
        prompts._check_endpoint(names, Endpoint.GENERATE)
        resolved = [prompts[name].task.generation_options(**request.options) for request, _, name, _ in rows]
        encoded = [prompts[name].task.encode(example) for _, _, name, example in rows]
        lengths = [len(f["input_ids"]) for f in encoded]
        task = prompts[names[0]].task
        batch = {
            k: v.to(backbone.device) for k, v in task.collate(encoded, with_labels=False, for_generation=True).items()
        }
        inputs = prompts._inputs(names, task.model_inputs(batch, backbone.embed(batch["input_ids"])))
        embeds, mask = inputs.inputs_embeds, inputs.attention_mask
        cache = DynamicCache()
        if inputs.prefix is not None:
            cache = kv_prefix.filled_cache(inputs.prefix.kv[kv_prefix.SELF], len(rows))
            mask = torch.cat([inputs.prefix.mask.to(mask.dtype), mask], dim=1)
        limit, attended = backbone.max_positions, mask.sum(1).tolist()
        for (request, i, _, _), options, used in zip(rows, resolved, attended):
            if limit and used + options["max_new_tokens"] > limit:
                raise ConfigError(
                    f"{request.rows[i][1].origin or f'input {i}'}: {used} input and prompt positions + "
                    f"{options['max_new_tokens']} new tokens exceed the model's {limit} positions; lower "
                    "max_new_tokens or the input length"
                )
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, mask.shape[1] - embeds.shape[1] :]
        output = backbone.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{backbone._cache_argument: cache},
        )
        return resolved, lengths, attended, output.logits[:, -1], cache, mask

    def _sequences(self, rows, resolved, draws, lengths, attended, device) -> list[_Sequence]:
        """A sequence per row and draw, each request's draws from its own seeded generator."""
        new, generators = [], {}
        for (request, i, name, _), options, draw, length, used in zip(rows, resolved, draws, lengths, attended):
            if id(request) not in generators:
                seed = options.get("seed")
                generators[id(request)] = None if seed is None else torch.Generator(device).manual_seed(seed)
            for index in range(draw):
                task = self.prompts[name].task
                warpers, eos = _warpers(options), options.get("eos_token_id")
                generator, limit = generators[id(request)], options["max_new_tokens"]
                new.append(_Sequence(request, i, index, task, generator, warpers, eos, limit, length, position=used))
                request.results[i].append(None)
                request.open += 1
        return new

    def _join(self, new: list[_Sequence], layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        """The new sequences' cache joined to the running batch's, the shorter padded on the left."""
        tokens = torch.zeros(len(new), dtype=torch.long, device=mask.device)
        if not self.sequences:
            self.sequences, self.mask, self.next_tokens = new, mask, tokens
            self.cache = _cache(layers)
            return
        old = [(layer.keys, layer.values) for layer in self.cache.layers]
        width = max(self.mask.shape[1], mask.shape[1])
        joined = [
            (torch.cat([_pad(ko, width), _pad(kn, width)]), torch.cat([_pad(vo, width), _pad(vn, width)]))
            for (ko, vo), (kn, vn) in zip(old, layers)
        ]
        self.mask = torch.cat([_pad_mask(self.mask, width), _pad_mask(mask.to(self.mask.dtype), width)])
        self.cache = _cache(joined)
        self.sequences = self.sequences + new
        self.next_tokens = torch.cat([self.next_tokens, tokens])

    def _choose(self, sequences: list[_Sequence], logits: torch.Tensor) -> None:
        """Each sequence's next token from its logits (B, V): greedy or drawn, then told and checked
        for its end. `sequences` are the batch's last rows (all of them, or the ones just admitted)."""
        start = self.next_tokens.shape[0] - len(sequences)
        logits = logits.float()
        chosen = []
        for j, s in enumerate(sequences):
            row = logits[j : j + 1]
            scores = row[0].log_softmax(-1) if s.request.logprobs is not None else None
            if s.warpers is None:
                token = int(row.argmax(-1))
            else:
                ids = torch.tensor([s.tokens], dtype=torch.long, device=row.device).view(1, -1)
                probs = s.warpers(ids, row).softmax(-1)
                token = int(torch.multinomial(probs, 1, generator=s.generator))
            chosen.append(token)
            end = s.eos is not None and token == s.eos
            if end:
                s.ended = True
            else:
                s.tokens.append(token)
                if scores is not None:
                    top = scores.topk(s.request.logprobs) if s.request.logprobs else None
                    s.logprobs.append(
                        (
                            token,
                            float(scores[token]),
                            [] if top is None else list(zip(top.indices.tolist(), top.values.tolist())),
                        )
                    )
            if s.request.on_token is not None:
                s.request.on_token(s.row, s.index, token, end)
            if end or len(s.tokens) >= s.limit:
                s.finished = True
        self.next_tokens[start:] = torch.tensor(chosen, dtype=torch.long, device=self.next_tokens.device)

    def _drop_ended(self) -> None:
        """Sequences that ended (or whose request stopped) leave the batch; their requests finish
        when their last sequence does; cache columns no sequence reads any more are dropped."""
        if not self.sequences:
            return
        keep = []
        for j, s in enumerate(self.sequences):
            if not s.finished and s.request.stopped():
                s.finished = True
            if s.finished:
                self._finish(s)
            else:
                keep.append(j)
        if len(keep) == len(self.sequences):
            return
        if not keep:
            self.sequences, self.cache, self.mask, self.next_tokens = [], None, None, None
            return
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        first = int(mask.any(0).nonzero()[0])  # leading columns no remaining sequence reads
        self.mask = mask[:, first:]
        self.cache = _cache(
            [
                (
                    layer.keys[index.to(layer.keys.device), :, first:],
                    layer.values[index.to(layer.values.device), :, first:],
                )
                for layer in self.cache.layers
            ]
        )
        self.next_tokens = self.next_tokens[index]
        self.sequences = [self.sequences[j] for j in keep]

    def _finish(self, s: _Sequence) -> None:
        request = s.request
        text = s.task.decode(torch.tensor([s.tokens], dtype=torch.long))[0]
        result = {"text": text, "tokens": len(s.tokens), "finished": s.ended, "prompt_tokens": s.prompt_tokens}
        if request.logprobs is not None:
            result["token_ids"], result["logprobs"] = list(s.tokens), s.logprobs
        request.results[s.row][s.index] = result
        request.open -= 1
        if request.open == 0:
            request.done(request.results, None)

    def fail_all(self, error: Exception, waiting: bool = False) -> None:
        """Every running request (and with `waiting` every waiting one) fails with `error`; the
        batch is emptied."""
        requests = {id(s.request): s.request for s in self.sequences}
        self.sequences, self.cache, self.mask, self.next_tokens = [], None, None, None
        if waiting:
            with self._lock:
                requests.update((id(r), r) for r in self.waiting)
                self.waiting.clear()
        for request in requests.values():
            request.done(None, error)


def _draws(options: dict) -> int:
    return int(options.get("num_return_sequences") or 1) if options.get("do_sample") else 1


def _warpers(options: dict) -> LogitsProcessorList | None:
    """transformers' own warpers for a sampled sequence (temperature, then top-k, then top-p, the
    order `generate` applies them), or None for greedy decoding."""
    if not options.get("do_sample"):
        return None
    warpers = LogitsProcessorList()
    temperature = options.get("temperature")
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if options.get("top_k"):
        warpers.append(TopKLogitsWarper(int(options["top_k"])))
    if options.get("top_p") is not None and options["top_p"] < 1.0:
        warpers.append(TopPLogitsWarper(float(options["top_p"])))
    return warpers


def _cache(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys.contiguous(), values.contiguous(), index)
    return cache


def _pad(states: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, T, d) padded on the left to `width` columns with zeros (masked out)."""
    missing = width - states.shape[2]
    if not missing:
        return states
    return torch.cat([states.new_zeros(*states.shape[:2], missing, states.shape[3]), states], dim=2)


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return mask if not missing else torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1)
