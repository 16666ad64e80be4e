"""prompttune: adapt a frozen pretrained language model by training only a prompt.

The package is laid out by layer, each importing only from those below it (checked by
import-linter, see pyproject.toml):

- `cli`: the command line;
- `sweeps` (compare), `serving` (server, batcher, client), `analysis` (inspect);
- `api`: the command line's operations as functions;
- `inference` (mixed batches, ensembles), `training` (the loop, checkpoints);
- `artifacts` (prompt artifacts, the registry);
- `model`: a frozen backbone, a method and a task joined;
- `methods` and `tasks`, which never import each other;
- `core`: the backbone, virtual tokens, key/value prefixes, model sources;
- `storage`, `options` (what a run tells its task), `runtime`, then `config` and `errors`.

The names below are imported when first used, so `import prompttune` (and `prompttune --help`)
does not load torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Backbone": "prompttune.core.backbone",
    "Columns": "prompttune.tasks.data",
    "Example": "prompttune.tasks.data",
    "load_examples": "prompttune.tasks.data",
    "ArtifactError": "prompttune.errors",
    "ConfigError": "prompttune.errors",
    "DataError": "prompttune.errors",
    "ModelError": "prompttune.errors",
    "PromptTuneError": "prompttune.errors",
    "PromptModel": "prompttune.model",
    "ClassificationConfig": "prompttune.tasks",
    "load_prompt": "prompttune.artifacts.artifact",
    "save_prompt": "prompttune.artifacts.artifact",
    "TaskOptions": "prompttune.options",
    "ClassificationOptions": "prompttune.options",
    "GenerationOptions": "prompttune.options",
    "TokenClassificationOptions": "prompttune.options",
    "Endpoint": "prompttune.options",
    "TrainConfig": "prompttune.training",
    "evaluate": "prompttune.training",
    "train": "prompttune.training",
    "PromptSet": "prompttune.inference.mixed",
    "Registry": "prompttune.artifacts.registry",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (the names _EXPORTS maps, loaded on first use)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prompttune' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
