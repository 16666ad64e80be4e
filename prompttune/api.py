"""The command line's operations as Python functions: `train_prompt`, `evaluate_prompt`, `predict`,
`generate`, and for ensembles of prompts `evaluate_ensemble` and `predict_ensemble`.

    from prompttune.api import train_prompt, evaluate_prompt, predict
    result = train_prompt(model="all-MiniLM-L6-v2", method="soft_prompt", train="train.tsv",
                          eval="dev.tsv", text_column="sentence", output="runs/sst2")
    print(result["dev_metrics"]["accuracy"])
    for row in predict("runs/sst2", ["a gripping, funny film"]):
        print(row["label"], row["probabilities"])

    train_prompt(model="path/to/gpt2", method="prefix", task="generation", train="e2e/trainset.csv",
                 source_column="mr", target_column="ref", output="runs/e2e")
    for row in generate("runs/e2e", ["name[Alimentum], area[city centre]"], num_beams=5):
        print(row["generations"][0])
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from .artifacts.artifact import ARTIFACT_FILES, META, METRICS, TENSORS, load_prompt, prompt_meta, stage_prompt
from .core.backbone import Backbone
from .errors import ConfigError, DataError
from .methods import PromptMethod
from .model import PromptModel
from .options import Endpoint, TaskOptions, option_names
from .runtime import is_main_process
from .storage import PRIVATE, Transaction, recover, sha256_file, write_json_atomic
from .tasks import task_class
from .tasks.data import Example
from .training import checkpoint
from .training.loop import TrainConfig, TrainResult, evaluate
from .training.loop import train as run_training

RUN_ARGS = "train_args.json"
RUN = "run"  # OUTPUT/.prompttune/run: a run in progress (its arguments, log and checkpoints)


def _new_prompt(model, method, method_options, task_settings, task_config, train_config, examples, placement):
    """The prompt to train, on the frozen model loaded as `placement` says, its start drawn from
    the training seed."""
    torch.manual_seed(train_config.seed)
    backbone = load_backbone(model, head=task_settings.head, **placement)
    return PromptModel.create(
        backbone,
        method,
        task_config,
        method_options,
        readout=getattr(task_settings, "readout", "auto"),
        seed=train_config.seed,
        examples=examples,
    )


def _start_run(run_dir: Path, args: dict) -> None:
    """A new run's folder: what a run without a checkpoint (or one `restart` discards) left there
    removed, the run's arguments written."""
    if run_dir.exists():
        checkpoint.remove(run_dir)
        (run_dir / "log.jsonl").unlink(missing_ok=True)
    write_json_atomic(run_dir / RUN_ARGS, args)


def train_prompt(
    model: str,
    method: str,
    train: str,
    output: str,
    eval: str | None = None,
    task: str = "classification",
    method_options: dict | None = None,
    init_from: str | None = None,
    resume: bool = False,
    restart: bool = False,
    force: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    **options,
) -> dict:
    """Train a prompt and write its artifact, `metrics.json`, `train_args.json` and `log.jsonl` into
    `output`, all at once when training has finished (files already there stay as they are until
    then; other files are never touched).

    While it runs, its arguments, log and checkpoints are in `output/.prompttune/run/`. An
    interrupted run is continued with `resume=True`, or discarded with `restart=True`; a new run
    refuses to start over one that has a checkpoint unless told which. A folder that already holds
    a prompt or a run's records (the files named above, a user's own or an earlier run's) is
    refused before training starts, unless `force`: then those are replaced when it ends.

    `task` is a registered task: "classification" (text, text_pair and label columns),
    "generation" (source and target columns; `max_length` bounds the source) or
    "token_classification" (text: the tokens, label: the tags). `options` are the fields of the
    task's options (`ClassificationOptions`: its columns, `labels`, `verbalizer`, `template`,
    `readout`, `instruction`, `chat`, `shots`, `max_length`, `head`...; `GenerationOptions`,
    `TokenClassificationOptions`; a column left as None takes the task's default; a field of another
    task's options is refused) and of `TrainConfig` (`max_steps`, `lr`, `batch_size`, `gradient_checkpointing`...), each
    documented there. `method_options` are the method's config fields (e.g.
    `{"num_virtual_tokens": 20, "init": "class_labels"}`). `init_from` starts from a saved prompt of
    the same method (its reparameterisation too, where it has one). Returns what `metrics.json` holds."""
    task_settings, train_options = _split_options(task, options)
    args = _recorded_args(locals(), task_settings, train_options)
    output_dir = Path(output)
    run_dir = output_dir / PRIVATE / RUN
    _check_run(output_dir, run_dir, args, resume, restart)
    _check_output(output_dir, force or resume)
    train_config = TrainConfig.from_dict(train_options, where="training options")
    columns, train_examples, eval_examples, task_config = _read_data(task, task_settings, train, eval, train_config)
    placement = {"device": device, "dtype": dtype, "device_map": device_map}
    prompt = _new_prompt(
        model, method, method_options, task_settings, task_config, train_config, train_examples, placement
    )
    if init_from is not None:
        _continue_from(prompt, init_from, prompt.backbone)
    if not resume and is_main_process():
        _start_run(run_dir, args)
    result = _fit(prompt, train_examples, eval_examples, train_config, output_dir, run_dir, resume)
    training, metrics = _records(args, prompt, train_config, len(train_examples), result)
    if is_main_process():
        _save_run(prompt, output_dir, run_dir, {"columns": columns, "training": training}, metrics)
        if "mlflow" in result.tracker_runs:
            _log_to_mlflow(result.tracker_runs["mlflow"], output_dir)
    return metrics


