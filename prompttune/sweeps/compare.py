"""`prompttune compare`: a sweep over methods, prompt lengths, initialisations, training-set sizes and
seeds on one frozen model and one dataset, with a results table, plots and an HTML report.

A sweep is described by a YAML file (or the same fields as flags):

    model: all-MiniLM-L6-v2
    train: ../shared/data/sst2/train.tsv
    eval: ../shared/data/sst2/dev.tsv
    text_column: sentence
    methods: [soft_prompt, prefix, linear_probe]
    lengths: [5, 20]                 # num_virtual_tokens, for the methods that have one
    inits: [class_labels, sample_vocab]   # for the methods that accept that init
    train_sizes: [16, 64, full]      # examples per class (classification) or in all; full = every row
    seeds: [0, 1, 2]
    train_options: {max_steps: 300, batch_size: 32}

Every cell (one combination) is a `train_prompt` run in its own process, writing into
`OUT/cells/<cell>/`: the artifact, `metrics.json`, `log.jsonl`, and last `result.json` (written
atomically when the cell has finished). A sweep started again skips every cell that has its
`result.json`, so a killed sweep resumes where it stopped; a failed cell writes `error.txt`, is
reported, and the others go on. Cells run one after another, `--workers N` at a time, or as tasks on a
Ray cluster (`--ray ADDRESS`, `--ray local` for a Ray instance on this machine) whose workers share
the output folder.

Output in OUT: `results.csv` (one row per cell), `summary.csv` and `summary.md` (mean and standard
deviation over seeds, trainable parameters, artifact bytes, training time, peak memory), plots
(metric against trainable parameters, training-set size and prompt length; training curves) and
`report.html` putting them together.
"""

from __future__ import annotations

import csv
import html
import itertools
import json
import multiprocessing
import os
import random
import resource
import statistics
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..options import COLUMN_OPTIONS, TaskOptions, option_names

FULL = "full"


#: What a sweep's `prompt_options` may hold besides task options: how the model is loaded.
PLACEMENT = ("dtype", "device_map")
#: The task options a sweep holds as fields of its own (and `compare` takes as flags).
OWN_TASK_FIELDS = (*COLUMN_OPTIONS, "template", "verbalizer")


