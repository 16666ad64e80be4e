"""Prompt methods. Each file defines one method and registers it by name."""

from . import baselines, deep_prompt, hard_prompt, p_tuning, prefix, searched, soft_prompt  # noqa: F401  (registration)
from .base import METHODS, PromptMethod, method_class, register

__all__ = ["METHODS", "PromptMethod", "method_class", "register"]
