"""Shared by the benchmark scripts: the SST-2 subsets they train and evaluate on.

The data is read from ../shared/data (see SOURCES.md there) and never copied into the project; the
subsets are written to a scratch folder.
"""

from __future__ import annotations

import contextlib
import csv
import json
import platform
import random
from pathlib import Path

import torch

from prompttune.training.loop import epoch_order

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
        handle.writelines(f"{row['sentence'].strip()}\t{row['label']}\n" for row in rows[:train_size])
    return train, SHARED / "sst2" / "dev.tsv"


def add_budget_arguments(parser) -> None:
    """The setting every SST-2 benchmark shares: model, training subset, steps and batch size."""
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def write_results(name: str, payload: dict, markdown: str) -> None:
    from prompttune.storage import write_atomic

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_atomic(RESULTS / f"{name}.json", json.dumps(payload, indent=2) + "\n")
    write_atomic(RESULTS / f"{name}.md", markdown)


def finished_rows(name: str, work: Path, methods, setting: dict) -> dict:
    """method -> result row of every method finished with `setting`, in the order of `methods`: its
    run folder's result where it has one, otherwise the row already published in
    results/NAME.json for the same setting. Run folders are scratch (not in git), so a report
    written after running one more method keeps the rows of the methods run before."""
    published = {}
    path = RESULTS / f"{name}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("setting") == setting:
            published = saved.get("rows", {})
    rows = {}
    for method in methods:
        done = work / method / "result.json"
        saved = json.loads(done.read_text()) if done.is_file() else None
        if saved is not None and saved["setting"] == setting:
            rows[method] = saved["row"]
        elif method in published:
            rows[method] = published[method]
    return rows


# ---- baselines trained the way prompttune trains ---------------------------------------------------


def prompttune_order(count: int, batch_size: int, seed: int, steps: int):
    """`steps` batches of row indices, in the order prompttune's training loop draws them (a
    permutation per epoch seeded by seed and epoch): what the PEFT baselines train on, so both see
    the same batches."""
    step, epoch = 0, 0
    while True:
        order = epoch_order(count, seed, epoch)
        for first in range(0, len(order), batch_size):
            if step >= steps:
                return
            yield order[first : first + batch_size]
            step += 1
        epoch += 1


def run_device() -> str:
    """Where a benchmark's rows train and decode: the GPU when there is one, as prompttune's loop
    chooses; PEFT's hand-written loops follow it."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_setting() -> dict:
    """What a run's setting adds for the device: nothing on a CPU (the published runs'), the device
    elsewhere, so that a report never mixes rows trained on a CPU in float32 with rows trained on a
    GPU under bf16 autocast."""
    device = run_device()
    return {} if device == "cpu" else {"device": device}


def training_precision(device: str):
    """The autocast PEFT's loops train under: what prompttune's loop takes on `device` (its
    `mixed_precision="auto"`: bf16 on a GPU that has it, float32 elsewhere)."""
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimiser_step(loss, params, optimizer, scheduler, max_grad_norm: float | None) -> None:
    """One step as prompttune's loop takes it: backward, clip, step, schedule, zero."""
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


# ---- runs that resume, and memory of one step ------------------------------------------------------


def finished_run(out: Path, setting: dict) -> dict | None:
    """The result row of the run kept in `out` if it finished with `setting`; otherwise None, with
    `out` made ready for a run of that setting (refused if it holds a run of another)."""
    from prompttune.storage import write_json_atomic

    done = out / "result.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved["setting"] == setting:
            return saved["row"]
    if (out / "setting.json").is_file() and json.loads((out / "setting.json").read_text()) != setting:
        raise SystemExit(f"{out} holds a run with another setting; move it away to run this one")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "setting.json", setting)
    return None


def finish_run(out: Path, setting: dict, row: dict) -> dict:
    from prompttune.storage import write_json_atomic

    write_json_atomic(out / "result.json", {"setting": setting, "row": row})
    return row


def peak_memory_in_child(argv: list[str]) -> float:
    """Run `argv` (a script that prints one step's memory as its last line of JSON) in a process of
    its own, with glibc mapping and unmapping blocks of 128 KiB and more one by one, so that what a
    step frees leaves the resident memory at once and samples follow what is alive."""
    import os
    import subprocess

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_peak_memory(step) -> float:
    """MB the second call of `step(i)` adds to the resident memory at its peak (the first call
    allocates the optimiser's state), sampled every 2 ms."""
    import gc
    import os
    import threading
    import time

    step(0)
    gc.collect()
    page = os.sysconf("SC_PAGE_SIZE")

    def resident() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * page

    before, peak, done = resident(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    step(1)
    done.set()
    sampler.join()
    return (max(peak[0], resident()) - before) / 2**20
