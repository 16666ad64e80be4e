"""Low-data E2E on SmolLM2-135M-Instruct (Li & Liang's central claim): prefix tuning (random and
real-word initialisation), soft prompts and full fine-tuning trained on 50, 100, 200 and 500 E2E
pairs, each with 3 seeds (the seed draws the training pairs and seeds training), scored greedily
on the same dev meaning representations whatever the seed. Means and spreads per size, and a plot
of BLEU against training-set size with the seeds' spread (the paper's low-data figure).

Each cell is a `benchmarks/llm_e2e.py` run of its own (benchmarks/runs/llm_e2e_lowdata/nSIZE_sSEED/
METHOD): a killed sweep continues where it stopped, finished cells are not redone. The results file
keeps every cell's scores, so a report written after running some cells keeps the others as published.

    python -m benchmarks.llm_e2e_lowdata                       # every cell (hours on 2 CPU cores)
    python -m benchmarks.llm_e2e_lowdata --sizes 50 --seeds 0  # some cells
    python -m benchmarks.llm_e2e_lowdata --report              # table and plot from finished cells
    .venv-oldest/bin/python -m benchmarks.llm_e2e_lowdata --methods peft_prompt_tuning,peft_prefix_tuning
                                                               # PEFT's counterparts, the same cells

Every size trains for the same number of steps of the same batch size (more epochs over a smaller
set), the setting of Li & Liang's low-data experiments, which fix the budget, not the epochs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from benchmarks import llm_e2e
from benchmarks.common import RESULTS, environment, write_results

METHODS = ("prefix", "prefix_text", "soft_prompt", "full_finetune")
# PEFT's counterparts of the soft prompt and prefix tuning at the same budget, run on request with the
# oldest supported transformers (`.venv-oldest/bin/python -m benchmarks.llm_e2e_lowdata --methods
# peft_prompt_tuning,peft_prefix_tuning`): seeds tell whether one method's lead over another is noise.
PEFT_METHODS = ("peft_prompt_tuning", "peft_prefix_tuning")
# Whether decoding in padded batches changes a PEFT method's outputs (llm_e2e.py scores both ways on
# each E2E draw: prompt tuning's move on 31-39 of 50 MRs, prefix tuning's on none).
PADDING_CHANGES = {"peft_prompt_tuning": True, "peft_prefix_tuning": False}
PAIRS = (
    ("prefix", "full_finetune", "prefix tuning", "fine-tuning"),
    ("soft_prompt", "peft_prompt_tuning", "the soft prompt", "PEFT's prompt tuning"),
    ("prefix_text", "prefix", "prefix tuning initialised from words", "its random initialisation"),
    ("prefix", "peft_prefix_tuning", "prefix tuning", "PEFT's prefix tuning"),
)
# PEFT's counterparts share their method's colour, dashed.
COLOURS = {
    "prefix": "C0",
    "peft_prefix_tuning": "C0",
    "soft_prompt": "C2",
    "peft_prompt_tuning": "C2",
    "prefix_text": "C1",
    "full_finetune": "C3",
}
SIZES = (50, 100, 200, 500)
SEEDS = (0, 1, 2)
METRICS = ("bleu", "rougeL", "meteor", "cider")
NAMES = {"bleu": "BLEU", "rougeL": "ROUGE-L", "meteor": "METEOR", "cider": "CIDEr"}
BASE = Path(__file__).resolve().parent / "runs" / "llm_e2e_lowdata"


def cell_args(args, size: int, seed: int) -> SimpleNamespace:
    return SimpleNamespace(
        model=args.model,
        train_size=size,
        dev_size=args.dev_size,
        steps=args.steps,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        max_source_length=args.max_source_length,
        max_target_length=args.max_target_length,
        checkpoint_every=args.checkpoint_every,
        seed=seed,
        decodings=("greedy",),
    )


def setting_of(cell: SimpleNamespace) -> dict:
    return {
        k: getattr(cell, k)
        for k in (
            "model",
            "train_size",
            "dev_size",
            "steps",
            "batch_size",
            "max_source_length",
            "max_target_length",
            "seed",
        )
    } | llm_e2e.device_setting()


def run_cell(args, size: int, seed: int, method: str) -> dict:
    cell = cell_args(args, size, seed)
    llm_e2e.WORK = BASE / f"n{size}_s{seed}"
    train, dev = llm_e2e.write_subsets(size, args.dev_size, seed)
    return llm_e2e.run(method, cell, train, dev, setting_of(cell))


# Arguments that choose which cells an invocation runs, or how often it checkpoints: not part of the
# setting the cells' results depend on.
NOT_SETTING = ("sizes", "seeds", "methods", "report", "checkpoint_every")


def results_setting(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in NOT_SETTING}


def compact(row: dict) -> dict:
    """What the report reads of a cell's row (kept in the results file as the cell)."""
    out = {"scores": {"greedy": {m: row["scores"]["greedy"][m] for m in METRICS}}, "transformers": row["transformers"]}
    if "decoded" in row:
        out["decoded"] = row["decoded"]
    batched = (row.get("scores_padded_batches") or {}).get("greedy")
    if batched:
        out["padded_batches"] = {"bleu": batched["bleu"], "outputs_changed": batched["outputs_changed"]}
    return out


