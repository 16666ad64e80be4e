"""PEFT's prompt-learning adapters, read as prompttune prompts.

A PEFT adapter folder holds `adapter_config.json` and `adapter_model.safetensors`, whose one tensor
`prompt_embeddings` is what PEFT's `get_prompt_embedding_to_save` returns (peft/peft_model.py):

- PROMPT_TUNING: the virtual tokens' embeddings, (V * S, D) with S = `num_transformer_submodules`;
- P_TUNING: the prompt encoder's output for the virtual tokens (PEFT saves it, not the encoder),
  the same shape: at inference a P-tuning prompt is a soft prompt;
- PREFIX_TUNING: the prefix after the projection when there is one, (V, L * 2 * D'), D' =
  `token_dim` = head_dim x `num_attention_heads`, where PEFT writes the key/value heads of a
  grouped-query model. `get_prompt` views it as (V, 2L, H, d): layer l's keys are block 2l and its
  values block 2l + 1, prefixed to the self-attention of every layer, and the input's positions
  start after the V prefix positions.

Decoder-only models (task type CAUSAL_LM) are read: a soft prompt becomes `soft_prompt`, a prefix
`deep_prompt`, on the generation task with the source and the continuation joined with nothing
between them, as PEFT's `generate` continues its input. Encoder-decoders (SEQ_2_SEQ_LM) are read
where the adapter is a soft prompt on the encoder's input. Other
task types and PEFT's seq2seq prefixes are refused with a message that says why.

A seq2seq soft prompt saved with `num_transformer_submodules` 2 (PEFT's default for SEQ_2_SEQ_LM)
holds 2V rows, the second V meant for the decoder; PEFT's forward and `generate` for PROMPT_TUNING
and P_TUNING put only the first V before the encoder's input and never read the rest
(`PeftModelForSeq2SeqLM.forward`), so prompttune reads those V rows and gives the same outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..core.backbone import DECODER, ENCODER_DECODER, Backbone
from ..errors import ArtifactError

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_TYPES = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING")
TENSOR = "prompt_embeddings"
#: PEFT task type -> the kind of model it is read onto.
TASK_TYPES = {"CAUSAL_LM": "decoder-only", "SEQ_2_SEQ_LM": "encoder-decoder"}


def is_peft_adapter(directory: str | os.PathLike) -> bool:
    """Whether `directory` is a PEFT adapter folder (and not a prompttune artifact)."""
    from .artifact import META

    directory = Path(directory)
    return (directory / PEFT_CONFIG).is_file() and not (directory / META).is_file()


def read_peft_config(directory: str | os.PathLike) -> dict:
    """`adapter_config.json`, checked for what reading the adapter needs (an export that was
    killed while it put its files in place is finished first)."""
    from ..storage import recover

    recover(directory)
    path = Path(directory) / PEFT_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: not readable as JSON ({error})") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: not a PEFT adapter config (a JSON object)")
    kind = config.get("peft_type")
    if kind not in PEFT_TYPES:
        raise ArtifactError(
            f"{path}: field 'peft_type' is {kind!r}; prompttune reads PEFT's prompt-learning adapters "
            f"{list(PEFT_TYPES)}"
        )
    for key in ("num_virtual_tokens", "token_dim", "num_layers", "num_attention_heads", "num_transformer_submodules"):
        if not isinstance(config.get(key), int) or isinstance(config.get(key), bool) or config[key] < 1:
            raise ArtifactError(f"{path}: field {key!r} must be a positive integer, got {config.get(key)!r}")
    if config.get("task_type") not in TASK_TYPES:
        raise ArtifactError(
            f"{path}: task_type {config.get('task_type')!r}; prompttune reads PEFT's prompt adapters "
            f"for generation, {list(TASK_TYPES)} (a classification adapter's head is not read)"
        )
    if config["num_transformer_submodules"] > (2 if config.get("task_type") == "SEQ_2_SEQ_LM" else 1):
        raise ArtifactError(
            f"{path}: num_transformer_submodules {config['num_transformer_submodules']} for a "
            f"{config.get('task_type')} adapter; PEFT writes 1 (2 for SEQ_2_SEQ_LM)"
        )
    if config["task_type"] == "SEQ_2_SEQ_LM" and kind == "PREFIX_TUNING":
        raise ArtifactError(
            f"{path}: a SEQ_2_SEQ_LM PREFIX_TUNING adapter; PEFT's seq2seq prefix reaches only the "
            "decoder's self-attention, each layer reading blocks of a projection repeated twice, while "
            "prompttune's encoder-decoder prefix covers the encoder, the decoder and the cross-attention "
            "as Li & Liang specify; prompttune reads PEFT's seq2seq soft prompts (PROMPT_TUNING, P_TUNING)"
        )
    if not isinstance(config.get("base_model_name_or_path"), str) or not config["base_model_name_or_path"]:
        raise ArtifactError(f"{path}: field 'base_model_name_or_path' must name the base model")
    return config


def _method(config: dict) -> str:
    return "deep_prompt" if config["peft_type"] == "PREFIX_TUNING" else "soft_prompt"


def peft_meta(directory: str | os.PathLike) -> dict:
    """The fields of a prompttune `prompt.json` that describe a PEFT adapter: its method, task and
    base model."""
    config = read_peft_config(directory)
    return {
        "method": _method(config),
        "method_config": {"num_virtual_tokens": config["num_virtual_tokens"]},
        "task": "generation",
        "task_config": {"separator": ""},
        "columns": {},
        "base_model": {"name_or_path": config["base_model_name_or_path"]},
        "peft": config,
    }


def _read_tensor(directory: Path) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / PEFT_WEIGHTS
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (a PEFT adapter's weights)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ArtifactError(f"{path}: not a readable safetensors file ({error})") from None
    if set(tensors) != {TENSOR}:
        raise ArtifactError(f"{path}: holds {sorted(tensors)}; a PEFT prompt adapter holds exactly [{TENSOR!r}]")
    tensor = tensors[TENSOR]
    if tensor.dim() != 2 or not tensor.is_floating_point() or not torch.isfinite(tensor).all():
        raise ArtifactError(
            f"{path}: {TENSOR} must be a 2-d tensor of finite floats, got {tuple(tensor.shape)} {tensor.dtype}"
        )
    return tensor.float()


def load_peft_prompt(
    directory: str | os.PathLike, backbone: Backbone | None = None, device: str | torch.device | None = None
):
    """A PEFT prompt adapter as a prompttune `PromptModel` on `backbone` (or on the base model its
    config names, loaded here), giving the outputs PEFT gives on the same inputs."""
    from ..methods import method_class
    from ..model import PromptModel
    from ..tasks import GenerationConfig
    from ..tasks.generation import GenerationTask

    directory = Path(directory)
    config = read_peft_config(directory)
    tensor = _read_tensor(directory)
    if backbone is None:
        backbone = Backbone.from_pretrained(config["base_model_name_or_path"])
        if device is not None:
            backbone.to(device)
    where = str(directory / PEFT_CONFIG)
    kind = {"CAUSAL_LM": DECODER, "SEQ_2_SEQ_LM": ENCODER_DECODER}[config["task_type"]]
    if backbone.kind != kind:
        raise ArtifactError(
            f"{where}: a {config['task_type']} adapter, and {type(backbone.model).__name__} is not a "
            f"{TASK_TYPES[config['task_type']]} model"
        )
    virtual = config["num_virtual_tokens"]
    if config["peft_type"] in ("PROMPT_TUNING", "P_TUNING"):
        expected = (virtual * config["num_transformer_submodules"], backbone.hidden_size)
        if tuple(tensor.shape) != expected:
            raise ArtifactError(
                f"{directory / PEFT_WEIGHTS}: {TENSOR} is {tuple(tensor.shape)}; a soft prompt for "
                f"{type(backbone.model).__name__} with num_transformer_submodules "
                f"{config['num_transformer_submodules']} is {expected}"
            )
        state = {"prompt": tensor[:virtual]}  # the rows PEFT's forward reads (see the module's docstring)
    else:
        from ..core import kv_prefix

        layers, heads, size = backbone.prefix_layout()[kv_prefix.SELF]
        if (config["num_layers"], config["token_dim"]) != (layers, heads * size) or tuple(tensor.shape) != (
            virtual,
            layers * 2 * heads * size,
        ):
            raise ArtifactError(
                f"{directory / PEFT_WEIGHTS}: {TENSOR} is {tuple(tensor.shape)} for {config['num_layers']} "
                f"layers of token_dim {config['token_dim']}; {type(backbone.model).__name__} has {layers} "
                f"layers of {heads} key/value heads of {size} ({(virtual, layers * 2 * heads * size)})"
            )
        # PEFT: (V, 2L, H, d), keys of layer l at 2l and values at 2l + 1 -> prompttune: (L, 2, H, V, d).
        state = {f"prefix.{kv_prefix.SELF}": tensor.view(virtual, layers, 2, heads, size).permute(1, 2, 3, 0, 4)}
    method_cls = method_class(_method(config))
    method = method_cls(method_cls.Config(num_virtual_tokens=virtual), backbone)
    method.load_saved_state({k: v.to(backbone.device) for k, v in state.items()}, backbone)
    # New tokens by default: 128, or half of what a model with learned positions has left.
    target = 128 if backbone.max_positions is None else max(1, min(128, (backbone.max_positions - virtual) // 2))
    task_config = GenerationConfig(separator="", max_target_length=target)
    task = GenerationTask(GenerationTask.configure(task_config, type(method), backbone, "auto"), backbone)
    task.to(backbone.device)
    model = PromptModel(backbone, method, task, backbone.fingerprint())
    if model.position_problem:
        raise ArtifactError(f"{where}: {model.position_problem}")
    model.eval()
    return model


def _exportable_parts(model, meta: dict, where: str):
    """The prompt's tensors (`PromptParts`, detached), after refusing what a PEFT prompt adapter
    cannot hold: an encoder's prompt, a trained head, both virtual tokens and a prefix, no tensors,
    an encoder-decoder's prefix."""
    from ..errors import ConfigError

    backbone = model.backbone
    if backbone.kind not in (DECODER, ENCODER_DECODER):
        raise ConfigError(
            f"{where}: a prompt for {type(backbone.model).__name__}, an encoder; PEFT adapters are written "
            "for decoder-only and encoder-decoder models"
        )
    trained_task = sorted(name for name, _ in model.task.named_parameters())
    if trained_task:
        raise ConfigError(
            f"{where}: its task has trained weights {trained_task} (a classification head), which a PEFT "
            "prompt adapter cannot hold"
        )
    with torch.no_grad():
        parts = model.method.parts(backbone).detached()
    if parts.num_virtual and parts.prefix_length:
        raise ConfigError(
            f"{where}: {meta['method']} has virtual tokens and a key/value prefix; a PEFT adapter holds one"
        )
    if not parts.num_virtual and not parts.prefix_length:
        raise ConfigError(
            f"{where}: {meta['method']} has no prompt tensors to export (a hard prompt is text; "
            "a baseline changes the model)"
        )
    if backbone.kind == ENCODER_DECODER and parts.prefix_length:
        raise ConfigError(
            f"{where}: an encoder-decoder's prefix; PEFT's seq2seq prefix tuning lays its prefix out in a "
            "way of its own, which prompttune does not write"
        )
    return parts


