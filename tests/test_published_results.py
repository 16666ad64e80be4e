"""The published results: benchmarks/RESULTS.md is what benchmarks/make_results.py makes of the
committed results files, and every figure in the README's results section is in it."""

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.same_on_every_transformers  # reaches no transformers code

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"


def _make_results():
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "benchmarks" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_file_is_generated_from_the_results_files():
    assert RESULTS_MD.read_text() == _make_results().render(), \
        "benchmarks/RESULTS.md is out of date: run python benchmarks/make_results.py"


def _figures(text: str) -> set[str]:
    """Numbers with a decimal point (accuracies, BLEU, ratios, seconds), as written."""
    return set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.]*\d)", text))


def test_every_figure_in_the_readme_results_comes_from_the_results_file():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Results\n")
    section = readme[start:readme.index("\n## ", start + 1)]
    figures = _figures(section)
    assert len(figures) > 20  # the section does report results
    published = _figures(RESULTS_MD.read_text())
    absent = sorted(figures - published)
    assert not absent, f"README figures not in benchmarks/RESULTS.md: {absent}"
