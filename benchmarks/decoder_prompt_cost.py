"""What a soft prompt costs on a real decoder: prompttune against PEFT on SmolLM2-135M-Instruct.

Training steps (forward, backward, AdamW) of a 20-token soft prompt classifying SST-2 sentences
through the LM head, batch 16, timed in alternation in one process on the same batches:

- prompttune as it runs on a decoder: the prompt computed once per batch and attached to the rows
  as a prefix, the rows packed into sequences of the batch's width (P + the packed positions),
- the prompt computed once, the rows padded (`Backbone.packs_rows = False`: P + B*T tokens),
- the prompt read in every padded row (`prompts_once` off too: B*(P+T) tokens, the path before),
- PEFT's `PromptTuningConfig` (CAUSAL_LM) on the same model, its loss on the label word, the usual
  PEFT recipe (B*(P+T) tokens, and the vocabulary projected at every position).

"Tokens per step" counts the positions the model computes, padding included. Peak memory of a
training step of each, each in a fresh process (a CPU has no per-allocation counter that interleaved
runs could share), with glibc told to map and unmap blocks of 128 KiB and more one by one so that
resident memory follows what is alive: the highest resident memory sampled every 2 ms during a
step (the second, after the optimiser's state exists), less the resident memory just before it.

Generation: seconds per new token with the soft prompt against the bare model on the same inputs,
greedy, the per-token cost taken as (time for 33 new tokens - time for 1) / 32, alternating.

    python -m benchmarks.decoder_prompt_cost            # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from benchmarks.common import SHARED, environment, peak_memory_in_child, step_peak_memory, write_results
from benchmarks.peft_loop import peft_model

TEMPLATE = "Review: {text} All in all, it was {mask}"
PACKED = "prompttune: prompt once, rows packed"
ONCE = "prompttune: prompt once, rows padded"
EVERY_ROW = "prompttune: prompt in every padded row"
PEFT = "PEFT PromptTuningConfig"
WORDS = {"0": " terrible", "1": " great"}


def setups(args):
    """Each contender as (a training step on batch i, the number of batches)."""
    from transformers import AutoModelForCausalLM

    from prompttune import Backbone, ClassificationConfig, Columns, PromptModel, TrainConfig, load_examples
    from prompttune.core.weights import resolve_model
    from prompttune.training.loop import batch_loss

    examples = load_examples(str(SHARED / "sst2" / "train.tsv"), Columns(text="sentence"))[
        : args.batch_size * args.batches
    ]
    batches = [examples[i : i + args.batch_size] for i in range(0, len(examples), args.batch_size)]
    backbone = Backbone.from_pretrained(args.model)
    torch.manual_seed(0)
    ours = PromptModel.create(
        backbone,
        "soft_prompt",
        ClassificationConfig(labels=("0", "1"), template=TEMPLATE, verbalizer=(("terrible",), ("great",))),
        {"num_virtual_tokens": args.tokens, "init": "sample_vocab"},
    )
    ours_opt = torch.optim.AdamW(ours.parameter_groups(3e-2, 1e-3))
    ours.train()
    ours_rows = [[ours.task.encode(e) for e in b] for b in batches]

    def ours_step(once, packed):
        config = TrainConfig()

        def step(i):
            backbone.prompts_once, backbone.packs_rows = once, packed
            loss, _ = batch_loss(ours, ours.task, ours_rows[i % len(batches)], config, backbone.device)
            loss.backward()
            ours_opt.step()
            ours_opt.zero_grad(set_to_none=True)

        return step

    path, _ = resolve_model(args.model)
    base = AutoModelForCausalLM.from_pretrained(path)
    _, peft = peft_model("peft_prompt_tuning", path, base, virtual_tokens=args.tokens, init="random")
    peft_opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=3e-2)
    peft.train()
    base.eval()  # the frozen model without dropout, as prompttune runs it
    tokenizer = backbone.tokenizer
    peft_batches = []
    for b in batches:
        texts = [TEMPLATE.format(text=e.text, mask="").rstrip() + WORDS[e.label] for e in b]
        encoded = tokenizer(texts, padding=True, return_tensors="pt", padding_side="right")
        labels = torch.full_like(encoded["input_ids"], -100)
        last = encoded["attention_mask"].sum(-1) - 1
        labels[torch.arange(len(b)), last] = encoded["input_ids"][torch.arange(len(b)), last]  # the label word
        peft_batches.append((encoded, labels))

    def peft_step(i):
        encoded, labels = peft_batches[i % len(batches)]
        peft(**encoded, labels=labels).loss.backward()
        peft_opt.step()
        peft_opt.zero_grad(set_to_none=True)

    steps = {
        PACKED: ours_step(True, True),
        ONCE: ours_step(True, False),
        EVERY_ROW: ours_step(False, False),
        PEFT: peft_step,
    }

    def padded(rows):
        return len(rows) * max(len(r["input_ids"]) for r in rows)

    def packed(rows):  # the positions the packed sequences hold (the padded batch where packing would not pay)
        from prompttune.core.batching import packed_layout

        layout = packed_layout([len(r["input_ids"]) for r in rows])
        return padded(rows) if layout is None else layout[2] * layout[3]

    tokens = {
        PACKED: sum(args.tokens + packed(r) for r in ours_rows) / len(batches),
        ONCE: sum(args.tokens + padded(r) for r in ours_rows) / len(batches),
        EVERY_ROW: sum(len(r) * args.tokens + padded(r) for r in ours_rows) / len(batches),
        PEFT: sum(e["input_ids"].shape[0] * (e["input_ids"].shape[1] + args.tokens) for e, _ in peft_batches)
        / len(batches),
    }
    return steps, tokens, ours, backbone


def step_times(args) -> dict:
    steps, tokens, _, _ = setups(args)
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    if args.rounds % args.batches:
        raise SystemExit(f"--rounds {args.rounds}: a multiple of --batches {args.batches}, so every batch counts alike")
    for i in range(args.rounds + 1):
        order = names[i % len(names) :] + names[: i % len(names)]  # who goes first rotates
        for name in order:
            start = time.perf_counter()
            steps[name](i)
            if i >= 1:  # the first round warms up allocators
                times[name].append(time.perf_counter() - start)
        print(f"round {i}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names if times[n]), flush=True)
    # Every batch comes round equally often, so the mean over rounds is the mean over the batches.
    return {
        name: {
            "mean_seconds": statistics.mean(t),
            "median_seconds": statistics.median(t),
            "seconds": t,
            "tokens_per_step": tokens[name],
        }
        for name, t in times.items()
    }


def peak_memory(args, name: str) -> float:
    """MB a training step adds to the process's peak memory, measured in a process of its own."""
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
            "--tokens",
            str(args.tokens),
            "--batches",
            str(args.batches),
            "--threads",
            str(args.threads),
        ]
    )


