"""CoNLL-2003 named-entity recognition on frozen all-MiniLM-L6-v2: entity F1 of every method that
tags tokens, and of PEFT's prompt-learning methods for token classification, at one budget.

    python -m benchmarks.conll_ner                      # the committed results (about 70 minutes on 2 cores)
    python -m benchmarks.conll_ner --methods deep_prompt --steps 50   # a quick look

The subsets (seeded, from ../shared/data/conll2003): `--train-size` training sentences, and
`--eval-size` sentences of the dev and of the test set. Every run trains `--steps` steps of
`--batch-size` sentences with AdamW, linear decay after 6% warmup, and each method's default
learning rates (PEFT's methods get the learning rates of the prompttune method they correspond to:
prefix tuning as P-tuning v2 = deep_prompt, prompt tuning = soft_prompt). Words are tagged at their
first sub-token; entity precision, recall and F1 are seqeval's (conlleval's counting) for every run.

Each finished run writes its row into benchmarks/runs/conll_ner/ and is not run again; a prompttune
run killed midway resumes from its last checkpoint. The table and the JSON go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from benchmarks import peft_loop
from benchmarks.common import SHARED, environment, write_results
from benchmarks.peft_loop import peft_model

WORK = Path(__file__).resolve().parent / "runs" / "conll_ner"
OURS = ("deep_prompt", "prefix", "soft_prompt", "p_tuning", "linear_probe", "full_finetune")
PEFT = {"peft_prefix_tuning": "deep_prompt", "peft_prompt_tuning": "soft_prompt"}
METHODS = OURS + tuple(PEFT)
VIRTUAL_TOKENS = 16
PREFIX_HIDDEN = 256


def subsets(train_size: int, eval_size: int, seed: int) -> dict[str, Path]:
    """Seeded subsets of the CoNLL-2003 splits, as JSONL with `tokens` and `tags`."""
    from prompttune.storage import write_atomic
    from prompttune.tasks.token_classification import TokenClassificationTask

    out = {}
    for split, size in (("train", train_size), ("dev", eval_size), ("test", eval_size)):
        source = SHARED / "conll2003" / f"{split}.txt"
        if not source.is_file():
            raise SystemExit(f"{source} not found: this benchmark reads CoNLL-2003 from ../shared/data/conll2003")
        path = WORK / "data" / f"{split}_{size}_seed{seed}.jsonl"
        if not path.is_file():
            records = TokenClassificationTask.read_records(str(source))
            chosen = random.Random(seed).sample(records, min(size, len(records)))
            write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen))
        out[split] = path
    return out


def all_tags() -> list[str]:
    """The tag set of the whole training file, so that every subset trains the same head."""
    from prompttune.tasks.token_classification import TokenClassificationTask

    source = str(SHARED / "conll2003" / "train.txt")
    return TokenClassificationTask.sweep_options(source, TokenClassificationTask.resolve_columns({}))["labels"]


def run_ours(method: str, args, data: dict[str, Path], tags: list[str]) -> dict:
    from prompttune.api import evaluate_prompt, interrupted_run, train_prompt

    out = WORK / method
    options = {}
    if method in ("deep_prompt", "prefix", "soft_prompt", "p_tuning"):
        options["num_virtual_tokens"] = args.virtual_tokens
    if method == "prefix":
        options["hidden_size"] = PREFIX_HIDDEN
    train_options = {"lr": args.lr} if args.lr is not None and "num_virtual_tokens" in options else {}
    metrics = train_prompt(
        model=args.model,
        method=method,
        task="token_classification",
        train=str(data["train"]),
        eval=str(data["dev"]),
        output=str(out),
        labels=tags,
        method_options=options,
        max_steps=args.steps,
        batch_size=args.batch_size,
        eval_every=args.steps,
        seed=args.seed,
        progress=False,
        resume=interrupted_run(out) is not None,
        **train_options,
    )
    test = evaluate_prompt(str(out), str(data["test"]))
    return {
        "dev": _scores(metrics["dev_metrics"]),
        "test": _scores(test),
        "train_seconds": metrics["training"]["seconds"],
        "steps": metrics["training"]["steps"],
        "trainable_parameters": metrics["parameters"]["trainable"],
        "artifact_bytes": metrics["artifact_bytes"],
    }


def run_peft(kind: str, args, data: dict[str, Path], tags: list[str]) -> dict:
    """PEFT's PrefixTuningConfig or PromptTuningConfig with task_type TOKEN_CLS on
    AutoModelForTokenClassification, trained by a loop that mirrors prompttune's (same batches in the
    same order, same optimiser, schedule and learning rates) and scored with the same alignment and
    metrics. PEFT's prompt tuning returns logits for its virtual tokens too; those are dropped."""
    import torch
    from transformers import AutoModelForTokenClassification

    from prompttune import Backbone
    from prompttune.core.weights import resolve_model
    from prompttune.methods import method_class
    from prompttune.tasks.token_classification import (
        TokenClassificationConfig,
        TokenClassificationTask,
        tagging_metrics,
    )

    torch.manual_seed(args.seed)
    path, _ = resolve_model(args.model)
    backbone = Backbone.from_pretrained(args.model, head="none")  # its tokenizer and alignment, as prompttune's
    task = TokenClassificationTask(TokenClassificationConfig(labels=tuple(tags)), backbone)
    columns = TokenClassificationTask.resolve_columns({})
    examples = {split: TokenClassificationTask.read_examples(str(p), columns) for split, p in data.items()}
    base = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(tags))
    # PEFT's prefix tuning here has no reparameterisation, as prompttune's deep_prompt it is set against.
    if kind == "peft_prefix_tuning":
        _, model = peft_model(
            "peft_prefix_tuning_noproj", path, base, task_type="TOKEN_CLS", virtual_tokens=args.virtual_tokens
        )
    else:
        _, model = peft_model(
            kind, path, base, task_type="TOKEN_CLS", virtual_tokens=args.virtual_tokens, tokenizer_name_or_path=path
        )
    ours = method_class(PEFT[kind])
    prompt_params = [p for n, p in model.named_parameters() if p.requires_grad and "prompt_encoder" in n]
    head_params = [p for n, p in model.named_parameters() if p.requires_grad and "prompt_encoder" not in n]
    features = {split: [task.encode(e) for e in rows] for split, rows in examples.items()}
    virtual = args.virtual_tokens if kind == "peft_prompt_tuning" else 0

    def logits_of(batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return out[:, virtual:]

    def loss_of(chosen):
        batch = task.collate([features["train"][i] for i in chosen])
        return task.loss(logits_of(batch), batch)

    seconds = peft_loop.train(
        model,
        base,
        [
            {"params": prompt_params, "lr": args.lr or ours.default_lr},
            {"params": head_params, "lr": ours.default_head_lr},
        ],
        loss_of,
        len(features["train"]),
        args.steps,
        args.batch_size,
        args.seed,
    )
    step = args.steps
    model.eval()
    scores = {}
    with torch.no_grad():
        for split in ("dev", "test"):
            gold, predicted = [], []
            for first in range(0, len(features[split]), 64):
                batch = task.collate(features[split][first : first + 64])
                predicted_ids, _ = task.word_scores(logits_of(batch), batch)
                for row_pred, row_gold in zip(predicted_ids.tolist(), batch["word_labels"].tolist()):
                    predicted.append([tags[t] for t, g in zip(row_pred, row_gold) if g >= 0])
                    gold.append([tags[g] for g in row_gold if g >= 0])
            scores[split] = _scores(tagging_metrics(gold, predicted))
    out = WORK / kind
    model.save_pretrained(out)
    return {
        **scores,
        "train_seconds": round(seconds, 3),
        "steps": step,
        "trainable_parameters": sum(p.numel() for p in prompt_params + head_params),
        "artifact_bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
    }


def _scores(metrics: dict) -> dict:
    return {k: round(metrics[k], 4) for k in ("f1", "precision", "recall", "accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--eval-size", type=int, default=500)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--virtual-tokens",
        type=int,
        default=VIRTUAL_TOKENS,
        help="prompt length of the prompt methods (P-tuning v2 finds sequence labelling prefers long ones)",
    )
    parser.add_argument(
        "--lr", type=float, help="learning rate of prompttune's prompt methods (default: each method's)"
    )
    parser.add_argument("--methods", help=f"comma-separated subset of {', '.join(METHODS)}")
    parser.add_argument("--no-write", action="store_true", help="run, but leave benchmarks/results as it is")
    parser.add_argument(
        "--name",
        default="conll_ner",
        help="results name: benchmarks/results/NAME.{json,md}, runs in benchmarks/runs/NAME",
    )
    args = parser.parse_args()
    global WORK
    WORK = WORK.parent / args.name
    import transformers

    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    methods = args.methods.split(",") if args.methods else list(METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    setting = {
        k: getattr(args, k)
        for k in ("model", "train_size", "eval_size", "steps", "batch_size", "seed", "virtual_tokens", "lr")
    }
    WORK.mkdir(parents=True, exist_ok=True)
    data = subsets(args.train_size, args.eval_size, args.seed)
    tags = all_tags()
    rows = {}
    for method in methods:
        done = WORK / f"{method}.result.json"
        if done.is_file():
            saved = json.loads(done.read_text())
            if same_setting(saved, setting):
                rows[method] = saved["row"]
                print(f"{method}: done earlier, dev F1 {rows[method]['dev']['f1']:.4f}", flush=True)
                continue
        started = time.perf_counter()
        row = run_peft(method, args, data, tags) if method in PEFT else run_ours(method, args, data, tags)
        row["wall_seconds"] = round(time.perf_counter() - started, 1)
        row["transformers"] = transformers.__version__
        rows[method] = row
        done.write_text(json.dumps({"setting": setting, "row": row}, indent=2) + "\n")
        print(
            f"{method}: dev F1 {row['dev']['f1']:.4f}, test F1 {row['test']['f1']:.4f}, {row['train_seconds']:.0f} s",
            flush=True,
        )
    if args.no_write:
        return
    # Every method finished with this setting, whichever invocation ran it, in the table's order.
    for method in METHODS:
        done = WORK / f"{method}.result.json"
        if method not in rows and done.is_file():
            saved = json.loads(done.read_text())
            if same_setting(saved, setting):
                rows[method] = saved["row"]
    rows = {m: rows[m] for m in METHODS if m in rows}
    write_results(
        args.name, {"setting": setting, "environment": environment(), "rows": rows}, markdown(setting, rows, args.name)
    )


def same_setting(saved: dict, setting: dict) -> bool:
    """Whether a finished run used this setting (runs from before --virtual-tokens used 16)."""
    return {"virtual_tokens": VIRTUAL_TOKENS, "lr": None, **saved.get("setting", {})} == setting


def markdown(setting: dict, rows: dict, name: str = "conll_ner") -> str:
    lines = [
        "# CoNLL-2003 NER on frozen all-MiniLM-L6-v2",
        "",
        "Command: `python -m benchmarks.conll_ner"
        + ("" if name == "conll_ner" else f" --name {name} --steps {setting['steps']} --methods {','.join(rows)}")
        + ("" if setting["virtual_tokens"] == VIRTUAL_TOKENS else f" --virtual-tokens {setting['virtual_tokens']}")
        + ("" if setting["lr"] is None else f" --lr {setting['lr']:g}")
        + f"` ({setting['train_size']} training sentences, "
        f"{setting['eval_size']} dev and {setting['eval_size']} test sentences drawn with seed {setting['seed']}; "
        f"{setting['steps']} steps of {setting['batch_size']} sentences; {setting['virtual_tokens']} virtual tokens; "
        f"seed {setting['seed']}; 2 CPU cores).",
        "",
        (
            "Entity-level F1, precision and recall by seqeval (conlleval's counting); word accuracy. Training seconds "
            "were measured while other jobs shared the two cores at times: they are not a speed comparison "
            "(`benchmarks/prefix_step_time.py` is one)."
        ),
        "",
        (
            "| method | dev F1 | test F1 | test precision | test recall | test word accuracy | trainable parameters "
            "| artifact bytes | train s | transformers |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        lines.append(
            f"| {method} | {row['dev']['f1']:.4f} | {row['test']['f1']:.4f} | {row['test']['precision']:.4f} | "
            f"{row['test']['recall']:.4f} | {row['test']['accuracy']:.4f} | {row['trainable_parameters']:,} | "
            f"{row['artifact_bytes']:,} | {row['train_seconds']:.0f} | {row.get('transformers', '-')} |"
        )
    if "deep_prompt" in rows and "full_finetune" in rows:
        gap = rows["full_finetune"]["test"]["f1"] - rows["deep_prompt"]["test"]["f1"]
        verdict = "met" if gap <= 0.02 else "not met"
        lines += [
            "",
            (
                f"Target, deep_prompt within 2 F1 points of full fine-tuning on test: {verdict} "
                f"(deep_prompt {rows['deep_prompt']['test']['f1']:.4f}, full_finetune "
                f"{rows['full_finetune']['test']['f1']:.4f}, gap {100 * gap:+.1f} points)."
            ),
        ]
    for peft, ours in PEFT.items():
        if peft in rows and ours in rows:
            lines.append(
                f"- {ours} {rows[ours]['test']['f1']:.4f} vs PEFT's {peft} {rows[peft]['test']['f1']:.4f} test F1."
            )
    if any(m in rows for m in PEFT):
        lines += [
            "",
            (
                "PEFT 0.21's prefix tuning looks for a `past_key_values` argument, which transformers 5.24 renamed "
                "`cache` on BERT: PEFT's rows were run with transformers 5.23 (`.venv-oldest/bin/python "
                "benchmarks/conll_ner.py --methods peft_prefix_tuning,peft_prompt_tuning`), prompttune's with the "
                "version their row names."
            ),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
