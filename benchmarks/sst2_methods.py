"""prompttune's methods against PEFT's on frozen MiniLM and SST-2, side by side.

One run of this script trains, on the same frozen all-MiniLM-L6-v2, the same SST-2 training subset,
the same number of steps and batch size, the same data order and learning-rate schedule:

- prompttune `soft_prompt` (20 tokens, its default init and learning rates), and the same with
  PEFT's initialisation (`soft_prompt:sample_vocab`), so the comparison with PEFT is like for like,
- PEFT `PromptTuningConfig` (20 tokens, SAMPLE_VOCAB init) on `AutoModelForSequenceClassification`,
  the anchor, trained with the same optimiser, learning rates and schedule,
- prompttune `linear_probe` and `full_finetune`, the baselines, and the zero-shot `hard_prompt`
  ("{text} It was {mask}." with terrible/great, scored by embedding similarity: MiniLM has no LM head),

and reports dev accuracy (872 SST-2 dev sentences), trainable parameters, artifact bytes, training
time (evaluation excluded) and peak memory. Each method runs in a fresh child process, so its peak
resident memory is its own.

`--set prefix` runs the methods that act inside the model instead: prompttune `deep_prompt`
(P-tuning v2: per-layer prefix, no MLP) and `prefix` (Li & Liang: MLP reparameterisation), against
PEFT `PrefixTuningConfig` without and with its projection (the same two designs), next to
`soft_prompt`, `p_tuning` and `full_finetune`; the results go to `sst2_prefix.{md,json,png}`.

    python -m benchmarks.sst2_methods                  # ~25 minutes on 2 CPU cores
    python -m benchmarks.sst2_methods --set prefix     # ~35 minutes
    python -m benchmarks.sst2_methods --steps 20 --train-size 200 --no-write   # a quick check
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
from pathlib import Path

from benchmarks import peft_loop
from benchmarks.common import (
    RESULTS,
    ZERO_SHOT_TEMPLATE,
    add_budget_arguments,
    environment,
    sst2_subset,
    write_results,
)
from benchmarks.peft_loop import peft_model

# NAME or NAME:INIT (a soft prompt with another initialisation).
SETS = {
    "methods": (
        "hard_prompt",
        "soft_prompt",
        "soft_prompt:sample_vocab",
        "peft_prompt_tuning",
        "linear_probe",
        "full_finetune",
    ),
    "prefix": (
        "soft_prompt",
        "deep_prompt",
        "peft_prefix_tuning",
        "prefix",
        "peft_prefix_tuning_projection",
        "p_tuning",
        "full_finetune",
    ),
}
# Each PEFT row and the prompttune method it is measured against.
PEFT_ANCHORS = {
    "soft_prompt": "peft_prompt_tuning",
    "deep_prompt": "peft_prefix_tuning",
    "prefix": "peft_prefix_tuning_projection",
}
PREFIX_TOKENS = 20  # deep_prompt, prefix and PEFT's prefix tuning
PREFIX_HIDDEN = 512  # the MLP of prefix and of PEFT's prefix_projection


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_prompttune(method: str, args: dict, train_path: str, dev_path: str, out: str) -> dict:
    import torch

    from prompttune import (
        Backbone,
        ClassificationConfig,
        Columns,
        PromptModel,
        TrainConfig,
        evaluate,
        load_examples,
        save_prompt,
        train,
    )
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    columns = Columns(text="sentence")
    train_examples, dev_examples = load_examples(train_path, columns), load_examples(dev_path, columns)
    torch.manual_seed(args["seed"])
    backbone = Backbone.from_pretrained(args["model"])
    loaded = rss_mb()
    method, _, init = method.partition(":")
    options = {"num_virtual_tokens": args["num_virtual_tokens"]} if method in ("soft_prompt", "p_tuning") else {}
    if method in ("prefix", "deep_prompt"):
        options = {"num_virtual_tokens": PREFIX_TOKENS}
    if method == "prefix":
        options["hidden_size"] = PREFIX_HIDDEN
    if init:
        options["init"] = init
    if method == "hard_prompt":  # zero-shot: label descriptions "It was terrible." / "It was great."
        task = ClassificationConfig(
            labels=("0", "1"), template=ZERO_SHOT_TEMPLATE, verbalizer=(("terrible",), ("great",))
        )
    else:  # SST-2's labels are 0/1; naming them lets the class_labels init embed real words.
        task = ClassificationConfig(labels=("0", "1"), verbalizer=(("negative",), ("positive",)))
    model = PromptModel.create(backbone, method, task, options)
    seconds, steps = 0.0, 0
    if model.trains:
        config = TrainConfig(max_steps=args["steps"], batch_size=args["batch_size"], seed=args["seed"], progress=False)
        result = train(model, train_examples, None, config)
        seconds, steps = result.seconds, result.steps
    dev = evaluate(model, dev_examples)
    save_prompt(model, out)
    return {
        "dev_accuracy": dev["accuracy"],
        "dev_f1_macro": dev["f1_macro"],
        "train_seconds": seconds,
        "steps": steps,
        "trainable_parameters": model.count_parameters()["trainable"],
        "method_config": model.method.config.to_dict(),
        "artifact_bytes": dir_bytes(Path(out)),
        "rss_after_load_mb": loaded,
    }


def run_peft(kind: str, args: dict, train_path: str, dev_path: str, out: str) -> dict:
    """PEFT's prompt tuning or prefix tuning, trained by a plain loop that mirrors prompttune's: same
    batches in the same order, AdamW with the same learning rates (prompt; classifier head) as the
    prompttune method it is measured against, warmup and decay."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prompttune import Columns, load_examples
    from prompttune.core.weights import resolve_model
    from prompttune.methods import method_class
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    columns = Columns(text="sentence")
    train_examples, dev_examples = load_examples(train_path, columns), load_examples(dev_path, columns)
    torch.manual_seed(args["seed"])
    path, _ = resolve_model(args["model"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    loaded = rss_mb()
    if kind == "peft_prompt_tuning":
        _, model = peft_model(
            kind,
            path,
            base,
            task_type="SEQ_CLS",
            virtual_tokens=args["num_virtual_tokens"],
            tokenizer_name_or_path=path,
        )
    elif kind == "peft_prefix_tuning_projection":
        _, model = peft_model("peft_prefix_tuning", path, base, task_type="SEQ_CLS", virtual_tokens=PREFIX_TOKENS)
    else:
        _, model = peft_model(
            "peft_prefix_tuning_noproj",
            path,
            base,
            task_type="SEQ_CLS",
            virtual_tokens=PREFIX_TOKENS,
            encoder_hidden_size=PREFIX_HIDDEN,
        )
    ours = method_class({v: k for k, v in PEFT_ANCHORS.items()}[kind])
    prompt_params = [p for n, p in model.named_parameters() if p.requires_grad and "prompt_encoder" in n]
    head_params = [p for n, p in model.named_parameters() if p.requires_grad and "prompt_encoder" not in n]
    steps = args["steps"]

    def batches(examples, size, order):
        for start in range(0, len(order), size):
            rows = [examples[i] for i in order[start : start + size]]
            encoded = tokenizer(
                [e.text for e in rows], padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            yield encoded, torch.tensor([int(e.label) for e in rows])

    def loss_of(chosen):
        [(encoded, labels)] = batches(train_examples, len(chosen), chosen)
        return model(**encoded, labels=labels).loss

    seconds = peft_loop.train(
        model,
        base,
        [{"params": prompt_params, "lr": ours.default_lr}, {"params": head_params, "lr": ours.default_head_lr}],
        loss_of,
        len(train_examples),
        steps,
        args["batch_size"],
        args["seed"],
    )
    step = steps
    model.eval()
    correct = 0
    with torch.no_grad():
        for encoded, labels in batches(dev_examples, 64, list(range(len(dev_examples)))):
            correct += int((model(**encoded).logits.argmax(-1) == labels).sum())
    model.save_pretrained(out)
    trainable = sum(p.numel() for p in prompt_params + head_params)
    return {
        "dev_accuracy": correct / len(dev_examples),
        "dev_f1_macro": None,
        "train_seconds": seconds,
        "steps": step,
        "trainable_parameters": trainable,
        "artifact_bytes": dir_bytes(Path(out)),
        "rss_after_load_mb": loaded,
    }


def child(method: str, args: dict, train_path: str, dev_path: str, out: str, queue) -> None:
    import torch

    torch.set_num_threads(args["threads"])
    try:
        if method.startswith("peft_"):
            row = run_peft(method, args, train_path, dev_path, out)
        else:
            row = run_prompttune(method, args, train_path, dev_path, out)
        row["peak_rss_mb"] = peak_rss_mb()
        queue.put(row)
    except BaseException as error:  # reported by the parent, which goes on with the other methods
        queue.put({"error": f"{type(error).__name__}: {error}"})
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_arguments(parser)
    parser.add_argument("--num-virtual-tokens", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set", choices=sorted(SETS), default="methods", help="which comparison to run (and its results name)"
    )
    parser.add_argument("--methods", help="comma-separated subset of the set's methods")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --methods: keep the other methods' rows from the set's results file, marked as an earlier run",
    )
    parser.add_argument("--no-write", action="store_true", help="print the results without writing benchmarks/results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prompttune-bench-"))
    train_path, dev_path = sst2_subset(work, args.train_size, args.seed)
    from prompttune.core.weights import resolve_model

    weights_bytes = Path(resolve_model(args.model)[0], "model.safetensors").stat().st_size
    context = mp.get_context("spawn")
    rows = {}
    for method in args.methods.split(",") if args.methods else SETS[args.set]:
        queue = context.Queue()
        process = context.Process(
            target=child,
            args=(method, vars(args), str(train_path), str(dev_path), str(work / method.replace(":", "-")), queue),
        )
        process.start()
        row = queue.get()
        process.join()
        row["method"] = method
        if "error" not in row:
            row["seconds_per_step"] = row["train_seconds"] / row["steps"] if row["steps"] else None
            row["artifact_fraction_of_model"] = row["artifact_bytes"] / weights_bytes
        rows[method] = row
        print(json.dumps(row), flush=True)

    name = "sst2_methods" if args.set == "methods" else f"sst2_{args.set}"
    if args.merge and (RESULTS / f"{name}.json").is_file():
        earlier = json.loads((RESULTS / f"{name}.json").read_text())["runs"]
        rows = {
            m: rows[m] if m in rows else {**earlier[m], "earlier_run": True}
            for m in SETS[args.set]
            if m in rows or m in earlier
        }
    flags = (f" --set {args.set}" if args.set != "methods" else "") + (
        f" --steps {args.steps}" if args.steps != 300 else ""
    )
    lines = [
        "# prompttune vs PEFT on frozen MiniLM + SST-2",
        "",
        (
            f"Frozen `{args.model}` ({weights_bytes / 2**20:.1f} MiB of weights); {args.train_size} SST-2 training sentences "
            f"(seed {args.seed}); {args.steps} steps of batch {args.batch_size}; accuracy on the 872 SST-2 dev sentences; "
            f"{args.threads} CPU threads; each method in its own process. Training time excludes evaluation. "
            f"Each PEFT row is trained with the learning rates of the prompttune method it is compared with."
        ),
        "",
        f"Command: `python -m benchmarks.sst2_methods{flags}`"
        + (
            f" (this run: `--methods {args.methods} --merge`; rows marked earlier come from the previous full run)"
            if args.merge and args.methods
            else ""
        ),
        "",
        "| method | dev accuracy | trainable params | artifact bytes | artifact / model | s / step | vs PEFT time | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ok = {m: r for m, r in rows.items() if "error" not in r}
    for method, r in rows.items():
        label = method
        if "init" in r.get("method_config", {}) and ":" in method:
            label = f"{method.partition(':')[0]} (init {r['method_config']['init']})"
        if r.get("earlier_run"):
            label += " (earlier run)"
        if "error" in r:
            lines.append(f"| {label} | failed: {r['error']} | | | | | | |")
            continue
        per_step = r["seconds_per_step"]
        anchor = ok.get(PEFT_ANCHORS.get(method, ""))
        ratio = f"{per_step / anchor['seconds_per_step']:.2f}x" if per_step and anchor else "-"
        lines.append(
            f"| {label} | {r['dev_accuracy']:.4f} | {r['trainable_parameters']:,} | {r['artifact_bytes']:,} | "
            f"1/{1 / r['artifact_fraction_of_model']:,.0f} | {f'{per_step:.3f}' if per_step else '-'} | {ratio} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    targets = []
    for method, peft in PEFT_ANCHORS.items():
        ours, anchor = ok.get(method), ok.get(peft)
        if ours and anchor:
            targets += [
                (
                    f"- {method} at least as accurate as PEFT's {peft}: {ours['dev_accuracy']:.4f} vs "
                    f"{anchor['dev_accuracy']:.4f} ({'met' if ours['dev_accuracy'] >= anchor['dev_accuracy'] else 'NOT met'})"
                ),
                (
                    f"- {method} no slower per step than {peft}: {ours['seconds_per_step']:.3f} s vs "
                    f"{anchor['seconds_per_step']:.3f} s, ratio {ours['seconds_per_step'] / anchor['seconds_per_step']:.2f} "
                    f"({'met' if ours['seconds_per_step'] <= anchor['seconds_per_step'] else 'NOT met'})"
                ),
            ]
    same_init = ok.get("soft_prompt:sample_vocab")
    if same_init:
        targets.append(f"- soft prompt with PEFT's initialisation (sample_vocab): {same_init['dev_accuracy']:.4f}")
    soft, full = ok.get("soft_prompt"), ok.get("full_finetune")
    for method in ("deep_prompt", "prefix"):
        if method in ok and soft:
            targets.append(
                f"- {method} beats soft_prompt at the same steps: {ok[method]['dev_accuracy']:.4f} vs "
                f"{soft['dev_accuracy']:.4f} ({'met' if ok[method]['dev_accuracy'] > soft['dev_accuracy'] else 'NOT met'})"
            )
        if method in ok and full:
            gap = 100 * (full["dev_accuracy"] - ok[method]["dev_accuracy"])
            targets.append(
                f"- {method} within 2 points of full_finetune: gap {gap:.2f} points "
                f"({'met' if gap <= 2 else 'NOT met'})"
            )
    if soft and args.set == "methods":
        targets.append(
            f"- artifact under 1/1000 of the model: 1/{1 / soft['artifact_fraction_of_model']:,.0f} "
            f"({'met' if soft['artifact_fraction_of_model'] < 1e-3 else 'NOT met'})"
        )
    if targets:
        lines += ["", "Targets:"] + targets
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if not args.no_write:
        payload = {"args": vars(args), "environment": environment(), "model_weights_bytes": weights_bytes, "runs": rows}
        write_results(name, payload, markdown)
        plot(rows, RESULTS / f"{name}.png")


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = {m: r for m, r in rows.items() if "error" not in r}
    names = list(ok)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].bar(names, [ok[m]["dev_accuracy"] for m in names], color="tab:blue")
    axes[0].set_ylim(0.5, 1.0)
    axes[0].set_title("SST-2 dev accuracy")
    axes[1].bar(names, [ok[m]["seconds_per_step"] or 0.0 for m in names], color="tab:orange")
    axes[1].set_title("seconds per training step")
    axes[2].bar(names, [max(ok[m]["trainable_parameters"], 1) for m in names], color="tab:green")
    axes[2].set_yscale("log")
    axes[2].set_title("trainable parameters (log)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
