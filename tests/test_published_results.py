"""The published results: benchmarks/RESULTS.md is what benchmarks/make_results.py makes of the
committed results files, and every figure in the README's results and in docs/results.md is in it."""

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.same_on_every_transformers  # reaches no transformers code

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"


def _make_results():
    module = importlib.import_module("benchmarks.make_results")
    return module


def test_results_file_is_generated_from_the_results_files():
    assert RESULTS_MD.read_text() == _make_results().render(), (
        "benchmarks/RESULTS.md is out of date: run python -m benchmarks.make_results"
    )


def _figures(text: str) -> set[str]:
    """Numbers with a decimal point (accuracies, BLEU, ratios, seconds), as written; not the
    versions of libraries."""
    text = re.sub(r"(transformers|PEFT|torch) \d+\.\d+", "", text)
    return set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.]*\d)", text))


def _sections(results: str) -> dict[int, str]:
    """RESULTS.md's numbered sections ("## N. ..."), by number."""
    parts = re.split(r"^## (\d+)\. ", results, flags=re.MULTILINE)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def _unpublished(text: str, sections: dict[int, str]) -> tuple[int, list]:
    """How many figures `text` reports, and the blocks with a figure not in the sections of
    RESULTS.md they cite."""
    cited, checked, wrong = set(), 0, []
    for block in re.split(r"\n\s*\n", text):
        if block.startswith(("## ", "### ")):
            cited = set()
        cited |= {int(n) for n in re.findall(r"sections?\s+(\d+)", block)}
        figures = _figures(block)
        if not figures:
            continue
        published = set().union(*(_figures(sections[n]) for n in cited if n in sections)) if cited else set()
        absent = sorted(figures - published)
        checked += len(figures)
        if absent:
            wrong.append((sorted(cited), absent, block[:70]))
    return checked, wrong


@pytest.mark.parametrize(
    ("document", "least"),
    [("README.md", 10), ("docs/results.md", 100)],
)
def test_every_published_figure_comes_from_the_section_it_cites(document, least):
    """Each paragraph, list or table of the README's results and of docs/results.md cites the
    sections of RESULTS.md its figures come from ("section 3"; a citation holds for the rest of its
    subsection), and every figure in it is in one of those sections: a figure found only elsewhere
    in RESULTS.md, or a block of figures that cites nothing, fails."""
    text = (ROOT / document).read_text()
    if document == "README.md":
        start = text.index("\n## Results\n")
        text = text[start : text.index("\n## ", start + 1)]
    sections = _sections(RESULTS_MD.read_text())
    assert len(sections) >= 10
    checked, wrong = _unpublished(text, sections)
    assert checked >= least  # the document does report results
    assert not wrong, f"{document}: figures not in the RESULTS.md sections their paragraph cites: {wrong}"
