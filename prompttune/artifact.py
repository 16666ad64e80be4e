"""Prompt artifacts: a folder with `prompt.safetensors` (only the trained tensors) and `prompt.json`
(method, its config, the task config with labels and template, library version, and the base
model's fingerprint). Writes are atomic; loading checks the format, the tensors and the base model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .backbone import Backbone
from .errors import ArtifactError, PromptTuneError
from .methods import method_class
from .model import PromptModel
from .tasks import TASKS

FORMAT = "prompttune.prompt"
FORMAT_VERSION = 1
TENSORS = "prompt.safetensors"
META = "prompt.json"
# What a reparameterised method (prefix tuning's MLP, P-tuning's prompt encoder) needs to continue
# training; inference never reads it.
TRAINING_STATE = "training_state.safetensors"

# Facts that must match between an artifact's base model and the model it is loaded onto.
MATCHED = ("model_type", "architecture", "hidden_size", "num_layers", "vocab_size", "tokenizer_sha256", "embedding_sha256")


def write_json_atomic(path: str | os.PathLike, payload) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes 0600; the result is an ordinary file
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def replace_dir_atomic(staging: Path, target: Path) -> None:
    """Move a fully written `staging` folder to `target`, replacing what was there. At every moment
    `target` is either the old complete folder or the new complete folder."""
    target = Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    # Clone so tied weights (shared storage) are saved as separate tensors, as safetensors requires.
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(plain, str(path), metadata=metadata)


def save_prompt(model: PromptModel, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the artifact for `model` into `directory` (created; other files there are kept)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.artifact_state()
    training_state = model.method.training_state()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": model.method.name,
        "method_config": model.method.config.to_dict(),
        "task": model.task.name,
        "task_config": model.task.config.to_dict(),
        "base_model": model.base_fingerprint,
        "tensors": {k: list(v.shape) for k, v in state.items()},
        "training_state": {k: list(v.shape) for k, v in training_state.items()} or None,
        "parameters": model.count_parameters(),
    }
    meta.update(extra or {})
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".artifact-"))
    try:
        save_tensors(staging / TENSORS, state, metadata={"format": FORMAT})
        names = [TENSORS]
        if training_state:
            save_tensors(staging / TRAINING_STATE, training_state, metadata={"format": FORMAT})
            names.append(TRAINING_STATE)
        else:
            (directory / TRAINING_STATE).unlink(missing_ok=True)
        write_json_atomic(staging / META, meta)
        for name in names + [META]:
            # Tensors first, then the JSON that describes them: a reader that finds the new JSON
            # always finds the tensors it describes.
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def read_meta(directory: str | os.PathLike) -> dict:
    directory = Path(directory)
    path = directory / META
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such prompt folder")
    if not path.is_file():
        raise ArtifactError(f"{directory}: not a prompt artifact ({META} is missing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: field 'format' must be {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: field 'format_version' is {meta.get('format_version')!r}; "
                            f"this prompttune ({__version__}) reads version {FORMAT_VERSION}")
    for key in ("method", "method_config", "task", "task_config", "base_model", "tensors"):
        if key not in meta:
            raise ArtifactError(f"{path}: field {key!r} is missing")
    return meta


def check_base_model(meta: dict, backbone: Backbone, where: str, actual: dict | None = None) -> None:
    """Refuse an artifact made for another base model. `actual`: the backbone's fingerprint, when the
    caller has it already (computing it hashes the embeddings and the vocabulary)."""
    expected = meta["base_model"]
    actual = actual if actual is not None else backbone.fingerprint()
    differences = [f"{k}: artifact has {expected.get(k)!r}, model has {actual.get(k)!r}"
                   for k in MATCHED if expected.get(k) != actual.get(k)]
    if expected.get("weights_sha256") and actual.get("weights_sha256") and expected["weights_sha256"] != actual["weights_sha256"]:
        differences.append(f"weights_sha256: artifact has {expected['weights_sha256']}, model has {actual['weights_sha256']}")
    if differences:
        raise ArtifactError(f"{where}: made for base model {expected.get('name_or_path')!r}, not for "
                            f"{actual.get('name_or_path')!r}: " + "; ".join(differences))


def load_prompt(directory: str | os.PathLike, backbone: Backbone | None = None, device: str | torch.device | None = None,
                with_training_state: bool = False) -> PromptModel:
    """Load an artifact onto `backbone` (or onto the base model it names, loaded here).
    `with_training_state` also loads what continuing training needs (a reparameterisation)."""
    directory = Path(directory)
    meta = read_meta(directory)
    if backbone is None:
        backbone = Backbone.from_pretrained(meta["base_model"]["name_or_path"])
        if device is not None:
            backbone.to(device)
    check_base_model(meta, backbone, str(directory))
    try:
        method_cls = method_class(meta["method"])
        task_cls = TASKS[meta["task"]]
    except (PromptTuneError, KeyError) as error:
        raise ArtifactError(f"{directory / META}: {error}") from None
    try:
        method_config = method_cls.Config.from_dict(meta["method_config"], where=f"{directory / META}, field 'method_config'")
        task_config = task_cls.Config.from_dict(meta["task_config"], where=f"{directory / META}, field 'task_config'")
    except (PromptTuneError, TypeError) as error:
        raise ArtifactError(str(error)) from None
    task = task_cls(task_config, backbone)
    method = method_cls(method_config, backbone)
    model = PromptModel(backbone, method, task, meta["base_model"])
    state = _read_tensors(directory / TENSORS, meta["tensors"], backbone)
    own = {k: tuple(v.shape) for k, v in model.artifact_state().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if own != found:
        missing, unexpected = sorted(set(own) - set(found)), sorted(set(found) - set(own))
        wrong = sorted(k for k in set(own) & set(found) if own[k] != found[k])
        raise ArtifactError(f"{directory / TENSORS}: does not fit {meta['method']}: missing {missing}, unexpected {unexpected}, "
                            f"wrong shape {[(k, found[k], own[k]) for k in wrong]}")
    training_state = None
    if with_training_state and meta.get("training_state"):
        training_state = _read_tensors(directory / TRAINING_STATE, meta["training_state"], backbone)
        expected = {k: tuple(v.shape) for k, v in method.state_dict().items()}
        if {k: tuple(v.shape) for k, v in training_state.items()} != expected:
            raise ArtifactError(f"{directory / TRAINING_STATE}: does not fit {meta['method']}'s parameters {sorted(expected)}")
    method.load_saved_state({k[len("method."):]: v for k, v in state.items() if k.startswith("method.")}, backbone,
                            training_state)
    task.load_state_dict({k[len("task."):]: v for k, v in state.items() if k.startswith("task.")}, strict=True)
    model.task.to(backbone.device)
    model.method.to(backbone.device)
    model.eval()
    return model


def verify_tensors(directory: str | os.PathLike, meta: dict) -> None:
    """Check, without loading a model, that the tensor files hold exactly the tensors `prompt.json`
    describes (names and shapes)."""
    from safetensors import safe_open

    directory = Path(directory)
    for filename, key in ((TENSORS, "tensors"), (TRAINING_STATE, "training_state")):
        described = meta.get(key)
        if not described:
            continue
        path = directory / filename
        if not path.is_file():
            raise ArtifactError(f"{directory}: {filename} is missing")
        try:
            with safe_open(str(path), framework="pt") as handle:
                found = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
        except (SafetensorError, OSError) as error:
            raise ArtifactError(f"{path}: cannot read tensors ({error})") from None
        expected = {k: tuple(v) for k, v in described.items()}
        if found != expected:
            raise ArtifactError(f"{path}: tensors {sorted(found.items())} do not match {META}'s {sorted(expected.items())}")


def _read_tensors(path: Path, described: dict, backbone: Backbone) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ArtifactError(f"{path.parent}: {path.name} is missing")
    try:
        state = load_file(str(path), device=str(backbone.device))
    except (SafetensorError, OSError) as error:
        raise ArtifactError(f"{path}: cannot read tensors ({error})") from None
    expected = {k: tuple(v) for k, v in described.items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise ArtifactError(f"{path}: tensors {sorted(found.items())} do not match {META}'s {sorted(expected.items())}")
    return state
