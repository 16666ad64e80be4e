"""Searched discrete prompts: real tokens, chosen by optimisation, exported as a hard prompt.

- `autoprompt`: Shin et al., "AutoPrompt: Eliciting Knowledge from Language Models with
  Automatically Generated Prompts", EMNLP 2020 (arXiv:2010.15980). Trigger tokens at the template's
  `{prompt}` slots. Each round takes the gradient of the loss with respect to one slot's token
  embedding, keeps the top-k vocabulary tokens by the first-order estimate of the loss decrease
  (-e . grad), re-scores every candidate on the batch with real forward passes (all candidates in
  one batched forward), and keeps the best if it lowers the loss.
- `pez`: Wen et al., "Hard Prompts Made Easy: Gradient-Based Discrete Optimization for Prompt
  Tuning and Discovery", NeurIPS 2023 (arXiv:2302.03668). Continuous vectors at the slots; the
  forward pass uses their projection onto the nearest vocabulary embeddings (cosine), the gradient
  at the projection updates the continuous vectors (straight-through), and the projected tokens are
  the prompt.

Label scores come from the task: a verbalizer over the LM head, or, for a backbone without one, a
linear head trained on the frozen features at the same time (AutoPrompt fits its label tokens the
same way). Candidates are limited to plain vocabulary tokens that read back as themselves, so the
prompt written out as text is the prompt that was searched. Saving writes the result as a
`hard_prompt` artifact whose template holds the tokens' text; its outputs equal the searched
prompt's.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..core.backbone import Backbone, ModelInputs
from ..errors import ConfigError
from ..method_options import AutoPromptConfig, PezConfig
from .base import PromptMethod, register


class TriggerPrompt(PromptMethod):
    """What searched prompts share: the slots, the allowed vocabulary, and the export."""

    @classmethod
    def prompt_slots(cls, config) -> int:
        return config.num_tokens

    def __init__(self, config, backbone: Backbone):
        super().__init__(config, backbone)
        from ..core.vocabulary import plain_tokens

        self.tokenizer = backbone.tokenizer
        self._embedding_weight = lambda: backbone.input_embeddings.weight.detach()  # not a submodule
        self.register_buffer(
            "allowed", torch.tensor(plain_tokens(backbone.tokenizer), device=backbone.device), persistent=False
        )

    def initial_ids(self, backbone: Backbone, task) -> torch.Tensor:
        n = self.config.num_tokens
        if self.config.init_text:
            ids = self.tokenizer(self.config.init_text, add_special_tokens=False)["input_ids"]
            if len(ids) != n or not set(ids) <= set(self.allowed.tolist()):
                raise ConfigError(
                    f"init_text: {self.config.init_text!r} must be {n} plain tokens; it reads as "
                    f"{self.tokenizer.convert_ids_to_tokens(ids)}"
                )
            return torch.tensor(ids, device=backbone.device)
        filler = task.trigger_slot()
        if filler is None:
            raise ConfigError(f"--method {self.name}: the {task.name} task takes no searched prompt")
        return torch.full((n,), filler, device=backbone.device)

    def token_ids(self) -> torch.Tensor:
        """(N,) the prompt's tokens now."""
        raise NotImplementedError

    def text(self) -> str:
        return self.tokenizer.decode(self.token_ids().tolist())

    def reads_back(self, ids: list[int]) -> bool:
        """Whether `ids` written out as text are read back as the same tokens."""
        return self.tokenizer(self.tokenizer.decode(ids), add_special_tokens=False)["input_ids"] == ids

    def slot_embeddings(self, backbone: Backbone) -> torch.Tensor:
        """(N, D) or (B, N, D) what the slots hold in this forward."""
        raise NotImplementedError

    def prepare(self, inputs: ModelInputs, backbone: Backbone) -> ModelInputs:
        if inputs.slot_index is None:
            raise ConfigError(f"{self.name}: the batch has no trigger slots (the task's template needs {{prompt}})")
        embeds = inputs.inputs_embeds
        values = self.slot_embeddings(backbone).to(embeds.dtype)
        if values.dim() == 2:
            values = values.unsqueeze(0).expand(embeds.shape[0], -1, -1)
        index = inputs.slot_index.unsqueeze(-1).expand(-1, -1, embeds.shape[-1])
        inputs = replace(inputs, inputs_embeds=embeds.scatter(1, index, values))
        decoder_slots = inputs.extra.get("decoder_slot_index")
        if decoder_slots is not None:  # a decoder that reads the input (BART) sees the prompt's tokens
            ids = self.slot_ids()
            ids = ids.unsqueeze(0).expand(embeds.shape[0], -1) if ids.dim() == 1 else ids
            inputs = replace(inputs, decoder_input_ids=inputs.decoder_input_ids.scatter(1, decoder_slots, ids))
        return inputs

    def slot_ids(self) -> torch.Tensor:
        """(N,) or (B, N) the tokens in the slots in this forward (what a decoder reading the input sees)."""
        return self.token_ids()

    def exported(self, model):
        """A hard prompt whose template holds this prompt's text, with the task's head or verbalizer."""
        from .hard_prompt import HardPrompt, HardPromptConfig

        ids = self.token_ids().tolist()
        if not self.reads_back(ids):
            raise ConfigError(
                f"{self.name}: the prompt {self.tokenizer.convert_ids_to_tokens(ids)} does not read back "
                "as the same tokens; it cannot be written as a template"
            )
        hard = model.with_prompt(
            HardPrompt(HardPromptConfig(), model.backbone), model.task.template_with_prompt(self.text())
        )
        hard.searched = {
            "method": self.name,
            "method_config": self.config.to_dict(),
            "prompt_text": self.text(),
            "tokens": self.tokenizer.convert_ids_to_tokens(ids),
        }
        return hard.eval()