def _adapter_tensor(parts, backbone: Backbone, where: str) -> tuple[torch.Tensor, dict]:
    """The adapter's one tensor, laid out as PEFT reads it, and its config's fields for it: a soft
    prompt (V, d) as PROMPT_TUNING, a decoder's key/value prefix (V, 2L x H x d) as PREFIX_TUNING."""
    from ..core import kv_prefix
    from ..errors import ConfigError

    if parts.num_virtual:
        tensor = parts.virtual.float().cpu().contiguous()
        shape = dict(
            peft_type="PROMPT_TUNING",
            num_virtual_tokens=tensor.shape[0],
            token_dim=tensor.shape[1],
            num_attention_heads=backbone.config.num_attention_heads,
            prompt_tuning_init="RANDOM",
            prompt_tuning_init_text=None,
            tokenizer_name_or_path=None,
            tokenizer_kwargs=None,
        )
    else:
        if set(parts.prefix) != {kv_prefix.SELF}:
            raise ConfigError(
                f"{where}: a prefix at {sorted(parts.prefix)}; PEFT's prefix covers a decoder's self-attention"
            )
        prefix = parts.prefix[kv_prefix.SELF].float().cpu()  # (L, 2, H, V, d)
        layers, _, heads, virtual, size = prefix.shape
        # PEFT reads (V, 2L, H, d): keys of layer l at 2l, values at 2l + 1.
        tensor = prefix.permute(3, 0, 1, 2, 4).reshape(virtual, layers * 2 * heads * size).contiguous()
        shape = dict(
            peft_type="PREFIX_TUNING",
            num_virtual_tokens=virtual,
            token_dim=heads * size,
            num_attention_heads=heads,
            prefix_projection=False,
            encoder_hidden_size=heads * size,
        )
    return tensor, shape


