"""Random starting values drawn from one generator, so a prompt's initialisation depends on the
run's seed alone: not on what else the process drew before (two prompts made one after another in
one process start from different values, and the same seed gives the same prompt anywhere)."""

from __future__ import annotations

import math

import torch
from torch import nn


def generator_for(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with `seed`; with None, seeded from torch's global generator (so
    `torch.manual_seed` still makes a run repeatable, and two prompts made in a row still differ)."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.long))
    return torch.Generator(device="cpu").manual_seed(int(seed))


@torch.no_grad()
def reset_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw the weights of every linear, LSTM and embedding layer in `module` from `generator`,
    with PyTorch's default distributions for each (what `reset_parameters` draws from the global
    generator)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features else 0.0
            # kaiming_uniform_ with a = sqrt(5), PyTorch's default for nn.Linear: U(-1/sqrt(fan_in), +).
            _fill(layer.weight, lambda shape, bound=bound: (torch.rand(shape, generator=generator) * 2 - 1) * bound)
            if layer.bias is not None:
                _fill(layer.bias, lambda shape, bound=bound: (torch.rand(shape, generator=generator) * 2 - 1) * bound)
        elif isinstance(layer, nn.LSTM):
            bound = 1.0 / math.sqrt(layer.hidden_size)
            for weight in layer.parameters():
                _fill(weight, lambda shape, bound=bound: (torch.rand(shape, generator=generator) * 2 - 1) * bound)
        elif isinstance(layer, nn.Embedding):
            _fill(layer.weight, lambda shape: torch.randn(shape, generator=generator))


def _fill(parameter: torch.Tensor, draw) -> None:
    parameter.copy_(draw(parameter.shape).to(parameter.dtype))
