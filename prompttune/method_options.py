"""Every method's settings: one frozen dataclass per method (`PromptMethod.Config`), each field
documented and checked, with no torch to import. `prompttune train`'s method flags are derived from
them (the union over the methods, each flag's help naming the methods that take it), as are
`train_prompt(method_options=...)`'s checks and a sweep's `method_options`; a field added to a
method's config appears on the command line by itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .config import ConfigBase, check, check_optional_count

#: How a virtual-token prompt (soft prompt, P-tuning's encoder inputs) may start.
SOFT_PROMPT_INITS = ("random", "sample_vocab", "text", "class_labels")
#: How a key/value prefix (prefix tuning, deep prompt tuning) may start.
PREFIX_INITS = ("random", "text", "sample_vocab")
#: P-tuning's prompt encoders.
PROMPT_ENCODERS = ("lstm", "mlp")


def check_prompt_config(config, inits: tuple[str, ...]) -> None:
    """The checks every virtual-token or prefix config shares: its length, init and init text."""
    check(
        isinstance(config.num_virtual_tokens, int) and config.num_virtual_tokens > 0,
        "num_virtual_tokens",
        f"must be a positive integer, got {config.num_virtual_tokens!r}",
    )
    check(config.init in inits, "init", f"must be one of {inits}, got {config.init!r}")
    check(config.init != "text" or bool(config.init_text), "init_text", "init=text needs a non-empty init_text")


@dataclass(frozen=True)
class SoftPromptConfig(ConfigBase):
    method: ClassVar[str] = "soft_prompt"

    num_virtual_tokens: int = 20
    """How many virtual tokens; Lester et al. find little gain past 20."""
    init: str = "class_labels"
    """random | sample_vocab (rows of the embedding matrix) | text (embeddings of `init_text`,
    repeated or truncated to N) | class_labels (label words' embeddings, multi-token words averaged,
    the remaining tokens sampled from the vocabulary)."""
    init_text: str | None = None
    """The text for init=text."""
    common_tokens: int | None = None
    """init=sample_vocab (and class_labels' remaining rows): draw from the first N token ids only.
    SentencePiece vocabularies and BPE merges are ordered from the most common token down, so these
    are the N most common tokens, as Lester et al. sample from T5's 5,000 most common (Section 3.2);
    None: the whole vocabulary, as PEFT's SAMPLE_VOCAB does."""

    def __post_init__(self):
        check_prompt_config(self, SOFT_PROMPT_INITS)
        check_optional_count(self.common_tokens, "common_tokens")


@dataclass(frozen=True)
class PrefixConfig(ConfigBase):
    method: ClassVar[str] = "prefix"

    num_virtual_tokens: int = 10
    """Prefix length P (Li & Liang: 10 for table-to-text, 200 for summarisation)."""
    init: str = "random"
    """random | text (activations of `init_text`) | sample_vocab (activations of sampled tokens)."""
    init_text: str | None = None
    """The text for init=text, repeated or cut to P tokens (e.g. "table-to-text:" or "summarize")."""
    hidden_size: int = 512
    """Width of the reparameterisation MLP's hidden layer (Li & Liang: 512 for table-to-text)."""
    embedding_size: int | None = None
    """Width of the P embeddings the MLP reads; None: the model's hidden size (Li & Liang's GPT-2).
    PEFT's prefix tuning makes it the keys' and values' width, which grouped-query attention makes
    smaller (SmolLM2-135M: 3 key/value heads of 64, so 192 against 576)."""

    def __post_init__(self):
        check_prompt_config(self, PREFIX_INITS)
        check(isinstance(self.hidden_size, int) and self.hidden_size > 0, "hidden_size", "must be a positive integer")
        check_optional_count(self.embedding_size, "embedding_size")


@dataclass(frozen=True)
class DeepPromptConfig(ConfigBase):
    method: ClassVar[str] = "deep_prompt"

    num_virtual_tokens: int = 20
    """Prefix length per layer (P-tuning v2 uses 4-64 for classification; 20 is its common choice)."""
    init: str = "sample_vocab"
    """sample_vocab (the model's keys/values of sampled vocabulary tokens) | random (normal, scaled
    to the model's real keys/values) | text (activations of `init_text`)."""
    init_text: str | None = None
    """The text for init=text."""

    def __post_init__(self):
        check_prompt_config(self, PREFIX_INITS)


@dataclass(frozen=True)
class PTuningConfig(ConfigBase):
    method: ClassVar[str] = "p_tuning"

    num_virtual_tokens: int = 20
    """How many virtual tokens."""
    encoder: str = "lstm"
    """lstm (bidirectional LSTM, then an MLP; the paper) | mlp."""
    hidden_size: int | None = None
    """Hidden width of the prompt encoder; None: the model's hidden size."""
    init: str = "sample_vocab"
    """Initial encoder inputs: random | sample_vocab | text | class_labels (as for soft_prompt)."""
    init_text: str | None = None
    """The text for init=text."""

    def __post_init__(self):
        check_prompt_config(self, SOFT_PROMPT_INITS)
        check(self.encoder in PROMPT_ENCODERS, "encoder", f"must be one of {PROMPT_ENCODERS}, got {self.encoder!r}")
        check(
            self.hidden_size is None or (isinstance(self.hidden_size, int) and self.hidden_size > 0),
            "hidden_size",
            "must be a positive integer",
        )


@dataclass(frozen=True)
class AutoPromptConfig(ConfigBase):
    method: ClassVar[str] = "autoprompt"

    num_tokens: int = 5
    """Trigger tokens (AutoPrompt used 3-10 for sentiment)."""
    num_candidates: int = 10
    """Candidates re-scored per round (the top-k of the gradient estimate)."""
    init_text: str | None = None
    """Starting trigger text (that many plain tokens); None repeats one plain token."""
    search_fraction: float = 0.75
    """With a trained head (a model without an LM head): the share of the training steps that
    search; the rest train only the head on the prompt found, as AutoPrompt fits its label scorer
    for a fixed trigger. With a verbalizer every step searches."""

    def __post_init__(self):
        check(isinstance(self.num_tokens, int) and self.num_tokens > 0, "num_tokens", "must be a positive integer")
        check(
            isinstance(self.num_candidates, int) and self.num_candidates > 0,
            "num_candidates",
            "must be a positive integer",
        )
        check(0 < self.search_fraction <= 1, "search_fraction", "must be in (0, 1]")


@dataclass(frozen=True)
class PezConfig(ConfigBase):
    method: ClassVar[str] = "pez"

    num_tokens: int = 5
    """Prompt tokens."""
    init_text: str | None = None
    """Starting text (that many plain tokens); None starts from random vocabulary tokens."""

    def __post_init__(self):
        check(isinstance(self.num_tokens, int) and self.num_tokens > 0, "num_tokens", "must be a positive integer")


@dataclass(frozen=True)
class HardPromptConfig(ConfigBase):
    """A hard prompt has no choices beyond its template and verbalizer, which the task holds."""

    method: ClassVar[str] = "hard_prompt"


@dataclass(frozen=True)
class LinearProbeConfig(ConfigBase):
    """The probe is the task's classification head over frozen pooled features; nothing to choose."""

    method: ClassVar[str] = "linear_probe"


@dataclass(frozen=True)
class FullFinetuneConfig(ConfigBase):
    """Every backbone weight trains; the artifact holds the whole model's state."""

    method: ClassVar[str] = "full_finetune"


#: Every method's config, in the order the command line lists them.
METHOD_CONFIGS: tuple[type[ConfigBase], ...] = (
    SoftPromptConfig,
    PrefixConfig,
    DeepPromptConfig,
    PTuningConfig,
    AutoPromptConfig,
    PezConfig,
    HardPromptConfig,
    LinearProbeConfig,
    FullFinetuneConfig,
)