@register
class AutoPrompt(TriggerPrompt):
    name = "autoprompt"
    Config = AutoPromptConfig
    searches = True
    default_lr = 1e-3  # only the task's head, when there is one, trains by gradient
    default_head_lr = 1e-2

    def __init__(self, config: AutoPromptConfig, backbone: Backbone):
        super().__init__(config, backbone)
        self.register_buffer("trigger_ids", torch.zeros(config.num_tokens, dtype=torch.long, device=backbone.device))
        self._gradient = None  # summed over the backward passes since the last round
        self._rows = None  # (R, N) per-row trigger ids while candidates are scored
        self._generator = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def initialize(self, backbone: Backbone, task, generator: torch.Generator) -> None:
        self.trigger_ids.copy_(self.initial_ids(backbone, task))

    def token_ids(self) -> torch.Tensor:
        return self.trigger_ids

    def slot_ids(self) -> torch.Tensor:
        return self._rows if self._rows is not None else self.trigger_ids

    def slot_embeddings(self, backbone: Backbone) -> torch.Tensor:
        weight = backbone.input_embeddings.weight
        if self._rows is not None:
            return weight[self._rows]
        values = weight[self.trigger_ids].detach()
        if torch.is_grad_enabled() and self.training:
            values.requires_grad_(True)
            values.register_hook(self._keep_gradient)
        return values

    def _keep_gradient(self, grad: torch.Tensor) -> None:
        self._gradient = grad.detach() if self._gradient is None else self._gradient + grad.detach()

    @torch.no_grad()
    def search_step(self, model, batch: dict, progress: float = 0.0) -> dict | None:
        gradient, self._gradient = self._gradient, None
        # With no head to fit afterwards, every step searches.
        fraction = self.config.search_fraction if any(True for _ in model.task.parameters()) else 1.0
        if gradient is None or progress > fraction:
            return None
        gradient = gradient.float()
        n, k = self.config.num_tokens, self.config.num_candidates
        slot = int(torch.randint(n, (1,), generator=self._generator))
        weight = model.backbone.input_embeddings.weight.detach()
        # First-order estimate of the loss change when the slot's token becomes each allowed token.
        estimate = weight[self.allowed].float() @ gradient[slot]
        current = int(self.trigger_ids[slot])
        estimate[self.allowed == current] = float("inf")
        order = self.allowed[estimate.argsort()].tolist()
        candidates = []
        for token in order:
            trial = self.trigger_ids.tolist()
            trial[slot] = token
            if self.reads_back(trial):
                candidates.append(trial)
            if len(candidates) == k:
                break
        trials = [self.trigger_ids.tolist()] + candidates
        losses = self._score(model, batch, trials)
        best = min(range(len(trials)), key=losses.__getitem__)
        if best:
            self.trigger_ids.copy_(torch.tensor(trials[best], device=self.trigger_ids.device))
        return {"prompt": self.text(), "batch_loss": losses[best], "improved": bool(best)}

    def _score(self, model, batch: dict, trials: list[list[int]], max_rows: int = 256) -> list[float]:
        """The batch's loss under each trial prompt, trials side by side in batched forwards."""
        rows = next(iter(batch.values())).shape[0]
        per_forward = max(1, max_rows // rows)
        losses = []
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(trials), per_forward):
                group = trials[start : start + per_forward]
                big = {k: v.repeat(len(group), *([1] * (v.dim() - 1))) for k, v in batch.items()}
                self._rows = torch.tensor(group, device=self.trigger_ids.device).repeat_interleave(rows, dim=0)
                logits = model(big)
                for g in range(len(group)):
                    part = slice(g * rows, (g + 1) * rows)
                    losses.append(float(model.task.loss(logits[part], {k: v[part] for k, v in big.items()})))
        finally:
            self._rows = None
            model.train(was_training)
        return losses

    def load_saved_state(self, state: dict, backbone: Backbone, training_state: dict | None = None) -> None:
        self.trigger_ids.copy_(state["trigger_ids"])


@register
class Pez(TriggerPrompt):
    name = "pez"
    Config = PezConfig
    # Wen et al.'s learning rate (AdamW at 0.1, on CLIP); on SST-2 with MiniLM it gives 0.798 with a head
    # (benchmarks/results/sst2_search.md). Not swept.
    default_lr = 1e-1
    default_head_lr = 1e-2

    def __init__(self, config: PezConfig, backbone: Backbone):
        super().__init__(config, backbone)
        self.vectors = nn.Parameter(torch.zeros(config.num_tokens, backbone.hidden_size, device=backbone.device))

    @torch.no_grad()
    def initialize(self, backbone: Backbone, task, generator: torch.Generator) -> None:
        if self.config.init_text:
            ids = self.initial_ids(backbone, task)
        else:
            ids = self.allowed[
                torch.randint(len(self.allowed), (self.config.num_tokens,), generator=generator).to(self.allowed.device)
            ]
        self.vectors.copy_(backbone.input_embeddings.weight[ids].float())

    def token_ids(self) -> torch.Tensor:
        """The vocabulary tokens nearest (by cosine) to the vectors."""
        weight = self._embedding_weight()
        allowed = F.normalize(weight[self.allowed].float(), dim=-1)
        return self.allowed[(F.normalize(self.vectors.detach().float(), dim=-1) @ allowed.T).argmax(-1)]

    def slot_embeddings(self, backbone: Backbone) -> torch.Tensor:
        projected = self._embedding_weight()[self.token_ids()].to(self.vectors.dtype)
        # Straight-through: the forward pass sees the projection, the gradient reaches the vectors.
        return self.vectors + (projected - self.vectors).detach()
