"""Prompt artifacts: a folder with `prompt.safetensors` (only the trained tensors) and `prompt.json`
(method, its config, the task config with labels and template, library version, the base model's
fingerprint, and the sha256 of every tensor file).

Saving changes the folder's artifact files all at once or not at all (`storage.Transaction`); loading
checks every field of `prompt.json`, each file against its sha256, and each tensor's name, shape, type
and values (no NaN or Inf) before the base model is touched.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..core.backbone import Backbone
from ..errors import ArtifactError, PromptTuneError, quoted
from ..methods import method_class
from ..model import PromptModel
from ..storage import Transaction, recover, sha256_file
from ..tasks import TASKS

FORMAT = "prompttune.prompt"
FORMAT_VERSION = 1
TENSORS = "prompt.safetensors"
META = "prompt.json"
# What a reparameterised method (prefix tuning's MLP, P-tuning's prompt encoder) needs to continue
# training; inference never reads it.
TRAINING_STATE = "training_state.safetensors"
METRICS = "metrics.json"
# What a training run writes beside the artifact. A new artifact saved without them removes the old
# ones, which described the artifact it replaces.
RUN_RECORDS = (METRICS, "train_args.json", "log.jsonl")
ARTIFACT_FILES = (META, TENSORS, TRAINING_STATE) + RUN_RECORDS

# Facts that must match between an artifact's base model and the model it is loaded onto.
MATCHED = (
    "model_type",
    "architecture",
    "hidden_size",
    "num_layers",
    "vocab_size",
    "tokenizer_sha256",
    "embedding_sha256",
)
SHA256 = re.compile(r"[0-9a-f]{64}")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    # Clone so tied weights (shared storage) are saved as separate tensors, as safetensors requires.
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(plain, str(path), metadata=metadata)


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Refuse NaN or Inf values: a prompt holding them predicts nonsense with NaN probabilities."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ArtifactError(
                f"{where}: tensor {name!r} holds {bad} NaN or Inf values "
                "(training diverged: lower the learning rate, or keep the best evaluated prompt)"
            )


def stage_prompt(model: PromptModel, tx: Transaction, extra: dict | None = None) -> dict:
    """Write `model`'s artifact files into a transaction; returns the `prompt.json` written."""
    state = model.artifact_state()
    training_state = model.method.training_state()
    check_finite(state, f"{tx.directory}: not saved")
    check_finite(training_state, f"{tx.directory}: not saved")
    save_tensors(tx.path(TENSORS), state, metadata={"format": FORMAT})
    files = {TENSORS: sha256_file(tx.path(TENSORS))}
    if training_state:
        save_tensors(tx.path(TRAINING_STATE), training_state, metadata={"format": FORMAT})
        files[TRAINING_STATE] = sha256_file(tx.path(TRAINING_STATE))
    else:
        tx.remove(TRAINING_STATE)
    for name in RUN_RECORDS:
        tx.remove(name)  # unless the caller writes new ones into the same transaction
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
        "files": files,
        "parameters": model.count_parameters(),
    }
    meta.update(extra or {})
    tx.write_json(META, meta)
    return meta


