"""Classification through the LM head of a real pretrained LLM: SST-2 and TREC on
SmolLM2-135M-Instruct, the label read as the next token of the instruct model's chat answer.

Every contender reads the same input: the chat template, an instruction as the system message, the
sentence in a template as the user's message, and the label word as the first token of the
assistant's answer (a verbalizer: "negative" / "positive"; TREC's six coarse classes by name).
They differ in what trains, with the same budget (a seeded training subset, the same steps of the
same batch size, in the order prompttune's loop draws them):

- no training: the instruction zero-shot, and k-shot (k demonstrations drawn from the training
  subset with the seed, as earlier chat turns), each also calibrated (content-free inputs, Zhao et
  al. 2021; random in-domain words, Fei et al. 2023);
- prompttune: `soft_prompt` (20 tokens), `prefix` (10 tokens, MLP), `deep_prompt` (10 tokens), and
  `full_finetune`, each with its default learning rate, on top of the zero-shot prompt;
- PEFT: `PromptTuningConfig` and `PrefixTuningConfig` (with projection) on the same token ids
  (prompttune's encoding of each row), the same objective (cross-entropy over the labels' word
  scores at the answer's first position) and the learning rate of the prompttune method each
  matches.

Scores: accuracy and macro F1 on SST-2's dev set and TREC's test set (or the first `--eval-size`
rows). Each run is kept in benchmarks/runs/llm_classify/DATASET/METHOD: a killed run resumes from its
last checkpoint (prompttune's `--resume`; the PEFT loop saves its own state), finished ones are not
redone.

    python -m benchmarks.llm_classify                              # everything (hours on 2 CPU cores)
    python -m benchmarks.llm_classify --datasets sst2 --methods zero_shot,soft_prompt
    .venv-oldest/bin/python -m benchmarks.llm_classify --methods peft_prompt_tuning,peft_prefix_tuning
        # PEFT's prefix tuning needs transformers 5.23 (5.24 renamed `past_key_values`)
    python -m benchmarks.llm_classify --report
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from benchmarks import peft_loop
from benchmarks.common import (
    SHARED,
    device_setting,
    environment,
    finish_run,
    finished_run,
    run_device,
    write_results,
)
from benchmarks.peft_loop import peft_model

WORK = Path(__file__).resolve().parent / "runs" / "llm_classify"
MODEL = "smollm2-135m-instruct"
DATASETS = {
    "sst2": dict(
        train="sst2/train.tsv",
        eval="sst2/dev.tsv",
        text_column="sentence",
        label_column="label",
        instruction="Classify the sentiment of the movie review. Answer with one word: positive or negative.",
        template="Review: {text}",
        verbalizer="0:negative|Negative,1:positive|Positive",
        shots=4,
    ),
    "trec": dict(
        train="trec/train.tsv",
        eval="trec/test.tsv",
        text_column="text",
        label_column="coarse_label",
        instruction="Classify the question by the kind of answer it asks for. Answer with one word: description, "
        "entity, abbreviation, person, location or number.",
        template="Question: {text}",
        verbalizer="DESC:description|Description,ENTY:entity|Entity,ABBR:abbreviation|Abbreviation,"
        "HUM:person|Person,LOC:location|Location,NUM:number|Number",
        shots=6,
    ),
}
OURS = {
    "soft_prompt": {"num_virtual_tokens": 20},
    "prefix": {"num_virtual_tokens": 10, "hidden_size": 512},
    "deep_prompt": {"num_virtual_tokens": 10},
    "full_finetune": {},
}
PEFT = {"peft_prompt_tuning": "soft_prompt", "peft_prefix_tuning": "prefix"}
# The instruction prompts as they are and calibrated (`--calibrate`: label probabilities divided by
# those of inputs without content): content_free (Zhao et al. 2021), domain (Fei et al. 2023).
CALIBRATED = {f"{shots}_{kind}": kind for shots in ("zero_shot", "k_shot") for kind in ("content_free", "domain")}
SHOTS = ("zero_shot", "k_shot", *CALIBRATED)
METHODS = (*SHOTS, *OURS, *PEFT)


def subset(dataset: str, train_size: int, eval_size: int | None, seed: int) -> tuple[Path, Path]:
    """A seeded random subset of the training file and the first `eval_size` evaluation rows, as TSV."""
    import csv
    import io

    from prompttune.storage import write_atomic

    spec = DATASETS[dataset]
    paths = []
    for split, size, shuffle in (("train", train_size, True), ("eval", eval_size, False)):
        source = SHARED / spec[split]
        if not source.is_file():
            raise SystemExit(f"{source} not found: the benchmark reads {dataset} from ../shared/data")
        with open(source, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            fields, rows = reader.fieldnames, list(reader)
        if shuffle:
            random.Random(seed).shuffle(rows)
        rows = rows[:size] if size else rows
        path = WORK / dataset / "data" / f"{split}_{size or 'all'}_seed{seed}.tsv"
        if not path.is_file():
            text = io.StringIO()
            writer = csv.DictWriter(
                text, fieldnames=fields, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n"
            )
            writer.writeheader()
            writer.writerows(rows)
            write_atomic(path, text.getvalue())
        paths.append(path)
    return paths[0], paths[1]


def task_options(dataset: str) -> dict:
    spec = DATASETS[dataset]
    return dict(
        text_column=spec["text_column"],
        label_column=spec["label_column"],
        instruction=spec["instruction"],
        template=spec["template"],
        verbalizer=spec["verbalizer"],
        chat=True,
        readout="verbalizer",
    )


def run_ours(method: str, dataset: str, args, train: Path, dev: Path, out: Path) -> dict:
    from prompttune.api import evaluate_prompt, interrupted_run, train_prompt

    if not (out / "metrics.json").is_file():
        options = task_options(dataset)
        if method in SHOTS:
            train_prompt(
                model=args.model,
                method="hard_prompt",
                train=str(train),
                output=str(out),
                seed=args.seed,
                shots=DATASETS[dataset]["shots"] if method.startswith("k_shot") else 0,
                calibrate=CALIBRATED.get(method),
                progress=False,
                **options,
            )
        else:
            train_prompt(
                model=args.model,
                method=method,
                train=str(train),
                output=str(out),
                method_options=OURS[method],
                max_steps=args.steps,
                batch_size=args.batch_size,
                seed=args.seed,
                progress=False,
                checkpoint_every=args.checkpoint_every,
                resume=interrupted_run(out) is not None,
                **options,
            )
    metrics = json.loads((out / "metrics.json").read_text())
    scores = evaluate_prompt(str(out), str(dev), batch_size=args.eval_batch_size, device=run_device())
    return {
        "accuracy": scores["accuracy"],
        "f1_macro": scores["f1_macro"],
        "train_seconds": metrics["training"]["seconds"],
        "steps": metrics["training"]["steps"],
        "trainable_parameters": metrics["parameters"]["trainable"],
        "artifact_bytes": metrics["artifact_bytes"],
    }


def run_peft(kind: str, dataset: str, args, train: Path, dev: Path, out: Path) -> dict:
    """PEFT on prompttune's token ids with prompttune's objective (see the module's docstring)."""
    import transformers

    from prompttune import Backbone, Columns, PromptModel, load_examples
    from prompttune.core.weights import resolve_model
    from prompttune.methods import method_class
    from prompttune.storage import write_json_atomic
    from prompttune.tasks import task_class
    from prompttune.tasks.metrics import classification_metrics

    spec = DATASETS[dataset]
    columns = Columns(text=spec["text_column"], label=spec["label_column"])
    train_examples, dev_examples = load_examples(str(train), columns), load_examples(str(dev), columns)
    backbone = Backbone.from_pretrained(args.model)
    options = task_options(dataset)
    config = task_class("classification").new_config(
        {k: options[k] for k in ("instruction", "template", "verbalizer", "chat")}, train_examples, None, args.seed
    )
    task = PromptModel.create(backbone, "hard_prompt", config, readout="verbalizer").task  # prompttune's encoding
    encode = [task.encode(e) for e in train_examples]
    dev_encoded = [task.encode(e) for e in dev_examples]
    word_ids, word_owner = task.word_ids, task.word_owner
    labels_count = len(config.labels)
    del backbone

    torch.manual_seed(args.seed)
    path, _ = resolve_model(args.model)
    base, model = peft_model(kind, path)  # drawn on the CPU, the same start wherever it trains
    # PEFT's prompt tuning returns logits at its virtual positions too, before the row's.
    shift = 20 if kind == "peft_prompt_tuning" else 0
    device = run_device()
    model.to(device)
    word_ids, word_owner = word_ids.to(device), word_owner.to(device)
    pad = task.tokenizer.pad_token_id if task.tokenizer.pad_token_id is not None else task.tokenizer.eos_token_id

    def scores(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in rows], device=device)
        mask = torch.tensor(
            [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows], device=device
        )
        logits = model(input_ids=ids, attention_mask=mask).logits
        at = torch.tensor([r["readout_index"] for r in rows], device=device) + shift
        log_probs = logits[torch.arange(len(rows), device=device), at].float().log_softmax(-1)[:, word_ids]
        return torch.stack([torch.logsumexp(log_probs[:, word_owner == c], -1) for c in range(labels_count)], -1)

    params = peft_loop.trainable(model)
    label_of = {label: i for i, label in enumerate(config.labels)}

    def loss_of(chosen):
        target = torch.tensor([label_of[train_examples[i].label] for i in chosen], device=device)
        return torch.nn.functional.cross_entropy(scores([encode[i] for i in chosen]), target)

    lr = method_class(PEFT[kind]).default_lr
    seconds = peft_loop.train(
        model,
        base,
        [{"params": params, "lr": lr}],
        loss_of,
        len(encode),
        args.steps,
        args.batch_size,
        args.seed,
        device,
        state=out / "loop",
        checkpoint_every=args.checkpoint_every,
    )
    predictions = []
    with torch.no_grad():
        for begin in range(0, len(dev_encoded), args.eval_batch_size):
            predictions += scores(dev_encoded[begin : begin + args.eval_batch_size]).argmax(-1).tolist()
    gold = [label_of[e.label] for e in dev_examples]
    metrics = classification_metrics(predictions, gold, config.labels)
    model.save_pretrained(out / "adapter")
    row = {
        "accuracy": metrics["accuracy"],
        "f1_macro": metrics["f1_macro"],
        "train_seconds": round(seconds, 3),
        "steps": args.steps,
        "trainable_parameters": sum(p.numel() for p in params),
        "artifact_bytes": peft_loop.adapter_bytes(out / "adapter"),
        "transformers": transformers.__version__,
    }
    write_json_atomic(out / "summary.json", row)
    return row


