"""A human-evaluation study: systems' outputs on a data sample, generated once, and the raters'
judgements of them, all in one SQLite file (`STUDY/study.sqlite`, write-ahead log).

A *system* is a prompt folder (prompttune's or a PEFT adapter), a registry version
(`registry:NAME@VERSION`), `@bare` (the frozen model reading each source exactly as the first
prompt's task writes it, without the learned prompt), `@reference` (the data's first reference) or
`outputs:FILE` (JSON lines as `prompttune generate` prints them). Each sampled source is an *item*.
A rater judges whole items: for each, one *task* per pair of systems (which output is better, or a
tie) and/or one per system (a Likert rating of each criterion). Left and right and the order of the
tasks are drawn per rater when the study is made and stored, so a rater who stops and comes back
sees the same study. `overlap` items are given to every rater, for agreement; each rater's other
items are theirs alone.

A judgement is one row, inserted in its own transaction when the rater gives it; the task is its
primary key, so a reload, a second tab or two raters at once can neither lose one nor record one
twice.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import sqlite3
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

from ..config import ConfigBase, check
from ..errors import ConfigError, DataError, PromptTuneError
from ..options import Endpoint, comma_list
from ..storage import fsync_dir, sha256_file, utc_timestamp

STUDY_FILE = "study.sqlite"
MODES = ("pairwise", "rating", "both")
PREFERENCES = ("left", "tie", "right")
BARE, REFERENCE = "@bare", "@reference"
REGISTRY_PREFIX, OUTPUTS_PREFIX = "registry:", "outputs:"

SCHEMA = """
CREATE TABLE study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE systems (position INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, given TEXT NOT NULL,
                      details TEXT NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, row TEXT NOT NULL, source TEXT NOT NULL, reference TEXT);
CREATE TABLE outputs (item INTEGER NOT NULL REFERENCES items(id), system TEXT NOT NULL REFERENCES systems(name),
                      text TEXT NOT NULL, PRIMARY KEY (item, system));
CREATE TABLE raters (name TEXT PRIMARY KEY, token TEXT UNIQUE NOT NULL);
CREATE TABLE tasks (id INTEGER PRIMARY KEY, rater TEXT NOT NULL REFERENCES raters(name), position INTEGER NOT NULL,
                    kind TEXT NOT NULL CHECK (kind IN ('pair', 'rate')), item INTEGER NOT NULL REFERENCES items(id),
                    left_system TEXT NOT NULL REFERENCES systems(name), right_system TEXT REFERENCES systems(name),
                    UNIQUE (rater, position));
CREATE TABLE judgements (task INTEGER PRIMARY KEY REFERENCES tasks(id), rater TEXT NOT NULL REFERENCES raters(name),
                         preference TEXT CHECK (preference IN ('left', 'tie', 'right')), ratings TEXT,
                         given TEXT NOT NULL, seconds REAL);
