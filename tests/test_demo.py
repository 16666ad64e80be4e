"""The demo needs nothing beside the repository: its data ships in examples/data/e2e."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.same_on_every_transformers  # reaches no transformers code


def test_the_demo_reads_its_data_from_a_copy_of_the_repository_alone(tmp_path):
    copy = tmp_path / "alone" / "prompttune"
    tracked = subprocess.run(["git", "ls-files", "examples"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in tracked.stdout.split():
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
    assert not (copy.parent / "shared").exists()
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import sys; sys.path.insert(0, 'examples'); import demo; "
        f"print(*demo.subsets(demo.SAMPLE, 500, 20, __import__('pathlib').Path({str(work)!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=copy, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    train, dev = (Path(p) for p in result.stdout.split())
    rows = list(csv.DictReader(open(train, newline="", encoding="utf-8")))
    dev_rows = list(csv.DictReader(open(dev, newline="", encoding="utf-8")))
    assert len(rows) == 500 and all(r["mr"] and r["ref"] for r in rows)
    assert len({r["mr"] for r in dev_rows}) == 20 and len(dev_rows) > 20  # every reference of each MR
    assert not {r["mr"] for r in rows} & {r["mr"] for r in dev_rows}  # E2E's splits share no MR
    licence = (copy / "examples" / "data" / "e2e" / "README.md").read_text()
    assert "CC BY-SA 4.0" in licence and "Novikova" in licence