def published(args) -> dict:
    """{method: {size: {seed: cell}}} of results/llm_e2e_lowdata.json where its setting is this one.
    Run folders are scratch (not in git): a report written after running some cells keeps the cells
    published before."""
    path = RESULTS / "llm_e2e_lowdata.json"
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    if results_setting(saved["setting"]) != results_setting(vars(args)):
        return {}
    return {
        method: {int(size): {int(seed): cell for seed, cell in seeds.items()} for size, seeds in sizes.items()}
        for method, sizes in saved.get("cells", {}).items()
    }


def finished(args) -> dict:
    """{method: {size: {seed: cell}}} of the cells done with this setting: from its run folder where
    there is one, otherwise as published."""
    before = published(args)
    out = {}
    for method in METHODS + PEFT_METHODS:
        for size in SIZES:
            for seed in SEEDS:
                done = BASE / f"n{size}_s{seed}" / method / "result.json"
                saved = json.loads(done.read_text()) if done.is_file() else None
                if saved is not None and saved["setting"] == setting_of(cell_args(args, size, seed)):
                    cell = compact(saved["row"])
                else:
                    cell = before.get(method, {}).get(size, {}).get(seed)
                if cell is not None:
                    out.setdefault(method, {}).setdefault(size, {})[seed] = cell
    return out


def spread(values: list[float]) -> float:
    """Sample standard deviation; 0 for a single seed."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summary(cells: dict) -> dict:
    """Mean and sample standard deviation over the finished seeds, per method, size and metric."""
    out = {}
    for method, sizes in cells.items():
        for size, seeds in sizes.items():
            values = {m: [row["scores"]["greedy"][m] for row in seeds.values()] for m in METRICS}
            out.setdefault(method, {})[size] = {
                m: {
                    "mean": statistics.fmean(v),
                    "sd": spread(v),
                    "seeds": len(v),
                    "by_seed": {str(seed): row["scores"]["greedy"][m] for seed, row in seeds.items()},
                }
                for m, v in values.items()
            }
    return out


def versions(cells: dict) -> str:
    """Which transformers each method's cells ran on (PEFT's run on the oldest supported one)."""
    by_version = {}
    for method, sizes in cells.items():
        for version in sorted({row["transformers"] for seeds in sizes.values() for row in seeds.values()}):
            by_version.setdefault(version, []).append(method)
    return "; ".join(
        f"{', '.join(methods)} on transformers {version}" for version, methods in sorted(by_version.items())
    )


def peft_decoding(cells: dict, args) -> str | None:
    """How each PEFT method's cells were decoded, as sentences for the report: one MR at a time
    (`llm_e2e.PEFT_DECODING`), or, cells scored before that, in padded batches of --eval-batch-size,
    with what the padding does to that method's outputs (`PADDING_CHANGES`)."""
    padded = f"in padded batches of {args.eval_batch_size}"
    sentences = []
    for method in PEFT_METHODS:
        found = Counter(
            row.get("decoded", padded) for seeds in cells.get(method, {}).values() for row in seeds.values()
        )
        if not found:
            continue
        total = sum(found.values())
        ways = [how + (f" ({n} of {total} cells)" if len(found) > 1 else "") for how, n in sorted(found.items())]
        sentence = f"{method}'s cells were decoded {' and '.join(ways)}"
        if padded in found:
            sentence += (
                ", which changes its outputs (they are not yet decoded again one at a time)"
                if PADDING_CHANGES[method]
                else ", which leaves its outputs as they are"
            )
        sentences.append(sentence + ".")
    return " ".join(sentences) or None