@dataclass
class SweepSpec:
    model: str
    train: str
    eval: str
    methods: list[str]
    task: str = "classification"
    text_column: str | None = None
    """Columns by role (None: the task's default): text, text_pair and label for classification,
    source and target for generation, text (the tokens) and label (the tags) for token
    classification."""
    text_pair_column: str | None = None
    label_column: str | None = None
    source_column: str | None = None
    target_column: str | None = None
    template: str | None = None
    verbalizer: str | dict | None = None
    lengths: list[int | None] = field(default_factory=lambda: [None])
    inits: list[str | None] = field(default_factory=lambda: [None])
    train_sizes: list[int | str] = field(default_factory=lambda: [FULL])
    seeds: list[int] = field(default_factory=lambda: [0])
    train_options: dict = field(default_factory=dict)
    method_options: dict = field(default_factory=dict)
    eval_size: int | None = None
    """Score on a fixed random subset of the eval data: rows, or distinct sources for generation."""
    metric: str | None = None
    prompt_options: dict = field(default_factory=dict)
    """Other `train_prompt` arguments for every cell: the fields of the task's options
    (`ClassificationOptions`...) this spec does not hold itself (labels, readout, instruction, chat,
    shots, max_length, max_target_length, num_beams, head...), and dtype and device_map."""
    train_filter: dict | None = None
    """Extrapolation: {column: category, values: [...]} keeps only those training rows."""
    eval_groups: str | None = None
    """Extrapolation: score eval rows whose value in this column occurs in training ("seen") apart
    from the rest ("unseen"), as Li & Liang do with WebNLG's categories."""
    group_column: str | None = None
    """Score the eval rows per value of this column (`evaluate --group-column`): every metric per
    group, as columns `GROUP:METRIC` (and `GROUP:count`), and the largest gap, `gap:METRIC`;
    plotted per method as `metric_by_group.png`."""

    @classmethod
    def from_dict(cls, values: dict, where: str) -> SweepSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("model", "train", "eval", "methods") if not values.get(k)]
        if missing:
            raise ConfigError(f"{where}: missing {missing}")
        spec = cls(**values)
        for name in ("methods", "lengths", "inits", "train_sizes", "seeds"):
            value = getattr(spec, name)
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{where}, field {name!r}: a non-empty list, got {value!r}")
        for size in spec.train_sizes:
            if size != FULL and not (isinstance(size, int) and size > 0):
                raise ConfigError(f"{where}, field 'train_sizes': positive integers or {FULL!r}, got {size!r}")
        if spec.train_filter is not None and (
            not isinstance(spec.train_filter, dict)
            or set(spec.train_filter) != {"column", "values"}
            or not isinstance(spec.train_filter["values"], list)
        ):
            raise ConfigError(f"{where}, field 'train_filter': {{column: NAME, values: [...]}}")
        from ..methods import method_class
        from ..tasks import TASKS

        if spec.task not in TASKS:
            raise ConfigError(f"{where}, field 'task': one of {sorted(TASKS)}, got {spec.task!r}")
        spec.task_options(where)
        for method in spec.methods:
            method_class(method)
        return spec

    def task_class(self):
        from ..tasks import task_class

        return task_class(self.task)

    def columns(self) -> dict[str, str | None]:
        """The columns given, by role."""
        return {name[: -len("_column")]: getattr(self, name) for name in COLUMN_OPTIONS}

    def own_task_fields(self) -> dict:
        """The task options the spec holds as fields of its own (columns, template, verbalizer), where given."""
        return {k: getattr(self, k) for k in OWN_TASK_FIELDS if getattr(self, k) is not None}

    def task_options(self, where: str = "the sweep") -> TaskOptions:
        """The task's options every cell shares: the spec's columns, template and verbalizer and
        its `prompt_options`, checked by the task's `Options` (a field of another task's options,
        or of none, is refused)."""
        allowed = option_names() - set(type(self).__dataclass_fields__) | set(PLACEMENT)
        if not isinstance(self.prompt_options, dict) or set(self.prompt_options) - allowed:
            raise ConfigError(f"{where}, field 'prompt_options': a mapping with keys from {sorted(allowed)}")
        own = self.own_task_fields()
        given = {k: v for k, v in self.prompt_options.items() if k not in PLACEMENT}
        task = self.task_class()
        try:
            task.check_options(given)
        except ConfigError as error:
            raise ConfigError(f"{where}, field 'prompt_options': {error}") from None
        try:
            return task.check_options({**own, **given})
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None

    def resolved_columns(self) -> dict[str, str | None]:
        return self.task_class().resolve_columns(self.columns())

    @classmethod
    def load(cls, path: str | os.PathLike) -> SweepSpec:
        import yaml

        try:
            values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the sweep ({error.strerror})") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a sweep is a mapping of fields")
        return cls.from_dict(values, str(path))


@dataclass(frozen=True)
class Cell:
    method: str
    length: int | None
    init: str | None
    train_size: int | str
    seed: int

    @property
    def name(self) -> str:
        parts = [self.method]
        if self.length is not None:
            parts.append(f"len{self.length}")
        if self.init is not None:
            parts.append(f"init-{self.init}")
        parts += [f"n{self.train_size}", f"seed{self.seed}"]
        return "_".join(parts)


def cells(spec: SweepSpec) -> list[Cell]:
    """Every combination, with lengths and inits only where the method has those fields."""
    from ..methods import method_class

    out = []
    for method in spec.methods:
        fields = method_class(method).Config.__dataclass_fields__
        length_field = next((f for f in ("num_virtual_tokens", "num_tokens") if f in fields), None)
        lengths = spec.lengths if length_field else [None]
        inits = spec.inits if "init" in fields else [None]
        for length, init, size, seed in itertools.product(lengths, inits, spec.train_sizes, spec.seeds):
            if init is not None and init not in method_class(method).inits:
                continue
            out.append(Cell(method, length, init, size, seed))
    return list(dict.fromkeys(out))