def export_peft(
    prompt: str | os.PathLike, output: str | os.PathLike, backbone: Backbone | None = None, force: bool = False
) -> dict:
    """Write a prompttune prompt as a PEFT prompt-learning adapter that `PeftModel.from_pretrained`
    loads and runs to the same outputs: a soft prompt (soft_prompt, or P-tuning's encoder output,
    which is what PEFT saves) as PROMPT_TUNING, a key/value prefix (deep_prompt, or prefix tuning's
    projected prefix, as PEFT saves it) as PREFIX_TUNING, on a decoder-only model, and an
    encoder-decoder's soft prompt as PROMPT_TUNING on the encoder's input. What the prompt
    holds besides its tensors (a template, label words, an instruction, the separator) is listed
    under "left_out"; a trained head, a prompt with both virtual tokens and a prefix, and an
    encoder-decoder's prefix are refused, because a PEFT adapter cannot hold them. `output` must be
    a new or empty folder unless `force`, which replaces only the adapter's two files there."""
    from safetensors.torch import save

    from ..errors import ConfigError
    from .artifact import load_prompt, prompt_meta

    source, output = Path(prompt), Path(output)
    meta = prompt_meta(source)
    model = load_prompt(source, backbone=backbone)
    backbone = model.backbone
    where = f"export {source}"
    parts = _exportable_parts(model, meta, where)
    task_type = "CAUSAL_LM" if backbone.kind == DECODER else "SEQ_2_SEQ_LM"
    config = {
        "base_model_name_or_path": meta["base_model"]["name_or_path"],
        "task_type": task_type,
        "inference_mode": True,
        "num_transformer_submodules": 1,
        "num_layers": backbone.config.num_hidden_layers,
        "revision": None,
        "modules_to_save": None,
        "peft_version": None,
    }
    tensor, shape = _adapter_tensor(parts, backbone, where)
    config.update(shape)
    left_out = model.task.outside_tensors()
    from ..methods.base import Reparameterised

    if isinstance(model.method, Reparameterised):
        left_out.append("the reparameterisation it was trained through (PEFT keeps the output only, as here)")
    files = {PEFT_CONFIG: json.dumps(config, indent=2) + "\n", PEFT_WEIGHTS: save({TENSOR: tensor})}
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{where}: {output} is a file, not a folder")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise ConfigError(
            f"{where}: {output} is not empty; choose a new folder, or pass --force to replace the adapter "
            "files there (other files stay)"
        )
    _write_adapter(output, files)
    return {
        "written": str(output),
        "peft_type": config["peft_type"],
        "num_virtual_tokens": config["num_virtual_tokens"],
        "left_out": left_out,
    }


