"""The README's quick start, run as written: a newcomer copying it gets a trained prompt on data
the repository holds, from the command line and from Python."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.real_model


def _quick_start() -> tuple[str, str]:
    """The bash block and the Python block of the README's quick start."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Quick start\n")
    section = readme[start : readme.index("\n## ", start + 1)]
    bash = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    return bash, python


def _folder(tmp_path: Path) -> Path:
    """A working folder holding what the quick start reads: the repository's examples."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def _documents(text: str) -> list:
    """The JSON documents a run of commands printed, one after another (some span lines)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        document, end = decoder.raw_decode(text, at)
        found.append(document)
        at = end
    return found


def test_the_readme_trains_a_prompt_from_its_first_commands(tmp_path):
    bash, _ = _quick_start()
    assert bash.lstrip().startswith("prompttune train")  # the README's first command trains
    work = _folder(tmp_path / "cli")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", bash], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    trained, positive, negative, evaluated = _documents(result.stdout)
    assert trained["method"] == "soft_prompt" and trained["dev"]["accuracy"] >= 0.8
    assert (positive["label"], negative["label"]) == ("positive", "negative")
    assert evaluated["accuracy"] == trained["dev"]["accuracy"]
    assert (work / "runs" / "sentiment" / "prompt.safetensors").is_file()


def test_the_readme_trains_a_prompt_from_python(tmp_path):
    _, python = _quick_start()
    work = _folder(tmp_path / "python")
    result = subprocess.run([sys.executable, "-c", python], cwd=work, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy, row = result.stdout.splitlines()[-2:]
    assert float(accuracy) >= 0.8
    assert row.startswith("positive {")
