"""Tasks turn a frozen model's outputs into losses, predictions and metrics."""

from .classification import ClassificationConfig, ClassificationTask

TASKS = {ClassificationTask.name: ClassificationTask}

__all__ = ["TASKS", "ClassificationConfig", "ClassificationTask"]
