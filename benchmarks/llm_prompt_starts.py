"""Where a soft prompt starts: prompttune's draws against PEFT's, on SmolLM2-135M-Instruct.

    python -m benchmarks.llm_prompt_starts [--draws 16] [--pairs 32] [--train K]

Both libraries start a 20-token prompt from rows of the embedding matrix drawn at random (prompttune's
`soft_prompt` default on a generation task, PEFT's `PromptTuningInit.SAMPLE_VOCAB`), seeded by the
training seed. From the same start the two train to the same prompt (`llm_e2e.py`'s row
`soft_prompt_peft_start`), so a gap between their trained rows comes from the start. This measures
whether the two ways of drawing differ, rather than only the draws behind them: for each seed,
each library's starting prompt as `llm_e2e.py` makes it (prompttune's `PromptModel.create` with the
seed, PEFT's `get_peft_model` after `torch.manual_seed(seed)`), scored by the loss of the same
forward pass (PEFT's model with the prompt copied in) on the first `--pairs` E2E training pairs
`llm_e2e.py` trains on first, and by the mean norm of its rows. Seeds 0, 1 and 2 are the starts of
the E2E rows.

`--train K` then trains a soft prompt from each library's starts for seeds 0 .. K-1, every one of
them the same way (prompttune's loop, `init_from` the start): the 2,000 pairs and the order of
`llm_e2e.py`'s seed-0 run, 200 steps of 8, scored greedy and with beam search on its 50 dev meaning
representations. The training data stay fixed and only the start changes, so the spread of BLEU over
starts is what a draw of the start alone does, and the two libraries' starts are compared on more
draws than the E2E rows give. Runs are kept in benchmarks/runs/llm_prompt_starts (a killed run
resumes from its last checkpoint; finished ones are not redone) and the results are rewritten after
each. Results: benchmarks/results/llm_prompt_starts.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks.common import RESULTS, environment, finish_run, finished_run, prompttune_order, write_results
from benchmarks.llm_e2e import DECODINGS, MODEL, OURS, decode, e2e_scores, peft_start, write_subsets
from benchmarks.peft_loop import padded_pairs, pair_encoder

WORK = Path(__file__).resolve().parent / "runs" / "llm_prompt_starts"
LIBRARIES = ("prompttune", "peft")
# The E2E setting of llm_e2e.py's seed-0 rows, which every trained start shares.
TRAINING = {"train_size": 2000, "dev_size": 50, "steps": 200, "batch_size": 8, "data_seed": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--draws", type=int, default=16, help="seeds 0 .. N-1")
    parser.add_argument("--pairs", type=int, default=32, help="training pairs the starting loss is measured on")
    parser.add_argument("--max-source-length", type=int, default=64)
    parser.add_argument("--max-target-length", type=int, default=64)
    parser.add_argument(
        "--train",
        type=int,
        default=0,
        metavar="K",
        help="also train a soft prompt from each library's starts for seeds 0 .. K-1",
    )
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="run, but leave benchmarks/results as it is")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from prompttune.api import load_backbone
    from prompttune.core.weights import resolve_model
    from prompttune.runtime import quiet_libraries
    from prompttune.tasks import GenerationConfig
    from prompttune.tasks.data import load_generation_examples

    quiet_libraries()
    path, _ = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    train, _ = write_subsets(2000, 50, 0)
    encode = pair_encoder(tokenizer, args.max_source_length, args.max_target_length)
    features = [encode(e.text, t) for e in load_generation_examples(str(train), "mr", "ref") for t in e.targets]
    # The pairs of the first steps of the seed-0 run, in its order.
    order = [i for batch in prompttune_order(len(features), 8, 0, -(-args.pairs // 8)) for i in batch][: args.pairs]
    chosen = [features[i] for i in order]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    backbone = load_backbone(args.model)
    config = GenerationConfig(max_source_length=args.max_source_length, max_target_length=args.max_target_length)
    _, scorer = peft_start("peft_prompt_tuning", path, 0)
    scorer.eval()
    slot = scorer.prompt_encoder["default"].embedding.weight
    batches = [padded_pairs(chosen[at : at + 8], pad) for at in range(0, len(chosen), 8)]

    @torch.no_grad()
    def score(prompt: torch.Tensor) -> dict:
        slot.copy_(prompt)
        losses = [
            (scorer(input_ids=ids, attention_mask=mask, labels=labels).loss.item(), int((labels != -100).sum()))
            for ids, mask, labels in batches
        ]
        loss = sum(value * n for value, n in losses) / sum(n for _, n in losses)
        return {"loss": round(loss, 5), "row_norm": round(prompt.norm(dim=1).mean().item(), 5)}

    draws = []
    for seed in range(args.draws):
        ours = starting_prompt("prompttune", seed, backbone, config, path)
        peft = starting_prompt("peft", seed, backbone, config, path)
        draws.append({"seed": seed, "prompttune": score(ours), "peft": score(peft)})
        print(
            f"seed {seed}: loss prompttune {draws[-1]['prompttune']['loss']:.4f}, PEFT {draws[-1]['peft']['loss']:.4f}",
            flush=True,
        )
    summary = {}
    for library in LIBRARIES:
        for key in ("loss", "row_norm"):
            values = [d[library][key] for d in draws]
            summary[f"{library}_{key}"] = {
                "mean": round(statistics.mean(values), 5),
                "sd": round(statistics.stdev(values), 5) if len(values) > 1 else None,
            }
    setting = {
        "model": args.model,
        "draws": args.draws,
        "pairs": args.pairs,
        "num_virtual_tokens": 20,
        "max_source_length": args.max_source_length,
        "max_target_length": args.max_target_length,
    }
    training = TRAINING | {
        "model": args.model,
        "max_source_length": args.max_source_length,
        "max_target_length": args.max_target_length,
    }

    def publish() -> None:
        if args.no_write:
            return
        trained = trained_starts(training)
        payload = {"setting": setting, "environment": environment(), "draws": draws, "summary": summary}
        if trained:
            payload |= {"training": training, "trained": trained, "trained_summary": trained_summary(trained)}
        write_results("llm_prompt_starts", payload, markdown(payload))

    publish()
    for seed in range(args.train):
        for library in LIBRARIES:
            row = train_from_start(library, seed, args, training, backbone, config, path)
            print(
                f"{library} start {seed}: greedy BLEU {row['scores']['greedy']['bleu']:.2f}, "
                f"beam BLEU {row['scores']['beam5']['bleu']:.2f}",
                flush=True,
            )
            publish()


def starting_prompt(library: str, seed: int, backbone, config, path: str) -> torch.Tensor:
    """The 20 rows `library` starts a prompt from for `seed`: prompttune's `PromptModel.create` with
    the seed, PEFT's `get_peft_model` after `torch.manual_seed(seed)` (as llm_e2e.py makes them)."""
    from prompttune import PromptModel

    if library == "prompttune":
        return (
            PromptModel.create(backbone, "soft_prompt", config, OURS["soft_prompt"], seed=seed)
            .method.prompt.detach()
            .clone()
        )
    _, peft = peft_start("peft_prompt_tuning", path, seed)
    return peft.prompt_encoder["default"].embedding.weight.detach().clone()