# ---- running one cell ---------------------------------------------------------------------------


def _records(spec: SweepSpec, path: str) -> list[dict]:
    return spec.task_class().read_records(path)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    from ..storage import write_atomic

    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _training_records(spec: SweepSpec) -> list[dict]:
    """The training rows, restricted by `train_filter` ({column, values}) when the sweep has one."""
    records = _records(spec, spec.train)
    if spec.train_filter:
        column, keep = spec.train_filter["column"], set(map(str, spec.train_filter["values"]))
        missing = next((r for r in records if column not in r), None)
        if missing is not None:
            raise ConfigError(f"{spec.train}: train_filter column {column!r} is missing; columns are {sorted(missing)}")
        records = [r for r in records if str(r[column]) in keep]
        if not records:
            raise ConfigError(f"{spec.train}: no row has {column} in {sorted(keep)}")
    return records


def subset(spec: SweepSpec, size: int | str, seed: int, folder: Path) -> str:
    """The training file for a cell: `size` examples as the task counts them (per class for
    classification, in all otherwise), drawn with `seed` from the rows `train_filter` keeps; `full`
    is all of them."""
    if size == FULL and not spec.train_filter:
        return spec.train
    path = folder / f"train_n{size}_seed{seed if size != FULL else 0}.jsonl"
    if path.is_file():
        return str(path)
    records = _training_records(spec)
    rng = random.Random(seed)
    chosen = records if size == FULL else spec.task_class().sample(records, size, rng, spec.resolved_columns())
    _write_jsonl(path, chosen)
    return str(path)


def eval_groups(spec: SweepSpec, folder: Path) -> dict[str, str]:
    """With `eval_groups` (a column such as WebNLG's category): the eval rows whose value occurs in
    the training rows ("seen") and those whose value does not ("unseen"), as files."""
    if not spec.eval_groups:
        return {}
    column = spec.eval_groups
    seen_values = {str(r.get(column)) for r in _training_records(spec)}
    records = _records(spec, _eval_subset(spec, folder))
    groups = {
        "seen": [r for r in records if str(r.get(column)) in seen_values],
        "unseen": [r for r in records if str(r.get(column)) not in seen_values],
    }
    out = {}
    for name, rows in groups.items():
        if rows:
            path = folder / f"eval_{name}.jsonl"
            if not path.is_file():
                _write_jsonl(path, rows)
            out[name] = str(path)
    return out


