"""Shared by the benchmark scripts: the SST-2 subsets they train and evaluate on.

The data is read from ../shared/data (see SOURCES.md there) and never copied into the project; the
subsets are written to a scratch folder.
"""

from __future__ import annotations

import csv
import json
import platform
import random
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
#: The manual zero-shot prompt the SST-2 benchmarks compare against (label words terrible / great).
ZERO_SHOT_TEMPLATE = "{text} It was {mask}."


def sst2_subset(work: Path, train_size: int, seed: int = 0) -> tuple[Path, Path]:
    """A seeded random subset of SST-2 train (GLUE) and the full SST-2 dev set (872 sentences)."""
    source = SHARED / "sst2" / "train.tsv"
    if not source.is_file():
        raise SystemExit(f"{source} not found: the benchmarks read SST-2 from ../shared/data/sst2")
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    random.Random(seed).shuffle(rows)
    work.mkdir(parents=True, exist_ok=True)
    train = work / f"sst2_train_{train_size}_seed{seed}.tsv"
    with open(train, "w", encoding="utf-8") as handle:
        handle.write("sentence\tlabel\n")
        for row in rows[:train_size]:
            handle.write(f"{row['sentence'].strip()}\t{row['label']}\n")
    return train, SHARED / "sst2" / "dev.tsv"


def add_budget_arguments(parser) -> None:
    """The setting every SST-2 benchmark shares: model, training subset, steps and batch size."""
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)


def environment() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "machine": platform.machine(), "python": platform.python_version()}


def write_results(name: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)


# ---- baselines trained the way prompttune trains ---------------------------------------------------

def prompttune_order(count: int, batch_size: int, seed: int, steps: int):
    """`steps` batches of row indices, in the order prompttune's training loop draws them (a
    permutation per epoch seeded by seed and epoch): what the PEFT baselines train on, so both see
    the same batches."""
    step, epoch = 0, 0
    while True:
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
        for first in range(0, len(order), batch_size):
            if step >= steps:
                return
            yield order[first:first + batch_size]
            step += 1
        epoch += 1


def optimiser_step(loss, params, optimizer, scheduler, max_grad_norm: float | None) -> None:
    """One step as prompttune's loop takes it: backward, clip, step, schedule, zero."""
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
