"""Experiment trackers through Accelerate (`report_to`): offline, a TensorBoard event file in the
output folder and a local MLflow file store, each with the run's configuration, the loss and
learning rate at every logged step, the dev metrics at every evaluation, and (MLflow) the prompt."""

import pytest
from conftest import SENTENCES

from prompttune import ConfigError
from prompttune.api import train_prompt


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in SENTENCES))
    return path


def test_tensorboard_and_mlflow_receive_the_runs_scalars_config_and_prompt(model_dirs, data, tmp_path, monkeypatch):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local file store (MLflow 3 prefers a database)
    output = tmp_path / "sst-run"
    metrics = train_prompt(
        model=str(model_dirs["bert"]),
        method="soft_prompt",
        train=str(data),
        eval=str(data),
        output=str(output),
        verbalizer="0:bad,1:good",
        max_steps=6,
        batch_size=4,
        log_every=2,
        eval_every=3,
        method_options={"num_virtual_tokens": 2},
        progress=False,
        report_to="tensorboard,mlflow",
    )

    run = output / "trackers" / "sst-run"  # the run is named after the output folder
    assert list(run.glob("events.out.tfevents.*"))  # (the hyperparameters go to a subfolder of it)
    events = EventAccumulator(str(run))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "eval/accuracy", "best/accuracy"} <= set(tags)
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6]
    assert [e.step for e in events.Scalars("eval/accuracy")] == [3, 6]
    assert events.Scalars("best/accuracy")[-1].value == pytest.approx(metrics["dev_metrics"]["accuracy"])

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("sst-run")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.params["method"] == "soft_prompt" and run.data.params["train.max_steps"] == "6"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [2, 4, 6]
    assert run.data.metrics["best/accuracy"] == pytest.approx(metrics["dev_metrics"]["accuracy"])
    stored = sorted(a.path for a in client.list_artifacts(run.info.run_id, "prompt"))
    assert stored == ["prompt/metrics.json", "prompt/prompt.json", "prompt/prompt.safetensors"]
    assert run.info.status == "FINISHED"


def test_an_unknown_tracker_is_refused_before_training(model_dirs, data, tmp_path, capsys):
    from prompttune.cli import main

    with pytest.raises(ConfigError, match=r"report_to: unknown tracker\(s\) \['tensorbored'\]; known: tensorboard"):
        train_prompt(
            model=str(model_dirs["bert"]),
            method="soft_prompt",
            train=str(data),
            output=str(tmp_path / "o"),
            report_to="tensorbored",
            max_steps=1,
        )
    assert (
        main(
            [
                "train",
                "--model",
                str(model_dirs["bert"]),
                "--method",
                "soft_prompt",
                "--train",
                str(data),
                "--output",
                str(tmp_path / "o"),
                "--report-to",
                "wandb,nope",
            ]
        )
        == 2
    )
    assert "report_to: unknown tracker(s) ['nope']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
