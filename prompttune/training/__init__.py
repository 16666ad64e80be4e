"""The one training loop (CPU, GPU, many processes through Accelerate) and its resumable checkpoints."""

from .loop import TrainConfig, TrainResult, evaluate, train

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]
