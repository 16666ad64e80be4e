"""`prompttune serve` started for real on a loopback port, over a registry of tiny prompts, for the
server tests."""

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from conftest import task_config

from prompttune import Backbone, PromptModel, save_prompt
from prompttune.artifacts.registry import Registry
from prompttune.serving.client import Client
from prompttune.tasks import GenerationConfig

TOKEN = "s3cret-token"


def perturb(model):
    with torch.no_grad():
        for p in list(model.method.parameters()) + list(model.task.parameters()):
            p.add_(torch.randn_like(p) * 0.5 * (p.float().std() if p.numel() > 1 else 1.0))
    return model


def populated_registry(model_dirs: dict, root: Path) -> Registry:
    """Classification prompts `sentiment` and `opinion`, generation prompts `describe` and `rewrite`
    (all for the tiny GPT-2), and `for-bert`, made for another model."""
    registry = Registry(root / "registry")
    torch.manual_seed(0)
    backbone = Backbone.from_pretrained(str(model_dirs["gpt2"]))
    made = {
        "sentiment": PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 3}),
        "opinion": PromptModel.create(
            backbone,
            "prefix",
            task_config(template="review : {text} so {mask}"),
            {"num_virtual_tokens": 2, "hidden_size": 16},
        ),
        "describe": PromptModel.create(
            backbone, "prefix", GenerationConfig(max_target_length=5), {"num_virtual_tokens": 3, "hidden_size": 16}
        ),
        "rewrite": PromptModel.create(
            backbone, "soft_prompt", GenerationConfig(max_target_length=5), {"num_virtual_tokens": 2}
        ),
    }
    for name, model in made.items():
        registry.push(save_prompt(perturb(model), root / name), name)
    other = Backbone.from_pretrained(str(model_dirs["bert"]))
    registry.push(
        save_prompt(PromptModel.create(other, "soft_prompt", task_config(), {"num_virtual_tokens": 2}), root / "bert"),
        "for-bert",
    )
    return registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model_dir: Path, registry: Registry, log_path: Path, *flags):
    """The server's URL and process, stopped at the end."""
    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prompttune",
                "serve",
                "--model",
                str(model_dir),
                "--registry",
                str(registry.root),
                "--port",
                str(port),
                "--token",
                TOKEN,
                "--log-level",
                "warning",
                *map(str, flags),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PROMPTTUNE_TOKEN": ""},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            with Client(url) as probe:
                probe.wait_ready(timeout=120, process=process)
        except Exception:
            process.kill()
            raise RuntimeError(f"the server did not start:\n{log_path.read_text()}") from None
        try:
            yield url, process
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextmanager
def running_study_server(folder: Path, log_path: Path, *flags):
    """`prompttune human-eval serve` on a free loopback port: its URL and process, stopped at the end
    (unless the test killed it)."""
    import time
    import urllib.request

    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prompttune",
                "human-eval",
                "serve",
                str(folder),
                "--port",
                str(port),
                "--log-level",
                "warning",
                *map(str, flags),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    process.kill()
                    raise RuntimeError(f"the study server did not start:\n{log_path.read_text()}") from None
                time.sleep(0.2)
        try:
            yield url, process
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
