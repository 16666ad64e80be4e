"""`prompttune compare`: a tiny sweep end to end offline, resuming after being killed midway without
redoing finished cells, a failed cell reported without losing the others, the table and the plots."""

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SENTENCES

from prompttune.errors import ConfigError
from prompttune.sweeps.compare import SweepSpec, cells


@pytest.fixture
def sweep(model_dirs, tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in SENTENCES * 2))
    spec = {
        "model": str(model_dirs["bert"]),
        "train": str(data),
        "eval": str(data),
        "template": "{text} it was {mask} .",
        "verbalizer": "0:bad,1:good",
        "methods": ["soft_prompt", "linear_probe"],
        "lengths": [2, 3],
        "inits": ["sample_vocab", "random"],
        "train_sizes": [2, "full"],
        "seeds": [0, 1],
        "train_options": {"max_steps": 2, "batch_size": 4},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, spec


def test_cells_follow_what_each_method_has(sweep):
    path, _ = sweep
    spec = SweepSpec.load(path)
    names = [c.name for c in cells(spec)]
    # soft_prompt: 2 lengths x 2 inits x 2 sizes x 2 seeds; linear_probe has neither length nor init.
    assert len(names) == 16 + 4 and len(set(names)) == len(names)
    assert "soft_prompt_len3_init-random_nfull_seed1" in names and "linear_probe_n2_seed0" in names
    with pytest.raises(ConfigError, match="unknown field"):
        SweepSpec.from_dict(
            {"model": "m", "train": "t", "eval": "e", "methods": ["soft_prompt"], "lenghts": [2]}, "x.yaml"
        )
    with pytest.raises(ConfigError, match="train_sizes"):
        SweepSpec.from_dict(
            {"model": "m", "train": "t", "eval": "e", "methods": ["soft_prompt"], "train_sizes": [0]}, "x.yaml"
        )


def _run(args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "prompttune", "compare", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_sweep_runs_resumes_after_a_kill_and_reports(sweep, tmp_path):
    path, spec = sweep
    out = tmp_path / "out"
    args = ["--spec", path, "--output", out, "--inits", "sample_vocab", "--lengths", "2", "--seeds", "0,1"]
    # 4 soft_prompt cells + 4 linear_probe cells; the sweep and its worker are killed as soon as the
    # sweep has been told that 2 cells finished (one worker: a third cannot have finished).
    crash = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "crash.py"),
            "compare",
            json.dumps({"argv": list(map(str, args))}),
            "--kill-after-cells",
            "2",
        ],
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=600,
    )
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/result.json")}
    assert len(finished) == 2

    process = _run(args + ["--workers", "2"])
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert f"{len(finished)} of 8 cells already finished" in stderr
    for name, mtime in finished.items():  # finished cells were not run again
        assert (out / "cells" / name / "result.json").stat().st_mtime_ns == mtime
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 8 and all(r["status"] == "done" for r in rows)
    assert {
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "trainable_parameters",
        "artifact_bytes",
        "train_seconds",
        "peak_memory_mb",
    } <= set(rows[0])
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert len(summary) == 4 and all(s["seeds"] == "2" for s in summary)
    for s in summary:
        accuracies = [
            float(r["accuracy"]) for r in rows if r["method"] == s["method"] and r["train_size"] == s["train_size"]
        ]
        assert abs(float(s["accuracy_mean"]) - sum(accuracies) / len(accuracies)) < 1e-9
    # The 2-per-class subsets really have 2 examples per class.
    assert all(int(r["train_examples"]) == 4 for r in rows if r["train_size"] == "2")
    for plot in ("metric_vs_train_size", "metric_vs_parameters", "training_curves"):
        assert (out / f"{plot}.png").stat().st_size > 1000, plot
    assert not (out / "metric_vs_length.png").exists()  # one length (--lengths 2): nothing to plot against
    report = (out / "report.html").read_text()
    assert "metric_vs_train_size.png" in report and "soft_prompt" in report
    assert "| soft_prompt | 2 | sample_vocab | 2 | 2 |" in (out / "summary.md").read_text()

    # Another sweep in the same folder is refused rather than mixed in.
    process = _run(["--spec", path, "--output", out, "--seeds", "5"])
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "holds a different sweep" in stderr


