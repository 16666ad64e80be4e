"""What a training run is told about its data, its task and how the prompt reads its answer: every
field documented and checked, with no torch to import. `prompttune train` derives these flags from
the fields, `train_prompt(**options)` takes them by name, and a `compare` sweep's `prompt_options`
are checked against them; a field added here appears in all three by itself. The method's own
settings are its config (`method_options`), the training loop's are `TrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .config import ConfigBase, check

READOUTS = ("auto", "verbalizer", "head", "similarity")
HEADS = ("auto", "lm", "none")
CALIBRATIONS = ("content_free", "domain")


def comma_list(value: str) -> tuple[str, ...]:
    """`a,b,c` from the command line as ("a", "b", "c")."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _task(**metadata):
    """Metadata of a field the task reads (its config is made from it; see `Task.options`)."""
    return {"task": True, **metadata}


@dataclass(frozen=True)
class TaskOptions(ConfigBase):
    text_column: str | None = field(default=None, metadata={"column": "text"})
    """Column with the input text (token classification: the tokens); default: text (tokens)."""
    text_pair_column: str | None = field(default=None, metadata={"column": "text_pair"})
    """Column with the second text of a pair (classification)."""
    label_column: str | None = field(default=None, metadata={"column": "label"})
    """Column with the label (token classification: the tags); default: label (tags)."""
    source_column: str | None = field(default=None, metadata={"column": "source"})
    """Generation: column with the source text (a list is joined); default: source."""
    target_column: str | None = field(default=None, metadata={"column": "target"})
    """Generation: column with the reference(s), default target; a list gives several, FIELD.SUB
    reads a field of a list of objects."""
    labels: tuple[str, ...] | None = field(default=None, metadata=_task(parse=comma_list, metavar="A,B,..."))
    """Label values in class order, comma-separated on the command line (default: the sorted
    training labels; token classification: its tags)."""
    verbalizer: str | dict | None = field(default=None, metadata=_task(parse=str, metavar="WORDS"))
    """Label words: 0:terrible,1:great|good or JSON {"0": ["terrible"], ...} (a dict in Python)."""
    template: str | None = field(default=None, metadata=_task())
    """The input's wording, e.g. "Review: {text} It was {mask}." ({text}, {text_pair}, {mask})."""
    readout: str = field(default="auto", metadata={"choices": READOUTS})
    """How a label is read: auto | verbalizer (label words at the mask) | head (a trained linear
    head) | similarity (to the label words' embeddings)."""
    instruction: str | None = field(default=None, metadata=_task())
    """Text before the prompt (the system message with --chat)."""
    chat: bool = field(default=False, metadata=_task())
    """Wrap the prompt in the model's chat template; the label is read at the assistant's first
    token."""
    shots: int = field(default=0, metadata=_task())
    """Show this many training examples before each input (k-shot), drawn with the seed:
    classification balances them over the labels; generation shows sources with their first
    reference (as earlier chat turns with --chat)."""
    calibrate: str | None = field(default=None, metadata=_task(choices=CALIBRATIONS))
    """Classification with a prompt that trains nothing (instructions, templates, k-shot): divide
    each label's probability by the one the prompt gives inputs that carry no content, measured when
    the prompt is made, to take out the prompt's own lean towards a label. content_free: "N/A" and
    the empty text (Zhao et al., "Calibrate Before Use", ICML 2021); domain: 20 texts of random
    words from the training data, each of its mean length (Fei et al., "Mitigating Label Biases for
    In-context Learning", ACL 2023), which also takes out a lean that in-domain words bring."""
    max_length: int = field(default=256, metadata=_task())
    """Input tokens kept (generation: of the source)."""
    max_target_length: int = field(default=128, metadata=_task())
    """Generation: target tokens kept in training."""
    num_beams: int = field(default=1, metadata=_task())
    """Generation: beam width when evaluating."""
    head: str = field(default="auto", metadata={"choices": HEADS})
    """The frozen model's LM head: auto keeps it where the checkpoint has one, lm insists on one,
    none loads the bare model."""

    def __post_init__(self):
        for f in fields(self):
            if f.metadata.get("column"):
                value = getattr(self, f.name)
                check(value is None or (isinstance(value, str) and value != ""), f.name, "must be a column name")
        check(
            self.labels is None or (len(self.labels) > 0 and all(isinstance(x, (str, int)) for x in self.labels)),
            "labels",
            "must be a non-empty list of label values",
        )
        check(
            self.verbalizer is None or isinstance(self.verbalizer, (str, dict)),
            "verbalizer",
            "must be a string or a mapping of labels to words",
        )
        check(self.readout in READOUTS, "readout", f"must be one of {READOUTS}")
        check(self.head in HEADS, "head", f"must be one of {HEADS}")
        check(self.calibrate is None or self.calibrate in CALIBRATIONS, "calibrate", f"must be one of {CALIBRATIONS}")
        check(isinstance(self.shots, int) and self.shots >= 0, "shots", "must be a whole number, 0 or more")
        for name in ("max_length", "max_target_length", "num_beams"):
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, name, "must be a positive whole number")

    def columns(self) -> dict[str, str | None]:
        """Column names by role, as `Task.resolve_columns` takes them."""
        return {f.metadata["column"]: getattr(self, f.name) for f in fields(self) if f.metadata.get("column")}

    def task_options(self) -> dict:
        """The fields a task's config is made from (`Task.new_config`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("task")}


#: Those fields with the value that means "not given" (a task refuses any other value of the ones it
#: does not take).
TASK_OPTIONS = {f.name: f.default for f in fields(TaskOptions) if f.metadata.get("task")}
COLUMN_OPTIONS = tuple(f.name for f in fields(TaskOptions) if f.metadata.get("column"))
