"""Writing files so that nothing a user has is ever half-changed.

- `write_atomic` / `write_json_atomic`: one file, written beside its target, fsynced, then renamed
  over it. Modes follow the umask, as files other tools write do.
- `replace_dir_atomic`: one folder swapped for another with Linux's `renameat2(RENAME_EXCHANGE)`,
  so the path always names a complete folder.
- `Transaction`: several files of one folder (an artifact: its tensors, `prompt.json`,
  `metrics.json`...) changed all at once or not at all. The new files are staged under
  `DIR/.prompttune/`, a manifest with their sha256 is written, and renaming the staging folder to
  `DIR/.prompttune/commit` commits them; then they are moved into place. A process killed while
  moving them leaves the commit behind, and the next prompttune call that reads or writes the folder
  (`recover`) finishes it. Killed before that rename, the folder is exactly as it was.

`DIR/.prompttune/` is prompttune's own: staging folders, a commit being installed, and a training
run's checkpoints live there, so nothing prompttune deletes can be a user's file.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: folders are then not locked against a second writer
    fcntl = None

from .errors import PromptTuneError

PRIVATE = ".prompttune"
COMMIT = "commit"
MANIFEST = "MANIFEST.json"
STAGE_PREFIX = "stage-"


class StorageError(PromptTuneError):
    """A folder prompttune writes is in a state it cannot finish or read: what and where."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    # Read, not set: setting it (the usual os.umask dance) races with other threads creating files.
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def file_mode() -> int:
    """The mode a new ordinary file gets under the umask (mkstemp's 0600 is not that)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a new folder gets under the umask (mkdtemp's 0700 is not that)."""
    return 0o777 & ~_umask()


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or unlink in `path` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync folders
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data, mode: int | None = None, prefix: str | None = None, check=None) -> None:
    """Replace `path` with `data` (bytes, text written as UTF-8, or a function that writes into the
    open binary file): readers see the old file or the new one, never part of it. The new file is
    fsynced before it replaces the old, with `mode` (default: what the umask gives); `check(tmp)`
    may refuse it before it does. Every file prompttune writes outside a staged folder goes
    through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = prefix or f".{path.name}.tmp-"
    remove_stale(path.parent, prefix)  # left by a writer that was killed
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        if check is not None:
            check(Path(tmp))
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def utc_timestamp() -> str:
    """Now, in UTC to the millisecond (2026-11-30T16:13:44.123Z): when a record was written."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def save_figure(figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """A matplotlib figure written atomically as PNG."""
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=dpi))


def write_json_atomic(path: str | os.PathLike, payload) -> None:
    write_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# ---- whole folders ---------------------------------------------------------------------------------

_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    function = getattr(_libc, "renameat2", None) if _libc else None
    if function is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if function(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir_atomic(staging: Path, target: Path) -> None:
    """Move a fully written `staging` folder to `target`, replacing the folder there. On Linux the
    two are exchanged in one step, so `target` always names a complete folder; elsewhere there is a
    moment between two renames where it names none."""
    staging, target = Path(staging), Path(target)
    try:
        os.rename(staging, target)  # atomic when target does not exist or is an empty folder
        fsync_dir(target.parent)
        return
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old folder
    else:
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)


def make_dir_like_user(path: Path) -> None:
    """Give a folder made by mkdtemp (0700) the mode an ordinary new folder would have."""
    os.chmod(path, dir_mode())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: Path, prefix: str) -> None:
    """Remove `prefix{pid}-*` entries of `folder` left by processes that no longer run (a kill -9
    between making and renaming a staging folder or file)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid = entry.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


@contextmanager
def locked(directory: Path):
    """An exclusive lock on a folder (flock on the folder itself: no lock file is left in it)."""
    if fcntl is None:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---- several files of one folder, all at once -------------------------------------------------------


def _plain_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", "..") or name == PRIVATE:
        raise ValueError(f"{name!r}: a transaction changes plain files of one folder")
    return name


