"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class PromptTuneError(Exception):
    """Base class: the message says what was wrong and where (file, row, column, field)."""


class DataError(PromptTuneError, ValueError):
    """Bad input data: names the file, row and column."""


class ConfigError(PromptTuneError, ValueError):
    """Bad method, task or training configuration: names the field."""


class ModelError(PromptTuneError):
    """A model that cannot be loaded, or does not match what an artifact was made for."""


class ArtifactError(PromptTuneError):
    """A prompt artifact that is missing, malformed, or made for another base model."""
