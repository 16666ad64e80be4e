"""The contract every task follows.

A task turns data into a frozen model's inputs and the model's outputs into losses, predictions and
metrics. It registers itself by name, as a method does, and everything outside `tasks/` reaches it
through this class: the training loop, `compare`, the artifact code, mixed batches and the server
never compare a task's name or a metric's name.

What a task answers:

- its data: its columns and options (`Options`, a dataclass in `prompttune.options` from which
  `columns` and every command's and request's flags are derived), `read_examples` from a file,
  `new_config` from the options of a run and its training data, and `sample` for a sweep's
  training-set sizes;
- its scores: `metrics` (the scalar ones, in report order), `default_metric` (early stopping, the
  sweep's plots) and `higher_is_better`; `scored_outputs` (one pass of the model: what each
  example's score needs) and `score` (metrics of any subset of them), which `evaluate` and
  `evaluate_groups` join;
- its tensors: `encode` and `training_features` (examples to features), `collate` (features to a
  batch), `model_inputs`, `logits`, `loss` and `loss_units` (a batch through the model);
- its outputs: `predict` for `prompttune predict`, `results` for a mixed batch's rows, which HTTP
  endpoint serves it (`endpoint`, an `Endpoint`: classify reads one forward, generate decodes) and, for tasks
  that generate, `generation_options`, `generate_texts`, `decode` and `decode_details`;
- what methods may ask of it, and nothing more: `init_words` (the words whose embeddings start a
  prompt), `template_with_prompt` (a searched prompt written into its template) and `trigger_slot`.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from torch import nn

from ..config import ConfigBase
from ..core.backbone import Backbone
from ..errors import ConfigError
from ..options import Endpoint, TaskOptions

TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} registered twice")
    if cls.Options.task != cls.name:
        raise ValueError(f"task {cls.name!r} declares the options of {cls.Options.task!r}")
    TASKS[cls.name] = cls
    return cls


def task_class(name_or_config: str | ConfigBase) -> type[Task]:
    """The task registered under a name, or the task a config belongs to."""
    if isinstance(name_or_config, str):
        if name_or_config not in TASKS:
            raise ConfigError(f"--task: unknown task {name_or_config!r}; known: {sorted(TASKS)}")
        return TASKS[name_or_config]
    for cls in TASKS.values():
        if isinstance(name_or_config, cls.Config):
            return cls
    raise TypeError(f"no task takes a {type(name_or_config).__name__}")


class Task(nn.Module):
    name: ClassVar[str]
    Config: ClassVar[type[ConfigBase]]
    #: The task's columns and options: what a run may tell it (`train_prompt`'s keywords, `train`'s
    #: flags, a sweep's options are checked against it).
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    #: The data columns the task reads, by role, with their default names (None: optional, absent
    #: unless given), from `Options`. The command line's --text-column, --label-column... name them.
    columns: ClassVar[dict[str, str | None]] = {}
    #: The scalar metrics, in the order reports show them.
    metrics: ClassVar[tuple[str, ...]] = ()
    default_metric: ClassVar[str]
    #: What serves the task's prompts: `Endpoint.CLASSIFY` (one forward per row, results from
    #: `results`) or `Endpoint.GENERATE` (decoding).
    endpoint: ClassVar[Endpoint] = Endpoint.CLASSIFY
    #: The shape of one result from `results` (a TypedDict; the server's schema is built from it).
    result_type: ClassVar[type] = dict
    #: Whether prompts of this task can be combined into an ensemble by their label probabilities.
    ensembles: ClassVar[bool] = False
    #: The prompt's task settings (an instance of `Config`).
    config: ConfigBase
    #: Tasks served by "generate": the end-of-sequence token that ends a generated sequence.
    eos_id: int | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "Options" in cls.__dict__:
            cls.columns = cls.Options.default_columns()

    # ---- scores -------------------------------------------------------------------------------

    @classmethod
    def higher_is_better(cls, metric: str) -> bool:
        """Whether a larger value of `metric` is better (early stopping, a sweep's best cell)."""
        return True

    @classmethod
    def check_metric(cls, metric: str | None) -> str:
        """`metric`, or the task's default where None, checked to be one of its metrics."""
        metric = metric or cls.default_metric
        if metric not in cls.metrics:
            raise ConfigError(f"metric: {metric!r} is not a {cls.name} metric; use one of {list(cls.metrics)}")
        return metric

    # ---- data ---------------------------------------------------------------------------------

    @classmethod
    def resolve_columns(cls, given: dict[str, str | None], saved: dict | None = None) -> dict[str, str | None]:
        """Column names by role: given ones first, then those the prompt was trained with, then
        the task's defaults. A column given for a role this task does not read is refused."""
        unknown = sorted(role for role, value in given.items() if value is not None and role not in cls.columns)
        if unknown:
            flags = ", ".join(f"--{role.replace('_', '-')}-column" for role in unknown)
            raise ConfigError(f"{flags}: not a column of the {cls.name} task, which reads {', '.join(cls.columns)}")
        saved = saved or {}
        return {
            role: given.get(role) if given.get(role) is not None else saved.get(role, default)
            for role, default in cls.columns.items()
        }

    @classmethod
    def read_examples(cls, path: str, columns: dict[str, str | None], labelled: bool = True) -> list:
        """Every row of a data file as an example, checked; `labelled=False` for prediction (a
        label there, if any, is ignored)."""
        raise NotImplementedError

    @classmethod
    def examples_from_texts(cls, texts: list[str]) -> list:
        """Examples for raw inputs given on the command line or to the server."""
        from .data import texts_as_examples

        return texts_as_examples(texts)

    @classmethod
    def example_from_input(cls, text: str, text_pair: str | None = None, origin: str = ""):
        """An example for one input sent to the server."""
        from .data import Example

        return Example(text=text, text_pair=text_pair, origin=origin)

    @classmethod
    def check_options(cls, options: TaskOptions | dict[str, Any]) -> TaskOptions:
        """The task's `Options` from a mapping of their fields (or as given); a field another task
        takes, or none does, is refused naming this task."""
        return options if isinstance(options, cls.Options) else cls.Options.checked(dict(options))

    @classmethod
    def new_config(
        cls,
        options: TaskOptions | dict[str, Any],
        train_examples: list,
        eval_examples: list | None,
        seed: int,
        train_name: str = "the training data",
        columns: dict | None = None,
    ) -> ConfigBase:
        """The config of a new prompt from a run's task options (its `Options`, or a mapping of their
        fields) and its data."""
        raise NotImplementedError

    @classmethod
    def sample(cls, records: list[dict], size: int, rng: random.Random, columns: dict[str, str | None]) -> list[dict]:
        """`size` training rows for a sweep's training-set size (in all, unless the task says per
        what)."""
        return rng.sample(records, min(size, len(records)))

    @classmethod
    def sample_eval(
        cls, records: list[dict], size: int, rng: random.Random, columns: dict[str, str | None]
    ) -> list[dict]:
        """A fixed subset of `size` evaluation rows."""
        return rng.sample(records, min(size, len(records)))

    @classmethod
    def sweep_options(cls, path: str, columns: dict[str, str | None]) -> dict[str, Any]:
        """Task options every cell of a sweep over the training file `path` shares (the label set
        of the whole file, where a small subset could miss a label)."""
        return {}

    @classmethod
    def read_records(cls, path: str) -> list[dict]:
        """A data file's rows as dicts (what a sweep draws its subsets from, written out as JSONL)."""
        from .data import read_rows

        return [record for _, record in read_rows(path)[1]]

    # ---- a new prompt -------------------------------------------------------------------------

    @staticmethod
    def configure(config, method, backbone: Backbone, readout: str = "auto", prompt_slots: int = 0):
        """A new prompt's config, once the method and the backbone are known."""
        if prompt_slots:
            raise ConfigError(f"--method {method.name}: searched prompts are made for classification")
        return config

    def initialize(self, backbone: Backbone) -> None:
        """Compute what a new prompt's task needs from the backbone."""

    def measure(self, model, examples: list | None = None, seed: int | None = None) -> None:
        """Compute what a new prompt's task needs from the whole prompt (`model`), once made, and
        the training `examples` where given."""

    def fit_positions(self, available: int, taken: int, limit: int) -> str | None:
        """Cut inputs to the `available` positions the model has left after the prompt; a problem
        to report where not even a short input fits."""
        return None

    def state_to_save(self) -> dict:
        """The task's tensors an artifact stores (a trained head, label prototypes)."""
        return {k: v.detach() for k, v in self.state_dict().items()}

    # ---- data -> tensors ----------------------------------------------------------------------

    def encode(self, example) -> dict:
        """One example as a feature: its token ids and what the task reads back (for a generation
        task, the source alone: what is generated from)."""
        raise NotImplementedError

    def training_features(self, examples: list) -> list[dict]:
        """The features one pass of training reads (a generation task: one per reference)."""
        return [self.encode(e) for e in examples]

    def collate(self, features: list[dict], with_labels: bool = True, for_generation: bool = False) -> dict:
        """Features padded into a batch of tensors (left-padded where they are generated from)."""
        raise NotImplementedError

    # ---- model inputs and outputs -------------------------------------------------------------

    def model_inputs(self, batch: dict, embeds):
        """The `ModelInputs` of a batch whose input embeddings (the prompt's included) are `embeds`."""
        raise NotImplementedError

    def logits(self, output, inputs, batch: dict):
        """What the task scores from the backbone's output: label scores (B, C), per-word tag scores
        or per-position vocabulary logits."""
        raise NotImplementedError

    def loss(self, logits, batch: dict):
        """The training loss of a batch from its `logits` (a mean over `loss_units`)."""
        raise NotImplementedError

    def loss_units(self, batch: dict) -> int:
        """How many things `loss` averages over in a batch (rows, words, target tokens), so that
        accumulated and sharded batches are weighted as one."""
        raise NotImplementedError

    # ---- what methods may ask -----------------------------------------------------------------

    def init_words(self) -> dict[str, tuple[str, ...]]:
        """Words whose embeddings may start a prompt (the label words), by label; empty where the
        task has none."""
        return {}

    def trigger_slot(self) -> int | None:
        """The token id standing in a searched prompt's slots before they are filled (None: the
        task takes no searched prompt)."""
        return None

    def template_with_prompt(self, text: str) -> Task:
        """The same task with `text` written where a searched prompt's slots were (a hard prompt)."""
        raise ConfigError(f"a searched prompt cannot be written into a {self.name} task")

    def describe(self) -> dict:
        """What `prompttune inspect` reports of the task (its template, where it has one)."""
        return {}

    def outside_tensors(self) -> list[str]:
        """What this task's prompts hold besides their prompt tensors (the wording around the input,
        label words, a separator), each as a sentence: what an export to a format that holds the
        tensors only (PEFT's) leaves out. A trained head is not listed: it is a tensor, and such an
        export refuses it."""
        return []

    @staticmethod
    def framing_outside_tensors(config, what: str, chat_reads: str) -> list[str]:
        """`outside_tensors`'s sentences for the framing around each `what` (input, source): an
        instruction, a chat template and demonstrations; `chat_reads` says where the answer is read."""
        out = []
        if getattr(config, "instruction", None):
            out.append(f"the instruction {config.instruction!r} before the {what}")
        if getattr(config, "chat", False):
            out.append(f"the chat template around the {what} ({chat_reads})")
        if getattr(config, "demonstrations", ()):
            out.append(f"{len(config.demonstrations)} demonstrations shown before each {what}")
        return out

    # ---- scores -------------------------------------------------------------------------------

    def scored_outputs(self, model, examples: list, batch_size: int = 64, accelerator=None) -> list:
        """One pass of `model` over `examples`: one entry per example holding what `score` needs
        (its prediction and gold answer), in the examples' order (with an accelerator, every
        process's entries, in the order they were gathered)."""
        raise NotImplementedError

    def score(self, outputs: list, examples: list) -> dict:
        """The metrics of `outputs` (entries of `scored_outputs`, any subset) for these examples."""
        raise NotImplementedError

    def evaluate(self, model, examples: list, batch_size: int = 64, accelerator=None) -> dict:
        """The metrics of `model` on `examples` (one pass)."""
        return self.score(self.scored_outputs(model, examples, batch_size, accelerator), examples)

    def evaluate_groups(self, model, examples: list, groups: list[str], batch_size: int = 64) -> tuple[dict, dict]:
        """The metrics over all examples and for each group value (`groups[i]` is example i's),
        from one pass of the model: (overall, {value: (metrics, count)})."""
        outputs = self.scored_outputs(model, examples, batch_size)
        per_group = {}
        for value in sorted(set(groups), key=str):
            chosen = [i for i, g in enumerate(groups) if g == value]
            per_group[value] = (self.score([outputs[i] for i in chosen], [examples[i] for i in chosen]), len(chosen))
        return self.score(outputs, examples), per_group

    # ---- outputs ------------------------------------------------------------------------------

    def results(self, logits, batch: dict, examples: list) -> list[dict]:
        """One result per row of a mixed batch (tasks served by "classify")."""
        raise NotImplementedError

    def predict(self, model, examples: list, batch_size: int = 64) -> list[dict]:
        """What `prompttune predict` prints, one dict per example."""
        raise ConfigError(f"a {self.name} prompt does not predict; use `prompttune {self.endpoint.command}` for it")

    @classmethod
    def predicted_labels(cls, result: dict) -> list[str]:
        """The labels a result predicts, counted by the server's metrics."""
        return []

    # ---- generation (tasks served by "generate") ---------------------------------------------

    def _does_not_generate(self):
        return ConfigError(
            f"a {self.name} prompt does not generate text; use `prompttune {self.endpoint.command}` for it"
        )

    def generation_options(self, **options) -> dict:
        """transformers' decoding options for this prompt: `options` checked, the prompt's own
        defaults (beams, length) filled in."""
        raise self._does_not_generate()

    def generate_texts(self, model, examples: list, batch_size: int = 32, **options) -> list[str]:
        """Generated text for each example's source under `model`, in order."""
        raise self._does_not_generate()

    def decode(self, ids) -> list[str]:
        """Generated token ids (B, T) as texts."""
        raise self._does_not_generate()

    def decode_details(self, ids) -> list[dict]:
        """Per generated sequence: its text, how many tokens it generated and whether it reached
        the end-of-sequence token."""
        raise self._does_not_generate()