def train_from_start(library: str, seed: int, args, training: dict, backbone, config, path: str) -> dict:
    """A soft prompt trained by prompttune's loop from `library`'s start for `seed`, on llm_e2e.py's
    seed-0 pairs in their order, and its scores (resumes; a finished run is read back)."""
    from prompttune import PromptModel, load_prompt, save_prompt
    from prompttune.api import interrupted_run, train_prompt
    from prompttune.tasks.data import group_references, load_generation_examples

    out = WORK / f"{library}_start{seed}"
    run_setting = training | {"start": library, "start_seed": seed}
    finished = finished_run(out, run_setting)
    if finished is not None:
        return finished
    start = out / "start"
    if not (start / "prompt.json").is_file():
        model = PromptModel.create(backbone, "soft_prompt", config, OURS["soft_prompt"])
        with torch.no_grad():
            model.method.prompt.copy_(starting_prompt(library, seed, backbone, config, path))
        save_prompt(model, start)
    load_prompt(str(start))  # checked before a run starts from it
    train, dev_path = write_subsets(training["train_size"], training["dev_size"], training["data_seed"])
    trained = train_prompt(
        model=args.model,
        method="soft_prompt",
        task="generation",
        train=str(train),
        output=str(out / "prompt"),
        source_column="mr",
        target_column="ref",
        method_options=OURS["soft_prompt"],
        init_from=str(start),
        max_steps=training["steps"],
        batch_size=training["batch_size"],
        seed=training["data_seed"],
        checkpoint_every=args.checkpoint_every,
        progress=False,
        resume=interrupted_run(out / "prompt") is not None,
        max_length=training["max_source_length"],
        max_target_length=training["max_target_length"],
    )
    dev = group_references(load_generation_examples(str(dev_path), "mr", "ref"))
    references = [list(e.targets) for e in dev]
    decoding = SimpleNamespace(model=args.model, max_target_length=training["max_target_length"], eval_batch_size=25)
    row = {"start": library, "seed": seed, "train_seconds": trained["training"]["seconds"], "scores": {}}
    for name, beams in DECODINGS.items():
        texts = decode("soft_prompt", decoding, dev, out / "prompt", beams)
        row["scores"][name] = e2e_scores(texts, references)
    return finish_run(out, run_setting, row)


