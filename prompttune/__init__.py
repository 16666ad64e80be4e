"""prompttune: adapt a frozen pretrained language model by training only a prompt."""

__version__ = "0.1.0"

from .backbone import Backbone  # noqa: E402
from .data import Columns, Example, load_examples  # noqa: E402
from .errors import ArtifactError, ConfigError, DataError, ModelError, PromptTuneError  # noqa: E402
from .model import PromptModel  # noqa: E402
from .tasks import ClassificationConfig  # noqa: E402
from .artifact import load_prompt, save_prompt  # noqa: E402
from .training import TrainConfig, evaluate, train  # noqa: E402
from .mixed import PromptSet  # noqa: E402
from .registry import Registry  # noqa: E402

__all__ = [
    "ArtifactError", "Backbone", "ClassificationConfig", "Columns", "ConfigError", "DataError", "Example",
    "ModelError", "PromptModel", "PromptSet", "PromptTuneError", "Registry", "TrainConfig", "evaluate", "load_examples",
    "load_prompt", "save_prompt", "train",
]