def run_cell(spec_dict: dict, cell_dict: dict, out: str, shared: dict | None = None) -> dict:
    """Train and score one cell (in a worker process); returns its result row. `shared`: the task
    options every cell of the sweep takes (`Task.sweep_options`, read once by `run_sweep`)."""
    from ..api import evaluate_prompt, interrupted_run, train_prompt
    from ..runtime import quiet_libraries
    from ..storage import write_json_atomic

    quiet_libraries()
    spec = SweepSpec(**spec_dict)
    cell = Cell(**cell_dict)
    root = Path(out)
    folder = root / "cells" / cell.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "error.txt").unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        train = subset(spec, cell.train_size, cell.seed, root / "data")
        eval_path = _eval_subset(spec, root / "data")
        options = dict(spec.method_options.get(cell.method, {}))
        if cell.length is not None:
            from ..methods import method_class

            fields = method_class(cell.method).Config.__dataclass_fields__
            options["num_virtual_tokens" if "num_virtual_tokens" in fields else "num_tokens"] = cell.length
        if cell.init is not None:
            options["init"] = cell.init
        train_options = {"seed": cell.seed, "progress": False, **spec.train_options}
        if spec.metric:
            train_options["metric"] = spec.metric
        columns = {f"{role}_column": name for role, name in spec.columns().items() if name is not None}
        common = dict(
            model=spec.model,
            method=cell.method,
            train=train,
            eval=eval_path,
            output=str(folder),
            task=spec.task,
            method_options=options,
            **spec.own_task_fields(),
            **{**(shared or {}), **spec.prompt_options},
        )
        # A cell killed after a checkpoint continues from it (same arguments: the same cell).
        # The cell's folder is the sweep's own: a cell run again replaces what it held.
        metrics = train_prompt(**common, **train_options, resume=interrupted_run(folder) is not None, force=True)
        groups = {}
        for group, path in eval_groups(spec, root / "data").items():
            scores = evaluate_prompt(str(folder), path, **columns)
            groups.update(
                {f"{group}_{k}": v for k, v in scores.items() if isinstance(v, (int, float)) and k != "count"}
            )
        if spec.group_column:
            scores = evaluate_prompt(str(folder), eval_path, **columns, group_column=spec.group_column)
            kept = (*spec.task_class().metrics, "count")
            for value, measured in scores["groups"].items():
                groups.update({f"{value}:{k}": v for k, v in measured.items() if k in kept})
            groups.update({f"gap:{k}": gap["gap"] for k, gap in scores["group_gaps"].items()})
    except Exception as error:
        from ..storage import write_atomic

        write_atomic(folder / "error.txt", f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}")
        return {"cell": cell.name, **asdict(cell), "status": "failed", "error": f"{type(error).__name__}: {error}"}
    dev = metrics["dev_metrics"] or {}
    row = {
        "cell": cell.name,
        **asdict(cell),
        "status": "done",
        **{k: v for k, v in dev.items() if isinstance(v, (int, float))},
        "trainable_parameters": metrics["parameters"]["trainable"],
        "artifact_bytes": metrics["artifact_bytes"],
        "train_seconds": metrics["training"]["seconds"],
        "wall_seconds": round(time.perf_counter() - start, 3),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "train_examples": metrics["training"]["examples"],
        **groups,
    }
    write_json_atomic(folder / "result.json", row)  # last: its presence means the cell is finished
    return row


def _eval_subset(spec: SweepSpec, folder: Path) -> str:
    """The eval file, or with `eval_size` a fixed random subset of it as the task draws one (rows;
    for generation, distinct sources with every row of each, so a source keeps all its references)."""
    if not spec.eval_size:
        return spec.eval
    path = folder / f"eval_n{spec.eval_size}.jsonl"
    if not path.is_file():
        kept = spec.task_class().sample_eval(
            _records(spec, spec.eval), spec.eval_size, random.Random(0), spec.resolved_columns()
        )
        _write_jsonl(path, kept)
    return str(path)


# ---- the sweep ----------------------------------------------------------------------------------


def run_sweep(
    spec: SweepSpec, out: str | os.PathLike, workers: int = 1, progress=print, ray_address: str | None = None
) -> list[dict]:
    """Run every unfinished cell; returns every cell's result row (finished earlier or now).
    `workers` cells run at once in local processes, or, with `ray_address` ("local" starts a Ray
    instance on this machine), as Ray tasks on a cluster whose workers all see `out`."""
    from ..storage import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "sweep.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()) != asdict(spec):
        raise ConfigError(f"{out}: holds a different sweep (see {spec_file}); use another output folder")
    write_json_atomic(spec_file, asdict(spec))
    todo, rows = [], {}
    for cell in cells(spec):
        result = out / "cells" / cell.name / "result.json"
        if result.is_file():
            rows[cell.name] = json.loads(result.read_text())
        else:
            todo.append(cell)
    progress(f"{len(rows)} of {len(rows) + len(todo)} cells already finished; running {len(todo)}")
    metric = spec.metric or spec.task_class().default_metric
    # What every cell shares (a token task's tag set), read from the training file once.
    shared = spec.task_class().sweep_options(spec.train, spec.resolved_columns()) if todo else {}
    total = len(rows) + len(todo)

    def finished(cell: Cell, row: dict) -> None:
        rows[cell.name] = row
        shown = f"{metric} {row[metric]:.4f}" if row.get("status") == "done" and metric in row else row.get("error", "")
        progress(f"[{len(rows)}/{total}] {cell.name}: {row['status']} {shown}")

    if ray_address is not None:
        _run_on_ray(spec, todo, out, ray_address, finished, shared)
    else:
        # One process per cell: peak memory is the cell's own, and a crash takes only that cell.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=max(1, workers), max_tasks_per_child=1, mp_context=context) as pool:
            futures = {pool.submit(run_cell, asdict(spec), asdict(cell), str(out), shared): cell for cell in todo}
            for future in as_completed(futures):
                finished(futures[future], _result(future.result, futures[future]))
    ordered = [rows[c.name] for c in cells(spec)]
    write_outputs(spec, ordered, out)
    return ordered