def trained_starts(training: dict) -> list[dict]:
    """Every trained start finished with `training`, from its run folder or, where that is gone,
    as published in results/llm_prompt_starts.json for the same training: by seed, prompttune first."""
    found = {}
    published = RESULTS / "llm_prompt_starts.json"
    if published.is_file():
        data = json.loads(published.read_text())
        if data.get("training") == training:
            found = {(r["start"], r["seed"]): r for r in data.get("trained", [])}
    for done in sorted(WORK.glob("*_start*/result.json")):
        saved = json.loads(done.read_text())
        setting = saved["setting"]
        if {k: v for k, v in setting.items() if k not in ("start", "start_seed")} == training:
            found[(setting["start"], setting["start_seed"])] = saved["row"]
    return [found[key] for key in sorted(found, key=lambda k: (k[1], LIBRARIES.index(k[0])))]


def trained_summary(trained: list[dict]) -> dict:
    """BLEU by library over its trained starts (mean, sd, count), and prompttune's mean minus PEFT's
    with its standard error. The starts are independent draws on the same data, so a seed of one
    library has nothing in common with the same seed of the other: the two are compared as groups."""
    summary = {}
    for name in ("greedy", "beam5"):
        entry = {}
        for lib in LIBRARIES:
            scores = [r["scores"][name]["bleu"] for r in trained if r["start"] == lib]
            entry[lib] = {
                "mean": round(statistics.mean(scores), 4) if scores else None,
                "sd": round(statistics.stdev(scores), 4) if len(scores) > 1 else None,
                "count": len(scores),
            }
        ours, theirs = entry["prompttune"], entry["peft"]
        if ours["sd"] is not None and theirs["sd"] is not None:
            error = (ours["sd"] ** 2 / ours["count"] + theirs["sd"] ** 2 / theirs["count"]) ** 0.5
            entry["difference"] = {
                "mean_gap": round(ours["mean"] - theirs["mean"], 4),
                "standard_error": round(error, 4),
            }
        summary[name] = entry
    return summary


