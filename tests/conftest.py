import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The tests write only under temporary folders: prompttune's cache (GGUF files dequantised) and
# default registry are the session's own, not the user's (~/.cache/prompttune, ~/.prompttune).
# Subprocesses the tests start inherit them.
_SCRATCH = tempfile.mkdtemp(prefix="prompttune-tests-")
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
os.environ["PROMPTTUNE_CACHE"] = os.path.join(_SCRATCH, "cache")
os.environ["PROMPTTUNE_REGISTRY"] = os.path.join(_SCRATCH, "registry")
USER_FOLDERS = (Path.home() / ".cache" / "prompttune", Path.home() / ".prompttune")


def _snapshot(folders) -> dict:
    """Every path under the user's prompttune folders, with its size and time of change."""
    seen = {}
    for folder in folders:
        for path in [folder, *(folder.rglob("*") if folder.is_dir() else [])]:
            try:
                info = path.lstat()
            except OSError:
                continue
            seen[str(path)] = (info.st_size, info.st_mtime_ns)
    return seen


_BEFORE = _snapshot(USER_FOLDERS)


def pytest_sessionfinish(session, exitstatus):
    """A test run that wrote into the user's own prompttune folders fails, naming what changed."""
    after = _snapshot(USER_FOLDERS)
    changed = sorted(p for p in set(_BEFORE) | set(after) if _BEFORE.get(p) != after.get(p))
    if changed:
        sys.stderr.write(
            "\nthe user's own prompttune folders changed during the tests (a test wrote there, or another "
            "prompttune run did meanwhile): " + ", ".join(changed[:10]) + "\n"
        )
        session.exitstatus = 1


import tiny
import transformers

# The benchmarks are a package beside prompttune (`python -m benchmarks.NAME`); tests import it.
if str(Path(__file__).resolve().parent.parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prompttune import Backbone, ClassificationConfig, Example

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

FAMILIES = tiny.FAMILIES
LM_FAMILIES = tuple(f for f in FAMILIES if f != "bert_encoder")

# A handful of sentences; "positive" sentences use the first half of the adjectives.
SENTENCES = [
    ("the movie was great", "1"),
    ("a terrible film", "0"),
    ("i loved the story", "1"),
    ("the plot is dull", "0"),
    ("really wonderful acting", "1"),
    ("awful and boring", "0"),
    ("the best film", "1"),
    ("the worst movie", "0"),
]


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tiny_models")
    return {family: tiny.save(family, root / family) for family in FAMILIES}


@pytest.fixture
def load(model_dirs):
    def _load(family: str, padding_side: str | None = None) -> Backbone:
        backbone = Backbone.from_pretrained(str(model_dirs[family]))
        if padding_side:
            backbone.tokenizer.padding_side = padding_side
        return backbone

    return _load


@pytest.fixture
def examples() -> list[Example]:
    return [Example(text, label=label, origin=f"test, row {i}") for i, (text, label) in enumerate(SENTENCES, 1)]


def task_config(**changes) -> ClassificationConfig:
    values = dict(labels=("0", "1"), verbalizer=(("bad",), ("good",)), template="{text} it was {mask} .")
    values.update(changes)
    return ClassificationConfig(**values)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
