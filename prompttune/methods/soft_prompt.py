"""Soft prompt tuning: Lester, Al-Rfou & Constant, "The Power of Scale for Parameter-Efficient
Prompt Tuning", EMNLP 2021 (arXiv:2104.08691).

N trainable virtual-token embeddings are placed before the input's embeddings; the model is frozen.
With a hard template (`--template`) the same prompt trains as a hybrid of soft and hard tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ConfigBase, check_optional_count
from ..core.backbone import Backbone, word_for_tokenizer
from ..core.parts import PromptParts
from ..errors import ConfigError
from .base import PromptMethod, check_prompt_config, register

INITS = ("random", "sample_vocab", "text", "class_labels")


@dataclass(frozen=True)
class SoftPromptConfig(ConfigBase):
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
        check_prompt_config(self, INITS)
        check_optional_count(self.common_tokens, "common_tokens")


@register
class SoftPrompt(PromptMethod):
    name = "soft_prompt"
    Config = SoftPromptConfig
    inits = INITS
    # Measured on SST-2 with frozen MiniLM (benchmarks/results/lr_sweep.md): AdamW 1e-2 beat 3e-2 and 1e-1.
    default_lr = 1e-2
    default_head_lr = 1e-2

    def __init__(self, config: SoftPromptConfig, backbone: Backbone):
        super().__init__(config, backbone)
        weight = backbone.input_embeddings.weight
        self.prompt = nn.Parameter(
            torch.zeros(config.num_virtual_tokens, backbone.hidden_size, dtype=torch.float32, device=weight.device)
        )

    @torch.no_grad()
    def initialize(self, backbone: Backbone, task, generator: torch.Generator) -> None:
        self.prompt.copy_(initial_embeddings(self.config, backbone, task, generator))

    def parts(self, backbone: Backbone) -> PromptParts:
        return PromptParts(virtual=self.prompt)


def initial_embeddings(config: SoftPromptConfig, backbone: Backbone, task, generator: torch.Generator) -> torch.Tensor:
    """(N, D) starting values for a prompt of `config.num_virtual_tokens` tokens."""
    weight = backbone.input_embeddings.weight.detach().float()
    n = config.num_virtual_tokens
    if config.init == "random":
        # Matched to the vocabulary's per-dimension statistics, so the prompt starts at the scale
        # the model's layers expect (a unit normal is far off for most models).
        mean, std = weight.mean(0).cpu(), weight.std(0).cpu()
        return (mean + std * torch.randn(n, weight.shape[1], generator=generator)).to(weight.device)
    if config.init == "sample_vocab":
        return weight[sample_token_ids(backbone, n, generator, config.common_tokens)]
    if config.init == "text":
        ids = backbone.tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
        repeated = (ids * (n // max(len(ids), 1) + 1))[:n]
        return weight[torch.tensor(repeated, device=weight.device)]
    # class_labels: one row per label word (its sub-tokens averaged), then vocabulary samples.
    rows = []
    for words in task.init_words().values():
        for word in words:
            ids = backbone.tokenizer(word_for_tokenizer(backbone, word), add_special_tokens=False)["input_ids"]
            if ids:
                rows.append(weight[torch.tensor(ids, device=weight.device)].mean(0))
    rows = rows[:n]
    if len(rows) < n:
        rows.extend(weight[sample_token_ids(backbone, n - len(rows), generator, config.common_tokens)])
    return torch.stack(rows)


def sample_token_ids(
    backbone: Backbone, count: int, generator: torch.Generator, first: int | None = None
) -> torch.Tensor:
    """Uniform draws from the vocabulary (its first `first` ids where given), special tokens excluded."""
    vocab_size = backbone.input_embeddings.weight.shape[0]
    special = set(backbone.tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(min(vocab_size, first or vocab_size)) if i not in special])
    if len(allowed) == 0:
        raise ConfigError(f"common_tokens: the first {first} token ids are all special tokens; give a larger number")
    picks = torch.randint(len(allowed), (count,), generator=generator)
    return allowed[picks].to(backbone.device)
