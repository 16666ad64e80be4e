"""What a training run is told: every field documented and checked, with no torch to import (the
command line derives its training flags from these fields, and answers --help without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigBase, check

OPTIMIZERS = ("adamw", "adafactor")
#: The experiment trackers Accelerate can log to (accelerate.tracking).
TRACKERS = ("tensorboard", "mlflow", "wandb", "aim", "comet_ml", "clearml", "dvclive", "swanlab", "trackio")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig(ConfigBase):
    max_steps: int | None = None
    """Optimiser steps; takes precedence over `epochs`."""
    epochs: float = 3.0
    """Passes over the training data when `max_steps` is not set."""
    batch_size: int = 16
    """Examples per optimiser step per process (divided by `grad_accum` per forward)."""
    eval_batch_size: int = 64
    """Examples per forward pass when evaluating."""
    lr: float | None = None
    """Learning rate of the prompt (or of the backbone, for full fine-tuning); None: the method's default."""
    head_lr: float | None = None
    """Learning rate of the task's classification head; None: the method's default."""
    optimizer: str | None = field(default=None, metadata={"choices": OPTIMIZERS})
    """adamw | adafactor (Adafactor with a fixed learning rate, as Lester et al. 2021); None: the method's default."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) or Adafactor's; 0 keeps a prompt free to move."""
    warmup_ratio: float = 0.06
    """Fraction of the steps over which the learning rate rises linearly from 0."""
    schedule: str = field(default="linear", metadata={"choices": SCHEDULES})
    """Decay after warmup: linear | cosine | constant."""
    grad_accum: int = 1
    """Forward/backward passes per optimiser step."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping; None disables it."""
    seed: int = 0
    """Seeds initialisation, data order and every random number generator."""
    eval_every: int | None = None
    """Evaluate on the dev set every N steps (and at the end); None: about 10 times per run."""
    patience: int | None = None
    """Stop after this many evaluations without improvement of `metric`; None: never stop early."""
    metric: str | None = None
    """Dev metric for early stopping and for keeping the best prompt, one of the task's `metrics`
    (classification: accuracy, f1_macro...; generation: bleu, chrf, rougeL...; token
    classification: f1...); None: the task's default."""
    checkpoint_every: int | None = None
    """Write a resumable checkpoint every N steps; None: at every evaluation."""
    mixed_precision: str = field(default="auto", metadata={"choices": PRECISIONS})
    """auto (bf16 on a GPU that supports it, else none) | no | bf16 | fp16."""
    progress: bool = True
    """Show a progress bar with the loss and the dev metric."""
    log_every: int = 10
    """Write the mean loss and learning rate to log.jsonl every N steps."""
    max_seconds: float | None = None
    """Stop after this many seconds of training, evaluating once more (a budget for searches);
    None: no limit."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of storing them (less memory, more time);
    works with every method, prefixes included."""
    max_batch_tokens: int | None = None
    """Run each batch as forwards of at most this many padded tokens, its rows in order of length
    (less padding, so less work where a forward's cost grows with its tokens, as on a CPU); the loss
    and the gradient are the batch's. None: one forward per batch."""

    report_to: str | None = None
    """Experiment trackers to log to through Accelerate, comma-separated (tensorboard, mlflow,
    wandb, aim, comet_ml, clearml, dvclive, swanlab, trackio) or all: the run's configuration, the
    loss and learning rate every `log_every` steps and the dev metrics at every evaluation (and,
    for MLflow, the saved prompt as the run's artifact). TensorBoard writes into the output folder's
    `trackers/`; MLflow to $MLFLOW_TRACKING_URI (default ./mlruns)."""
    run_name: str | None = None
    """The trackers' project (TensorBoard's run folder, MLflow's experiment); None: the output
    folder's name."""

    def trackers(self) -> list[str]:
        """`report_to` as a list of tracker names."""
        names = _tracker_names(self.report_to)
        return list(TRACKERS) if names == ["all"] else names

    def __post_init__(self):
        names = _tracker_names(self.report_to) if isinstance(self.report_to, str) else []
        unknown = sorted(set(names) - set(TRACKERS) - {"all"})
        check(
            self.report_to is None or (isinstance(self.report_to, str) and names and not unknown),
            "report_to",
            f"unknown tracker(s) {unknown}; known: {', '.join(TRACKERS)}, or all",
        )
        check(
            self.run_name is None or (isinstance(self.run_name, str) and self.run_name.strip()),
            "run_name",
            "must be non-empty text",
        )
        check(self.max_steps is None or self.max_steps > 0, "max_steps", "must be positive")
        check(self.max_seconds is None or self.max_seconds > 0, "max_seconds", "must be positive")
        check(self.epochs > 0, "epochs", "must be positive")
        check(self.batch_size > 0 and self.eval_batch_size > 0, "batch_size", "must be positive")
        check(
            self.grad_accum > 0 and self.batch_size % self.grad_accum == 0,
            "grad_accum",
            f"must divide batch_size ({self.batch_size})",
        )
        check(self.lr is None or self.lr > 0, "lr", "must be positive")
        check(self.head_lr is None or self.head_lr > 0, "head_lr", "must be positive")
        check(self.optimizer is None or self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}")
        check(self.schedule in SCHEDULES, "schedule", f"must be one of {SCHEDULES}")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        check(
            self.metric is None or (isinstance(self.metric, str) and self.metric),
            "metric",
            "must be the name of one of the task's metrics",
        )
        check(self.mixed_precision in PRECISIONS, "mixed_precision", f"must be one of {PRECISIONS}")
        check(self.max_batch_tokens is None or self.max_batch_tokens > 0, "max_batch_tokens", "must be positive")


def _tracker_names(report_to: str | None) -> list[str]:
    return [n.strip() for n in (report_to or "").split(",") if n.strip()]