"""


class StudyError(PromptTuneError):
    """A study that cannot be made or read as asked."""


class JudgementRefused(PromptTuneError):
    """A judgement that was not recorded, and why; `status` is the HTTP status that says so."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Design(ConfigBase):
    """What a study asks and of whom."""

    mode: str = field(default="pairwise", metadata={"choices": MODES})
    """pairwise (which of two outputs is better, ties allowed), rating (each output on each
    criterion, 1 to `scale`) or both."""
    criteria: tuple[str, ...] = field(
        default=("fluency", "relevance", "faithfulness"), metadata={"parse": comma_list, "metavar": "A,B,..."}
    )
    """What rating tasks ask about, each on its own scale."""
    scale: int = 5
    """Points of the Likert scale (1 = worst; at most 9, one key each)."""
    raters: tuple[str, ...] = field(
        default=("rater-1", "rater-2"), metadata={"parse": comma_list, "metavar": "A,B,..."}
    )
    """The raters' names; each also gets a secret token for their link."""
    items: int | None = None
    """Sources sampled from the data (None: all of them)."""
    per_rater: int | None = None
    """Items each rater judges (None: every item)."""
    overlap: int | None = None
    """Items every rater judges, for agreement (None: all of each rater's items when `per_rater` is
    None, else a fifth of them, at least one)."""
    seed: int = 0
    """Draws the sample, each rater's items, their order, and left and right."""

    def __post_init__(self):
        check(self.mode in MODES, "mode", f"one of {', '.join(MODES)}; got {self.mode!r}")
        check(
            isinstance(self.criteria, tuple)
            and all(isinstance(c, str) and c.strip() and c.strip() == c for c in self.criteria),
            "criteria",
            "names of criteria",
        )
        check(
            len(set(self.criteria)) == len(self.criteria), "criteria", f"a criterion is named twice in {self.criteria}"
        )
        check(
            self.mode == "pairwise" or self.criteria,
            "criteria",
            f"mode {self.mode} rates outputs on criteria; name one",
        )
        check(isinstance(self.scale, int) and 2 <= self.scale <= 9, "scale", f"2 to 9 points; got {self.scale!r}")
        check(
            isinstance(self.raters, tuple)
            and self.raters
            and all(isinstance(r, str) and r.strip() == r and r for r in self.raters),
            "raters",
            "at least one name",
        )
        check(len(set(self.raters)) == len(self.raters), "raters", f"a rater is named twice in {self.raters}")
        for name in ("items", "per_rater"):
            value = getattr(self, name)
            check(value is None or (isinstance(value, int) and value >= 1), name, f"a positive number; got {value!r}")
        check(
            self.overlap is None or (isinstance(self.overlap, int) and self.overlap >= 0),
            "overlap",
            f"a number of items, 0 or more; got {self.overlap!r}",
        )
        check(
            self.overlap is None or self.per_rater is None or self.overlap <= self.per_rater,
            "overlap",
            f"{self.overlap} shared items cannot exceed the {self.per_rater} items per rater",
        )


@dataclass
class System:
    name: str
    #: What `--system NAME=...` gave: a prompt folder, registry:NAME@VERSION, @bare, @reference or
    #: outputs:FILE.
    given: str
    kind: str  # prompt | bare | reference | outputs
    path: str | None = None
    registry: str | None = None
    spec: str | None = None  # NAME@VERSION in the registry
    digest: str | None = None


def parse_systems(specs: list[str], registry: str | None = None) -> list[System]:
    """NAME=WHAT for each system, checked: names unique, prompts and files that exist."""
    from ..artifacts.registry import NAME

    systems = []
    for spec in specs:
        name, sep, given = spec.partition("=")
        name, given = name.strip(), given.strip()
        if not sep or not name or not given:
            raise ConfigError(
                f"--system {spec!r}: expected NAME=SYSTEM (a prompt folder, registry:NAME@VERSION, "
                f"{BARE}, {REFERENCE} or outputs:FILE)"
            )
        if not NAME.fullmatch(name):
            raise ConfigError(f"--system {spec!r}: a system's name is 1-128 letters, digits, '.', '_' and '-'")
        if any(s.name == name for s in systems):
            raise ConfigError(f"--system: two systems are named {name!r}")
        if given == BARE:
            systems.append(System(name, given, "bare"))
        elif given == REFERENCE:
            systems.append(System(name, given, "reference"))
        elif given.startswith(OUTPUTS_PREFIX):
            path = given[len(OUTPUTS_PREFIX) :]
            if not Path(path).is_file():
                raise ConfigError(f"--system {spec!r}: no such file {path}")
            systems.append(System(name, given, "outputs", path=path, digest=sha256_file(path)))
        elif given.startswith(REGISTRY_PREFIX):
            from ..artifacts.registry import Registry

            store = Registry(registry)
            record = store.show(given[len(REGISTRY_PREFIX) :])
            path = store.checkout(f"{record['name']}@{record['version']}")
            systems.append(
                System(
                    name,
                    given,
                    "prompt",
                    path=str(path),
                    registry=str(store.root),
                    spec=f"{record['name']}@{record['version']}",
                    digest=record["digest"],
                )
            )
        else:
            if not Path(given).is_dir():
                raise ConfigError(
                    f"--system {spec!r}: {given} is not a prompt folder (nor {BARE}, {REFERENCE}, "
                    "registry:NAME@VERSION or outputs:FILE)"
                )
            systems.append(System(name, given, "prompt", path=given))
    if len(systems) < 2:
        raise ConfigError(f"a study compares at least two systems; got {len(systems)}")
    if any(s.kind == "bare" for s in systems) and not any(s.kind == "prompt" for s in systems):
        raise ConfigError(f"{BARE}: the bare model reads sources as a prompt's task writes them; add a prompt system")
    return systems


