"""`prompttune train | evaluate | predict` end to end on a tiny model."""

import json
import subprocess
import sys

import pytest
from conftest import SENTENCES

from prompttune.cli import main


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("review,sentiment\n" + "".join(f"{t},{'pos' if l == '1' else 'neg'}\n" for t, l in SENTENCES))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_evaluate_predict(model_dirs, data, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run(
        capsys,
        "train",
        "--model",
        model_dirs["bert"],
        "--method",
        "soft_prompt",
        "--train",
        data,
        "--eval",
        data,
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--template",
        "{text} it was {mask} .",
        "--verbalizer",
        "neg:bad,pos:good",
        "--num-virtual-tokens",
        "4",
        "--max-steps",
        "6",
        "--batch-size",
        "4",
        "--output",
        out_dir,
        "--no-progress",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["parameters"]["trainable"] == 4 * 32
    assert {p.name for p in out_dir.iterdir()} >= {"prompt.json", "prompt.safetensors", "metrics.json", "log.jsonl"}
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["dev_metrics"]["count"] == len(SENTENCES)

    # Columns default to the ones the prompt was trained with.
    code, out, err = run(capsys, "evaluate", "--prompt", out_dir, "--data", data)
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["accuracy"] == metrics["dev_metrics"]["accuracy"]
    assert set(evaluated) >= {"precision_macro", "recall_macro", "f1_macro", "per_class", "confusion_matrix"}

    code, out, err = run(capsys, "predict", "--prompt", out_dir, "a great film", "the worst plot")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["a great film", "the worst plot"]
    for r in rows:
        assert set(r["probabilities"]) == {"neg", "pos"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)

    code, out, err = run(capsys, "predict", "--prompt", out_dir, "--data", data)
    assert code == 0 and len(out.splitlines()) == len(SENTENCES)


def test_hard_prompt_scores_without_training(model_dirs, data, tmp_path, capsys):
    code, out, err = run(
        capsys,
        "train",
        "--model",
        model_dirs["gpt2"],
        "--method",
        "hard_prompt",
        "--train",
        data,
        "--eval",
        data,
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--template",
        "{text} it was {mask}",
        "--verbalizer",
        "neg:bad,pos:good",
        "--output",
        tmp_path / "h",
    )
    assert code == 0, err
    assert json.loads(out)["parameters"]["trainable"] == 0


def test_an_interrupted_run_is_resumed_with_its_own_arguments_or_restarted(
    model_dirs, data, tmp_path, capsys, monkeypatch
):
    common = [
        "train",
        "--model",
        model_dirs["bert_encoder"],
        "--method",
        "linear_probe",
        "--train",
        data,
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--output",
        tmp_path / "r",
        "--no-progress",
        "--checkpoint-every",
        "1",
        "--eval-every",
        "3",
    ]
    code, _, err = run(capsys, *common, "--max-steps", "2", "--resume")
    assert code == 2 and "no interrupted run" in err

    import prompttune.training.loop

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(prompttune.training.loop, "evaluate", killed)
    with pytest.raises(Killed):  # at the end of step 3, after the checkpoints of steps 1 and 2
        run(capsys, *common, "--max-steps", "3", "--eval", data)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [".prompttune"]  # no artifact yet

    code, _, err = run(capsys, *common, "--max-steps", "4", "--eval", data, "--resume")
    assert code == 2 and "arguments differ from the interrupted run in ['max_steps']" in err
    code, _, err = run(capsys, *common, "--max-steps", "3", "--eval", data)
    assert code == 2 and "holds an interrupted run (checkpoint at step 2)" in err and "--restart" in err
    # The run's folder and its data may move; what matters is that the data is the same.
    (tmp_path / "r").rename(tmp_path / "moved")
    data.rename(tmp_path / "data.csv")
    data = tmp_path / "data.csv"
    common[common.index(tmp_path / "r")] = tmp_path / "moved"
    common[common.index("--train") + 1] = data
    other = tmp_path / "other.csv"
    other.write_text(data.read_text() + "one more,pos\n")
    code, _, err = run(capsys, *common, "--max-steps", "3", "--eval", other, "--resume")
    assert code == 2 and "arguments differ from the interrupted run in ['eval']" in err
    code, _, err = run(capsys, *common, "--max-steps", "3", "--eval", data, "--resume")
    assert code == 0, err
    metrics = json.loads((tmp_path / "moved" / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 3
    assert sorted(p.name for p in (tmp_path / "moved").iterdir()) == [
        "log.jsonl",
        "metrics.json",
        "prompt.json",
        "prompt.safetensors",
        "train_args.json",
    ]


def test_errors_are_one_line_without_traceback(model_dirs, data, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prompttune",
            "train",
            "--model",
            str(model_dirs["bert"]),
            "--method",
            "soft_prompt",
            "--train",
            str(data),
            "--output",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"prompttune: error: {data}: missing column 'text'; columns are ['review', 'sentiment']"
    ]


def test_unknown_label_in_dev_data_names_the_row(model_dirs, data, tmp_path, capsys):
    dev = tmp_path / "dev.csv"
    dev.write_text("review,sentiment\ngood film,pos\nodd film,neutral\n")
    code, _, err = run(
        capsys,
        "train",
        "--model",
        model_dirs["bert_encoder"],
        "--method",
        "linear_probe",
        "--train",
        data,
        "--eval",
        dev,
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--output",
        tmp_path / "u",
    )
    assert code == 2
    assert f"{dev}, row 2, column 'sentiment': label 'neutral' never occurs in {data}" in err


def test_a_model_that_cannot_be_loaded_is_one_line(data, tmp_path, capsys):
    code, _, err = run(
        capsys,
        "train",
        "--model",
        tmp_path / "no-such-model",
        "--method",
        "soft_prompt",
        "--train",
        data,
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--output",
        tmp_path / "m",
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "cannot load config/tokenizer" in err


def test_generation_train_generate_evaluate(model_dirs, tmp_path, capsys):
    data = tmp_path / "e2e.csv"
    rows = [
        ("name[red], food[cat]", "the red cat"),
        ("name[red], food[cat]", "a red cat"),
        ("name[blue]", "the blue dog"),
    ]
    data.write_text("mr,ref\n" + "".join(f'"{mr}",{ref}\n' for mr, ref in rows))
    out_dir = tmp_path / "gen"
    code, out, err = run(
        capsys,
        "train",
        "--model",
        model_dirs["gpt2"],
        "--method",
        "prefix",
        "--task",
        "generation",
        "--train",
        data,
        "--eval",
        data,
        "--source-column",
        "mr",
        "--target-column",
        "ref",
        "--num-virtual-tokens",
        "3",
        "--option",
        "hidden_size=16",
        "--max-steps",
        "4",
        "--batch-size",
        "3",
        "--max-target-length",
        "6",
        "--gradient-checkpointing",
        "--output",
        out_dir,
        "--no-progress",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary["dev"]) == {"bleu", "chrf", "rouge1", "rouge2", "rougeL"}
    assert {p.name for p in out_dir.iterdir()} >= {"prompt.json", "prompt.safetensors", "training_state.safetensors"}
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["dev_metrics"]["count"] == 2  # two distinct sources, three references

    code, out, err = run(capsys, "evaluate", "--prompt", out_dir, "--data", data)
    assert code == 0, err
    assert json.loads(out)["bleu"] == pytest.approx(metrics["dev_metrics"]["bleu"])

    code, out, err = run(
        capsys,
        "generate",
        "--prompt",
        out_dir,
        "name[red]",
        "name[blue]",
        "--num-beams",
        "2",
        "--num-return-sequences",
        "2",
        "--max-new-tokens",
        "4",
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["source"] for r in lines] == ["name[red]", "name[blue]"] and all(
        len(r["generations"]) == 2 for r in lines
    )

    code, out, err = run(
        capsys, "generate", "--prompt", out_dir, "--data", data, "--do-sample", "--seed", "3", "--top-k", "5"
    )
    assert code == 0 and len(out.splitlines()) == 3

    # Continue training from the saved prompt (its MLP comes from training_state.safetensors).
    code, out, err = run(
        capsys,
        "train",
        "--model",
        model_dirs["gpt2"],
        "--method",
        "prefix",
        "--task",
        "generation",
        "--train",
        data,
        "--source-column",
        "mr",
        "--target-column",
        "ref",
        "--num-virtual-tokens",
        "3",
        "--option",
        "hidden_size=16",
        "--max-steps",
        "2",
        "--batch-size",
        "3",
        "--max-target-length",
        "6",
        "--init-from",
        out_dir,
        "--output",
        tmp_path / "more",
        "--no-progress",
    )
    assert code == 0, err

    # A classification prompt is refused by `generate`, and an encoder by --task generation.
    code, out, err = run(
        capsys,
        "train",
        "--model",
        model_dirs["bert_encoder"],
        "--method",
        "prefix",
        "--task",
        "generation",
        "--train",
        data,
        "--source-column",
        "mr",
        "--target-column",
        "ref",
        "--output",
        tmp_path / "x",
    )
    assert code == 2 and "needs a decoder-only or encoder-decoder model" in err


def test_ensemble_evaluate_and_predict(model_dirs, data, tmp_path, capsys):
    """`--prompts a,b,c`: each member's metrics as when evaluated alone, and the ensemble's."""
    dirs = []
    for method, seed in (("soft_prompt", 1), ("deep_prompt", 2), ("prefix", 3)):
        out_dir = tmp_path / method
        code, _, err = run(
            capsys,
            "train",
            "--model",
            model_dirs["bert"],
            "--method",
            method,
            "--train",
            data,
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--template",
            "{text} it was {mask} .",
            "--verbalizer",
            "neg:bad,pos:good",
            "--num-virtual-tokens",
            "3",
            "--max-steps",
            "4",
            "--batch-size",
            "4",
            "--seed",
            seed,
            "--output",
            out_dir,
            "--no-progress",
        )
        assert code == 0, err
        dirs.append(str(out_dir))
    for combine in ("mean", "vote"):
        code, out, err = run(capsys, "evaluate", "--prompts", ",".join(dirs), "--data", data, "--combine", combine)
        assert code == 0, err
        result = json.loads(out)
        assert result["combine"] == combine and list(result["members"]) == dirs
        for d in dirs:
            code, alone, _ = run(capsys, "evaluate", "--prompt", d, "--data", data)
            assert result["members"][d]["accuracy"] == json.loads(alone)["accuracy"]
        assert result["ensemble"]["count"] == len(SENTENCES)
    code, out, err = run(capsys, "predict", "--prompts", ",".join(dirs), "a great film", "the worst plot")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and all(set(r["members"]) == set(dirs) for r in rows)
    for r in rows:
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    code, _, err = run(capsys, "predict", "--prompts", dirs[0], "a great film")
    assert code == 2 and "at least two prompts" in err
    with pytest.raises(SystemExit):  # --prompt and --prompts together
        main(["predict", "--prompt", dirs[0], "--prompts", ",".join(dirs), "x"])


def test_search_then_inspect(model_dirs, data, tmp_path, capsys):
    """`--method autoprompt` saves a hard prompt with the tokens it found; `inspect` shows it."""
    out_dir = tmp_path / "ap"
    code, out, err = run(
        capsys,
        "train",
        "--model",
        model_dirs["bert"],
        "--method",
        "autoprompt",
        "--train",
        data,
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--template",
        "{prompt} {text} it was {mask} .",
        "--verbalizer",
        "neg:bad,pos:good",
        "--num-tokens",
        "2",
        "--max-steps",
        "3",
        "--batch-size",
        "4",
        "--output",
        out_dir,
        "--no-progress",
    )
    assert code == 0, err
    meta = json.loads((out_dir / "prompt.json").read_text())
    assert meta["method"] == "hard_prompt" and meta["task_config"]["template"].endswith("{text} it was {mask} .")
    rounds = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines() if "search" in line]
    assert [r["step"] for r in rounds] == [1, 2, 3] and all("prompt" in r["search"] for r in rounds)
    code, out, err = run(capsys, "inspect", out_dir)
    assert code == 0 and f"searched by autoprompt: {meta['searched']['prompt_text']!r}" in out

    soft = tmp_path / "soft"
    run(
        capsys,
        "train",
        "--model",
        model_dirs["bert"],
        "--method",
        "soft_prompt",
        "--train",
        data,
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--template",
        "{text} it was {mask} .",
        "--verbalizer",
        "neg:bad,pos:good",
        "--num-virtual-tokens",
        "2",
        "--init",
        "text",
        "--init-text",
        meta["searched"]["prompt_text"],
        "--max-steps",
        "1",
        "--output",
        soft,
        "--no-progress",
    )
    code, out, err = run(capsys, "inspect", soft, "--json", "--png", tmp_path / "soft.png", "--top", "2")
    assert code == 0, err
    report = json.loads(out)
    assert len(report["virtual_tokens"]) == 2 and len(report["virtual_tokens"][0]["nearest"]) == 2
    assert (tmp_path / "soft.png").stat().st_size > 1000