def run(method: str, dataset: str, args, setting: dict) -> dict:
    import transformers

    out = WORK / dataset / method
    finished = finished_run(out, setting)
    if finished is not None:
        return finished
    train, dev = subset(dataset, args.train_size, args.eval_size, args.seed)
    started = time.perf_counter()
    if method in PEFT:
        row = run_peft(method, dataset, args, train, dev, out)
    else:
        row = run_ours(method, dataset, args, train, dev, out)
        row["transformers"] = transformers.__version__
    row["wall_seconds"] = round(time.perf_counter() - started, 1)
    return finish_run(out, setting, row)


def markdown(setting: dict, rows: dict) -> str:
    evaluated = f"the first {setting['eval_size']} rows" if setting["eval_size"] else "all rows"
    lines = [
        "# Classification through the LM head of SmolLM2-135M-Instruct: SST-2 and TREC",
        "",
        (
            f"Frozen SmolLM2-135M-Instruct (the Q4_1 GGUF file dequantised to float32); the chat template with an "
            f"instruction, the label word read as the answer's first token. Training: {setting['train_size']} rows drawn "
            f"with seed {setting['seed']}, {setting['steps']} steps of {setting['batch_size']} rows, each method's default "
            "learning rate (PEFT's with that of the prompttune method it matches). Evaluation: SST-2's dev set and TREC's "
            f"test set ({evaluated}). "
            "2 CPU cores."
        ),
        "",
        "Command: `python -m benchmarks.llm_classify` (PEFT's rows with `.venv-oldest/bin/python`, transformers 5.23).",
        "",
    ]
    for dataset, methods in rows.items():
        lines += [
            f"## {dataset.upper()}",
            "",
            ("| method | accuracy | macro F1 | trainable params | artifact bytes | train s | transformers |"),
            "|---|---|---|---|---|---|---|",
        ]
        for method, row in methods.items():
            lines.append(
                f"| {method} | {row['accuracy']:.4f} | {row['f1_macro']:.4f} | {row['trainable_parameters']:,} | "
                f"{row['artifact_bytes']:,} | {row['train_seconds']:.0f} | {row['transformers']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--eval-size", type=int, default=0, help="first N evaluation rows; 0: all")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--checkpoint-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--name", default="llm_classify")
    args = parser.parse_args()
    global WORK
    WORK = WORK.parent / args.name
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    setting = {
        k: getattr(args, k) for k in ("model", "train_size", "eval_size", "steps", "batch_size", "seed")
    } | device_setting()
    datasets, methods = args.datasets.split(","), args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS)) + sorted(set(datasets) - set(DATASETS))
    if unknown:
        raise SystemExit(f"unknown {unknown}; methods: {', '.join(METHODS)}; datasets: {', '.join(DATASETS)}")
    if not args.report:
        for dataset in datasets:
            for method in methods:
                row = run(method, dataset, args, setting)
                print(f"{dataset} {method}: accuracy {row['accuracy']:.4f}, macro F1 {row['f1_macro']:.4f}", flush=True)
    rows = {}
    for dataset in DATASETS:
        for method in METHODS:
            done = WORK / dataset / method / "result.json"
            if done.is_file():
                saved = json.loads(done.read_text())
                if saved["setting"] == setting:
                    rows.setdefault(dataset, {})[method] = saved["row"]
    if rows:
        write_results(
            args.name, {"setting": setting, "environment": environment(), "rows": rows}, markdown(setting, rows)
        )


if __name__ == "__main__":
    main()