def _result(get, cell: Cell) -> dict:
    try:
        return get()
    except Exception as error:
        return {"cell": cell.name, **asdict(cell), "status": "failed", "error": f"{type(error).__name__}: {error}"}


def _run_on_ray(spec: SweepSpec, todo: list[Cell], out: Path, address: str, finished, shared: dict) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray: Ray is not installed (pip install 'prompttune[cluster]')") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    try:
        # A fresh worker process per cell (max_calls=1), so its peak memory is its own.
        remote = ray.remote(num_cpus=1, max_calls=1)(run_cell)
        pending = {remote.remote(asdict(spec), asdict(cell), str(out.resolve()), shared): cell for cell in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                cell = pending.pop(ref)
                finished(cell, _result(lambda ref=ref: ray.get(ref), cell))
    finally:
        if started_here:
            ray.shutdown()


# ---- tables, plots, report ----------------------------------------------------------------------

NUMBERS = ("trainable_parameters", "artifact_bytes", "train_seconds", "peak_memory_mb")


def summarise(spec: SweepSpec, rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per (method, length, init, train size)."""
    metrics = _metric_names(spec, rows)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("status") == "done":
            groups.setdefault((row["method"], row["length"], row["init"], row["train_size"]), []).append(row)
    out = []
    for (method, length, init, size), members in groups.items():
        entry = {"method": method, "length": length, "init": init, "train_size": size, "seeds": len(members)}
        for name in metrics + list(NUMBERS):
            values = [m[name] for m in members if isinstance(m.get(name), (int, float))]
            if values:
                entry[f"{name}_mean"] = statistics.fmean(values)
                entry[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def _metric_names(spec: SweepSpec, rows: list[dict]) -> list[str]:
    names = list(spec.task_class().metrics)
    names = names + [f"{group}_{n}" for group in ("seen", "unseen") for n in names]
    if spec.group_column:  # GROUP:METRIC per group value, then gap:METRIC
        values = sorted({k.split(":", 1)[0] for r in rows for k in r if ":" in k and not k.startswith("gap:")})
        names += [f"{v}:{n}" for v in values for n in list(spec.task_class().metrics) + ["count"]]
        names += [f"gap:{n}" for n in spec.task_class().metrics]
    return [n for n in names if any(n in r for r in rows)]


def write_outputs(spec: SweepSpec, rows: list[dict], out: Path) -> None:
    from ..storage import write_atomic, write_json_atomic

    columns = sorted(
        {k for r in rows for k in r},
        key=lambda k: (k not in ("cell", "method", "length", "init", "train_size", "seed", "status"), k),
    )
    _write_csv(out / "results.csv", rows, columns)
    summary = summarise(spec, rows)
    metrics = _metric_names(spec, rows)
    summary_columns = ["method", "length", "init", "train_size", "seeds"] + [
        f"{n}_{s}" for n in metrics + list(NUMBERS) for s in ("mean", "std")
    ]
    _write_csv(out / "summary.csv", summary, summary_columns)
    main = spec.metric or (spec.task_class().default_metric if metrics else None)
    lines = [
        f"# Sweep: {spec.model} on {Path(spec.train).name}",
        "",
        (
            f"{len([r for r in rows if r.get('status') == 'done'])} cells finished, "
            f"{len([r for r in rows if r.get('status') == 'failed'])} failed. Mean ± standard deviation over seeds."
        ),
        "",
        "| method | length | init | train size | seeds | "
        + " | ".join(metrics)
        + " | trainable params | artifact bytes | train s | peak MB |",
        "|" + "---|" * (9 + len(metrics)),
    ]
    for s in summary:
        cells_ = [s["method"], _dash(s["length"]), _dash(s["init"]), str(s["train_size"]), str(s["seeds"])]
        cells_ += [f"{s[f'{n}_mean']:.4f} ± {s[f'{n}_std']:.4f}" if f"{n}_mean" in s else "-" for n in metrics]
        cells_ += [
            f"{s.get('trainable_parameters_mean', 0):,.0f}",
            f"{s.get('artifact_bytes_mean', 0):,.0f}",
            f"{s.get('train_seconds_mean', 0):.1f}",
            f"{s.get('peak_memory_mb_mean', 0):.0f}",
        ]
        lines.append("| " + " | ".join(cells_) + " |")
    from ..tasks.metrics import SMALL_GROUP

    counts = {
        k[: -len(":count")]: int(v)
        for r in rows
        for k, v in r.items()
        if k.endswith(":count") and isinstance(v, (int, float))
    }
    small = {g: n for g, n in counts.items() if n < SMALL_GROUP}
    if small:
        lines += [
            "",
            f"Groups of {spec.group_column} with fewer than {SMALL_GROUP} eval rows (their figures are unstable): "
            + ", ".join(f"{g} ({n})" for g, n in sorted(small.items())),
        ]
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        lines += ["", "Failed cells:", ""] + [f"- {r['cell']}: {r.get('error', '')}" for r in failed]
    write_atomic(out / "summary.md", "\n".join(lines) + "\n")
    plots = plot_sweep(spec, rows, summary, out, main) if main else []
    write_json_atomic(
        out / "summary.json", {"spec": asdict(spec), "summary": summary, "plots": [p.name for p in plots]}
    )
    _write_report(spec, out, lines, plots)


def _dash(value) -> str:
    return "-" if value is None else str(value)


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    import io

    from ..storage import write_atomic

    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


PLOTS = ("metric_vs_train_size", "metric_vs_length", "metric_vs_parameters", "training_curves", "metric_by_group")


class _SweepPlots:
    """The sweep's figures, one colour per method throughout; each figure a method of its own."""

    def __init__(self, summary: list[dict], out: Path, metric: str):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt, self.summary, self.out, self.metric = plt, summary, out, metric
        self.methods = list(dict.fromkeys(s["method"] for s in summary))
        self.palette = plt.get_cmap("tab10")
        self.variants: dict[str, list] = {}
        self.plots: list[Path] = []

    def colour(self, method: str):
        return self.palette(self.methods.index(method) % 10 if method in self.methods else 9)

    def linestyle(self, method: str, *setting) -> str:
        """One colour per method; its settings (length, init) told apart by the line's style."""
        mine = self.variants.setdefault(method, [])
        if setting not in mine:
            mine.append(setting)
        return ("-", "--", ":", "-.")[mine.index(setting) % 4]

    def save(self, fig, name: str, ax=None, ylabel: str | None = None) -> None:
        from ..storage import save_figure

        if ax is not None:
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.out / f"{name}.png"
        save_figure(fig, path)
        self.plt.close(fig)
        self.plots.append(path)

    def series(self, key):
        """(label, [(x, mean, std)]) per method (and length/init other than the x axis)."""
        metric, grouped = self.metric, {}
        for s in self.summary:
            if f"{metric}_mean" not in s or s.get(key) in (None,):
                continue
            parts = [s["method"]] + [
                f"{k}={s[k]}" for k in ("length", "init", "train_size") if k != key and s[k] is not None
            ]
            grouped.setdefault(" ".join(parts), []).append((s[key], s[f"{metric}_mean"], s[f"{metric}_std"]))
        return grouped

    def against(self, name, key, xlabel, log=False, transform=None) -> None:
        """The metric against one setting of the sweep, a line per method and other settings."""
        grouped = self.series(key)
        if len({x for points in grouped.values() for x, _, _ in points}) < 2:
            return  # one value on the x axis: nothing to plot against it
        fig, ax = self.plt.subplots(figsize=(7, 4.5))
        for label, points in sorted(grouped.items()):
            points = sorted((transform(x) if transform else x, y, e) for x, y, e in points)
            xs, ys, es = zip(*points)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label, color=self.colour(label.split()[0]))
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
        self.save(fig, name, ax, f"dev {self.metric}")

    def parameters(self) -> None:
        """Against trainable parameters: one point per method and setting, one colour per method."""
        metric = self.metric
        done = [s for s in self.summary if f"{metric}_mean" in s]
        if not done:
            return
        fig, ax = self.plt.subplots(figsize=(7, 4.5))
        for s in done:
            x, y = max(s.get("trainable_parameters_mean", 1), 1), s[f"{metric}_mean"]
            colour = self.colour(s["method"])
            ax.errorbar(x, y, yerr=s[f"{metric}_std"], marker="o", capsize=3, color=colour, label=s["method"])
            setting = " ".join(str(v) for v in (s["length"], s["init"], s["train_size"]) if v is not None)
            ax.annotate(setting, (x, y), fontsize=6, xytext=(4, 0), textcoords="offset points")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        self.save(fig, "metric_vs_parameters", ax, f"dev {metric}")

    def groups(self, group_column: str | None) -> None:
        """Per group (group_column): the metric for each group value, one bar per method and setting."""
        metric, summary = self.metric, self.summary
        values = sorted(
            {
                k.split(":", 1)[0]
                for s in summary
                for k in s
                if k.endswith(f":{metric}_mean") and not k.startswith("gap:")
            }
        )
        if not values:
            return
        settings = [s for s in summary if any(f"{v}:{metric}_mean" in s for v in values)]
        fig, ax = self.plt.subplots(figsize=(max(6, 1.2 * len(values) * max(1, len(settings)) / 2), 4.5))
        width = 0.8 / max(1, len(settings))
        for i, s in enumerate(settings):
            label = " ".join(str(v) for v in (s["method"], s["length"], s["init"], s["train_size"]) if v is not None)
            ax.bar(
                [x + i * width for x in range(len(values))],
                [s.get(f"{v}:{metric}_mean", 0.0) for v in values],
                width,
                yerr=[s.get(f"{v}:{metric}_std", 0.0) for v in values],
                capsize=2,
                label=label,
                color=self.colour(s["method"]),
            )
        ticks = [x + width * (len(settings) - 1) / 2 for x in range(len(values))]
        ax.set_xticks(ticks, values, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(group_column)
        ax.legend(fontsize=6)
        self.save(fig, "metric_by_group", ax, f"dev {metric}")

    def curves(self, rows: list[dict]) -> None:
        """Training curves: the loss logged every few steps, averaged over seeds, one line per
        setting; one panel per training-set size."""
        curves: dict[tuple, dict[int, list[float]]] = {}
        for row in rows:
            log = self.out / "cells" / row["cell"] / "log.jsonl"
            if row.get("status") != "done" or not log.is_file():
                continue
            key = (str(row["train_size"]), row["method"], row.get("length"), row.get("init"))
            for line in log.read_text().splitlines():
                entry = json.loads(line)
                if "loss" in entry and "step" in entry:
                    curves.setdefault(key, {}).setdefault(entry["step"], []).append(entry["loss"])
        if not curves:
            return
        sizes = list(dict.fromkeys(k[0] for k in curves))
        fig, axes = self.plt.subplots(
            1, len(sizes), figsize=(min(4.5 * len(sizes), 14), 4.2), sharey=True, squeeze=False
        )
        for ax, size in zip(axes[0], sizes):
            for (key_size, method, length, init), by_step in curves.items():
                if key_size != size:
                    continue
                steps = sorted(by_step)
                ax.plot(
                    steps,
                    [statistics.fmean(by_step[t]) for t in steps],
                    linewidth=1.2,
                    color=self.colour(method),
                    linestyle=self.linestyle(method, length, init),
                    label=" ".join(str(v) for v in (method, length, init) if v not in (None, "")),
                )
            ax.set_title(f"train size {size}", fontsize=9)
            ax.set_xlabel("step")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("training loss (mean over seeds)")
        axes[0][-1].legend(fontsize=6)
        self.save(fig, "training_curves")


def plot_sweep(spec: SweepSpec, rows: list[dict], summary: list[dict], out: Path, metric: str) -> list[Path]:
    """The sweep's plots in `out`: the metric against training size, prompt length and trainable
    parameters, per group, and the training curves; a plot this sweep does not draw is removed."""
    for name in PLOTS:  # a plot this sweep no longer draws must not outlive it
        (out / f"{name}.png").unlink(missing_ok=True)
    plots = _SweepPlots(summary, out, metric)
    done = [r["train_examples"] for r in rows if r.get("status") == "done" and "train_examples" in r]
    full = max(done, default=None)
    plots.against(
        "metric_vs_train_size",
        "train_size",
        "training examples per class (full = the whole set)",
        log=True,
        transform=lambda x: full if x == FULL else x,
    )
    plots.against("metric_vs_length", "length", "prompt length (tokens)")
    plots.parameters()
    plots.groups(spec.group_column)
    plots.curves(rows)
    return plots.plots


def _write_report(spec: SweepSpec, out: Path, lines: list[str], plots: list[Path]) -> None:
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")] if table else []
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>prompttune sweep</title>",
        (
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:48%;margin:1%}</style></head><body>"
        ),
        f"<h1>Sweep: {html.escape(spec.model)} on {html.escape(Path(spec.train).name)}</h1>",
        f"<p>{html.escape(lines[2])}</p>",
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>",
    ]
    parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body]
    parts.append("</table>")
    parts += [f"<img src='{p.name}' alt='{p.stem}'>" for p in plots]
    parts.append(f"<h2>Sweep</h2><pre>{html.escape(json.dumps(asdict(spec), indent=2))}</pre></body></html>")
    from ..storage import write_atomic

    write_atomic(out / "report.html", "\n".join(parts))


