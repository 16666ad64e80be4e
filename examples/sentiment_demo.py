"""prompttune's demo: sentiment with a soft prompt on frozen all-MiniLM-L6-v2.

1. zero-shot hard prompt ("{text} It was {mask}." with terrible/great), no training;
2. a linear probe (only a 770-parameter head trains) for comparison;
3. a 20-token soft prompt with its head, then saved as an artifact, loaded back and used to predict.

Offline by default, on the small sentiment set in examples/data (written for this project: 80
training and 40 dev sentences). `--data DIR` takes a folder with train.tsv and dev.tsv instead,
e.g. ../shared/data/sst2 (a seeded subset of `--train-size` training sentences is used).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SENTENCES = [
    "An absolute delight from start to finish.",
    "I want those two hours of my life back.",
    "The coffee was lukewarm and the service painfully slow.",
    "Sturdy, quiet and worth every penny.",
]


def prepare_data(folder: Path | None, train_size: int, work: Path) -> tuple[Path, Path, str]:
    if folder is None:
        return HERE / "data" / "sentiment_train.tsv", HERE / "data" / "sentiment_dev.tsv", "text"
    train, dev = folder / "train.tsv", folder / "dev.tsv"
    for path in (train, dev):
        if not path.is_file():
            sys.exit(f"--data {folder}: {path.name} not found (expected train.tsv and dev.tsv)")
    with open(train, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        column = "sentence" if "sentence" in reader.fieldnames else "text"
        rows = list(reader)
    random.Random(0).shuffle(rows)
    subset = work / "train_subset.tsv"
    with open(subset, "w", encoding="utf-8") as handle:
        handle.write(f"{column}\tlabel\n")
        handle.writelines(f"{row[column].strip()}\t{row['label'].strip()}\n" for row in rows[:train_size])
    return subset, dev, column


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder with train.tsv and dev.tsv (e.g. ../shared/data/sst2)")
    parser.add_argument("--train-size", type=int, default=2000, help="training sentences taken from --data")
    parser.add_argument("--steps", type=int, help="training steps (default: 150, or 300 with --data)")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("runs/demo"),
        help="the demo's own folder: each run replaces the prompts it trained there before",
    )
    args = parser.parse_args()

    from prompttune.api import artifact_bytes, predict, train_prompt
    from prompttune.core.weights import MINILM_SHA256
    from prompttune.runtime import quiet_libraries
    from prompttune.tasks.data import Columns, label_set, load_examples

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="prompttune-demo-"))
    train, dev, column = prepare_data(args.data, args.train_size, work)
    labels = label_set(load_examples(str(train), Columns(text=column)))
    negative, positive = labels if labels == ("0", "1") else ("negative", "positive")
    steps = args.steps or (300 if args.data else 150)
    # force: the prompts of an earlier run of the demo in --output are replaced.
    common = dict(force=True, model="all-MiniLM-L6-v2", train=str(train), eval=str(dev), text_column=column)
    print(f"model: all-MiniLM-L6-v2 (frozen; weights sha256 {MINILM_SHA256[:12]}… verified)")
    print(f"data:  {train} ({len(Path(train).read_text().splitlines()) - 1} sentences) -> dev {dev}\n")

    results = []
    runs = [
        (
            "zero-shot hard prompt",
            "hard_prompt",
            dict(template="{text} It was {mask}.", verbalizer={negative: ["terrible"], positive: ["great"]}),
        ),
        ("linear probe", "linear_probe", dict(max_steps=steps, batch_size=16)),
        ("soft prompt (20 tokens)", "soft_prompt", dict(max_steps=steps, batch_size=16)),
    ]
    for title, method, options in runs:
        start = time.perf_counter()
        print(f"--> {title}", flush=True)
        metrics = train_prompt(method=method, output=str(args.output / method), **common, **options)
        results.append((title, metrics, time.perf_counter() - start))

    print(f"\n{'':26} {'dev accuracy':>12} {'macro F1':>9} {'trained params':>15} {'artifact':>10} {'seconds':>8}")
    for title, metrics, seconds in results:
        dev_metrics = metrics["dev_metrics"]
        print(
            f"{title:26} {dev_metrics['accuracy']:12.3f} {dev_metrics['f1_macro']:9.3f} "
            f"{metrics['parameters']['trainable']:15,d} {metrics['artifact_bytes'] / 1024:8.1f}KB {seconds:8.1f}"
        )
    before, after = results[0][1]["dev_metrics"]["accuracy"], results[2][1]["dev_metrics"]["accuracy"]
    print(f"\nsoft prompt vs zero-shot: {before:.3f} -> {after:.3f}")

    saved = args.output / "soft_prompt"
    print(f"\nsaved artifact: {saved} ({artifact_bytes(saved):,} bytes: prompt.safetensors + prompt.json)")
    print("predictions from the reloaded artifact:")
    for row in predict(str(saved), SENTENCES):
        print("  " + json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