def padding_effect(cells: dict, args) -> list[dict]:
    """For each PEFT method whose cells were decoded both ways: BLEU one MR at a time (how they are
    scored) against in padded batches of --eval-batch-size, over the cells, and how many of the
    dev outputs the padding changed."""
    out = []
    for method in PEFT_METHODS:
        both = [row for seeds in cells.get(method, {}).values() for row in seeds.values() if "padded_batches" in row]
        if not both:
            continue
        alone = [row["scores"]["greedy"]["bleu"] for row in both]
        padded = [row["padded_batches"]["bleu"] for row in both]
        moves = [b - a for a, b in zip(alone, padded)]
        changed = [row["padded_batches"]["outputs_changed"] for row in both]
        out.append(
            {
                "method": method,
                "cells": len(both),
                "batch_size": args.eval_batch_size,
                "one_at_a_time": statistics.fmean(alone),
                "padded": statistics.fmean(padded),
                "lowest_move": min(moves),
                "highest_move": max(moves),
                "fewest_changed": min(changed),
                "most_changed": max(changed),
                "dev_size": args.dev_size,
            }
        )
        out[-1]["line"] = padding_line(out[-1])
    return out


def padding_line(e: dict) -> str:
    return (
        f"{e['method']}, decoded in padded batches of {e['batch_size']} instead of one MR at a time: BLEU "
        f"{e['padded']:.2f} against {e['one_at_a_time']:.2f} on average over {e['cells']} cells, moving "
        f"{e['lowest_move']:+.2f} to {e['highest_move']:+.2f} by cell, with {e['fewest_changed']} to "
        f"{e['most_changed']} of {e['dev_size']} outputs changed."
    )


def comparisons(stats: dict) -> list[dict]:
    """BLEU of each pair of methods per size, over the seeds both finished. The seed draws the training
    pairs, so two methods' runs with one seed saw the same data: besides the means, count the seeds on
    which the first is ahead."""
    out = []
    for a_name, b_name, a_words, b_words in PAIRS:
        for size in SIZES:
            if not all(size in stats.get(m, {}) for m in (a_name, b_name)):
                continue
            a, b = stats[a_name][size]["bleu"]["by_seed"], stats[b_name][size]["bleu"]["by_seed"]
            shared = sorted(set(a) & set(b))
            if not shared:
                continue
            a_scores, b_scores = [a[s] for s in shared], [b[s] for s in shared]
            out.append(
                {
                    "a": a_name,
                    "b": b_name,
                    "a_words": a_words,
                    "b_words": b_words,
                    "size": size,
                    "seeds": len(shared),
                    "a_mean": statistics.fmean(a_scores),
                    "a_sd": spread(a_scores),
                    "b_mean": statistics.fmean(b_scores),
                    "b_sd": spread(b_scores),
                    "difference": statistics.fmean(a_scores) - statistics.fmean(b_scores),
                    "a_ahead_on": sum(x > y for x, y in zip(a_scores, b_scores)),
                }
            )
            out[-1]["heading"] = comparison_heading(out[-1])
            out[-1]["line"] = comparison_line(out[-1])
            out[-1]["by_cell"] = [x - y for x, y in zip(a_scores, b_scores)]
        per_size = [c for c in out if (c["a"], c["b"]) == (a_name, b_name)]
        if len(per_size) > 1:  # every cell of every size, each a paired draw of its own
            gaps = [gap for c in per_size for gap in c["by_cell"]]
            out.append(
                {
                    "a": a_name,
                    "b": b_name,
                    "a_words": a_words,
                    "b_words": b_words,
                    "size": "all",
                    "cells": len(gaps),
                    "difference": statistics.fmean(gaps),
                    "standard_error": spread(gaps) / len(gaps) ** 0.5,
                    "a_ahead_on": sum(g > 0 for g in gaps),
                    "heading": per_size[0]["heading"],
                }
            )
            out[-1]["line"] = pooled_line(out[-1])
    return out


def comparison_heading(c: dict) -> str:
    return (
        f"{c['a_words'][0].upper() + c['a_words'][1:]} against {c['b_words']} (BLEU, mean ± sd over the seeds "
        "both finished; a seed's runs share their training pairs, so seeds are compared pairwise):"
    )


def comparison_line(c: dict) -> str:
    return (
        f"{c['size']} pairs, {c['seeds']} seed{'s' if c['seeds'] > 1 else ''}: {c['a']} {c['a_mean']:.2f} ± "
        f"{c['a_sd']:.2f}, {c['b']} {c['b_mean']:.2f} ± {c['b_sd']:.2f}: {c['a_words']} "
        f"{'beats' if c['difference'] > 0 else 'does not beat'} {c['b_words']} ({c['difference']:+.2f} BLEU; "
        f"ahead on {c['a_ahead_on']} of {c['seeds']})"
    )


def pooled_line(c: dict) -> str:
    return (
        f"every size, {c['cells']} cells: {c['a_words']} {c['difference']:+.2f} BLEU on average ± "
        f"{c['standard_error']:.2f} (standard error over the cells); ahead on {c['a_ahead_on']} of {c['cells']}"
    )


