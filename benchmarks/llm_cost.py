"""What each prompt method costs on a real LLM, against PEFT's equivalent: SmolLM2-135M-Instruct on
E2E table-to-text batches.

Training: forward + backward + AdamW of each pair on the same batches of 8 E2E pairs, interleaved
round by round in one process (which goes first rotates), mean seconds per step:

- `prefix` (10 tokens, MLP 512)  vs PEFT `PrefixTuningConfig(prefix_projection=True, 512)`,
- `deep_prompt` (10 tokens)      vs PEFT `PrefixTuningConfig` without projection,
- `soft_prompt` (20 tokens)      vs PEFT `PromptTuningConfig`,
- `p_tuning` (20 tokens, LSTM)   vs PEFT `PromptEncoderConfig` (LSTM).

Peak memory: the most resident memory a training step adds (the second step, after the optimiser's
state exists), each contender in a process of its own with glibc mapping large blocks one by one,
sampled every 2 ms.

Generation: seconds per new token, greedy, 8 E2E sources, with a prefix, with a soft prompt and
with the bare model on the same inputs, (time for 33 new tokens - time for 1) / 32, alternating.

Runs on the oldest supported transformers (5.23), where PEFT 0.21's prefix tuning works:

    .venv-oldest/bin/python -m benchmarks.llm_cost         # about 15 minutes on 2 quiet CPU cores
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time

import torch

from benchmarks.common import SHARED, environment, peak_memory_in_child, step_peak_memory, write_results
from benchmarks.peft_loop import peft_model

PAIRS = {
    "prefix": "peft_prefix_tuning",
    "deep_prompt": "peft_prefix_tuning_noproj",
    "soft_prompt": "peft_prompt_tuning",
    "p_tuning": "peft_p_tuning",
}
OPTIONS = {
    "prefix": {"num_virtual_tokens": 10, "hidden_size": 512},
    "deep_prompt": {"num_virtual_tokens": 10},
    "soft_prompt": {"num_virtual_tokens": 20},
    "p_tuning": {"num_virtual_tokens": 20},
}
CONTENDERS = tuple(name for pair in PAIRS.items() for name in pair)


def e2e_pairs(count: int) -> list[tuple[str, str]]:
    path = SHARED / "e2e" / "trainset.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: the benchmark reads E2E from ../shared/data/e2e")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [(r["mr"].strip(), r["ref"].strip()) for r in csv.DictReader(handle)]
    return rows[:count]


def setups(args, only: str | None = None) -> dict:
    """Each contender's training step on batch i (only one of them, in a memory measurement)."""
    from prompttune import Backbone, Example, PromptModel, TrainConfig
    from prompttune.core.weights import resolve_model
    from prompttune.methods import method_class
    from prompttune.tasks import GenerationConfig
    from prompttune.training.loop import batch_loss

    pairs = e2e_pairs(args.batch_size * args.batches)
    examples = [Example(mr, targets=(ref,)) for mr, ref in pairs]
    backbone = Backbone.from_pretrained(args.model)
    config = GenerationConfig(max_source_length=64, max_target_length=64)
    steps = {}
    torch.manual_seed(0)
    encoder = None
    for ours, theirs in PAIRS.items():
        if only not in (None, ours) and theirs != only:
            continue
        model = PromptModel.create(backbone, ours, config, OPTIONS[ours], seed=0)
        encoder = model.task
        if only in (None, ours):
            optimizer = torch.optim.AdamW(model.parameter_groups(method_class(ours).default_lr, 1e-3))
            model.train()
            rows = [
                [model.task.encode(e, e.targets[0]) for e in examples[i : i + args.batch_size]]
                for i in range(0, len(examples), args.batch_size)
            ]

            def step(i, model=model, optimizer=optimizer, rows=rows):
                loss, _ = batch_loss(model, model.task, rows[i % len(rows)], TrainConfig(), backbone.device)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            steps[ours] = step
    # PEFT reads the same token ids prompttune's generation task makes (source EOS target EOS, the
    # loss on the target), padded on the right.
    encoder = encoder or PromptModel.create(backbone, "hard_prompt", config).task
    features = [encoder.encode(e, e.targets[0]) for e in examples]
    batches = []
    for i in range(0, len(features), args.batch_size):
        collated = encoder.collate(features[i : i + args.batch_size])
        batches.append(collated)
    path, _ = resolve_model(args.model)
    for ours, kind in PAIRS.items():
        if only not in (None, kind):
            continue
        base, model = peft_model(kind, path)  # the configurations the E2E comparison trains
        model.train()
        base.eval()
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=method_class(ours).default_lr
        )

        def step(i, model=model, optimizer=optimizer):
            batch = batches[i % len(batches)]
            model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps[kind] = step
    return {"steps": steps, "backbone": backbone, "examples": examples}


