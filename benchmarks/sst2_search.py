"""Searched discrete prompts on frozen MiniLM and SST-2, against the manual zero-shot hard prompt and
the linear probe.

All on the same 2,000-sentence SST-2 training subset, the same number of steps and batch size, scored
on the 872 SST-2 dev sentences, in one process one after another:

- `hard_prompt`: the manual zero-shot prompt ("{text} It was {mask}.", label words terrible/great,
  scored by embedding similarity: MiniLM has no LM head);
- `linear_probe`: a linear head on the frozen mean-pooled features;
- `autoprompt` (5 trigger tokens before the sentence, 10 candidates re-scored per round) with a
  linear head trained at the same time (MiniLM has no LM head to read label tokens from);
- `pez` (5 tokens, projected onto the vocabulary) with a linear head;
- `soft_prompt` started from the tokens autoprompt found (a searched prompt as the initialisation of
  a soft prompt), and the same soft prompt started from sampled vocabulary, for comparison.

    python -m benchmarks.sst2_search          # about 20 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import ZERO_SHOT_TEMPLATE, add_budget_arguments, environment, sst2_subset, write_results


def seconds_per_step(folder: Path) -> float:
    """Median seconds per step (a search round for autoprompt) between consecutive entries of the
    run's log, so the dev evaluation does not count."""
    entries = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    marks = sorted({e["step"]: e["time"] for e in entries if "eval" not in e}.items())
    rates = [(t2 - t1) / (s2 - s1) for (s1, t1), (s2, t2) in itertools.pairwise(marks) if s2 > s1]
    return statistics.median(rates) if rates else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_arguments(parser)
    parser.add_argument("--tokens", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from prompttune.api import train_prompt
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="prompttune-search-"))
    train_path, dev_path = sst2_subset(work, args.train_size, args.seed)
    common = dict(
        model=args.model,
        train=str(train_path),
        eval=str(dev_path),
        text_column="sentence",
        labels=["0", "1"],
        seed=args.seed,
        progress=False,
    )
    budget = dict(max_steps=args.steps, batch_size=args.batch_size, eval_every=args.steps)
    runs = {}

    def record(name, metrics, folder=None, **more):
        training = metrics["training"]
        runs[name] = {
            "dev_accuracy": metrics["dev_metrics"]["accuracy"],
            "dev_f1_macro": metrics["dev_metrics"]["f1_macro"],
            "train_seconds": training["seconds"],
            "steps": training["steps"],
            "seconds_per_step": seconds_per_step(folder) if folder else 0.0,
            "trainable_parameters": metrics["parameters"]["trainable"],
            **more,
        }
        print(name, json.dumps(runs[name]), flush=True)

    record(
        "hard_prompt (zero-shot)",
        train_prompt(
            method="hard_prompt",
            output=str(work / "hard"),
            template=ZERO_SHOT_TEMPLATE,
            verbalizer="0:terrible,1:great",
            **common,
        ),
    )
    record(
        "linear_probe",
        train_prompt(method="linear_probe", output=str(work / "probe"), **common, **budget),
        work / "probe",
    )
    searched = {}
    for method, options in (
        ("autoprompt", {"num_tokens": args.tokens, "num_candidates": args.candidates}),
        ("pez", {"num_tokens": args.tokens}),
    ):
        metrics = train_prompt(method=method, output=str(work / method), method_options=options, **common, **budget)
        meta = json.loads((work / method / "prompt.json").read_text())
        searched[method] = meta["searched"]
        rounds = [json.loads(line) for line in (work / method / "log.jsonl").read_text().splitlines()]
        improved = sum(1 for r in rounds if r.get("search", {}).get("improved"))
        record(
            f"{method} + head",
            metrics,
            work / method,
            prompt_text=meta["searched"]["prompt_text"],
            tokens=meta["searched"]["tokens"],
            template=meta["task_config"]["template"],
            rounds_that_changed_the_prompt=improved,
        )
    text = searched["autoprompt"]["prompt_text"]
    record(
        "soft_prompt from autoprompt's tokens",
        train_prompt(
            method="soft_prompt",
            output=str(work / "soft_searched"),
            method_options={"num_virtual_tokens": args.tokens, "init": "text", "init_text": text},
            **common,
            **budget,
        ),
        work / "soft_searched",
        init_text=text,
    )
    record(
        "soft_prompt from sampled vocabulary",
        train_prompt(
            method="soft_prompt",
            output=str(work / "soft_vocab"),
            method_options={"num_virtual_tokens": args.tokens, "init": "sample_vocab"},
            **common,
            **budget,
        ),
        work / "soft_vocab",
    )

    lines = [
        "# Searched discrete prompts on frozen MiniLM (SST-2)",
        "",
        (
            f"Frozen `{args.model}`, {args.train_size} SST-2 training sentences, {args.steps} steps of batch "
            f"{args.batch_size} (a search round per step), 872 dev sentences, seed {args.seed}, {args.threads} CPU threads. "
            "Command: `python -m benchmarks.sst2_search`"
        ),
        "",
        (
            "Seconds per step: the median time between logged steps (for autoprompt, one search round: a forward and "
            "backward pass, then every candidate re-scored on the batch), without the dev evaluation."
        ),
        "",
        "| method | dev accuracy | dev macro F1 | seconds per step (search round) | prompt |",
        "|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        prompt = r.get("prompt_text") or r.get("init_text") or ""
        lines.append(
            f"| {name} | {r['dev_accuracy']:.4f} | {r['dev_f1_macro']:.4f} | {r['seconds_per_step']:.3f} | "
            f"{('`' + prompt + '`') if prompt else ''} |"
        )
    for method in ("autoprompt", "pez"):
        r = runs[f"{method} + head"]
        lines.append("")
        lines.append(
            f"{method}: template `{r['template']}`; the prompt changed in {r.get('rounds_that_changed_the_prompt')} "
            "rounds (the search runs for the first 75% of the steps, the rest fit the head to the prompt found)."
            if method == "autoprompt"
            else f"{method}: template `{r['template']}`."
        )
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if not args.no_write:
        write_results("sst2_search", {"args": vars(args), "environment": environment(), "runs": runs}, markdown)


if __name__ == "__main__":
    main()