def _write_adapter(output: Path, files: dict[str, bytes | str]) -> None:
    """The adapter's two files, all at once or not at all. A folder that holds nothing else (or
    nothing, or is new) is written beside and swapped in whole, so PEFT itself never reads one file
    of one prompt beside the other of another; in a folder with other files, the two are replaced
    in one transaction (prompttune finishes one a kill interrupted whenever it next reads the
    folder, PEFT export included)."""
    from ..storage import Transaction, make_dir_like_user, remove_stale, replace_dir_atomic, write_atomic

    ours = {PEFT_CONFIG, PEFT_WEIGHTS}
    if not output.is_dir() or {p.name for p in output.iterdir()} <= ours:
        output.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{output.name}.export-"
        remove_stale(output.parent, prefix)
        staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f"{prefix}{os.getpid()}-"))
        try:
            for name in (PEFT_WEIGHTS, PEFT_CONFIG):
                write_atomic(staging / name, files[name])
            make_dir_like_user(staging)
            replace_dir_atomic(staging, output)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return
    with Transaction(output, last=(PEFT_CONFIG,)) as tx:  # the config last: it marks the adapter complete
        for name in (PEFT_WEIGHTS, PEFT_CONFIG):
            payload = files[name]
            tx.path(name).write_bytes(payload.encode("utf-8") if isinstance(payload, str) else payload)
