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


def quoted(value, limit: int = 80) -> str:
    """`value` written for a message, cut after `limit` characters (what a user sent may be megabytes)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
