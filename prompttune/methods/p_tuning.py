"""P-tuning: Liu et al., "GPT Understands, Too", 2021 (arXiv:2103.10385).

Virtual tokens, as in soft prompt tuning, but produced by a prompt encoder: trainable input vectors
passed through a bidirectional LSTM and an MLP (`encoder: lstm`, the paper's choice), or through an
MLP alone (`encoder: mlp`). The encoder ties the virtual tokens to each other, which the paper found
to train faster and more stably than independent embeddings. The artifact stores the encoder's
output (N x D), exactly like a soft prompt; the encoder's weights are kept beside it so training
can continue.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.backbone import Backbone
from ..core.parts import PromptParts
from ..core.seeding import reset_parameters
from ..method_options import PROMPT_ENCODERS, PTuningConfig
from .base import Reparameterised, register
from .soft_prompt import SoftPrompt, SoftPromptConfig, initial_embeddings

ENCODERS = PROMPT_ENCODERS


class PromptEncoder(nn.Module):
    def __init__(self, config: PTuningConfig, width: int):
        super().__init__()
        hidden = config.hidden_size or width
        self.kind = config.encoder
        if self.kind == "lstm":
            self.lstm = nn.LSTM(
                width, hidden // 2 if hidden > 1 else 1, num_layers=2, bidirectional=True, batch_first=True
            )
            lstm_out = 2 * (hidden // 2 if hidden > 1 else 1)
            self.mlp = nn.Sequential(nn.Linear(lstm_out, hidden), nn.ReLU(), nn.Linear(hidden, width))
        else:
            self.mlp = nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, width)
            )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, D)
        if self.kind == "lstm":
            inputs = self.lstm(inputs.unsqueeze(0))[0].squeeze(0)
        return self.mlp(inputs)


@register
class PTuning(Reparameterised, SoftPrompt):
    name = "p_tuning"
    Config = PTuningConfig
    default_lr = 1e-3
    default_head_lr = 1e-2

    def __init__(self, config: PTuningConfig, backbone: Backbone):
        # The encoder's inputs have the shape of a soft prompt; `prompt` holds them.
        super().__init__(config, backbone)
        self.encoder = PromptEncoder(config, backbone.hidden_size).to(backbone.device)

    @torch.no_grad()
    def initialize(self, backbone: Backbone, task, generator: torch.Generator) -> None:
        soft = SoftPromptConfig(
            num_virtual_tokens=self.config.num_virtual_tokens, init=self.config.init, init_text=self.config.init_text
        )
        reset_parameters(self.encoder, generator)
        self.prompt.copy_(initial_embeddings(soft, backbone, task, generator))

    def virtual_tokens(self) -> torch.Tensor:
        return self.fixed if self.fixed is not None else self.encoder(self.prompt)

    def parts(self, backbone: Backbone) -> PromptParts:
        return PromptParts(virtual=self.virtual_tokens())

    @torch.no_grad()
    def state_to_save(self, backbone: Backbone) -> dict:
        # Computed as inference computes it (without autograd), so a loaded prompt gives the same outputs.
        return {"prompt": self.virtual_tokens().float().contiguous()}

    def output_from_saved(self, state: dict) -> torch.Tensor:
        return state["prompt"]

    def drop_reparameterisation(self) -> None:
        del self.encoder
        self.encoder = None
