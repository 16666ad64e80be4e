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


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """The order the training rows are read in one epoch: a permutation that depends only on
    (seed, epoch), so a resumed run sees the same batches as an uninterrupted one."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()


def _fresh_state() -> dict:
    """Where a run stands, as its checkpoint records it."""
    return {
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


def _checked_features(model: PromptModel, train_examples, eval_examples, config: TrainConfig, accelerator):
    """The encoded training rows and the metric that picks the best prompt, after refusing what
    cannot train: no rows, bad dev data (now, not after the first steps), a search over processes."""
    task = model.task
    metric = task.check_metric(config.metric)
    features = task.training_features(train_examples)
    if not features:
        raise ConfigError("training data: no examples")
    for example in eval_examples or ():
        task.encode(example)
    if model.method.searches and accelerator.num_processes > 1:
        raise ConfigError(f"--method {model.method.name}: a token search runs in one process")
    return features, metric


def _schedule(model: PromptModel, config: TrainConfig, accelerator, rows: int):
    """(optimizer, scheduler, optimisation steps in all, rows per batch on each process) for `rows`
    training rows."""
    from transformers import get_scheduler

    optimizer = _optimizer(model, config)
    per_device = config.batch_size // config.grad_accum
    batches_per_epoch = math.ceil(rows / (per_device * accelerator.num_processes))
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
    return optimizer, scheduler, total, per_device


class _Run:
    """One run of the loop: its prepared model, optimizer and scheduler, where it stands (`state`,
    the best prompt so far), its log and progress bar. `train` sets it up, `epoch` runs its steps
    and `finish` restores the best prompt and closes it."""

    def __init__(self, model: PromptModel, features, eval_examples, metric, config, accelerator, output, resume, name):
        self.prompt_model, self.task, self.features = model, model.task, features
        self.eval_examples, self.metric, self.config, self.accelerator = eval_examples, metric, config, accelerator
        self.output = output
        self.optimizer, self.scheduler, self.total, self.per_device = _schedule(
            model, config, accelerator, len(features)
        )
        model.train()
        # The unwrapped model is kept for evaluation and saving; `model` may become a DDP wrapper.
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, self.optimizer, self.scheduler)
        self.eval_every = config.eval_every or max(1, self.total // 10)
        self.checkpoint_every = config.checkpoint_every or self.eval_every
        self.state, self.best_state = _fresh_state(), None
        if resume:
            if output is None or not checkpoint.exists(output):
                raise ConfigError(f"--resume: no checkpoint in {output}")
            self.state, self.best_state = _load_checkpoint(output, model, self.optimizer, self.scheduler)
            accelerator.print(f"resuming at step {self.state['step']} of {self.total}")
        self.log = _Log(
            output / "log.jsonl" if output is not None and accelerator.is_main_process else None,
            keep_until=self.state["step"] if resume else None,
        )
        if config.trackers():
            _start_trackers(accelerator, config, model, name)
            self.log.trackers = accelerator
        self.bar = tqdm(
            total=self.total,
            initial=self.state["step"],
            disable=not (config.progress and accelerator.is_main_process),
            desc=f"{model.method.name}",
            dynamic_ncols=True,
        )
        self.postfix = {}
        self.stopped_early = False
        # The loss since the last log line, carried over a resume so the first line after it
        # averages the same steps an uninterrupted run's would.
        self.running_loss = torch.tensor(float(self.state["running_loss"]))
        self.running_count = int(self.state["running_count"])
        self.start = time.perf_counter()

    def running(self) -> bool:
        state = self.state
        return state["step"] < self.total and not self.stopped_early and not state.get("finished")

    def epoch(self) -> None:
        """The rest of the current epoch, or up to the step the run ends at."""
        state, accelerator = self.state, self.accelerator
        order = epoch_order(len(self.features), self.config.seed, state["epoch"])
        # Batches are lists of encoded rows, collated in `batch_loss` (as one forward or several).
        loader = DataLoader([self.features[i] for i in order], batch_size=self.per_device, collate_fn=list)
        loader = accelerator.prepare_data_loader(loader)
        if state["batch_in_epoch"]:
            loader = accelerator.skip_first_batches(loader, state["batch_in_epoch"])
        for rows in loader:
            batch = self._backward(rows)
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            self.bar.update(1)
            self._after_step(batch)
            if state["step"] >= self.total or self.stopped_early:
                return
        state["epoch"] += 1
        state["batch_in_epoch"] = 0

    def _backward(self, rows: list[dict]) -> dict:
        """One batch forward and backward (an optimizer step where gradients are synchronised)."""
        config, accelerator, optimizer = self.config, self.accelerator, self.optimizer
        with accelerator.accumulate(self.model):
            loss, batch = batch_loss(self.model, self.task, rows, config, self.prompt_model.backbone.device)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(
                    [p for g in optimizer.param_groups for p in g["params"]], config.max_grad_norm
                )
            optimizer.step()
            self.scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        self.state["batch_in_epoch"] += 1
        self.running_loss = self.running_loss.to(loss.device) + loss.detach().float()  # no host sync until logged
        self.running_count += 1
        return batch

    def _after_step(self, batch: dict) -> None:
        """A search's round, the log line, the evaluation and the checkpoint that fall on this step."""
        config, step, model = self.config, self.state["step"], self.prompt_model
        found = model.method.search_step(model, batch, step / self.total) if model.method.searches else None
        if found is not None:
            # Each round of a search: the prompt it holds now and its loss on the batch.
            self.log.write({"step": step, "search": found})
            self._show(prompt=found["prompt"][:40], batch_loss=f"{found['batch_loss']:.4f}")
        if step % config.log_every == 0 or step == self.total:
            entry = {"step": step, "loss": self.running_loss.item() / self.running_count}
            entry["lr"] = self.scheduler.get_last_lr()[0]
            self.log.write(entry)
            self._show(loss=f"{entry['loss']:.4f}")
            self.running_loss, self.running_count = torch.zeros(()), 0
        out_of_time = config.max_seconds is not None and time.perf_counter() - self.start > config.max_seconds
        if self.eval_examples and (step % self.eval_every == 0 or step == self.total or out_of_time):
            self._evaluate(step)
        if out_of_time:
            self.stopped_early = True
        if (
            self.output is not None
            and step % self.checkpoint_every == 0
            and step < self.total
            and not self.stopped_early
        ):
            self._save()

    def _show(self, **values) -> None:
        self.postfix.update(values)
        self.bar.set_postfix(self.postfix)

    def _evaluate(self, step: int) -> None:
        """Score the prompt on the dev data; keep it if it is the best so far; stop without patience left."""
        state, metric, model = self.state, self.metric, self.prompt_model
        metrics = evaluate(model, self.eval_examples, self.config.eval_batch_size, self.accelerator)
        value = metrics[metric]
        best = state["best"]
        if best is None or (value > best if self.task.higher_is_better(metric) else value < best):
            state.update(best=value, best_step=step, best_metrics=metrics, bad_evals=0)
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.trainable_state().items()}
        else:
            state["bad_evals"] += 1
        state["history"].append({"step": step, metric: value})
        self.log.write({"step": step, "eval": {k: v for k, v in metrics.items() if isinstance(v, float)}})
        self._show(**{f"dev_{metric}": f"{value:.4f}"})
        if self.config.patience is not None and state["bad_evals"] >= self.config.patience:
            self.stopped_early = True

    def _save(self, **extra) -> None:
        self.state.update(running_loss=float(self.running_loss), running_count=self.running_count, **extra)
        args = (self.prompt_model, self.optimizer, self.scheduler, self.state, self.best_state)
        _save_checkpoint(self.output, self.accelerator, *args)

    def finish(self, keep_checkpoint: bool) -> TrainResult:
        """Load the best prompt (its metrics are those measured at its evaluation), freeze it, and
        keep or remove the run's checkpoint."""
        self.bar.close()
        seconds = time.perf_counter() - self.start
        model, accelerator, config = self.prompt_model, self.accelerator, self.config
        if self.best_state is not None:
            model.load_trainable_state({k: v.to(model.backbone.device) for k, v in self.best_state.items()})
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.requires_grad_(False)
        model.eval()
        if config.gradient_checkpointing:
            model.backbone.set_gradient_checkpointing(False)
        if self.output is not None and keep_checkpoint:
            self._save(finished=True)
        elif self.output is not None and accelerator.is_main_process:
            checkpoint.remove(self.output)
        accelerator.wait_for_everyone()
        dev_metrics = self.state["best_metrics"]
        tracker_runs = {}
        if config.trackers():
            tracker_runs = _tracker_runs(accelerator, config)
            if dev_metrics:
                best = {f"best/{k}": v for k, v in dev_metrics.items() if isinstance(v, float)}
                accelerator.log(best, step=self.state["step"])
            accelerator.end_training()
        return TrainResult(
            steps=self.state["step"],
            seconds=seconds,
            best_step=self.state["best_step"],
            dev_metrics=dev_metrics,
            history=self.state["history"],
            stopped_early=self.stopped_early,
            tracker_runs=tracker_runs,
        )


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

    config = config if config is not None else TrainConfig()
    accelerator = _accelerator(config, logging_dir)
    set_seed(config.seed)
    output = Path(output_dir) if output_dir is not None else None
    features, metric = _checked_features(model, train_examples, eval_examples, config, accelerator)
    if config.gradient_checkpointing:
        model.backbone.set_gradient_checkpointing(True)
    name = config.run_name or run_name or "prompttune"
    run = _Run(model, features, eval_examples, metric, config, accelerator, output, resume, name)
    while run.running():
        run.epoch()
    return run.finish(keep_checkpoint)


def batch_loss(model, task, rows: list[dict], config: TrainConfig, device) -> tuple[torch.Tensor, dict]:
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
