"""PEFT's side of the comparisons, written once: its models as the benchmarks configure them, and
the loop that trains them as prompttune's loop trains its prompts (the same batches in the same
order, AdamW without weight decay, the linear schedule with `TrainConfig`'s warmup, clipping at its
`max_grad_norm`, bf16 autocast on GPUs), whose state is saved without pickle so that a killed run
continues where it stopped."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch

from benchmarks.common import optimiser_step, prompttune_order, training_precision

#: PEFT's methods as the benchmarks configure them (`peft_config`).
KINDS = ("peft_prompt_tuning", "peft_prefix_tuning", "peft_prefix_tuning_noproj", "peft_p_tuning")


def peft_config(kind: str, task_type: str = "CAUSAL_LM", virtual_tokens: int | None = None, **extra):
    """PEFT's config of `kind`: peft_prompt_tuning (20 virtual tokens drawn from the vocabulary, as
    prompttune's soft prompt starts on a task without label words; `init="random"` for PEFT's
    default), peft_prefix_tuning (10, through the reparameterisation MLP of width 512, as Li & Liang
    and prompttune's prefix), peft_prefix_tuning_noproj (10, no MLP) or peft_p_tuning (20, LSTM
    encoder). `virtual_tokens` replaces the length; `extra` goes to the config."""
    from peft import (
        PrefixTuningConfig,
        PromptEncoderConfig,
        PromptEncoderReparameterizationType,
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
    )

    task_type = getattr(TaskType, task_type)
    if kind == "peft_prompt_tuning":
        init = (
            PromptTuningInit.RANDOM if extra.pop("init", "sample_vocab") == "random" else PromptTuningInit.SAMPLE_VOCAB
        )
        return PromptTuningConfig(
            task_type=task_type, num_virtual_tokens=virtual_tokens or 20, prompt_tuning_init=init, **extra
        )
    if kind == "peft_prefix_tuning":
        return PrefixTuningConfig(
            task_type=task_type,
            num_virtual_tokens=virtual_tokens or 10,
            prefix_projection=True,
            encoder_hidden_size=512,
            **extra,
        )
    if kind == "peft_prefix_tuning_noproj":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=virtual_tokens or 10, **extra)
    if kind == "peft_p_tuning":
        return PromptEncoderConfig(
            task_type=task_type,
            num_virtual_tokens=virtual_tokens or 20,
            encoder_reparameterization_type=PromptEncoderReparameterizationType.LSTM,
            **extra,
        )
    raise ValueError(f"no PEFT method {kind!r}; known: {KINDS}")


def peft_model(kind: str, path: str, base=None, **config):
    """The frozen base model (a float32 causal LM from `path` unless given) and PEFT's model of
    `kind` around it (`config` as `peft_config` takes it)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base = base if base is not None else AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return base, get_peft_model(base, peft_config(kind, **config))


# ---- decoder inputs ---------------------------------------------------------------------------------


def pair_encoder(tokenizer, max_source_length: int, max_target_length: int):
    """`source EOS target EOS` with the loss on the target, as prompttune's generation task reads a
    decoder's pairs: `encode(source, target)` gives (ids, labels), `encode(source)` (ids, None)."""
    eos = tokenizer.eos_token_id

    def encode(source, target=None):
        prompt = tokenizer(source, truncation=True, max_length=max_source_length)["input_ids"] + [eos]
        if target is None:
            return prompt, None
        ids = tokenizer(" " + target, add_special_tokens=False)["input_ids"][:max_target_length] + [eos]
        return prompt + ids, [-100] * len(prompt) + ids

    return encode


def padded_pairs(rows: list, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`pair_encoder` pairs as one batch padded on the right: input ids, attention mask, labels."""
    width = max(len(ids) for ids, _ in rows)
    return (
        torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
        torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
        torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows]),
    )


# ---- the loop ---------------------------------------------------------------------------------------


def train(
    model,
    base,
    groups: list[dict],
    loss_of,
    count: int,
    steps: int,
    batch_size: int,
    seed: int,
    device: str = "cpu",
    state: Path | None = None,
    checkpoint_every: int | None = None,
) -> float:
    """Train PEFT's `model` around the frozen `base` for `steps` batches of `batch_size` of the
    `count` training rows, in prompttune's order for `seed`; `groups` are AdamW's parameter groups
    (each with its `lr`), `loss_of(indices)` a batch's loss. With `state`, the loop's state is saved
    there every `checkpoint_every` steps and at the end, and a run continues from what it holds.
    Returns the seconds the steps took (over every run of it)."""
    from transformers import get_scheduler

    from prompttune import TrainConfig

    defaults = TrainConfig()
    params = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    scheduler = get_scheduler(
        "linear", optimizer, num_warmup_steps=int(defaults.warmup_ratio * steps), num_training_steps=steps
    )
    done, seconds = load_state(state, params, optimizer) if state is not None else (0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler steps without optimiser steps, to reach `done`
        for _ in range(done):
            scheduler.step()
    model.train()
    base.eval()  # the frozen model without dropout, as prompttune runs it
    for step, chosen in enumerate(prompttune_order(count, batch_size, seed, steps)):
        if step < done:
            continue
        start = time.perf_counter()
        with training_precision(device):
            loss = loss_of(chosen)
        optimiser_step(loss, params, optimizer, scheduler, defaults.max_grad_norm)
        seconds += time.perf_counter() - start
        if state is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            save_state(state, params, optimizer, step + 1, seconds)
    model.eval()
    return seconds


def save_state(folder: Path, params: list, optimizer, step: int, seconds: float) -> None:
    """The loop's state without pickle: its parameters and AdamW's moments as safetensors, the step
    and the seconds so far as JSON (written last: it marks the state complete)."""
    from safetensors.torch import save

    from prompttune.storage import write_atomic, write_json_atomic

    tensors = {f"param.{i}": p.detach().cpu().contiguous() for i, p in enumerate(params)}
    for i, p in enumerate(params):
        for key, value in optimizer.state.get(p, {}).items():
            value = value.detach().cpu()
            tensors[f"adam.{i}.{key}"] = value.reshape(-1).contiguous() if key == "step" else value.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "state.safetensors", save(tensors))
    write_json_atomic(folder / "state.json", {"step": step, "seconds": seconds, "tensors": len(tensors)})


def load_state(folder: Path, params: list, optimizer) -> tuple[int, float]:
    """The step and seconds a saved state reached, its parameters and AdamW's moments loaded; (0,
    0.0) where nothing is saved."""
    from safetensors.torch import load_file

    if not (folder / "state.json").is_file():
        return 0, 0.0
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "state.safetensors"))
    if len(tensors) != meta["tensors"]:
        raise SystemExit(f"{folder}: the saved state is incomplete; delete the folder to start this method again")
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(tensors[f"param.{i}"])
            # AdamW keeps its moments beside the parameter and its step count on the CPU.
            state = {
                key.split(".", 2)[2]: value.to(p.device)
                for key, value in tensors.items()
                if key.startswith(f"adam.{i}.")
            }
            if state:
                state["step"] = state["step"].reshape(()).cpu()
                optimizer.state[p] = state
    return meta["step"], meta["seconds"]


def trainable(model) -> list:
    """The parameters PEFT's model trains."""
    return [p for p in model.parameters() if p.requires_grad]


def adapter_bytes(folder: Path) -> int:
    """Bytes of what `save_pretrained` wrote."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