RECORDED = ("model", "method", "train", "output", "eval", "task", "method_options", "init_from", "dtype")


def _recorded_args(given: dict, settings: TaskOptions, train_options: dict) -> dict:
    """What `train_args.json` records of a run: its arguments, settings and data's sha256s (a
    resumed run must match them)."""
    args = {
        **{key: given[key] for key in RECORDED},
        **settings.to_dict(),
        **{k: v for k, v in train_options.items() if k != "progress"},
    }
    args["data_sha256"] = _data_digests(args)
    return args


def _records(args: dict, prompt: PromptModel, config: TrainConfig, examples: int, result: TrainResult) -> tuple:
    """The training record the artifact keeps, and what `metrics.json` holds."""
    init_from = args["init_from"]
    training = {
        "data": str(args["train"]),
        "data_sha256": args["data_sha256"]["train"],
        "examples": examples,
        "steps": result.steps,
        "best_step": result.best_step,
        "seconds": round(result.seconds, 3),
        "config": config.to_dict(),
        # Lineage: the prompt this one continued from (a registry links it to that prompt's version).
        "init_from": {"path": str(init_from), "prompt_sha256": sha256_file(Path(init_from) / "prompt.safetensors")}
        if init_from is not None
        else None,
    }
    metrics = {
        "method": args["method"],
        "model": args["model"],
        "dev_metrics": result.dev_metrics,
        "parameters": prompt.count_parameters(),
        "artifact_bytes": None,
        "training": {**training, "history": result.history},
    }
    return training, metrics


def _read_data(task: str, settings: TaskOptions, train: str, eval: str | None, config: TrainConfig) -> tuple:
    """The task's columns, the training and dev examples, and the task config they settle."""
    task_cls = task_class(task)
    columns = task_cls.resolve_columns(settings.columns())
    train_examples = task_cls.read_examples(train, columns)
    eval_examples = task_cls.read_examples(eval, columns) if eval else None
    task_config = task_cls.new_config(
        settings, train_examples, eval_examples, config.seed, train_name=str(train), columns=columns
    )
    return columns, train_examples, eval_examples, task_config


def _continue_from(prompt: PromptModel, init_from: str, backbone) -> None:
    """Start `prompt` from a saved prompt of the same method, config and task settings."""
    start = load_prompt(init_from, backbone=backbone, with_training_state=True)
    method = prompt.method.name
    if start.method.name != method or start.method.config != prompt.method.config:
        raise ConfigError(
            f"--init-from {init_from}: a {start.method.name} prompt with {start.method.config.to_dict()}; "
            f"this run trains {method} with {prompt.method.config.to_dict()}"
        )
    if start.task.config != prompt.task.config:
        raise ConfigError(
            f"--init-from {init_from}: its task settings {start.task.config.to_dict()} differ from "
            f"this run's {prompt.task.config.to_dict()}"
        )
    if prompt.method.training_state() and not start.method.training_state():
        raise ConfigError(
            f"--init-from {init_from}: holds no training state for {method}'s reparameterisation "
            f"(training_state.safetensors is missing)"
        )
    prompt.load_trainable_state(start.trainable_state())