class Transaction:
    """Files of `directory` replaced, added and removed together:

        with Transaction(folder) as tx:
            save_file(tensors, tx.path("prompt.safetensors"))
            tx.write_json("prompt.json", meta)
            tx.remove("training_state.safetensors")

    Leaving the block normally commits; an exception leaves the folder as it was. `cleanup` names
    folders under `directory/.prompttune` to delete once the files are in place (a finished run's
    checkpoints). Files named in `last` are put in place after the others (the file that describes
    the rest, so a reader that finds its new version finds the files it describes)."""

    def __init__(self, directory: str | os.PathLike, cleanup: tuple[str, ...] = (), last: tuple[str, ...] = ()):
        self.directory = Path(directory)
        self.private = self.directory / PRIVATE
        self.cleanup = tuple(_plain_name(c) for c in cleanup)
        self.last = tuple(last)
        self.removals: set[str] = set()
        self.stage: Path | None = None

    def __enter__(self) -> Transaction:
        self.directory.mkdir(parents=True, exist_ok=True)
        recover(self.directory)
        self.private.mkdir(exist_ok=True)
        remove_stale(self.private, STAGE_PREFIX)
        self.stage = Path(tempfile.mkdtemp(dir=self.private, prefix=f"{STAGE_PREFIX}{os.getpid()}-"))
        return self

    def path(self, name: str) -> Path:
        """Where to write the new version of `directory/name`."""
        return self.stage / _plain_name(name)

    def write_json(self, name: str, payload) -> None:
        self.path(name).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def copy(self, name: str, source: str | os.PathLike) -> None:
        shutil.copyfile(source, self.path(name))

    def remove(self, name: str) -> None:
        """Delete `directory/name` (if it is there) when the transaction commits."""
        self.removals.add(_plain_name(name))

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self._abort()
            return
        try:
            self._commit()
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
        remove_private_if_empty(self.directory)

    def _commit(self) -> None:
        install = {}
        for entry in sorted(self.stage.iterdir(), key=lambda p: (p.name in self.last, p.name)):
            os.chmod(entry, file_mode())
            fsync_file(entry)
            install[entry.name] = sha256_file(entry)
        manifest = {
            "install": [[name, digest] for name, digest in install.items()],
            "remove": sorted(self.removals - set(install)),
            "cleanup": list(self.cleanup),
        }
        with open(self.stage / MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(self.stage)
        with locked(self.directory):
            _apply_pending(self.directory)  # a commit another process left unfinished goes first
            os.rename(self.stage, self.private / COMMIT)  # the commit point
            fsync_dir(self.private)
            _apply_pending(self.directory)


def recover(directory: str | os.PathLike) -> None:
    """Finish a commit a killed process left in `directory`, and remove the staging folders of
    saves that were killed before their commit (nothing to do, usually: one stat)."""
    directory = Path(directory)
    private = directory / PRIVATE
    if not private.is_dir():
        return
    if not (private / COMMIT).is_dir():
        if os.access(private, os.W_OK):
            remove_stale(private, STAGE_PREFIX)
            remove_private_if_empty(directory)
        return
    if not os.access(directory, os.W_OK):
        raise StorageError(
            f"{directory}: holds an unfinished save (.prompttune/commit) and is read-only; "
            "run prompttune on it once with write access to finish the save"
        )
    with locked(directory):
        _apply_pending(directory)


def _apply_pending(directory: Path) -> None:
    commit = directory / PRIVATE / COMMIT
    if not commit.is_dir():
        return
    if not (commit / MANIFEST).exists() and not any(commit.iterdir()):
        os.rmdir(commit)  # finished but for this last step (the manifest goes after every file)
        remove_private_if_empty(directory)
        return
    try:
        manifest = json.loads((commit / MANIFEST).read_text(encoding="utf-8"))
        install, remove, cleanup = (
            [tuple(i) for i in manifest["install"]],
            manifest["remove"],
            manifest.get("cleanup", []),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StorageError(
            f"{commit}: an unfinished save whose manifest cannot be read ({error}); "
            "move that folder away to keep the files as they are"
        ) from None
    for name, digest in install:  # in the order the manifest lists them
        source, target = commit / _plain_name(name), directory / name
        if source.is_file():
            os.replace(source, target)
        elif not target.is_file() or sha256_file(target) != digest:
            raise StorageError(f"{commit}: {name} is neither waiting there nor installed in {directory}")
    for name in remove:
        (directory / _plain_name(name)).unlink(missing_ok=True)
    fsync_dir(directory)
    for name in cleanup:
        shutil.rmtree(directory / PRIVATE / _plain_name(name), ignore_errors=True)
    (commit / MANIFEST).unlink()
    os.rmdir(commit)
    remove_private_if_empty(directory)


def remove_private_if_empty(directory: Path) -> None:
    try:
        (Path(directory) / PRIVATE).rmdir()
    except OSError:
        pass  # not empty (or gone): someone is using it
