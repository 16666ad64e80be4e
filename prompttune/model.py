"""A frozen backbone, a prompt method and a task, joined through the contract in methods/base.py."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import DataLoader

from .core.backbone import DECODER, Backbone, BackboneOutput, ModelInputs
from .core.seeding import generator_for, reset_parameters
from .core.virtual_tokens import gather_positions
from .errors import ConfigError
from .methods import PromptMethod, method_class
from .tasks import task_class
from .tasks.data import Example


def run_backbone(backbone: Backbone, inputs: ModelInputs) -> BackboneOutput:
    """The backbone's output on prepared inputs, restricted to the real tokens: what a task sees is
    aligned with the batch it was given, whatever virtual tokens the prompt inserted."""
    output = backbone(inputs)
    if inputs.real_index is None:
        return output
    logits = output.logits
    if logits is not None and backbone.kind == DECODER:
        logits = gather_positions(logits, inputs.real_index)
    return BackboneOutput(gather_positions(output.hidden, inputs.real_index), output.readout_logits, logits)


class PromptModel(nn.Module):
    def __init__(self, backbone: Backbone, method: PromptMethod, task, base_fingerprint: dict):
        super().__init__()
        self.backbone = backbone
        self.method = method
        self.task = task
        # Recorded when the prompt is made, before any training can change the backbone.
        self.base_fingerprint = base_fingerprint
        # Inputs are cut to what the model's learned positions leave after the prompt; where even
        # the shortest input cannot fit, a new prompt is refused (`create`).
        self.position_problem = None
        if backbone.max_positions is not None:
            with torch.no_grad():
                taken = method.prompt_positions(backbone)
            self.position_problem = task.fit_positions(backbone.max_positions - taken, taken, backbone.max_positions)

    @classmethod
    def create(
        cls,
        backbone: Backbone,
        method: str,
        task_config,
        method_options: dict | None = None,
        readout: str = "auto",
        seed: int | None = None,
        examples: list | None = None,
    ) -> PromptModel:
        """A new, initialised prompt for `backbone`: the method's parameters and the task's head are
        drawn from a generator seeded with `seed` (None: a seed drawn from torch's global generator).
        `examples`, the training data, are what a task may measure the new prompt on (a domain
        calibration's words)."""
        method_cls = method_class(method)
        method_config = method_cls.Config.from_dict(method_options or {}, where=f"--method {method}")
        task_cls = task_class(task_config)
        task_config = task_cls.configure(
            task_config, method_cls, backbone, readout, prompt_slots=method_cls.prompt_slots(method_config)
        )
        task = task_cls(task_config, backbone)
        prompt = method_cls(method_config, backbone)
        fingerprint = backbone.fingerprint()
        generator = generator_for(seed)
        prompt.initialize(backbone, task, generator)
        reset_parameters(task, generator)
        task.initialize(backbone)
        task.to(backbone.device)
        model = cls(backbone, prompt, task, fingerprint)
        if model.position_problem:
            raise ConfigError(model.position_problem)
        task.measure(model, examples, seed)
        return model

    def with_prompt(self, method: PromptMethod, task) -> PromptModel:
        """Another prompt on the same backbone and base model (a searched prompt exported as the
        hard prompt it found)."""
        return type(self)(self.backbone, method, task, self.base_fingerprint)

    # ---- running ------------------------------------------------------------------------------

    def prepare(self, batch: dict) -> ModelInputs:
        """The batch embedded, with the task's fields, after the method has had its say."""
        inputs = self.task.model_inputs(batch, self.backbone.embed(batch["input_ids"]))  # (B, T, D)
        return self.method.prepare(inputs, self.backbone)

    def forward(self, batch: dict) -> torch.Tensor:
        """The task's scores for a collated batch: label logits (B, C), or token logits (B, T, V)."""
        inputs = self.prepare(batch)
        return self.task.logits(run_backbone(self.backbone, inputs), inputs, batch)

    def loss(self, batch: dict) -> torch.Tensor:
        return self.task.loss(self(batch), batch)

    def generate(self, batch: dict, **options) -> torch.Tensor:
        """New token ids for a batch collated with `for_generation=True` (generation tasks)."""
        inputs = replace(self.prepare(batch), full_logits=False)
        return self.backbone.generate(inputs, **self.task.generation_options(**options))

    def batched_logits(self, features: list[dict], batch_size: int = 64, accelerator=None):
        """Yield (logits, batch) over encoded `features` in eval mode without gradients; with an
        accelerator the batches are sharded across processes. The training mode is restored after."""
        loader = DataLoader(features, batch_size=batch_size, collate_fn=self.task.collate)
        if accelerator is not None:
            loader = accelerator.prepare_data_loader(loader)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    batch = {k: v.to(self.backbone.device) for k, v in batch.items()}
                    yield self.forward(batch), batch
        finally:
            self.train(was_training)

    def predict_proba(self, examples: list[Example], batch_size: int = 64) -> torch.Tensor:
        """The task's scores as probabilities, in the examples' order: (N, C) over the labels for
        classification, (N, T, C) over the tags of each token for token classification (rows padded
        alike within a batch)."""
        features = [self.task.encode(e) for e in examples]
        rows = [logits.float().softmax(-1).cpu() for logits, _ in self.batched_logits(features, batch_size)]
        return torch.cat(rows) if rows else torch.zeros(0)

    # ---- what trains --------------------------------------------------------------------------

    def parameter_groups(self, lr: float, head_lr: float) -> list[dict]:
        """Optimiser groups: the prompt (and, for full fine-tuning, the backbone) at `lr`, the
        task's head at `head_lr`. Everything else stays frozen."""
        prompt = [p for p in self.method.parameters()] + self.method.backbone_parameters(self.backbone)
        head = [p for p in self.task.parameters()]
        for p in prompt + head:
            p.requires_grad_(True)
        groups = []
        if prompt:
            groups.append({"params": prompt, "lr": lr, "name": "prompt"})
        if head:
            groups.append({"params": head, "lr": head_lr, "name": "head"})
        return groups

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything that trains, as saved in checkpoints: `method.*` (what inference needs),
        `method_training.*` (a reparameterisation, when the method has one) and `task.*`."""
        state = self.artifact_state()
        state.update({f"method_training.{k}": v for k, v in self.method.training_state().items()})
        return state

    def artifact_state(self) -> dict[str, torch.Tensor]:
        """What a prompt artifact stores for inference: `method.*` and `task.*`."""
        state = {f"method.{k}": v for k, v in self.method.state_to_save(self.backbone).items()}
        state.update({f"task.{k}": v for k, v in self.task.state_to_save().items()})
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        def part(prefix):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

        self.method.load_saved_state(part("method."), self.backbone, part("method_training.") or None)
        self.task.load_state_dict(part("task."), strict=True)

    @property
    def trains(self) -> bool:
        """Whether anything trains: the method's parameters or the task's head (not a hard prompt)."""
        return self.method.trains or any(True for _ in self.task.parameters())

    def count_parameters(self) -> dict[str, int]:
        trained = (
            list(self.method.parameters())
            + self.method.backbone_parameters(self.backbone)
            + list(self.task.parameters())
        )
        return {
            "trainable": sum(p.numel() for p in trained),
            "backbone": sum(p.numel() for p in self.backbone.model.parameters()),
        }