def _fit(
    prompt: PromptModel,
    train_examples,
    eval_examples,
    config: TrainConfig,
    output_dir: Path,
    run_dir: Path,
    resume: bool,
) -> TrainResult:
    """Train the prompt in the run's folder; a hard prompt, which trains nothing, is only scored."""
    if not prompt.trains:
        dev_metrics = evaluate(prompt, eval_examples, config.eval_batch_size) if eval_examples else None
        return TrainResult(dev_metrics=dev_metrics, steps=0, seconds=0.0, history=[], best_step=None)
    # A searched prompt's final state is kept until the prompt it exports is saved: a failed
    # export can be resumed without searching again.
    exports = type(prompt.method).exported is not PromptMethod.exported
    return run_training(
        prompt,
        train_examples,
        eval_examples,
        config,
        output_dir=run_dir,
        resume=resume,
        keep_checkpoint=exports and is_main_process(),
        logging_dir=output_dir / "trackers",
        run_name=output_dir.resolve().name,
    )


def _save_run(prompt: PromptModel, output_dir: Path, run_dir: Path, extra: dict, metrics: dict) -> None:
    """The artifact (a searched prompt as the hard prompt it found) and the run's records, written
    into `output_dir` together; the run's folder goes with them."""
    try:
        exported = prompt.method.exported(prompt)
    except ConfigError as error:
        if checkpoint.exists(run_dir):
            raise ConfigError(
                f"{error} (the trained state is kept in {run_dir}: continue with --resume once the cause is fixed)"
            ) from None
        raise
    if exported is not None:
        extra = {**extra, "searched": exported.searched}
    with Transaction(output_dir, cleanup=(RUN,), last=(META,)) as tx:
        meta = stage_prompt(exported or prompt, tx, extra=extra)
        metrics["artifact_bytes"] = artifact_bytes(tx.stage)
        metrics["prompt_sha256"] = meta["files"][TENSORS]  # which prompt these metrics describe
        tx.write_json(METRICS, metrics)
        tx.copy(RUN_ARGS, run_dir / RUN_ARGS)
        if (run_dir / "log.jsonl").is_file():
            tx.copy("log.jsonl", run_dir / "log.jsonl")


def _log_to_mlflow(run_id: str, output_dir: Path) -> None:
    """The saved prompt (its artifact files and metrics) as the MLflow run's artifact `prompt/`."""
    import mlflow

    client = mlflow.MlflowClient()
    for name in (META, TENSORS, METRICS):
        if (output_dir / name).is_file():
            client.log_artifact(run_id, str(output_dir / name), artifact_path="prompt")


def _split_options(task: str, options: dict) -> tuple[TaskOptions, dict]:
    """`train_prompt`'s keyword options as the task's checked `Options` and the `TrainConfig` fields."""
    task_cls = task_class(task)
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - option_names() - train_fields)
    if unknown:
        raise ConfigError(
            f"train_prompt: unknown option(s) {unknown}; it takes {task_cls.Options.__name__} fields "
            f"{sorted(f.name for f in dataclasses.fields(task_cls.Options))} and TrainConfig fields "
            f"{sorted(train_fields)}"
        )
    task_settings = task_cls.check_options({k: v for k, v in options.items() if k not in train_fields})
    return task_settings, {k: v for k, v in options.items() if k in train_fields}


def _data_digests(args: dict) -> dict:
    return {
        key: sha256_file(args[key]) if args.get(key) and Path(args[key]).is_file() else None
        for key in ("train", "eval")
    }


def interrupted_run(output: str | os.PathLike) -> dict | None:
    """The arguments of a run interrupted in `output` after its first checkpoint, or None."""
    output = Path(output)
    if output.is_dir():
        recover(output)
    run_dir = output / PRIVATE / RUN
    if not checkpoint.exists(run_dir):
        return None
    return _run_args(run_dir / RUN_ARGS, "--resume")


