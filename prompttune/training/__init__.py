"""The one training loop (CPU, GPU, many processes through Accelerate), its config and its
resumable checkpoints. The loop's names are imported when first used, so the config can be read
without torch."""

from importlib import import_module

from .config import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]


def __getattr__(name: str):
    if name in ("TrainResult", "evaluate", "train"):
        return getattr(import_module("prompttune.training.loop"), name)
    raise AttributeError(f"module 'prompttune.training' has no attribute {name!r}")
