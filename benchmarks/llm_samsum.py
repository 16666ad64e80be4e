"""Dialogue summarisation on a real pretrained LLM: SAMSum on SmolLM2-135M-Instruct, prefix tuning
and a soft prompt against full fine-tuning and the instruct model's zero-shot summaries.

The data is SAMSum (`../shared/data/samsum`, JSONL `dialogue` -> `summary`; licence CC BY-NC-ND 4.0,
used here for benchmarking only). Every trained method sees the same seeded subset of training
dialogues for the same steps of the same batch size, each with its default learning rate; all are
scored on the same seeded subset of the test set with ROUGE-1/2/L (rouge-score, stemmed, F1 x100),
greedy decoding.

Truncation keeps the target whole: `max_target_length` is set above the longest summary of the
training subset and of the test subset (in tokens), and only the dialogue is cut, at
`--max-source-length` tokens (its end is dropped); the report says how many dialogues were cut.

    python -m benchmarks.llm_samsum                         # every method (resumes; hours on 2 cores)
    python -m benchmarks.llm_samsum --methods zero_shot,prefix
    python -m benchmarks.llm_samsum --report
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from benchmarks.common import (
    SHARED,
    device_setting,
    environment,
    finish_run,
    finished_rows,
    finished_run,
    run_device,
    write_results,
)

WORK = Path(__file__).resolve().parent / "runs" / "llm_samsum"
MODEL = "smollm2-135m-instruct"
INSTRUCTION = "Summarise the dialogue in one or two sentences, in the third person."
# Each trained row: the prompttune method and its options. `prefix` has the prefix length Li & Liang
# chose for table-to-text (10); `prefix_200` the one they found best for summarisation (200).
OURS = {
    "prefix": ("prefix", {"num_virtual_tokens": 10, "hidden_size": 512}),
    "prefix_200": ("prefix", {"num_virtual_tokens": 200, "hidden_size": 512}),
    "soft_prompt": ("soft_prompt", {"num_virtual_tokens": 20}),
    "full_finetune": ("full_finetune", {}),
}
METHODS = ("zero_shot", *OURS)
STEPS = 150  # the default budget: 1.2 passes over 1,000 dialogues in batches of 8


def write_subsets(train_size: int, test_size: int, seed: int) -> tuple[Path, Path]:
    from prompttune.storage import write_atomic

    paths = []
    for split, size in (("train", train_size), ("test", test_size)):
        source = SHARED / "samsum" / f"{split}.jsonl"
        if not source.is_file():
            raise SystemExit(f"{source} not found: the benchmark reads SAMSum from ../shared/data/samsum")
        rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [r for r in rows if r.get("dialogue", "").strip() and r.get("summary", "").strip()]
        chosen = random.Random(seed).sample(rows, min(size, len(rows)))
        path = WORK / "data" / f"{split}_{size}_seed{seed}.jsonl"
        if not path.is_file():
            write_atomic(
                path,
                "".join(
                    json.dumps({"dialogue": r["dialogue"], "summary": r["summary"]}, ensure_ascii=False) + "\n"
                    for r in chosen
                ),
            )
        paths.append(path)
    return paths[0], paths[1]


def lengths(args, train: Path, test: Path) -> dict:
    """Token counts behind the truncation policy."""
    from transformers import AutoTokenizer

    from prompttune.core.weights import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model)[0])
    out = {}
    for name, path in (("train", train), ("test", test)):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        dialogues = [len(tokenizer(r["dialogue"], add_special_tokens=False)["input_ids"]) for r in rows]
        summaries = [len(tokenizer(" " + r["summary"], add_special_tokens=False)["input_ids"]) for r in rows]
        out[name] = {
            "dialogues": len(rows),
            "dialogues_cut": sum(d > args.max_source_length for d in dialogues),
            "longest_dialogue": max(dialogues),
            "longest_summary": max(summaries),
        }
    longest = max(v["longest_summary"] for v in out.values())
    if longest >= args.max_target_length:
        raise SystemExit(
            f"--max-target-length {args.max_target_length}: a summary has {longest} tokens; the target "
            "must stay whole (raise it)"
        )
    return out


def run(method: str, args, train: Path, test: Path, setting: dict) -> dict:
    import transformers

    from prompttune import load_prompt
    from prompttune.api import interrupted_run, train_prompt
    from prompttune.storage import write_json_atomic
    from prompttune.tasks.data import group_references, load_generation_examples
    from prompttune.tasks.metrics import generation_metrics

    out = WORK / method
    finished = finished_run(out, setting)
    if finished is not None:
        return finished
    common = dict(
        model=args.model,
        task="generation",
        train=str(train),
        output=str(out),
        source_column="dialogue",
        target_column="summary",
        max_length=args.max_source_length,
        max_target_length=args.max_target_length,
        seed=args.seed,
        progress=False,
    )
    if not (out / "metrics.json").is_file():
        if method == "zero_shot":
            train_prompt(method="hard_prompt", chat=True, instruction=INSTRUCTION, **common)
        else:
            kind, options = OURS[method]
            train_prompt(
                method=kind,
                method_options=options,
                max_steps=args.steps,
                batch_size=args.batch_size,
                checkpoint_every=args.checkpoint_every,
                resume=interrupted_run(out) is not None,
                **common,
            )
    metrics = json.loads((out / "metrics.json").read_text())
    tests = group_references(load_generation_examples(str(test), "dialogue", "summary"))
    cached = out / "hypotheses.json"
    if cached.is_file():
        hypotheses = json.loads(cached.read_text())
    else:
        model = load_prompt(str(out), device=run_device())
        start = time.perf_counter()
        hypotheses = model.task.generate_texts(
            model, tests, batch_size=args.eval_batch_size, max_new_tokens=args.max_new_tokens
        )
        metrics["decode_seconds"] = round(time.perf_counter() - start, 1)
        write_json_atomic(cached, hypotheses)
    scores = generation_metrics(hypotheses, [list(e.targets) for e in tests])
    row = {
        **{k: round(scores[k], 4) for k in ("rouge1", "rouge2", "rougeL")},
        "train_seconds": metrics["training"]["seconds"],
        "steps": metrics["training"]["steps"],
        "trainable_parameters": metrics["parameters"]["trainable"],
        "artifact_bytes": metrics["artifact_bytes"],
        "transformers": transformers.__version__,
        "samples": hypotheses[:3],
    }
    return finish_run(out, setting, row)


def describe(method: str) -> dict:
    """What a trained row is, as the report and RESULTS.md state it: its prompttune method and, in
    words, its options."""
    kind, options = OURS[method]
    if kind == "full_finetune":
        return {"method": kind, "options": "every weight trained"}
    words = ([kind] if kind != method else []) + [f"{options['num_virtual_tokens']} virtual tokens"]
    words += [f"MLP {options['hidden_size']}"] if "hidden_size" in options else []
    return {"method": kind, "options": ", ".join(words)}


def markdown(setting: dict, rows: dict, policy: dict, methods: dict, name: str = "llm_samsum") -> str:
    options = (f" --steps {setting['steps']}" if setting["steps"] != STEPS else "") + (
        f" --name {name}" if name != "llm_samsum" else ""
    )
    lines = [
        "# SAMSum dialogue summarisation on SmolLM2-135M-Instruct",
        "",
        (
            f"Frozen SmolLM2-135M-Instruct (the Q4_1 GGUF file dequantised to float32). Training: {setting['train_size']} "
            f"SAMSum training dialogues drawn with seed {setting['seed']}, {setting['steps']} steps of "
            f"{setting['batch_size']} dialogues, each method's default learning rate; zero_shot is the chat template with "
            f'the instruction "{INSTRUCTION}". Test: {setting["test_size"]} test dialogues drawn with seed '
            f"{setting['seed']}, greedy decoding of at most {setting['max_new_tokens']} tokens, ROUGE F1 x100 (rouge-score, "
            "stemmed). 2 CPU cores. SAMSum is CC BY-NC-ND 4.0: used for this benchmark only."
        ),
        "",
        (
            f"Truncation: dialogues cut at {setting['max_source_length']} tokens "
            f"({policy['train']['dialogues_cut']} of {policy['train']['dialogues']} training and "
            f"{policy['test']['dialogues_cut']} of {policy['test']['dialogues']} test dialogues were longer; the longest has "
            f"{max(policy['train']['longest_dialogue'], policy['test']['longest_dialogue'])}); targets kept whole "
            f"(max_target_length {setting['max_target_length']}, the longest summary "
            f"{max(policy['train']['longest_summary'], policy['test']['longest_summary'])} tokens)."
        ),
        "",
        "Methods: " + "; ".join(f"{m} ({d['options']})" for m, d in methods.items()) + ".",
        "",
        f"Command: `python -m benchmarks.llm_samsum{options}`.",
        "",
        "Train s is wall-clock time, not always on quiet cores; `llm_cost.md` compares what a step costs.",
        "",
        "| method | ROUGE-1 | ROUGE-2 | ROUGE-L | trainable params | artifact bytes | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        lines.append(
            f"| {method} | {row['rouge1']:.2f} | {row['rouge2']:.2f} | {row['rougeL']:.2f} | "
            f"{row['trainable_parameters']:,} | {row['artifact_bytes']:,} | {row['train_seconds']:.0f} |"
        )
    prefixes = [m for m, d in methods.items() if d["method"] == "prefix"]
    if prefixes and "full_finetune" in rows:
        lines += [
            "",
            (f"Target, prefix ROUGE-L within 2 points of full fine-tuning ({rows['full_finetune']['rougeL']:.2f}):"),
        ]
        for method in prefixes:
            gap = rows["full_finetune"]["rougeL"] - rows[method]["rougeL"]
            lines.append(f"- {method}: {'met' if gap <= 2 else 'NOT met'}, {rows[method]['rougeL']:.2f} ({-gap:+.2f})")
    lines += ["", "Samples (first test dialogues):"]
    for method, row in rows.items():
        lines.append(f"- {method}: " + " / ".join(f"“{' '.join(s.split())}”" for s in row["samples"]))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batch-size", type=int, default=20)
    parser.add_argument("--max-source-length", type=int, default=384)
    parser.add_argument("--max-target-length", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--name", default="llm_samsum")
    args = parser.parse_args()
    global WORK
    WORK = WORK.parent / args.name
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    setting = {
        k: getattr(args, k)
        for k in (
            "model",
            "train_size",
            "test_size",
            "steps",
            "batch_size",
            "max_source_length",
            "max_target_length",
            "max_new_tokens",
            "seed",
        )
    } | device_setting()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    train, test = write_subsets(args.train_size, args.test_size, args.seed)
    policy = lengths(args, train, test)
    if not args.report:
        for method in methods:
            row = run(method, args, train, test, setting)
            print(f"{method}: ROUGE-1/2/L {row['rouge1']:.2f} / {row['rouge2']:.2f} / {row['rougeL']:.2f}", flush=True)
    rows = finished_rows(args.name, WORK, METHODS, setting)
    if rows:
        methods = {m: describe(m) for m in rows if m in OURS}
        write_results(
            args.name,
            {"setting": setting, "truncation": policy, "environment": environment(), "methods": methods, "rows": rows},
            markdown(setting, rows, policy, methods, args.name),
        )


if __name__ == "__main__":
    main()
