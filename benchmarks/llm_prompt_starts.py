"""Where a soft prompt starts: prompttune's draws against PEFT's, on SmolLM2-135M-Instruct.

    python benchmarks/llm_prompt_starts.py [--draws 16] [--pairs 32]

Both libraries start a 20-token prompt from rows of the embedding matrix drawn at random (prompttune's
`soft_prompt` default on a generation task, PEFT's `PromptTuningInit.SAMPLE_VOCAB`), seeded by the
training seed. From the same start the two train to the same prompt (`llm_e2e.py`'s row
`soft_prompt_peft_start`), so a gap between their trained rows comes from the start. This measures
whether the two ways of drawing differ, rather than only the draws behind them: for each seed,
each library's starting prompt as `llm_e2e.py` makes it (prompttune's `PromptModel.create` with the
seed, PEFT's `get_peft_model` after `torch.manual_seed(seed)`), scored by the loss of the same
forward pass (PEFT's model with the prompt copied in) on the first `--pairs` E2E training pairs
`llm_e2e.py` trains on first, and by the mean norm of its rows. Seeds 0, 1 and 2 are the starts of
the E2E rows. Results: benchmarks/results/llm_prompt_starts.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from common import environment, write_results
from llm_e2e import MODEL, OURS, padded_pairs, peft_encoder, peft_start, prompttune_order, write_subsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--draws", type=int, default=16, help="seeds 0 .. N-1")
    parser.add_argument("--pairs", type=int, default=32, help="training pairs the starting loss is measured on")
    parser.add_argument("--max-source-length", type=int, default=64)
    parser.add_argument("--max-target-length", type=int, default=64)
    parser.add_argument("--no-write", action="store_true", help="run, but leave benchmarks/results as it is")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from prompttune import PromptModel
    from prompttune.api import load_backbone
    from prompttune.core.sources import resolve_model
    from prompttune.runtime import quiet_libraries
    from prompttune.tasks import GenerationConfig
    from prompttune.tasks.data import load_generation_examples

    quiet_libraries()
    path, _ = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    train, _ = write_subsets(2000, 50, 0)
    encode = peft_encoder(tokenizer, args)
    features = [encode(e.text, t) for e in load_generation_examples(str(train), "mr", "ref") for t in e.targets]
    # The pairs of the first steps of the seed-0 run, in its order.
    order = [i for batch in prompttune_order(len(features), 8, 0, -(-args.pairs // 8)) for i in batch][:args.pairs]
    chosen = [features[i] for i in order]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    backbone = load_backbone(args.model)
    config = GenerationConfig(max_source_length=args.max_source_length, max_target_length=args.max_target_length)
    _, scorer = peft_start("peft_prompt_tuning", path, 0)
    scorer.eval()
    slot = scorer.prompt_encoder["default"].embedding.weight
    batches = [padded_pairs(chosen[at:at + 8], pad) for at in range(0, len(chosen), 8)]

    @torch.no_grad()
    def score(prompt: torch.Tensor) -> dict:
        slot.copy_(prompt)
        losses = [(scorer(input_ids=ids, attention_mask=mask, labels=labels).loss.item(), int((labels != -100).sum()))
                  for ids, mask, labels in batches]
        loss = sum(value * n for value, n in losses) / sum(n for _, n in losses)
        return {"loss": round(loss, 5), "row_norm": round(prompt.norm(dim=1).mean().item(), 5)}

    draws = []
    for seed in range(args.draws):
        ours = PromptModel.create(backbone, "soft_prompt", config, OURS["soft_prompt"], seed=seed).method.prompt.detach()
        _, peft = peft_start("peft_prompt_tuning", path, seed)
        draws.append({"seed": seed, "prompttune": score(ours.clone()),
                      "peft": score(peft.prompt_encoder["default"].embedding.weight.detach().clone())})
        print(f"seed {seed}: loss prompttune {draws[-1]['prompttune']['loss']:.4f}, PEFT {draws[-1]['peft']['loss']:.4f}",
              flush=True)
    summary = {}
    for library in ("prompttune", "peft"):
        for key in ("loss", "row_norm"):
            values = [d[library][key] for d in draws]
            summary[f"{library}_{key}"] = {"mean": round(statistics.mean(values), 5),
                                           "sd": round(statistics.stdev(values), 5) if len(values) > 1 else None}
    setting = {"model": args.model, "draws": args.draws, "pairs": args.pairs, "num_virtual_tokens": 20,
               "max_source_length": args.max_source_length, "max_target_length": args.max_target_length}
    if not args.no_write:
        write_results("llm_prompt_starts", {"setting": setting, "environment": environment(), "draws": draws,
                                            "summary": summary}, markdown(setting, draws, summary))


def markdown(setting: dict, draws: list, summary: dict) -> str:
    lines = ["# Where a soft prompt starts: prompttune's draws against PEFT's", "",
             f"Command: `python benchmarks/llm_prompt_starts.py --draws {setting['draws']} --pairs {setting['pairs']}`. "
             f"{setting['num_virtual_tokens']} embedding rows drawn at random by each library for seeds 0 to "
             f"{setting['draws'] - 1}; loss of the same forward pass on the first {setting['pairs']} E2E training pairs "
             "of the seed-0 run, and the rows' mean norm.", "",
             "| seed | loss prompttune | loss PEFT | row norm prompttune | row norm PEFT |", "|---|---|---|---|---|"]
    for d in draws:
        lines.append(f"| {d['seed']} | {d['prompttune']['loss']:.4f} | {d['peft']['loss']:.4f} | "
                     f"{d['prompttune']['row_norm']:.3f} | {d['peft']['row_norm']:.3f} |")
    s = summary
    lines += ["", f"Mean (sd): loss prompttune {s['prompttune_loss']['mean']:.4f} ({s['prompttune_loss']['sd']:.4f}), "
              f"PEFT {s['peft_loss']['mean']:.4f} ({s['peft_loss']['sd']:.4f}); row norm prompttune "
              f"{s['prompttune_row_norm']['mean']:.3f} ({s['prompttune_row_norm']['sd']:.3f}), PEFT "
              f"{s['peft_row_norm']['mean']:.3f} ({s['peft_row_norm']['sd']:.3f})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
