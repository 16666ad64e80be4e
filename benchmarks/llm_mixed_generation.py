"""Generation with many prompts on one model: prompttune's mixed batches against PEFT's one adapter
at a time, on SmolLM2-135M-Instruct.

Eight prompts (four 20-token soft prompts, four 10-token prefixes), each asked to continue the same
number of E2E sources, every request exactly `--new-tokens` new tokens, greedy:

- prompttune: every request of every prompt in one mixed batch (`PromptSet.generate`);
- PEFT: the same prompts, exported with `prompttune export --format peft` and loaded as adapters
  (one `PeftModel` per adapter type, since PEFT refuses to mix types in one, over the same base
  model), one `generate` per prompt after `set_adapter` (PEFT's way to serve several).

Both run in one process, alternating, best of `--repeats`. Throughput is new tokens per second over
all requests, and the ratio prompttune / PEFT. The check that both run the same prompts compares
prompttune's mixed batch with PEFT on each request alone: in its own batches PEFT reads left-padded
rows at shifted positions (it ignores position ids), which can change their text.

Runs on the oldest supported transformers (5.23), on which PEFT 0.21's prefixes work:

    .venv-oldest/bin/python -m benchmarks.llm_mixed_generation     # a few minutes on 2 quiet CPU cores
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import SHARED, environment, write_results


def sources(count: int) -> list[str]:
    path = SHARED / "e2e" / "devset.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: the benchmark reads E2E from ../shared/data/e2e")
    with open(path, newline="", encoding="utf-8") as handle:
        mrs = list(dict.fromkeys(r["mr"].strip() for r in csv.DictReader(handle)))
    return mrs[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=8, help="half soft prompts, half prefixes")
    parser.add_argument("--per-prompt", type=int, default=4, help="requests per prompt")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from prompttune import Backbone, Example, PromptModel, PromptSet, save_prompt
    from prompttune.artifacts.peft_format import export_peft
    from prompttune.core.weights import resolve_model
    from prompttune.runtime import quiet_libraries
    from prompttune.tasks import GenerationConfig

    quiet_libraries()
    backbone = Backbone.from_pretrained(args.model)
    # The source and the continuation joined with nothing between them, as PEFT's generate reads them.
    config = GenerationConfig(separator="", max_source_length=64, max_target_length=args.new_tokens)
    work = Path(tempfile.mkdtemp(prefix="mixed-generation-"))
    prompt_set = PromptSet(backbone)
    names = []
    for i in range(args.prompts):
        method, options = (
            ("soft_prompt", {"num_virtual_tokens": 20}) if i % 2 == 0 else ("deep_prompt", {"num_virtual_tokens": 10})
        )
        name = f"{method}_{i}"
        model = PromptModel.create(backbone, method, config, options, seed=i)
        save_prompt(model, work / name)
        export_peft(work / name, work / f"{name}.peft", backbone=backbone)
        prompt_set.add(name, model)
        names.append(name)
    texts = sources(args.per_prompt)
    rows = [(name, Example(text)) for name in names for text in texts]
    options = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    path, _ = resolve_model(args.model)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    # PEFT holds adapters of one type per PeftModel: one for the soft prompts, one for the prefixes,
    # both over the same base model (prompt learning leaves it unchanged).
    holders = {}
    for name in names:
        kind = name.split("_")[0]
        if kind not in holders:
            holders[kind] = PeftModel.from_pretrained(base, work / f"{name}.peft", adapter_name=name).eval()
        else:
            holders[kind].load_adapter(work / f"{name}.peft", adapter_name=name)
    holder_of = {name: holders[name.split("_")[0]] for name in names}
    tokenizer = backbone.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(t)["input_ids"][:64] for t in texts]
    width = max(len(e) for e in encoded)
    input_ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])

    def ours():
        with torch.no_grad():
            return prompt_set.generate(rows, batch_size=len(rows), **options)

    def peft_generate(batches):
        """PEFT, set_adapter per prompt, each of `batches` (input ids, attention mask) in one call."""
        out = []
        with torch.no_grad():
            for name in names:
                peft = holder_of[name]
                peft.set_adapter(name)
                for ids, attention in batches:
                    generated = peft.generate(input_ids=ids, attention_mask=attention, pad_token_id=pad, **options)
                    out += [
                        [t.strip()]
                        for t in tokenizer.batch_decode(generated[:, ids.shape[1] :], skip_special_tokens=True)
                    ]
        return out

    def theirs():
        return peft_generate([(input_ids, mask)])

    def theirs_one_by_one():
        """PEFT on each request alone (no padding), for the check that both run the same prompts."""
        return peft_generate([(torch.tensor([row]), None) for row in encoded])

    mine, batched, alone = ours(), theirs(), theirs_one_by_one()  # the first calls warm up too
    same = sum(a == b for a, b in zip(mine, alone))
    padded_differs = sum(a != b for a, b in zip(batched, alone))
    times = {"prompttune": [], "peft": []}
    for r in range(args.repeats):
        for label, fn in (("prompttune", ours), ("peft", theirs))[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    tokens = len(rows) * args.new_tokens
    best = {k: min(v) for k, v in times.items()}
    ratio = best["peft"] / best["prompttune"]
    import transformers

    markdown = "\n".join(
        [
            "# Generation with many prompts on SmolLM2-135M-Instruct: mixed batches against PEFT's set_adapter",
            "",
            (
                f"{args.prompts} prompts (half 20-token soft prompts, half 10-token prefixes), {args.per_prompt} E2E sources each, "
                f"exactly {args.new_tokens} new tokens per request, greedy; {tokens} new tokens in all. prompttune: one mixed "
                "batch; PEFT: the same prompts exported as adapters (one PeftModel per adapter type, as PEFT cannot mix "
                "types in one, over the same base model), one `generate` per prompt after "
                f"`set_adapter`. Best of {args.repeats} alternating repeats in one process, {args.threads} CPU threads, "
                f"transformers {transformers.__version__}."
            ),
            "",
            "Command: `.venv-oldest/bin/python -m benchmarks.llm_mixed_generation`",
            "",
            "| | seconds | new tokens / s |",
            "|---|---|---|",
            f"| prompttune, one mixed batch | {best['prompttune']:.2f} | {tokens / best['prompttune']:.1f} |",
            f"| PEFT, set_adapter per prompt | {best['peft']:.2f} | {tokens / best['peft']:.1f} |",
            "",
            f"Throughput ratio prompttune / PEFT: {ratio:.2f}x (target: 3x or more).",
            "",
            (
                f"The same prompts: prompttune's mixed batch gives the text PEFT gives for each request run alone for "
                f"{same} of {len(rows)} requests. PEFT's own batches give another text for {padded_differs} of them: in a "
                "batch, PEFT ignores position ids, so a row padded on the left is read at shifted positions."
            ),
            "",
        ]
    )
    print(markdown)
    if not args.no_write:
        write_results(
            "llm_mixed_generation",
            {
                "args": vars(args),
                "environment": environment(),
                "seconds": times,
                "tokens": tokens,
                "ratio": ratio,
                "same_as_peft_alone": same,
                "peft_batched_differs_from_alone": padded_differs,
                "requests": len(rows),
            },
            markdown,
        )


if __name__ == "__main__":
    main()
