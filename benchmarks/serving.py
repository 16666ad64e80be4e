"""Many prompts on one frozen model: mixed-batch throughput against a single prompt and against the
PEFT way, and a bounded load test of `prompttune serve`.

1. Throughput. Frozen MiniLM, 8 soft prompts of 20 tokens (one per task, each with its head), SST-2
   dev sentences as requests assigned to the 8 tasks in turn. Requests are served in windows of W
   rows, as a server batches what arrives together:
   - prompttune mixed: one forward per window, each row under its own prompt (PromptSet);
   - prompttune single prompt: the same rows, all under one prompt (the ceiling);
   - both again "by length": the window's rows in order of length, whatever their prompt, in
     forwards of at most --max-batch-tokens padded tokens (what `serve --max-batch-tokens` does);
   - PEFT: the same 8 prompts as PromptTuningConfig adapters of one PeftModel; per window, one
     batch per task after `set_adapter` (PEFT cannot mix prompts in a batch, issue 759 there).
   All three run in this process, interleaved round by round; median rows per second.
2. Load test. `prompttune serve` started on a loopback port over a registry holding the 8 prompts;
   8 concurrent clients send a fixed number of requests each (1-4 sentences, random prompt); reports
   requests per second, p50 and p99 latency, and errors.

The prompts are untrained (throughput does not depend on their values).

    python -m benchmarks.serving          # about 8 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmarks.common import SHARED, environment, write_results
from benchmarks.peft_loop import peft_config

TASKS = 8


def sentences(count: int) -> list[str]:
    with open(SHARED / "sst2" / "dev.tsv", newline="", encoding="utf-8") as handle:
        rows = [r["sentence"].strip() for r in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return (rows * (count // len(rows) + 1))[:count]


def throughput(args, backbone, prompt_dirs: dict, texts: list[str]) -> dict:
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prompttune.core.weights import resolve_model
    from prompttune.inference.mixed import PromptSet

    prompts = PromptSet.load(prompt_dirs, backbone=backbone)
    names = list(prompt_dirs)
    rows = [(names[i % TASKS], t) for i, t in enumerate(texts)]
    single = [(names[0], t) for t in texts]

    path, _ = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    config = peft_config("peft_prompt_tuning", "SEQ_CLS", args.tokens, init="random")
    peft = get_peft_model(base, config, adapter_name=names[0])
    for name in names[1:]:
        peft.add_adapter(name, config)
    peft.eval()

    results = {}
    for window in args.windows:

        def ours_mixed(window=window):
            for start in range(0, len(rows), window):
                prompts.logits(rows[start : start + window], batch_size=window)

        def ours_single(window=window):
            for start in range(0, len(single), window):
                prompts.logits(single[start : start + window], batch_size=window)

        def ours_mixed_by_length(window=window):
            for start in range(0, len(rows), window):
                prompts.logits(rows[start : start + window], batch_size=window, max_tokens=args.max_batch_tokens)

        def ours_single_by_length(window=window):
            for start in range(0, len(single), window):
                prompts.logits(single[start : start + window], batch_size=window, max_tokens=args.max_batch_tokens)

        @torch.no_grad()
        def peft_per_task(window=window):
            for start in range(0, len(rows), window):
                chunk = rows[start : start + window]
                for name in names:
                    batch = [t for n, t in chunk if n == name]
                    if not batch:
                        continue
                    peft.set_adapter(name)
                    encoded = tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
                    peft(**encoded).logits.argmax(-1)

        runs = {
            "prompttune_mixed": ours_mixed,
            "prompttune_single_prompt": ours_single,
            "prompttune_mixed_by_length": ours_mixed_by_length,
            "prompttune_single_prompt_by_length": ours_single_by_length,
            "peft_set_adapter": peft_per_task,
        }
        times = {k: [] for k in runs}
        order = list(runs)
        for round_number in range(args.rounds + 1):
            for name in order if round_number % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                runs[name]()
                if round_number > 0:  # the first round warms up
                    times[name].append(time.perf_counter() - start)
        rate = {k: len(texts) / statistics.median(v) for k, v in times.items()}
        results[window] = {
            "rows_per_second": rate,
            "mixed_vs_single": rate["prompttune_mixed"] / rate["prompttune_single_prompt"],
            "mixed_vs_single_by_length": rate["prompttune_mixed_by_length"]
            / rate["prompttune_single_prompt_by_length"],
            "mixed_vs_peft": rate["prompttune_mixed"] / rate["peft_set_adapter"],
            "mixed_by_length_vs_peft": rate["prompttune_mixed_by_length"] / rate["peft_set_adapter"],
        }
        print(f"window {window}: {results[window]}", flush=True)
    return results


def load_test(args, registry_root: Path) -> dict:
    from prompttune.serving.client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prompttune",
            "serve",
            "--model",
            args.model,
            "--registry",
            str(registry_root),
            "--port",
            str(port),
            "--max-batch-size",
            "64",
            "--max-wait-ms",
            str(args.max_wait_ms),
            "--max-batch-tokens",
            str(args.max_batch_tokens),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            with Client(url) as probe:
                probe.wait_ready(timeout=180, process=process)
        except Exception:
            raise SystemExit(f"the server did not start: {Path(log.name).read_text()}") from None
        texts = sentences(400)
        names = [f"task{i}" for i in range(TASKS)]
        with Client(url) as warm:
            for name in names:  # load every prompt once before timing
                warm.classify(name, texts[:2])
        latencies, errors = [], []
        lock = threading.Lock()

        def client(k: int) -> None:
            rng = random.Random(k)
            with Client(url) as c:
                for _ in range(args.requests_per_client):
                    batch = rng.sample(texts, rng.randint(1, 4))
                    start = time.perf_counter()
                    try:
                        c.classify(rng.choice(names), batch)
                        elapsed = time.perf_counter() - start
                        with lock:
                            latencies.append(elapsed)
                    except Exception as error:
                        with lock:
                            errors.append(repr(error))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        with Client(url) as c:
            metrics = c.metrics()
        batch_sizes = [
            line
            for line in metrics.splitlines()
            if line.startswith(("prompttune_batch_rows_sum", "prompttune_batch_rows_count"))
        ]
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in batch_sizes}
        ordered = sorted(latencies)

        def pct(p):
            return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else None

        return {
            "clients": args.clients,
            "requests": args.clients * args.requests_per_client,
            "completed": len(latencies),
            "errors": len(errors),
            "error_examples": errors[:3],
            "seconds": wall,
            "requests_per_second": len(latencies) / wall,
            "p50_ms": pct(50) * 1000,
            "p99_ms": pct(99) * 1000,
            "mean_rows_per_forward": values["prompttune_batch_rows_sum"]
            / max(values["prompttune_batch_rows_count"], 1),
            "max_wait_ms": args.max_wait_ms,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--rows", type=int, default=256, help="requests (sentences) per throughput round")
    parser.add_argument("--windows", type=int, nargs="+", default=[8, 32, 64], help="rows served together")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests-per-client", type=int, default=40)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=1024,
        help="padded tokens per forward for the by-length runs and the server (best of 256-2048 here)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from prompttune import Backbone, ClassificationConfig, PromptModel, save_prompt
    from prompttune.artifacts.registry import Registry
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="prompttune-serving-"))
    backbone = Backbone.from_pretrained(args.model)
    registry = Registry(work / "registry")
    prompt_dirs = {}
    for i in range(TASKS):
        torch.manual_seed(i)
        model = PromptModel.create(
            backbone,
            "soft_prompt",
            ClassificationConfig(labels=("0", "1")),
            {"num_virtual_tokens": args.tokens, "init": "sample_vocab"},
        )
        prompt_dirs[f"task{i}"] = save_prompt(model, work / f"task{i}")
        registry.push(prompt_dirs[f"task{i}"], f"task{i}")

    texts = sentences(args.rows)
    speed = throughput(args, backbone, prompt_dirs, texts)
    load = load_test(args, work / "registry")
    print(load, flush=True)

    lines = [
        "# Serving many prompts on one frozen model",
        "",
        (
            f"Frozen `{args.model}`, {TASKS} soft prompts of {args.tokens} tokens with their heads (untrained: "
            f"throughput does not depend on the values), {args.rows} SST-2 dev sentences as requests assigned to the "
            f"tasks in turn, {args.threads} CPU threads. Command: `python -m benchmarks.serving`"
        ),
        "",
        (f"## Throughput by window (rows served together), median of {args.rounds} interleaved rounds"),
        "",
        (
            'Rows per second; "one forward" runs each window as one batch, "by length" runs its rows in order of '
            f"length in forwards of at most {args.max_batch_tokens} padded tokens. PEFT runs one batch per task in each "
            "window (a window of W rows holds W/8 rows per task)."
        ),
        "",
        (
            "| window | mixed, one forward | single prompt, one forward | mixed, by length | single prompt, by length | "
            "PEFT set_adapter per task | mixed / single | mixed / single, by length | mixed / PEFT | mixed by length / PEFT |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for window, r in speed.items():
        rate = r["rows_per_second"]
        lines.append(
            f"| {window} | {rate['prompttune_mixed']:.1f} | {rate['prompttune_single_prompt']:.1f} | "
            f"{rate['prompttune_mixed_by_length']:.1f} | {rate['prompttune_single_prompt_by_length']:.1f} | "
            f"{rate['peft_set_adapter']:.1f} | {r['mixed_vs_single']:.3f} | {r['mixed_vs_single_by_length']:.3f} | "
            f"{r['mixed_vs_peft']:.2f}x | {r['mixed_by_length_vs_peft']:.2f}x |"
        )
    lines += [
        "",
        f"## Load test: `prompttune serve`, {load['clients']} concurrent clients on loopback",
        "",
        "| requests | completed | errors | seconds | requests/s | p50 latency | p99 latency | mean rows per forward |",
        "|---|---|---|---|---|---|---|---|",
        (
            f"| {load['requests']} | {load['completed']} | {load['errors']} | {load['seconds']:.1f} | "
            f"{load['requests_per_second']:.1f} | {load['p50_ms']:.0f} ms | {load['p99_ms']:.0f} ms | "
            f"{load['mean_rows_per_forward']:.1f} |"
        ),
        "",
        (
            f"Each client sends {args.requests_per_client} requests of 1-4 sentences for a random one of the {TASKS} "
            f"prompts, one after another; the server joins what arrives within {args.max_wait_ms:g} ms and runs it by "
            f"length (`--max-batch-tokens {args.max_batch_tokens}`)."
        ),
    ]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if not args.no_write:
        write_results(
            "serving",
            {
                "args": vars(args),
                "environment": environment(),
                "throughput": {str(k): v for k, v in speed.items()},
                "load_test": load,
            },
            markdown,
        )


if __name__ == "__main__":
    main()