def _run_args(path: Path, flag: str) -> dict:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{flag}: {path} not found; the interrupted run cannot be compared with this one "
            "(start again with --restart)"
        ) from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"{flag}: {path} cannot be read ({error}); start again with --restart") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{flag}: {path} is not a run's arguments; start again with --restart")
    return saved


def _check_run(output_dir: Path, run_dir: Path, args: dict, resume: bool, restart: bool) -> None:
    if resume and restart:
        raise ConfigError("--resume continues an interrupted run and --restart discards it: choose one")
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output {output_dir}: is a file, not a folder")
    if restart:
        return  # whatever was interrupted there is discarded, readable or not
    before = interrupted_run(output_dir)
    if not resume:
        if before is not None:
            step = checkpoint.load_step(run_dir)
            raise ConfigError(
                f"--output {output_dir}: holds an interrupted run (checkpoint at step {step}); "
                "continue it with --resume, or pass --restart to discard it and start again"
            )
        return
    if before is None:
        raise ConfigError(f"--resume: no interrupted run with a checkpoint in {output_dir}")
    changed = sorted(k for k in set(before) | set(args) if not _same_argument(k, before, args))
    if changed:
        raise ConfigError(
            f"--resume: arguments differ from the interrupted run in {changed}; "
            f"resume with the same arguments (see {run_dir / RUN_ARGS})"
        )


def _check_output(output_dir: Path, force: bool) -> None:
    """Refuse to write over a prompt or run records the folder holds, unless told to."""
    present = [name for name in ARTIFACT_FILES if (output_dir / name).is_file()]
    if present and not force:
        raise ConfigError(
            f"--output {output_dir}: already holds {', '.join(present)}; choose a new or empty folder, "
            "or pass --force to replace them when training ends (other files there stay)"
        )


def _same_argument(key: str, before: dict, now: dict) -> bool:
    """Whether an argument matters and changed. The output folder may have moved; a data file may
    have moved too, as long as its contents are the same."""
    if key in ("output", "data_sha256"):
        return True
    if key in ("train", "eval"):
        old, new = (before.get("data_sha256") or {}).get(key), now["data_sha256"].get(key)
        if old is not None and new is not None:
            return old == new
    return before.get(key) == json.loads(json.dumps(now.get(key)))


def artifact_bytes(directory: str | os.PathLike) -> int:
    """Bytes of what inference reads (a reparameterisation's training state is not counted)."""
    directory = Path(directory)
    return sum((directory / name).stat().st_size for name in ("prompt.safetensors", "prompt.json"))


def _examples(prompt_dir: str, data: str, labelled: bool = True, **columns) -> list:
    """The rows of `data` as the prompt's task reads them, in the columns given, else those the
    prompt was trained with."""
    meta = prompt_meta(prompt_dir)
    task_cls = task_class(meta["task"])
    given = {key[: -len("_column")]: value for key, value in columns.items()}
    return task_cls.read_examples(data, task_cls.resolve_columns(given, meta.get("columns")), labelled=labelled)


def evaluate_prompt(
    prompt: str,
    data: str,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = 64,
    model: str | None = None,
    device: str | None = None,
    source_column: str | None = None,
    target_column: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    group_column: str | None = None,
) -> dict:
    """Metrics of a saved prompt on labelled data (columns default to those it was trained with).
    With `group_column`, also `groups`: every metric for each value of that column, with its
    count and `small` where it has fewer than 30 examples; and `group_gaps`: per metric, the
    largest difference between groups and which they are."""
    examples = _examples(
        prompt,
        data,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        source_column=source_column,
        target_column=target_column,
    )
    groups = _group_values(prompt, data, group_column, len(examples)) if group_column else None
    loaded = _load(prompt, model, device, dtype, device_map)
    if groups is None:
        return evaluate(loaded, examples, batch_size)
    from .tasks.metrics import SMALL_GROUP, group_gaps

    metrics, scored = loaded.task.evaluate_groups(loaded, examples, groups, batch_size)  # one pass of the model
    per_group = {
        value: {
            **{k: v for k, v in scores.items() if isinstance(v, (int, float))},
            "count": count,
            "small": count < SMALL_GROUP,
        }
        for value, (scores, count) in scored.items()
    }
    task_cls = type(loaded.task)
    metrics["groups"] = per_group
    metrics["group_gaps"] = group_gaps(per_group, task_cls.metrics, task_cls.higher_is_better)
    return metrics