def markdown(payload: dict) -> str:
    setting, draws, s = payload["setting"], payload["draws"], payload["summary"]
    lines = [
        "# Where a soft prompt starts: prompttune's draws against PEFT's",
        "",
        (
            f"Command: `python -m benchmarks.llm_prompt_starts --draws {setting['draws']} --pairs {setting['pairs']}`. "
            f"{setting['num_virtual_tokens']} embedding rows drawn at random by each library for seeds 0 to "
            f"{setting['draws'] - 1}; loss of the same forward pass on the first {setting['pairs']} E2E training pairs "
            "of the seed-0 run, and the rows' mean norm."
        ),
        "",
        "| seed | loss prompttune | loss PEFT | row norm prompttune | row norm PEFT |",
        "|---|---|---|---|---|",
    ]
    for d in draws:
        lines.append(
            f"| {d['seed']} | {d['prompttune']['loss']:.4f} | {d['peft']['loss']:.4f} | "
            f"{d['prompttune']['row_norm']:.3f} | {d['peft']['row_norm']:.3f} |"
        )
    lines += [
        "",
        (
            f"Mean (sd): loss prompttune {s['prompttune_loss']['mean']:.4f} ({s['prompttune_loss']['sd']:.4f}), "
            f"PEFT {s['peft_loss']['mean']:.4f} ({s['peft_loss']['sd']:.4f}); row norm prompttune "
            f"{s['prompttune_row_norm']['mean']:.3f} ({s['prompttune_row_norm']['sd']:.3f}), PEFT "
            f"{s['peft_row_norm']['mean']:.3f} ({s['peft_row_norm']['sd']:.3f})."
        ),
    ]
    if payload.get("trained"):
        t, summary = payload["training"], payload["trained_summary"]
        losses = {d["seed"]: d for d in draws}
        lines += [
            "",
            "## Trained from each start",
            "",
            (
                f"Command: `python -m benchmarks.llm_prompt_starts --train {max(r['seed'] for r in payload['trained']) + 1}`. "
                "A soft prompt trained by prompttune's loop from each start, on the "
                f"{t['train_size']:,} E2E pairs of `llm_e2e.py`'s seed-{t['data_seed']} run in its order "
                f"({t['steps']} steps of {t['batch_size']}), scored on its {t['dev_size']} dev meaning representations "
                "against all their references; the starting loss is the one above."
            ),
            "",
            "| seed | start | starting loss | BLEU greedy | BLEU beam | chrF greedy | training seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in payload["trained"]:
            loss = losses.get(r["seed"], {}).get(r["start"], {}).get("loss")
            lines.append(
                f"| {r['seed']} | {r['start']} | {'-' if loss is None else f'{loss:.4f}'} | "
                f"{r['scores']['greedy']['bleu']:.2f} | {r['scores']['beam5']['bleu']:.2f} | "
                f"{r['scores']['greedy']['chrf']:.2f} | {r['train_seconds']:.0f} |"
            )
        lines += [
            "",
            "BLEU by start, mean ± sd over the starts trained (how many):",
            "",
            "| start | greedy | beam |",
            "|---|---|---|",
        ]
        lines += [
            f"| {lib} | {_spread(summary['greedy'][lib])} | {_spread(summary['beam5'][lib])} |" for lib in LIBRARIES
        ]
        for name, label in (("greedy", "Greedy"), ("beam5", "Beam search")):
            d = summary[name].get("difference")
            if d:
                lines += [
                    "",
                    (
                        f"{label}, prompttune's starts against PEFT's: {d['mean_gap']:+.2f} ± "
                        f"{d['standard_error']:.2f} BLEU (difference of the means ± its standard error)."
                    ),
                ]
    return "\n".join(lines) + "\n"


def _spread(entry: dict) -> str:
    if not entry["count"]:
        return "-"
    sd = f" ± {entry['sd']:.2f}" if entry["sd"] is not None else ""
    return f"{entry['mean']:.2f}{sd} ({entry['count']})"


if __name__ == "__main__":
    main()
