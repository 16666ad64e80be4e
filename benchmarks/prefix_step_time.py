"""Training-step time of prompttune's prefix methods against PEFT's prefix tuning, interleaved.

End-to-end runs (sst2_methods.py) run each method in its own process one after the other, so a few
percent of machine noise separates even two runs of the same code. This script puts both in one
process on frozen MiniLM and times their training steps in alternation on the same SST-2 batches:
forward, backward and an AdamW step, model code only (no data loading). It reports the median over
the rounds and the ratio, for `deep_prompt` against `PrefixTuningConfig` and for `prefix` against
`PrefixTuningConfig(prefix_projection=True)`.

    python -m benchmarks.prefix_step_time          # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import SHARED, environment, write_results
from benchmarks.peft_loop import peft_model

PAIRS = (("deep_prompt", False), ("prefix", True))  # (prompttune method, PEFT prefix_projection)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(m for m, _ in PAIRS), help="which prompttune methods to time")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prompttune import Backbone, ClassificationConfig, Columns, PromptModel, load_examples
    from prompttune.core.weights import resolve_model
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    examples = load_examples(str(SHARED / "sst2" / "train.tsv"), Columns(text="sentence"))[: args.batch_size * 4]
    path, _ = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    results = {}
    for method, projection in [(m, p) for m, p in PAIRS if m in args.methods.split(",")]:
        torch.manual_seed(0)
        ours = PromptModel.create(
            Backbone.from_pretrained(args.model),
            method,
            ClassificationConfig(labels=("0", "1")),
            {"num_virtual_tokens": args.tokens},
        )
        ours_opt = torch.optim.AdamW([g for g in ours.parameter_groups(1e-3, 1e-3)])
        ours.train()
        base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        kind = "peft_prefix_tuning" if projection else "peft_prefix_tuning_noproj"
        extra = {} if projection else {"encoder_hidden_size": 512}
        _, peft = peft_model(kind, path, base, task_type="SEQ_CLS", virtual_tokens=args.tokens, **extra)
        peft_opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-3)
        peft.train()
        base.eval()  # the frozen model without dropout, as prompttune runs it
        batches = [examples[i : i + args.batch_size] for i in range(0, len(examples), args.batch_size)]
        ours_batches = [ours.task.collate([ours.task.encode(e) for e in b]) for b in batches]
        peft_batches = [
            (
                tokenizer([e.text for e in b], padding=True, truncation=True, max_length=256, return_tensors="pt"),
                torch.tensor([int(e.label) for e in b]),
            )
            for b in batches
        ]

        n = len(batches)

        def ours_step(i, ours=ours, ours_batches=ours_batches, ours_opt=ours_opt, n=n):
            ours.loss(ours_batches[i % n]).backward()
            ours_opt.step()
            ours_opt.zero_grad(set_to_none=True)

        def peft_step(i, peft=peft, peft_batches=peft_batches, peft_opt=peft_opt, n=n):
            encoded, labels = peft_batches[i % n]
            peft(**encoded, labels=labels).loss.backward()
            peft_opt.step()
            peft_opt.zero_grad(set_to_none=True)

        times = {"prompttune": [], "peft": []}
        for i in range(args.rounds + 2):
            for name, step in (
                (("prompttune", ours_step), ("peft", peft_step))
                if i % 2 == 0
                else (("peft", peft_step), ("prompttune", ours_step))
            ):
                start = time.perf_counter()
                step(i)
                if i >= 2:  # the first rounds warm up allocators and kernels
                    times[name].append(time.perf_counter() - start)
        medians = {k: statistics.median(v) for k, v in times.items()}
        results[method] = {
            "peft_prefix_projection": projection,
            "median_seconds": medians,
            "ratio": medians["prompttune"] / medians["peft"],
            "rounds": args.rounds,
        }
        print(method, results[method], flush=True)
    lines = [
        "# Training-step time: prompttune prefix methods vs PEFT prefix tuning, interleaved in one process",
        "",
        (
            f"Frozen `{args.model}`, batches of {args.batch_size} SST-2 sentences, {args.tokens}-token prefixes, forward + "
            f"backward + AdamW step, {args.rounds} rounds alternating which goes first, median seconds per step; "
            f"{args.threads} CPU threads."
        ),
        "",
        "Command: `python -m benchmarks.prefix_step_time`",
        "",
        "| prompttune method | PEFT config | prompttune s / step | PEFT s / step | ratio |",
        "|---|---|---|---|---|",
    ]
    for method, r in results.items():
        config = "PrefixTuningConfig(prefix_projection=True)" if r["peft_prefix_projection"] else "PrefixTuningConfig"
        lines.append(
            f"| {method} | {config} | {r['median_seconds']['prompttune']:.4f} | {r['median_seconds']['peft']:.4f} | "
            f"{r['ratio']:.3f} |"
        )
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if not args.no_write:
        write_results(
            "prefix_step_time", {"args": vars(args), "environment": environment(), "results": results}, markdown
        )


if __name__ == "__main__":
    main()