def _group_values(prompt: str, data: str, column: str, count: int) -> list[str]:
    """Each example's value in `column` of the data file (rows in the order the task reads them)."""
    task_cls = task_class(prompt_meta(prompt)["task"])
    records = task_cls.read_records(data)
    if len(records) != count:
        raise ConfigError(
            f"--group-column {column}: {data} has {len(records)} rows and {count} examples; groups need "
            "one example per row"
        )
    values = []
    for number, record in enumerate(records, 1):
        value = record.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{data}, data row {number} (header not counted): no value in the group column {column!r}")
        if not isinstance(value, (str, int, float, bool)):
            raise DataError(
                f"{data}, data row {number} (header not counted), column {column!r}: a group is a single "
                f"value, got {value!r}"
            )
        values.append(str(value))
    return values


def generate(
    prompt: str,
    texts: list[str] | None = None,
    data: str | None = None,
    source_column: str | None = None,
    batch_size: int = 32,
    model: str | None = None,
    device: str | None = None,
    seed: int | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    **options,
) -> list[dict]:
    """One dict per source: the source and its generations. `options` go to transformers'
    `generate`: max_new_tokens, num_beams, do_sample, top_k, top_p, temperature,
    num_return_sequences, repetition_penalty, no_repeat_ngram_size, length_penalty."""
    if (texts is None) == (data is None):
        raise ConfigError("generate: give either texts or data")
    meta = prompt_meta(prompt)
    task_cls = task_class(meta["task"])
    if task_cls.endpoint is not Endpoint.GENERATE:
        raise ConfigError(
            f"{prompt}: a {meta['task']} prompt, which does not generate; use `prompttune "
            f"{task_cls.endpoint.command}` for it"
        )
    if data is not None:
        examples = _examples(prompt, data, labelled=False, source_column=source_column)
    else:
        examples = []
        for number, text in enumerate(texts, 1):
            if not text.strip():
                raise ConfigError(f"generate: input {number} is empty")
            examples.append(Example(text=text.strip(), origin=f"input {number}"))
    loaded = _load(prompt, model, device, dtype, device_map)
    if seed is not None:
        torch.manual_seed(seed)
    outputs = loaded.task.generate_texts(loaded, examples, batch_size=batch_size, **options)
    per_source = len(outputs) // max(len(examples), 1)
    return [
        {"source": e.text, "generations": outputs[i * per_source : (i + 1) * per_source]}
        for i, e in enumerate(examples)
    ]


def predict(
    prompt: str,
    texts: list[str] | None = None,
    data: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    batch_size: int = 64,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
) -> list[dict]:
    """One dict per input, as the prompt's task predicts: for classification the text, the label
    and every label's probability; for token classification the tokens, their tags and the
    entities with character offsets."""
    if (texts is None) == (data is None):
        raise ConfigError("predict: give either texts or data")
    task_cls = task_class(prompt_meta(prompt)["task"])
    if task_cls.endpoint is not Endpoint.CLASSIFY:
        raise ConfigError(f"{prompt}: a {task_cls.name} prompt; use `prompttune {task_cls.endpoint.command}` for it")
    if data is not None:
        # Labels, if the file has them, play no part in prediction (and may include unseen ones).
        examples = _examples(prompt, data, labelled=False, text_column=text_column, text_pair_column=text_pair_column)
    else:
        examples = task_cls.examples_from_texts(list(texts))
    loaded = _load(prompt, model, device, dtype, device_map)
    return loaded.task.predict(loaded, examples, batch_size)


def _load_set(
    prompts: list[str], model: str | None, device: str | None, dtype: str | None = None, device_map: str | None = None
):
    """The ensemble's members (checked by `_check_members` first) on one backbone."""
    from .inference.mixed import PromptSet

    backbone = load_backbone(
        model or prompt_meta(prompts[0])["base_model"]["name_or_path"],
        device=device,
        dtype=dtype,
        device_map=device_map,
    )
    return PromptSet.load({p: p for p in prompts}, backbone=backbone)