def step_times(args) -> dict:
    steps = setups(args)["steps"]
    names = list(steps)
    times = {name: [] for name in names}
    for i in range(args.rounds + 1):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            start = time.perf_counter()
            steps[name](i)
            if i >= 1:  # the first round warms up allocators
                times[name].append(time.perf_counter() - start)
        if i:
            print(f"round {i}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names), flush=True)
    return {
        name: {"mean_seconds": statistics.mean(t), "median_seconds": statistics.median(t), "seconds": t}
        for name, t in times.items()
    }


def peak_memory(args, name: str) -> float:
    """MB a training step of `name` adds to the process's peak memory, in a process of its own."""
    return peak_memory_in_child(
        [
            sys.executable,
            "-m",
            __spec__.name,
            "--memory-of",
            name,
            "--model",
            args.model,
            "--batch-size",
            str(args.batch_size),
            "--batches",
            str(args.batches),
            "--threads",
            str(args.threads),
        ]
    )


def one_step_memory(args) -> float:
    return step_peak_memory(setups(args, only=args.memory_of)["steps"][args.memory_of])


def generation_times(args) -> dict:
    from prompttune import Backbone, PromptModel
    from prompttune.tasks import GenerationConfig

    backbone = Backbone.from_pretrained(args.model)
    config = GenerationConfig(max_source_length=64, max_target_length=33)
    models = {
        "bare model": PromptModel.create(backbone, "hard_prompt", config),
        "prefix": PromptModel.create(backbone, "prefix", config, OPTIONS["prefix"], seed=0),
        "soft prompt": PromptModel.create(backbone, "soft_prompt", config, OPTIONS["soft_prompt"], seed=0),
    }
    from prompttune import Example

    sources = [Example(mr) for mr, _ in e2e_pairs(args.batch_size)]

    def seconds(model, new):
        start = time.perf_counter()
        model.task.generate_texts(model, sources, max_new_tokens=new, min_new_tokens=new)
        return time.perf_counter() - start

    runs = {name: [] for name in models}
    names = list(models)
    for i in range(args.generation_rounds + 1):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            per_token = (seconds(models[name], 33) - seconds(models[name], 1)) / 32
            if i >= 1:
                runs[name].append(per_token)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "per_token_seconds": medians,
        "ratio_to_bare": {k: v / medians["bare model"] for k, v in medians.items()},
        "rounds": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--generation-rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    if args.memory_of:
        print(json.dumps(one_step_memory(args)))
        return
    if args.rounds % args.batches:
        raise SystemExit(f"--rounds {args.rounds}: a multiple of --batches {args.batches}, so every batch counts alike")
    training = step_times(args)
    for name in training:
        training[name]["peak_memory_mb"] = peak_memory(args, name)
    generation = generation_times(args)
    import transformers

    lines = [
        "# What each prompt method costs on SmolLM2-135M-Instruct, against PEFT",
        "",
        (
            f"E2E pairs (source cut at 64 tokens, target at 64), batches of {args.batch_size}; forward + backward + "
            f"AdamW, {args.rounds} rounds over {args.batches} batches in one process, rotating which goes first; mean "
            f"seconds per step. Peak memory: the most resident memory a training step adds, in a process of its own. "
            f"{args.threads} CPU threads, transformers {transformers.__version__}."
        ),
        "",
        "Command: `.venv-oldest/bin/python -m benchmarks.llm_cost`",
        "",
        "| prompttune | s / step | peak MB | PEFT | s / step | peak MB | time ratio | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ours, theirs in PAIRS.items():
        a, b = training[ours], training[theirs]
        lines.append(
            f"| {ours} | {a['mean_seconds']:.3f} | {a['peak_memory_mb']:.0f} | {theirs} | "
            f"{b['mean_seconds']:.3f} | {b['peak_memory_mb']:.0f} | {a['mean_seconds'] / b['mean_seconds']:.2f}x | "
            f"{a['peak_memory_mb'] / max(b['peak_memory_mb'], 1e-9):.2f}x |"
        )
    g = generation["per_token_seconds"]
    lines += [
        "",
        (
            f"Generation, greedy, {args.batch_size} E2E sources, seconds per new token (33 new tokens less 1, over "
            f"32), median of {args.generation_rounds} rotating rounds:"
        ),
        "",
        "| | s / token | vs bare model |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {g[name]:.4f} | {generation['ratio_to_bare'][name]:.3f}x |" for name in g]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if not args.no_write:
        write_results(
            "llm_cost",
            {"args": vars(args), "environment": environment(), "training": training, "generation": generation},
            markdown,
        )


if __name__ == "__main__":
    main()
