"""The benchmarks' report helpers: a report written after one more method keeps what was published."""

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.same_on_every_transformers  # reaches no transformers code

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def common(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    return module


def _finish(work: Path, method: str, setting: dict, row: dict) -> None:
    (work / method).mkdir(parents=True)
    (work / method / "result.json").write_text(json.dumps({"setting": setting, "row": row}))


def test_rows_merge_the_published_ones_with_the_runs_finished_here(common, tmp_path):
    setting = {"steps": 150, "seed": 0}
    common.write_results("bench", {"setting": setting, "rows": {"a": {"score": 1.0}, "b": {"score": 2.0}}}, "# old\n")
    work = tmp_path / "runs"
    _finish(work, "b", setting, {"score": 3.0})  # rerun here: the run folder wins
    _finish(work, "c", setting, {"score": 4.0})  # new
    _finish(work, "d", {"steps": 10, "seed": 0}, {"score": 5.0})  # another setting: not this report's
    rows = common.finished_rows("bench", work, ("c", "a", "b", "d"), setting)
    assert rows == {"c": {"score": 4.0}, "a": {"score": 1.0}, "b": {"score": 3.0}}
    assert list(rows) == ["c", "a", "b"]


def test_rows_published_for_another_setting_are_not_taken(common, tmp_path):
    common.write_results("bench", {"setting": {"steps": 150}, "rows": {"a": {"score": 1.0}}}, "# old\n")
    assert common.finished_rows("bench", tmp_path / "runs", ("a",), {"steps": 300}) == {}
    assert common.finished_rows("bench", tmp_path / "runs", ("a",), {"steps": 150}) == {"a": {"score": 1.0}}


def test_results_are_written_whole(common):
    common.write_results("bench", {"rows": {}}, "# table\n")
    assert json.loads((common.RESULTS / "bench.json").read_text()) == {"rows": {}}
    assert (common.RESULTS / "bench.md").read_text() == "# table\n"
    assert sorted(p.name for p in common.RESULTS.iterdir()) == ["bench.json", "bench.md"]
