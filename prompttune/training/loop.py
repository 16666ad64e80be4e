"""One training loop for every method and task, written out plainly.

Built on Accelerate: the same code runs on CPU, on one GPU (bf16 autocast), or on several processes
started with `accelerate launch`. The loop knows neither methods nor tasks by name: it optimises
`model.parameter_groups(...)` against `model.task.loss(...)`.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..core.batching import length_groups
from ..errors import ConfigError
from ..model import PromptModel
from ..storage import write_atomic
from ..tasks.data import Example
from . import checkpoint
from .config import TrainConfig


@dataclass
class TrainResult:
    steps: int
    seconds: float
    best_step: int | None
    dev_metrics: dict | None
    history: list = field(default_factory=list)
    stopped_early: bool = False
    #: Tracker name -> the run it logged to (MLflow: its run id), for what is logged after training.
    tracker_runs: dict = field(default_factory=dict)


def _accelerator(config: TrainConfig, logging_dir: str | os.PathLike | None = None):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision")) != precision:
        # Accelerate keeps one precision per process; a later run in the same process (a sweep, a
        # notebook) may ask for another. The distributed state (PartialState) is left as it is.
        AcceleratorState._reset_state(reset_partial_state=False)
    trackers = config.trackers()
    return Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with=trackers or None,
        project_dir=str(logging_dir or "trackers") if trackers else None,
    )


def _start_trackers(accelerator, config: TrainConfig, model: PromptModel, name: str) -> None:
    """The run's configuration as the trackers' hyperparameters (scalars; the rest as JSON text)."""
    values = {
        "method": model.method.name,
        "task": model.task.name,
        **{f"method.{k}": v for k, v in model.method.config.to_dict().items()},
        **{f"train.{k}": v for k, v in config.to_dict().items()},
    }
    values = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in values.items()}
    try:
        accelerator.init_trackers(name, config=values)
    except Exception as error:
        raise ConfigError(f"report_to: {config.report_to!r} cannot start: {type(error).__name__}: {error}") from None


def _tracker_runs(accelerator, config: TrainConfig) -> dict:
    runs = {}
    if "mlflow" in config.trackers() and accelerator.is_main_process:
        runs["mlflow"] = accelerator.get_tracker("mlflow").tracker.info.run_id
    return runs


def _optimizer(model: PromptModel, config: TrainConfig):
    method = type(model.method)
    lr = config.lr or method.default_lr
    head_lr = config.head_lr or method.default_head_lr
    groups = model.parameter_groups(lr, head_lr)
    if not groups and method.searches:
        # A search over tokens with a verbalizer: nothing trains by gradient, the loop still runs.
        groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.0, "name": "none"}]
    if not groups:
        raise ConfigError(f"--method {method.name}: nothing to train")
    name = config.optimizer or method.default_optimizer
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(
            groups,
            lr=lr,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(groups, lr=lr, weight_decay=config.weight_decay)


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def evaluate(model: PromptModel, examples: list[Example], batch_size: int = 64, accelerator=None) -> dict:
    """The task's metrics of `model` on `examples` (classification: scikit-learn accuracy, macro
    P/R/F1, per class, confusion matrix; generation: BLEU, chrF, ROUGE against every reference)."""
    return model.task.evaluate(model, examples, batch_size, accelerator)


def train(
    model: PromptModel,
    train_examples: list[Example],
    eval_examples: list[Example] | None = None,
    config: TrainConfig | None = None,
    output_dir: str | os.PathLike | None = None,
    resume: bool = False,
    keep_checkpoint: bool = False,
    logging_dir: str | os.PathLike | None = None,
    run_name: str | None = None,
) -> TrainResult:
    """Train the prompt in place. With `output_dir` (the run's working folder), a metrics log
    (`log.jsonl`) and resumable checkpoints (prompttune/training/checkpoint.py) are written there;
    `resume=True` continues from the last checkpoint. A finished run removes its checkpoints, or
    with `keep_checkpoint` saves its final state as one (a search keeps it until the prompt it
    found is saved: resuming it then goes straight to the end). With `config.report_to`, the
    trackers log under `logging_dir` (default ./trackers) as `config.run_name` or `run_name`."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    config = config if config is not None else TrainConfig()
    accelerator = _accelerator(config, logging_dir)
    set_seed(config.seed)
    output = Path(output_dir) if output_dir is not None else None
    task = model.task
    metric = task.check_metric(config.metric)
    features = task.training_features(train_examples)
    if not features:
        raise ConfigError("training data: no examples")
    if eval_examples is not None:
        for example in eval_examples:  # fail on bad dev data now, not after the first steps
            task.encode(example)
    if config.gradient_checkpointing:
        model.backbone.set_gradient_checkpointing(True)
    if model.method.searches and accelerator.num_processes > 1:
        raise ConfigError(f"--method {model.method.name}: a token search runs in one process")
    # The unwrapped model is kept for evaluation and saving; `model` may become a DDP wrapper.
    prompt_model = model
    optimizer = _optimizer(model, config)
    per_device = config.batch_size // config.grad_accum
    batches_per_epoch = math.ceil(len(features) / (per_device * accelerator.num_processes))
    total = config.max_steps or max(1, math.ceil(config.epochs * batches_per_epoch / config.grad_accum))
    # Accelerate's prepared scheduler advances once per process at every step, so the schedule is
    # laid out over steps x processes.
    scale = accelerator.num_processes
    scheduler = get_scheduler(
        "constant_with_warmup" if config.schedule == "constant" else config.schedule,
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total) * scale,
        num_training_steps=total * scale,
    )
    model.train()
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    eval_every = config.eval_every or max(1, total // 10)
    checkpoint_every = config.checkpoint_every or eval_every

    state = {
        "step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "best": None,
        "best_step": None,
        "best_metrics": None,
        "bad_evals": 0,
        "history": [],
        "running_loss": 0.0,
        "running_count": 0,
    }
    best_state = None
    if resume:
        if output is None or not checkpoint.exists(output):
            raise ConfigError(f"--resume: no checkpoint in {output}")
        state, best_state = _load_checkpoint(output, prompt_model, optimizer, scheduler)
        accelerator.print(f"resuming at step {state['step']} of {total}")

    log = _Log(
        output / "log.jsonl" if output is not None and accelerator.is_main_process else None,
        keep_until=state["step"] if resume else None,
    )
    if config.trackers():
        _start_trackers(accelerator, config, prompt_model, config.run_name or run_name or "prompttune")
        log.trackers = accelerator
    bar = tqdm(
        total=total,
        initial=state["step"],
        disable=not (config.progress and accelerator.is_main_process),
        desc=f"{prompt_model.method.name}",
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    stopped_early = False
    # The loss since the last log line, carried over a resume so the first line after it averages
    # the same steps an uninterrupted run's would.
    running_loss, running_count = torch.tensor(float(state["running_loss"])), int(state["running_count"])
    postfix = {}
    while state["step"] < total and not stopped_early and not state.get("finished"):
        # The order of each epoch depends only on (seed, epoch), so a resumed run sees the same
        # batches as an uninterrupted one.
        order = torch.randperm(
            len(features), generator=torch.Generator().manual_seed(config.seed * 100003 + state["epoch"])
        )
        # Batches are lists of encoded rows, collated in `_loss` (as one forward or several).
        loader = DataLoader([features[i] for i in order], batch_size=per_device, collate_fn=list, drop_last=False)
        loader = accelerator.prepare_data_loader(loader)
        if state["batch_in_epoch"]:
            loader = accelerator.skip_first_batches(loader, state["batch_in_epoch"])
        for rows in loader:
            with accelerator.accumulate(model):
                loss, batch = _loss(model, task, rows, config, prompt_model.backbone.device)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(
                        [p for g in optimizer.param_groups for p in g["params"]], config.max_grad_norm
                    )
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state["batch_in_epoch"] += 1
            running_loss = running_loss.to(loss.device) + loss.detach().float()  # no host sync until logged
            running_count += 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            bar.update(1)
            step = state["step"]
            found = (
                prompt_model.method.search_step(prompt_model, batch, step / total)
                if prompt_model.method.searches
                else None
            )
            if found is not None:
                # Each round of a search: the prompt it holds now and its loss on the batch.
                log.write({"step": step, "search": found})
                postfix.update(prompt=found["prompt"][:40], batch_loss=f"{found['batch_loss']:.4f}")
                bar.set_postfix(postfix)
            if step % config.log_every == 0 or step == total:
                entry = {"step": step, "loss": running_loss.item() / running_count, "lr": scheduler.get_last_lr()[0]}
                log.write(entry)
                postfix["loss"] = f"{entry['loss']:.4f}"
                bar.set_postfix(postfix)
                running_loss, running_count = torch.zeros(()), 0
            out_of_time = config.max_seconds is not None and time.perf_counter() - start > config.max_seconds
            if eval_examples and (step % eval_every == 0 or step == total or out_of_time):
                metrics = evaluate(prompt_model, eval_examples, config.eval_batch_size, accelerator)
                value = metrics[metric]
                improved = state["best"] is None or (
                    value > state["best"] if task.higher_is_better(metric) else value < state["best"]
                )
                if improved:
                    state.update(best=value, best_step=step, best_metrics=metrics, bad_evals=0)
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in prompt_model.trainable_state().items()}
                else:
                    state["bad_evals"] += 1
                state["history"].append({"step": step, metric: value})
                log.write({"step": step, "eval": {k: v for k, v in metrics.items() if isinstance(v, float)}})
                postfix[f"dev_{metric}"] = f"{value:.4f}"
                bar.set_postfix(postfix)
                if config.patience is not None and state["bad_evals"] >= config.patience:
                    stopped_early = True
            if out_of_time:
                stopped_early = True
            if output is not None and (step % checkpoint_every == 0) and step < total and not stopped_early:
                state.update(running_loss=float(running_loss), running_count=running_count)
                _save_checkpoint(output, accelerator, prompt_model, optimizer, scheduler, state, best_state)
            if step >= total or stopped_early:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    bar.close()
    seconds = time.perf_counter() - start
    if best_state is not None:
        # Keep the prompt from the best evaluation, not merely the last one; its metrics are those
        # measured at that evaluation.
        prompt_model.load_trainable_state({k: v.to(prompt_model.backbone.device) for k, v in best_state.items()})
    dev_metrics = state["best_metrics"]
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.requires_grad_(False)
    prompt_model.eval()
    if config.gradient_checkpointing:
        prompt_model.backbone.set_gradient_checkpointing(False)
    if output is not None and keep_checkpoint:
        state.update(finished=True, running_loss=float(running_loss), running_count=running_count)
        _save_checkpoint(output, accelerator, prompt_model, optimizer, scheduler, state, best_state)
    elif output is not None and accelerator.is_main_process:
        checkpoint.remove(output)
    accelerator.wait_for_everyone()
    tracker_runs = {}
    if config.trackers():
        tracker_runs = _tracker_runs(accelerator, config)
        if dev_metrics:
            accelerator.log(
                {f"best/{k}": v for k, v in dev_metrics.items() if isinstance(v, float)}, step=state["step"]
            )
        accelerator.end_training()
    return TrainResult(
        steps=state["step"],
        seconds=seconds,
        best_step=state["best_step"],
        dev_metrics=dev_metrics,
        history=state["history"],
        stopped_early=stopped_early,
        tracker_runs=tracker_runs,
    )


def _loss(model, task, rows: list[dict], config: TrainConfig, device) -> tuple[torch.Tensor, dict]:
    """The batch's loss (and the batch, collated): one forward, or with `max_batch_tokens` several
    over rows of similar length, each weighted by its share of what the loss averages over."""

    def collated(part):
        return {k: v.to(device) for k, v in task.collate(part).items()}

    batch = collated(rows)
    if config.max_batch_tokens is None or len(rows) == 1:
        return task.loss(model(batch), batch), batch
    lengths = [len(r["input_ids"]) for r in rows]
    parts = [
        collated([rows[i] for i in group])
        for group in length_groups(list(range(len(rows))), lengths, len(rows), config.max_batch_tokens)
    ]
    if len(parts) == 1:
        return task.loss(model(batch), batch), batch
    total = task.loss_units(batch)
    loss = sum(task.loss(model(part), part) * (task.loss_units(part) / total) for part in parts)
    return loss, batch


class _Log:
    """Appends one JSON object per line to the run's metrics log."""

    def __init__(self, path: Path | None, keep_until: int | None = None):
        """A new log, or with `keep_until` (resuming) the old one without the entries after that
        step, which the resumed run is about to redo."""
        self.path = path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_until is not None and path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for number, line in enumerate(lines, 1):
                try:
                    entry = json.loads(line)
                except ValueError:
                    if number == len(lines):
                        break  # the line a killed run was writing
                    raise ConfigError(f"--resume: {path}, line {number}: not a log entry") from None
                if (
                    isinstance(entry, dict)
                    and isinstance(entry.get("step", 0), int)
                    and entry.get("step", 0) <= keep_until
                ):
                    kept.append(line)
        write_atomic(path, "".join(line + "\n" for line in kept))

    trackers = None  # an Accelerator logging to experiment trackers, where the run has some

    def write(self, entry: dict) -> None:
        if self.trackers is not None and "step" in entry:
            scalars = {f"train/{k}": v for k, v in entry.items() if k in ("loss", "lr")}
            scalars.update({f"eval/{k}": v for k, v in (entry.get("eval") or {}).items()})
            if scalars:
                self.trackers.log(scalars, step=entry["step"])
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"time": time.time(), **entry}) + "\n")


def _save_checkpoint(
    path: Path, accelerator, model: PromptModel, optimizer, scheduler, state: dict, best_state
) -> None:
    if accelerator.is_main_process:
        checkpoint.save(
            path,
            state["step"],
            {
                "trainer": state,
                "trainable": model.trainable_state(),
                "best": best_state,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
            },
        )
    accelerator.wait_for_everyone()


def _load_checkpoint(path: Path, model: PromptModel, optimizer, scheduler):
    saved = checkpoint.load(path)  # on the CPU: the RNG states must be there; the rest is moved on loading
    where = f"{path}/{checkpoint.POINTER}"
    try:
        model.load_trainable_state(saved["trainable"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"])
        state = saved["trainer"]
        int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
        raise checkpoint.CheckpointError(
            f"{where}: does not fit this run ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); "
            "start the run again without --resume"
        ) from None
    best = saved.get("best")
    best_state = {k: v.to("cpu") for k, v in best.items()} if best else None
    return state, best_state