def _check_members(prompts: list[str]) -> None:
    if len(prompts) < 2:
        raise ConfigError(f"--prompts: an ensemble needs at least two prompts, got {prompts}")
    if len(set(prompts)) != len(prompts):
        raise ConfigError(f"--prompts: a prompt is listed twice in {prompts}")
    for prompt in prompts:
        task = prompt_meta(prompt)["task"]
        if not task_class(task).ensembles:
            raise ConfigError(
                f"--prompts: {prompt} is a {task} prompt; ensembles combine prompts by their label "
                "probabilities (classification)"
            )


def evaluate_ensemble(
    prompts: list[str],
    data: str,
    combine: str = "mean",
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = 64,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
) -> dict:
    """Each member's metrics and the ensemble's on labelled data; every member reads each input in
    the same batched forward. Columns default to those the first prompt was trained with."""
    from .tasks.metrics import classification_metrics

    _check_members(prompts)
    examples = _examples(
        prompts[0], data, text_column=text_column, text_pair_column=text_pair_column, label_column=label_column
    )
    prompt_set = _load_set(prompts, model, device, dtype, device_map)
    result = prompt_set.ensemble(prompts, examples, combine=combine, batch_size=batch_size)
    labels = result["labels"]
    unknown = next((e for e in examples if e.label not in labels), None)
    if unknown is not None:
        raise ConfigError(f"{unknown.origin}: label {unknown.label!r} is not one of the prompts' labels {list(labels)}")
    gold = [labels.index(e.label) for e in examples]
    members = {
        name: classification_metrics(probs.argmax(-1).tolist(), gold, labels)
        for name, probs in result["members"].items()
    }
    return {
        "combine": combine,
        "members": members,
        "ensemble": classification_metrics(result["predictions"], gold, labels),
    }


def predict_ensemble(
    prompts: list[str],
    texts: list[str] | None = None,
    data: str | None = None,
    combine: str = "mean",
    text_column: str | None = None,
    text_pair_column: str | None = None,
    batch_size: int = 64,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
) -> list[dict]:
    """One dict per input: the ensemble's label and mean probabilities, and each member's label."""
    if (texts is None) == (data is None):
        raise ConfigError("predict: give either texts or data")
    _check_members(prompts)
    if data is not None:
        examples = _examples(
            prompts[0], data, labelled=False, text_column=text_column, text_pair_column=text_pair_column
        )
    else:
        examples = task_class(prompt_meta(prompts[0])["task"]).examples_from_texts(list(texts))
    prompt_set = _load_set(prompts, model, device, dtype, device_map)
    result = prompt_set.ensemble(prompts, examples, combine=combine, batch_size=batch_size)
    labels = result["labels"]
    rows = []
    for i, example in enumerate(examples):
        row = {"text": example.text}
        if example.text_pair is not None:
            row["text_pair"] = example.text_pair
        row.update(
            label=labels[result["predictions"][i]],
            probabilities={label: round(p, 6) for label, p in zip(labels, result["probabilities"][i].tolist())},
            members={name: labels[int(probs[i].argmax())] for name, probs in result["members"].items()},
        )
        rows.append(row)
    return rows


def load_backbone(
    model: str, head: str = "auto", device: str | None = None, dtype: str | None = None, device_map: str | None = None
) -> Backbone:
    """The frozen model every command runs on: `dtype` float32 | bfloat16 | float16 (prompts stay
    float32), `device_map` "auto" for Accelerate's big-model loading over the devices there are,
    or `device` for one device."""
    if device and device_map:
        raise ConfigError("--device and --device-map: give one (a device map places the model itself)")
    backbone = Backbone.from_pretrained(model, head=head, dtype=dtype, device_map=device_map)
    if device:
        backbone.to(device)
    return backbone


def _load(
    prompt: str, model: str | None, device: str | None, dtype: str | None = None, device_map: str | None = None
) -> PromptModel:
    backbone = None
    if model is not None or device or dtype or device_map:
        backbone = load_backbone(
            model or prompt_meta(prompt)["base_model"]["name_or_path"],
            device=device,
            dtype=dtype,
            device_map=device_map,
        )
    return load_prompt(prompt, backbone=backbone)