def test_a_failed_cell_is_reported_and_the_others_finish(sweep, tmp_path):
    path, spec = sweep
    out = tmp_path / "out"
    # init=text without init_text fails for soft_prompt; linear_probe cells still run.
    process = _run(
        [
            "--spec",
            path,
            "--output",
            out,
            "--inits",
            "text",
            "--lengths",
            "2",
            "--seeds",
            "0",
            "--train-sizes",
            "full",
            "--workers",
            "2",
        ]
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 1
    assert json.loads(stdout)["failed"] == 1
    rows = {r["cell"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert rows["linear_probe_nfull_seed0"]["status"] == "done"
    failed = rows["soft_prompt_len2_init-text_nfull_seed0"]
    assert failed["status"] == "failed" and "init_text" in failed["error"]
    assert (out / "cells" / "soft_prompt_len2_init-text_nfull_seed0" / "error.txt").is_file()
    assert "Failed cells:" in (out / "summary.md").read_text()


def test_cells_run_as_tasks_on_a_local_ray_instance(sweep, tmp_path):
    path, _ = sweep
    out = tmp_path / "out"
    process = _run(
        [
            "--spec",
            path,
            "--output",
            out,
            "--methods",
            "soft_prompt",
            "--inits",
            "sample_vocab",
            "--lengths",
            "2",
            "--seeds",
            "0,1",
            "--train-sizes",
            "full",
            "--ray",
            "local",
        ]
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    assert (out / "summary.md").is_file() and (out / "report.html").is_file()


def test_extrapolation_scores_seen_and_unseen_categories_apart(model_dirs, tmp_path):
    """Train on some categories, score the eval rows of seen and unseen categories separately."""
    rows = [
        {"category": c, "source": f"{w} story", "target": f"the {w} story"}
        for c, words in (("films", ["movie", "plot"]), ("books", ["story", "film"]), ("art", ["great", "best"]))
        for w in words
    ]
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "model": str(model_dirs["gpt2"]),
        "task": "generation",
        "train": str(train),
        "eval": str(dev),
        "methods": ["prefix"],
        "lengths": [2],
        "seeds": [0],
        "method_options": {"prefix": {"hidden_size": 8}},
        "train_filter": {"column": "category", "values": ["films", "books"]},
        "eval_groups": "category",
        "train_options": {"max_steps": 2, "batch_size": 2},
        "prompt_options": {"max_target_length": 4},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    process = _run(["--spec", path, "--output", tmp_path / "out"])
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    row = next(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert row["train_examples"] == "4"  # the art rows were left out of training
    assert {"bleu", "seen_bleu", "unseen_bleu", "seen_rougeL", "unseen_rougeL"} <= set(row)
    seen = [json.loads(l) for l in (tmp_path / "out" / "data" / "eval_seen.jsonl").read_text().splitlines()]
    unseen = [json.loads(l) for l in (tmp_path / "out" / "data" / "eval_unseen.jsonl").read_text().splitlines()]
    assert {r["category"] for r in seen} == {"films", "books"} and {r["category"] for r in unseen} == {"art"}
    assert "unseen_bleu" in (tmp_path / "out" / "summary.md").read_text()
    # One length and one training size: no plot against either, but the others are drawn.
    assert not (tmp_path / "out" / "metric_vs_length.png").exists()
    assert not (tmp_path / "out" / "metric_vs_train_size.png").exists()
    assert (tmp_path / "out" / "training_curves.png").is_file()


def test_eval_subset_keeps_every_reference_of_a_chosen_source(tmp_path):
    """E2E has several rows (references) per meaning representation: a generation subset picks
    sources, and keeps all their rows, so that BLEU stays multi-reference."""
    from prompttune.sweeps.compare import _eval_subset

    rows = [{"mr": f"name[{i}]", "ref": f"Place {i} number {j}."} for i in range(10) for j in range(i % 3 + 1)]
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = SweepSpec.from_dict(
        {
            "model": "m",
            "train": str(dev),
            "eval": str(dev),
            "methods": ["prefix"],
            "task": "generation",
            "source_column": "mr",
            "target_column": "ref",
            "eval_size": 4,
        },
        "x.yaml",
    )
    kept = [json.loads(l) for l in open(_eval_subset(spec, tmp_path / "data"))]
    sources = {r["mr"] for r in kept}
    assert len(sources) == 4
    assert len(kept) == sum(1 for r in rows if r["mr"] in sources)
    # Classification keeps rows.
    spec = SweepSpec.from_dict(
        {"model": "m", "train": str(dev), "eval": str(dev), "methods": ["soft_prompt"], "eval_size": 4}, "x.yaml"
    )
    assert len(open(_eval_subset(spec, tmp_path / "cls")).readlines()) == 4


def test_report_to_gives_every_cell_its_own_tracker_run(sweep, tmp_path):
    """`compare --report-to tensorboard`: each cell logs to a run named after it, in its folder."""
    path, _ = sweep
    out = tmp_path / "out"
    process = _run(
        [
            "--spec",
            path,
            "--output",
            out,
            "--methods",
            "linear_probe",
            "--seeds",
            "0,1",
            "--train-sizes",
            "full",
            "--report-to",
            "tensorboard",
        ]
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    for cell in ("linear_probe_nfull_seed0", "linear_probe_nfull_seed1"):
        assert list((out / "cells" / cell / "trackers" / cell).glob("events.out.tfevents.*")), cell


def test_a_sweep_scores_every_cell_per_group_and_plots_it(model_dirs, tmp_path):
    """`group_column`: each cell's eval metrics per group value, the gap, summary columns and a plot."""
    data = tmp_path / "train.csv"
    data.write_text(
        "text,label,site\n"
        + "".join(f"{t},{l},{'north' if i % 2 else 'south'}\n" for i, (t, l) in enumerate(SENTENCES * 2))
    )
    out = tmp_path / "out"
    process = _run(
        [
            "--model",
            model_dirs["bert"],
            "--train",
            data,
            "--eval",
            data,
            "--methods",
            "linear_probe",
            "--seeds",
            "0,1",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--group-column",
            "site",
            "--output",
            out,
        ]
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    for row in rows:
        assert float(row["north:count"]) + float(row["south:count"]) == len(SENTENCES) * 2
        gap = abs(float(row["north:accuracy"]) - float(row["south:accuracy"]))
        assert float(row["gap:accuracy"]) == pytest.approx(gap)
    summary = (out / "summary.md").read_text()
    assert "north:accuracy" in summary and "gap:accuracy" in summary
    assert "Groups of site with fewer than 30 eval rows (their figures are unstable): north (8), south (8)" in summary
    assert (out / "metric_by_group.png").is_file()
