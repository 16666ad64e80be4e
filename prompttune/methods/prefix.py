"""Prefix tuning: Li & Liang, "Prefix-Tuning: Optimizing Continuous Prompts for Generation",
ACL 2021 (arXiv:2101.00190).

Trainable keys and values are prepended at every attention layer: the decoder's self-attention for
a decoder-only model; the encoder's self-attention, the decoder's self-attention and the decoder's
cross-attention for an encoder-decoder (the paper's section 4.1); the self-attention of an encoder.

Training goes through the paper's reparameterisation: a small embedding (P x D) passed through an
MLP (D -> hidden -> every layer's keys and values); D is the model's width unless `embedding_size`
says otherwise (PEFT's is the keys' and values' width). Optimising the prefix directly was unstable in
the paper. The MLP exists only for training: the artifact stores the computed per-layer prefix,
which is all inference needs, and, in a separate file, the embedding and the MLP, so training can
continue from a saved prompt.

Initialisation (`init`): `random` (the MLP's default initialisation, as PEFT), or `text` /
`sample_vocab`: the prefix starts as the keys and values the frozen model itself computes for real
words (`init_text`, or tokens sampled from the vocabulary). The paper found real-word initialisation
clearly better than random in low-data settings. The MLP is set to produce those activations exactly:
its output layer is solved by least squares for the hidden features of the initial embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.backbone import Backbone
from ..core.parts import PromptParts
from ..core.seeding import reset_parameters
from ..method_options import PREFIX_INITS, PrefixConfig
from .base import PromptMethod, Reparameterised, register
from .soft_prompt import sample_token_ids

INITS = PREFIX_INITS


class KeyValuePrefix(PromptMethod):
    """What prefix methods share: the per-site layout, turning a flat (P, total) tensor into each
    site's (L, 2, B, H, P, d) keys and values, initial activations, and the artifact's tensors."""

    inits = INITS

    def __init__(self, config, backbone: Backbone):
        super().__init__(config, backbone)
        self.layout = backbone.prefix_layout()  # site -> (layers, kv heads, head size)
        self.sites = sorted(self.layout)
        self.total = sum(layers * 2 * heads * size for layers, heads, size in self.layout.values())

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """(P, total) -> site -> (L, 2, H, P, d)."""
        out, start = {}, 0
        length = flat.shape[0]
        for site in self.sites:
            layers, heads, size = self.layout[site]
            width = layers * 2 * heads * size
            out[site] = flat[:, start : start + width].reshape(length, layers, 2, heads, size).permute(1, 2, 3, 0, 4)
            start += width
        return out

    def join(self, per_site: dict[str, torch.Tensor]) -> torch.Tensor:
        """site -> (L, 2, H, P, d)  ->  (P, total); the inverse of `split`."""
        parts = [per_site[site].permute(3, 0, 1, 2, 4).reshape(per_site[site].shape[3], -1) for site in self.sites]
        return torch.cat(parts, dim=1)

    def per_site(self) -> dict[str, torch.Tensor]:
        """site -> (L, 2, H, P, d) for the current parameters."""
        raise NotImplementedError

    def parts(self, backbone: Backbone) -> PromptParts:
        return PromptParts(prefix=self.per_site())

    def initial_activations(self, backbone: Backbone, generator: torch.Generator) -> torch.Tensor | None:
        """(P, total) keys/values of real tokens for init text/sample_vocab; None for random."""
        config = self.config
        n = config.num_virtual_tokens
        if config.init == "random":
            return None
        if config.init == "text":
            ids = backbone.tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
            ids = (ids * (n // max(len(ids), 1) + 1))[:n]
            ids = torch.tensor(ids)
        else:
            ids = sample_token_ids(backbone, n, generator).cpu()
        activations = backbone.key_value_activations(ids.unsqueeze(0))  # site -> (L, 2, 1, H, P, d)
        return self.join({site: t[:, :, 0].float() for site, t in activations.items()})

    @torch.no_grad()
    def state_to_save(self, backbone: Backbone) -> dict:
        # The computed prefix of each site, (L, 2, H, P, d): what inference needs, computed as
        # inference computes it (without autograd).
        return {f"prefix.{site}": t.float().contiguous() for site, t in self.per_site().items()}


@register
class PrefixTuning(Reparameterised, KeyValuePrefix):
    name = "prefix"
    Config = PrefixConfig
    # Measured on SST-2 with frozen MiniLM (benchmarks/results/lr_sweep.md): 3e-4 beat 1e-4 and 1e-3;
    # 5e-3 and above diverge through the MLP. (Li & Liang used 5e-5..8e-5 with GPT-2 medium at
    # batch 5 and many more steps.)
    default_lr = 3e-4
    default_head_lr = 1e-2

    def __init__(self, config: PrefixConfig, backbone: Backbone):
        super().__init__(config, backbone)
        device = backbone.device
        width = config.embedding_size or backbone.hidden_size
        self.embedding = nn.Parameter(torch.zeros(config.num_virtual_tokens, width, device=device))
        self.mlp = nn.Sequential(
            nn.Linear(width, config.hidden_size), nn.Tanh(), nn.Linear(config.hidden_size, self.total)
        ).to(device)

    @torch.no_grad()
    def initialize(self, backbone: Backbone, task, generator: torch.Generator) -> None:
        reset_parameters(self.mlp, generator)
        self.embedding.copy_(torch.randn(self.embedding.shape, generator=generator))
        target = self.initial_activations(backbone, generator)
        if target is None:
            return
        # Output layer solved by least squares so the MLP reproduces the activations exactly
        # (the hidden features of P embeddings are linearly independent when P <= hidden_size).
        hidden = self.mlp[1](self.mlp[0](self.embedding)).float()  # (P, hidden)
        bias = target.mean(0)
        solution = torch.linalg.lstsq(hidden.cpu().double(), (target - bias).cpu().double()).solution  # (hidden, total)
        self.mlp[2].weight.copy_(solution.T.to(self.mlp[2].weight))
        self.mlp[2].bias.copy_(bias)

    def per_site(self) -> dict[str, torch.Tensor]:
        if self.fixed is not None:
            return self.fixed
        return self.split(self.mlp(self.embedding))

    def output_from_saved(self, state: dict) -> dict[str, torch.Tensor]:
        return {site: state[f"prefix.{site}"] for site in self.sites}

    def drop_reparameterisation(self) -> None:
        del self.embedding, self.mlp
        self.register_parameter("embedding", None)
        self.mlp = None