def spec_from_args(args) -> SweepSpec:
    """A sweep from `--spec FILE`, with any flags given overriding its fields."""
    values = {}
    if args.spec:
        values = asdict(SweepSpec.load(args.spec))
    from ..core.weights import model_name

    flags = {
        "model": model_name(args.model, args.gguf_file),
        "train": args.train,
        "eval": args.eval,
        "task": args.task,
        "metric": args.metric,
        "eval_size": args.eval_size,
        "group_column": args.group_column,
        **{k: getattr(args, k) for k in OWN_TASK_FIELDS},
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    lists = {
        "methods": args.methods,
        "lengths": args.lengths,
        "inits": args.inits,
        "train_sizes": args.train_sizes,
        "seeds": args.seeds,
    }
    for key, raw in lists.items():
        if raw is None:
            continue
        items = [x.strip() for x in raw.split(",") if x.strip()]
        if key in ("lengths", "seeds"):
            items = [int(x) for x in items]
        elif key == "train_sizes":
            items = [x if x == FULL else int(x) for x in items]
        values[key] = items
    train_options = dict(values.get("train_options") or {})
    for key in ("max_steps", "batch_size", "report_to"):
        if getattr(args, key) is not None:
            train_options[key] = getattr(args, key)
    values["train_options"] = train_options
    prompt_options = dict(values.get("prompt_options") or {})
    prompt_options.update({k: getattr(args, k) for k in PLACEMENT if getattr(args, k) is not None})
    values["prompt_options"] = prompt_options
    return SweepSpec.from_dict(values, args.spec or "compare flags")