def one_step_memory(args) -> float:
    steps, _, _, _ = setups(args)
    return step_peak_memory(steps[args.memory_of])


def generation_times(args) -> dict:
    from prompttune import Example, PromptModel
    from prompttune.tasks import GenerationConfig

    _, _, _, backbone = setups(args)
    torch.manual_seed(0)
    prompt = PromptModel.create(
        backbone,
        "soft_prompt",
        GenerationConfig(max_target_length=33),
        {"num_virtual_tokens": args.tokens, "init": "sample_vocab"},
    )
    bare = PromptModel.create(backbone, "hard_prompt", GenerationConfig(max_target_length=33))
    sources = [Example("name[The Eagle], eatType[coffee shop], food[Japanese], priceRange[less than £20]")] * 4

    def seconds(model, new):
        start = time.perf_counter()
        model.task.generate_texts(model, sources, max_new_tokens=new, min_new_tokens=new)
        return time.perf_counter() - start

    runs = {"soft prompt": [], "bare model": []}
    for i in range(args.generation_rounds + 1):
        for name, model in (("soft prompt", prompt), ("bare model", bare))[:: 1 if i % 2 else -1]:
            per_token = (seconds(model, 33) - seconds(model, 1)) / 32
            if i >= 1:
                runs[name].append(per_token)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    return {"per_token_seconds": medians, "ratio": medians["soft prompt"] / medians["bare model"], "rounds": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--generation-rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # one contender's step, in a process of its own
    parser.add_argument("--memory-only", action="store_true", help="measure peak memory, print it, write nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    if args.memory_of:
        print(json.dumps(one_step_memory(args)))
        return
    if args.memory_only:
        print({name: round(peak_memory(args, name)) for name in (PACKED, ONCE, EVERY_ROW, PEFT)})
        return
    training = step_times(args)
    for name in training:
        training[name]["peak_memory_mb"] = peak_memory(args, name)
    generation = generation_times(args)
    peft = training[PEFT]["mean_seconds"]
    lines = [
        "# A soft prompt on a real decoder: prompttune against PEFT",
        "",
        (
            f"Frozen `{args.model}` (SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to float32), a {args.tokens}-token soft "
            f"prompt classifying SST-2 sentences through the LM head, batches of {args.batch_size}; forward + backward + "
            f"AdamW, {args.rounds} rounds in one process over {args.batches} batches (each {args.rounds // args.batches} "
            "times), rotating which goes first; mean seconds per step; "
            f"{args.threads} CPU threads. Peak memory: the most resident memory a training step adds, sampled in a "
            "process of its own."
        ),
        "",
        "Command: `python -m benchmarks.decoder_prompt_cost`",
        "",
        "| | tokens per step | s / step | vs PEFT | peak memory of a step (MB) |",
        "|---|---|---|---|---|",
    ]
    for name, r in training.items():
        lines.append(
            f"| {name} | {r['tokens_per_step']:.0f} | {r['mean_seconds']:.3f} | "
            f"{r['mean_seconds'] / peft:.2f}x | {r['peak_memory_mb']:.0f} |"
        )
    g = generation["per_token_seconds"]
    lines += [
        "",
        (
            f"Generation, greedy, 4 rows, seconds per new token (33 new tokens less 1, over 32), median of "
            f"{args.generation_rounds} alternating rounds: soft prompt {g['soft prompt']:.4f}, bare model "
            f"{g['bare model']:.4f}: {generation['ratio']:.3f}x."
        ),
    ]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if not args.no_write:
        write_results(
            "decoder_prompt_cost",
            {"args": vars(args), "environment": environment(), "training": training, "generation": generation},
            markdown,
        )


if __name__ == "__main__":
    main()
