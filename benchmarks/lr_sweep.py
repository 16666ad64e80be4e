"""How prompttune's default learning rates and initialisations were chosen: a measured sweep.

Frozen all-MiniLM-L6-v2, 2,000 SST-2 training sentences, 300 steps of batch 32, dev accuracy on the
full SST-2 dev set. The defaults in each method's file (`default_lr`, `default_head_lr`, init) are
the best rows here. SST-2's labels are 0 and 1 and no verbalizer is given here, so `class_labels`
embeds the tokens "0" and "1" (then samples the vocabulary); `benchmarks/sst2_methods.py` names the
labels negative/positive.

    python -m benchmarks.lr_sweep                  # about two hours on 2 CPU cores
    python -m benchmarks.lr_sweep --only prefix    # one method's rows
    python -m benchmarks.lr_sweep --missing        # the rows not measured yet
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, add_budget_arguments, environment, sst2_subset, write_results
from prompttune.api import train_prompt
from prompttune.runtime import quiet_libraries

RUNS = [
    # (method, optimizer, lr, head_lr, init)
    ("linear_probe", "adamw", None, 1e-3, None),
    ("linear_probe", "adamw", None, 1e-2, None),
    ("linear_probe", "adamw", None, 1e-1, None),
    ("soft_prompt", "adamw", 1e-2, 1e-2, "class_labels"),
    ("soft_prompt", "adamw", 3e-2, 1e-2, "class_labels"),
    ("soft_prompt", "adamw", 1e-1, 1e-2, "class_labels"),
    ("soft_prompt", "adafactor", 3e-1, 1e-2, "class_labels"),
    ("soft_prompt", "adamw", 3e-2, 1e-2, "sample_vocab"),
    ("soft_prompt", "adamw", 3e-2, 1e-2, "random"),
    ("deep_prompt", "adamw", 3e-3, 1e-2, "random"),
    ("deep_prompt", "adamw", 1e-2, 1e-2, "random"),
    ("deep_prompt", "adamw", 3e-2, 1e-2, "random"),
    ("deep_prompt", "adamw", 1e-2, 1e-2, "sample_vocab"),
    ("deep_prompt", "adamw", 3e-2, 1e-2, "sample_vocab"),
    ("prefix", "adamw", 1e-4, 1e-2, "random"),
    ("prefix", "adamw", 3e-4, 1e-2, "random"),
    ("prefix", "adamw", 1e-3, 1e-2, "random"),
    ("prefix", "adamw", 5e-3, 1e-2, "random"),
    ("prefix", "adamw", 2e-2, 1e-2, "random"),
    ("prefix", "adamw", 1e-3, 1e-2, "sample_vocab"),
    ("p_tuning", "adamw", 1e-3, 1e-2, "sample_vocab"),
    ("p_tuning", "adamw", 1e-2, 1e-2, "sample_vocab"),
    ("full_finetune", "adamw", 2e-5, 1e-3, None),
    ("full_finetune", "adamw", 5e-5, 1e-3, None),
    ("full_finetune", "adamw", 1e-4, 1e-3, None),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_arguments(parser)
    parser.add_argument("--only", help="run only this method; its rows replace that method's rows in lr_sweep.json")
    parser.add_argument("--missing", action="store_true", help="run only the rows lr_sweep.json does not have yet")
    parser.add_argument("--render", action="store_true", help="rewrite lr_sweep.md from lr_sweep.json, running nothing")
    args = parser.parse_args()
    if args.render:
        payload = json.loads((RESULTS / "lr_sweep.json").read_text())
        (RESULTS / "lr_sweep.md").write_text(render(payload))
        return
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="prompttune-sweep-"))
    train, dev = sst2_subset(work, args.train_size)
    rows = []
    saved = json.loads((RESULTS / "lr_sweep.json").read_text())["runs"] if (RESULTS / "lr_sweep.json").is_file() else []
    done = {(r["method"], r["optimizer"], r["lr"], r["head_lr"], r["init"]) for r in saved}
    for method, optimizer, lr, head_lr, init in RUNS:
        if args.only and method != args.only:
            continue
        if args.missing and (method, optimizer, lr, head_lr, init) in done:
            continue
        options = {"init": init} if init else {}
        start = time.perf_counter()
        metrics = train_prompt(
            model=args.model,
            method=method,
            train=str(train),
            eval=str(dev),
            text_column="sentence",
            output=str(work / f"{method}-{optimizer}-{lr}-{head_lr}-{init}"),
            method_options=options,
            max_steps=args.steps,
            batch_size=args.batch_size,
            lr=lr,
            head_lr=head_lr,
            optimizer=optimizer,
            eval_every=100,
            progress=False,
        )
        row = {
            "method": method,
            "optimizer": optimizer,
            "lr": lr,
            "head_lr": head_lr,
            "init": init,
            "dev_accuracy": metrics["dev_metrics"]["accuracy"],
            "best_step": metrics["training"]["best_step"],
            "seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.only or args.missing:
        # Keep the measured rows this run did not redo, in RUNS order.
        redone = {(r["method"], r["optimizer"], r["lr"], r["head_lr"], r["init"]) for r in rows}
        kept = [
            r
            for r in saved
            if (r["method"], r["optimizer"], r["lr"], r["head_lr"], r["init"]) not in redone
            and not (args.only and r["method"] == args.only)
        ]
        order = {run: i for i, run in enumerate(RUNS)}
        rows = sorted(
            kept + rows,
            key=lambda r: order.get((r["method"], r["optimizer"], r["lr"], r["head_lr"], r["init"]), len(order)),
        )
    payload = {"args": {**vars(args), "only": None, "missing": False}, "environment": environment(), "runs": rows}
    write_results("lr_sweep", payload, render(payload))


def render(payload: dict) -> str:
    args, rows = payload["args"], payload["runs"]
    lines = [
        "# Learning-rate and initialisation sweep",
        "",
        (
            f"Frozen `{args['model']}`, {args['train_size']} SST-2 training sentences (seed 0), {args['steps']} steps of "
            f"batch {args['batch_size']}, accuracy on the 872-sentence SST-2 dev set (best of the evaluations every 100 "
            "steps). Seconds are wall time with other work sharing the machine: use them to see costs roughly, and "
            "`sst2_methods.md` for timings."
        ),
        "",
        "Command: `python -m benchmarks.lr_sweep` (`--render` rewrites this file from lr_sweep.json)",
        "",
        "| method | optimizer | lr | head lr | init | dev accuracy | best step | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['optimizer']} | {r['lr'] or '-'} | {r['head_lr']} | {r['init'] or '-'} | "
            f"{r['dev_accuracy']:.4f} | {r['best_step']} | {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