@dataclass(frozen=True)
class Item:
    row: str  # where in the data file ("FILE, row N")
    source: str
    reference: str | None


def read_items(data: str, source_column: str, target_column: str | None, need_reference: bool) -> list[Item]:
    """One item per distinct source, with its first reference (E2E lists a source once per
    reference)."""
    from ..tasks.data import group_references, load_generation_examples

    examples = group_references(
        load_generation_examples(data, source_column, target_column, require_targets=need_reference)
    )
    if not examples:
        raise DataError(f"{data}: no rows")
    return [Item(e.origin, e.text, e.targets[0] if e.targets else None) for e in examples]


def _read_outputs(system: System, items: list[Item]) -> list[str]:
    """The output for each item from a JSON-lines file: {"source": ..., "generations": [text, ...]}
    (what `prompttune generate` prints) or {"source": ..., "output": text}."""
    found: dict[str, str] = {}
    with open(system.path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{system.path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("source"), str):
                raise DataError(f"{where}: expected an object with a text field 'source'")
            if "generations" in record:
                texts = record["generations"]
                if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                    raise DataError(f"{where}, field 'generations': expected a non-empty list of texts")
                text = texts[0]
            elif isinstance(record.get("output"), str):
                text = record["output"]
            else:
                raise DataError(f"{where}: expected a field 'generations' (a list of texts) or 'output' (a text)")
            found.setdefault(record["source"].strip(), text.strip())
    missing = [item for item in items if item.source not in found]
    if missing:
        raise DataError(
            f"{system.path}: no output for the source of {missing[0].row} ({len(missing)} of the "
            f"{len(items)} sampled sources have none)"
        )
    return [found[item.source] for item in items]


def generate_outputs(
    systems: list[System],
    items: list[Item],
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
    seed: int = 0,
    **options,
) -> dict[str, list[str]]:
    """Every system's output for every item: prompts decode on one shared frozen model (a method
    that changes the model's weights gets its own copy); `options` go to `generate` for all of
    them alike (max_new_tokens, num_beams, do_sample, top_p, temperature)."""
    import torch

    from ..api import load_backbone, prompt_meta
    from ..artifacts.artifact import load_prompt
    from ..methods.base import method_class
    from ..model import PromptModel
    from ..tasks import task_class
    from ..tasks.data import Example

    outputs: dict[str, list[str]] = {}
    examples = [Example(text=item.source, origin=item.row) for item in items]

    def generated(prompt) -> list[str]:
        torch.manual_seed(seed)
        return [
            t.strip()
            for t in prompt.task.generate_texts(
                prompt, examples, batch_size=batch_size, num_return_sequences=1, **options
            )
        ]

    shared = None
    first = None  # (task config, base model) of the first prompt: what the bare model reads
    for system in (s for s in systems if s.kind == "prompt"):
        meta = prompt_meta(system.path)
        if task_class(meta["task"]).endpoint is not Endpoint.GENERATE:
            raise ConfigError(
                f"system {system.name}: {system.path} is a {meta['task']} prompt; a study compares generated texts"
            )
        base = model or meta["base_model"]["name_or_path"]
        if not method_class(meta["method"]).shares_backbone:
            backbone = load_backbone(base, device=device, dtype=dtype)
        else:
            shared = shared if shared is not None else load_backbone(base, device=device, dtype=dtype)
            backbone = shared
        loaded = load_prompt(system.path, backbone=backbone)
        first = first or (loaded.task.config, base)
        outputs[system.name] = generated(loaded)
    for system in systems:
        if system.kind == "bare":
            if shared is None:  # never the weights a fine-tuned system brought
                shared = load_backbone(first[1], device=device, dtype=dtype)
            outputs[system.name] = generated(PromptModel.create(shared, "hard_prompt", first[0]))
        elif system.kind == "reference":
            outputs[system.name] = [item.reference for item in items]
        elif system.kind == "outputs":
            outputs[system.name] = _read_outputs(system, items)
    return {s.name: outputs[s.name] for s in systems}


def assign(design: Design, items: int, systems: list[str]) -> dict[str, list[dict]]:
    """Each rater's tasks in the order they will see them: (kind, item, left, right)."""
    per_rater = design.per_rater or items
    overlap = (
        design.overlap
        if design.overlap is not None
        else (per_rater if design.per_rater is None else max(1, per_rater // 5))
    )
    overlap = min(overlap, per_rater)
    needed = overlap + len(design.raters) * (per_rater - overlap)
    if needed > items:
        raise ConfigError(
            f"{len(design.raters)} raters with {per_rater} items each, {overlap} of them shared, need "
            f"{needed} items; the study has {items} (sample more with --items, or lower --per-rater or "
            "raise --overlap)"
        )
    rng = random.Random(design.seed)
    order = list(range(items))
    rng.shuffle(order)
    pairs = list(combinations(systems, 2)) if design.mode != "rating" else []
    rated = list(systems) if design.mode != "pairwise" else []
    plan = {}
    for r, rater in enumerate(design.raters):
        own = order[:overlap] + order[overlap + r * (per_rater - overlap) : overlap + (r + 1) * (per_rater - overlap)]
        draw = random.Random(f"{design.seed}/{rater}")
        tasks = []
        for item in own:
            for a, b in pairs:
                left, right = (a, b) if draw.random() < 0.5 else (b, a)
                tasks.append({"kind": "pair", "item": item, "left": left, "right": right})
            tasks += [{"kind": "rate", "item": item, "left": s, "right": None} for s in rated]
        draw.shuffle(tasks)
        plan[rater] = tasks
    return plan


def create_study(
    folder: str | os.PathLike,
    data: str,
    systems: list[System],
    design: Design,
    source_column: str | None = None,
    target_column: str | None = None,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
    **generation,
) -> dict:
    """Make the study in `folder` (new, or one without a study): sample the items, generate every
    system's outputs once, draw each rater's tasks, and write it all as one file, atomically. Returns
    what was made, with each rater's token."""
    folder = Path(folder)
    target = folder / STUDY_FILE
    if target.exists():
        raise StudyError(
            f"{folder}: already holds a study ({STUDY_FILE}); a study is never overwritten, so make "
            "the new one in another folder"
        )
    columns = _columns(systems, source_column, target_column)
    need_reference = any(s.kind == "reference" for s in systems)
    if need_reference and columns["target"] is None:
        raise ConfigError(f"{REFERENCE}: name the data's reference column with --target-column")
    items = read_items(data, columns["source"], columns["target"], need_reference)
    if design.items is not None:
        if design.items > len(items):
            raise ConfigError(f"--items {design.items}: {data} has {len(items)} distinct sources")
        items = random.Random(design.seed).sample(items, design.items)
    plan = assign(design, len(items), [s.name for s in systems])  # checked before anything is generated
    outputs = generate_outputs(
        systems, items, model=model, device=device, dtype=dtype, batch_size=batch_size, seed=design.seed, **generation
    )
    study_id = secrets.token_hex(8)
    tokens = {rater: secrets.token_urlsafe(12) for rater in design.raters}
    meta = {
        "id": study_id,
        "created": utc_timestamp(),
        "data": str(data),
        "data_sha256": _data_digest(data),
        "columns": columns,
        "design": design.to_dict(),
        "generation": generation,
        "model": model,
        "prompttune": __import__("prompttune").__version__,
    }
    _write_study(folder, meta, systems, items, outputs, tokens, plan)
    return {
        "study": str(folder),
        "id": study_id,
        "items": len(items),
        "systems": [s.name for s in systems],
        "mode": design.mode,
        "raters": {r: {"token": tokens[r], "tasks": len(plan[r])} for r in design.raters},
    }


def _write_study(folder: Path, meta: dict, systems: list, items: list, outputs: dict, tokens: dict, plan: dict) -> None:
    """The study's one SQLite file, written beside its place and linked there when complete (never
    over a study that appeared meanwhile)."""
    target = folder / STUDY_FILE
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{STUDY_FILE}.make-{os.getpid()}"
    staging.unlink(missing_ok=True)
    db = sqlite3.connect(staging, isolation_level=None)
    try:
        db.executescript(SCHEMA)
        db.execute("BEGIN")
        db.executemany("INSERT INTO study VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        for position, system in enumerate(systems):
            details = {k: v for k, v in asdict(system).items() if k not in ("name", "given") and v is not None}
            db.execute(
                "INSERT INTO systems VALUES (?, ?, ?, ?)", (position, system.name, system.given, json.dumps(details))
            )
        db.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [(i, item.row, item.source, item.reference) for i, item in enumerate(items)],
        )
        db.executemany(
            "INSERT INTO outputs VALUES (?, ?, ?)",
            [(i, name, texts[i]) for name, texts in outputs.items() for i in range(len(items))],
        )
        db.executemany("INSERT INTO raters VALUES (?, ?)", tokens.items())
        for rater, tasks in plan.items():
            db.executemany(
                "INSERT INTO tasks (rater, position, kind, item, left_system, right_system) VALUES (?, ?, ?, ?, ?, ?)",
                [(rater, p, t["kind"], t["item"], t["left"], t["right"]) for p, t in enumerate(tasks)],
            )
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode=WAL")  # kept in the file: the server's readers never wait
        db.close()
        with open(staging, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(staging, target)  # fails, rather than replaces, if a study appeared meanwhile
        except FileExistsError:
            raise StudyError(f"{folder}: a study was made there meanwhile; it is left as it is") from None
        fsync_dir(folder)
    finally:
        db.close()  # closing twice is harmless
        staging.unlink(missing_ok=True)


def _columns(systems: list[System], source: str | None, target: str | None) -> dict:
    """The data's columns: as given, else those the first prompt was trained with."""
    from ..api import prompt_meta

    saved = {}
    first = next((s for s in systems if s.kind == "prompt"), None)
    if first is not None:
        saved = prompt_meta(first.path).get("columns") or {}
    source = source or saved.get("source")
    if source is None:
        raise ConfigError("--source-column: name the data's source column (no prompt system says which it is)")
    return {"source": source, "target": target or saved.get("target")}


def _data_digest(data: str) -> str | None:
    return sha256_file(data) if Path(data).is_file() else None


# A rater's current task: the first of theirs, in their order, not yet judged.
_CURRENT = (
    "WHERE tasks.rater = ? AND NOT EXISTS (SELECT 1 FROM judgements WHERE judgements.task = tasks.id) "
    "ORDER BY tasks.position LIMIT 1"
)


class Study:
    """A study on disk, as its server and report read and write it. Every method opens its own
    connection, so one Study serves any number of threads."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / STUDY_FILE
        if not self.path.is_file():
            raise StudyError(
                f"{self.folder}: no study here (no {STUDY_FILE}); make one with `prompttune human-eval create`"
            )
        with self._connect() as db:
            try:
                self.meta = {r["key"]: json.loads(r["value"]) for r in db.execute("SELECT key, value FROM study")}
                self.systems = [r["name"] for r in db.execute("SELECT name FROM systems ORDER BY position")]
            except sqlite3.DatabaseError as error:
                raise StudyError(f"{self.path}: not a study file ({error})") from None
        self.design = Design.from_dict(self.meta["design"], where=str(self.path))
        self.id = self.meta["id"]

    def _connect(self) -> _Connection:
        return _Connection(self.path)

    # ---- raters -------------------------------------------------------------------------------

    def rater(self, token: str | None = None, name: str | None = None) -> str | None:
        """The rater with this token (compared in constant time) or name; None if none."""
        with self._connect() as db:
            rows = db.execute("SELECT name, token FROM raters").fetchall()
        for row in rows:
            if token is not None and secrets.compare_digest(row["token"].encode(), token.encode()):
                return row["name"]
            if name is not None and row["name"] == name:
                return row["name"]
        return None

    def raters(self) -> list[dict]:
        with self._connect() as db:
            return [
                {"name": r["name"], "token": r["token"], "tasks": r["tasks"], "done": r["done"]}
                for r in db.execute(
                    "SELECT raters.name, raters.token, COUNT(tasks.id) AS tasks, COUNT(judgements.task) AS done FROM raters "
                    "LEFT JOIN tasks ON tasks.rater = raters.name LEFT JOIN judgements ON judgements.task = tasks.id "
                    "GROUP BY raters.name ORDER BY raters.name"
                )
            ]

    # ---- one rater's way through ----------------------------------------------------------------

    def next_task(self, rater: str) -> dict:
        """The first of the rater's tasks not yet judged, as the page shows it (never a system's
        name), with progress; `task` is None when every one is done."""
        with self._connect() as db:
            total, done = db.execute(
                "SELECT COUNT(*), COUNT(judgements.task) FROM tasks LEFT JOIN judgements ON judgements.task = tasks.id "
                "WHERE tasks.rater = ?",
                (rater,),
            ).fetchone()
            row = db.execute(
                "SELECT tasks.*, items.source FROM tasks JOIN items ON items.id = tasks.item " + _CURRENT, (rater,)
            ).fetchone()
            out = {"study": self.id, "rater": rater, "total": total, "done": done, "task": None}
            if row is None:
                return out
            text = lambda system: db.execute(
                "SELECT text FROM outputs WHERE item = ? AND system = ?", (row["item"], system)
            ).fetchone()["text"]
            shown = {"id": row["id"], "kind": row["kind"], "source": row["source"]}
            if row["kind"] == "pair":
                shown.update(left=text(row["left_system"]), right=text(row["right_system"]))
            else:
                shown.update(
                    output=text(row["left_system"]), criteria=list(self.design.criteria), scale=self.design.scale
                )
            out["task"] = shown
            return out

    def submit(
        self,
        rater: str,
        study: str,
        task: int,
        preference: str | None = None,
        ratings: dict | None = None,
        seconds: float | None = None,
    ) -> dict:
        """Record one judgement, or refuse it (JudgementRefused) and change nothing: a task of
        another study or rater, one already judged (a double submit), one that is not the rater's
        next (a page left open while the study moved on elsewhere), or values that do not fit."""
        if study != self.id:
            raise JudgementRefused("this page belongs to another study; nothing was recorded: reload it", 409)
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: the checks and the insert see one state
            try:
                row = db.execute("SELECT * FROM tasks WHERE id = ?", (task,)).fetchone()
                if row is None or row["rater"] != rater:
                    raise JudgementRefused(f"task {task} is not one of {rater}'s tasks; nothing was recorded", 404)
                if db.execute("SELECT 1 FROM judgements WHERE task = ?", (task,)).fetchone():
                    raise JudgementRefused(
                        f"task {task} was already judged (a second submit, or another tab); the "
                        "first judgement stands and nothing was changed",
                        409,
                    )
                current = db.execute("SELECT tasks.id FROM tasks " + _CURRENT, (rater,)).fetchone()
                if current["id"] != task:
                    raise JudgementRefused(
                        f"task {task} is not the task {rater} is on (this page is out of date); "
                        "nothing was recorded: reload to continue",
                        409,
                    )
                values = self._values(row["kind"], preference, ratings)
                if seconds is not None and not (isinstance(seconds, (int, float)) and 0 <= seconds < 1e7):
                    raise JudgementRefused(
                        f"seconds: a duration in seconds; got {seconds!r}; nothing was recorded", 422
                    )
                db.execute(
                    "INSERT INTO judgements VALUES (?, ?, ?, ?, ?, ?)",
                    (task, rater, values["preference"], values["ratings"], utc_timestamp(), seconds),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return {"recorded": task}

    def _values(self, kind: str, preference, ratings) -> dict:
        """The judgement's columns, or a 422 when the values do not fit the task."""
        if kind == "pair":
            if ratings is not None or preference not in PREFERENCES:
                raise JudgementRefused(
                    f"this task asks which output is better: preference is one of "
                    f"{', '.join(PREFERENCES)}; got preference={preference!r}"
                    + (" and ratings" if ratings is not None else "")
                    + "; nothing was recorded",
                    422,
                )
            return {"preference": preference, "ratings": None}
        criteria, scale = self.design.criteria, self.design.scale
        if preference is not None or not isinstance(ratings, dict) or set(ratings) != set(criteria):
            raise JudgementRefused(
                f"this task asks for ratings of {', '.join(criteria)}; got "
                f"{sorted(ratings) if isinstance(ratings, dict) else ratings!r}"
                + (" and a preference" if preference is not None else "")
                + "; nothing was recorded",
                422,
            )
        for criterion, value in ratings.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= scale:
                raise JudgementRefused(
                    f"ratings.{criterion}: a whole number from 1 to {scale}; got {value!r}; nothing was recorded", 422
                )
        return {"preference": None, "ratings": json.dumps({c: ratings[c] for c in criteria})}

    # ---- what the report reads ------------------------------------------------------------------

    def judgements(self) -> list[dict]:
        """Every judgement with its task: rater, item, kind, the systems shown left and right (or
        the one rated), and the preference or ratings."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT judgements.*, tasks.kind, tasks.item, tasks.left_system, tasks.right_system, tasks.position "
                "FROM judgements JOIN tasks ON tasks.id = judgements.task ORDER BY judgements.rater, tasks.position"
            )
            return [
                {
                    "task": r["task"],
                    "rater": r["rater"],
                    "item": r["item"],
                    "kind": r["kind"],
                    "left": r["left_system"],
                    "right": r["right_system"],
                    "preference": r["preference"],
                    "ratings": json.loads(r["ratings"]) if r["ratings"] else None,
                    "given": r["given"],
                    "seconds": r["seconds"],
                }
                for r in rows
            ]

    def system_details(self) -> list[dict]:
        with self._connect() as db:
            return [
                # Studies made before the column was named `given` call it `source`. (A Row's `in`
                # looks among its values: its keys are asked for.)
                {
                    "name": r["name"],
                    "given": r["given" if "given" in r.keys() else "source"],  # noqa: SIM118
                    **json.loads(r["details"]),
                }
                for r in db.execute("SELECT * FROM systems ORDER BY position")
            ]

    def items(self) -> list[dict]:
        with self._connect() as db:
            outputs: dict[int, dict] = {}
            for r in db.execute("SELECT * FROM outputs"):
                outputs.setdefault(r["item"], {})[r["system"]] = r["text"]
            return [
                {
                    "item": r["id"],
                    "row": r["row"],
                    "source": r["source"],
                    "reference": r["reference"],
                    "outputs": outputs.get(r["id"], {}),
                }
                for r in db.execute("SELECT * FROM items ORDER BY id")
            ]


class _Connection:
    """A connection in autocommit mode (transactions are begun explicitly), closed on exit."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA synchronous=FULL")  # a judgement acknowledged is a judgement on disk
        self.db.execute("PRAGMA foreign_keys=ON")

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()
