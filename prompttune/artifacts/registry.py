"""A local, versioned registry of prompt artifacts.

A registry is a folder:

    catalog.sqlite      prompts, their versions and aliases (SQLite, write-ahead log)
    blobs/ab/abcd...    every file of every version, stored once under its sha256
    checkouts/          versions unpacked for loading (`checkout`), verified each time they are used
    .lock               held by whoever changes the registry

Versions are immutable: `push` stores a new one (1, 2, ...) and never changes an old one. Each
records what the artifact was made from and for: the base model's fingerprint, the training data's
sha256, the method, task and training configs, the dev metrics, when it was made and pushed, and its
lineage (the registered version it was initialised from, when there is one). Aliases
(`NAME@production`) point at versions and move; `NAME` and `NAME@latest` mean the newest version.
Evaluations made later (a human-evaluation study's result) are attached to a version beside it,
never changing what it holds.

Every change happens under one lock file and one SQLite transaction: the files are written to the
blob store first, the catalog row last, so a version is either fully there or not there at all, and
concurrent pushes from several processes each get their own version number. Readers never wait.

Every file is checked against its sha256 whenever it is read: a damaged stored file is reported as a
damaged store (`StoreDamaged`) and replaced by pushing the same artifact again; a damaged checkout is
made again from the store. `pull` writes only the artifact's own files and never removes anything
else from the folder it writes to.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import PromptTuneError, quoted
from ..storage import (
    Transaction,
    file_mode,
    fsync_dir,
    make_dir_like_user,
    remove_stale,
    replace_dir_atomic,
    sha256_file,
    utc_timestamp,
    write_atomic,
)

FILES = ("prompt.json", "prompt.safetensors", "training_state.safetensors", "metrics.json")
REQUIRED = ("prompt.json", "prompt.safetensors")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VERSION = re.compile(r"[0-9]{1,18}")  # ASCII digits only, and within SQLite's integers
LATEST = "latest"
INCOMING = ".incoming-"

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    pushed TEXT NOT NULL,
    created TEXT,
    method TEXT NOT NULL,
    task TEXT NOT NULL,
    base_model TEXT NOT NULL,
    data_sha256 TEXT,
    config TEXT NOT NULL,
    metrics TEXT,
    files TEXT NOT NULL,
    digest TEXT NOT NULL,
    parent TEXT,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS versions_digest ON versions (digest);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS evaluations (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    recorded TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (name, version, kind, key)
);
"""


class RegistryError(PromptTuneError):
    """A registry operation that cannot be done: what was asked and why."""


class BadSpec(RegistryError):
    """A prompt named in a way no prompt can be (not a name, version or alias): the request's fault."""


class StoreDamaged(RegistryError):
    """A stored file does not match its sha256: the registry, not the request, is at fault."""


def default_root() -> Path:
    return Path(os.environ.get("PROMPTTUNE_REGISTRY", Path.home() / ".prompttune" / "registry"))


