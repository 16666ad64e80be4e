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

import json
import os
from dataclasses import replace
from pathlib import Path

import torch

from .artifact import load_prompt, read_meta, save_prompt, write_json_atomic
from .backbone import Backbone, sha256_file
from .data import Columns, Example, load_examples, load_generation_examples, label_set, texts_as_examples
from .errors import ConfigError
from .model import PromptModel
from .tasks.classification import ClassificationConfig, parse_verbalizer
from .tasks.generation import GenerationConfig
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
    task: str = "classification",
    source_column: str = "source",
    target_column: str = "target",
    max_target_length: int = 128,
    num_beams: int = 1,
    init_from: str | None = None,
    resume: bool = False,
    device: str | None = None,
    **train_options,
) -> dict:
    """Train a prompt and write its artifact, `metrics.json` and `log.jsonl` into `output`.

    `task` is "classification" (text/label columns) or "generation" (source/target columns;
    `max_length` bounds the source). `method_options` are the method's config fields (e.g.
    `{"num_virtual_tokens": 20, "init": "class_labels"}`); `train_options` are `TrainConfig` fields
    (`max_steps`, `lr`, `batch_size`, `gradient_checkpointing`...). `init_from` starts from a saved
    prompt of the same method (its reparameterisation too, where it has one). Returns what
    `metrics.json` holds.
    """
    args = {k: v for k, v in locals().items() if k not in ("resume", "device", "train_options")}
    args.update({k: v for k, v in train_options.items() if k != "progress"})
    output_dir = Path(output)
    _check_resume(output_dir, args, resume)
    train_config = TrainConfig.from_dict(train_options, where="training options")
    if task == "classification":
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
        saved_columns = columns.__dict__
    elif task == "generation":
        train_examples = load_generation_examples(train, source_column, target_column)
        eval_examples = load_generation_examples(eval, source_column, target_column) if eval else None
        task_config = GenerationConfig(max_source_length=max_length, max_target_length=max_target_length, num_beams=num_beams)
        saved_columns = {"source": source_column, "target": target_column}
    else:
        raise ConfigError(f"--task: unknown task {task!r}; known: classification, generation")
    torch.manual_seed(train_config.seed)
    backbone = Backbone.from_pretrained(model, head=head)
    if device:
        backbone.to(device)
    prompt = PromptModel.create(backbone, method, task_config, method_options, readout=readout)
    if init_from is not None:
        start = load_prompt(init_from, backbone=backbone, with_training_state=True)
        if start.method.name != method or start.method.config != prompt.method.config:
            raise ConfigError(f"--init-from {init_from}: a {start.method.name} prompt with {start.method.config.to_dict()}; "
                              f"this run trains {method} with {prompt.method.config.to_dict()}")
        if start.task.config != prompt.task.config:
            raise ConfigError(f"--init-from {init_from}: its task settings {start.task.config.to_dict()} differ from "
                              f"this run's {prompt.task.config.to_dict()}")
        if prompt.method.training_state() and not start.method.training_state():
            raise ConfigError(f"--init-from {init_from}: holds no training state for {method}'s reparameterisation "
                              f"(training_state.safetensors is missing)")
        prompt.load_trainable_state(start.trainable_state())
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
        # Lineage: the prompt this one continued from (a registry links it to that prompt's version).
        "init_from": {"path": str(init_from), "prompt_sha256": sha256_file(Path(init_from) / "prompt.safetensors")}
        if init_from is not None else None,
    }
    if main:
        # A searched prompt is saved as the hard prompt it found.
        exported = prompt.method.exported(prompt)
        extra = {"columns": saved_columns, "training": training}
        if exported is not None:
            extra["searched"] = exported.searched
        save_prompt(exported or prompt, output_dir, extra=extra)
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
    """Bytes of what inference reads (a reparameterisation's training state is not counted)."""
    directory = Path(directory)
    return sum((directory / name).stat().st_size for name in ("prompt.safetensors", "prompt.json"))


def _columns(prompt_dir: str, text_column, text_pair_column, label_column) -> Columns:
    saved = read_meta(prompt_dir).get("columns", {})
    return Columns(text=text_column or saved.get("text", "text"),
                   text_pair=text_pair_column if text_pair_column is not None else saved.get("text_pair"),
                   label=label_column or saved.get("label", "label"))


def evaluate_prompt(prompt: str, data: str, text_column: str | None = None, text_pair_column: str | None = None,
                    label_column: str | None = None, batch_size: int = 64, model: str | None = None,
                    device: str | None = None, source_column: str | None = None, target_column: str | None = None) -> dict:
    """Metrics of a saved prompt on labelled data (columns default to those it was trained with)."""
    meta = read_meta(prompt)
    if meta["task"] == "generation":
        saved = meta.get("columns", {})
        examples = load_generation_examples(data, source_column or saved.get("source", "source"),
                                            target_column or saved.get("target", "target"))
    else:
        examples = load_examples(data, _columns(prompt, text_column, text_pair_column, label_column))
    loaded = _load(prompt, model, device)
    return evaluate(loaded, examples, batch_size)


