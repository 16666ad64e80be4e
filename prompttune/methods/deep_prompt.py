"""Deep prompt tuning: Liu et al., "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning
Universally Across Scales and Tasks", ACL 2022 (arXiv:2110.07602).

The same per-layer key/value prefix as prefix tuning, trained directly (no reparameterisation MLP),
with a classification head over the model's hidden states instead of a verbalizer: the setting in
which the paper matches fine-tuning on mid-size encoders.

Initialisation (`init`): `sample_vocab` (the default) and `text` start from the keys and values the
model computes for real tokens, as for prefix tuning; `random` draws them from a normal distribution
at the scale of those activations.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.backbone import Backbone
from ..method_options import DeepPromptConfig
from .base import register
from .prefix import KeyValuePrefix
from .soft_prompt import sample_token_ids


@register
class DeepPrompt(KeyValuePrefix):
    name = "deep_prompt"
    Config = DeepPromptConfig
    readout = "head"
    # Measured on SST-2 with frozen MiniLM (benchmarks/results/lr_sweep.md): 1e-2 with sample_vocab
    # beat 3e-2, and random initialisation at 3e-3..3e-2.
    default_lr = 1e-2
    default_head_lr = 1e-2

    def __init__(self, config: DeepPromptConfig, backbone: Backbone):
        super().__init__(config, backbone)
        # One contiguous (L, 2, H, P, d) tensor per site, so each layer's keys and values are a
        # contiguous slice with no copy in the forward pass.
        self.prefix = nn.ParameterDict(
            {
                site: nn.Parameter(
                    torch.zeros(layers, 2, heads, config.num_virtual_tokens, size, device=backbone.device)
                )
                for site, (layers, heads, size) in self.layout.items()
            }
        )

    @torch.no_grad()
    def initialize(self, backbone: Backbone, task, generator: torch.Generator) -> None:
        target = self.initial_activations(backbone, generator)
        if target is None:
            # Per-site scale of real activations, measured on a handful of vocabulary tokens.
            ids = sample_token_ids(backbone, 16, generator).cpu().unsqueeze(0)
            activations = backbone.key_value_activations(ids)
            scale = self.join(
                {
                    site: t[:, :, 0]
                    .float()
                    .std(dim=(2, 3, 4), keepdim=True)
                    .expand(-1, -1, t.shape[3], self.config.num_virtual_tokens, t.shape[5])
                    for site, t in activations.items()
                }
            )
            target = torch.randn(scale.shape, generator=generator).to(scale.device) * scale
        for site, values in self.split(target).items():
            self.prefix[site].copy_(values)

    def per_site(self) -> dict[str, torch.Tensor]:
        return dict(self.prefix.items())

    def load_saved_state(self, state: dict, backbone: Backbone, training_state: dict | None = None) -> None:
        with torch.no_grad():
            for site in self.sites:
                self.prefix[site].copy_(state[f"prefix.{site}"])
