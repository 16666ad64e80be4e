"""Soft prompt tuning: Lester, Al-Rfou & Constant, "The Power of Scale for Parameter-Efficient
Prompt Tuning", EMNLP 2021 (arXiv:2104.08691).

N trainable virtual-token embeddings are placed before the input's embeddings; the model is frozen.
With a hard template (`--template`) the same prompt trains as a hybrid of soft and hard tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.backbone import Backbone, word_for_tokenizer
from ..core.parts import PromptParts
from ..errors import ConfigError
from ..method_options import SOFT_PROMPT_INITS, SoftPromptConfig
from .base import PromptMethod, register

INITS = SOFT_PROMPT_INITS


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