def generate(prompt: str, texts: list[str] | None = None, data: str | None = None, source_column: str | None = None,
             batch_size: int = 32, model: str | None = None, device: str | None = None, seed: int | None = None,
             **options) -> list[dict]:
    """One dict per source: the source and its generations. `options` go to transformers'
    `generate`: max_new_tokens, num_beams, do_sample, top_k, top_p, temperature,
    num_return_sequences, repetition_penalty, no_repeat_ngram_size, length_penalty."""
    if (texts is None) == (data is None):
        raise ConfigError("generate: give either texts or data")
    meta = read_meta(prompt)
    if meta["task"] != "generation":
        raise ConfigError(f"{prompt}: a {meta['task']} prompt; `generate` needs one trained with --task generation")
    if data is not None:
        column = source_column or meta.get("columns", {}).get("source", "source")
        examples = load_generation_examples(data, column, None, require_targets=False)
    else:
        examples = []
        for number, text in enumerate(texts, 1):
            if not text.strip():
                raise ConfigError(f"generate: input {number} is empty")
            examples.append(Example(text=text.strip(), source=f"input {number}"))
    loaded = _load(prompt, model, device)
    if seed is not None:
        torch.manual_seed(seed)
    outputs = loaded.generate_texts(examples, batch_size=batch_size, **options)
    per_source = len(outputs) // max(len(examples), 1)
    return [{"source": e.text, "generations": outputs[i * per_source:(i + 1) * per_source]} for i, e in enumerate(examples)]


def predict(prompt: str, texts: list[str] | None = None, data: str | None = None, text_column: str | None = None,
            text_pair_column: str | None = None, batch_size: int = 64, model: str | None = None,
            device: str | None = None) -> list[dict]:
    """One dict per input: the text, the predicted label and every label's probability."""
    if (texts is None) == (data is None):
        raise ConfigError("predict: give either texts or data")
    task = read_meta(prompt)["task"]
    if task != "classification":
        raise ConfigError(f"{prompt}: a {task} prompt; use `prompttune generate` for it")
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


def _load_set(prompts: list[str], model: str | None, device: str | None):
    from .mixed import PromptSet

    if len(prompts) < 2:
        raise ConfigError(f"--prompts: an ensemble needs at least two prompts, got {prompts}")
    if len(set(prompts)) != len(prompts):
        raise ConfigError(f"--prompts: a prompt is listed twice in {prompts}")
    for prompt in prompts:
        task = read_meta(prompt)["task"]
        if task != "classification":
            raise ConfigError(f"--prompts: {prompt} is a {task} prompt; ensembles combine classification prompts")
    backbone = Backbone.from_pretrained(model or read_meta(prompts[0])["base_model"]["name_or_path"])
    if device:
        backbone.to(device)
    return PromptSet.load({p: p for p in prompts}, backbone=backbone)


def evaluate_ensemble(prompts: list[str], data: str, combine: str = "mean", text_column: str | None = None,
                      text_pair_column: str | None = None, label_column: str | None = None, batch_size: int = 64,
                      model: str | None = None, device: str | None = None) -> dict:
    """Each member's metrics and the ensemble's on labelled data; every member reads each input in
    the same batched forward. Columns default to those the first prompt was trained with."""
    from .metrics import classification_metrics

    examples = load_examples(data, _columns(prompts[0], text_column, text_pair_column, label_column))
    prompt_set = _load_set(prompts, model, device)
    result = prompt_set.ensemble(prompts, examples, combine=combine, batch_size=batch_size)
    labels = result["labels"]
    unknown = next((e for e in examples if e.label not in labels), None)
    if unknown is not None:
        raise ConfigError(f"{unknown.source}: label {unknown.label!r} is not one of the prompts' labels {list(labels)}")
    gold = [labels.index(e.label) for e in examples]
    members = {name: classification_metrics(probs.argmax(-1).tolist(), gold, labels)
               for name, probs in result["members"].items()}
    return {"combine": combine, "members": members,
            "ensemble": classification_metrics(result["predictions"], gold, labels)}


def predict_ensemble(prompts: list[str], texts: list[str] | None = None, data: str | None = None, combine: str = "mean",
                     text_column: str | None = None, text_pair_column: str | None = None, batch_size: int = 64,
                     model: str | None = None, device: str | None = None) -> list[dict]:
    """One dict per input: the ensemble's label and mean probabilities, and each member's label."""
    if (texts is None) == (data is None):
        raise ConfigError("predict: give either texts or data")
    if data is not None:
        columns = _columns(prompts[0], text_column, text_pair_column, None)
        examples = [replace(e, label=None) for e in load_examples(data, columns, require_labels=False)]
    else:
        examples = texts_as_examples(list(texts))
    prompt_set = _load_set(prompts, model, device)
    result = prompt_set.ensemble(prompts, examples, combine=combine, batch_size=batch_size)
    labels = result["labels"]
    rows = []
    for i, example in enumerate(examples):
        row = {"text": example.text}
        if example.text_pair is not None:
            row["text_pair"] = example.text_pair
        row.update(label=labels[result["predictions"][i]],
                   probabilities={label: round(p, 6) for label, p in zip(labels, result["probabilities"][i].tolist())},
                   members={name: labels[int(probs[i].argmax())] for name, probs in result["members"].items()})
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