def save_prompt(model: PromptModel, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the artifact for `model` into `directory` (created; files that are not the artifact's
    are kept). The artifact files change together: a reader, or a save killed half-way, sees the
    old artifact or the new one, never a mix."""
    directory = Path(directory)
    with Transaction(directory, last=(META,)) as tx:
        stage_prompt(model, tx, extra)
    return directory


def read_meta(directory: str | os.PathLike) -> dict:
    """`prompt.json`, every field checked for its type (a save left unfinished is finished first)."""
    directory = Path(directory)
    path = directory / META
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such prompt folder")
    recover(directory)
    if not path.is_file():
        raise ArtifactError(f"{directory}: not a prompt artifact ({META} is missing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: field 'format' must be {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: field 'format_version' is {quoted(meta.get('format_version'))}; "
            f"this prompttune ({__version__}) reads version {FORMAT_VERSION}"
        )
    for key, kind, what in (
        ("method", str, "a method name"),
        ("method_config", dict, "an object"),
        ("task", str, "a task name"),
        ("task_config", dict, "an object"),
        ("base_model", dict, "an object describing the base model"),
    ):
        if key not in meta:
            raise ArtifactError(f"{path}: field {key!r} is missing")
        if not isinstance(meta[key], kind):
            raise ArtifactError(f"{path}: field {key!r} must be {what}, got {quoted(meta[key])}")
    if not isinstance(meta["base_model"].get("name_or_path"), str):
        raise ArtifactError(f"{path}: field 'base_model.name_or_path' must be the base model's name")
    _check_shapes(meta.get("tensors", "missing"), path, "tensors", required=True)
    _check_shapes(meta.get("training_state"), path, "training_state", required=False)
    files = meta.get("files")
    if files is not None and not (
        isinstance(files, dict)
        and all(k in (TENSORS, TRAINING_STATE) and isinstance(v, str) and SHA256.fullmatch(v) for k, v in files.items())
    ):
        raise ArtifactError(f"{path}: field 'files' must map {TENSORS} (and {TRAINING_STATE}) to sha256 digests")
    return meta


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _check_shapes(value, path: Path, key: str, required: bool) -> None:
    if value is None and not required:
        return
    if value == "missing":
        raise ArtifactError(f"{path}: field {key!r} is missing")
    if not (
        isinstance(value, dict)
        and all(
            isinstance(name, str)
            and isinstance(shape, list)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
            for name, shape in value.items()
        )
    ):
        raise ArtifactError(
            f"{path}: field {key!r} must map tensor names to shapes (lists of sizes), got {quoted(value)}"
        )


def check_artifact(directory: str | os.PathLike) -> dict:
    """Everything that can be checked without the base model: `prompt.json`'s fields, the method and
    task it names and their configs, each file against its sha256, each tensor's name, shape, type
    and values. Returns `prompt.json`. (`registry push` refuses what fails here.)"""
    directory = Path(directory)
    meta = read_meta(directory)
    method_cls, _, _, _ = _configs(meta, directory)
    for filename, key in ((TENSORS, "tensors"), (TRAINING_STATE, "training_state")):
        if meta.get(key):
            _read_tensors(directory / filename, meta, key, "cpu", floating_only=method_cls.shares_backbone)
    return meta


def check_base_model(meta: dict, backbone: Backbone, where: str, actual: dict | None = None) -> None:
    """Refuse an artifact made for another base model. `actual`: the backbone's fingerprint, when the
    caller has it already (computing it hashes the embeddings and the vocabulary)."""
    expected = meta["base_model"]
    actual = actual if actual is not None else backbone.fingerprint()
    differences = [
        f"{k}: artifact has {expected.get(k)!r}, model has {actual.get(k)!r}"
        for k in MATCHED
        if expected.get(k) != actual.get(k)
    ]
    if (
        expected.get("weights_sha256")
        and actual.get("weights_sha256")
        and expected["weights_sha256"] != actual["weights_sha256"]
    ):
        differences.append(
            f"weights_sha256: artifact has {expected['weights_sha256']}, model has {actual['weights_sha256']}"
        )
    if differences:
        raise ArtifactError(
            f"{where}: made for base model {expected.get('name_or_path')!r}, not for "
            f"{actual.get('name_or_path')!r}: " + "; ".join(differences)
        )


def _configs(meta: dict, directory: Path):
    """(method class, task class, method config, task config) that `prompt.json` describes."""
    try:
        method_cls = method_class(meta["method"])
        if meta["task"] not in TASKS:
            raise ArtifactError(f"unknown task {quoted(meta['task'])}; known: {sorted(TASKS)}")
        task_cls = TASKS[meta["task"]]
    except PromptTuneError as error:
        raise ArtifactError(f"{directory / META}: {error}") from None
    try:
        method_config = method_cls.Config.from_dict(
            meta["method_config"], where=f"{directory / META}, field 'method_config'"
        )
        task_config = task_cls.Config.from_dict(meta["task_config"], where=f"{directory / META}, field 'task_config'")
    except (PromptTuneError, TypeError, ValueError) as error:
        raise ArtifactError(str(error)) from None
    return method_cls, task_cls, method_config, task_config


def prompt_meta(directory: str | os.PathLike) -> dict:
    """What a prompt folder says of itself: its `prompt.json`, or for a PEFT adapter folder the same
    fields (method, task, base model) read from its `adapter_config.json`."""
    from .peft_format import is_peft_adapter, peft_meta

    return peft_meta(directory) if is_peft_adapter(directory) else read_meta(directory)


def load_prompt(
    directory: str | os.PathLike,
    backbone: Backbone | None = None,
    device: str | torch.device | None = None,
    with_training_state: bool = False,
) -> PromptModel:
    """Load an artifact onto `backbone` (or onto the base model it names, loaded here).
    `with_training_state` also loads what continuing training needs (a reparameterisation). A PEFT
    prompt adapter folder loads too (`peft_format`)."""
    from .peft_format import is_peft_adapter, load_peft_prompt

    directory = Path(directory)
    if is_peft_adapter(directory):
        if with_training_state:
            raise ArtifactError(f"{directory}: a PEFT adapter holds the prompt only, not a state to continue training")
        return load_peft_prompt(directory, backbone, device)
    meta = read_meta(directory)
    if backbone is None:
        backbone = Backbone.from_pretrained(meta["base_model"]["name_or_path"])
        if device is not None:
            backbone.to(device)
    try:
        return _load(directory, meta, backbone, with_training_state)
    except ArtifactError:
        again = read_meta(directory)
        if again == meta:
            raise
        # A save replaced the artifact while it was being read: read the new one.
        return _load(directory, again, backbone, with_training_state)


def _load(directory: Path, meta: dict, backbone: Backbone, with_training_state: bool) -> PromptModel:
    method_cls, task_cls, method_config, task_config = _configs(meta, directory)
    check_base_model(meta, backbone, str(directory))
    task = task_cls(task_config, backbone)
    method = method_cls(method_config, backbone)
    model = PromptModel(backbone, method, task, meta["base_model"])
    own_state = model.artifact_state()
    state = _read_tensors(directory / TENSORS, meta, "tensors", str(backbone.device), like=own_state)
    own = {k: tuple(v.shape) for k, v in own_state.items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if own != found:
        missing, unexpected = sorted(set(own) - set(found)), sorted(set(found) - set(own))
        wrong = sorted(k for k in set(own) & set(found) if own[k] != found[k])
        raise ArtifactError(
            f"{directory / TENSORS}: does not fit {meta['method']}: missing {missing}, unexpected {unexpected}, "
            f"wrong shape {[(k, found[k], own[k]) for k in wrong]}"
        )
    training_state = None
    if with_training_state and meta.get("training_state"):
        own_training = method.state_dict()
        training_state = _read_tensors(
            directory / TRAINING_STATE, meta, "training_state", str(backbone.device), like=own_training
        )
        expected = {k: tuple(v.shape) for k, v in own_training.items()}
        if {k: tuple(v.shape) for k, v in training_state.items()} != expected:
            raise ArtifactError(
                f"{directory / TRAINING_STATE}: does not fit {meta['method']}'s parameters {sorted(expected)}"
            )
    method.load_saved_state(
        {k[len("method.") :]: v for k, v in state.items() if k.startswith("method.")}, backbone, training_state
    )
    task.load_state_dict({k[len("task.") :]: v for k, v in state.items() if k.startswith("task.")}, strict=True)
    model.task.to(backbone.device)
    model.method.to(backbone.device)
    model.eval()
    return model


def verify_tensors(directory: str | os.PathLike, meta: dict) -> None:
    """Check, without loading a model, that the tensor files hold exactly the tensors `prompt.json`
    describes (names, shapes, checksums, finite floating-point values)."""
    directory = Path(directory)
    for filename, key in ((TENSORS, "tensors"), (TRAINING_STATE, "training_state")):
        if meta.get(key):
            _read_tensors(directory / filename, meta, key, "cpu")


def _read_tensors(
    path: Path, meta: dict, key: str, device: str, like: dict | None = None, floating_only: bool = True
) -> dict[str, torch.Tensor]:
    """The tensors of one file of the artifact, checked against `prompt.json`: the file's sha256
    (when recorded), the names and shapes it lists, and each tensor's values. `like`: the model's
    own tensors, whose kind (floating point or not) each must share; without it, every tensor must
    be floating point unless `floating_only` is off."""
    if not path.is_file():
        raise ArtifactError(f"{path.parent}: {path.name} is missing")
    digest = (meta.get("files") or {}).get(path.name)
    if digest is not None and sha256_file(path) != digest:
        raise ArtifactError(
            f"{path}: does not match the sha256 {META} records for it; the file is damaged "
            "or was changed after it was saved"
        )
    try:
        state = load_file(str(path), device=device)
    except (SafetensorError, OSError, RuntimeError) as error:
        raise ArtifactError(
            f"{path}: cannot read tensors ({str(error).splitlines()[0] if str(error) else error})"
        ) from None
    expected = {k: tuple(v) for k, v in meta[key].items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise ArtifactError(
            f"{path}: tensors {quoted(sorted(found.items()), 300)} do not match {META}'s "
            f"{quoted(sorted(expected.items()), 300)}"
        )
    for name, tensor in state.items():
        should_float = like[name].is_floating_point() if like is not None and name in like else floating_only
        if should_float and not tensor.is_floating_point():
            raise ArtifactError(
                f"{path}: tensor {name!r} is {str(tensor.dtype).replace('torch.', '')}; "
                "a prompt's tensors are floating point"
            )
    check_finite(state, str(path))
    return state
