"""The contract every method follows.

A method only changes what goes into the frozen model. Most describe that as `parts`: virtual tokens
before the input and per-layer key/value prefixes, which `prepare` attaches to a batch's `ModelInputs`
(and which a mixed batch attaches per row, prompttune/core/parts.py). A method may override `prepare` for
anything else. It never sees labels or losses; the task turns the model's outputs into those.
Methods register themselves by name, so the training loop, the artifact code and the CLI know none
of them by type.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..config import ConfigBase
from ..core.backbone import Backbone, ModelInputs
from ..core.parts import PromptParts, attach
from ..errors import ConfigError
from ..method_options import check_prompt_config  # noqa: F401  (the methods' shared checks)

METHODS: dict[str, type[PromptMethod]] = {}


def register(cls: type[PromptMethod]) -> type[PromptMethod]:
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    if cls.Config.method != cls.name:
        raise ValueError(f"method {cls.name!r} declares the config of {cls.Config.method!r}")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[PromptMethod]:
    if name not in METHODS:
        raise ConfigError(f"--method: unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


class PromptMethod(nn.Module):
    name: ClassVar[str]
    Config: ClassVar[type[ConfigBase]]
    #: Default optimiser settings, chosen by measurement on SST-2 with frozen MiniLM (README).
    default_lr: ClassVar[float] = 1e-3
    default_head_lr: ClassVar[float] = 1e-2
    default_optimizer: ClassVar[str] = "adamw"
    #: "auto" lets the task choose (verbalizer when the backbone has an LM head); "head" asks for a
    #: trained classification head whatever the backbone.
    readout: ClassVar[str] = "auto"
    #: Whether the method has anything to train (a hard prompt does not).
    trains: ClassVar[bool] = True
    #: Whether prompts of this method leave the backbone as it is, so many of them can share one
    #: copy of it (full fine-tuning does not).
    shares_backbone: ClassVar[bool] = True

    def __init__(self, config: ConfigBase, backbone: Backbone):
        super().__init__()
        self.config = config

    #: The values its config's `init` takes (empty: the method has no initialisation to choose).
    inits: ClassVar[tuple[str, ...]] = ()
    #: Whether the method searches discrete tokens: the training loop then calls `search_step`
    #: after each backward pass.
    searches: ClassVar[bool] = False

    @classmethod
    def prompt_slots(cls, config) -> int:
        """Trigger-token slots the method needs in the task's template (searched prompts)."""
        return 0

    def initialize(self, backbone: Backbone, task, generator: torch.Generator) -> None:
        """Set initial parameter values, every random draw from `generator` (seeded by the run's
        seed). Called once for a new prompt, never when loading one."""

    def search_step(self, model, batch: dict, progress: float = 0.0) -> dict | None:
        """One round of a discrete search after the backward pass of `batch` (searching methods
        only), `progress` (0-1) into the training steps; returns what to report (the current
        prompt, its score), or None when it did not search."""
        return None

    def exported(self, model):
        """The prompt to save in place of this one (a searched prompt saves itself as the hard
        prompt it found), or None to save this one."""
        return

    def parts(self, backbone: Backbone) -> PromptParts:
        """What this prompt adds to every row: virtual tokens and/or per-layer prefixes (with
        gradients while training)."""
        return PromptParts()

    def prompt_positions(self, backbone: Backbone) -> int:
        """Positions the prompt takes before the input: its virtual tokens and its prefix."""
        parts = self.parts(backbone)
        return parts.num_virtual + parts.prefix_length

    def prepare(self, inputs: ModelInputs, backbone: Backbone) -> ModelInputs:
        parts = self.parts(backbone)
        if parts.num_virtual == 0 and parts.prefix_length == 0:
            return inputs
        return attach(inputs, [parts], filler_last=backbone.pads_right_only, backbone=backbone)

    def backbone_parameters(self, backbone: Backbone) -> list[nn.Parameter]:
        """Backbone parameters this method trains (only full fine-tuning returns any)."""
        return []

    def state_to_save(self, backbone: Backbone) -> dict:
        """The tensors an artifact stores for inference (its trained state, nothing frozen). A
        reparameterised method stores what its reparameterisation computes."""
        return {k: v.detach() for k, v in self.state_dict().items()}

    def training_state(self) -> dict:
        """Tensors beyond `state_to_save` needed to continue training (a reparameterisation's
        weights); stored beside the artifact, not needed for inference."""
        return {}

    def load_saved_state(self, state: dict, backbone: Backbone, training_state: dict | None = None) -> None:
        self.load_state_dict(state, strict=True)


class Reparameterised:
    """Mixin for a method trained through a reparameterisation (an MLP, a prompt encoder) whose
    output is all inference needs. `state_to_save` holds the output; `training_state` holds the
    reparameterisation, so training can continue; loaded without it, the method keeps the output
    only (`self.fixed`) and frees the reparameterisation."""

    fixed = None

    def _apply(self, fn, recurse=True):
        """`.to(device)`, `.half()` and the like move the computed output with the parameters (it is
        a plain tensor or a dict of them, not a registered buffer)."""
        module = super()._apply(fn, recurse)
        if isinstance(self.fixed, dict):
            self.fixed = {k: fn(v) for k, v in self.fixed.items()}
        elif self.fixed is not None:
            self.fixed = fn(self.fixed)
        return module

    def training_state(self) -> dict:
        if self.fixed is not None:
            return {}
        return {k: v.detach() for k, v in self.state_dict().items()}

    def load_saved_state(self, state: dict, backbone: Backbone, training_state: dict | None = None) -> None:
        if training_state:
            self.load_state_dict(training_state, strict=True)
            self.fixed = None
            return
        self.fixed = self.output_from_saved(state)
        self.drop_reparameterisation()

    def output_from_saved(self, state: dict):
        raise NotImplementedError

    def drop_reparameterisation(self) -> None:
        raise NotImplementedError
