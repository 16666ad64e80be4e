"""Metrics per group (`evaluate --group-column`): each group's metrics are those of its rows scored
alone, with its count, small groups flagged, and the largest gap between groups named."""

import json

import pytest
from conftest import SENTENCES

from prompttune import DataError, PromptModel, save_prompt
from prompttune.api import evaluate_prompt
from prompttune.cli import main


@pytest.fixture
def prompt(load, tmp_path):
    from conftest import task_config

    model = PromptModel.create(load("bert"), "soft_prompt", task_config(), {"num_virtual_tokens": 2}, seed=0)
    return save_prompt(model, tmp_path / "prompt")


def write(path, rows):
    path.write_text("text,label,site\n" + "".join(f"{t},{l},{g}\n" for t, l, g in rows))
    return path


def _count_calls(monkeypatch, owner, name: str) -> list:
    calls, original = [], getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_each_group_scores_as_its_rows_alone_and_the_gap_is_named(prompt, model_dirs, tmp_path, monkeypatch):
    rows = [(t, l, "north" if i % 3 else "south") for i, (t, l) in enumerate(SENTENCES * 3)]
    data = write(tmp_path / "all.csv", rows)
    passes = _count_calls(monkeypatch, PromptModel, "batched_logits")
    result = evaluate_prompt(str(prompt), str(data), model=str(model_dirs["bert"]), group_column="site")
    assert len(passes) == 1  # every group is scored from the one pass over all rows
    groups = result["groups"]
    assert set(groups) == {"north", "south"}
    assert sum(g["count"] for g in groups.values()) == result["count"] == len(rows)
    for name in groups:
        alone = evaluate_prompt(
            str(prompt),
            str(write(tmp_path / f"{name}.csv", [r for r in rows if r[2] == name])),
            model=str(model_dirs["bert"]),
        )
        assert groups[name]["accuracy"] == pytest.approx(alone["accuracy"])
        assert groups[name]["f1_macro"] == pytest.approx(alone["f1_macro"])
        assert groups[name]["small"] == (groups[name]["count"] < 30)
    gap = result["group_gaps"]["accuracy"]
    best, worst = sorted(groups, key=lambda g: groups[g]["accuracy"], reverse=True)
    assert (gap["best"], gap["worst"]) == (best, worst)
    assert gap["gap"] == pytest.approx(groups[best]["accuracy"] - groups[worst]["accuracy"])
    assert gap["best_count"] == groups[best]["count"]


def test_the_command_line_reports_groups_and_refuses_rows_without_one(prompt, model_dirs, tmp_path, capsys):
    data = write(tmp_path / "d.csv", [(t, l, "a" if i % 2 else "b") for i, (t, l) in enumerate(SENTENCES)])
    assert (
        main(
            [
                "evaluate",
                "--prompt",
                str(prompt),
                "--data",
                str(data),
                "--group-column",
                "site",
                "--model",
                str(model_dirs["bert"]),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["groups"]) == {"a", "b"} and "accuracy" in printed["group_gaps"]
    missing = tmp_path / "missing.csv"
    missing.write_text(
        "text,label,site\n" + f"{SENTENCES[0][0]},{SENTENCES[0][1]},x\n{SENTENCES[1][0]},{SENTENCES[1][1]},\n"
    )
    with pytest.raises(
        DataError, match=r"missing.csv, data row 2 \(header not counted\): no value in the group column"
    ):
        evaluate_prompt(str(prompt), str(missing), model=str(model_dirs["bert"]), group_column="site")
    assert main(["evaluate", "--prompts", f"{prompt},{prompt}", "--data", str(data), "--group-column", "site"]) == 2
    assert "--group-column: scores one prompt" in capsys.readouterr().err


def test_generation_metrics_per_group(load, model_dirs, tmp_path, monkeypatch):
    from prompttune.tasks import GenerationConfig
    from prompttune.tasks.generation import GenerationTask

    model = PromptModel.create(
        load("gpt2"), "soft_prompt", GenerationConfig(max_target_length=3), {"num_virtual_tokens": 2}, seed=0
    )
    saved = save_prompt(model, tmp_path / "gen")
    rows = [
        {"source": t, "target": "good film" if l == "1" else "bad film", "category": "pos" if l == "1" else "neg"}
        for t, l in SENTENCES
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    passes = _count_calls(monkeypatch, GenerationTask, "generate_texts")
    result = evaluate_prompt(str(saved), str(data), model=str(model_dirs["gpt2"]), group_column="category")
    assert len(passes) == 1
    assert {g: v["count"] for g, v in result["groups"].items()} == {
        "pos": sum(r["category"] == "pos" for r in rows),
        "neg": sum(r["category"] == "neg" for r in rows),
    }
    assert set(result["group_gaps"]) == {"bleu", "chrf", "rouge1", "rouge2", "rougeL"}
    for name in ("pos", "neg"):
        alone = tmp_path / f"{name}.jsonl"
        alone.write_text("".join(json.dumps(r) + "\n" for r in rows if r["category"] == name))
        scores = evaluate_prompt(str(saved), str(alone), model=str(model_dirs["gpt2"]))
        for metric in ("bleu", "chrf", "rougeL"):
            assert result["groups"][name][metric] == pytest.approx(scores[metric]), (name, metric)
