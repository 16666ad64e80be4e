"""What a training run tells its task: each task's columns and options as one dataclass, every field
documented and checked, with no torch to import. A task names its class (`Task.Options`) and
everything else is derived from it: the task's columns and their default names, `prompttune train`'s
flags (the union over the tasks, each flag's help naming the tasks that take it), what
`train_prompt(**options)` accepts for a task, and what a `compare` sweep's options are checked
against. A field added to a task's class appears in all of them by itself. The method's own settings
are its config (`method_options`), the training loop's are `TrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import ClassVar

from .config import ConfigBase, check
from .errors import ConfigError

READOUTS = ("auto", "verbalizer", "head", "similarity")
HEADS = ("auto", "lm", "none")
CALIBRATIONS = ("content_free", "domain")


class Endpoint(str, Enum):
    """What serves a task's prompts: `classify` reads labels or tags from one forward pass per
    input, `generate` decodes text. The server's routes, the command that runs a prompt and the
    checks that a prompt is sent where it can run all read it from the task."""

    CLASSIFY = "classify"
    GENERATE = "generate"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def command(self) -> str:
        """The `prompttune` command that runs the prompts served here."""
        return "predict" if self is Endpoint.CLASSIFY else "generate"


def comma_list(value: str) -> tuple[str, ...]:
    """`a,b,c` from the command line as ("a", "b", "c")."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _column(role: str, default: str | None):
    """A column field: the data column that holds `role`, `default` when not given (None: optional)."""
    return field(default=None, metadata={"column": role, "default": default})


@dataclass(frozen=True)
class TaskOptions(ConfigBase):
    """What every task is told: how much of each input it keeps and how the frozen model is loaded.
    Each task's class adds its columns and its own options."""

    #: The task these options are for (its registered name).
    task: ClassVar[str] = ""

    max_length: int = 256
    """Input tokens kept (generation: of the source)."""
    head: str = field(default="auto", metadata={"choices": HEADS})
    """The frozen model's LM head: auto keeps it where the checkpoint has one, lm insists on one,
    none loads the bare model."""

    def __post_init__(self):
        for f in fields(self):
            if f.metadata.get("column"):
                value = getattr(self, f.name)
                check(value is None or (isinstance(value, str) and value != ""), f.name, "must be a column name")
        check(self.head in HEADS, "head", f"must be one of {HEADS}")
        check(
            isinstance(self.max_length, int) and not isinstance(self.max_length, bool) and self.max_length > 0,
            "max_length",
            "must be a positive whole number",
        )

    @classmethod
    def default_columns(cls) -> dict[str, str | None]:
        """The task's columns by role, with the names read when none is given."""
        return {f.metadata["column"]: f.metadata["default"] for f in fields(cls) if f.metadata.get("column")}

    @classmethod
    def checked(cls, options: dict, where: str = "") -> TaskOptions:
        """These options from a mapping of field names (a run's keywords, a sweep's options); a field
        another task takes is refused naming this task."""
        foreign = sorted(set(options) - {f.name for f in fields(cls)})
        if foreign:
            place = f"{where}: " if where else ""
            columns = [k for k in foreign if k.endswith("_column")]
            if columns:
                flags = ", ".join("--" + k.replace("_", "-") for k in columns)
                raise ConfigError(
                    f"{place}{flags}: not a column of the {cls.task} task, which reads "
                    f"{', '.join(cls.default_columns())}"
                )
            raise ConfigError(
                f"{place}{', '.join('--' + k.replace('_', '-') for k in foreign)}: not an option of the "
                f"{cls.task} task; it takes {sorted(f.name for f in fields(cls))}"
            )
        return cls.from_dict(options, where=where)

    def columns(self) -> dict[str, str | None]:
        """The column names given, by role (None: not given)."""
        return {f.metadata["column"]: getattr(self, f.name) for f in fields(self) if f.metadata.get("column")}


@dataclass(frozen=True)
class _Framing(TaskOptions):
    """The framing around each input that a task shows the model: an instruction, a chat template
    and demonstrations."""

    instruction: str | None = None
    """Text before the prompt (the system message with --chat)."""
    chat: bool = False
    """Wrap the prompt in the model's chat template; the answer is read or generated at the
    assistant's first token."""
    shots: int = 0
    """Show this many training examples before each input (k-shot), drawn with the seed:
    classification balances them over the labels; generation shows sources with their first
    reference (as earlier chat turns with --chat)."""

    def __post_init__(self):
        super().__post_init__()
        check(isinstance(self.chat, bool), "chat", "must be true or false")
        check(
            isinstance(self.shots, int) and not isinstance(self.shots, bool) and self.shots >= 0,
            "shots",
            "must be a whole number, 0 or more",
        )


def _check_labels(labels) -> None:
    check(
        labels is None or (len(labels) > 0 and all(isinstance(x, (str, int)) for x in labels)),
        "labels",
        "must be a non-empty list of label values",
    )