def markdown(
    args, stats: dict, pairs: list[dict], ran_on: str, decoded: str | None = None, padding: list[dict] = ()
) -> str:
    lines = [
        "# Low-data E2E on a real pretrained LLM: SmolLM2-135M-Instruct",
        "",
        f"Each cell: a random subset of that many E2E training pairs (drawn with the seed), {args.steps} steps of "
        f"{args.batch_size} pairs whatever the size, each method's default learning rate; greedy decoding of "
        f"{args.dev_size} dev meaning representations (the same for every cell) against all their references. "
        'prefix_text is prefix tuning initialised from the activations of "table-to-text:". Mean ± standard '
        f"deviation over the seeds finished (the count is given). 2 CPU cores; {ran_on}."
        + (f" {decoded}" if decoded else ""),
        "",
        (
            "Command: `python -m benchmarks.llm_e2e_lowdata`; PEFT's rows `python -m benchmarks.llm_e2e_lowdata --methods "
            "peft_prompt_tuning,peft_prefix_tuning` under the oldest supported transformers; plot "
            "`results/llm_e2e_lowdata.png`."
        ),
        "",
        "| method | training pairs | seeds | " + " | ".join(NAMES[m] for m in METRICS) + " |",
        "|---" * (len(METRICS) + 3) + "|",
    ]
    for method, sizes in stats.items():
        for size in sorted(sizes):
            cell = sizes[size]
            lines.append(
                f"| {method} | {size} | {cell['bleu']['seeds']} | "
                + " | ".join(f"{cell[m]['mean']:.2f} ± {cell[m]['sd']:.2f}" for m in METRICS)
                + " |"
            )
    previous = None
    for c in pairs:
        if (c["a"], c["b"]) != previous:
            previous = (c["a"], c["b"])
            lines += ["", c["heading"], ""]
        lines.append("- " + c["line"])
    if padding:
        lines += ["", *(e["line"] for e in padding)]
    return "\n".join(lines) + "\n"


def plot(stats: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prompttune.storage import save_figure

    figure, axis = plt.subplots(figsize=(8, 4))
    for method, sizes in stats.items():
        xs = sorted(sizes)
        means = [sizes[x]["bleu"]["mean"] for x in xs]
        sds = [sizes[x]["bleu"]["sd"] for x in xs]
        peft = method in PEFT_METHODS
        axis.errorbar(
            xs,
            means,
            yerr=sds,
            capsize=3,
            label=method,
            color=COLOURS.get(method),
            marker="s" if peft else "o",
            linestyle="--" if peft else "-",
        )
    axis.set_xscale("log")
    axis.minorticks_off()
    axis.set_xticks(list(SIZES), [str(s) for s in SIZES])
    axis.set_xlabel("E2E training pairs")
    axis.set_ylabel("BLEU (dev, greedy)")
    axis.set_title("Low-data E2E, SmolLM2-135M-Instruct (mean ± sd over seeds)")
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=llm_e2e.MODEL)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--dev-size", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batch-size", type=int, default=25)
    parser.add_argument("--max-source-length", type=int, default=64)
    parser.add_argument("--max-target-length", type=int, default=64)
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--report", action="store_true", help="only write the table and plot from finished cells")
    args = parser.parse_args()
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS + PEFT_METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS + PEFT_METHODS)}")
    if not args.report:
        # Seed by seed, so that every size and method has a first seed before any has a third.
        for seed in (int(s) for s in args.seeds.split(",")):
            for size in (int(s) for s in args.sizes.split(",")):
                for method in methods:
                    row = run_cell(args, size, seed, method)
                    print(f"n={size} seed={seed} {method}: BLEU {row['scores']['greedy']['bleu']:.2f}", flush=True)
    cells = finished(args)
    stats = summary(cells)
    if stats:
        pairs, ran_on, decoded = comparisons(stats), versions(cells), peft_decoding(cells, args)
        padding = padding_effect(cells, args)
        plot(stats, RESULTS / "llm_e2e_lowdata.png")
        write_results(
            "llm_e2e_lowdata",
            {
                "setting": {k: v for k, v in vars(args).items() if k not in ("report",)},
                "environment": environment(),
                "summary": stats,
                "comparisons": pairs,
                "ran_on": ran_on,
                "peft_decoding": decoded,
                "padding_effect": padding,
                "cells": cells,
            },
            markdown(args, stats, pairs, ran_on, decoded, padding),
        )


if __name__ == "__main__":
    main()
