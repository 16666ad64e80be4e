"""The command line's operations as Python functions: `train_prompt`, `evaluate_prompt`, `predict`.

    from prompttune.api import train_prompt, evaluate_prompt, predict
    result = train_prompt(model="all-MiniLM-L6-v2", method="soft_prompt", train="train.tsv",
                          eval="dev.tsv", text_column="sentence", output="runs/sst2")
    print(result["dev_metrics"]["accuracy"])
    for row in predict("runs/sst2", ["a gripping, funny film"]):
        print(row["label"], row["probabilities"])
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import torch

from .artifact import load_prompt, read_meta, save_prompt, write_json_atomic
from .backbone import Backbone, sha256_file
from .data import Columns, load_examples, label_set, texts_as_examples
from .errors import ConfigError
from .model import PromptModel
from .tasks.classification import ClassificationConfig, parse_verbalizer
from .training import TrainConfig, evaluate, is_main_process
from .training import train as run_training

RUN_ARGS = "train_args.json"


def train_prompt(
    model: str,
    method: str,
    train: str,
    output: str,
    eval: str | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    labels: list[str] | None = None,
    verbalizer: str | dict | None = None,
    template: str | None = None,
    readout: str = "auto",
    max_length: int = 256,
    method_options: dict | None = None,
    head: str = "auto",
    resume: bool = False,
    device: str | None = None,
    **train_options,
) -> dict:
    """Train a prompt and write its artifact, `metrics.json` and `log.jsonl` into `output`.

    `method_options` are the method's config fields (e.g. `{"num_virtual_tokens": 20, "init":
    "class_labels"}`); `train_options` are `TrainConfig` fields (`max_steps`, `lr`, `batch_size`...).
    Returns what `metrics.json` holds.
    """
    args = {k: v for k, v in locals().items() if k not in ("resume", "device", "train_options")}
    args.update({k: v for k, v in train_options.items() if k != "progress"})
    output_dir = Path(output)
    _check_resume(output_dir, args, resume)
    train_config = TrainConfig.from_dict(train_options, where="training options")
    columns = Columns(text=text_column, text_pair=text_pair_column, label=label_column)
    train_examples = load_examples(train, columns)
    eval_examples = load_examples(eval, columns) if eval else None
    label_names = tuple(str(x) for x in labels) if labels else label_set(train_examples)
    if eval_examples and not labels:
        unseen = sorted({e.label for e in eval_examples} - set(label_names))
        if unseen:
            first = next(e for e in eval_examples if e.label in unseen)
            raise ConfigError(f"{first.source}, column {label_column!r}: label {first.label!r} never occurs in {train}; "
                              f"training labels are {list(label_names)} (pass --labels to fix the set)")
    task_config = ClassificationConfig(labels=label_names, template=template, verbalizer=parse_verbalizer(verbalizer, label_names),
                                       max_length=max_length, pair=text_pair_column is not None)
    torch.manual_seed(train_config.seed)
    backbone = Backbone.from_pretrained(model, head=head)
    if device:
        backbone.to(device)
    prompt = PromptModel.create(backbone, method, task_config, method_options, readout=readout)
    main = is_main_process()
    output_dir.mkdir(parents=True, exist_ok=True)
    if not resume and main:
        write_json_atomic(output_dir / RUN_ARGS, args)
    if prompt.trains:
        result = run_training(prompt, train_examples, eval_examples, train_config, output_dir=output_dir, resume=resume)
        dev_metrics, steps, seconds = result.dev_metrics, result.steps, result.seconds
        history, best_step = result.history, result.best_step
    else:  # a hard prompt: nothing to train, only to score
        dev_metrics = evaluate(prompt, eval_examples, train_config.eval_batch_size) if eval_examples else None
        steps, seconds, history, best_step = 0, 0.0, [], None
    training = {
        "data": str(train),
        "data_sha256": sha256_file(train) if Path(train).is_file() else None,
        "examples": len(train_examples),
        "steps": steps,
        "best_step": best_step,
        "seconds": round(seconds, 3),
        "config": train_config.to_dict(),
    }
    if main:
        save_prompt(prompt, output_dir, extra={"columns": columns.__dict__, "training": training})
    metrics = {
        "method": method,
        "model": model,
        "dev_metrics": dev_metrics,
        "parameters": prompt.count_parameters(),
        "artifact_bytes": artifact_bytes(output_dir) if main else None,
        "training": {**training, "history": history},
    }
    if main:
        write_json_atomic(output_dir / "metrics.json", metrics)
    return metrics


def _check_resume(output_dir: Path, args: dict, resume: bool) -> None:
    saved = output_dir / RUN_ARGS
    if not resume:
        return
    if not saved.is_file():
        raise ConfigError(f"--resume: {saved} not found; nothing to resume in {output_dir}")
    before = json.loads(saved.read_text())
    changed = sorted(k for k in set(before) | set(args) if before.get(k) != json.loads(json.dumps(args.get(k))))
    if changed:
        raise ConfigError(f"--resume: arguments differ from the interrupted run in {changed}; "
                          f"resume with the same arguments (see {saved})")


def artifact_bytes(directory: str | os.PathLike) -> int:
    directory = Path(directory)
    return sum((directory / name).stat().st_size for name in ("prompt.safetensors", "prompt.json"))


def _columns(prompt_dir: str, text_column, text_pair_column, label_column) -> Columns:
    saved = read_meta(prompt_dir).get("columns", {})
    return Columns(text=text_column or saved.get("text", "text"),
                   text_pair=text_pair_column if text_pair_column is not None else saved.get("text_pair"),
                   label=label_column or saved.get("label", "label"))


def evaluate_prompt(prompt: str, data: str, text_column: str | None = None, text_pair_column: str | None = None,
                    label_column: str | None = None, batch_size: int = 64, model: str | None = None,
                    device: str | None = None) -> dict:
    """Metrics of a saved prompt on labelled data (columns default to those it was trained with)."""
    columns = _columns(prompt, text_column, text_pair_column, label_column)
    examples = load_examples(data, columns)
    loaded = _load(prompt, model, device)
    return evaluate(loaded, examples, batch_size)


def predict(prompt: str, texts: list[str] | None = None, data: str | None = None, text_column: str | None = None,
            text_pair_column: str | None = None, batch_size: int = 64, model: str | None = None,
            device: str | None = None) -> list[dict]:
    """One dict per input: the text, the predicted label and every label's probability."""
    if (texts is None) == (data is None):
        raise ConfigError("predict: give either texts or data")
    if data is not None:
        columns = _columns(prompt, text_column, text_pair_column, None)
        # Labels, if the file has them, play no part in prediction (and may include unseen ones).
        examples = [replace(e, label=None) for e in load_examples(data, columns, require_labels=False)]
    else:
        examples = texts_as_examples(list(texts))
    loaded = _load(prompt, model, device)
    probabilities = loaded.predict_proba(examples, batch_size)
    labels = loaded.task.config.labels
    rows = []
    for example, probs in zip(examples, probabilities.tolist()):
        best = max(range(len(labels)), key=probs.__getitem__)
        row = {"text": example.text}
        if example.text_pair is not None:
            row["text_pair"] = example.text_pair
        row.update(label=labels[best], probabilities={label: round(p, 6) for label, p in zip(labels, probs)})
        rows.append(row)
    return rows


def _load(prompt: str, model: str | None, device: str | None) -> PromptModel:
    backbone = None
    if model is not None:
        backbone = Backbone.from_pretrained(model)
    elif device:
        backbone = Backbone.from_pretrained(read_meta(prompt)["base_model"]["name_or_path"])
    if backbone is not None and device:
        backbone.to(device)
    return load_prompt(prompt, backbone=backbone)