def parse_spec(spec: str) -> tuple[str, str]:
    """ "NAME", "NAME@3", "NAME@production", "NAME@latest" -> (name, version or alias)."""
    if not isinstance(spec, str):
        raise BadSpec(f"{spec!r}: a prompt is named by a string")
    name, _, ref = spec.partition("@")
    if not NAME.fullmatch(name):
        raise BadSpec(
            f"{quoted(spec)}: a prompt name is 1-128 letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )
    ref = ref or LATEST
    if not VERSION.fullmatch(ref) and not NAME.fullmatch(ref):
        raise BadSpec(f"{quoted(spec)}: after '@' comes a version number (up to 18 digits) or an alias")
    return name, ref


class Registry:
    def __init__(self, root: str | os.PathLike | None = None, lock_timeout: float = 120.0):
        self.root = Path(root) if root is not None else default_root()
        self.lock_timeout = lock_timeout
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "blobs").mkdir(exist_ok=True)
        self.catalog = self.root / "catalog.sqlite"
        with FileLock(str(self.root / ".lock"), timeout=lock_timeout):
            db = self._connect()
            try:
                db.execute("PRAGMA journal_mode=WAL")  # kept in the file: readers never wait for a writer
            finally:
                db.close()
        with self._writing() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    # ---- plumbing -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.catalog, timeout=self.lock_timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        return db

    @contextmanager
    def _writing(self):
        """The registry's write lock and one transaction: committed if the block ends normally."""
        try:
            lock = FileLock(str(self.root / ".lock"), timeout=self.lock_timeout)
            lock.acquire()
        except Timeout:
            raise RegistryError(
                f"{self.root}: another process has held the registry lock for {self.lock_timeout:.0f} s"
            ) from None
        db = None
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db is not None and db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            if db is not None:
                db.close()
            lock.release()

    @contextmanager
    def _reading(self):
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    def _blob(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / digest

    def _store_blob(self, source: Path) -> str:
        """Store a file under its sha256 (under the write lock). A stored copy that no longer
        matches its sha256 is replaced: pushing the same artifact again repairs the store."""
        digest = sha256_file(source)
        target = self._blob(digest)
        if target.is_file() and sha256_file(target) == digest:
            return digest

        def copy(out) -> None:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)

        def unchanged(tmp: Path) -> None:
            if sha256_file(tmp) != digest:
                raise RegistryError(f"{source}: changed while it was being pushed")

        write_atomic(target, copy, mode=0o444, prefix=INCOMING, check=unchanged)
        return digest

    # ---- reading ------------------------------------------------------------------------------

    def resolve(self, spec: str, db: sqlite3.Connection | None = None) -> tuple[str, int]:
        """(name, version) that `spec` means now."""
        name, ref = parse_spec(spec)
        if db is None:
            with self._reading() as reading:
                return self.resolve(spec, reading)
        if ref == LATEST:
            row = db.execute("SELECT MAX(version) AS v FROM versions WHERE name = ?", (name,)).fetchone()
            if row["v"] is None:
                raise RegistryError(f"{spec}: no prompt named {name!r} in {self.root}")
            return name, int(row["v"])
        if VERSION.fullmatch(ref):
            row = db.execute("SELECT version FROM versions WHERE name = ? AND version = ?", (name, int(ref))).fetchone()
            if row is None:
                known = [
                    r["version"]
                    for r in db.execute("SELECT version FROM versions WHERE name = ? ORDER BY version", (name,))
                ]
                raise RegistryError(
                    f"{spec}: {name!r} has no version {ref}"
                    + (f"; it has {known}" if known else f"; there is no prompt named {name!r}")
                )
            return name, int(ref)
        row = db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, ref)).fetchone()
        if row is None:
            raise RegistryError(f"{spec}: {name!r} has no alias {ref!r}")
        return name, int(row["version"])

    def show(self, spec: str) -> dict:
        """Everything recorded about one version, with the aliases pointing at it."""
        with self._reading() as db:
            name, version = self.resolve(spec, db)
            row = db.execute("SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)).fetchone()
            aliases = [
                r["alias"]
                for r in db.execute(
                    "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias", (name, version)
                )
            ]
            evaluations = [
                {"kind": r["kind"], "key": r["key"], "recorded": r["recorded"], **json.loads(r["result"])}
                for r in db.execute(
                    "SELECT * FROM evaluations WHERE name = ? AND version = ? ORDER BY recorded, kind, key",
                    (name, version),
                )
            ]
        return {**_record(row, aliases), "evaluations": evaluations}

    def attach(self, spec: str, kind: str, key: str, result: dict) -> dict:
        """Attach an evaluation made after the push (`kind` says what made it, e.g. human_eval;
        `key` which one, e.g. a study's id) to a version; attaching the same kind and key again
        replaces that evaluation, and nothing else about the version changes."""
        if not isinstance(result, dict):
            raise RegistryError(f"attach {kind} {key}: the result is a JSON object")
        payload = json.dumps(result)
        with self._writing() as db:
            name, version = self.resolve(spec, db)
            db.execute(
                "INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?, ?, ?)",
                (name, version, kind, key, utc_timestamp(), payload),
            )
        return {"name": name, "version": version, "kind": kind, "key": key}

    def list(self, name: str | None = None) -> list[dict]:
        """Without a name: one entry per prompt (its latest version, count, aliases). With one:
        every version of it, oldest first."""
        with self._reading() as db:
            if name is not None:
                parse_spec(name)
                rows = db.execute("SELECT * FROM versions WHERE name = ? ORDER BY version", (name,)).fetchall()
                if not rows:
                    raise RegistryError(f"no prompt named {name!r} in {self.root}")
                aliases = {}
                for r in db.execute("SELECT alias, version FROM aliases WHERE name = ?", (name,)):
                    aliases.setdefault(r["version"], []).append(r["alias"])
                return [_record(r, sorted(aliases.get(r["version"], []))) for r in rows]
            out = []
            for r in db.execute(
                "SELECT name, MAX(version) AS latest, COUNT(*) AS versions FROM versions GROUP BY name ORDER BY name"
            ):
                latest = db.execute(
                    "SELECT method, task, pushed FROM versions WHERE name = ? AND version = ?", (r["name"], r["latest"])
                ).fetchone()
                aliases = {
                    a["alias"]: a["version"]
                    for a in db.execute(
                        "SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (r["name"],)
                    )
                }
                out.append(
                    {
                        "name": r["name"],
                        "latest": r["latest"],
                        "versions": r["versions"],
                        "method": latest["method"],
                        "task": latest["task"],
                        "pushed": latest["pushed"],
                        "aliases": aliases,
                    }
                )
            return out

    def checkout(self, spec: str) -> Path:
        """A folder holding the version's files, made once per version and reused; each file is
        checked against its sha256 every time (a damaged checkout is made again from the store).
        What `load_prompt` and the server read. Safe with any number of processes at once."""
        record = self.show(spec)
        target = self.root / "checkouts" / record["name"] / str(record["version"])
        if self._intact(target, record["files"]):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(target.parent, f".{target.name}.make-")
        staging = self._staged_copy(record, target.parent, f".{target.name}.make-{os.getpid()}-")
        try:
            os.rename(staging, target)  # atomic; fails if another process made it first
            fsync_dir(target.parent)
            return target
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                shutil.rmtree(staging, ignore_errors=True)
                raise
        if self._intact(target, record["files"]):  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)
            return target
        replace_dir_atomic(staging, target)  # the damaged one, swapped for a good one in one step
        return target

    @staticmethod
    def _intact(folder: Path, files: dict) -> bool:
        try:
            present = {p.name for p in folder.iterdir()}
        except OSError:
            return False
        return present == set(files) and all(sha256_file(folder / name) == digest for name, digest in files.items())

    def _staged_copy(self, record: dict, parent: Path, prefix: str) -> Path:
        """A new folder in `parent` holding the version's files, each checked against its sha256."""
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
        try:
            for filename in record["files"]:
                self._copy_verified(record, filename, staging / filename)
            make_dir_like_user(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def _copy_verified(self, record: dict, filename: str, target: Path) -> None:
        """Copy one stored file of a version to `target`, checked against its sha256."""
        digest = record["files"][filename]
        blob = self._blob(digest)
        if not blob.is_file():
            raise StoreDamaged(
                f"{record['name']}@{record['version']}: file {filename} ({digest}) is missing "
                f"from {self.root / 'blobs'}; push the artifact again to restore it"
            )
        shutil.copyfile(blob, target)
        os.chmod(target, file_mode())
        if sha256_file(target) != digest:
            raise StoreDamaged(
                f"{record['name']}@{record['version']}: {blob} does not match its sha256; the "
                "registry's store is damaged (push the artifact again to repair it)"
            )

    def pull(self, spec: str, destination: str | os.PathLike, force: bool = False) -> Path:
        """Write the version's files into `destination`: a new folder (made all at once by one
        rename) or an empty one (filled in one commit). A folder that holds other files is refused,
        unless `force`: then the artifact's own files there are replaced (and those the version
        lacks removed) in one commit, and every other file is kept (`train_args.json` and `log.jsonl`
        included: see `kept_records`)."""
        record = self.show(spec)
        destination = Path(os.path.abspath(destination))
        where = f"registry pull: {destination}"
        if destination.exists() and not destination.is_dir():
            raise RegistryError(f"{where} is a file, not a folder")
        root, real = Path(os.path.realpath(self.root)), Path(os.path.realpath(destination))
        if real == root or root in real.parents or real in root.parents:
            raise RegistryError(f"{where} is the registry's own folder (or holds it); pull into another folder")
        if not destination.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(destination.parent, f".{destination.name}.pull-")
            staging = self._staged_copy(record, destination.parent, f".{destination.name}.pull-{os.getpid()}-")
            try:
                os.rename(staging, destination)  # atomic: the folder appears complete, or not at all
            except OSError as error:
                shutil.rmtree(staging, ignore_errors=True)
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise RegistryError(f"{where}: files appeared in it during the pull; nothing was written") from None
                raise
            fsync_dir(destination.parent)
            return destination
        contents = sorted(p.name for p in destination.iterdir())
        if contents and not force:
            listed = ", ".join(contents[:5]) + (f" and {len(contents) - 5} more" if len(contents) > 5 else "")
            raise RegistryError(
                f"{where} is not empty ({listed}); pull into a new or empty folder, or pass --force to "
                f"replace only the artifact's files there ({', '.join(FILES)}) and keep the rest"
            )
        # An existing folder (perhaps someone's working directory) is written into, never replaced.
        with Transaction(destination, last=("prompt.json",)) as tx:
            for name in FILES:
                if name in record["files"]:
                    self._copy_verified(record, name, tx.path(name))
                else:
                    tx.remove(name)
        return destination

    @staticmethod
    def kept_records(destination: str | os.PathLike) -> list[str]:
        """The run records (`train_args.json`, `log.jsonl`) in a folder a pull wrote into: a pull
        never touches them, though they describe the prompt that was there before."""
        from .artifact import RUN_RECORDS

        return [name for name in RUN_RECORDS if name not in FILES and (Path(destination) / name).is_file()]

    # ---- changing -----------------------------------------------------------------------------

    def push(
        self, directory: str | os.PathLike, name: str, aliases: tuple[str, ...] = (), model: str | None = None
    ) -> dict:
        """Store the artifact in `directory` as the next version of `name`; returns its record.
        The artifact is checked first as far as it can be without its base model (every field,
        file checksum, tensor and config): what cannot be loaded is not stored. A PEFT prompt
        adapter folder is read onto its base model (`model`, else the one its config names) and
        stored as the prompttune prompt it is, fingerprinted against that model."""
        from .artifact import check_artifact
        from .peft_format import is_peft_adapter

        directory = Path(directory)
        if is_peft_adapter(directory):
            return self._push_peft(directory, name, aliases, model)
        if not isinstance(name, str) or "@" in name:
            raise RegistryError(f"--name {quoted(name)}: a name without '@' (the registry numbers versions itself)")
        parse_spec(name)
        for alias in aliases:
            _check_alias(alias)
        meta = check_artifact(directory)
        present = [f for f in FILES if (directory / f).is_file()]
        if "training_state.safetensors" in present and not meta.get("training_state"):
            present.remove("training_state.safetensors")  # prompt.json does not describe it
        metrics = None
        if "metrics.json" in present:
            metrics = _dev_metrics(directory / "metrics.json", meta)
            if metrics is _STALE:
                present.remove("metrics.json")
                metrics = None
        training = meta.get("training") or {}
        config = {
            "method": meta["method"],
            "method_config": meta["method_config"],
            "task": meta["task"],
            "task_config": meta["task_config"],
            "training": training.get("config"),
            "columns": meta.get("columns"),
        }
        with self._writing() as db:
            for folder in (self.root / "blobs").iterdir():  # files a killed push left half-written
                remove_stale(folder, INCOMING)
            files = {f: self._store_blob(directory / f) for f in present}
            digest = files["prompt.safetensors"]
            parent = None
            init = training.get("init_from") or {}
            if init.get("prompt_sha256"):
                row = db.execute(
                    "SELECT name, version FROM versions WHERE digest = ? ORDER BY name, version LIMIT 1",
                    (init["prompt_sha256"],),
                ).fetchone()
                if row is not None:
                    parent = f"{row['name']}@{row['version']}"
            version = db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 AS v FROM versions WHERE name = ?", (name,)
            ).fetchone()["v"]
            size = sum((directory / f).stat().st_size for f in present)
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    version,
                    utc_timestamp(),
                    meta.get("created"),
                    meta["method"],
                    meta["task"],
                    json.dumps(meta["base_model"]),
                    training.get("data_sha256"),
                    json.dumps(config),
                    json.dumps(metrics) if metrics is not None else None,
                    json.dumps(files),
                    digest,
                    parent,
                    size,
                ),
            )
            for alias in aliases:
                db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (name, alias, version))
        return self.show(f"{name}@{version}")

    def _push_peft(self, directory: Path, name: str, aliases: tuple[str, ...], model: str | None) -> dict:
        import tempfile

        from ..core.backbone import Backbone
        from ..storage import sha256_file
        from .artifact import save_prompt
        from .peft_format import PEFT_WEIGHTS, load_peft_prompt, read_peft_config

        config = read_peft_config(directory)
        prompt = load_peft_prompt(directory, Backbone.from_pretrained(model or config["base_model_name_or_path"]))
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".peft-import-") as staging:
            source = {
                "peft_adapter": str(directory),
                "peft_type": config["peft_type"],
                "adapter_sha256": sha256_file(directory / PEFT_WEIGHTS),
            }
            save_prompt(prompt, Path(staging) / "prompt", extra={"imported_from": source})
            return self.push(Path(staging) / "prompt", name, aliases)

    def set_alias(self, spec: str, alias: str) -> dict:
        """Point NAME@ALIAS at the version `spec` names (moving it if it pointed elsewhere)."""
        _check_alias(alias)
        with self._writing() as db:
            name, version = self.resolve(spec, db)
            db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (name, alias, version))
        return {"name": name, "alias": alias, "version": version}

    def remove_alias(self, spec: str) -> None:
        name, alias = parse_spec(spec)
        with self._writing() as db:
            if db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias)).rowcount == 0:
                raise RegistryError(f"{spec}: {name!r} has no alias {alias!r}")

    def delete(self, spec: str, all_versions: bool = False) -> list[dict]:
        """Delete one version (or, with `all_versions`, every version of the name), the aliases
        pointing at them, their checkouts, and stored files no other version uses. Returns what
        was deleted."""
        with self._writing() as db:
            if all_versions:
                name, ref = parse_spec(spec)
                if ref != LATEST:
                    raise RegistryError(f"{spec}: deleting every version takes a bare name")
                versions = [r["version"] for r in db.execute("SELECT version FROM versions WHERE name = ?", (name,))]
                if not versions:
                    raise RegistryError(f"{spec}: no prompt named {name!r} in {self.root}")
            else:
                name, version = self.resolve(spec, db)
                versions = [version]
            deleted = []
            for version in versions:
                row = db.execute("SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)).fetchone()
                aliases = [
                    r["alias"]
                    for r in db.execute("SELECT alias FROM aliases WHERE name = ? AND version = ?", (name, version))
                ]
                deleted.append(_record(row, aliases))
                db.execute("DELETE FROM aliases WHERE name = ? AND version = ?", (name, version))
                db.execute("DELETE FROM evaluations WHERE name = ? AND version = ?", (name, version))
                db.execute("DELETE FROM versions WHERE name = ? AND version = ?", (name, version))
            used = set()
            for r in db.execute("SELECT files FROM versions"):
                used.update(json.loads(r["files"]).values())
            db.execute("COMMIT")
            # Still under the lock: no push can start using these files before they are gone.
            for record in deleted:
                shutil.rmtree(self.root / "checkouts" / name / str(record["version"]), ignore_errors=True)
                for digest in record["files"].values():
                    if digest not in used:
                        self._blob(digest).unlink(missing_ok=True)
            db.execute("BEGIN IMMEDIATE")
        return deleted


_STALE = object()


def _dev_metrics(path: Path, meta: dict):
    """The dev metrics in an artifact's metrics.json, or _STALE when they describe another prompt
    (one saved over it later)."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RegistryError(f"{path}: not a metrics file ({error})") from None
    if not isinstance(metrics, dict):
        raise RegistryError(f"{path}: not a metrics file (expected a JSON object)")
    described = metrics.get("prompt_sha256")
    recorded = (meta.get("files") or {}).get("prompt.safetensors")
    if described is not None and recorded is not None and described != recorded:
        return _STALE
    dev = metrics.get("dev_metrics")
    if dev is not None and not isinstance(dev, dict):
        raise RegistryError(f"{path}: field 'dev_metrics' must be an object")
    return dev


def _check_alias(alias: str) -> None:
    if (
        not isinstance(alias, str)
        or VERSION.fullmatch(alias)
        or alias.isdigit()
        or alias == LATEST
        or not NAME.fullmatch(alias)
    ):
        raise RegistryError(
            f"alias {quoted(alias)}: 1-128 letters, digits, '.', '_' and '-', not a number and not {LATEST!r}"
        )


def _record(row: sqlite3.Row, aliases: list[str]) -> dict:
    return {
        "name": row["name"],
        "version": row["version"],
        "pushed": row["pushed"],
        "created": row["created"],
        "method": row["method"],
        "task": row["task"],
        "base_model": json.loads(row["base_model"]),
        "data_sha256": row["data_sha256"],
        "config": json.loads(row["config"]),
        "metrics": json.loads(row["metrics"]) if row["metrics"] else None,
        "files": json.loads(row["files"]),
        "digest": row["digest"],
        "parent": row["parent"],
        "bytes": row["bytes"],
        "aliases": aliases,
    }
