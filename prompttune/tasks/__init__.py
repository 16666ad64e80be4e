"""Tasks turn a frozen model's outputs into losses, predictions and metrics."""

from .classification import ClassificationConfig, ClassificationTask
from .generation import GenerationConfig, GenerationTask

TASKS = {ClassificationTask.name: ClassificationTask, GenerationTask.name: GenerationTask}


def task_class(config) -> type:
    """The task a task config belongs to."""
    for cls in TASKS.values():
        if isinstance(config, cls.Config):
            return cls
    raise TypeError(f"no task takes a {type(config).__name__}")


__all__ = ["TASKS", "ClassificationConfig", "ClassificationTask", "GenerationConfig", "GenerationTask", "task_class"]
