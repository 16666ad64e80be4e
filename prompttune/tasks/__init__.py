"""Tasks turn a frozen model's outputs into losses, predictions and metrics. Each file defines one
task and registers it by name (tasks/base.py holds the contract)."""

from . import classification, generation, token_classification  # noqa: F401  (registration)
from .base import TASKS, Task, register, task_class
from .classification import ClassificationConfig, ClassificationTask
from .generation import GenerationConfig, GenerationTask

__all__ = [
    "TASKS",
    "ClassificationConfig",
    "ClassificationTask",
    "GenerationConfig",
    "GenerationTask",
    "Task",
    "register",
    "task_class",
]
