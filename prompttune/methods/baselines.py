"""Baselines to compare prompts against: a linear probe and full fine-tuning.

Both use the same task heads and training loop as the prompt methods, so comparisons differ only in
what trains.
"""

from __future__ import annotations

from ..core.backbone import Backbone
from ..method_options import FullFinetuneConfig, LinearProbeConfig
from .base import PromptMethod, register


@register
class LinearProbe(PromptMethod):
    name = "linear_probe"
    Config = LinearProbeConfig
    readout = "head"
    default_head_lr = 1e-2  # measured: beat 1e-3 and 1e-1 (benchmarks/results/lr_sweep.md)


@register
class FullFinetune(PromptMethod):
    name = "full_finetune"
    Config = FullFinetuneConfig
    shares_backbone = False
    # Measured on SST-2 with MiniLM (benchmarks/results/lr_sweep.md): 1e-4 beat 5e-5 and 2e-5.
    default_lr = 1e-4
    default_head_lr = 1e-3

    def backbone_parameters(self, backbone: Backbone):
        return list(backbone.model.parameters())

    def state_to_save(self, backbone: Backbone) -> dict:
        return {k: v.detach() for k, v in backbone.model.state_dict().items()}

    def load_saved_state(self, state: dict, backbone: Backbone, training_state: dict | None = None) -> None:
        backbone.model.load_state_dict(state, strict=True)
