"""The model side of the server: its limits, and registry prompts run in mixed batches on one
backbone."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from ..artifacts.artifact import check_base_model
from ..artifacts.registry import Registry, RegistryError
from ..core.backbone import Backbone
from ..errors import ArtifactError, PromptTuneError
from ..inference import continuous
from ..inference.mixed import PromptSet
from ..options import Endpoint
from ..storage import StorageError
from ..tasks import task_class


class PromptService:
    """Registry versions loaded on demand onto one backbone and run in mixed batches. `run` is
    called from one worker thread at a time (the batcher's)."""

    def __init__(
        self,
        backbone: Backbone,
        registry: Registry,
        max_loaded: int = 256,
        max_tokens: int | None = None,
        max_rows: int = 64,
    ):
        self.backbone = backbone
        self.max_tokens = max_tokens
        self.registry = registry
        self.prompts = PromptSet(backbone)
        self.max_loaded = max_loaded
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._fingerprint = backbone.fingerprint()
        self._lock = threading.Lock()
        # Decoder-only models decode OpenAI requests in a continuous batch: a request joins the
        # sequences already decoding at their next step.
        self.decoder = None
        if continuous.supports(backbone, {}):
            self.decoder = continuous.ContinuousDecoder(self.prompts, max_rows, prepare=self._ensure_loaded)

    def continuous(self, options: dict) -> bool:
        """Whether a generation request with these options joins the continuous batch."""
        return self.decoder is not None and continuous.supports(self.backbone, options)

    def resolve(self, spec: str, endpoint: Endpoint) -> tuple[str, dict]:
        """(NAME@VERSION, its registry record) for `spec`, checked to be a prompt of a task that
        `endpoint` serves, made for this model, and its files checked out and verified unless it is
        loaded already."""
        record = self.registry.show(spec)
        key = f"{record['name']}@{record['version']}"
        served_by = task_class(record["task"]).endpoint
        if served_by != endpoint:
            raise WrongTask(f"{key} is a {record['task']} prompt; use /v1/{served_by}")
        try:
            check_base_model({"base_model": record["base_model"]}, self.backbone, key, actual=self._fingerprint)
        except ArtifactError as error:
            raise WrongModel(str(error)) from None
        if key not in self.prompts:
            self.registry.checkout(key)
        return key, record

    def _ensure_loaded(self, keys: set[str]) -> None:
        for key in keys:
            if key in self.prompts:
                self._recent.move_to_end(key)
                continue
            try:
                self.prompts.add(key, self.registry.checkout(key))
            except (ArtifactError, RegistryError, StorageError) as error:
                raise CannotLoad(key, error) from None
            self._recent[key] = None
        while len(self._recent) > max(self.max_loaded, len(keys)):
            old, _ = self._recent.popitem(last=False)
            self.prompts.remove(old)

    def run(self, key: tuple, items: list) -> list:
        with self._lock:
            self._ensure_loaded({item[0] for item in items})
            if key[0] is Endpoint.CLASSIFY:
                return self.prompts.classify(items, batch_size=len(items), max_tokens=self.max_tokens)
            options = dict(key[1])
            seed = options.pop("seed", None)
            if seed is not None:  # the requests joined in this batch asked for the same seed
                torch.manual_seed(seed)
            # An item may carry a stream: its tokens as they are decoded, and a flag that stops it.
            rows = [(name, example) for name, example, *_ in items]
            links = [rest[0] if rest else None for _, _, *rest in items]  # (stream, the row's place in its request)
            streaming = {}
            if any(links):
                streaming = {
                    "on_token": lambda i, seq, tok, end: links[i] and links[i][0].token(links[i][1], seq, tok, end),
                    "on_prompt": lambda i, tokens: links[i] and links[i][0].prompt(links[i][1], tokens),
                    "stop_rows": lambda i: links[i] is not None and links[i][0].stopped,
                }
            return self.prompts.generate(
                rows,
                batch_size=len(rows),
                max_tokens=self.max_tokens,
                details=key[0] == "openai",
                **streaming,
                **options,
            )

    @property
    def loaded(self) -> int:
        return len(self.prompts)


class WrongTask(PromptTuneError):
    pass


class WrongModel(PromptTuneError):
    pass


class CannotLoad(PromptTuneError):
    """A registry version whose files cannot be loaded: the server's fault, not the client's."""

    def __init__(self, key: str, error: Exception):
        super().__init__(f"{key}: {error}")
        self.key = key


# ---- the app --------------------------------------------------------------------------------------
