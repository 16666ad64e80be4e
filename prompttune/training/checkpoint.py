"""Resumable training checkpoints, stored without pickle.

A run's folder (for `prompttune train`: `OUTPUT/.prompttune/run/`, which only prompttune writes) holds

    checkpoint.json              which checkpoint is current, with each of its files' sha256
    checkpoint-00000040/
        state.safetensors        every tensor: the trainable state, the best prompt so far, the
                                 optimiser's moments, the random number generators' states
        state.json               everything else: step, epoch, best metric, scheduler, optimiser
                                 hyper-parameters, Python's and NumPy's generator positions

A checkpoint is written into a new folder, then `checkpoint.json` is replaced to point at it, then the
folder it pointed at before is removed: a kill at any moment leaves one complete, current checkpoint.
Loading verifies both files against `checkpoint.json` before reading them; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import PromptTuneError
from ..storage import fsync_dir, fsync_file, make_dir_like_user, remove_stale, sha256_file, write_json_atomic

FORMAT = "prompttune.training.checkpoint"
POINTER = "checkpoint.json"
FOLDER = re.compile(r"checkpoint-[0-9]{8}(-[0-9]+)?")
FILES = ("state.safetensors", "state.json")
STAGING = ".checkpoint-"


class CheckpointError(PromptTuneError):
    """A checkpoint that is missing, damaged or made for another run: where, and what to do."""


def _encode(value, tensors: dict, key: str):
    """`value` as JSON, its tensors and arrays moved into `tensors` under names derived from `key`."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        tensors[key] = torch.from_numpy(value.astype(np.int64) if value.dtype.kind in "iu" else value.copy())
        return {"__ndarray__": key, "dtype": str(value.dtype)}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors, f"{key}.{k}") for k, v in value.items()}
        if not all(isinstance(k, (str, int)) for k in value):
            raise CheckpointError(
                f"{key}: cannot store a mapping with keys {sorted(map(repr, value))[:3]} in a checkpoint"
            )
        return {"__items__": [[k, _encode(v, tensors, f"{key}.{k}")] for k, v in value.items()]}
    raise CheckpointError(f"{key}: cannot store a {type(value).__name__} in a checkpoint")


def _decode(value, tensors: dict, where: str):
    if isinstance(value, list):
        return [_decode(v, tensors, where) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value or "__ndarray__" in value:
        name = value.get("__tensor__", value.get("__ndarray__"))
        if name not in tensors:
            raise CheckpointError(f"{where}: names tensor {name!r}, which state.safetensors does not hold")
        if "__ndarray__" in value:
            return tensors[name].numpy().astype(value["dtype"])
        return tensors[name]
    if "__tuple__" in value:
        return tuple(_decode(v, tensors, where) for v in value["__tuple__"])
    if "__items__" in value:
        return {k: _decode(v, tensors, where) for k, v in value["__items__"]}
    return {k: _decode(v, tensors, where) for k, v in value.items()}


def save(run_dir: Path, step: int, state: dict) -> Path:
    """Write `state` (nested dicts, lists, tuples, numbers, strings, tensors, NumPy arrays) as the
    run's current checkpoint; returns its folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(run_dir, STAGING)
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors, "state")
    staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=f"{STAGING}{os.getpid()}-"))
    try:
        save_file(tensors, str(staging / "state.safetensors"))
        (staging / "state.json").write_text(json.dumps(encoded), encoding="utf-8")
        for name in FILES:
            fsync_file(staging / name)
        digests = {name: sha256_file(staging / name) for name in FILES}
        make_dir_like_user(staging)
        folder = run_dir / f"checkpoint-{step:08d}"
        number = 0
        while folder.exists():  # left by a run killed before it pointed at it: kept until replaced
            number += 1
            folder = run_dir / f"checkpoint-{step:08d}-{number}"
        os.rename(staging, folder)
        fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_json_atomic(
        run_dir / POINTER, {"format": FORMAT, "version": 1, "step": step, "folder": folder.name, "files": digests}
    )
    for entry in run_dir.iterdir():  # the previous checkpoint, and any a killed run never pointed at
        if entry.is_dir() and FOLDER.fullmatch(entry.name) and entry.name != folder.name:
            shutil.rmtree(entry, ignore_errors=True)
    return folder


def exists(run_dir: Path) -> bool:
    return (Path(run_dir) / POINTER).is_file()


def load_step(run_dir: Path) -> int | str:
    """The current checkpoint's step, as `checkpoint.json` says (for messages; not verified)."""
    try:
        return int(json.loads((Path(run_dir) / POINTER).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def load(run_dir: Path, device: str = "cpu") -> dict:
    """The current checkpoint's state, each file verified against `checkpoint.json` first."""
    run_dir = Path(run_dir)
    pointer_path = run_dir / POINTER
    hint = "start the run again without --resume (the checkpoint cannot be trusted)"
    try:
        pointer = json.loads(pointer_path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(f"{pointer_path}: cannot be read ({error.strerror})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{pointer_path}: not valid JSON ({error}); {hint}") from None
    if not (
        isinstance(pointer, dict)
        and pointer.get("format") == FORMAT
        and isinstance(pointer.get("folder"), str)
        and FOLDER.fullmatch(pointer["folder"])
        and isinstance(pointer.get("files"), dict)
        and set(pointer["files"]) == set(FILES)
    ):
        raise CheckpointError(f"{pointer_path}: not a prompttune checkpoint pointer; {hint}")
    folder = run_dir / pointer["folder"]
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; {hint}")
        if sha256_file(path) != pointer["files"][name]:
            raise CheckpointError(f"{path}: does not match its sha256 in {POINTER} (damaged or changed); {hint}")
    try:
        tensors = load_file(str(folder / "state.safetensors"), device=device)
        encoded = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{folder}: cannot be read ({error}); {hint}") from None
    return _decode(encoded, tensors, str(folder / "state.json"))


def remove(run_dir: Path) -> None:
    """Delete the run's checkpoints (only the files and folders this module writes)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for entry in run_dir.iterdir():
        if entry.is_dir() and (FOLDER.fullmatch(entry.name) or entry.name.startswith(STAGING)):
            shutil.rmtree(entry, ignore_errors=True)
    (run_dir / POINTER).unlink(missing_ok=True)