@dataclass(frozen=True)
class ClassificationOptions(_Framing):
    """Sentence and sentence-pair classification: a label per input, read by label words, a trained
    head or similarity to the label words."""

    task: ClassVar[str] = "classification"

    text_column: str | None = _column("text", "text")
    """Column with the input text; default: text."""
    text_pair_column: str | None = _column("text_pair", None)
    """Column with the second text of a pair (optional)."""
    label_column: str | None = _column("label", "label")
    """Column with the label; default: label."""
    labels: tuple[str, ...] | None = field(default=None, metadata={"parse": comma_list, "metavar": "A,B,..."})
    """Label values in class order, comma-separated on the command line (default: the sorted
    training labels)."""
    verbalizer: str | dict | None = field(default=None, metadata={"parse": str, "metavar": "WORDS"})
    """Label words: 0:terrible,1:great|good or JSON {"0": ["terrible"], ...} (a dict in Python)."""
    template: str | None = None
    """The input's wording, e.g. "Review: {text} It was {mask}." ({text}, {text_pair}, {mask})."""
    readout: str = field(default="auto", metadata={"choices": READOUTS})
    """How a label is read: auto | verbalizer (label words at the mask) | head (a trained linear
    head) | similarity (to the label words' embeddings)."""
    calibrate: str | None = field(default=None, metadata={"choices": CALIBRATIONS})
    """With a prompt that trains nothing (instructions, templates, k-shot): divide each label's
    probability by the one the prompt gives inputs that carry no content, measured when the prompt is
    made, to take out the prompt's own lean towards a label. content_free: "N/A" and the empty text
    (Zhao et al., "Calibrate Before Use", ICML 2021); domain: 20 texts of random words from the
    training data, each of its mean length (Fei et al., "Mitigating Label Biases for In-context
    Learning", ACL 2023), which also takes out a lean that in-domain words bring."""

    def __post_init__(self):
        super().__post_init__()
        _check_labels(self.labels)
        check(
            self.verbalizer is None or isinstance(self.verbalizer, (str, dict)),
            "verbalizer",
            "must be a string or a mapping of labels to words",
        )
        check(self.readout in READOUTS, "readout", f"must be one of {READOUTS}")
        check(self.calibrate is None or self.calibrate in CALIBRATIONS, "calibrate", f"must be one of {CALIBRATIONS}")


@dataclass(frozen=True)
class GenerationOptions(_Framing):
    """Text generation from a source: trained on references, scored by BLEU, ROUGE and the rest."""

    task: ClassVar[str] = "generation"

    source_column: str | None = _column("source", "source")
    """Column with the source text (a list is joined); default: source."""
    target_column: str | None = _column("target", "target")
    """Column with the reference(s), default target; a list gives several, FIELD.SUB reads a field of
    a list of objects."""
    max_target_length: int = 128
    """Target tokens kept in training."""
    num_beams: int = 1
    """Beam width when evaluating."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("max_target_length", "num_beams"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                name,
                "must be a positive whole number",
            )


@dataclass(frozen=True)
class TokenClassificationOptions(TaskOptions):
    """A tag per word (IOB2 named entities), read by a trained head over each word's first token."""

    task: ClassVar[str] = "token_classification"

    text_column: str | None = _column("text", "tokens")
    """Column with the tokens (a list of words); default: tokens."""
    label_column: str | None = _column("label", "tags")
    """Column with the tags (a list, one per word); default: tags."""
    labels: tuple[str, ...] | None = field(default=None, metadata={"parse": comma_list, "metavar": "A,B,..."})
    """The tags in class order, comma-separated on the command line (default: those of the training
    file, O first)."""
    readout: str = field(default="auto", metadata={"choices": ("auto", "head")})
    """Tags are read by a trained head: auto | head."""

    def __post_init__(self):
        super().__post_init__()
        _check_labels(self.labels)
        check(
            self.readout in ("auto", "head"),
            "readout",
            f"token classification reads tags with a trained head, not {self.readout}",
        )


#: Every task's options, in the order the command line lists them.
TASK_OPTION_CLASSES: tuple[type[TaskOptions], ...] = (
    ClassificationOptions,
    GenerationOptions,
    TokenClassificationOptions,
)


def options_for(task: str) -> type[TaskOptions]:
    """The options class of a registered task, by its name."""
    for cls in TASK_OPTION_CLASSES:
        if cls.task == task:
            return cls
    raise ConfigError(f"--task: unknown task {task!r}; known: {[cls.task for cls in TASK_OPTION_CLASSES]}")


def option_names() -> set[str]:
    """Every field some task's options have."""
    return {f.name for cls in TASK_OPTION_CLASSES for f in fields(cls)}


#: The column fields of every task's options (text_column, text_pair_column, ...), each once.
COLUMN_OPTIONS: tuple[str, ...] = tuple(
    dict.fromkeys(f.name for cls in TASK_OPTION_CLASSES for f in fields(cls) if f.metadata.get("column"))
)
