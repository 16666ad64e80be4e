"""MkDocs hook: benchmarks/RESULTS.md, written by benchmarks/make_results.py beside the results it
reads, joins the site with the plots it shows, at the paths its links give."""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent


def on_files(files, config):
    benchmarks = ROOT / "benchmarks"
    for path in [benchmarks / "RESULTS.md", *sorted((benchmarks / "results").rglob("*.png"))]:
        uri = path.relative_to(ROOT).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
